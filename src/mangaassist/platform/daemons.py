"""Background servers of the local platform, each announced by a state file under its home.

The config server (CD-06), the edge (CD-05) and the dashboard each run as a process of their own
(``python -m MODULE ...``, a new session, its output in ``HOME/NAME.log``). Once listening, the
process writes ``HOME/NAME.json`` (``url``, ``pid`` and anything else it wants known), replaced
atomically. A reader trusts that file only when the URL's ``/healthz`` answers and, if the answer
names a ``pid``, it is the announced one: a stale file or a PID reused by another program is never
taken for the server. ``stop`` signals the PID only when its command line still runs the module.

Provider-neutral (the import rule of ``docs/architecture.md`` lets any layer use it): it starts
and stops processes; what they serve is their module's business.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx


def state_file(home: Path, name: str) -> Path:
    return home / f"{name}.json"


def log_file(home: Path, name: str) -> Path:
    return home / f"{name}.log"


def announce(home: Path, name: str, url: str, **extra: Any) -> None:
    """Called by the server once it listens: ``HOME/NAME.json`` with its URL and PID."""
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{name}.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), **extra}))
    tmp.replace(state_file(home, name))


def announced(home: Path, name: str) -> dict[str, Any] | None:
    """What the state file says (``url``, ``pid``...), unchecked; None without a readable one."""
    try:
        data: dict[str, Any] = json.loads(state_file(home, name).read_text())
        int(data["pid"]), str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data


def running(home: Path, name: str) -> dict[str, Any] | None:
    """The announced state if the server answers ``/healthz`` as that process, else None."""
    state = announced(home, name)
    if state is None:
        return None
    try:
        answer = httpx.get(f"{state['url']}/healthz", timeout=1.0)
        answer.raise_for_status()
        with contextlib.suppress(ValueError):
            body = answer.json()
            if isinstance(body, dict) and "pid" in body and int(body["pid"]) != int(state["pid"]):
                return None
    except httpx.HTTPError:
        return None
    return state


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log, on one line (for an error message)."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "empty log"
    except OSError:
        return "no log"


def ensure(
    home: Path,
    name: str,
    module: str,
    args: Sequence[str],
    *,
    timeout: float = 15.0,
    error: type[Exception] = RuntimeError,
    detail: str = "",
) -> dict[str, Any]:
    """The running server's state, started in the background (``python -m module *args``) if none
    answers; ``error`` (with ``detail`` and the log's tail) if it exits or does not answer within
    ``timeout``."""
    state = running(home, name)
    if state is not None:
        return state
    home.mkdir(parents=True, exist_ok=True)
    # one starter at a time: two processes that both found none would otherwise both start one,
    # and the first, its announcement replaced by the second's, would run on unannounced, never stopped
    with (home / f".{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = running(home, name)  # started by the one that held the lock before us
        if state is not None:
            return state
        return _start(home, name, module, args, timeout, error, detail)


def _start(
    home: Path,
    name: str,
    module: str,
    args: Sequence[str],
    timeout: float,
    error: type[Exception],
    detail: str,
) -> dict[str, Any]:
    state_file(home, name).unlink(missing_ok=True)
    with log_file(home, name).open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = running(home, name)
        if state is not None:
            return state
        if proc.poll() is not None:
            raise error(
                f"the {name} exited with status {proc.returncode}{detail}: {tail(log_file(home, name))}"
            )
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise error(f"the {name} did not start within {timeout:.0f}s{detail}: {tail(log_file(home, name))}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists, and is not a zombie (a child that exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def runs_module(pid: int, module: str, *args: str) -> bool:
    """Whether ``pid`` runs ``module`` (a stale state file may name a PID reused by another), with
    each of ``args`` among its arguments (a state directory: another environment's is not ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    parts = cmdline.split(b"\0")
    return module.encode() in cmdline and all(arg.encode() in parts for arg in args)


def terminate(pid: int, module: str, *args: str, timeout: float = 10.0) -> bool:
    """SIGTERM ``pid`` if it runs ``module`` with ``args`` (``runs_module``), wait until it does not
    (reaping it if it is our child), SIGKILL after ``timeout``; whether it was signalled."""
    if not runs_module(pid, module, *args):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not runs_module(pid, module, *args):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def stop(home: Path, name: str, module: str, timeout: float = 10.0) -> bool:
    """Stop the announced server (SIGTERM, then SIGKILL); False if none was running."""
    state = announced(home, name)
    if state is None:
        return False
    stopped = terminate(int(state["pid"]), module, timeout=timeout)
    state_file(home, name).unlink(missing_ok=True)
    return stopped
