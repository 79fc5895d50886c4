"""Catalog facts: questions about a series' author, volumes, status, formats, price, rating, publisher,
year and genres are answered from the catalog, focused on the asked fact, for any series and
phrasing (lower case, typos, partial titles, titles that are ordinary words)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from mangaassist.chatbot.catalog import Series, asked_facts, people
from mangaassist.chatbot.guardrails import check_output
from mangaassist.chatbot.handlers import RATING_NAMES, Draft, fact_question
from tests.unit.chatbot.handler_world import CATALOG, World, build_world, handle

SAMPLE = CATALOG.series[::6]  # 28 series spread over the catalog, ambiguous titles included
AMBIGUOUS = [CATALOG.by_id[i] for i in ("monster", "real", "nana", "pluto", "berserk", "bleach", "aria")]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("facts"))


def ask(world: World, message: str) -> Draft:
    return handle(world, "product_search", message)


def text_of(draft: Draft) -> str:
    return " ".join([draft.lead, *draft.facts])


def assert_grounded(draft: Draft) -> None:
    """Every price and number of the answer is one the sourced series' catalog rows hold."""
    rows = [CATALOG.by_id[s.id] for s in draft.sources]
    known = [f"${s.price_usd:.2f} {s.volumes} {s.year} {s.min_age} {list(s.formats.values())}" for s in rows]
    verdict = check_output(text_of(draft), known)
    assert verdict.ok, (text_of(draft), verdict)
    prices = {float(p) for p in re.findall(r"\$(\d+\.\d\d)", text_of(draft))}
    assert prices <= {s.price_usd for s in rows}


def authors(s: Series) -> str:
    return " and ".join(people(s.author)) if len(people(s.author)) == 2 else people(s.author)[0]


# (phrasing, expected fact kind, what the lead must say)
Expect = Callable[[Series], str]
PHRASINGS: list[tuple[str, Expect]] = [
    ("who is the author of {t}", lambda s: f"{s.title} is by {people(s.author)[0]}"),
    ("who wrote {t}?", lambda s: f"{s.title} is by"),
    ("{t} is by which mangaka?", lambda s: f"{s.title} is by"),
    ("{t} manga author?", lambda s: f"{s.title} is by"),
    ("auther of {t}", lambda s: f"{s.title} is by"),
    ("how many volumes does {t} have", lambda s: f"{s.volumes} volumes"),
    ("is {t} finished?", lambda s: "finished" if s.status == "completed" else "still ongoing"),
    ("who publishes {t} in english", lambda s: f"published in English by {s.publisher}"),
    ("what year did {t} start", lambda s: f"in {s.year}"),
    ("what genre is {t}", lambda s: s.genres[0]),
    ("what's the age rating of {t}", lambda s: RATING_NAMES[s.age_rating]),
    ("what formats does {t} come in", lambda s: next(iter(s.formats)).replace("_", " ")),
    ("how much is {t}", lambda s: f"${s.price_usd:.2f} per volume"),
]


@pytest.mark.parametrize("series", SAMPLE, ids=lambda s: s.id)
@pytest.mark.parametrize(("phrasing", "expect"), PHRASINGS, ids=[p for p, _ in PHRASINGS])
def test_fact_questions_are_answered_from_the_catalog(
    world: World, series: Series, phrasing: str, expect: Expect
) -> None:
    message = phrasing.format(t=series.title.lower())
    draft = ask(world, message)
    assert draft.sources and draft.sources[0].id == series.id, message
    assert not draft.fallback
    assert draft.last_series == series.id
    assert expect(series) in draft.lead, (message, draft.lead)
    assert_grounded(draft)
    assert fact_question(message, CATALOG)


@pytest.mark.parametrize("series", AMBIGUOUS, ids=lambda s: s.id)
@pytest.mark.parametrize(
    "phrasing",
    [
        "who is the author of {t}",
        "who made {t}",
        "{t} manga author?",
        "how many volumes does {t} have",
        "is {t} finished",
        "{t}'s author?",
        "do you have {t}",
        "{t} by {family}",
    ],
)
def test_titles_that_are_ordinary_words_count_where_the_context_makes_them_a_title(
    series: Series, phrasing: str
) -> None:
    family = sorted(CATALOG.family_names[series.id])[0]
    message = phrasing.format(t=series.title.lower(), family=family)
    assert [m.series.id for m in CATALOG.title_spans(message)] == [series.id], message


@pytest.mark.parametrize(
    "message",
    [
        "what a monster",
        "I want to talk to a real person",
        "is this real?",
        "keep it real",
        "are you real",
        "my grandma nana loves tea",
        "look back at my order",
        "a real bleach fan",
        "i love monsters",
        "is it real that you ship to peru",
    ],
)
def test_ordinary_sentences_name_no_title(message: str) -> None:
    assert CATALOG.title_spans(message) == []


def test_the_asked_fact_leads_and_the_generic_card_stays_for_plain_requests(world: World) -> None:
    monster = CATALOG.by_id["monster"]
    draft = ask(world, "who is the author of monster")
    assert draft.lead == f"Monster is by {monster.author}."
    assert "Stock" not in text_of(draft)  # focused: no product card
    assert any("20th Century Boys" in f for f in draft.facts)  # the author's other series we carry
    card = ask(world, "do you have One Piece volume 1?")
    assert card.lead == "Here's what I found:"
    assert "Volume 1 is in our catalog." in card.facts


def test_typos_partial_titles_and_several_facts(world: World) -> None:
    assert ask(world, "who wrote chainsw man").sources[0].id == "chainsaw-man"
    assert ask(world, "how many volumes is promised neverland").sources[0].id == "the-promised-neverland"
    assert ask(world, "who made yozakura family").sources[0].id == "mission-yozakura-family"
    assert ask(world, "is frieren finished").sources[0].id == "frieren-beyond-journeys-end"
    vinland = CATALOG.by_id["vinland-saga"]
    both = text_of(ask(world, "Vinland Saga - who's it by and is it done?"))
    assert f"is by {vinland.author}" in both and f"{vinland.volumes} volumes" in both


def test_a_series_named_by_its_author(world: World) -> None:
    draft = ask(world, "how many volumes is the one by Junji Ito")
    ito = {s.id for s in CATALOG.series if s.author == "Junji Ito"}
    assert {s.id for s in draft.sources} == ito  # not ONE's series: "the one" is not the pen name ONE
    for sid in ito:
        assert f"{CATALOG.by_id[sid].title} is complete in {CATALOG.by_id[sid].volumes} volumes" in text_of(
            draft
        )


def test_formats_not_carried_and_age_checks(world: World) -> None:
    one_piece = CATALOG.by_id["one-piece"]
    assert "deluxe" not in one_piece.formats
    assert "We don't carry One Piece as deluxe" in ask(world, "is there a deluxe edition of one piece").lead
    berserk = CATALOG.by_id["berserk"]
    draft = ask(world, "is berserk ok for my 12 year old?")
    assert RATING_NAMES[berserk.age_rating] in draft.lead
    assert "above the age you mentioned" in text_of(draft)


def test_no_price_or_date_that_the_data_does_not_hold(world: World) -> None:
    # a release date the catalog does not have is never made up
    draft = ask(world, "when does the next volume of frieren come out")
    assert not re.search(r"\b20[2-3]\d\b|january|february|march|april|june|july|august", text_of(draft), re.I)
    for series in SAMPLE:
        assert_grounded(
            ask(world, f"how much is the {next(iter(series.formats)).replace('_', ' ')} of {series.title}")
        )


@pytest.mark.parametrize(
    ("message", "kinds"),
    [
        ("who wrote Monster and is it finished?", ("author", "status")),
        ("how many volums does it have", ("volumes",)),
        ("what's the publisher and the year Akira started", ("publisher", "year")),
        ("is it ok for a 14 year old", ("age_rating",)),
        ("what about the deluxe edition?", ("formats",)),
        ("hello there", ()),
        ("i want the complete set of naruto", ()),
    ],
)
def test_asked_facts(message: str, kinds: tuple[str, ...]) -> None:
    assert asked_facts(message) == kinds


@pytest.mark.parametrize(
    "message",
    [
        "how much is shipping for the berserk deluxe?",
        "recommend something like monster",
        "is vinland saga worth reading",
        "where is my order of naruto vol 3",
        "who voices luffy in the one piece anime",
        "who wrote this bot",
        "hello",
    ],
)
def test_not_fact_questions(message: str) -> None:
    assert not fact_question(message, CATALOG)


@pytest.mark.parametrize(
    ("message", "series_id"),
    [
        ("how old is inuyaha, when was it first published", "inuyasha"),  # a letter dropped
        ("is besrerk available in omnibus or just paperback?", "berserk"),  # two swapped, ambiguous title
        ("how many books are in pluto", "pluto"),
        ("who drew vinland sagaa", "vinland-saga"),
    ],
)
def test_misspelt_and_lower_case_titles_in_fact_questions(world: World, message: str, series_id: str) -> None:
    draft = ask(world, message)
    assert draft.sources and draft.sources[0].id == series_id


@pytest.mark.parametrize("text", ["write a haiku about autumn", "i love monsters", "he went berserker mode"])
def test_typo_matching_does_not_turn_words_into_titles(text: str) -> None:
    assert CATALOG.find_titles(text) == []


def test_several_formats_named_list_what_we_carry(world: World) -> None:
    berserk = CATALOG.by_id["berserk"]
    text = text_of(ask(world, "is berserk available in omnibus or just paperback?"))
    for fmt in berserk.formats:
        assert fmt.replace("_", " ") in text
    assert "omnibus" not in berserk.formats and "We don't carry Berserk as omnibus." in text
