"""The shipped data meets the foundation's requirements and stays consistent with itself."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from mangaassist.chatbot.catalog import AGE_RATINGS, DEMOGRAPHICS, Catalog
from mangaassist.chatbot.intent import load_examples
from mangaassist.chatbot.knowledge import chunk_document, load_documents
from mangaassist.core.intents import INTENTS

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "data" / "catalog.jsonl")


def test_catalog_has_enough_valid_series(catalog: Catalog) -> None:
    assert len(catalog.series) >= 150
    for s in catalog.series:
        assert re.fullmatch(r"[a-z0-9-]+", s.id), s.id
        assert s.demographic in DEMOGRAPHICS, s.id
        assert AGE_RATINGS[s.age_rating] == s.min_age, s.id
        assert s.status in ("completed", "ongoing"), s.id
        assert s.volumes >= 1 and 2 <= len(s.genres) <= 5, s.id
        assert 5 < s.price_usd < 60, s.id
        assert s.formats and all(n >= 0 for n in s.formats.values()), s.id
        assert len(s.description.split()) >= 10, s.id
    assert len({s.title.lower() for s in catalog.series}) == len(catalog.series)
    demographics = Counter(s.demographic for s in catalog.series)
    assert len(demographics) >= 4  # the catalog is not all one audience
    assert any(not s.in_stock for s in catalog.series)  # out-of-stock answers get exercised


def edition_volumes(volumes: int, fmt: str) -> int:
    """How many books an edition has (data/README.md): omnibus and deluxe collect about three."""
    return 1 if fmt == "box_set" else -(-volumes // 3) if fmt in ("omnibus", "deluxe") else volumes


def test_orders_reference_the_catalog(catalog: Catalog) -> None:
    lines = (ROOT / "data" / "orders.jsonl").read_text().splitlines()
    orders = [json.loads(line) for line in lines if line.strip()]
    assert len(orders) >= 20
    assert len({o["order_id"] for o in orders}) == len(orders)
    assert len({o["customer_id"] for o in orders}) >= 5
    for o in orders:
        assert re.fullmatch(r"MA-\d{6}", o["order_id"])
        total = 0.0
        for item in o["items"]:
            series = catalog.by_id[item["catalog_id"]]
            assert item["title"] == series.title
            assert item["format"] in series.formats
            assert 1 <= item["volume"] <= edition_volumes(series.volumes, item["format"])
            assert item["price_usd"] == pytest.approx(series.price_usd)
            total += item["qty"] * item["price_usd"]
        assert o["total_usd"] == pytest.approx(round(total, 2))


def test_knowledge_base_has_enough_documents() -> None:
    docs = load_documents(ROOT / "knowledge")
    assert len(docs) >= 25
    assert len({d.id for d in docs}) == len(docs)
    for d in docs:
        assert (ROOT / "knowledge" / f"{d.id}.md").exists(), d.id
        assert len(chunk_document(d)) >= 2, d.id
    topics = {d.category for d in docs}
    for needed in (
        "shipping",
        "returns",
        "preorders",
        "payment",
        "gift-cards",
        "age-ratings",
        "damaged-items",
        "reading-guide",
    ):
        assert needed in topics, needed


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def _trigrams(text: str) -> set[str]:
    t = _norm(text)
    return {t[i : i + 3] for i in range(max(1, len(t) - 2))}


def test_intent_sets_are_big_balanced_and_separate() -> None:
    train = load_examples(ROOT / "ml" / "intents" / "train.jsonl")
    evals = load_examples(ROOT / "ml" / "intents" / "eval.jsonl")
    assert len(train) >= 600 and len(evals) >= 175
    for data, floor in ((train, 60), (evals, 20)):
        counts = Counter(e.intent for e in data)
        assert set(counts) == set(INTENTS)
        assert min(counts.values()) >= floor
    train_norm = {_norm(e.text) for e in train}
    assert len(train_norm) == len(train), "duplicates inside train.jsonl"
    assert not train_norm & {_norm(e.text) for e in evals}, "eval lines repeated in train"
    train_grams = [_trigrams(e.text) for e in train]
    worst = 0.0
    for e in evals:
        g = _trigrams(e.text)
        for t in train_grams:
            union = len(g | t)
            if union:
                worst = max(worst, len(g & t) / union)
    assert worst < 0.6, f"an eval line is a near-duplicate of a train line (Jaccard {worst:.2f})"


def test_intent_lengths_vary() -> None:
    train = load_examples(ROOT / "ml" / "intents" / "train.jsonl")
    lengths = sorted(len(e.text.split()) for e in train)
    assert lengths[0] <= 3 and lengths[-1] >= 30
