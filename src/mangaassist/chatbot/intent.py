"""Intent classification: the ``IntentClient`` protocol and the baseline model behind it.

The baseline is logistic regression over sentence embeddings (scikit-learn), trained from
``ml/intents/train.jsonl`` and measured on ``ml/intents/eval.jsonl``. A trained model is cached
under ``HOME/models`` by the digest of what produced it (data, embedder, hyper-parameters), so a
worker only trains when one of those changed.

The chatbot holds an ``IntentClient``: ``LocalIntentClient`` (in process), or, when the model is
served as its own service (``chatbot.model_server``), ``chatbot.intent_remote.HttpIntentClient``,
which falls back to a ``LocalIntentClient`` champion when the endpoint fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import joblib
import numpy as np

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.embeddings import Embedder, Vector
from mangaassist.chatbot.entities import EntitySignals
from mangaassist.core.errors import ConfigError
from mangaassist.core.intents import INTENTS

HYPERPARAMS: dict[str, Any] = {"C": 8.0, "max_iter": 2000, "class_weight": "balanced"}
AUGMENT_COPIES = 2
"""Title-swapped copies per training example that names a catalog title."""
AUGMENT_SEED = 20261126


@dataclass(frozen=True)
class Example:
    text: str
    intent: str


@dataclass(frozen=True)
class IntentPrediction:
    intent: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    """Probability of every intent (empty when a client cannot tell)."""
    model: str = ""
    """The version of the model that answered (a remote client may answer with its fallback's)."""

    def instead(self, intent: str) -> IntentPrediction:
        """The same prediction with ``intent`` chosen, at the probability the model gave it."""
        return IntentPrediction(intent, self.scores.get(intent, 0.0), self.scores, self.model)


class IntentClient(Protocol):
    """Classifies one message. ``embedding`` is the message's embedding when the caller has it
    (the chatbot embeds each query once and shares it); a remote client may ignore it.

    ``classify`` blocks (warm-up, evaluation, the CLI); ``aclassify`` is what the chatbot awaits per
    request, so a remote call never blocks the worker's event loop. ``session_id`` is the
    conversation: a remote client sends it as the sticky key, so a conversation stays on one model
    revision; an in-process client ignores it.
    """

    @property
    def version(self) -> str:
        """The model version that answered last (a client that cannot tell: the one it holds)."""

    def classify(self, text: str, embedding: Vector | None = None) -> IntentPrediction: ...

    async def aclassify(
        self, text: str, embedding: Vector | None = None, *, session_id: str | None = None
    ) -> IntentPrediction: ...


def load_examples(path: Path) -> list[Example]:
    """Read a JSONL file of ``{"text", "intent"}``; errors name the file and line."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    examples: list[Example] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
        text, intent = row.get("text"), row.get("intent")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{path}:{lineno}: 'text' must be a non-empty string")
        if intent not in INTENTS:
            raise ConfigError(f"{path}:{lineno}: 'intent' {intent!r} is not one of {', '.join(INTENTS)}")
        examples.append(Example(text=text, intent=intent))
    if not examples:
        raise ConfigError(f"{path}: no examples")
    return examples


class LocalIntentClient:
    """Logistic regression over embeddings, in process."""

    def __init__(self, model: Any, embedder: Embedder, version: str, signals: EntitySignals) -> None:
        self._model = model
        self._embedder = embedder
        self._version = version
        self.signals = signals
        self.labels: list[str] = [str(c) for c in model.classes_]

    @property
    def version(self) -> str:
        return self._version

    def classify(self, text: str, embedding: Vector | None = None) -> IntentPrediction:
        vec = embedding if embedding is not None else self._embedder.embed([text])[0]
        return self.classify_many([text], np.asarray([vec]))[0]

    async def aclassify(
        self, text: str, embedding: Vector | None = None, *, session_id: str | None = None
    ) -> IntentPrediction:
        # a fraction of a millisecond of CPU with the embedding given: no thread hop needed
        return self.classify(text, embedding)

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def classify_many(self, texts: Sequence[str], embeddings: np.ndarray) -> list[IntentPrediction]:
        probs = self._model.predict_proba(features(texts, embeddings, self.signals))
        best = probs.argmax(axis=1)
        return [
            IntentPrediction(
                intent=self.labels[i],
                confidence=round(float(p[i]), 4),
                scores={label: round(float(x), 4) for label, x in zip(self.labels, p, strict=True)},
                model=self._version,
            )
            for i, p in zip(best, probs, strict=True)
        ]


def features(texts: Sequence[str], embeddings: np.ndarray, signals: EntitySignals) -> np.ndarray:
    """The model's input: each text's embedding followed by its entity indicator features."""
    extra = np.asarray([signals.features(t) for t in texts], dtype=np.float32).reshape(len(texts), -1)
    return np.hstack([np.asarray(embeddings, dtype=np.float32), extra])


def model_digest(train_path: Path, embedder: Embedder, signals: EntitySignals) -> str:
    h = hashlib.sha256()
    h.update(train_path.read_bytes())
    h.update(embedder.name.encode())
    h.update(signals.digest.encode())
    h.update(json.dumps({**HYPERPARAMS, "augment": [AUGMENT_COPIES, AUGMENT_SEED]}, sort_keys=True).encode())
    return h.hexdigest()


def augment(examples: Sequence[Example], signals: EntitySignals) -> list[Example]:
    """The examples plus title-swapped copies of those that name a catalog title."""
    rng = random.Random(AUGMENT_SEED)
    out = list(examples)
    for example in examples:
        for _ in range(AUGMENT_COPIES):
            swapped = signals.swap_title(example.text, rng)
            if swapped is not None:
                out.append(Example(swapped, example.intent))
    return out


def train(examples: Sequence[Example], embedder: Embedder, signals: EntitySignals) -> Any:
    from sklearn.linear_model import LogisticRegression

    rows = augment(examples, signals)
    texts = [e.text for e in rows]
    model = LogisticRegression(**HYPERPARAMS)
    model.fit(features(texts, embedder.embed(texts), signals), [e.intent for e in rows])
    return model


def load_or_train(
    train_path: Path, embedder: Embedder, models_dir: Path, catalog: Catalog
) -> LocalIntentClient:
    """The cached model for this data, catalog and embedder, trained and saved first if missing."""
    signals = EntitySignals(catalog)
    digest = model_digest(train_path, embedder, signals)
    version = f"intent-{digest[:12]}"
    path = models_dir / f"{version}.joblib"
    if path.exists():
        model = joblib.load(path)
    else:
        model = train(load_examples(train_path), embedder, signals)
        models_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        joblib.dump(model, tmp)
        tmp.replace(path)
    return LocalIntentClient(model, embedder, version, signals)


PACKAGE_MODEL = "model.joblib"
PACKAGE_META = "model.json"


def save_package(model: Any, directory: Path, meta: dict[str, Any]) -> Path:
    """Write a model package: ``model.joblib`` (the fitted classifier) and ``model.json``.

    A package is what the registry stores and what a model endpoint serves. ``meta`` must hold
    ``version`` (the name the endpoint reports) and ``embedder`` (the embedding model the features
    came from: a package is only valid with that embedder). Written to a temporary directory and
    renamed, so a reader never sees half a package.
    """
    for key in ("version", "embedder"):
        if not meta.get(key):
            raise ConfigError(f"model package meta: {key!r} is required")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    tmp.mkdir()
    joblib.dump(model, tmp / PACKAGE_MODEL)
    (tmp / PACKAGE_META).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(directory)
    return directory


def load_package(directory: Path, embedder: Embedder, catalog: Catalog) -> LocalIntentClient:
    """The classifier of a model package (``save_package``), checked against ``embedder``."""
    meta_path = directory / PACKAGE_META
    if not meta_path.is_file() or not (directory / PACKAGE_MODEL).is_file():
        raise ConfigError(f"{directory}: not a model package ({PACKAGE_MODEL} and {PACKAGE_META} expected)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("embedder") != embedder.name:
        raise ConfigError(
            f"{directory}: model {meta.get('version')} was trained on embedder {meta.get('embedder')!r}, "
            f"this worker has {embedder.name!r}"
        )
    model = joblib.load(directory / PACKAGE_MODEL)
    return LocalIntentClient(model, embedder, str(meta["version"]), EntitySignals(catalog))


@dataclass
class EvalReport:
    """Quality of a classifier on a labelled set."""

    macro_f1: float
    accuracy: float
    n: int
    per_intent: dict[str, dict[str, float]] = field(default_factory=dict)
    confusions: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "n": self.n,
            "per_intent": self.per_intent,
            "confusions": self.confusions,
        }


def evaluate(client: LocalIntentClient, examples: Sequence[Example], embedder: Embedder) -> EvalReport:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    texts = [e.text for e in examples]
    predicted = [p.intent for p in client.classify_many(texts, embedder.embed(texts))]
    truth = [e.intent for e in examples]
    labels = list(INTENTS)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    per_intent = {
        label: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    confusions = [
        {"text": e.text, "expected": e.intent, "predicted": p}
        for e, p in zip(examples, predicted, strict=True)
        if p != e.intent
    ]
    return EvalReport(
        macro_f1=round(float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)), 4),
        accuracy=round(float(accuracy_score(truth, predicted)), 4),
        n=len(examples),
        per_intent=per_intent,
        confusions=confusions,
    )
