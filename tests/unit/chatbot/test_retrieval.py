"""Fused retrieval (``chatbot.knowledge.FusedScorer``): BM25 over documents and cosine over chunks,
fused by reciprocal rank; the live version is searched in memory from its rows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from mangaassist.chatbot.knowledge import FusedScorer, LiveKnowledge, keywords, lexical_terms
from mangaassist.platform.vector import KEYWORD_WEIGHT, HybridScorer, IndexRecord, SearchHit


def _row(
    chunk: str, doc: str, title: str, text: str, vector: list[float], kind: str = "policy"
) -> IndexRecord:
    return IndexRecord(chunk, doc, title, title, text, chunk, kind, np.asarray(vector, dtype=np.float32))


def _unit(*xs: float) -> list[float]:
    v = np.asarray(xs, dtype=np.float32)
    return list(v / np.linalg.norm(v))


ROWS = [
    # the page that answers: says "standard shipping" and "business days", but its vector is further
    _row(
        "dom#0",
        "shipping-domestic",
        "Domestic shipping",
        "Standard shipping takes 3-7 business days in the US.",
        _unit(0.6, 0.8, 0),
    ),
    _row(
        "dom#1",
        "shipping-domestic",
        "Domestic shipping",
        "Expedited shipping costs $12.99.",
        _unit(0.5, 0.0, 0.86),
    ),
    # a page about delivery in general: closest by embedding, only "take" and "long" in common
    _row(
        "trk#0",
        "order-tracking",
        "Order tracking",
        "How long delivery takes depends on the order status.",
        _unit(0.8, 0.6, 0),
    ),
    _row("gift#0", "gift-cards", "Gift cards", "Gift cards never expire.", _unit(0, 0.2, 0.98)),
    _row("s#0", "series/x", "X", "A pirate adventure on the sea.", _unit(0.7, 0.7, 0.14), kind="product"),
]
MATRIX = np.stack([r.vector for r in ROWS])
QUERY = np.asarray(_unit(0.85, 0.55, 0), dtype=np.float32)
QUESTION = "how long does standard shipping take within the US?"


def test_terms_are_stemmed_without_stop_words() -> None:
    assert lexical_terms("How do I return the returned copies?") == ["return", "return", "copy"]
    assert lexical_terms("shipping ships shipped") == ["shipp", "ship", "shipp"]


def test_the_lexical_list_lifts_the_page_that_says_it_above_the_nearest_vector() -> None:
    hybrid = HybridScorer(ROWS, MATRIX).search(QUERY, QUESTION, k=3, kind="policy")
    assert hybrid[0].doc_id == "order-tracking"  # the embedding alone prefers the general page
    fused = FusedScorer(ROWS, MATRIX).search(QUERY, QUESTION, k=3, kind="policy")
    assert [h.doc_id for h in fused][:2] == ["shipping-domestic", "order-tracking"]


def test_hits_are_one_per_document_with_its_best_chunk_and_a_hybrid_score() -> None:
    question = "expedited shipping price"
    query = np.asarray(_unit(0.5, 0.1, 0.86), dtype=np.float32)  # near the expedited chunk
    hits = FusedScorer(ROWS, MATRIX).search(query, question, k=10)
    assert len({h.doc_id for h in hits}) == len(hits) == 4
    wanted = keywords(question)

    def hybrid(r: IndexRecord) -> float:
        shared = len(wanted & keywords(f"{r.doc_title} {r.heading} {r.text}"))
        return float(r.vector @ query) + KEYWORD_WEIGHT * shared / len(wanted)

    for hit in hits:
        rows = [r for r in ROWS if r.doc_id == hit.doc_id]
        best = max(rows, key=hybrid)
        assert hit.chunk_id == best.chunk_id and hit.score == pytest.approx(hybrid(best), abs=1e-5)
        assert hit.cosine == pytest.approx(float(best.vector @ query), abs=1e-5)
    assert next(h for h in hits if h.doc_id == "shipping-domestic").chunk_id == "dom#1"  # says "expedited"


def test_kind_filter_and_empty_inputs() -> None:
    scorer = FusedScorer(ROWS, MATRIX)
    assert [h.doc_id for h in scorer.search(QUERY, "pirate", k=5, kind="product")] == ["series/x"]
    assert scorer.search(QUERY, "anything", kind="nothing") == []
    assert FusedScorer([], np.zeros((0, 3), np.float32)).search(QUERY, "x") == []
    # no shared term: the dense order stands
    dense = FusedScorer(ROWS, MATRIX).search(QUERY, "zzz qqq", k=3, kind="policy")
    cos = {r.doc_id: float(r.vector @ QUERY) for r in ROWS}
    assert [h.doc_id for h in dense] == sorted(
        ["shipping-domestic", "order-tracking", "gift-cards"], key=lambda d: -cos[d]
    )
    with pytest.raises(ValueError, match="one embedding row per record"):
        FusedScorer(ROWS, MATRIX[:2])


class _Index:
    """The ``VectorIndex`` calls ``LiveKnowledge`` makes, with rows to read (or none)."""

    def __init__(self, rows: list[IndexRecord] | None) -> None:
        self.rows = rows
        self.searched = 0

    def resolve(self, alias: str) -> str:
        return "v1"

    def version(self, name: str) -> Any:
        return SimpleNamespace(model="m", dim=3)

    def records(self, name: str) -> list[IndexRecord]:
        if self.rows is None:
            raise RuntimeError("this store cannot list rows")
        return self.rows

    def search(
        self, name: str, vector: Any, query: str, k: int = 3, kind: str | None = None
    ) -> list[SearchHit]:
        self.searched += 1
        return [SearchHit("c", "store-doc", "t", "h", "x", "policy", 0.5, 0.5)]


def test_the_live_version_is_searched_in_memory_from_its_rows() -> None:
    index = _Index(ROWS)
    live = LiveKnowledge(cast(Any, index), model="m", fallback=None)
    before = index.searched  # the warm-up search of the switch
    hits = live.pinned().search(QUERY, QUESTION, k=2, kind="policy")
    assert [h.chunk.doc_id for h in hits] == ["shipping-domestic", "order-tracking"]
    assert index.searched == before


def test_a_store_that_cannot_list_rows_is_searched_by_the_store() -> None:
    index = _Index(None)
    live = LiveKnowledge(cast(Any, index), model="m", fallback=None)
    assert live.version == "v1"
    assert [h.chunk.doc_id for h in live.search(QUERY, QUESTION)] == ["store-doc"]
