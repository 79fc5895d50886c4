"""``VectorIndex``: versioned vector indexes behind an alias (the knowledge base's store).

An index version is immutable once sealed: it is built under a name that says which embedding
model made it and from what (``kb-<model>-<build id>``), rows are added while it is ``building``,
and ``seal`` makes it ``ready``. Readers never look at versions directly: they resolve an alias
(``kb-live``) to a version and search that. Moving an alias is one atomic compare-and-set, so a
reader sees the old version or the new one, never a mix, and two writers cannot both win.

Retrieval is hybrid and its scoring is the same in every provider (``HybridScorer``): candidates
are the nearest rows by cosine similarity plus every row sharing a keyword with the query; a
candidate's score is ``cosine + keyword_weight * (shared keywords / query keywords)``, so a score
still reads as a cosine similarity with a small boost (the chatbot's ``min_score`` keeps its
meaning). Hits are one per document, best first.

Providers: ``platform/local/vector_lancedb.py`` (LanceDB tables on disk, an SQLite alias table)
and ``platform/aws/vector_opensearch.py`` (OpenSearch indexes, the ``_aliases`` API).
Callers: the knowledge-base pipeline (CD-04) builds and promotes; the chatbot resolves and searches.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mangaassist.core.errors import MangaAssistError
from mangaassist.core.kb import keywords

Vector = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]

LIVE_ALIAS = "kb-live"
KEYWORD_WEIGHT = 0.1


class VersionState(enum.StrEnum):
    BUILDING = "building"
    """Rows are being added. Never the target of an alias; a killed build leaves one behind,
    which the next build of the same name drops and rebuilds."""
    READY = "ready"
    """Sealed: complete and immutable. Only a ready version may be aliased."""


class VersionError(MangaAssistError):
    """A request the index cannot honour (unknown version, sealing twice, aliasing a building one)."""


class AliasConflict(MangaAssistError):
    """The alias moved under us: it no longer points where the caller expected."""


@dataclass(frozen=True)
class IndexRecord:
    """One chunk as stored: its identity, text and embedding."""

    chunk_id: str
    doc_id: str
    doc_title: str
    heading: str
    text: str
    content_hash: str
    kind: str
    vector: Vector


@dataclass(frozen=True)
class IndexVersion:
    name: str
    model: str
    """Embedding model id (``name@version``) every row of this version was embedded with."""
    dim: int
    state: VersionState
    rows: int
    created_at: str
    size_bytes: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    """What the builder recorded: mode, build id, gate metrics, counts."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "dim": self.dim,
            "state": self.state.value,
            "rows": self.rows,
            "created_at": self.created_at,
            "size_bytes": self.size_bytes,
            "meta": self.meta,
        }


@dataclass(frozen=True)
class AliasMove:
    alias: str
    version: str
    previous: str | None
    at: str
    reason: str = ""


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    doc_id: str
    doc_title: str
    heading: str
    text: str
    kind: str
    score: float
    """``cosine + KEYWORD_WEIGHT * keyword overlap``."""
    cosine: float

    @classmethod
    def of(cls, r: IndexRecord, score: float, cosine: float) -> SearchHit:
        return cls(r.chunk_id, r.doc_id, r.doc_title, r.heading, r.text, r.kind, score, cosine)


class VectorIndex(Protocol):
    """Versioned indexes behind aliases. One implementation per provider."""

    def versions(self) -> list[IndexVersion]:
        """Every version, oldest first (building ones included)."""

    def version(self, name: str) -> IndexVersion | None: ...

    def create_version(self, name: str, *, model: str, dim: int, meta: dict[str, Any]) -> IndexVersion:
        """Start building ``name`` (state ``building``). A leftover building version of that name is
        dropped first; a ready one is an error (versions are immutable)."""

    def add(self, name: str, records: Sequence[IndexRecord]) -> None:
        """Append rows to a building version."""

    def seal(self, name: str, meta: dict[str, Any]) -> IndexVersion:
        """Make a building version ready (immutable), merging ``meta`` into its metadata."""

    def update_meta(self, name: str, meta: dict[str, Any]) -> None:
        """Merge ``meta`` (gate metrics, notes) into a version's metadata; rows never change."""

    def drop(self, name: str) -> None:
        """Delete a version. Refused for the target of any alias."""

    def records(self, name: str) -> list[IndexRecord]: ...

    def search(
        self, name: str, vector: Vector, text: str, k: int = 10, kind: str | None = None
    ) -> list[SearchHit]:
        """Hybrid search of one version; at most one hit per document, best first."""

    def resolve(self, alias: str) -> str | None:
        """The version ``alias`` points at, or None. Cheap enough to call every second."""

    def move_alias(self, alias: str, version: str, *, expect: str | None, reason: str = "") -> AliasMove:
        """Point ``alias`` at ``version`` atomically, if it still points at ``expect``
        (None: it must not exist yet); else ``AliasConflict``."""

    def alias_history(self, alias: str) -> list[AliasMove]:
        """Every move of ``alias``, oldest first."""


def row_keywords(r: IndexRecord) -> set[str]:
    """The keywords a row is found by: its document title's, heading's and text's."""
    return keywords(f"{r.doc_title} {r.heading} {r.text}")


class HybridScorer:
    """Exact hybrid search over one immutable version held in memory.

    Cosine by one matrix-vector product; keyword overlap from an inverted index (keyword -> rows),
    so the cost grows with the rows sharing a query keyword, not with the whole corpus.
    """

    def __init__(
        self,
        rows: Sequence[IndexRecord],
        matrix: Matrix,
        row_words: Sequence[Collection[str]] | None = None,
    ) -> None:
        """``row_words``: each row's ``row_keywords``, when the caller has them already."""
        if len(rows) != matrix.shape[0]:
            raise ValueError("one embedding row per record is required")
        if row_words is not None and len(row_words) != len(rows):
            raise ValueError("one keyword set per record is required")
        self.rows = list(rows)
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        postings: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            for word in row_keywords(r) if row_words is None else row_words[i]:
                postings.setdefault(word, []).append(i)
        self._postings = {w: np.asarray(ix, dtype=np.int64) for w, ix in postings.items()}
        kinds = sorted({r.kind for r in self.rows})
        self._kind_mask = {k: np.asarray([r.kind == k for r in self.rows]) for k in kinds}

    def row_scores(self, vector: Vector, text: str) -> tuple[Vector, Vector]:
        """Per row: the cosine, and ``cosine + KEYWORD_WEIGHT * keyword overlap`` (the hit score)."""
        cosine = self.matrix @ np.asarray(vector, dtype=np.float32)
        scores = cosine.copy()
        wanted = keywords(text)
        if wanted:
            overlap = np.zeros(len(self.rows), dtype=np.float32)
            for word in wanted:
                rows = self._postings.get(word)
                if rows is not None:
                    overlap[rows] += 1.0
            scores += KEYWORD_WEIGHT * overlap / len(wanted)
        return cosine, scores

    def search(self, vector: Vector, text: str, k: int = 10, kind: str | None = None) -> list[SearchHit]:
        if not self.rows:
            return []
        cosine, scores = self.row_scores(vector, text)
        if kind is not None:
            mask = self._kind_mask.get(kind)
            if mask is None:
                return []
            scores = np.where(mask, scores, -np.inf)
        # more candidates than k: several chunks of one document collapse into one hit
        take = min(len(self.rows), max(k * 8, 32))
        top = np.argpartition(-scores, take - 1)[:take]
        top = top[np.argsort(-scores[top])]
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for i in top:
            if not np.isfinite(scores[i]):
                break
            r = self.rows[int(i)]
            if r.doc_id in seen:
                continue
            seen.add(r.doc_id)
            hits.append(SearchHit.of(r, float(scores[i]), float(cosine[i])))
            if len(hits) == k:
                break
        return hits
