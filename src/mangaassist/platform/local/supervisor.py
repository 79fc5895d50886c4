"""Worker processes of one revision: start, wait for ``/readyz``, restart on crash, give up.

The control plane creates one ``RevisionSupervisor`` per deployed revision. Each worker is
``python -m uvicorn <app> --factory`` on a free loopback port, run from the revision's unpacked
artifact (``PYTHONPATH``), in the control plane's process group so ``down`` can stop them all.
A worker that exits unexpectedly is restarted after a backoff (0.25 s, doubling, at most 5 s);
after ``max_crashes`` crashes in a row without a stable run it is FAILED and the revision is
UNHEALTHY. A worker that never becomes ready (timeout, or ``/readyz`` reporting a reason other
than loading) is FAILED with that reason. Every state change calls ``on_change`` so the control
plane can publish a new routing table (a worker that is not READY gets no traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from mangaassist.platform.compute import RevisionHealth, WorkerState, WorkerStatus

BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0
STABLE_AFTER_S = 30.0  # a worker ready this long before it crashes starts a new crash streak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """One worker process slot of a revision; ``run`` keeps it alive until ``stop``."""

    def __init__(self, sup: RevisionSupervisor, index: int) -> None:
        self.sup = sup
        self.index = index
        self.state = WorkerState.STARTING
        self.reason: str | None = None
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
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
        self.port = free_port()
        sup = self.sup
        log = sup.log_dir / f"{sup.name}-w{self.index}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start on port {self.port}\n".encode())
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "uvicorn", sup.app, "--factory",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning", "--no-access-log", "--timeout-keep-alive", "75",
                stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                env=sup.env, cwd=str(sup.workdir),
            )  # fmt: skip

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> str | None:
        """None once ``/readyz`` answers 200; else why it never will (the process stays as is)."""
        deadline = time.monotonic() + self.sup.ready_timeout_s
        last = "no answer on /readyz yet"
        url = f"http://127.0.0.1:{self.port}/readyz"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if proc.returncode is not None or self.stopping:
                    return "exited"
                try:
                    r = await client.get(url)
                    if r.status_code == 200:
                        return None
                    try:
                        last = str(r.json().get("reason") or f"/readyz answered {r.status_code}")
                    except ValueError:
                        last = f"/readyz answered {r.status_code}"
                    if not last.startswith("loading"):
                        return f"not ready: {last}"
                except httpx.HTTPError:
                    pass
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.1)
        return f"not ready after {self.sup.ready_timeout_s:g}s: {last}"

    async def run(self) -> None:
        backoff = BACKOFF_START_S
        while not self.stopping:
            self._set(WorkerState.STARTING)
            try:
                proc = self.proc = await self._spawn()
            except OSError as exc:
                self._set(WorkerState.FAILED, f"cannot start: {exc}")
                return
            self.sup.on_pids()
            problem = await self._wait_ready(proc)
            if self.stopping:
                break
            if problem is not None and problem != "exited":
                await self._terminate()
                self._set(WorkerState.FAILED, problem)
                return
            ready_at = time.monotonic()
            if problem is None:
                self._set(WorkerState.READY)
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
                self._set(
                    WorkerState.FAILED,
                    f"crashed {self.crash_streak} times in a row (last exit status {code})",
                )
                return
            self._set(WorkerState.RESTARTING, f"exited with status {code}; restarting in {backoff:g}s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        self._set(WorkerState.STOPPED)

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
    ) -> None:
        self.name = name
        self.app = app
        self.workdir = workdir
        pythonpath = [str(workdir), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(pythonpath)}
        self.log_dir = log_dir
        self.on_change = on_change
        self.on_pids = on_pids
        self.ready_timeout_s = ready_timeout_s
        self.max_crashes = max_crashes
        self.workers = [Worker(self, i) for i in range(replicas)]
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
