"""The control plane survives its own crash: SIGKILLed with two revisions split 60/40, a shadow and a
drill fault, the next start stops what it left behind and puts every revision, weight, shadow and
fault back (``state.json``); a clean stop forgets them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import Revision
from mangaassist.platform.local.client import (
    LocalCompute,
    _alive,
    read_pid,
    start_control_plane,
    stop_control_plane,
)
from mangaassist.platform.settings import load_settings
from tests.integration.platform.conftest import ROOT, TEST_APP, write_config

pytestmark = pytest.mark.slow


def _pids(compute: LocalCompute, service: str) -> set[int]:
    return {w.pid for r in compute.status(service).revisions for w in r.workers if w.pid}


def test_a_killed_control_plane_comes_back_with_its_revisions_weights_shadow_and_fault(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, ("crashy",))
    settings = load_settings("test", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=30)
    compute = LocalCompute(settings.run_dir)
    artifact = pack_source(ROOT / "src", settings.home / "artifacts")
    state = settings.run_dir / "state.json"
    try:
        for name in ("r1", "r2"):
            compute.deploy(
                "crashy", Revision(name, artifact, TEST_APP, {"TESTAPP_INTENT": name}, 1), timeout_s=20
            )
        compute.set_weights("crashy", {"r1": 60.0, "r2": 40.0})
        compute.set_shadow("crashy", "r2", 0.5)
        compute.set_fault("crashy", status=503, share=1.0, paths=("/drill",))
        before = _pids(compute, "crashy")
        assert len(before) == 2 and state.is_file()

        plane = read_pid(settings.run_dir)
        assert plane is not None
        os.kill(plane, signal.SIGKILL)  # no shutdown: its workers are left running, orphaned
        deadline = time.monotonic() + 10
        while _alive(plane) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(plane)
        assert any(_alive(p) for p in before)  # the orphans the next start has to stop

        report = start_control_plane(settings, config, wait_s=60)
        assert report.status["bootstrap"] == {"crashy": "restored r1, r2"}
        compute.close()
        compute = LocalCompute(settings.run_dir)  # the new process's control API (control_port = 0)
        assert not any(_alive(p) for p in before)  # the orphans were stopped, not adopted
        status = compute.status("crashy")
        assert {r.name: r.health.value for r in status.revisions} == {"r1": "healthy", "r2": "healthy"}
        assert dict(status.weights) == {"r1": 60.0, "r2": 40.0}
        raw = compute.raw_status()["services"]["crashy"]
        assert raw["shadow"] == {"revision": "r2", "share": 0.5}
        assert raw["fault"] == {"status": 503, "share": 1.0, "paths": ["/drill"]}
        url = compute.url("crashy")
        with httpx.Client(timeout=5) as client:
            served = {
                client.post(
                    f"{url}/v1/chat", json={"message": "hi"}, headers={"X-Session-Id": f"s{i}"}
                ).json()["intent"]
                for i in range(30)
            }
            assert served == {"r1", "r2"}  # both revisions answer again, by weight
            assert client.get(f"{url}/drill").status_code == 503  # the drill's fault is back too
    finally:
        compute.close()
        report = stop_control_plane(settings)
    assert report.left == []
    assert not state.exists()  # a clean stop: the next start begins from first_revision again
