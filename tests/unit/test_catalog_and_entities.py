import json
import random
from pathlib import Path

import pytest

from mangaassist.chatbot.catalog import Catalog, find_format, find_volume, normalize_with_offsets
from mangaassist.chatbot.entities import EntitySignals, find_order_id, resolve_follow_up
from mangaassist.core.errors import ConfigError

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "data" / "catalog.jsonl")


@pytest.mark.parametrize(
    ("text", "series_id"),
    [
        ("do you carry One Piece?", "one-piece"),
        ("got any frieren", "frieren-beyond-journeys-end"),
        ("aot vol 3", "attack-on-titan"),
        ("Demon slayer box set", "demon-slayer-kimetsu-no-yaiba"),
        ("onepunch man", "one-punch-man"),
        ("chainsw man volume 2", "chainsaw-man"),  # typo, fuzzy
        ("Do you have Real vol 2", "real"),
        ("yotsuba&! 5", "yotsuba"),
        ("jjk 0", "jujutsu-kaisen"),
    ],
)
def test_titles_are_found(catalog: Catalog, text: str, series_id: str) -> None:
    matches = catalog.find_titles(text)
    assert matches
    assert matches[0].series.id.startswith(series_id)


@pytest.mark.parametrize(
    "text",
    [
        "I want to talk to a real person",
        "look back at my order",
        "my grandma nana loves tea",
        "what a monster",
    ],
)
def test_common_words_are_not_titles_unless_capitalised(catalog: Catalog, text: str) -> None:
    assert catalog.find_titles(text) == []


def test_spans_point_into_the_original_text(catalog: Catalog) -> None:
    text = "Is  Frieren: Beyond Journey's End  in stock?"
    (match,) = catalog.title_spans(text)
    start, end = match.span or (0, 0)
    assert text[start:end] == "Frieren: Beyond Journey's End"
    norm, offsets = normalize_with_offsets("A&B's")
    assert norm == "a and bs"
    assert len(offsets) == len(norm)


def test_authors_are_found_by_full_or_family_name(catalog: Catalog) -> None:
    assert {s.id for s in catalog.find_authors("anything by junji ito?")} >= {"uzumaki", "tomie"}
    assert "uzumaki" in {s.id for s in catalog.find_authors("more from Ito please")}


@pytest.mark.parametrize(
    ("text", "volume", "fmt"),
    [
        ("vol 12 paperback", 12, "paperback"),
        ("volume 3 in the box set", 3, "box_set"),
        ("#7", 7, None),
        ("the 3-in-1 edition", None, "omnibus"),
        ("hello", None, None),
    ],
)
def test_volume_and_format(text: str, volume: int | None, fmt: str | None) -> None:
    assert find_volume(text) == volume
    assert find_format(text) == fmt


@pytest.mark.parametrize(
    ("text", "order_id"),
    [
        ("where is MA-100023", "MA-100023"),
        ("order #100045?", "MA-100045"),
        ("order number 100046", "MA-100046"),
        ("ma 100047 status", "MA-100047"),
        ("I was born in 1999", None),
        ("vol 12", None),
    ],
)
def test_order_ids(text: str, order_id: str | None) -> None:
    assert find_order_id(text) == order_id


def test_follow_ups_take_the_conversations_series(catalog: Catalog) -> None:
    assert (
        resolve_follow_up("is volume 2 in stock?", "one-piece", catalog) == "One Piece: is volume 2 in stock?"
    )
    assert resolve_follow_up("how much is it?", "berserk", catalog) == "Berserk: how much is it?"
    assert resolve_follow_up("do you have Naruto vol 2?", "one-piece", catalog) == "do you have Naruto vol 2?"
    assert resolve_follow_up("thanks!", "one-piece", catalog) == "thanks!"
    assert resolve_follow_up("is volume 2 in stock?", None, catalog) == "is volume 2 in stock?"
    assert resolve_follow_up("is volume 2 in stock?", "no-such-id", catalog) == "is volume 2 in stock?"


def test_entity_signals_and_title_swap(catalog: Catalog) -> None:
    signals = EntitySignals(catalog, weight=0.5)
    assert signals.features("got any tomie") == [0.5, 0.0, 0.0]
    assert signals.features("anything by junji ito") == [0.0, 0.5, 0.0]
    assert signals.features("where's MA-100001") == [0.0, 0.0, 0.5]
    swapped = signals.swap_title("do you have Berserk vol 3?", random.Random(1))
    assert swapped is not None
    assert swapped.startswith("do you have ") and swapped.endswith(" vol 3?")
    assert "Berserk" not in swapped
    assert signals.swap_title("hello there", random.Random(1)) is None
    assert EntitySignals(catalog, weight=1.0).digest != signals.digest


def test_catalog_errors_name_file_line_and_field(tmp_path: Path) -> None:
    row = json.loads((ROOT / "data" / "catalog.jsonl").read_text().splitlines()[0])
    path = tmp_path / "catalog.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "x", "volumes": "many"}) + "\n")
    with pytest.raises(ConfigError, match=r"catalog\.jsonl:2: field 'volumes' has the wrong type"):
        Catalog.load(path)
    path.write_text(json.dumps({**row, "age_rating": "R"}) + "\n")
    with pytest.raises(ConfigError, match="age_rating"):
        Catalog.load(path)
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match="duplicate id"):
        Catalog.load(path)
    path.write_text("{not json\n")
    with pytest.raises(ConfigError, match=r":1: not JSON"):
        Catalog.load(path)
