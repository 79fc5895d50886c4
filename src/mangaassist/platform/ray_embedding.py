"""Embedding on a Ray cluster: the optional executor of the knowledge-base build's embed stage
(``kb build --executor ray [--address ADDR]``; pipeline params ``executor``, ``ray_address``,
``ray_workers``; ADR 0014).

Only the forward passes move. The driver (the build's own process) still plans the batches (each
text tokenized once and sorted by length: the same batches as in-process), reads and writes the
embedding cache, reports progress, writes the version and runs the gates. Each Ray actor
(``EmbedWorker``: one per CPU of the cluster unless ``workers`` says otherwise, one CPU and one
thread each) builds its own embedder once from a small picklable ``EmbedderSpec``. Before the first
batch the driver checks that every worker's model id equals its own; then it keeps ``IN_FLIGHT``
batches queued per worker and takes the results back in batch order. A worker gets the same texts
in the same order as the in-process loop would pad them, so its vectors are the in-process ones
(equal bit for bit, tested).

Local mode (no address): a private Ray instance on this machine with ``num_cpus`` = its cores, no
dashboard, no usage statistics, every server on 127.0.0.1; it is shut down when the stage ends.
With an address (``auto``, ``HOST:PORT`` of a head node's GCS, or ``ray://HOST:PORT`` of its Ray
Client server) the driver connects to that cluster, and only disconnects (and kills its own
actors) at the end. Through ``ray://`` the head must run with ``GRPC_ENABLE_FORK_SUPPORT=0`` (its
Ray Client server forks a server per client; CD-04, ADR 0014); a connection refused for that names
it. Ray is imported only here and only when this executor runs.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import signal
import socket
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import numpy as np

from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.platform.embeddings import Embedder, EmbedStats, Matrix, make_embedder, model_id

EXECUTORS = ("inprocess", "ray")
"""Where the embed stage's forward passes run: in the build's process (default) or on Ray."""

RAY_REQUIREMENT = "ray==2.60.0"

IN_FLIGHT = 2
"""Batches queued per worker: one running, one waiting, so a worker never idles on a round trip."""

CONNECT_TIMEOUT_S = 5.0
START_TIMEOUT_S = 300.0
"""How long the workers may take to start and load the model before the stage gives up."""

_ADDRESS = re.compile(
    r"^(?P<scheme>ray://)?(?P<host>[A-Za-z0-9][A-Za-z0-9.\-]*|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$"
)

_CLUSTER_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_LOCAL_ENV = {_CLUSTER_VAR: "0"}
"""A single-machine Ray (what Ray does on macOS and Windows): its node address is 127.0.0.1, so
its GCS, raylet, object manager and workers listen on loopback only. Read when ``ray`` is
imported; its processes inherit it."""


class RayExecutorError(MangaAssistError):
    """The Ray executor could not start its workers, or lost one while embedding."""


def missing_ray() -> str:
    return f"--executor ray needs the Python package ray ({RAY_REQUIREMENT}), which is not installed"


def ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["ray"] is None or has no spec
        return False


def check_settings(executor: str, address: str | None, workers: Any = None) -> None:
    """Refuse a bad executor, address or worker count, or a missing ``ray``, before anything runs."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor={executor!r}: expected one of {', '.join(EXECUTORS)}")
    if executor != "ray":
        if address is not None:
            raise ConfigError(f"ray_address={address!r} needs executor=ray")
        return
    if address is not None:
        parse_address(address)
    if workers is not None:
        try:
            count = int(workers)
        except (TypeError, ValueError):
            raise ConfigError(f"ray_workers={workers!r}: expected a whole number") from None
        if count < 1:
            raise ConfigError(f"ray_workers={workers!r}: expected at least 1")
    if not ray_installed():
        raise ConfigError(missing_ray())


def parse_address(address: str) -> tuple[str, int] | None:
    """``auto`` (None), ``HOST:PORT`` or ``ray://HOST:PORT`` (the host and port); else a ConfigError."""
    if address == "auto":
        return None
    match = _ADDRESS.match(address)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(
            f"Ray address {address!r}: expected auto, HOST:PORT (the head node's GCS, 6379 by default) "
            "or ray://HOST:PORT (its Ray Client server, 10001 by default)"
        )
    return match["host"].strip("[]"), int(match["port"])


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to the address, so a wrong host or port fails in seconds (Ray itself retries
    a GCS that does not answer for minutes). ``auto`` is left to Ray."""
    target = parse_address(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"Ray address {address}: nothing answers at {target[0]}:{target[1]} ({reason}); "
            "start the head node with `ray start --head` or fix --address"
        ) from None


@dataclass(frozen=True)
class EmbedderSpec:
    """What a worker needs to build the driver's embedder itself: small and picklable."""

    kind: str
    runtime: str | None = None
    threads: int = 1

    def make(self) -> Embedder:
        """``make_embedder(kind, runtime)`` with ``threads`` threads: called in the worker's own
        process, whose environment is its own to set."""
        os.environ["MANGAASSIST_TORCH_THREADS"] = str(self.threads)
        return make_embedder(self.kind, self.runtime)


class EmbedWorker:
    """One Ray actor's state: its embedder, built once. (Made a Ray actor class by
    ``RayEmbedExecutor``; Ray pickles it by reference, so every node imports this module.)"""

    def __init__(self, spec: EmbedderSpec) -> None:
        self.embedder = spec.make()

    def describe(self) -> dict[str, Any]:
        return {
            "model": model_id(self.embedder),
            "dim": self.embedder.dim,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def embed(self, texts: list[str]) -> tuple[Matrix, dict[str, float]]:
        """The vectors of one batch (in the order given) and where its time went. One forward pass
        over exactly these texts, padded to the longest, as the in-process loop runs that batch."""
        stats = getattr(self.embedder, "stats", None)
        if isinstance(stats, EmbedStats):
            stats.reset()
        started = time.perf_counter()
        one_pass = getattr(self.embedder, "embed_batches", None)
        if callable(one_pass):
            matrix = np.zeros((len(texts), self.embedder.dim), dtype=np.float32)
            for rows, vectors in one_pass(texts, max(1, len(texts))):
                matrix[rows] = vectors
        else:
            matrix = self.embedder.embed(texts)
        figures: dict[str, float] = dict(asdict(stats)) if isinstance(stats, EmbedStats) else {}
        figures["worker_s"] = time.perf_counter() - started
        return matrix, figures


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` while Ray is imported and started (its processes inherit them),
    restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _cluster_mode(ray: Any, enabled: bool) -> Iterator[None]:
    """Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when it is imported
    (``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` in ray 2.60): a ``ray`` imported earlier in
    this process, before the variable was set, gets the setting for the length of ``ray.init``."""
    constants: Any = getattr(getattr(ray, "_private", None), "ray_constants", None)
    before = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if before is None:
        yield
        return
    constants.ENABLE_RAY_CLUSTER = enabled
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = before


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


CLIENT_SERVER_FAILED = "Starting Ray client server failed"
"""What Ray's client reports when the head's Ray Client server could not start this client's own
server process (the proxier's ``SpecificServer``)."""


def _connect_hint(address: str | None, exc: BaseException) -> str:
    """What to check when ``ray.init`` could not connect to ``address``."""
    if address is None:
        return ""
    text = str(exc)
    if address.startswith("ray://") and CLIENT_SERVER_FAILED in text:
        log = next((line.strip() for line in text.splitlines() if CLIENT_SERVER_FAILED in line), "")
        return (
            f" ({log} On the head, the Ray Client server forks a server for each client while its gRPC "
            "threads run; with gRPC's fork support on, its default, the child can abort before it starts. "
            "Start the head with GRPC_ENABLE_FORK_SUPPORT=0 in its environment: CD-04, Re-embedding on a "
            "Ray cluster)"
        )
    return (
        " (a cluster with token authentication, Ray's default, also needs RAY_AUTH_MODE=token "
        "and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token)"
    )


class RayEmbedExecutor:
    """Ray actors embedding batches for the driver. A context manager: entering starts (or joins)
    Ray and the workers, leaving kills the workers and stops (or leaves) Ray."""

    def __init__(
        self,
        spec: EmbedderSpec,
        model: str,
        address: str | None = None,
        workers: int | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.spec = spec
        self.model = model
        self.address = address
        self.requested = workers
        self.start_timeout_s = start_timeout_s
        self.workers: list[dict[str, Any]] = []
        """Each worker's model id, dimension, pid and host, as it reported them."""
        self.stats = EmbedStats()
        """The workers' figures summed (tokenization and forward seconds are worker-seconds)."""
        self.start_s = 0.0
        """Seconds from nothing to every worker ready: connecting or starting Ray (``init_s``), then
        the workers' processes and their model loads."""
        self.init_s = 0.0
        self.stop_s = 0.0
        self.cluster_cpus = 0
        self._ray: Any = None
        self._actors: list[Any] = []
        self._owns = False
        self._sigterm: Any = None

    @property
    def where(self) -> str:
        return self.address or "local"

    def __enter__(self) -> RayEmbedExecutor:
        started = time.perf_counter()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        self.start_s = time.perf_counter() - started
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        if self.address is not None:
            check_reachable(self.address)
        values = {"RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}
        if self.address is None:
            values.update(_LOCAL_ENV)
        with _environment(values):
            try:
                import ray
            except ImportError:
                raise ConfigError(missing_ray()) from None
            self._ray = ray
            began = time.perf_counter()
            if not ray.is_initialized():
                with _cluster_mode(ray, os.environ.get(_CLUSTER_VAR, "1").lower() not in ("0", "false")):
                    self._init(ray)
            self.init_s = time.perf_counter() - began
        self.cluster_cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
        count = self.requested or self.cluster_cpus
        if count < 1:
            raise RayExecutorError(f"the Ray cluster at {self.where} has no CPUs for embedding workers")
        remote = ray.remote(num_cpus=1, max_restarts=0)(EmbedWorker)
        self._actors = [remote.remote(self.spec) for _ in range(count)]
        try:
            self.workers = ray.get([a.describe.remote() for a in self._actors], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RayExecutorError(
                f"{count} Ray embedding workers did not start within {self.start_timeout_s:.0f} s "
                f"(the cluster at {self.where} has {self.cluster_cpus} CPUs; each worker needs one)"
            ) from None
        except ray.exceptions.RayError as exc:
            raise RayExecutorError(
                f"a Ray embedding worker could not build the {self.spec.kind} embedder: {_first_line(exc)}"
            ) from None
        for w in self.workers:
            if w["model"] != self.model:
                raise RayExecutorError(
                    f"the Ray worker pid {w['pid']} on {w['host']} embeds with {w['model']}, the build with "
                    f"{self.model}: install the same mangaassist and model packages on every node"
                )

    def _init(self, ray: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it; put back at close
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if self.address is None:
            options.update(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False)
        else:
            options.update(address=self.address)
        try:
            with warnings.catch_warnings():
                # lancedb warns at every fork once it has been used; Ray's fork is an exec of its servers
                warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
                ray.init(**options)
        except ConfigError:
            raise
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError or ValueError here
            hint = _connect_hint(self.address, exc)
            raise ConfigError(
                f"Ray address {self.where}: could not connect: {_first_line(exc)}{hint}"
            ) from None
        self._owns = True

    def embed(
        self, texts: Sequence[str], groups: Sequence[Sequence[int]]
    ) -> Iterator[tuple[list[int], Matrix]]:
        """(indices, vectors) for each group of indices into ``texts``, in the groups' order."""
        ray = self._ray
        pending: deque[tuple[list[int], int, Any]] = deque()
        queue = iter(groups)

        def submit(worker: int) -> None:
            rows = next(queue, None)
            if rows is not None:
                batch = [texts[i] for i in rows]
                pending.append((list(rows), worker, self._actors[worker].embed.remote(batch)))

        for _ in range(IN_FLIGHT):
            for worker in range(len(self._actors)):
                submit(worker)
        while pending:
            rows, worker, ref = pending.popleft()
            try:
                matrix, figures = ray.get(ref)
            except ray.exceptions.RayError as exc:
                info = self.workers[worker]
                raise RayExecutorError(
                    f"Ray embedding worker {worker} (pid {info['pid']} on {info['host']}) failed: "
                    f"{type(exc).__name__}: {_first_line(exc)}; the vectors already returned are cached, "
                    "so the next build embeds only the rest"
                ) from None
            submit(worker)
            self._count(figures)
            yield rows, np.asarray(matrix, dtype=np.float32)

    def _count(self, figures: dict[str, float]) -> None:
        s = self.stats
        s.texts += int(figures.get("texts", 0))
        s.batches += int(figures.get("batches", 0))
        s.tokens += int(figures.get("tokens", 0))
        s.padded_tokens += int(figures.get("padded_tokens", 0))
        s.tokenize_s += float(figures.get("tokenize_s", 0.0))
        s.forward_s += float(figures.get("forward_s", 0.0))

    def close(self) -> None:
        """Kill this executor's workers; stop the local Ray (or disconnect) if this executor began it."""
        ray = self._ray
        if ray is None:
            return
        started = time.perf_counter()
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: S112 - already dead or disconnected: nothing left to stop
                continue
        self._actors = []
        if self._owns:
            ray.shutdown()
            self._owns = False
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
            self._sigterm = None
        self.stop_s = time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        """What the embed step records about the executor."""
        return {
            "address": self.where,
            "workers": len(self.workers),
            "cluster_cpus": self.cluster_cpus,
            "hosts": sorted({w["host"] for w in self.workers}),
            "start_s": round(self.start_s, 3),
            "init_s": round(self.init_s, 3),
            "stop_s": round(self.stop_s, 3),
        }
