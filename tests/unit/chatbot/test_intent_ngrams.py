"""The intent model's n-gram features (``chatbot.intent.NgramFeatures``, ``IntentModel``): the fast
per-message path gives the classifier's own probabilities, packages written before the n-grams
still load, and the settings decide what is fitted."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.entities import EntitySignals
from mangaassist.chatbot.intent import (
    Example,
    IntentModel,
    NgramFeatures,
    NgramSettings,
    fit_model,
    load_examples,
    load_package,
    save_package,
)
from mangaassist.platform.embeddings import HashingEmbedder

ROOT = Path(__file__).resolve().parents[3]
HYPER = {"C": 8.0, "max_iter": 2000, "class_weight": "balanced"}
PROBES = [
    "do u take venmo",
    "hold on, am I speaking to a bot right now?",
    "wheres my pakage MA-104512",
    "Ｆｕｌｌ－ｗｉｄｔｈ and accents: café, naïve",
    "zzzz qqqq",  # no known n-gram: the embedding and entities alone
    "",
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "data" / "catalog.jsonl")


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    rows = load_examples(ROOT / "ml" / "intents" / "train.jsonl")
    return rows[::4]  # every intent, a quarter of the lines: quick


@pytest.fixture(scope="module")
def model(examples: list[Example], catalog: Catalog) -> IntentModel:
    return fit_model(examples, examples, HashingEmbedder(), EntitySignals(catalog), HYPER, NgramSettings())


def test_per_message_path_equals_the_classifiers_probabilities(model: IntentModel, catalog: Catalog) -> None:
    emb, signals = HashingEmbedder(), EntitySignals(catalog)
    texts = [*PROBES, *(e.text for e in load_examples(ROOT / "ml" / "intents" / "eval.jsonl")[:40])]
    vectors = emb.embed(texts)
    fast = model.predict_proba(texts, vectors, signals)
    reference = model.classifier.predict_proba(model.features(texts, vectors, signals))
    assert fast.shape == (len(texts), len(model.classes_))
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-9)
    # and one text's non-zero n-grams are its row of the bulk transform
    assert model.ngrams is not None
    columns, values = model.ngrams.row(PROBES[0])
    dense_row = model.ngrams.transform([PROBES[0]]).toarray()[0]
    assert columns.size and set(np.flatnonzero(dense_row)) == set(columns)
    np.testing.assert_allclose(dense_row[columns], values)


def test_vocabulary_comes_from_examples_and_min_df_prunes(examples: list[Example]) -> None:
    texts = [e.text for e in examples]
    every = NgramFeatures(NgramSettings(word_min_df=1, char_min_df=1)).fit(texts)
    pruned = NgramFeatures(NgramSettings(word_min_df=3, char_min_df=3)).fit(texts)
    assert 0 < pruned.n_features < every.n_features
    words = NgramFeatures(NgramSettings(word_weight=1.0, char_weight=0.0)).fit(texts)
    assert len(words.blocks) == 1 and "order" in words.blocks[0][0].vocabulary_
    assert all(v.stop_words_ is None for v, _ in pruned.blocks)  # not pickled into the package
    # too few examples for any n-gram to reach min_df: the block is left out, not an error
    assert (
        NgramFeatures(NgramSettings(word_min_df=5, char_min_df=5)).fit(["one line", "another"]).n_features
        == 0
    )


def test_weights_scale_each_block(examples: list[Example]) -> None:
    texts = [e.text for e in examples]
    features = NgramFeatures(NgramSettings(word_weight=1.0, char_weight=0.5)).fit(texts)
    row = features.transform(["where is my order"]).toarray()[0]
    width = len(features.blocks[0][0].vocabulary_)
    assert np.linalg.norm(row[:width]) == pytest.approx(1.0)
    assert np.linalg.norm(row[width:]) == pytest.approx(0.5)


def test_disabled_ngrams_give_the_embedding_only_model(examples: list[Example], catalog: Catalog) -> None:
    emb, signals = HashingEmbedder(), EntitySignals(catalog)
    off = fit_model(examples, examples, emb, signals, HYPER, NgramSettings(0.0, 0.0))
    assert off.ngrams is None
    vectors = emb.embed(PROBES)
    assert off.features(PROBES, vectors, signals).shape == (len(PROBES), emb.dim + 3)


def test_a_package_from_before_the_ngrams_still_loads(
    tmp_path: Path, examples: list[Example], catalog: Catalog, model: IntentModel
) -> None:
    """A champion registered before the n-grams (``model.joblib`` = the bare classifier) must keep
    serving and stay a rollback target."""
    emb, signals = HashingEmbedder(), EntitySignals(catalog)
    old = fit_model(examples, examples, emb, signals, HYPER, NgramSettings(0.0, 0.0)).classifier
    path = tmp_path / "old"
    path.mkdir()
    joblib.dump(old, path / "model.joblib")
    (path / "model.json").write_text(json.dumps({"version": "intent-old", "embedder": emb.name}))
    client = load_package(path, emb, catalog)
    vectors = emb.embed(PROBES)
    expected = old.predict_proba(np.hstack([vectors, [signals.features(t) for t in PROBES]]))
    got = [p.scores for p in client.classify_many(PROBES, vectors)]
    assert [max(s, key=s.__getitem__) for s in got] == [old.classes_[i] for i in expected.argmax(1)]
    # and a new package round-trips with its n-grams
    new = load_package(
        save_package(model, tmp_path / "new", {"version": "v2", "embedder": emb.name}), emb, catalog
    )
    assert [p.intent for p in new.classify_many(PROBES, vectors)] == [
        str(model.classes_[i]) for i in model.predict_proba(PROBES, vectors, signals).argmax(1)
    ]


def test_two_classes_use_the_logistic_function(examples: list[Example], catalog: Catalog) -> None:
    emb, signals = HashingEmbedder(), EntitySignals(catalog)
    two = [e for e in examples if e.intent in ("order_status", "human_handoff")]
    model = fit_model(two, two, emb, signals, HYPER, NgramSettings())
    vectors = emb.embed(PROBES)
    reference = model.classifier.predict_proba(model.features(PROBES, vectors, signals))
    np.testing.assert_allclose(model.predict_proba(PROBES, vectors, signals), reference, rtol=0, atol=1e-9)
