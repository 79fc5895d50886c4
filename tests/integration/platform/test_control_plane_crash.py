"""The control plane survives its own crash with traffic running: SIGKILLed during a canary (two
revisions split 80/20, a shadow and a drill fault), the routers keep serving with their last table
(they run in a process of their own), the next start adopts the running router host and workers
(same PIDs) with the same weights, no client request fails, the router's records go on (a judge's
cursor from before the crash still reads), and a clean stop stops everything and forgets the state."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from mangaassist.core.artifact import Artifact
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import Revision
from mangaassist.platform.local.client import (
    LocalCompute,
    _alive,
    read_pid,
    start_control_plane,
    stop_control_plane,
)
from mangaassist.platform.settings import PlatformSettings, load_settings
from tests.integration.platform.conftest import ROOT, TEST_APP, write_config

pytestmark = pytest.mark.slow


def _pids(compute: LocalCompute, service: str) -> set[int]:
    return {w.pid for r in compute.status(service).revisions for w in r.workers if w.pid}


def _started(tmp_path: Path) -> tuple[Path, PlatformSettings, LocalCompute, Artifact]:
    """A control plane with the service ``crashy`` (no revision yet), and the test workload's artifact."""
    config = write_config(tmp_path, ("crashy",))
    settings = load_settings("test", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=30)
    return (
        config,
        settings,
        LocalCompute(settings.run_dir),
        pack_source(ROOT / "src", settings.home / "artifacts"),
    )


class Traffic:
    """Clients sending chats to the router in a loop, each a conversation of its own, counting
    answers by status and by the revision that served them."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: Counter[int | str] = Counter()
        self.served: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        n = 0
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                n += 1
                try:
                    r = client.post(
                        f"{self.url}/v1/chat",
                        json={"message": "hi"},
                        headers={"X-Session-Id": f"c{index}-{n}"},
                    )
                    key: int | str = r.status_code
                    revision = r.headers.get("x-mangaassist-revision", "?")
                except httpx.HTTPError as exc:
                    key, revision = type(exc).__name__, "-"
                with self.lock:
                    self.statuses[key] += 1
                    self.served[revision] += 1
                time.sleep(0.005)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def total(self) -> int:
        with self.lock:
            return sum(self.statuses.values())


def test_a_killed_control_plane_is_adopted_back_with_traffic_running(tmp_path: Path) -> None:
    config, settings, compute, artifact = _started(tmp_path)
    state = settings.run_dir / "state.json"
    try:
        for name in ("r1", "r2"):
            compute.deploy(
                "crashy", Revision(name, artifact, TEST_APP, {"TESTAPP_INTENT": name}, 1), timeout_s=20
            )
        compute.set_weights("crashy", {"r1": 80.0, "r2": 20.0})
        compute.set_shadow("crashy", "r2", 0.5)
        compute.set_fault("crashy", status=503, share=1.0, paths=("/drill",))
        before = _pids(compute, "crashy")
        routers_before = compute.raw_status()["routers"]["pid"]
        assert len(before) == 2 and state.is_file() and _alive(routers_before)
        url = compute.url("crashy")

        with Traffic(url) as traffic:
            time.sleep(1.0)
            cursor_stats = compute.stats("crashy")
            cursor = int(cursor_stats["cursor"])
            plane = read_pid(settings.run_dir)
            assert plane is not None
            os.kill(plane, signal.SIGKILL)  # no shutdown: routers and workers are left running
            deadline = time.monotonic() + 10
            while _alive(plane) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(plane)
            served_while_down = traffic.total()
            time.sleep(2.0)  # nobody controls the platform: the routers serve on their own
            assert traffic.total() > served_while_down + 20
            assert all(_alive(p) for p in before) and _alive(routers_before)

            report = start_control_plane(settings, config, wait_s=60)
            assert report.status["bootstrap"] == {"crashy": "restored r1, r2 (adopted 2 running worker(s))"}
            compute.close()
            compute = LocalCompute(settings.run_dir)  # the new process's control API (control_port = 0)
            assert _pids(compute, "crashy") == before  # the same workers, adopted, not restarted
            raw = compute.raw_status()
            assert raw["routers"] == {"pid": routers_before, "adopted": True}
            assert compute.url("crashy") == url
            status = compute.status("crashy")
            assert {r.name: r.health.value for r in status.revisions} == {"r1": "healthy", "r2": "healthy"}
            assert dict(status.weights) == {"r1": 80.0, "r2": 20.0}
            assert raw["services"]["crashy"]["shadow"] == {"revision": "r2", "share": 0.5}
            assert raw["services"]["crashy"]["fault"] == {"status": 503, "share": 1.0, "paths": ["/drill"]}
            # the new control plane steers the same routers: the canary goes on to 50%
            compute.set_weights("crashy", {"r1": 50.0, "r2": 50.0})
            time.sleep(1.0)
            after = compute.stats("crashy", cursor)  # the judge's cursor from before the crash
            assert int(after["cursor"]) > cursor
        assert traffic.total() > 200
        assert set(traffic.statuses) == {200}, traffic.statuses  # not one failed request
        assert set(traffic.served) == {"r1", "r2"}
        assert after["routing"]["weights"] == {"r1": 50.0, "r2": 50.0}
        with httpx.Client(timeout=5) as client:
            assert client.get(f"{url}/drill").status_code == 503  # the drill's fault is still on
    finally:
        compute.close()
        down = stop_control_plane(settings)
    assert down.left == []
    assert routers_before in down.pids and not _alive(routers_before)
    assert not any(_alive(p) for p in before)
    assert not state.exists()  # a clean stop: the next start begins from first_revision again


def test_a_worker_that_died_with_the_control_plane_is_started_again(tmp_path: Path) -> None:
    """Adoption takes only what still serves: a worker killed while no control plane ran is
    replaced by a new one (another PID) and its revision is healthy again."""
    config, settings, compute, artifact = _started(tmp_path)
    try:
        compute.deploy("crashy", Revision("r1", artifact, TEST_APP, {}, 2), timeout_s=20)
        before = _pids(compute, "crashy")
        assert len(before) == 2
        plane = read_pid(settings.run_dir)
        assert plane is not None
        os.kill(plane, signal.SIGKILL)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (_alive(plane) or _alive(victim)) and time.monotonic() < deadline:
            time.sleep(0.05)
        report = start_control_plane(settings, config, wait_s=60)
        assert report.status["bootstrap"] == {"crashy": "restored r1 (adopted 1 running worker(s))"}
        compute.close()
        compute = LocalCompute(settings.run_dir)
        after = _pids(compute, "crashy")
        assert len(after) == 2 and after & before == before - {victim} and victim not in after
        assert [r.health.value for r in compute.status("crashy").revisions] == ["healthy"]
    finally:
        compute.close()
        down = stop_control_plane(settings)
    assert down.left == []


def test_a_router_host_that_dies_is_replaced_on_the_same_port_with_the_same_routing(tmp_path: Path) -> None:
    """The other way round: the router host SIGKILLed while its control plane runs. The control
    plane starts another on the same port (the workers' links name it) and publishes the same
    weights again; the workers keep running."""
    _, settings, compute, artifact = _started(tmp_path)
    try:
        for name in ("r1", "r2"):
            compute.deploy(
                "crashy", Revision(name, artifact, TEST_APP, {"TESTAPP_INTENT": name}, 1), timeout_s=20
            )
        compute.set_weights("crashy", {"r1": 70.0, "r2": 30.0})
        workers = _pids(compute, "crashy")
        old = compute.raw_status()["routers"]["pid"]
        url = compute.url("crashy")
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 30
        new = old
        while time.monotonic() < deadline:
            new = compute.raw_status()["routers"]["pid"]
            if new != old and _alive(new):
                break
            time.sleep(0.1)
        assert new != old and _alive(new)
        assert compute.url("crashy") == url and compute.raw_status()["services"]["crashy"]["url"] == url
        with httpx.Client(timeout=5) as client:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{url}/_router/stats").json()["routing"]["weights"]:
                        break
                time.sleep(0.1)
            served = Counter(
                client.post(
                    f"{url}/v1/chat", json={"message": "hi"}, headers={"X-Session-Id": f"s{i}"}
                ).json()["intent"]
                for i in range(40)
            )
        assert set(served) == {"r1", "r2"} and served["r1"] > served["r2"]
        assert _pids(compute, "crashy") == workers
        assert json.loads((settings.run_dir / "workers.json").read_text())["workers"]["routers"] == [new]
    finally:
        compute.close()
        down = stop_control_plane(settings)
    assert down.left == []
