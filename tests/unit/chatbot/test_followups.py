"""Follow-ups resolve to the series or the order of the previous turns."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mangaassist.chatbot.catalog import Series
from mangaassist.chatbot.entities import may_follow_up_on_order, resolve_follow_up
from mangaassist.chatbot.handlers import Draft
from mangaassist.chatbot.service import decided_intent, order_of_last_turn
from mangaassist.core.intents import Intent
from tests.unit.chatbot.handler_world import CATALOG, World, build_world, handle

SAMPLE = CATALOG.series[3::9]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("follow"))


def answer(world: World, intent: str, message: str, customer: str | None) -> Draft:
    return handle(world, intent, message, customer)


@pytest.mark.parametrize("series", SAMPLE, ids=lambda s: s.id)
@pytest.mark.parametrize(
    ("follow_up", "says"),
    [
        ("and how many volumes does it have?", lambda s: f"{s.volumes} volumes"),
        ("is that one finished?", lambda s: "finished" if s.status == "completed" else "ongoing"),
        ("who wrote it?", lambda s: f"{s.title} is by"),
        ("who's the author?", lambda s: f"{s.title} is by"),
        ("what about the deluxe edition?", lambda s: "deluxe"),
        ("what genre is it", lambda s: s.genres[0]),
        ("how much is it?", lambda s: f"${s.price_usd:.2f}"),
    ],
)
def test_series_follow_ups_answer_about_the_conversations_series(
    world: World, series: Series, follow_up: str, says: Callable[[Series], str]
) -> None:
    query = resolve_follow_up(follow_up, series.id, CATALOG)
    assert query == f"{series.title}: {follow_up}"
    draft = answer(world, "product_search", query, None)
    assert draft.sources[0].id == series.id
    assert says(series) in " ".join([draft.lead, *draft.facts])


@pytest.mark.parametrize(
    "message",
    [
        "thanks!",
        "how much is shipping?",
        "recommend something similar",
        "do you have Naruto vol 2?",  # names its own title
        "what's your return policy",
        "hi",
    ],
)
def test_messages_that_are_not_follow_ups_stay_as_they_are(message: str) -> None:
    assert resolve_follow_up(message, "berserk", CATALOG) == message
    assert resolve_follow_up(message, "berserk", CATALOG, last_order="MA-100001") == message


@pytest.mark.parametrize(
    "follow_up",
    [
        "when will it arrive?",
        "has it shipped yet",
        "and the tracking number?",
        "can I add vol 3 of Naruto to it?",
        "can you cancel it",
        "what was in it again?",
    ],
)
def test_order_follow_ups_take_the_order_of_the_previous_turn(follow_up: str) -> None:
    assert may_follow_up_on_order(follow_up)
    assert resolve_follow_up(follow_up, "berserk", CATALOG, last_order="MA-100007") == (
        f"Order MA-100007: {follow_up}"
    )
    # without an order in the previous turn, the order words do not invent one
    assert not resolve_follow_up(follow_up, None, CATALOG).startswith("Order")


def test_a_message_naming_its_own_order_is_not_rewritten() -> None:
    assert not may_follow_up_on_order("where is MA-100002")
    assert resolve_follow_up("where is MA-100002", None, CATALOG, "MA-100001") == "where is MA-100002"


def test_the_order_of_the_last_turn(world: World) -> None:
    _, store = world
    state = store.open_session("orders-1", "cust-0001")
    assert order_of_last_turn(store, "orders-1") is None  # no turn yet
    store.record_turn(
        state, "cust-0001", "where is my order #100004?", "order_status", "Here's your order", None
    )
    assert order_of_last_turn(store, "orders-1") == "MA-100004"
    store.record_turn(state, "cust-0001", "do you have Naruto?", "product_search", "Naruto ...", "naruto")
    assert order_of_last_turn(store, "orders-1") is None  # the conversation moved on to a series
    store.record_turn(state, "cust-0001", "my order?", "order_status", "Order MA-100009 was placed ...", None)
    assert order_of_last_turn(store, "orders-1") == "MA-100009"  # the only order the answer named
    store.record_turn(state, "cust-0001", "my orders", "order_status", "MA-100001 ... MA-100002 ...", None)
    assert order_of_last_turn(store, "orders-1") is None  # several: which one is ambiguous


@pytest.mark.parametrize(
    ("predicted", "query", "message", "last_order", "decided"),
    [
        # the catalog settles fact questions the model got wrong
        ("out_of_scope", "who wrote fruits basket", "who wrote fruits basket", None, Intent.PRODUCT_SEARCH),
        (
            "recommendation",
            "Berserk is by which mangaka?",
            "Berserk is by which mangaka?",
            None,
            "product_search",
        ),
        (
            "policy_question",
            "how many volumes does nana have",
            "how many volumes does nana have",
            None,
            "product_search",
        ),
        ("recommendation", "is monster worth it", "is monster worth it", None, None),
        (
            "policy_question",
            "how much is shipping for berserk",
            "how much is shipping for berserk",
            None,
            None,
        ),
        (
            "human_handoff",
            "who wrote berserk? get me a human",
            "who wrote berserk? get me a human",
            None,
            None,
        ),
        ("product_search", "who wrote berserk", "who wrote berserk", None, None),
        # an order follow-up is about the order
        (
            "product_search",
            "Order MA-100001: can I add vol 3 to it?",
            "can I add vol 3 to it?",
            "MA-100001",
            "order_status",
        ),
        ("order_status", "Order MA-100001: when will it arrive?", "when will it arrive?", "MA-100001", None),
        # a series follow-up with a format is about the series
        ("chitchat", "One Piece: what about the box set?", "what about the box set?", None, "product_search"),
        ("chitchat", "One Piece: thanks, love it", "thanks, love it", None, None),
    ],
)
def test_decided_intent(
    predicted: str, query: str, message: str, last_order: str | None, decided: str | None
) -> None:
    assert decided_intent(predicted, query, message, last_order, CATALOG) == decided


def test_a_request_to_change_a_placed_order_gets_the_order_and_the_rules(world: World) -> None:
    draft = answer(world, "order_status", "Order MA-100001: can I add Naruto vol 3 to it?", "cust-0001")
    ids = [s.id for s in draft.sources]
    assert ids[0] == "MA-100001"
    assert "order-changes-and-cancellation" in ids
    assert any("add items" in f for f in draft.facts)
    plain = answer(world, "order_status", "where is MA-100001?", "cust-0001")
    assert [s.id for s in plain.sources] == ["MA-100001"]  # no rules for a plain status question
