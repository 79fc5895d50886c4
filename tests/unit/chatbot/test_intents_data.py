"""The intent data (ml/intents): schema, no leak between train and eval, and the boundaries of the
labelling guidelines (ml/intents/README.md) covered in both files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mangaassist.core.intents import INTENTS

ROOT = Path(__file__).parents[3]
DATA = ROOT / "ml" / "intents"


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def grams(text: str) -> set[str]:
    t = norm(text)
    return {t[i : i + 3] for i in range(len(t) - 2)} if len(t) >= 3 else {t}


def load(name: str) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]
    for row in rows:
        assert set(row) == {"text", "intent"}, row
        assert row["intent"] in INTENTS and row["text"].strip(), row
    return rows


TRAIN, EVAL = load("train.jsonl"), load("eval.jsonl")


@pytest.mark.parametrize(("rows", "least"), [(TRAIN, 100), (EVAL, 30)], ids=["train", "eval"])
def test_every_intent_is_covered(rows: list[dict[str, str]], least: int) -> None:
    for intent in INTENTS:
        assert sum(r["intent"] == intent for r in rows) >= least, intent


def test_no_duplicates_and_no_leak_from_train_to_eval() -> None:
    for rows in (TRAIN, EVAL):
        normed = [norm(r["text"]) for r in rows]
        assert len(normed) == len(set(normed))
    train_norm = {norm(r["text"]) for r in TRAIN}
    assert not [r["text"] for r in EVAL if norm(r["text"]) in train_norm]
    train_grams = [grams(r["text"]) for r in TRAIN]
    for row in EVAL:
        g = grams(row["text"])
        closest = max(len(g & t) / len(g | t) for t in train_grams)
        assert closest < 0.6, row["text"]


def test_the_readme_counts_match_the_files() -> None:
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for intent in INTENTS:
        train = sum(r["intent"] == intent for r in TRAIN)
        ev = sum(r["intent"] == intent for r in EVAL)
        assert re.search(rf"\| {intent}\s*\|\s*{train} \|\s*{ev} \|", readme), intent
    assert f"**{len(TRAIN)}**" in readme and f"**{len(EVAL)}**" in readme


# (pattern, intent): the guidelines' boundaries that the observed confusions crossed; each must be
# taught in train and measured in eval
BOUNDARIES = [
    (
        r"\b(?:who (?:wrote|drew|made|is the (?:author|mangaka|creator))|how many vol|"
        r"is \w+.* (?:finished|complete))",
        "product_search",
    ),
    (
        r"\b(?:are you|am i (?:talking|chatting|speaking)|is (?:this|a human)|what (?:ai|model|kind of ai))\b"
        r".*\b(?:bot|ai|human|person|automated|program|model|llm|gpt|llama)",
        "chitchat",
    ),
    (
        r"\b(?:pay|payment|apple pay|google (?:pay|wallet)|paypal|venmo|klarna|afterpay|debit|credit card|"
        r"crypto|jcb)\b",
        "policy_question",
    ),
    (
        r"\b(?:add|remove|take|switch|swap|change|cancel)\b.*\border\b.*\d{6}|"
        r"\border\b.*\d{6}.*\b(?:add|remove|switch|change)\b",
        "order_status",
    ),
]


@pytest.mark.parametrize(("pattern", "intent"), BOUNDARIES, ids=[i for _, i in BOUNDARIES])
def test_the_guidelines_boundaries_are_in_both_files(pattern: str, intent: str) -> None:
    for rows, least in ((TRAIN, 8), (EVAL, 4)):
        hits = [r for r in rows if re.search(pattern, r["text"], re.IGNORECASE)]
        assert sum(r["intent"] == intent for r in hits) >= least, (intent, least)
