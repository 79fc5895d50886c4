"""``LocalCompute`` (the ``Compute`` protocol over the control API) and the control plane's life:
``start_control_plane`` (what ``mangaassist up`` does) and ``stop_control_plane`` (``down``).

Used by ``platform.factory``, the CLI and the tests; it finds the running control plane through
``$MANGAASSIST_HOME/platform/controlplane.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.platform import daemons
from mangaassist.platform.compute import (
    PIN_HEADER,
    NotRunning,
    Pin,
    Revision,
    RevisionHealth,
    RevisionStatus,
    ServiceStatus,
    Shadow,
)
from mangaassist.platform.local.controlplane import PID_FILE, RUNTIME_FILE, STATE_FILE, WORKERS_FILE
from mangaassist.platform.settings import PlatformSettings

RECONNECT_S = 120.0
"""How long a call waits for a crashed control plane to be restarted (``LocalCompute._reconnect``)."""


def _alive(pid: int) -> bool:
    """``platform.daemons.alive``: running, and not a zombie."""
    return daemons.alive(pid)
    # a zombie child of ours is not running any more
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def read_pid(run_dir: Path) -> int | None:
    try:
        pid = int((run_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def read_runtime(run_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((run_dir / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if _alive(int(data.get("pid", 0))) else None


class LocalCompute:
    """``Compute`` on the local platform: every call goes to the control plane's API."""

    def __init__(self, run_dir: Path, timeout_s: float = 60.0, reconnect_s: float = RECONNECT_S) -> None:
        self.run_dir = run_dir
        runtime = read_runtime(run_dir)
        if runtime is None:
            raise NotRunning(f"no control plane runs for {run_dir.parent} (run `mangaassist up`)")
        self.runtime = runtime
        self.control_url = str(runtime["control_url"])
        self.reconnect_s = reconnect_s
        self._http = httpx.Client(base_url=self.control_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def _reconnect(self, method: str, exc: httpx.HTTPError, waited_s: float) -> bool:
        """After ``exc``: whether to call again, once a control plane answers (maybe a new one, on
        another port). Only while the control plane called is dead after a crash (its
        ``state.json`` stays: a clean stop removes it) and within ``reconnect_s``; a request that
        may have reached it is repeated only when repeating it is safe (not a POST)."""
        if waited_s >= self.reconnect_s or not (self.run_dir / STATE_FILE).exists():
            return False
        if _alive(int(self.runtime.get("pid") or 0)):
            return False  # it runs and did not answer: not a crash, and waiting would not help
        if method == "POST" and not isinstance(exc, httpx.ConnectError):
            return False
        runtime = read_runtime(self.run_dir)  # a new control plane's, once it listens
        if runtime is not None and runtime.get("pid") != self.runtime.get("pid"):
            self.runtime = runtime
            if str(runtime["control_url"]) != self.control_url:
                self.control_url = str(runtime["control_url"])
                timeout = self._http.timeout
                self._http.close()
                self._http = httpx.Client(base_url=self.control_url, timeout=timeout)
        return True

    def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        started = time.monotonic()
        warned = False
        while True:
            try:
                r = self._http.request(method, path, json=body, timeout=timeout or self._http.timeout)
                if r.status_code == 503 and time.monotonic() - started < self.reconnect_s:
                    with contextlib.suppress(ValueError):
                        if r.json().get("retry"):  # a service being restored after a crash
                            time.sleep(0.2)
                            continue
                break
            except httpx.HTTPError as exc:
                if not self._reconnect(method, exc, time.monotonic() - started):
                    raise NotRunning(
                        f"the control plane at {self.control_url} does not answer: {exc}"
                    ) from None
                if not warned:
                    warned = True
                    print(
                        f"the control plane at {self.control_url} does not answer ({exc}); it crashed and "
                        f"is not back yet: waiting up to {self.reconnect_s:g}s for `mangaassist up` to "
                        "restart it",
                        file=sys.stderr,
                    )
                time.sleep(0.2)
        data = r.json()
        if r.status_code == 404:
            raise NotFoundError(data.get("error", r.text))
        if r.status_code >= 400:
            raise (ConfigError if r.status_code == 400 else MangaAssistError)(data.get("error", r.text))
        return data

    def deploy(self, service: str, revision: Revision, *, timeout_s: float = 180.0) -> RevisionStatus:
        body = {"revision": revision.as_dict(), "timeout_s": timeout_s}
        data = self._call("POST", f"/v1/services/{service}/deploy", body, timeout=timeout_s + 30)
        return RevisionStatus.from_dict(data)

    def set_weights(self, service: str, weights: Mapping[str, float]) -> Mapping[str, float]:
        data = self._call("PUT", f"/v1/services/{service}/weights", {"weights": dict(weights)})
        return dict(data["weights"])

    def set_shadow(self, service: str, revision: str, share: float) -> Shadow:
        self._call("PUT", f"/v1/services/{service}/shadow", {"revision": revision, "share": share})
        return Shadow(revision, share)

    def clear_shadow(self, service: str) -> None:
        self._call("DELETE", f"/v1/services/{service}/shadow")

    def set_fault(
        self, service: str, *, status: int = 503, share: float = 1.0, paths: tuple[str, ...] = ("/v1/chat",)
    ) -> dict[str, Any]:
        """A drill: the service's router answers ``status`` to ``share`` of the requests to ``paths``
        (every revision alike) until ``clear_fault``. Local platform only."""
        body = {"status": status, "share": share, "paths": list(paths)}
        return dict(self._call("PUT", f"/v1/services/{service}/fault", body)["fault"])

    def clear_fault(self, service: str) -> None:
        self._call("DELETE", f"/v1/services/{service}/fault")

    def pin(self, service: str, revision: str) -> Pin:
        """The service's router and ``X-MangaAssist-Revision: NAME`` (the router honours it)."""
        names = {r.name for r in self.status(service).revisions if r.health is not RevisionHealth.RETIRED}
        if revision not in names:
            raise NotFoundError(f"service {service} has no live revision {revision!r}")
        return Pin(self.url(service), {PIN_HEADER: revision})

    def retire(
        self, service: str, revision: str, *, drain_timeout_s: float = 30.0, last: bool = False
    ) -> RevisionStatus:
        path = f"/v1/services/{service}/revisions/{revision}/retire"
        body = {"drain_timeout_s": drain_timeout_s, "last": last}
        data = self._call("POST", path, body, timeout=drain_timeout_s + 30)
        return RevisionStatus.from_dict(data)

    def raw_status(self) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", "/v1/status")
        return data

    def status(self, service: str) -> ServiceStatus:
        # the service's own status: while it is being restored after a crash, a 503 to retry
        svc: dict[str, Any] = self._call("GET", f"/v1/services/{service}/status")
        shadow = svc.get("shadow")
        return ServiceStatus(
            name=service,
            url=svc["url"],
            revisions=tuple(RevisionStatus.from_dict(r) for r in svc["revisions"]),
            weights=dict(svc["weights"]),
            shadow=Shadow(shadow["revision"], float(shadow["share"])) if shadow else None,
        )

    def services(self) -> list[str]:
        return sorted(self.raw_status()["services"])

    def stats(self, service: str, cursor: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", f"/v1/services/{service}/stats?cursor={cursor}")
        return data

    def alerts(self, service: str | None = None) -> list[dict[str, Any]]:
        """Alerts firing now (Alertmanager's webhook to the control plane), of one service if given."""
        query = f"?service={service}" if service else ""
        data: dict[str, Any] = self._call("GET", f"/v1/alerts{query}")
        return list(data.get("alerts", []))

    def url(self, service: str) -> str:
        urls = self.runtime.get("services", {})
        if service not in urls:
            raise NotFoundError(f"no service {service!r}")
        return str(urls[service])


@dataclass
class UpReport:
    already_running: bool
    pid: int
    control_url: str
    services: dict[str, str]
    status: dict[str, Any] = field(default_factory=dict)


def start_control_plane(
    settings: PlatformSettings,
    config_path: Path,
    *,
    wait_s: float = 240.0,
    extra_env: Mapping[str, str] | None = None,
) -> UpReport:
    """Start the control plane in the background unless it runs; return once every service is ready.

    Raises with the reason (and the log's tail) if it exits or a service's first revision fails.
    """
    run_dir = settings.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    already = read_pid(run_dir) is not None
    if not already:
        # a control plane that crashed left its runtime file: never mistake it for the new one's
        (run_dir / RUNTIME_FILE).unlink(missing_ok=True)
        log_path = run_dir / "controlplane.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "mangaassist.platform.local.controlplane",
                    "--env", settings.environment, "--config", str(config_path), "--home", str(settings.home),
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(extra_env or {})},
                start_new_session=True,  # its own process group: `down` can stop it and every worker
                cwd=str(settings.root),
            )  # fmt: skip
    else:
        proc = None
    deadline = time.monotonic() + wait_s
    runtime: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise MangaAssistError(
                f"the control plane exited with status {proc.returncode}: {_tail(run_dir)}"
            )
        runtime = read_runtime(run_dir)
        if runtime is not None:
            break
        time.sleep(0.05)
    if runtime is None:
        raise MangaAssistError(f"the control plane did not start within {wait_s:g}s: {_tail(run_dir)}")
    compute = LocalCompute(run_dir)
    try:
        while True:
            status = compute.raw_status()
            pending = {
                k: v for k, v in status["bootstrap"].items() if v in ("deploying", "starting", "restoring")
            }
            if not pending:
                break
            if time.monotonic() > deadline:
                raise MangaAssistError(f"not ready within {wait_s:g}s: {pending}")
            time.sleep(0.2)
    finally:
        compute.close()
    failed = {  # after a crash, "restored r1, r2" (control plane docstring) is a success too
        k: v
        for k, v in status["bootstrap"].items()
        if v != RevisionHealth.HEALTHY.value and not (v.startswith("restored ") and "failed" not in v)
    }
    if failed:
        reasons = []
        for name in failed:
            for rev in status["services"][name]["revisions"]:
                reasons.append(f"{name}/{rev['name']}: {rev['health']} ({rev['reason']})")
        raise MangaAssistError(
            "the control plane runs, but not every service is ready: "
            + ("; ".join(reasons) or str(failed))
            + " (see `mangaassist status`; `mangaassist down` stops it)"
        )
    return UpReport(
        already, int(runtime["pid"]), str(runtime["control_url"]), dict(runtime["services"]), status
    )


def _tail(run_dir: Path, lines: int = 5) -> str:
    try:
        text = (run_dir / "controlplane.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:])


@dataclass
class DownReport:
    was_running: bool
    pids: list[int]
    """Every PID that ran (control plane first, then its workers)."""
    killed: list[int]
    """PIDs that did not stop gracefully and were sent SIGKILL."""
    left: list[int]
    """PIDs still alive afterwards (should be empty)."""


def _worker_pids(run_dir: Path) -> list[int]:
    try:
        data = json.loads((run_dir / WORKERS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [int(p) for pids in data.get("workers", {}).values() for p in pids]


def stop_control_plane(settings: PlatformSettings, timeout_s: float = 30.0) -> DownReport:
    """Stop the control plane and all its children; verify each PID is gone."""
    run_dir = settings.run_dir
    pid = read_pid(run_dir)
    workers = [p for p in _worker_pids(run_dir) if _alive(p)]
    if pid is None and not workers:
        for name in (PID_FILE, RUNTIME_FILE):
            with contextlib.suppress(OSError):
                (run_dir / name).unlink()
        return DownReport(False, [], [], [])
    pids = ([pid] if pid else []) + workers
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # graceful: workers get SIGTERM, then the plane exits
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    killed = []
    for p in pids:
        if _alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
                killed.append(p)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # anything else left in its process group
    time.sleep(0.05 if killed else 0)
    left = [p for p in pids if _alive(p)]
    for name in (PID_FILE, RUNTIME_FILE):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink()
    return DownReport(True, pids, killed, left)
