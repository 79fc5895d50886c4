"""Which policy text an answer quotes: the fused ranking's hits judged by their own scores, the policy
page quoted beside an order question that names no order, sentences picked by stemmed words.

The retriever here is a fake that returns fixed hits (``Hits``): these are decisions over scores, and
real scores come from the integration tests and the golden set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.config import ChatbotConfig
from mangaassist.chatbot.embeddings import HashingEmbedder
from mangaassist.chatbot.handlers import ORDER_POLICY_SCORE, Context, Draft, order_status, policy_question
from mangaassist.chatbot.knowledge import Hit, best_sentences
from mangaassist.chatbot.store import ChatStore
from mangaassist.core.kb import Chunk
from mangaassist.platform.local.tables import SqliteTables

ROOT = Path(__file__).parents[3]
EMB = HashingEmbedder()
CATALOG = Catalog.load(ROOT / "data" / "catalog.jsonl")

LOST = (
    "If tracking says delivered but the parcel is not there, check with neighbours first. "
    "Contact support within 7 days and we open a claim with the carrier."
)
FORMATS = "An omnibus collects three volumes in one book. Paperbacks are the standard edition."


def hit(doc: str, text: str, score: float) -> Hit:
    return Hit(Chunk(f"{doc}#0", doc, doc.replace("-", " ").title(), "", text, ""), score)


@dataclass
class Hits:
    """A retriever that returns ``hits`` for every query, in the order given (as fusion ranks them)."""

    hits: list[Hit]
    queries: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        return "fake"

    def search(self, vector: object, query: str, k: int = 3, kind: str | None = None) -> list[Hit]:
        self.queries.append(query)
        return self.hits[:k]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ChatStore:
    store = ChatStore(SqliteTables(tmp_path_factory.mktemp("policy") / "t.sqlite3"))
    store.seed_orders(ROOT / "data" / "orders.jsonl")
    return store


def ask(handler, store: ChatStore, message: str, hits: list[Hit], customer: str | None = None) -> Draft:  # type: ignore[no-untyped-def]
    session = store.open_session(f"p-{abs(hash((message, customer)))}", customer)
    ctx = Context(
        message, EMB.embed([message])[0], customer, session, CATALOG, Hits(hits), store, ChatbotConfig()
    )
    return handler(ctx)


def test_a_policy_question_is_answered_when_a_later_hit_clears_the_bar(store: ChatStore) -> None:
    # fusion may rank a page first whose own score is below min_score (0.35)
    draft = ask(
        policy_question,
        store,
        "parcel says delivered",
        [hit("formats", FORMATS, 0.30), hit("lost", LOST, 0.40)],
    )
    assert not draft.fallback
    below = ask(
        policy_question,
        store,
        "parcel says delivered",
        [hit("formats", FORMATS, 0.30), hit("lost", LOST, 0.34)],
    )
    assert below.fallback and below.sources == []


def test_an_order_question_without_an_order_quotes_a_page_that_matches_well(store: ChatStore) -> None:
    message = "package says delivered but i never got it"
    anonymous = ask(order_status, store, message, [hit("lost-packages", LOST, ORDER_POLICY_SCORE + 0.05)])
    assert anonymous.lead.startswith("Please sign in")
    assert [s.id for s in anonymous.sources] == ["lost-packages"]
    assert any("delivered" in f for f in anonymous.facts)
    signed_in = ask(order_status, store, message, [hit("lost-packages", LOST, 0.6)], customer="cust-0001")
    assert signed_in.lead.startswith("Which order do you mean?")
    assert "lost-packages" in [s.id for s in signed_in.sources]


def test_a_weak_match_or_a_named_order_gets_no_policy_page(store: ChatStore) -> None:
    weak = ask(
        order_status,
        store,
        "you sent me the wrong manga",
        [hit("formats", FORMATS, ORDER_POLICY_SCORE - 0.02)],
    )
    assert weak.sources == [] and weak.facts == []
    named = ask(
        order_status, store, "where is MA-100001", [hit("lost-packages", LOST, 0.9)], customer="cust-0001"
    )
    assert [s.id for s in named.sources] == ["MA-100001"]
    assert not any("claim" in f for f in named.facts)


def test_sentences_are_matched_on_stemmed_words() -> None:
    text = (
        "Orders ship in 2 days. You can cancel within 1 hour. Returns must be unread. "
        "Gift cards never expire."
    )
    assert best_sentences(text, "can i still cancelling it", 1) == ["You can cancel within 1 hour."]
    assert best_sentences(text, "return a book i already read", 1) == ["Returns must be unread."]
