"""Intent classification: the ``IntentClient`` protocol and the baseline model behind it.

The baseline is logistic regression (scikit-learn) over the message's sentence embedding, three
entity indicators (``EntitySignals``) and TF-IDF word and character n-grams of its text
(``NgramFeatures``; see ADR 0003), trained from ``ml/intents/train.jsonl`` and measured on
``ml/intents/eval.jsonl``. ``IntentModel`` is what a trained model is: the classifier and the
n-grams it was trained with. A trained model is cached under ``HOME/models`` by the digest of what
produced it (data, embedder, catalog names, settings), so a worker only trains when one of those
changed.

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
from typing import TYPE_CHECKING, Any, Protocol

import joblib
import numpy as np

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.embeddings import Embedder, Vector
from mangaassist.chatbot.entities import EntitySignals
from mangaassist.core.errors import ConfigError
from mangaassist.core.intents import INTENTS

if TYPE_CHECKING:
    import scipy.sparse as sp

HYPERPARAMS: dict[str, Any] = {"C": 8.0, "max_iter": 2000, "class_weight": "balanced"}
AUGMENT_COPIES = 2
"""Title-swapped copies per training example that names a catalog title."""
AUGMENT_SEED = 20261126


@dataclass(frozen=True)
class NgramSettings:
    """The TF-IDF n-gram features beside the embedding (``training`` in ``ml/intent.yaml``).

    ``word_weight`` scales the word 1-2-gram block and ``char_weight`` the block of character
    3-5-grams within words (0 leaves a block out; both 0: embedding and entities only, the model
    before issue 20). A word n-gram is kept when at least ``word_min_df`` training examples (before
    augmentation) contain it, a character n-gram at least ``char_min_df``: that bounds the
    package's size (about 7,400 n-grams, 0.39 MB, with the defaults and today's data).
    """

    word_weight: float = 1.0
    char_weight: float = 1.0
    word_min_df: int = 2
    char_min_df: int = 3

    @property
    def enabled(self) -> bool:
        return self.word_weight > 0 or self.char_weight > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "word_weight": self.word_weight,
            "char_weight": self.char_weight,
            "word_min_df": self.word_min_df,
            "char_min_df": self.char_min_df,
        }


NGRAMS = NgramSettings()
"""The chatbot's in-process model (``load_or_train``); the defaults of ``ml/intent.yaml``."""


class NgramFeatures:
    """TF-IDF of a message's word 1-2-grams and character 3-5-grams (within words), fitted on the
    training texts.

    The embedding misses what a few words decide ("bot", "pay with", "status", "write a ..."), and
    n-grams of characters survive typos ("delivey", "wrokout") and catch names the embedding does
    not know. ``transform`` gives the scaled blocks as one sparse matrix (training, evaluation in
    bulk); ``row`` gives one text's non-zero columns and values without scikit-learn's per-call
    overhead (about 0.08 ms instead of 0.9 ms a message), using the vectorizers' own analyzers, so
    both give the same numbers.
    """

    VERSION = "ngrams-v1"

    def __init__(self, settings: NgramSettings) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.settings = settings
        common: dict[str, Any] = {"sublinear_tf": True, "strip_accents": "unicode"}
        self.blocks: list[tuple[Any, float]] = []
        if settings.word_weight > 0:
            words = TfidfVectorizer(ngram_range=(1, 2), min_df=settings.word_min_df, **common)
            self.blocks.append((words, settings.word_weight))
        if settings.char_weight > 0:
            chars = TfidfVectorizer(
                analyzer="char_wb", ngram_range=(3, 5), min_df=settings.char_min_df, **common
            )
            self.blocks.append((chars, settings.char_weight))
        self._analyzers: list[Any] | None = None

    def fit(self, texts: Sequence[str]) -> NgramFeatures:
        """Learn the vocabulary and IDF of each block; a block none of whose n-grams reaches
        its ``min_df`` (a handful of examples) is left out."""
        kept = []
        for vectorizer, weight in self.blocks:
            try:
                vectorizer.fit(texts)
            except ValueError:  # "After pruning, no terms remain"
                continue
            vectorizer.stop_words_ = None  # the pruned n-grams: only for introspection, and large
            kept.append((vectorizer, weight))
        self.blocks = kept
        return self

    @property
    def n_features(self) -> int:
        return sum(len(v.vocabulary_) for v, _ in self.blocks)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        import scipy.sparse as sp  # here, not at import: the CLI imports this module and seldom needs it

        if not self.blocks:
            return sp.csr_matrix((len(texts), 0))
        return sp.hstack([v.transform(texts) * w for v, w in self.blocks], format="csr")

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices (into ``transform``'s columns) and values of ``text``'s non-zero n-grams."""
        if self._analyzers is None:
            self._analyzers = [v.build_analyzer() for v, _ in self.blocks]
        columns: list[np.ndarray] = []
        values: list[np.ndarray] = []
        offset = 0
        for (vectorizer, weight), analyze in zip(self.blocks, self._analyzers, strict=True):
            vocabulary = vectorizer.vocabulary_
            counts: dict[int, int] = {}
            for gram in analyze(text):
                j = vocabulary.get(gram)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if counts:
                idx = np.fromiter(counts, dtype=np.int64, count=len(counts))
                tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
                v = (1.0 + np.log(tf)) * vectorizer.idf_[idx]
                columns.append(idx + offset)
                values.append(weight * v / np.linalg.norm(v))
            offset += len(vocabulary)
        if not columns:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return np.concatenate(columns), np.concatenate(values)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_analyzers": None}  # rebuilt on first use


class IntentModel:
    """A trained intent model: what ``model.joblib`` holds and ``LocalIntentClient`` runs.

    ``classifier`` is a scikit-learn ``LogisticRegression`` over ``features``: the embedding, the
    entity indicators and, when ``ngrams`` is set, the n-gram block. A package written before the
    n-gram features held the bare classifier; ``of`` reads it as a model without n-grams.
    """

    def __init__(self, classifier: Any, ngrams: NgramFeatures | None = None) -> None:
        self.classifier = classifier
        self.ngrams = ngrams

    @classmethod
    def of(cls, stored: Any) -> IntentModel:
        return stored if isinstance(stored, IntentModel) else cls(stored)

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.classifier.classes_)

    def features(self, texts: Sequence[str], embeddings: np.ndarray, signals: EntitySignals) -> Any:
        """The classifier's input: a dense array without n-grams, else a sparse matrix."""
        dense = features(texts, embeddings, signals)
        if self.ngrams is None:
            return dense
        import scipy.sparse as sp

        return sp.hstack([sp.csr_matrix(dense), self.ngrams.transform(texts)], format="csr")

    def predict_proba(
        self, texts: Sequence[str], embeddings: np.ndarray, signals: EntitySignals
    ) -> np.ndarray:
        """``classifier.predict_proba(features(...))``, computed row by row for the n-grams: the
        softmax of the classifier's linear scores, or with two classes the logistic function of
        its one score (a test holds the two equal)."""
        dense = features(texts, embeddings, signals)
        if self.ngrams is None:
            return np.asarray(self.classifier.predict_proba(dense))
        coef = np.asarray(self.classifier.coef_)
        width = dense.shape[1]
        scores: np.ndarray = dense @ coef[:, :width].T + self.classifier.intercept_
        for i, text in enumerate(texts):
            columns, values = self.ngrams.row(text)
            if columns.size:
                scores[i] += coef[:, width + columns] @ values
        if scores.shape[1] == 1:  # two classes: one score, for the second
            positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.column_stack([1.0 - positive, positive])
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        return np.asarray(scores / scores.sum(axis=1, keepdims=True))


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
    """An ``IntentModel``, in process. ``model`` may be a bare classifier (a package written before
    the n-gram features): it is read as a model without n-grams."""

    def __init__(self, model: Any, embedder: Embedder, version: str, signals: EntitySignals) -> None:
        self._model = IntentModel.of(model)
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
        probs = self._model.predict_proba(texts, np.asarray(embeddings), self.signals)
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
    settings = {**HYPERPARAMS, "augment": [AUGMENT_COPIES, AUGMENT_SEED], **ngram_digest(NGRAMS)}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def ngram_digest(settings: NgramSettings) -> dict[str, Any]:
    """The n-gram settings as they enter a model's digest (nothing when disabled, so the digest of
    an embedding-only model is what it was before n-grams existed)."""
    return {"ngrams": [NgramFeatures.VERSION, settings.as_dict()]} if settings.enabled else {}


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


def train(examples: Sequence[Example], embedder: Embedder, signals: EntitySignals) -> IntentModel:
    return fit_model(examples, augment(examples, signals), embedder, signals, HYPERPARAMS, NGRAMS)


def fit_model(
    examples: Sequence[Example],
    rows: Sequence[Example],
    embedder: Embedder,
    signals: EntitySignals,
    hyperparameters: dict[str, Any],
    ngrams: NgramSettings,
) -> IntentModel:
    """Fit on ``rows`` (the examples plus their augmented copies). The n-gram vocabulary comes from
    ``examples`` alone: a title-swapped copy would count its sentence's n-grams again and put
    catalog titles in the vocabulary that no customer wrote."""
    from sklearn.linear_model import LogisticRegression

    texts = [e.text for e in rows]
    model = IntentModel(
        LogisticRegression(**hyperparameters),
        NgramFeatures(ngrams).fit([e.text for e in examples]) if ngrams.enabled else None,
    )
    model.classifier.fit(model.features(texts, embedder.embed(texts), signals), [e.intent for e in rows])
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
        model = IntentModel.of(joblib.load(path))
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
    """Write a model package: ``model.joblib`` (the ``IntentModel``) and ``model.json``.

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
    joblib.dump(model, tmp / PACKAGE_MODEL, compress=3)  # the n-gram vocabulary compresses well
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
