"""Pure decisions of CD-04: retrieval metrics, the source diff, version names, hybrid scoring,
the golden set's validity, and the alias's compare-and-set on the local store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.core.kb import Document, chunk_document, series_document
from mangaassist.delivery.analysis.gates import RetrievalThresholds
from mangaassist.delivery.pipelines.kb import (
    Diff,
    Golden,
    read_documents,
    retrieval_metrics,
    version_name,
)
from mangaassist.platform.local.vector_lancedb import LanceVectorIndex
from mangaassist.platform.vector import AliasConflict, HybridScorer, IndexRecord, VersionError

ROOT = Path(__file__).parents[3]


def test_metrics_on_hand_computed_rankings() -> None:
    golden = [Golden("q1", frozenset({"a"})), Golden("q2", frozenset({"b", "c"}))]
    ranked = [["a", "x"], ["x", "y", "z", "w", "v", "b"]]
    m = retrieval_metrics(ranked, golden)
    assert m["recall_at_5"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["mrr"] == pytest.approx((1.0 + 1 / 6) / 2)
    ideal2 = 1.0 + 1 / np.log2(3)
    assert m["ndcg_at_10"] == pytest.approx((1.0 + (1 / np.log2(7)) / ideal2) / 2)


def test_diff_counts_added_changed_deleted_unchanged() -> None:
    doc = Document("d", "D", "", "## A\none two\n## B\nthree four\n")
    old = chunk_document(doc)
    edited = chunk_document(Document("d", "D", "", "## A\none two\n## B\nthree FIVE\n## C\nsix\n"))
    live = [
        IndexRecord(
            c.id, c.doc_id, c.doc_title, c.heading, c.text, c.content_hash, c.kind, np.zeros(2, np.float32)
        )
        for c in old
    ]
    assert Diff.between(edited, live) == Diff(added=1, changed=1, deleted=0, unchanged=1)
    assert Diff.between([], live) == Diff(added=0, changed=0, deleted=2, unchanged=0)


def test_version_name_says_model_and_build_and_is_deterministic() -> None:
    chunks = chunk_document(Document("d", "D", "", "## A\none two\n"))
    name = version_name("all-MiniLM-L6-v2@0.1.0", chunks)
    assert name.startswith("kb-all-minilm-l6-v2-") and name == version_name("all-MiniLM-L6-v2@0.1.0", chunks)
    assert name != version_name("all-MiniLM-L6-v2@0.2.0", chunks)  # another model: another version


def test_hybrid_scorer_boosts_keywords_filters_kind_and_returns_one_hit_per_doc() -> None:
    v = np.eye(3, dtype=np.float32)
    rows = [
        IndexRecord("a#0", "a", "A", "h", "gift cards never expire", "1", "policy", v[0]),
        IndexRecord("a#1", "a", "A", "h", "gift cards again", "2", "policy", v[0]),
        IndexRecord("b#0", "b", "B", "h", "shipping costs", "3", "policy", v[1]),
        IndexRecord("series/x#0", "series/x", "X", "X", "a pirate adventure", "4", "product", v[2]),
    ]
    scorer = HybridScorer(rows, np.stack([r.vector for r in rows]))
    query = np.array([0.0, 1.0, 0.0], dtype=np.float32)  # the vector says "shipping"
    plain = scorer.search(query, "", k=3)
    assert plain[0].doc_id == "b"
    boosted = scorer.search(np.zeros(3, np.float32), "do gift cards expire", k=3)
    assert boosted[0].doc_id == "a" and boosted[0].score == pytest.approx(0.1)  # all 3 keywords shared
    assert len({h.doc_id for h in boosted}) == len(boosted)
    assert [h.doc_id for h in scorer.search(query, "pirate", k=5, kind="product")] == ["series/x"]
    assert scorer.search(query, "", kind="nothing") == []


def test_golden_set_is_large_enough_and_names_only_real_documents() -> None:
    rows = [json.loads(line) for line in (ROOT / "knowledge/evals/golden.jsonl").read_text().splitlines()]
    assert len(rows) >= 60
    docs = {d.id for d in read_documents(ROOT / "knowledge", ROOT / "data/catalog.jsonl")}
    unknown = {r for row in rows for r in row["relevant"] if r not in docs}
    assert unknown == set()
    assert len({row["question"] for row in rows}) == len(rows)


def test_sources_include_the_catalog_and_not_the_evals_folder() -> None:
    docs = read_documents(ROOT / "knowledge", ROOT / "data/catalog.jsonl")
    assert len([d for d in docs if d.kind == "policy"]) == len(list((ROOT / "knowledge").glob("*.md")))
    assert series_document({"id": "x", "title": "X", "description": "d"}).id == "series/x"


def test_thresholds_reject_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown gate threshold"):
        RetrievalThresholds.from_params({"recall": 0.5})


def test_alias_is_compare_and_set_and_only_targets_ready_versions(tmp_path: Path) -> None:
    index = LanceVectorIndex(tmp_path)
    rec = IndexRecord("d#0", "d", "D", "h", "text", "h1", "policy", np.ones(4, np.float32) / 2)
    for name in ("v1", "v2"):
        index.create_version(name, model="m@1", dim=4, meta={})
        index.add(name, [rec])
    index.seal("v1", {})
    with pytest.raises(VersionError, match="building"):
        index.move_alias("kb-live", "v2", expect=None)
    index.move_alias("kb-live", "v1", expect=None)
    index.seal("v2", {})
    with pytest.raises(AliasConflict):
        index.move_alias("kb-live", "v2", expect=None)  # someone moved it since we looked
    move = index.move_alias("kb-live", "v2", expect="v1", reason="run-1/promote/move-alias")
    assert (move.previous, index.resolve("kb-live")) == ("v1", "v2")
    with pytest.raises(VersionError, match="target of alias"):
        index.drop("v2")
    with pytest.raises(VersionError, match="already exists"):
        index.create_version("v1", model="m@1", dim=4, meta={})
    index.create_version("v3", model="m@1", dim=3, meta={})
    with pytest.raises(VersionError, match="dimension"):
        index.add("v3", [rec])
    assert [m.version for m in index.alias_history("kb-live")] == ["v1", "v2"]
    assert index.version("v1").rows == 1  # type: ignore[union-attr]
