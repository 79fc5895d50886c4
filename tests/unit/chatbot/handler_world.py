"""What the handler tests of this folder share: the catalog, the knowledge base and a store with the
sample orders, embedded by the hashing embedder, and one call that runs a handler on a message."""

from __future__ import annotations

from pathlib import Path

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.config import ChatbotConfig
from mangaassist.chatbot.embeddings import HashingEmbedder
from mangaassist.chatbot.handlers import HANDLERS, Context, Draft
from mangaassist.chatbot.knowledge import KnowledgeIndex, chunk_document, load_documents
from mangaassist.chatbot.store import ChatStore
from mangaassist.platform.local.tables import SqliteTables

ROOT = Path(__file__).parents[3]
EMB = HashingEmbedder()
CATALOG = Catalog.load(ROOT / "data" / "catalog.jsonl")

World = tuple[KnowledgeIndex, ChatStore]


def build_world(directory: Path) -> World:
    """The knowledge base in memory and a SQLite store under ``directory`` with the sample orders."""
    CATALOG.matrix = EMB.embed([s.search_text for s in CATALOG.series])
    chunks = [c for d in load_documents(ROOT / "knowledge") for c in chunk_document(d)]
    knowledge = KnowledgeIndex(chunks, EMB.embed([c.embed_text for c in chunks]))
    store = ChatStore(SqliteTables(directory / "t.sqlite3"))
    store.seed_orders(ROOT / "data" / "orders.jsonl")
    return knowledge, store


def handle(world: World, intent: str, message: str, customer: str | None = None) -> Draft:
    """``intent``'s handler on ``message`` in a new session of ``customer``."""
    knowledge, store = world
    session = store.open_session(f"s-{abs(hash((intent, message, customer)))}", customer)
    ctx = Context(
        message, EMB.embed([message])[0], customer, session, CATALOG, knowledge, store, ChatbotConfig()
    )
    return HANDLERS[intent](ctx)
