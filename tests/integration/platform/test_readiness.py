"""Readiness counts only the process the supervisor started, on a port nobody else can take.

``check_ready`` against real HTTP servers on loopback (one answering as another revision, another
process, or without a stamp), then the same through the real control plane: a worker that answers
as another revision never gets traffic, a ready worker's port is served by the worker's own pid,
workers inherit only the allow-list, and a live name is not reused for another environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mangaassist.core.errors import MangaAssistError
from mangaassist.platform.compute import RevisionHealth, WorkerState
from mangaassist.platform.local.supervisor import check_ready
from tests.integration.platform.conftest import NOT_INHERITED, PASSED_BY_NAME, Plane
from tests.standin import StandIn, serving

pytestmark = pytest.mark.slow


@contextmanager
def answering(status: int, headers: dict[str, str], body: bytes = b'{"ready": true}') -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering every GET with ``status`` and ``headers``."""

    class Handler(StandIn):
        def do_GET(self) -> None:
            self.reply(status, body, headers=headers)

    with serving(Handler) as url:
        yield f"{url}/readyz"


async def test_an_answer_stamped_by_another_revision_is_never_ready() -> None:
    with answering(200, {"X-MangaAssist-Revision": "r1", "X-MangaAssist-Pid": "4242"}) as url:
        async with httpx.AsyncClient(timeout=2.0) as client:
            check = await check_ready(client, url, "r2", 4242)
            assert not check.ready and check.final
            assert (
                check.reason is not None
                and "'r1'" in check.reason
                and "expected revision 'r2'" in check.reason
            )
            same = await check_ready(client, url, "r1", 4242)
            assert same.ready and same.reason is None


async def test_an_answer_from_another_process_of_the_same_revision_is_never_ready() -> None:
    with answering(200, {"X-MangaAssist-Revision": "r1", "X-MangaAssist-Pid": "4242"}) as url:
        async with httpx.AsyncClient(timeout=2.0) as client:
            check = await check_ready(client, url, "r1", 999_999)
    assert not check.ready and check.final
    assert check.reason is not None and "pid 4242" in check.reason and "pid 999999" in check.reason


async def test_a_200_without_a_stamp_is_never_ready() -> None:
    with answering(200, {}) as url:
        async with httpx.AsyncClient(timeout=2.0) as client:
            check = await check_ready(client, url, "r1", 1)
    assert not check.ready and check.final
    assert check.reason is not None and "without X-MangaAssist-Revision" in check.reason


async def test_loading_is_waited_for_and_other_reasons_are_final() -> None:
    stamp = {"X-MangaAssist-Revision": "r1"}
    async with httpx.AsyncClient(timeout=2.0) as client:
        with answering(503, stamp, b'{"reason": "loading model, index and config"}') as url:
            loading = await check_ready(client, url, "r1", 1)
        with answering(503, stamp, b'{"reason": "index version kb-42 missing"}') as url:
            broken = await check_ready(client, url, "r1", 1)
        with answering(503, {"X-MangaAssist-Revision": "r0"}, b'{"reason": "loading"}') as url:
            impostor = await check_ready(client, url, "r1", 1)
    assert (loading.ready, loading.final, loading.reason) == (False, False, "loading model, index and config")
    assert (broken.ready, broken.final, broken.reason) == (False, True, "index version kb-42 missing")
    assert not impostor.ready and impostor.final  # someone else's "loading" is not ours


def test_a_worker_answering_as_another_revision_gets_no_traffic(plane: Plane) -> None:
    c = plane.compute
    good = c.deploy("stamp", plane.revision("good"))
    assert good.health is RevisionHealth.HEALTHY
    liar = c.deploy("stamp", plane.revision("liar", TESTAPP_STAMP_REVISION="good"), timeout_s=20)
    assert liar.health is RevisionHealth.UNHEALTHY
    assert liar.workers[0].state is WorkerState.FAILED
    assert (
        liar.reason is not None
        and "revision 'good'" in liar.reason
        and "expected revision 'liar'" in liar.reason
    )
    c.set_weights("stamp", {"good": 50, "liar": 50})
    url = plane.url("stamp")
    with httpx.Client(timeout=5) as client:
        served = {
            client.post(f"{url}/v1/chat", json={}, headers={"X-Session-Id": f"l{i}"}).json()["revision"]
            for i in range(40)
        }
        pinned = client.post(f"{url}/v1/chat", json={}, headers={"X-MangaAssist-Revision": "liar"})
    c.set_weights("stamp", {"good": 100})
    assert served == {"good"}
    assert pinned.status_code == 404  # not routable even by pin


def test_the_ready_port_is_served_by_the_workers_own_process(plane: Plane) -> None:
    c = plane.compute
    status = c.deploy("stamp", plane.revision("own", replicas=2))
    assert status.health is RevisionHealth.HEALTHY
    ports = {w.port for w in status.workers}
    assert len(ports) == 2
    with httpx.Client(timeout=5) as client:
        for w in status.workers:
            r = client.get(f"http://127.0.0.1:{w.port}/readyz")
            assert r.headers["x-mangaassist-revision"] == "own"
            assert r.headers["x-mangaassist-pid"] == str(w.pid)


def test_workers_inherit_only_the_allow_list(plane: Plane) -> None:
    c = plane.compute
    status = c.deploy("stamp", plane.revision("env-check", TESTAPP_INTENT="recommendation"))
    pid = status.workers[0].pid
    assert pid is not None
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    for name in NOT_INHERITED:
        assert name not in env
    # asked for by name in the service's settings: the value reaches the worker, never the record
    assert env["OPENAI_API_KEY"] == PASSED_BY_NAME["OPENAI_API_KEY"]
    assert PASSED_BY_NAME["OPENAI_API_KEY"] not in json.dumps(c.raw_status())
    assert env["MANGAASSIST_ENV"] == "test" and env["MANGAASSIST_PROVIDER"] == "local"
    assert env["MANGAASSIST_REVISION"] == "env-check"
    assert env["TESTAPP_INTENT"] == "recommendation"  # the revision's own env
    assert env["MANGAASSIST_HOME"] == str(plane.settings.home)
    assert env["PATH"] == os.environ["PATH"]  # the allow-list, from the control plane's environment
    assert env["PYTHONPATH"].split(os.pathsep)[0].endswith(plane.artifact.digest)


def test_a_live_name_is_not_reused_for_another_environment(plane: Plane) -> None:
    c = plane.compute
    first = c.deploy("stamp", plane.revision("same-name", TESTAPP_INTENT="recommendation"))
    again = c.deploy("stamp", plane.revision("same-name", TESTAPP_INTENT="recommendation"))
    assert (again.health, again.workers[0].pid) == (first.health, first.workers[0].pid)  # idempotent
    with pytest.raises(MangaAssistError) as err:
        c.deploy("stamp", plane.revision("same-name", TESTAPP_INTENT="order_status"))
    assert "revision same-name of stamp" in str(err.value) and "TESTAPP_INTENT differs" in str(err.value)
    with pytest.raises(MangaAssistError, match="TESTAPP_DELAY_MS not set on the live revision"):
        c.deploy("stamp", plane.revision("same-name", TESTAPP_INTENT="recommendation", TESTAPP_DELAY_MS="9"))
