"""Training the intent model as a delivered artefact (CD-03): config, training, measurement, tracking.

``ml/intent.yaml`` says what to train (data, hyper-parameters, augmentation) and how to gate it
(``gate``, read by ``delivery.model_gate``). ``train_candidate`` is the whole job: train, measure
on ``ml/intents/eval.jsonl``, write a model package (``chatbot.intent.save_package``), log the
run to the registry's tracking store (``platform.model_registry.TrackingRegistry``; MLflow: params,
metrics, the package, the classifier as an MLflow model with a signature and explicit pip
requirements under ``classifier/``, the evaluation report) and register it as the next version
with the alias ``candidate``. Callers: ``mangaassist model train`` and the model pipeline.

The model is the chatbot's baseline (``chatbot.intent.IntentModel``): logistic regression over the
embedding, entity features and TF-IDF word and character n-grams (their weights and ``min_df`` in
``training``), trained on the examples plus title-swapped copies. With the defaults of
``ml/intent.yaml`` it is the same model ``load_or_train`` caches for the chatbot. What MLflow logs
as ``classifier/`` is the logistic regression alone, whose input is ``IntentModel.features``; the
package holds the whole model.

Two switches exist for drills and demos, both recorded as params and in the package version:

* ``train_fraction`` (``--train-fraction``): train on a stratified share of the training file
  (per intent, ``round(fraction * n)`` examples chosen with ``subset_seed``). The demo's
  "retrain with more data" trains the champion on 0.7 and the candidate on all of it.
  ``--train PATH`` trains on another file instead (e.g. the training file plus new examples).
* ``shuffle_labels`` (``--shuffle-labels``): the labels are permuted across the examples (texts
  kept), which leaves a model that has learnt nothing; the gate must block it.

Measured metrics (the names the registry and the gate use):

* ``macro_f1``, ``accuracy``, ``recall_<intent>``, ``precision_<intent>``, ``f1_<intent>``.
* ``ece``: expected calibration error of the top-label confidence with 15 equal-width bins over
  [0, 1] (bin ``b`` holds confidences in ``(b/15, (b+1)/15]``, the first also holds 0):
  ``sum_b n_b / N * |accuracy_b - mean confidence_b|``. 0 is perfectly calibrated.
* ``p50_latency_ms`` / ``p99_latency_ms``: the model's own inference, one query at a time:
  ``LocalIntentClient.classify(text, embedding)`` (entity and n-gram features + the classifier) over every
  eval text, after a warm-up. The sentence embedding is excluded: it is the embedding model's
  cost, the same for every intent candidate, computed once per chat turn and shared with
  retrieval (on the shared 2-core machine it was 100-200 ms per single query under load, which
  would drown the classifier's fraction of a millisecond). Measured where the training runs, so
  the gate's limit is loose: it catches a model an order of magnitude slower, not noise.
* ``size_mb``: bytes of the package directory / 1e6.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.embeddings import Embedder
from mangaassist.chatbot.entities import EntitySignals
from mangaassist.chatbot.intent import (
    NGRAMS,
    Example,
    IntentModel,
    LocalIntentClient,
    NgramSettings,
    fit_model,
    load_examples,
    ngram_digest,
    save_package,
)
from mangaassist.core import safeyaml
from mangaassist.core.errors import ConfigError
from mangaassist.core.intents import INTENTS
from mangaassist.platform.model_registry import ModelVersion, TrackingRegistry

ECE_BINS = 15
PIP_PACKAGES = ("scikit-learn", "numpy", "scipy", "joblib", "skops")
"""What loading the logged classifier needs (it is serialised with skops); pinned to the versions
that trained it."""

_SECTIONS = {"model", "data", "training", "gate"}
_DATA_KEYS = {"train", "eval", "train_fraction", "subset_seed"}
_TRAINING_KEYS = {
    "C",
    "max_iter",
    "class_weight",
    "augment_copies",
    "augment_seed",
    "shuffle_labels",
    "word_ngram_weight",
    "char_ngram_weight",
    "word_ngram_min_df",
    "char_ngram_min_df",
}


# -- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingConfig:
    """What to train: everything in ``ml/intent.yaml`` but the gate (kept raw in ``gate``)."""

    model_name: str = "intent"
    train_path: Path = Path("ml/intents/train.jsonl")
    eval_path: Path = Path("ml/intents/eval.jsonl")
    train_fraction: float = 1.0
    subset_seed: int = 7
    C: float = 8.0
    max_iter: int = 2000
    class_weight: str | None = "balanced"
    augment_copies: int = 2
    augment_seed: int = 20261126
    shuffle_labels: bool = False
    word_ngram_weight: float = NGRAMS.word_weight
    char_ngram_weight: float = NGRAMS.char_weight
    word_ngram_min_df: int = NGRAMS.word_min_df
    char_ngram_min_df: int = NGRAMS.char_min_df
    gate: Mapping[str, Any] = field(default_factory=dict)
    """The raw ``gate`` section; ``delivery.model_gate.GateConfig.from_mapping`` validates it."""
    source: str = ""
    """The file this came from (for messages and the run's artifacts)."""

    @classmethod
    def load(cls, path: Path, root: Path | None = None) -> TrainingConfig:
        """Read and validate ``path``; relative data paths are taken from ``root`` (default: the
        file's grandparent, the repository for ``ml/intent.yaml``). Errors name the field."""
        raw = safeyaml.load_file(path)
        return cls.from_mapping(raw, str(path), root or path.resolve().parent.parent)

    @classmethod
    def from_mapping(cls, raw: Any, source: str, root: Path) -> TrainingConfig:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: expected a mapping with sections {', '.join(sorted(_SECTIONS))}")
        _no_unknown(raw, _SECTIONS, source)
        data = _section(raw, "data", source)
        training = _section(raw, "training", source)
        _no_unknown(data, _DATA_KEYS, f"{source}: data")
        _no_unknown(training, _TRAINING_KEYS, f"{source}: training")
        name = raw.get("model", cls.model_name)
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(
                f"{source}: model: expected a name of letters, digits, '-' and '_', got {name!r}"
            )
        gate = raw.get("gate", {})
        if not isinstance(gate, Mapping):
            raise ConfigError(f"{source}: gate: expected a mapping")
        class_weight = training.get("class_weight", cls.class_weight)
        if class_weight not in (None, "balanced"):
            raise ConfigError(
                f"{source}: training.class_weight: expected 'balanced' or null, got {class_weight!r}"
            )
        config = cls(
            model_name=name,
            train_path=_path(data, "train", cls.train_path, root, source),
            eval_path=_path(data, "eval", cls.eval_path, root, source),
            train_fraction=_number(data, "train_fraction", cls.train_fraction, source, low=0.0, high=1.0),
            subset_seed=int(_number(data, "subset_seed", cls.subset_seed, source, integer=True)),
            C=_number(training, "C", cls.C, source, low=0.0),
            max_iter=int(_number(training, "max_iter", cls.max_iter, source, integer=True, low=1)),
            class_weight=class_weight,
            augment_copies=int(_number(training, "augment_copies", cls.augment_copies, source, integer=True)),
            augment_seed=int(_number(training, "augment_seed", cls.augment_seed, source, integer=True)),
            shuffle_labels=_flag(training, "shuffle_labels", source),
            word_ngram_weight=_number(training, "word_ngram_weight", cls.word_ngram_weight, source, low=0.0),
            char_ngram_weight=_number(training, "char_ngram_weight", cls.char_ngram_weight, source, low=0.0),
            word_ngram_min_df=int(
                _number(training, "word_ngram_min_df", cls.word_ngram_min_df, source, integer=True, low=1)
            ),
            char_ngram_min_df=int(
                _number(training, "char_ngram_min_df", cls.char_ngram_min_df, source, integer=True, low=1)
            ),
            gate=gate,
            source=source,
        )
        try:
            return config.checked()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def checked(self) -> TrainingConfig:
        """Re-validate after command-line overrides (``dataclasses.replace``)."""
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(f"train_fraction {self.train_fraction}: expected a share in (0, 1]")
        if self.C <= 0:
            raise ConfigError(f"training.C {self.C}: expected a positive number")
        if self.augment_copies < 0:
            raise ConfigError(f"training.augment_copies {self.augment_copies}: expected 0 or more")
        if min(self.word_ngram_min_df, self.char_ngram_min_df) < 1:
            raise ConfigError("training.word_ngram_min_df and char_ngram_min_df: expected 1 or more")
        return self

    def with_overrides(
        self,
        *,
        train_path: Path | None = None,
        train_fraction: float | None = None,
        shuffle_labels: bool | None = None,
    ) -> TrainingConfig:
        changes: dict[str, Any] = {}
        if train_path is not None:
            changes["train_path"] = train_path
        if train_fraction is not None:
            changes["train_fraction"] = train_fraction
        if shuffle_labels is not None:
            changes["shuffle_labels"] = shuffle_labels
        return replace(self, **changes).checked()

    def as_dict(self) -> dict[str, Any]:
        """The effective settings (file plus command-line overrides), as logged with the run."""
        return {
            "model": self.model_name,
            "data": {
                "train": str(self.train_path),
                "eval": str(self.eval_path),
                "train_fraction": self.train_fraction,
                "subset_seed": self.subset_seed,
            },
            "training": {
                **self.hyperparameters(),
                "augment_copies": self.augment_copies,
                "augment_seed": self.augment_seed,
                "shuffle_labels": self.shuffle_labels,
                **self.ngrams().as_dict(),
            },
            "gate": dict(self.gate),
            "source": self.source,
        }

    def hyperparameters(self) -> dict[str, Any]:
        return {"C": self.C, "max_iter": self.max_iter, "class_weight": self.class_weight}

    def ngrams(self) -> NgramSettings:
        return NgramSettings(
            self.word_ngram_weight, self.char_ngram_weight, self.word_ngram_min_df, self.char_ngram_min_df
        )


def _no_unknown(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"expected {', '.join(sorted(allowed))}"
        )


def _section(raw: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {key}: expected a mapping")
    return value


def _path(raw: Mapping[str, Any], key: str, default: Path, root: Path, source: str) -> Path:
    value = raw.get(key, str(default))
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: data.{key}: expected a file path")
    path = Path(value)
    return path if path.is_absolute() else root / path


def _number(
    raw: Mapping[str, Any],
    key: str,
    default: float,
    source: str,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
) -> float:
    value = raw.get(key, default)
    kind = "a whole number" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        raise ConfigError(f"{source}: {key}: expected {kind}, got {value!r}")
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = [f">= {low}"] if low is not None else []
        bounds += [f"<= {high}"] if high is not None else []
        raise ConfigError(f"{source}: {key}: {value!r} is out of range ({' and '.join(bounds)})")
    return float(value)


def _flag(raw: Mapping[str, Any], key: str, source: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: training.{key}: expected true or false, got {value!r}")
    return value


# -- the training data ---------------------------------------------------------------------------


def select_examples(examples: Sequence[Example], fraction: float, seed: int) -> list[Example]:
    """A stratified share of ``examples``: per intent ``max(1, round(fraction * n))``, chosen
    with ``seed``, in file order. ``fraction`` 1 keeps everything."""
    if fraction >= 1:
        return list(examples)
    rng = random.Random(seed)
    keep: set[int] = set()
    for intent in INTENTS:
        idx = [i for i, e in enumerate(examples) if e.intent == intent]
        if idx:
            keep.update(rng.sample(idx, max(1, round(fraction * len(idx)))))
    return [e for i, e in enumerate(examples) if i in keep]


def shuffled_labels(examples: Sequence[Example], seed: int) -> list[Example]:
    """The same texts with the labels permuted among them (a drill: a model that learnt nothing)."""
    labels = [e.intent for e in examples]
    random.Random(seed).shuffle(labels)
    return [Example(e.text, label) for e, label in zip(examples, labels, strict=True)]


def training_examples(config: TrainingConfig) -> list[Example]:
    """The examples the config trains on (subset and label shuffling applied)."""
    examples = select_examples(load_examples(config.train_path), config.train_fraction, config.subset_seed)
    return shuffled_labels(examples, config.subset_seed) if config.shuffle_labels else examples


def augmented(examples: Sequence[Example], signals: EntitySignals, copies: int, seed: int) -> list[Example]:
    """The examples plus ``copies`` title-swapped copies of each that names a catalog title."""
    rng = random.Random(seed)
    out = list(examples)
    for example in examples:
        for _ in range(copies):
            swapped = signals.swap_title(example.text, rng)
            if swapped is not None:
                out.append(Example(swapped, example.intent))
    return out


def fit(
    examples: Sequence[Example], embedder: Embedder, signals: EntitySignals, config: TrainingConfig
) -> IntentModel:
    """The fitted model (scikit-learn ``LogisticRegression`` and the n-gram vectorizers)."""
    rows = augmented(examples, signals, config.augment_copies, config.augment_seed)
    return fit_model(examples, rows, embedder, signals, config.hyperparameters(), config.ngrams())


# -- measurement ---------------------------------------------------------------------------------


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> float:
    """ECE of top-label confidences with ``bins`` equal-width bins (see the module docstring)."""
    conf = np.asarray(confidences, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.shape != hit.shape:
        raise ValueError(f"{conf.shape[0]} confidences but {hit.shape[0]} outcomes")
    if conf.size == 0:
        return 0.0
    if np.any((conf < 0) | (conf > 1)):
        raise ValueError("confidences must lie in [0, 1]")
    # bin b holds (b/bins, (b+1)/bins]; ceil(c * bins) - 1, with 0 put in the first bin
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        if n:
            total += n / conf.size * abs(float(hit[members].mean()) - float(conf[members].mean()))
    return total


def package_size_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 1e6


@dataclass(frozen=True)
class Measurement:
    metrics: dict[str, float]
    report: dict[str, Any]
    """Per-intent figures and the misclassified examples (logged as ``eval/report.json``)."""


def measure(
    client: LocalIntentClient, examples: Sequence[Example], embedder: Embedder, package: Path | None = None
) -> Measurement:
    """Quality, calibration, single-query latency and (given the package) size on ``examples``."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    texts = [e.text for e in examples]
    truth = [e.intent for e in examples]
    embeddings = embedder.embed(texts)
    predictions = client.classify_many(texts, embeddings)
    predicted = [p.intent for p in predictions]
    confidence = [p.confidence for p in predictions]
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=list(INTENTS), zero_division=0
    )
    metrics: dict[str, float] = {
        "macro_f1": float(f1_score(truth, predicted, labels=list(INTENTS), average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(truth, predicted)),
        "ece": expected_calibration_error(
            confidence, [p == t for p, t in zip(predicted, truth, strict=True)]
        ),
        "n_eval": float(len(examples)),
    }
    for i, intent in enumerate(INTENTS):
        metrics[f"precision_{intent}"] = float(precision[i])
        metrics[f"recall_{intent}"] = float(recall[i])
        metrics[f"f1_{intent}"] = float(f1[i])
    metrics.update(single_query_latency(client, texts, embeddings))
    if package is not None:
        metrics["size_mb"] = package_size_mb(package)
    metrics = {k: round(v, 4) for k, v in metrics.items()}
    report = {
        "per_intent": {
            intent: {
                "precision": metrics[f"precision_{intent}"],
                "recall": metrics[f"recall_{intent}"],
                "f1": metrics[f"f1_{intent}"],
                "support": int(support[i]),
            }
            for i, intent in enumerate(INTENTS)
        },
        "confusions": [
            {"text": t, "expected": e, "predicted": p, "confidence": round(float(c), 4)}
            for t, e, p, c in zip(texts, truth, predicted, confidence, strict=True)
            if p != e
        ],
    }
    return Measurement(metrics, report)


def single_query_latency(
    client: LocalIntentClient, texts: Sequence[str], embeddings: Any, warmup: int = 10
) -> dict[str, float]:
    """p50 and p99 of ``client.classify(text, embedding)``, one query at a time (the embedding is
    computed beforehand: see the module docstring)."""
    for i in range(min(warmup, len(texts))):
        client.classify(texts[i], embeddings[i])
    timings = []
    for i, text in enumerate(texts):
        start = time.perf_counter()
        client.classify(text, embeddings[i])
        timings.append((time.perf_counter() - start) * 1000)
    return {
        "p50_latency_ms": float(np.percentile(timings, 50)),
        "p99_latency_ms": float(np.percentile(timings, 99)),
    }


# -- the job -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedModel:
    """A trained, measured model and its package (not yet registered)."""

    model: Any
    package: Path
    package_version: str
    metrics: dict[str, float]
    params: dict[str, str]
    report: dict[str, Any]


@dataclass(frozen=True)
class Candidate:
    """What ``train_candidate`` returns: the registered version and what it measured."""

    version: ModelVersion
    metrics: dict[str, float]
    run_id: str
    package_version: str


def digest_of(config: TrainingConfig, embedder: Embedder, signals: EntitySignals) -> str:
    """The digest of everything that decides the model (names its package version)."""
    h = hashlib.sha256()
    h.update(config.train_path.read_bytes())
    h.update(embedder.name.encode())
    h.update(signals.digest.encode())
    settings = {
        **config.hyperparameters(),
        "augment": [config.augment_copies, config.augment_seed],
        "subset": [config.train_fraction, config.subset_seed],
        "shuffle_labels": config.shuffle_labels,
        **ngram_digest(config.ngrams()),
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def train_and_measure(
    config: TrainingConfig, embedder: Embedder, catalog: Catalog, workdir: Path
) -> TrainedModel:
    """Train from ``config``, write the package under ``workdir`` and measure it on the eval set."""
    signals = EntitySignals(catalog)
    examples = training_examples(config)
    eval_examples = load_examples(config.eval_path)
    digest = digest_of(config, embedder, signals)
    name = f"{config.model_name}-{digest[:12]}"
    started = time.perf_counter()
    model = fit(examples, embedder, signals, config)
    train_seconds = time.perf_counter() - started
    package = save_package(
        model,
        workdir / name,
        {
            "version": name,
            "embedder": embedder.name,
            "model": config.model_name,
            "digest": digest,
            "labels": [str(c) for c in model.classes_],
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    client = LocalIntentClient(model, embedder, name, signals)
    measured = measure(client, eval_examples, embedder, package)
    metrics = {**measured.metrics, "train_seconds": round(train_seconds, 3), "n_train": float(len(examples))}
    params = {
        "C": str(config.C),
        "max_iter": str(config.max_iter),
        "class_weight": str(config.class_weight),
        "augment_copies": str(config.augment_copies),
        "augment_seed": str(config.augment_seed),
        "train_path": str(config.train_path),
        "train_sha256": hashlib.sha256(config.train_path.read_bytes()).hexdigest()[:16],
        "eval_path": str(config.eval_path),
        "eval_sha256": hashlib.sha256(config.eval_path.read_bytes()).hexdigest()[:16],
        "train_fraction": str(config.train_fraction),
        "subset_seed": str(config.subset_seed),
        "shuffle_labels": str(config.shuffle_labels).lower(),
        "word_ngram_weight": str(config.word_ngram_weight),
        "char_ngram_weight": str(config.char_ngram_weight),
        "word_ngram_min_df": str(config.word_ngram_min_df),
        "char_ngram_min_df": str(config.char_ngram_min_df),
        "n_ngrams": str(model.ngrams.n_features if model.ngrams else 0),
        "embedder": embedder.name,
        "package_version": name,
    }
    return TrainedModel(model, package, name, metrics, params, measured.report)


def classifier_input(
    model: IntentModel, texts: Sequence[str], embeddings: np.ndarray, signals: EntitySignals
) -> np.ndarray:
    """What the logged classifier takes: ``model.features`` as a dense array (a signature needs
    one; a few rows)."""
    matrix = model.features(texts, embeddings, signals)
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix)


def pip_requirements() -> list[str]:
    """Explicit requirements of the logged classifier (MLflow infers nothing, which is slow)."""
    pinned = []
    for dist in PIP_PACKAGES:
        try:
            pinned.append(f"{dist}=={package_version(dist)}")
        except PackageNotFoundError:
            pinned.append(dist)
    return pinned


def train_candidate(
    config: TrainingConfig,
    registry: TrackingRegistry,
    embedder: Embedder,
    catalog: Catalog,
    *,
    actor: str,
    reason: str = "",
    set_candidate: bool = True,
) -> Candidate:
    """Train, measure, track (one run of ``registry``), register, and point ``candidate`` at the
    version."""
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory(prefix="mangaassist-train-") as scratch:
        trained = train_and_measure(config, embedder, catalog, Path(scratch))
        with registry.run(config.model_name, run_name=trained.package_version) as run_id:
            sample_texts = [e.text for e in load_examples(config.eval_path)[:5]]
            signals = EntitySignals(catalog)
            sample = classifier_input(trained.model, sample_texts, embedder.embed(sample_texts), signals)
            registry.log_model(
                run_id,
                trained.model.classifier,
                signature=infer_signature(sample, trained.model.classifier.predict_proba(sample)),
                pip_requirements=pip_requirements(),
                artifact_path="classifier",
            )
            registry.log_dict(run_id, trained.report, "eval/report.json")
            registry.log_dict(run_id, config.as_dict(), "config/effective.json")
            if config.source and Path(config.source).is_file():
                registry.log_artifact(run_id, config.source, "config")
            registry.set_tags(run_id, {"mangaassist.actor": actor, "mangaassist.reason": reason[:1000]})
            version = registry.register(
                config.model_name,
                trained.package,
                metrics=trained.metrics,
                params=trained.params,
                tags={
                    "package_version": trained.package_version,
                    "embedder": embedder.name,
                    "shuffle_labels": trained.params["shuffle_labels"],
                    "train_fraction": trained.params["train_fraction"],
                    "actor": actor,
                },
                run_id=run_id,
            )
        if set_candidate:
            registry.set_alias(
                config.model_name, "candidate", version.version, actor=actor, reason=reason or "trained"
            )
            version = registry.get(config.model_name, version.version)
    return Candidate(version, trained.metrics, run_id, trained.package_version)
