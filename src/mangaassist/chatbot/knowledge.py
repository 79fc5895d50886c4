"""The knowledge base as the chatbot sees it: the live index version behind the ``kb-live`` alias.

``LiveKnowledge`` is what handlers search. It reads the index only through the ``VectorIndex``
client: a background thread resolves the alias every ``refresh_seconds`` and, when it points at a
new version, loads that version first and only then switches, so no request waits for the load
and none fails during a swap. Requests already running finish on the version they started with.
The version answering is reported in ``versions["index"]``.

On a fresh clone no version exists yet: the chatbot then serves a build of its own, in memory,
from the same sources and chunker (``core/kb.py``), and switches to ``kb-live`` as soon as a
knowledge-base build (CD-04, ``mangaassist kb build``) promotes one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mangaassist.chatbot.embeddings import Matrix, Vector
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
    "Hit",
    "KnowledgeIndex",
    "LiveKnowledge",
    "Retriever",
    "best_sentences",
    "chunk_document",
    "keywords",
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
    """The sentences of ``text`` sharing most keywords with ``query``, in their original order."""
    sentences = [s.strip(" -*#\n") for s in _SENTENCE.split(text.replace("\n", " ")) if s.strip()]
    wanted = keywords(query)
    scored = sorted(range(len(sentences)), key=lambda i: (-len(keywords(sentences[i]) & wanted), i))[:limit]
    return [sentences[i] for i in sorted(scored)]


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


class KnowledgeIndex:
    """Chunks and their embedding matrix in memory; hybrid search (cosine plus a keyword boost).

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
        self._scorer = HybridScorer(records, matrix)
        digest = hashlib.sha256("".join(c.content_hash for c in self.chunks).encode()).hexdigest()
        self.version = f"kb-{digest[:12]}"

    def search(self, vector: Vector, query: str, k: int = 3, kind: str | None = None) -> list[Hit]:
        return [_hit(h) for h in self._scorer.search(vector, query, k, kind)]

    def pinned(self) -> Retriever:
        """Itself: a build in memory has one version."""
        return self


class _PinnedVersion:
    """One version of the index as a ``Retriever`` (``LiveKnowledge.pinned``)."""

    def __init__(self, index: VectorIndex, version: str) -> None:
        self.index = index
        self._version = version

    @property
    def version(self) -> str:
        return self._version

    def search(self, vector: Vector, query: str, k: int = 3, kind: str | None = None) -> list[Hit]:
        return [_hit(h) for h in self.index.search(self._version, vector, query, k, kind)]


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
    ) -> None:
        self.index = index
        self.model = model
        self.alias = alias
        self.refresh_seconds = refresh_seconds
        self.fallback = fallback
        """Serves until the alias points at a version embedded by our model."""
        self._live: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    @property
    def version(self) -> str:
        if self._live is not None:
            return self._live
        return self.fallback.version if self.fallback is not None else "none"

    def search(self, vector: Vector, query: str, k: int = 3, kind: str | None = None) -> list[Hit]:
        live = self._live  # one read: a swap during this request does not change its version
        if live is None:
            return self.fallback.search(vector, query, k, kind) if self.fallback is not None else []
        return [_hit(h) for h in self.index.search(live, vector, query, k, kind)]

    def pinned(self) -> Retriever:
        """The version live now, for one request: its search and its ``version`` stay that version
        whatever the alias does meanwhile, so an answer never names a version it did not read."""
        live = self._live
        if live is None:
            return self.fallback if self.fallback is not None else _NoKnowledge()
        return _PinnedVersion(self.index, live)

    def refresh(self) -> bool:
        """Resolve the alias; switch if it moved to a version we can use. True if switched."""
        try:
            name = self.index.resolve(self.alias)
            if name is None or name == self._live:
                return False
            info = self.index.version(name)
            if info is None or info.model != self.model:
                log.error(
                    "%s -> %s was embedded by %s, queries by %s: staying on %s",
                    self.alias,
                    name,
                    info.model if info else "?",
                    self.model,
                    self.version,
                )
                return False
            # load before switching: the first request on the new version must not pay for it
            self.index.search(name, np.zeros(info.dim, dtype=np.float32), "", k=1)
        except Exception:  # a store hiccup must not take answers down: keep the current version
            log.exception("resolving %s failed; staying on %s", self.alias, self.version)
            return False
        log.info("knowledge base: %s now %s (was %s)", self.alias, name, self.version)
        self._live = name
        return True

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
