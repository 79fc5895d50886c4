"""The knowledge base: Markdown documents under ``knowledge/``, cut into chunks by heading,
held in memory with their embeddings.

The knowledge-base pipeline (CD-04) will replace the in-memory index with versioned indexes
behind an alias; the chunking here is the one it reuses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from mangaassist.chatbot.embeddings import Matrix, Vector
from mangaassist.core.errors import ConfigError

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*$", re.MULTILINE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9*\"'(])")
_WORD = re.compile(r"[a-z0-9$]+(?:\.[0-9]+)?")
STOPWORDS = frozenset(
    """a an and are as at be by can do does for from have how i if in is it its me my of on or our so
    that the their this to was what when where which who why will with you your we us get any there""".split()
)


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    category: str
    body: str


@dataclass(frozen=True)
class Chunk:
    id: str
    """``<doc id>#<n>``: stable while the document's headings stay in place."""
    doc_id: str
    doc_title: str
    heading: str
    text: str
    content_hash: str

    @property
    def embed_text(self) -> str:
        return f"{self.doc_title} - {self.heading}: {self.text}"


def load_documents(directory: Path) -> list[Document]:
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory of knowledge documents")
    docs = []
    for path in sorted(directory.glob("*.md")):
        raw = path.read_text(encoding="utf-8")
        m = _FRONT_MATTER.match(raw)
        if not m:
            raise ConfigError(f"{path}:1: missing YAML front matter (--- ... ---)")
        try:
            meta = yaml.safe_load(m.group(1)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: front matter is not valid YAML: {exc}") from exc
        for key in ("id", "title"):
            if not isinstance(meta.get(key), str) or not meta[key]:
                raise ConfigError(f"{path}: front matter field '{key}' is missing or empty")
        docs.append(
            Document(
                id=meta["id"],
                title=meta["title"],
                category=str(meta.get("category", "")),
                body=raw[m.end() :],
            )
        )
    if not docs:
        raise ConfigError(f"{directory}: no *.md documents")
    return docs


def chunk_document(doc: Document, max_words: int = 160, overlap_words: int = 30) -> list[Chunk]:
    """Cut at headings; split long sections into windows of ``max_words`` sharing ``overlap_words``."""
    sections: list[tuple[str, str]] = []
    positions = [(m.start(), m.end(), m.group(2)) for m in _HEADING.finditer(doc.body)]
    if not positions or positions[0][0] > 0:
        end = positions[0][0] if positions else len(doc.body)
        sections.append((doc.title, doc.body[:end]))
    for i, (_, end, heading) in enumerate(positions):
        stop = positions[i + 1][0] if i + 1 < len(positions) else len(doc.body)
        sections.append((heading, doc.body[end:stop]))
    chunks: list[Chunk] = []
    for heading, text in sections:
        words = text.split()
        if not words:
            continue
        step = max(1, max_words - overlap_words)
        for start in range(0, len(words), step):
            window = " ".join(words[start : start + max_words])
            chunks.append(
                Chunk(
                    id=f"{doc.id}#{len(chunks)}",
                    doc_id=doc.id,
                    doc_title=doc.title,
                    heading=heading,
                    text=window,
                    content_hash=hashlib.sha256(f"{heading}\n{window}".encode()).hexdigest(),
                )
            )
            if start + max_words >= len(words):
                break
    return chunks


def keywords(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


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


class KnowledgeIndex:
    """Chunks and their embedding matrix; cosine search with a small keyword boost."""

    def __init__(self, chunks: Sequence[Chunk], matrix: Matrix) -> None:
        if len(chunks) != matrix.shape[0]:
            raise ValueError("one embedding row per chunk is required")
        self.chunks = list(chunks)
        self.matrix = matrix
        self._keywords = [keywords(c.embed_text) for c in self.chunks]
        digest = hashlib.sha256("".join(c.content_hash for c in self.chunks).encode()).hexdigest()
        self.version = f"kb-{digest[:12]}"

    def search(self, vector: Vector, query: str, k: int = 3) -> list[Hit]:
        scores = self.matrix @ vector
        wanted = keywords(query)
        if wanted:
            overlap = np.array([len(kw & wanted) / len(wanted) for kw in self._keywords], dtype=np.float32)
            scores = scores + 0.1 * overlap
        top = np.argsort(-scores)[: max(k * 3, k)]
        hits: list[Hit] = []
        seen_docs: set[str] = set()
        for i in top:
            chunk = self.chunks[int(i)]
            if chunk.doc_id in seen_docs:
                continue
            seen_docs.add(chunk.doc_id)
            hits.append(Hit(chunk, float(scores[int(i)])))
            if len(hits) == k:
                break
        return hits
