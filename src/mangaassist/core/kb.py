"""Knowledge-base sources as data: documents, heading-aware chunks with stable ids and content
hashes, and the keyword tokenizer retrieval and the quality gate share. Pure (no IO).

Two callers chunk the same way: the knowledge-base pipeline (``delivery/pipelines/kb.py``), which
builds index versions, and the chatbot, which builds a first version itself on a fresh clone.
Sources are the Markdown documents under ``knowledge/`` (kind ``policy``) and the catalog's series
descriptions (kind ``product``, document id ``series/<series id>``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mangaassist.core.errors import ConfigError

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*$", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9$]+(?:\.[0-9]+)?")
STOPWORDS = frozenset(
    """a an and are as at be by can do does for from have how i if in is it its me my of on or our so
    that the their this to was what when where which who why will with you your we us get any there""".split()
)

KNOWLEDGE_DIR = "knowledge"
"""The folder (from the repository root) whose ``*.md`` files are the policy documents; not its
subfolders (``evals/`` holds the golden set)."""
CATALOG_FILE = "data/catalog.jsonl"
"""The catalog, whose series descriptions are the product documents: the one file under ``data/``
the knowledge base reads (the seed orders beside it are not indexed). The pipeline reads it and the
release planner maps it to CD-04 from this name."""
CHUNK_SETTINGS_FILE = "config/chatbot.yaml"
"""The file whose ``retrieval.chunk_words`` and ``retrieval.chunk_overlap`` cut every chunk, so a
change of them changes the index: the pipeline reads them there and the release planner maps the
file to CD-04 (as well as CD-06, whose folder it is in). It holds the chatbot's other settings
too."""
CHUNKING_CODE: tuple[str, ...] = ("mangaassist.core.kb", "mangaassist.delivery.pipelines.kb")
"""The modules whose source files make a source file's chunks: this one (parsing, chunking) and the
knowledge-base pipeline's (which files are sources, in which role, what the memo keeps of them).
The build keys its chunk memo on a digest of their files (``platform.kb_memo.code_identity``), and
the release planner maps the same files to CD-04 (as well as CD-01, whose ``src/`` they are in), so
a change of them runs the build that chunks every source again."""

POLICY = "policy"
"""Kind of a chunk cut from a ``knowledge/*.md`` document."""
PRODUCT = "product"
"""Kind of a chunk cut from a catalog series description."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    category: str
    body: str
    kind: str = POLICY


@dataclass(frozen=True)
class Chunk:
    id: str
    """``<doc id>#<n>``: stable while the document's headings stay in place."""
    doc_id: str
    doc_title: str
    heading: str
    text: str
    content_hash: str
    """sha256 of ``embed_text``: equal hashes embed to equal vectors under one model."""
    kind: str = POLICY

    @property
    def embed_text(self) -> str:
        return embed_text(self.doc_title, self.heading, self.text)


def embed_text(doc_title: str, heading: str, text: str) -> str:
    return f"{doc_title} - {heading}: {text}"


def parse_document(raw: str, where: str) -> Document:
    """A Markdown document with YAML front matter (``id``, ``title``, optional ``category``)."""
    m = _FRONT_MATTER.match(raw)
    if not m:
        raise ConfigError(f"{where}:1: missing YAML front matter (--- ... ---)")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: front matter is not valid YAML: {exc}") from exc
    for key in ("id", "title"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise ConfigError(f"{where}: front matter field '{key}' is missing or empty")
    return Document(
        id=meta["id"], title=meta["title"], category=str(meta.get("category", "")), body=raw[m.end() :]
    )


def series_document(row: Mapping[str, Any]) -> Document:
    """A catalog row as a document: what a product question is matched against."""
    genres = ", ".join(str(g) for g in row.get("genres", []))
    body = (
        f"{row['title']} by {row.get('author', '')}. {row.get('demographic', '')} manga, {genres}. "
        f"{row.get('description', '')}"
    )
    return Document(
        id=f"series/{row['id']}", title=str(row["title"]), category="catalog", body=body, kind=PRODUCT
    )


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
                    content_hash=hashlib.sha256(embed_text(doc.title, heading, window).encode()).hexdigest(),
                    kind=doc.kind,
                )
            )
            if start + max_words >= len(words):
                break
    return chunks


def chunk_all(docs: Iterable[Document], max_words: int = 160, overlap_words: int = 30) -> list[Chunk]:
    return [c for d in docs for c in chunk_document(d, max_words, overlap_words)]


def keywords(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


def corpus_digest(model: str, chunks: Iterable[Chunk]) -> str:
    """Names a build: the same model over the same chunks always gives the same digest."""
    h = hashlib.sha256(model.encode())
    for c in sorted(chunks, key=lambda c: c.id):
        h.update(f"\0{c.id}\0{c.content_hash}\0{c.kind}".encode())
    return h.hexdigest()
