"""Worker processes of one revision: start, wait for ``/readyz``, restart on crash, give up.

The control plane creates one ``RevisionSupervisor`` per deployed revision. Each worker is
uvicorn serving ``<app>`` (a factory) on a loopback socket of its own (below), run from the
revision's unpacked artifact (``PYTHONPATH``), in the control plane's process group so ``down``
can stop them all. A worker that exits unexpectedly is restarted after a backoff (0.25 s,
doubling, at most 5 s); after ``max_crashes`` crashes in a row without a stable run it is FAILED
and the revision is UNHEALTHY. A worker that never becomes ready (timeout, ``/readyz`` reporting
a reason other than loading, or answering as another revision or process) is FAILED with that
reason. Every state change calls ``on_change`` so the control
plane can publish a new routing table (a worker that is not READY gets no traffic).

Liveness: a READY worker's ``/healthz`` is asked every ``health_interval_s``. Any HTTP answer will
do; a worker that gives none within ``health_timeout_s`` ``health_failures`` (3) times in a row
(asked again at once after a miss) while its process runs is hung (it may still accept
connections: the kernel does that): it is logged, killed (SIGTERM, SIGKILL after 1 s) and
restarted like a crashed one, its reason saying so. The control plane sets timeout and interval to
the service's ``response_timeout_s`` within [1, 5] s (``health_timeout``).

Ports: the supervisor binds each worker's listening socket itself (``127.0.0.1``, a port the
kernel picks), passes it to the child (``pass_fds``) and closes its own copy once the child runs;
a restart gets a new socket. No other process can take the port between choosing it and serving
on it, so the port the router knows is served by the process started for it. (The child is a
small launcher, ``python -c``, that serves the descriptor with ``uvicorn.Server``: uvicorn's own
``--fd`` labels the socket ``AF_UNIX``, which uvloop then serves as a pipe and asyncio without
``TCP_NODELAY``.)

Readiness: ``/readyz`` must answer 200 *stamped* by the revision expected: header
``X-MangaAssist-Revision`` equal to the revision name (``MANGAASSIST_REVISION``, which the
control plane sets) and, when the worker sends ``X-MangaAssist-Pid`` (the chatbot, the model
server and ``testing_app`` do), the pid of the process started. An answer from anything else is
never "ready": the worker is FAILED with a reason naming what answered and what was expected.

Environment: workers do not inherit the control plane's environment wholesale. They get the
variables the revision declares (service ``env``, ``links``, the revision's ``env``,
``MANGAASSIST_ROOT``/``HOME``/``REVISION``), ``PYTHONPATH`` (the artifact first, then the
inherited one), and from the control plane's environment only this allow-list
(``worker_environ``):

* ``PATH``, ``HOME``, ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, ``TMPDIR``/``TEMP``/``TMP``,
  ``LD_LIBRARY_PATH``;
* interpreter settings ``PYTHONUNBUFFERED``, ``PYTHONDONTWRITEBYTECODE``, ``PYTHONFAULTHANDLER``,
  ``PYTHONUTF8``, ``PYTHONIOENCODING``;
* offline model loading and threads: ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``,
  ``TOKENIZERS_PARALLELISM``, ``OMP_*``, ``MKL_*``, ``OPENBLAS_*``;
* the ``MANGAASSIST_*`` variables workers read (``WORKER_MANGAASSIST_VARS``: the chatbot's and
  the model server's settings, its customer-token settings, the config client, the knowledge
  refresh, the embedder's threads and runtime, the workload's provider, environment and aws
  settings, its EMF metrics switch);
* traces (``platform.tracing``, ``WORKER_OTEL_VARS``): the OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), the sampler (``OTEL_TRACES_SAMPLER``,
  ``OTEL_TRACES_SAMPLER_ARG``) and the batch delay (``OTEL_BSP_SCHEDULE_DELAY``). Not
  ``OTEL_EXPORTER_OTLP_HEADERS``: headers can carry credentials (``pass_env`` it by name).

Defaults (``WORKER_DEFAULTS``) come first, so the inherited and the revision's values win:
``MANGAASSIST_TORCH_THREADS=1`` (one embedding thread per worker, the workers share the cores).

Anything else (credentials, ``MLFLOW_TRACKING_URI``, ``MANGAASSIST_STATE_URL``, proxies, a
generator's API key) reaches a worker only when the service or revision sets it explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from mangaassist.platform.artifacts import REVISION_DATA
from mangaassist.platform.compute import RevisionHealth, WorkerState, WorkerStatus
from mangaassist.platform.ports import listening_socket

log = logging.getLogger("mangaassist.platform")

BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0
STABLE_AFTER_S = 30.0  # a worker ready this long before it crashes starts a new crash streak

REVISION_HEADER = "x-mangaassist-revision"  # stamped on every response by a worker
PID_HEADER = "x-mangaassist-pid"  # stamped on /readyz answers by workers of this version on
NO_ANSWER = "no answer on /readyz yet"
HEALTH_FAILURES = 3
"""Probes of ``/healthz`` in a row without an answer after which a ready worker counts as hung."""
HEALTH_TIMEOUT_MIN_S = 1.0
HEALTH_TIMEOUT_MAX_S = 5.0


def health_timeout(response_timeout_s: float) -> float:
    """The liveness probe's timeout (and interval) for a service whose router waits
    ``response_timeout_s`` for response headers: a worker that cannot answer ``/healthz`` within
    that cannot answer a request either; kept within [1, 5] s."""
    return min(HEALTH_TIMEOUT_MAX_S, max(HEALTH_TIMEOUT_MIN_S, response_timeout_s))


WORKER_ENV_NAMES: frozenset[str] = frozenset(
    {
        "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "LD_LIBRARY_PATH",
        "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONFAULTHANDLER", "PYTHONUTF8",
        "PYTHONIOENCODING",
        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM",
    }
)  # fmt: skip
WORKER_ENV_PREFIXES: tuple[str, ...] = ("LC_", "OMP_", "MKL_", "OPENBLAS_")
WORKER_MANGAASSIST_VARS: frozenset[str] = frozenset(
    {
        "MANGAASSIST_ROOT", "MANGAASSIST_HOME", "MANGAASSIST_REVISION", "MANGAASSIST_CONFIG",
        "MANGAASSIST_DATA_DIR",
        "MANGAASSIST_EMBEDDER", "MANGAASSIST_FAULT", "MANGAASSIST_TABLES",
        "MANGAASSIST_INTENT_URL", "MANGAASSIST_INTENT_TIMEOUT_MS", "MANGAASSIST_MODEL_PACKAGE",
        "MANGAASSIST_CONFIG_URL", "MANGAASSIST_CONFIG_DIR", "MANGAASSIST_CONFIG_POLL",
        "MANGAASSIST_KB_REFRESH_SECONDS", "MANGAASSIST_TORCH_THREADS",
        "MANGAASSIST_PROVIDER", "MANGAASSIST_ENV",  # platform.factory.workload_platform
        "MANGAASSIST_AWS_SETTINGS",  # the same, on aws (platform.factory.workload_aws_settings)
        "MANGAASSIST_EMBED_RUNTIME", "MANGAASSIST_ONNX_DIR",  # the embedder's runtime (platform.embeddings)
        # the workload's CloudWatch EMF lines (chatbot.emf; off unless MANGAASSIST_EMF=1)
        "MANGAASSIST_EMF", "MANGAASSIST_METRICS_NAMESPACE", "MANGAASSIST_SERVICE",
        # the customer's identity (chatbot.settings.IdentitySettings): no key material, only where
        # the keys are and what a token must say
        "MANGAASSIST_CUSTOMER_JWKS_URL", "MANGAASSIST_CUSTOMER_TOKEN_AUDIENCE",
        "MANGAASSIST_CUSTOMER_TOKEN_ISSUER", "MANGAASSIST_DEV_SIGNIN", "MANGAASSIST_SIGNIN_URL",
    }
)  # fmt: skip
WORKER_OTEL_VARS: frozenset[str] = frozenset(
    {
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_BSP_SCHEDULE_DELAY",
    }
)  # fmt: skip


WORKER_DEFAULTS: Mapping[str, str] = {"MANGAASSIST_TORCH_THREADS": "1"}
"""What a worker gets unless the control plane's environment or the revision says otherwise. One
embedding thread per worker: the workers of a platform share the machine's cores, and with a thread
per core each, a worker whose threads lose the CPU stalls its queued requests for up to a second
(seen on 2 cores: a canary's candidate at p50 136 ms against its identical baseline copy's 19 ms,
and the latency judge rolled a good release back)."""


def worker_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` (the control plane's) a worker inherits: the allow-list of the
    module docstring. ``PYTHONPATH`` is not among them: the supervisor builds it (artifact first)."""
    return {
        key: value
        for key, value in environ.items()
        if key in WORKER_ENV_NAMES
        or key in WORKER_MANGAASSIST_VARS
        or key in WORKER_OTEL_VARS
        or key.startswith(WORKER_ENV_PREFIXES)
    }


def free_port() -> int:
    """A port free at the time of the call; another process may take it before it is used.

    For tools that start something that must bind by port (benchmarks); workers do not use it.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The worker process: serve the inherited listening socket (argv[1], its descriptor) with the
# uvicorn factory argv[2]. ``socket.socket(fileno=...)`` reads the family (AF_INET) from the
# descriptor. Inline so it works with any revision's artifact (it needs only uvicorn).
WORKER_LAUNCHER = """\
import socket, sys
import uvicorn
sock = socket.socket(fileno=int(sys.argv[1]))
config = uvicorn.Config(
    sys.argv[2], factory=True, log_level="warning", access_log=False, timeout_keep_alive=75
)
server = uvicorn.Server(config)
server.run(sockets=[sock])
sys.exit(0 if server.started else 3)
"""


@dataclass(frozen=True)
class ReadyCheck:
    """One look at a worker's ``/readyz``."""

    ready: bool
    reason: str | None = None
    final: bool = False
    """It will never be ready (a reason other than loading, or another process answered)."""


async def check_ready(
    client: httpx.AsyncClient, url: str, revision: str, pid: int | None = None
) -> ReadyCheck:
    """Ask ``url`` (a worker's ``/readyz``) whether revision ``revision`` (process ``pid``) is ready.

    Ready only on a 200 stamped ``X-MangaAssist-Revision: <revision>`` and, if the answer carries
    ``X-MangaAssist-Pid``, that pid equal to ``pid``. An answer stamped by another revision or
    process, or a 200 without a stamp, is final: whoever answers there is not the worker started.
    """
    try:
        r = await client.get(url)
    except httpx.HTTPError:
        return ReadyCheck(False, NO_ANSWER)
    stamp = r.headers.get(REVISION_HEADER)
    answered_pid = r.headers.get(PID_HEADER)
    wrong_revision = stamp is not None and stamp != revision
    wrong_pid = pid is not None and answered_pid is not None and answered_pid != str(pid)
    if wrong_revision or wrong_pid:
        got = f"revision {stamp!r}" + (f" (pid {answered_pid})" if answered_pid else "")
        want = f"revision {revision!r}" + (f" (pid {pid})" if pid is not None else "")
        return ReadyCheck(
            False, f"{url} was answered ({r.status_code}) by {got}, expected {want}", final=True
        )
    if r.status_code == 200:
        if stamp is None:
            return ReadyCheck(
                False,
                f"{url} answered 200 without X-MangaAssist-Revision; expected revision {revision!r}",
                final=True,
            )
        return ReadyCheck(True)
    reason = f"/readyz answered {r.status_code}"
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("reason"):
        reason = str(body["reason"])
    return ReadyCheck(False, reason, final=not reason.startswith("loading"))


class AdoptedProcess:
    """A worker an earlier control plane started (so not our child), watched through a pidfd: the
    parts of ``asyncio.subprocess.Process`` the supervisor uses. Its exit status is not ours to
    read: ``returncode`` is -1 once it exited. Signals go through the pidfd, so a PID reused by
    another process is never signalled."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._fd = os.pidfd_open(pid)  # ProcessLookupError: it is gone already
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_exit)  # a pidfd is readable once the process exits

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self.returncode = -1
        self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        return -1

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._fd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass(frozen=True)
class Adoptee:
    """A running worker of the revision to take over instead of starting one (``RevisionSupervisor``)."""

    pid: int
    port: int


class Worker:
    """One worker process slot of a revision; ``run`` keeps it alive until ``stop``."""

    def __init__(self, sup: RevisionSupervisor, index: int, adopt: Adoptee | None = None) -> None:
        self.sup = sup
        self.index = index
        self.adopt = adopt
        self.adopted = False
        """Whether the process running now was adopted (started by an earlier control plane)."""
        self.state = WorkerState.STARTING
        self.reason: str | None = None
        self.port = 0
        self.proc: asyncio.subprocess.Process | AdoptedProcess | None = None
        self.restarts = 0
        self.crash_streak = 0
        self.stopping = False
        self.ready_event = asyncio.Event()  # set once READY or FAILED (deploy waits on it)
        self.task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def status(self) -> WorkerStatus:
        return WorkerStatus(self.pid, self.port, self.state, self.restarts, self.reason)

    def _set(self, state: WorkerState, reason: str | None = None) -> None:
        self.state = state
        self.reason = reason
        if state in (WorkerState.READY, WorkerState.FAILED):
            self.ready_event.set()
        self.sup.on_change()

    async def _spawn(self) -> asyncio.subprocess.Process:
        """Start the worker on a new listening socket of ours (see the module docstring)."""
        sup = self.sup
        log = sup.log_dir / f"{sup.name}-w{self.index}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        sock = listening_socket()
        try:
            self.port = int(sock.getsockname()[1])
            fd = sock.fileno()
            with log.open("ab") as out:
                out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start on port {self.port}\n".encode())
                return await asyncio.create_subprocess_exec(
                    sys.executable, "-c", WORKER_LAUNCHER, str(fd), sup.app,
                    stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                    env=sup.env, cwd=str(sup.workdir), pass_fds=(fd,),
                )  # fmt: skip
        finally:
            sock.close()  # the child has its own copy (or never started): the port is its alone

    def _take_over(self) -> AdoptedProcess | None:
        """The adoptee's process, if it still runs and is this platform's worker (its environment
        names this revision and state directory); else None (a fresh one is started)."""
        adopt, self.adopt = self.adopt, None
        if adopt is None:
            return None
        marker = f"MANGAASSIST_REVISION={self.sup.revision}".encode()
        home = self.sup.env.get("MANGAASSIST_HOME", "").encode()
        try:
            environ = Path(f"/proc/{adopt.pid}/environ").read_bytes().split(b"\0")
            if marker not in environ or (home and b"MANGAASSIST_HOME=" + home not in environ):
                return None
            proc = AdoptedProcess(adopt.pid)
        except OSError:
            return None
        self.port = adopt.port
        return proc

    async def _wait_ready(
        self, proc: asyncio.subprocess.Process | AdoptedProcess, timeout_s: float | None = None
    ) -> str | None:
        """None once ``/readyz`` answers 200 stamped by this revision and process (``check_ready``);
        else why it never will (the process stays as is)."""
        deadline = time.monotonic() + (timeout_s or self.sup.ready_timeout_s)
        last = NO_ANSWER
        url = f"http://127.0.0.1:{self.port}/readyz"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if proc.returncode is not None or self.stopping:
                    return "exited"
                check = await check_ready(client, url, self.sup.revision, proc.pid)
                if check.ready:
                    return None
                if check.reason is not None and check.reason != NO_ANSWER:
                    last = check.reason  # a timeout does not hide what the worker said before
                if check.final:
                    return "exited" if proc.returncode is not None else f"not ready: {last}"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.1)
        return f"not ready after {self.sup.ready_timeout_s:g}s: {last}"

    async def run(self) -> None:
        backoff = BACKOFF_START_S
        while not self.stopping:
            self._set(WorkerState.STARTING)
            self.adopted = False
            adopted = self._take_over()
            if adopted is not None:
                self.proc = adopted
                problem = await self._wait_ready(
                    adopted, self.sup.health_timeout_s * self.sup.health_failures
                )
                if problem is None:
                    self.adopted = True
                else:  # it runs but does not serve as this revision's worker: replace it
                    log.warning(
                        "worker %s-w%d (pid %d, port %d) not adopted (%s): starting a new one",
                        self.sup.name, self.index, adopted.pid, self.port, problem,
                    )  # fmt: skip
                    await self._terminate(timeout_s=2.0)
            if not self.adopted:
                try:
                    self.proc = await self._spawn()
                except OSError as exc:
                    self._set(WorkerState.FAILED, f"cannot start: {exc}")
                    return
                self.sup.on_pids()
                problem = await self._wait_ready(self.proc)
            proc = self.proc
            assert proc is not None
            if self.stopping:
                break
            if problem is not None and problem != "exited":
                await self._terminate()
                self._set(WorkerState.FAILED, problem)
                return
            ready_at = time.monotonic()
            hung: str | None = None
            if problem is None:
                self._set(WorkerState.READY)
                hung = await self._watch(proc)
                code = await proc.wait()
            else:
                code = proc.returncode if proc.returncode is not None else await proc.wait()
            if self.stopping:
                break
            if time.monotonic() - ready_at > STABLE_AFTER_S and problem is None:
                self.crash_streak = 0
                backoff = BACKOFF_START_S
            self.crash_streak += 1
            self.restarts += 1
            if self.crash_streak >= self.sup.max_crashes:
                last = f"last: {hung}" if hung else f"last exit status {code}"
                self._set(WorkerState.FAILED, f"crashed {self.crash_streak} times in a row ({last})")
                return
            why = hung or f"exited with status {code}"
            self._set(WorkerState.RESTARTING, f"{why}; restarting in {backoff:g}s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        self._set(WorkerState.STOPPED)

    async def _watch(self, proc: asyncio.subprocess.Process | AdoptedProcess) -> str | None:
        """Until the READY process exits, ask its ``/healthz`` (module docstring: liveness).

        None when the process exited (or the worker is stopping); why, when it was hung and was
        killed for it."""
        sup = self.sup
        url = f"http://127.0.0.1:{self.port}/healthz"
        misses = 0
        async with httpx.AsyncClient(timeout=sup.health_timeout_s) as client:
            while True:
                if not misses:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), sup.health_interval_s)
                if proc.returncode is not None or self.stopping:
                    return None
                try:
                    await client.get(url)  # any answer: the process serves
                    misses = 0
                    continue
                except httpx.HTTPError as exc:
                    failure = type(exc).__name__
                if proc.returncode is not None or self.stopping:
                    return None
                misses += 1
                if misses < sup.health_failures:
                    continue
                reason = (
                    f"hung: /healthz gave no answer within {sup.health_timeout_s:g}s "
                    f"{misses} times in a row ({failure})"
                )
                log.warning(
                    "worker %s-w%d (pid %s, port %d) is %s: killing it to restart it",
                    sup.name, self.index, proc.pid, self.port, reason,
                )  # fmt: skip
                await self._terminate(timeout_s=1.0)
                return reason

    async def _terminate(self, timeout_s: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        self.stopping = True
        await self._terminate()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.state = WorkerState.STOPPED
        self.sup.on_pids()


class RevisionSupervisor:
    """The workers of one revision, and its health derived from theirs."""

    def __init__(
        self,
        name: str,
        app: str,
        workdir: Path,
        env: Mapping[str, str],
        replicas: int,
        log_dir: Path,
        on_change: Callable[[], None],
        on_pids: Callable[[], None],
        ready_timeout_s: float = 180.0,
        max_crashes: int = 5,
        revision: str | None = None,
        health_timeout_s: float = HEALTH_TIMEOUT_MAX_S,
        health_interval_s: float = HEALTH_TIMEOUT_MAX_S,
        health_failures: int = HEALTH_FAILURES,
        adopt: Sequence[Adoptee] = (),
    ) -> None:
        self.name = name
        self.app = app
        self.workdir = workdir
        pythonpath = [str(workdir), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {
            **WORKER_DEFAULTS,
            **worker_environ(os.environ),
            **env,
            "PYTHONPATH": os.pathsep.join(pythonpath),
        }
        if (workdir / REVISION_DATA).is_dir():  # the data the revision was built with
            self.env["MANGAASSIST_DATA_DIR"] = str(workdir / REVISION_DATA)
        # the name the workers stamp on their answers (what readiness checks)
        self.revision = revision or self.env.get("MANGAASSIST_REVISION") or "dev"
        self.log_dir = log_dir
        self.on_change = on_change
        self.on_pids = on_pids
        self.ready_timeout_s = ready_timeout_s
        self.max_crashes = max_crashes
        self.health_timeout_s = health_timeout_s
        self.health_interval_s = health_interval_s
        self.health_failures = health_failures
        self.workers = [Worker(self, i, adopt[i] if i < len(adopt) else None) for i in range(replicas)]
        self.draining = False
        self.retired = False

    def start(self) -> None:
        for w in self.workers:
            w.task = asyncio.create_task(w.run(), name=f"worker-{self.name}-{w.index}")

    async def wait_settled(self, timeout_s: float) -> None:
        """Until every worker is READY or FAILED (or ``timeout_s``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(w.ready_event.wait() for w in self.workers)), timeout_s)

    def ready_ports(self) -> list[int]:
        return [w.port for w in self.workers if w.state is WorkerState.READY]

    def pids(self) -> list[int]:
        return [p for w in self.workers if (p := w.pid) is not None]

    def health(self) -> tuple[RevisionHealth, str | None]:
        if self.retired:
            return RevisionHealth.RETIRED, None
        if self.draining:
            return RevisionHealth.DRAINING, None
        states = [w.state for w in self.workers]
        ready = states.count(WorkerState.READY)
        if ready == len(states):
            return RevisionHealth.HEALTHY, None
        reasons = sorted({w.reason for w in self.workers if w.reason})
        reason = "; ".join(reasons) or None
        if all(s is WorkerState.FAILED for s in states):
            return RevisionHealth.UNHEALTHY, reason
        if (
            ready == 0
            and all(s is WorkerState.STARTING for s in states)
            and not any(w.restarts for w in self.workers)
        ):
            return RevisionHealth.STARTING, reason
        return RevisionHealth.DEGRADED, f"{ready}/{len(states)} workers ready" + (
            f"; {reason}" if reason else ""
        )

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers))
