from pathlib import Path

import numpy as np
import pytest

from mangaassist.chatbot.embeddings import HashingEmbedder
from mangaassist.chatbot.knowledge import (
    Document,
    KnowledgeIndex,
    best_sentences,
    chunk_document,
    load_documents,
)
from mangaassist.core.errors import ConfigError

DOC = Document(
    id="returns-policy",
    title="Returns",
    category="returns",
    body="Intro line before headings.\n\n## Window\nYou can return items within 30 days. "
    "Items must be unread.\n\n## How\n" + " ".join(f"word{i}" for i in range(50)) + "\n",
)


def test_chunks_follow_headings_with_stable_ids() -> None:
    chunks = chunk_document(DOC, max_words=20, overlap_words=5)
    assert [c.heading for c in chunks][:2] == ["Returns", "Window"]
    assert chunks[1].text.startswith("You can return items within 30 days.")
    assert [c.id for c in chunks] == [f"returns-policy#{i}" for i in range(len(chunks))]
    assert chunks == chunk_document(DOC, max_words=20, overlap_words=5)  # deterministic


def test_long_sections_split_with_overlap() -> None:
    how = [c for c in chunk_document(DOC, max_words=20, overlap_words=5) if c.heading == "How"]
    assert len(how) == 3  # 50 words in windows of 20 stepping 15: starts 0, 15, 30
    first, second = how[0].text.split(), how[1].text.split()
    assert first[-5:] == second[:5]
    assert how[-1].text.split()[-1] == "word49"


def test_content_hash_changes_only_with_content() -> None:
    a = chunk_document(DOC)
    edited = Document(DOC.id, DOC.title, DOC.category, DOC.body.replace("30 days", "45 days"))
    b = chunk_document(edited)
    assert a[0].content_hash == b[0].content_hash
    assert a[1].content_hash != b[1].content_hash


def test_best_sentences_pick_the_relevant_ones_in_order() -> None:
    text = "Shipping is $4.99. Returns are accepted within 30 days. Gift cards never expire."
    assert best_sentences(text, "how many days do I have for returns", 1) == [
        "Returns are accepted within 30 days."
    ]


def test_index_search_and_version() -> None:
    docs = [DOC, Document("gift-cards", "Gift cards", "gift-cards", "## Expiry\nGift cards never expire.\n")]
    chunks = [c for d in docs for c in chunk_document(d)]
    emb = HashingEmbedder()
    index = KnowledgeIndex(chunks, emb.embed([c.embed_text for c in chunks]))
    hits = index.search(emb.embed(["do gift cards expire"])[0], "do gift cards expire", k=2)
    assert hits[0].chunk.doc_id == "gift-cards"
    assert len({h.chunk.doc_id for h in hits}) == len(hits)  # one hit per document
    assert index.version.startswith("kb-")
    with pytest.raises(ValueError, match="one embedding row per chunk"):
        KnowledgeIndex(chunks, np.zeros((1, emb.dim), dtype=np.float32))


def test_load_documents_reports_bad_front_matter(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("no front matter\n")
    with pytest.raises(ConfigError, match=r"a\.md:1: missing YAML front matter"):
        load_documents(tmp_path)
    (tmp_path / "a.md").write_text("---\ntitle: X\n---\nbody\n")
    with pytest.raises(ConfigError, match="'id' is missing"):
        load_documents(tmp_path)
