"""The knowledge base as the chatbot sees it: the live index version behind the ``kb-live`` alias.

``LiveKnowledge`` is what handlers search. It reads the index only through the ``VectorIndex``
client: a background thread resolves the alias every ``refresh_seconds`` and, when it points at a
new version, loads that version first and only then switches, so no request waits for the load
and none fails during a swap. Requests already running finish on the version they started with.
The version answering is reported in ``versions["index"]``.

An index version records the embedding model that embedded its rows, and a query must be embedded
by that same model. A version embedded by another model than the chatbot's own (a new embedding
model being released, ``all-MiniLM-L6-v2-int8``) is served with that model's embedder, made (and
kept) by ``embedders`` before the switch: the version, its scorer and its embedder are one state,
swapped by one assignment, and a request pins that state once (``pinned``), so it embeds its query
with the embedder of the version it searches whatever the alias does meanwhile. A rollback moves
the alias back and brings the previous version's embedder back with it. A version whose model this
process cannot run is refused (logged) and the chatbot stays where it was.

On a fresh clone no version exists yet: the chatbot then serves a build of its own, in memory,
from the same sources and chunker (``core/kb.py``), and switches to ``kb-live`` as soon as a
knowledge-base build (CD-04, ``mangaassist kb build``) promotes one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from mangaassist.chatbot.embeddings import Embedder, Matrix, Vector, model_id
from mangaassist.core.errors import ConfigError
from mangaassist.core.kb import (
    POLICY,
    PRODUCT,
    STOPWORDS,
    Chunk,
    Document,
    chunk_document,
    keywords,
    parse_document,
)
from mangaassist.platform.vector import HybridScorer, IndexRecord, SearchHit, VectorIndex

__all__ = [
    "POLICY",
    "PRODUCT",
    "STOPWORDS",
    "Chunk",
    "Document",
    "FusedScorer",
    "Hit",
    "KnowledgeIndex",
    "LiveKnowledge",
    "QueryBound",
    "Retriever",
    "best_sentences",
    "chunk_document",
    "keywords",
    "lexical_terms",
    "load_documents",
]

log = logging.getLogger("mangaassist.chatbot")

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9*\"'(])")


def load_documents(directory: Path) -> list[Document]:
    """``directory/*.md`` (subfolders such as ``evals/`` are not sources)."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory of knowledge documents")
    docs = [parse_document(p.read_text(encoding="utf-8"), str(p)) for p in sorted(directory.glob("*.md"))]
    if not docs:
        raise ConfigError(f"{directory}: no *.md documents")
    return docs


def best_sentences(text: str, query: str, limit: int = 3) -> list[str]:
    """The sentences of ``text`` sharing most keywords with ``query``, in their original order.
    Words are compared stemmed ("cancelled" meets "cancel"), and a word with the prefix "un" also
    counts as its stem ("already read" meets "unread")."""
    sentences = [s.strip(" -*#\n") for s in _SENTENCE.split(text.replace("\n", " ")) if s.strip()]
    wanted = _sentence_terms(query)
    scored = sorted(range(len(sentences)), key=lambda i: (-len(_sentence_terms(sentences[i]) & wanted), i))[
        :limit
    ]
    return [sentences[i] for i in sorted(scored)]


def _sentence_terms(text: str) -> set[str]:
    terms = {_undouble(_stem(w)) for w in keywords(text)}
    return terms | {t[2:] for t in terms if t.startswith("un") and len(t) > 5}


def _undouble(term: str) -> str:
    """Drops a doubled last letter: "cancell" (from "cancelling") -> "cancel", "stopp" -> "stop";
    "class" and "agree" stay."""
    return term[:-1] if len(term) > 4 and term[-1] == term[-2] and term[-1] not in "se" else term


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float


class Retriever(Protocol):
    """What handlers search: hybrid (vector + keyword), one hit per document, best first."""

    @property
    def version(self) -> str: ...

    def search(self, vector: Vector, query: str, k: int = 3, kind: str | None = None) -> list[Hit]: ...


def _hit(h: SearchHit) -> Hit:
    return Hit(Chunk(h.chunk_id, h.doc_id, h.doc_title, h.heading, h.text, "", h.kind), h.score)


_TERM = re.compile(r"[a-z0-9]+")
RRF_K = 60
"""Reciprocal rank fusion's constant: a list's item at rank r adds ``1 / (RRF_K + r)``."""


def _stem(word: str) -> str:
    """A light suffix stripper: "returns", "returned", "returning" -> "return"; "copies" -> "copy"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def lexical_terms(text: str) -> list[str]:
    """The terms BM25 counts: lower-case words without stop words, lightly stemmed, repeats kept."""
    return [
        _stem(w) for w in _TERM.findall(text.lower().replace("'", "")) if w not in STOPWORDS and len(w) > 1
    ]


class _BM25:
    """Okapi BM25 over a fixed list of texts (k1 1.2, b 0.75), built once per index version."""

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        docs = [lexical_terms(t) for t in texts]
        self.n = len(docs)
        lengths = np.asarray([len(d) for d in docs], dtype=np.float32)
        self._norm = k1 * (1 - b + b * lengths / max(1.0, float(lengths.mean()) if self.n else 1.0))
        postings: dict[str, dict[int, int]] = {}
        for i, d in enumerate(docs):
            for term in d:
                row = postings.setdefault(term, {})
                row[i] = row.get(i, 0) + 1
        self._postings = {
            term: (np.asarray(list(rows), dtype=np.int64), np.asarray(list(rows.values()), dtype=np.float32))
            for term, rows in postings.items()
        }

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        out = np.zeros(self.n, dtype=np.float32)
        for term in set(lexical_terms(query)):
            found = self._postings.get(term)
            if found is None:
                continue
            rows, tf = found
            idf = np.log(1 + (self.n - len(rows) + 0.5) / (len(rows) + 0.5))
            out[rows] += idf * tf * (self.k1 + 1) / (tf + self._norm[rows])
        return out


def _ranks(scores: npt.NDArray[np.float32], usable: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """1-based rank of every row by ``scores`` (best first); unusable rows rank last."""
    order = np.argsort(-np.where(usable, scores, -np.inf), kind="stable")
    ranks = np.empty(len(scores), dtype=np.float32)
    ranks[order] = np.arange(1, len(scores) + 1, dtype=np.float32)
    return ranks


class FusedScorer:
    """Hybrid retrieval over one immutable version held in memory: a dense ranking of documents
    (the cosine of their best chunk) and a lexical one (BM25 over each document's title, headings
    and text), fused by reciprocal rank fusion (``1 / (RRF_K + rank)`` from each list, equal weight).

    Either list alone misses pages the other finds: the embedding matches "how long does standard
    shipping take" to every page about delivery times, BM25 finds the page that says "standard
    shipping" but cannot forgive a typo or a paraphrase; fused, a page near the top of both wins.
    BM25 ranks whole documents (a page is the unit a question is answered from; chunks are too short
    for stable term statistics); documents sharing no term get no lexical vote. Hits are one per
    document, best first, each with the document's best chunk by ``cosine + KEYWORD_WEIGHT *
    keyword overlap`` (as ``HybridScorer`` scores), and that is the hit's ``score``, so
    ``retrieval.min_score`` keeps its meaning: only the order is the fusion's.
    """

    def __init__(self, rows: Sequence[IndexRecord], matrix: Matrix) -> None:
        self._hybrid = HybridScorer(rows, matrix)  # each chunk's score, and the check of the shapes
        self.rows = self._hybrid.rows
        self.docs = list(dict.fromkeys(r.doc_id for r in self.rows))
        index = {d: i for i, d in enumerate(self.docs)}
        self._doc_of = np.asarray([index[r.doc_id] for r in self.rows], dtype=np.int64)
        texts: dict[str, list[str]] = {}
        titles: dict[str, str] = {}
        kinds: dict[str, str] = {}
        for r in self.rows:
            texts.setdefault(r.doc_id, []).append(f"{r.heading} {r.text}")
            titles[r.doc_id], kinds[r.doc_id] = r.doc_title, r.kind
        # the title twice: it names what the whole page is about
        self._bm25 = _BM25([f"{titles[d]} {titles[d]} " + " ".join(texts[d]) for d in self.docs])
        self._doc_kinds = np.asarray([kinds[d] for d in self.docs])

    def search(self, vector: Vector, text: str, k: int = 10, kind: str | None = None) -> list[SearchHit]:
        if not self.rows:
            return []
        usable = np.ones(len(self.docs), dtype=bool) if kind is None else self._doc_kinds == kind
        if not usable.any():
            return []
        cosine, hybrid = self._hybrid.row_scores(vector, text)
        dense = np.full(len(self.docs), -np.inf, dtype=np.float32)
        np.maximum.at(dense, self._doc_of, cosine)
        best = np.full(len(self.docs), -1, dtype=np.int64)  # each document's best chunk
        for i in np.argsort(hybrid, kind="stable"):  # ascending: the best chunk is written last
            best[self._doc_of[i]] = i
        lexical = self._bm25.scores(text)
        fused = 1.0 / (RRF_K + _ranks(dense, usable))
        matched = usable & (lexical > 0)
        fused = fused + np.where(matched, 1.0 / (RRF_K + _ranks(lexical, matched)), 0.0)
        hits: list[SearchHit] = []
        for d in np.argsort(-np.where(usable, fused, -np.inf), kind="stable")[:k]:
            if not usable[d]:
                break
            i = int(best[d])
            hits.append(SearchHit.of(self.rows[i], float(hybrid[i]), float(cosine[i])))
        return hits


class KnowledgeIndex:
    """Chunks and their embedding matrix in memory; fused search (``FusedScorer``).

    The chatbot's own build, used until a knowledge-base version is live (and by unit tests).
    """

    def __init__(self, chunks: Sequence[Chunk], matrix: Matrix) -> None:
        if len(chunks) != matrix.shape[0]:
            raise ValueError("one embedding row per chunk is required")
        self.chunks = list(chunks)
        self.matrix = matrix
        records = [
            IndexRecord(c.id, c.doc_id, c.doc_title, c.heading, c.text, c.content_hash, c.kind, matrix[i])
            for i, c in enumerate(self.chunks)
        ]
        self._scorer = FusedScorer(records, matrix)
        digest = hashlib.sha256("".join(c.content_hash for c in self.chunks).encode()).hexdigest()
        self.version = f"kb-{digest[:12]}"

    def search(self, vector: Vector, query: str, k: int = 3, kind: str | None = None) -> list[Hit]:
        return [_hit(h) for h in self._scorer.search(vector, query, k, kind)]

    def pinned(self) -> Retriever:
        """Itself: a build in memory has one version."""
        return self


class _PinnedVersion:
    """One version of the index as a ``Retriever`` (``LiveKnowledge.pinned``): searched in memory
    by a ``FusedScorer`` over its rows when they could be read, else by the store's own search.
    ``model`` is the embedding model its rows came from; ``embedder`` embeds queries for it when
    that is not the chatbot's own model (None: the chatbot's own embedder)."""

    def __init__(
        self,
        index: VectorIndex,
        version: str,
        scorer: FusedScorer | None = None,
        model: str = "",
        embedder: Embedder | None = None,
    ) -> None:
        self.index = index
        self._version = version
        self.scorer = scorer
        self.model = model
        self.embedder = embedder

    @property
    def version(self) -> str:
        return self._version

    def search(self, vector: Vector, query: str, k: int = 3, kind: str | None = None) -> list[Hit]:
        if self.scorer is not None:
            return [_hit(h) for h in self.scorer.search(vector, query, k, kind)]
        return [_hit(h) for h in self.index.search(self._version, vector, query, k, kind)]


def load_scorer(index: VectorIndex, version: str) -> FusedScorer | None:
    """A ``FusedScorer`` over every row of ``version`` (read once: versions are immutable), or None
    when the store cannot list them (the caller then uses the store's own hybrid search)."""
    try:
        records = index.records(version)
    except Exception:  # a store without row listing, or a hiccup: the store's search still works
        log.warning("could not read the rows of %s: searching it with the store's own ranking", version)
        return None
    if not records:
        return None
    matrix = np.stack([np.asarray(r.vector, dtype=np.float32) for r in records])
    return FusedScorer(records, matrix)


class QueryBound:
    """A pinned version searched with the query's vector from that version's own embedder, whatever
    vector a handler passes (handlers pass the chatbot's vector of the same query, made by the
    chatbot's embedder for the intent model and the catalog)."""

    def __init__(self, retriever: Retriever, vector: Vector, model: str) -> None:
        self.retriever = retriever
        self.vector = vector
        self.model = model
        """The embedding model that made ``vector``: the version's own."""

    @property
    def version(self) -> str:
        return self.retriever.version

    def search(self, vector: Vector, query: str, k: int = 3, kind: str | None = None) -> list[Hit]:
        return self.retriever.search(self.vector, query, k, kind)


@dataclass(frozen=True)
class _Live:
    """What the alias points at, as one value: the version, its scorer, its embedding model and the
    embedder for its queries (None: the chatbot's own)."""

    name: str
    scorer: FusedScorer | None
    model: str
    embedder: Embedder | None


class _NoKnowledge:
    """No version live and no build of our own: nothing to find."""

    version = "none"

    def search(self, vector: Vector, query: str, k: int = 3, kind: str | None = None) -> list[Hit]:
        return []


class LiveKnowledge:
    """The version ``alias`` points at, followed without a restart."""

    def __init__(
        self,
        index: VectorIndex,
        model: str,
        fallback: KnowledgeIndex | None,
        alias: str = "kb-live",
        refresh_seconds: float = 1.0,
        embedders: Callable[[str], Embedder] | None = None,
    ) -> None:
        self.index = index
        self.model = model
        """The chatbot's own embedding model (the intent model's and the catalog's)."""
        self.alias = alias
        self.refresh_seconds = refresh_seconds
        self.fallback = fallback
        """Serves until the alias points at a version we can embed queries for."""
        self.embedders = embedders
        """Model id -> an embedder of that model, for versions embedded by another model than ours
        (None: only versions of our own model are served)."""
        self._others: dict[str, Embedder] = {}
        self._state: _Live | None = None
        """The live version, its in-memory scorer and its query embedder, swapped as one reference."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    @property
    def _live(self) -> str | None:
        state = self._state
        return state.name if state is not None else None

    @property
    def version(self) -> str:
        if self._live is not None:
            return self._live
        return self.fallback.version if self.fallback is not None else "none"

    def search(self, vector: Vector, query: str, k: int = 3, kind: str | None = None) -> list[Hit]:
        return self.pinned().search(vector, query, k, kind)

    def pinned(self) -> Retriever:
        """The version live now, for one request: its search and its ``version`` stay that version
        whatever the alias does meanwhile, so an answer never names a version it did not read."""
        state = self._state  # one read: a swap does not change this request's version or embedder
        if state is None:
            return self.fallback if self.fallback is not None else _NoKnowledge()
        return _PinnedVersion(self.index, state.name, state.scorer, state.model, state.embedder)

    def refresh(self) -> bool:
        """Resolve the alias; switch if it moved to a version we can use. True if switched."""
        try:
            name = self.index.resolve(self.alias)
            if name is None or name == self._live:
                return False
            info = self.index.version(name)
            embedder = self._embedder_for(info.model, info.dim) if info is not None else None
            if info is None or (info.model != self.model and embedder is None):
                log.error(
                    "%s -> %s was embedded by %s, which this chatbot cannot embed queries with "
                    "(its own model: %s): staying on %s",
                    self.alias,
                    name,
                    info.model if info else "?",
                    self.model,
                    self.version,
                )
                return False
            # load before switching: the first request on the new version must not pay for it
            self.index.search(name, np.zeros(info.dim, dtype=np.float32), "", k=1)
            scorer = load_scorer(self.index, name)
        except Exception:  # a store hiccup must not take answers down: keep the current version
            log.exception("resolving %s failed; staying on %s", self.alias, self.version)
            return False
        log.info(
            "knowledge base: %s now %s, queries embedded by %s (was %s)",
            self.alias,
            name,
            info.model,
            self.version,
        )
        self._state = _Live(name, scorer, info.model, embedder)  # one assignment: readers get all or none
        return True

    def _embedder_for(self, model: str, dim: int) -> Embedder | None:
        """None for our own model; else an embedder of ``model`` (made once, warmed up on one text so
        the first request does not pay for it), or None when there is none or it is not that model."""
        if model == self.model or self.embedders is None:
            return None
        found = self._others.get(model)
        if found is None:
            try:
                made = self.embedders(model)
            except Exception:  # an unknown model: refused by the caller, logged there
                log.warning("no embedder for %s", model, exc_info=True)
                return None
            if model_id(made) != model or made.dim != dim:
                log.error("the embedder made for %s is %s (dimension %d)", model, model_id(made), made.dim)
                return None
            made.embed(["warm up"])
            self._others[model] = found = made
        return found

    def start(self) -> LiveKnowledge:
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="kb-alias", daemon=True)
            self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
