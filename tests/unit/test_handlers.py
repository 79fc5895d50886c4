"""Handlers are pure decisions over the catalog, orders and knowledge base (hashing embedder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.config import ChatbotConfig
from mangaassist.chatbot.embeddings import HashingEmbedder
from mangaassist.chatbot.handlers import HANDLERS, Context, max_age_for
from mangaassist.chatbot.knowledge import KnowledgeIndex, chunk_document, load_documents
from mangaassist.chatbot.store import ChatStore
from mangaassist.core.intents import INTENTS
from mangaassist.platform.local.tables import SqliteTables

ROOT = Path(__file__).parents[2]
EMB = HashingEmbedder()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, KnowledgeIndex, ChatStore]:
    catalog = Catalog.load(ROOT / "data" / "catalog.jsonl")
    catalog.matrix = EMB.embed([s.search_text for s in catalog.series])
    chunks = [c for d in load_documents(ROOT / "knowledge") for c in chunk_document(d)]
    knowledge = KnowledgeIndex(chunks, EMB.embed([c.embed_text for c in chunks]))
    store = ChatStore(SqliteTables(tmp_path_factory.mktemp("h") / "t.sqlite3"))
    store.seed_orders(ROOT / "data" / "orders.jsonl")
    return catalog, knowledge, store


def run(
    world: tuple[Catalog, KnowledgeIndex, ChatStore],
    intent: str,
    message: str,
    customer: str | None = None,
    config: ChatbotConfig | None = None,
):  # type: ignore[no-untyped-def]
    catalog, knowledge, store = world
    session = store.open_session(f"s-{intent}-{abs(hash(message))}", customer)
    ctx = Context(
        message,
        EMB.embed([message])[0],
        customer,
        session,
        catalog,
        knowledge,
        store,
        config or ChatbotConfig(),
    )
    return HANDLERS[intent](ctx)


def test_every_intent_has_a_handler() -> None:
    assert set(HANDLERS) == set(INTENTS)


def test_product_search_states_price_and_stock_from_the_catalog(world) -> None:  # type: ignore[no-untyped-def]
    catalog = world[0]
    naruto = catalog.by_id["naruto"]
    draft = run(world, "product_search", "how much is Naruto vol 3 in paperback?")
    text = " ".join(draft.facts)
    assert draft.sources[0].id == "naruto"
    assert f"${naruto.price_usd:.2f}" in text
    assert "Volume 3 is in our catalog" in text
    assert not draft.fallback


def test_product_search_knows_the_last_volume(world) -> None:  # type: ignore[no-untyped-def]
    naruto = world[0].by_id["naruto"]
    draft = run(world, "product_search", f"do you have Naruto volume {naruto.volumes + 1}?")
    assert f"There is no volume {naruto.volumes + 1}" in " ".join(draft.facts)


def test_product_search_reports_out_of_stock(world) -> None:  # type: ignore[no-untyped-def]
    sold_out = next(s for s in world[0].series if not s.in_stock)
    draft = run(world, "product_search", f"is {sold_out.title} available?")
    assert draft.sources[0].id == sold_out.id
    assert "out of stock" in " ".join(draft.facts)


def test_product_search_without_a_match_is_a_fallback(world) -> None:  # type: ignore[no-untyped-def]
    draft = run(world, "product_search", "zzqx vrrrk plomb")
    assert draft.fallback
    assert draft.sources == []


def test_recommendations_respect_age_and_exclude_the_seed(world) -> None:  # type: ignore[no-untyped-def]
    catalog = world[0]
    draft = run(world, "recommendation", "something like Naruto for my 9 year old")
    assert draft.sources
    assert "naruto" not in {s.id for s in draft.sources}
    assert all(catalog.by_id[s.id].min_age == 0 for s in draft.sources)
    assert draft.lead.startswith("If you liked Naruto")


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("for my 9 year old", 0),
        ("for a 14-year-old", 13),
        ("for kids", 0),
        ("for teens", 13),
        ("for my 17 yo", 16),
        ("for me, I'm 30 years old", None),
        ("something dark", None),
    ],
)
def test_reader_age(text: str, age: int | None) -> None:
    assert max_age_for(text) == age


def test_recommendation_genre_filter(world) -> None:  # type: ignore[no-untyped-def]
    draft = run(world, "recommendation", "any good horror manga?")
    assert draft.sources
    assert all("horror" in world[0].by_id[s.id].genres for s in draft.sources)


def test_an_asked_for_genre_is_never_dropped(world) -> None:  # type: ignore[no-untyped-def]
    """Horror for an 8-year-old: the catalog has none, so say so rather than suggest something else."""
    catalog = world[0]
    draft = run(world, "recommendation", "recommend a horror manga for my 8 year old")
    for source in draft.sources:
        series = catalog.by_id[source.id]
        assert "horror" in series.genres and series.min_age == 0
    assert draft.sources or draft.fallback


def test_descriptive_search_below_the_floor_is_a_fallback(world) -> None:  # type: ignore[no-untyped-def]
    strict = ChatbotConfig.model_validate({"retrieval": {"product_min_score": 2.0}})
    draft = run(world, "product_search", "a manga about pirates and friendship", config=strict)
    assert draft.fallback and draft.sources == []


def test_order_status_is_scoped_to_the_customer(world) -> None:  # type: ignore[no-untyped-def]
    store = world[2]
    order = store.orders_of("cust-0001", limit=1)[0]
    own = run(world, "order_status", f"where is {order['order_id']}", customer="cust-0001")
    assert order["order_id"] in own.facts[0] and str(order["status"]) in own.facts[0]
    other = run(world, "order_status", f"where is {order['order_id']}", customer="cust-0002")
    assert other.fallback and other.facts == []
    anonymous = run(world, "order_status", f"where is {order['order_id']}")
    assert "sign in" in anonymous.lead and anonymous.facts == []


def test_order_status_without_id_lists_own_recent_orders(world) -> None:  # type: ignore[no-untyped-def]
    draft = run(world, "order_status", "where's my stuff", customer="cust-0003")
    own = {o["order_id"] for o in world[2].orders_of("cust-0003", limit=10)}
    listed = {f.split(" ")[0] for f in draft.facts}
    assert listed and listed <= own


def test_policy_answers_cite_documents_or_fall_back(world) -> None:  # type: ignore[no-untyped-def]
    cfg = ChatbotConfig.model_validate({"retrieval": {"min_score": 0.0}})
    draft = run(world, "policy_question", "do gift cards expire?", config=cfg)
    assert draft.sources and not draft.fallback
    strict = ChatbotConfig.model_validate({"retrieval": {"min_score": 1.0}})
    assert run(world, "policy_question", "do gift cards expire?", config=strict).fallback


def test_handoff_opens_a_ticket(world) -> None:  # type: ignore[no-untyped-def]
    draft = run(world, "human_handoff", "human please")
    ticket = draft.sources[0].id
    assert ticket.startswith("HT-") and ticket in draft.lead
    assert world[2].tables.get("tickets", ticket, "meta")["status"] == "open"


def test_chitchat_and_out_of_scope_state_no_facts(world) -> None:  # type: ignore[no-untyped-def]
    for intent, text in (("chitchat", "thanks!"), ("out_of_scope", "what's the weather")):
        draft = run(world, intent, text)
        assert draft.facts == [] and draft.lead
