"""The router host's decisions without its process: which tables it takes (only newer ones), what
it refuses (naming the field), its pools kept per worker port; and ``AdoptedProcess`` watching and
signalling a process that is not its child."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.local.router import Fault
from mangaassist.platform.local.router_host import RouterHost, fingerprint, table_spec
from mangaassist.platform.local.supervisor import AdoptedProcess
from mangaassist.platform.settings import PlatformSettings, ServiceSettings

APP = "mangaassist.platform.local.testing_app:create_app"


def _settings(tmp_path: Path, port: int = 0) -> PlatformSettings:
    return PlatformSettings(
        environment="test",
        provider="local",
        root=tmp_path,
        home=tmp_path / "home",
        control_port=0,
        services={"chat": ServiceSettings(name="chat", app=APP, router_port=port)},
    )


def test_only_a_newer_table_is_taken_and_pools_follow_the_ports(tmp_path: Path) -> None:
    host = RouterHost(_settings(tmp_path))
    first = table_spec(0, {"r1": [40001], "r2": [40002]}, {"r1": 90.0, "r2": 10.0}, "r2", 0.5, None)
    assert host.apply("chat", {**first, "version": 3}) == {"version": 3, "applied": True}
    table = host.routers["chat"].table
    assert table.version == 3 and dict(table.weights) == {"r1": 90.0, "r2": 10.0}
    assert table.shadow == "r2" and table.shadow_share == 0.5
    assert sorted(host.pools["chat"]) == [40001, 40002]
    pool = host.pools["chat"][40001]

    # a late retry of an older table never undoes a newer one
    stale = table_spec(0, {"r1": [40001]}, {"r1": 100.0}, None, 0.0, None)
    assert host.apply("chat", {**stale, "version": 2}) == {"version": 3, "applied": False}
    assert dict(host.routers["chat"].table.weights) == {"r1": 90.0, "r2": 10.0}

    fault = Fault(503, 1.0, ("/drill",))
    assert host.apply("chat", {**stale, "fault": fault.as_dict(), "version": 4})["applied"]
    table = host.routers["chat"].table
    assert dict(table.weights) == {"r1": 100.0} and table.fault == fault and table.shadow is None
    assert sorted(host.pools["chat"]) == [40001]  # r2's worker left: its pool is closed
    assert host.pools["chat"][40001] is pool  # a kept worker keeps its connections
    status = host.status()["services"]["chat"]
    assert status["version"] == 4 and status["in_flight"] == {}


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"targets": {}}, "KeyError"),  # no version
        ({"version": 1, "targets": ["r1"]}, "table.targets"),
        ({"version": 1, "targets": {"r1": [80]}, "weights": [100]}, "table.weights"),
        ({"version": 1, "targets": {"r1": [70000]}}, "out of range"),
        ({"version": 1, "targets": {"r1": ["x"]}}, "malformed routing table"),
        ({"version": 1, "fault": {"status": 200, "share": 1, "paths": ["/"]}}, "not an HTTP error status"),
    ],
)
def test_a_malformed_table_is_refused_naming_what_and_changes_nothing(
    tmp_path: Path, spec: dict[str, object], named: str
) -> None:
    host = RouterHost(_settings(tmp_path))
    with pytest.raises(ConfigError, match=named):
        host.apply("chat", spec)
    assert host.routers["chat"].table.version == 0


def test_an_unknown_service_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no service 'other' \\(have: chat\\)"):
        RouterHost(_settings(tmp_path)).apply("other", {"version": 1})


def test_the_fingerprint_changes_with_a_router_setting(tmp_path: Path) -> None:
    assert fingerprint(_settings(tmp_path, 8080)) == fingerprint(_settings(tmp_path, 8080))
    assert fingerprint(_settings(tmp_path, 8080)) != fingerprint(_settings(tmp_path, 8081))


async def test_an_adopted_process_is_watched_and_signalled_through_its_pidfd() -> None:
    # not started by asyncio: like a worker an earlier control plane started
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        adopted = AdoptedProcess(proc.pid)
        assert adopted.returncode is None
        waiter = asyncio.create_task(adopted.wait())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        adopted.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(waiter, 5) == -1  # not our child: its status is not ours
        assert adopted.returncode == -1
        with pytest.raises(ProcessLookupError):
            adopted.kill()  # never signals whatever reuses the PID
    finally:
        proc.kill()
        proc.wait()


async def test_adopting_a_process_that_is_gone_raises() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(ProcessLookupError):
        AdoptedProcess(proc.pid)


async def test_a_service_being_restored_refuses_changes_with_a_503_to_retry(tmp_path: Path) -> None:
    """While a crashed control plane's recorded state comes back, a change would be overwritten by
    it and a read would see half of it: the control API answers 503 ``retry`` (``LocalCompute``
    waits), except the routers' stats, which the routers kept."""
    from typing import Any, cast

    from mangaassist.platform.local.controlplane import ControlApi, ServiceRuntime
    from mangaassist.platform.local.serving import Unavailable

    svc = ServiceRuntime(ServiceSettings(name="chat", app=APP, router_port=0), cast(Any, None))
    svc.holding = True

    class _Plane:
        def service(self, name: str) -> ServiceRuntime:
            return svc

    api = ControlApi(cast(Any, _Plane()))
    with pytest.raises(Unavailable, match="service chat is being restored"):
        await api.handle("PUT", "/v1/services/chat/weights", b"", b'{"weights": {"r1": 100}}')
    with pytest.raises(Unavailable):
        await api.handle("GET", "/v1/services/chat/status", b"", b"")

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"weights": {"r1": 100}}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "PUT", "path": "/v1/services/chat/weights", "query_string": b""}
    await api(cast(Any, scope), cast(Any, receive), cast(Any, send))
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["retry"] is True
    assert svc.weights == {}  # nothing changed
