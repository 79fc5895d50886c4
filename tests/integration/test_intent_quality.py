"""The baseline intent model on the held-out eval set (real MiniLM embeddings)."""

from pathlib import Path

import pytest

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.embeddings import MiniLMEmbedder
from mangaassist.chatbot.intent import evaluate, load_examples, load_or_train

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def test_macro_f1_on_eval_set(state_home: Path) -> None:
    embedder = MiniLMEmbedder()
    catalog = Catalog.load(ROOT / "data" / "catalog.jsonl")
    client = load_or_train(ROOT / "ml" / "intents" / "train.jsonl", embedder, state_home / "models", catalog)
    report = evaluate(client, load_examples(ROOT / "ml" / "intents" / "eval.jsonl"), embedder)
    assert report.n >= 175
    assert report.macro_f1 >= 0.85, report.per_intent
    assert all(row["recall"] >= 0.7 for row in report.per_intent.values()), report.per_intent
