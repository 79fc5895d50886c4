"""Model packages (``chatbot.intent.save_package`` / ``load_package``): what the registry stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.entities import EntitySignals
from mangaassist.chatbot.intent import Example, load_package, save_package, train
from mangaassist.core.errors import ConfigError
from mangaassist.platform.embeddings import HashingEmbedder

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [
    Example("where is my order", "order_status"),
    Example("track my package please", "order_status"),
    Example("I want to talk to a human", "human_handoff"),
    Example("connect me with an agent", "human_handoff"),
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "data" / "catalog.jsonl")


def test_round_trip_predicts_the_same(tmp_path: Path, catalog: Catalog) -> None:
    emb = HashingEmbedder()
    model = train(EXAMPLES, emb, EntitySignals(catalog))
    path = save_package(model, tmp_path / "v1", {"version": "intent-v1", "embedder": emb.name})
    client = load_package(path, emb, catalog)
    assert client.version == "intent-v1"
    assert client.classify("where is my parcel").intent == "order_status"
    assert not list(tmp_path.glob(".*.tmp"))


def test_wrong_embedder_and_missing_files_are_refused(tmp_path: Path, catalog: Catalog) -> None:
    emb = HashingEmbedder()
    model = train(EXAMPLES, emb, EntitySignals(catalog))
    path = save_package(model, tmp_path / "v1", {"version": "intent-v1", "embedder": "other-model"})
    with pytest.raises(ConfigError, match="other-model"):
        load_package(path, emb, catalog)
    with pytest.raises(ConfigError, match="not a model package"):
        load_package(tmp_path / "missing", emb, catalog)
    with pytest.raises(ConfigError, match="'embedder' is required"):
        save_package(model, tmp_path / "v2", {"version": "x"})
