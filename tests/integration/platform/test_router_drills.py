"""Drills for the router's limits: workers that stall mid-body, never answer, hang or die, and bodies
too large, against real worker processes on loopback (a control plane of this module's own, with
short limits), while a healthy revision and another service keep being served alongside.

The misbehaviour comes from ``testing_app`` (``/stall-body``, ``/never``, ``/hang``, ``/crash``);
the upstream client's retry rules are drilled against a raw asyncio server started by the test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mangaassist.platform.compute import PIN_HEADER, WorkerState
from mangaassist.platform.local.client import LocalCompute, start_control_plane, stop_control_plane
from mangaassist.platform.local.upstream import UpstreamError, UpstreamPool
from mangaassist.platform.metrics import RequestOutcome
from mangaassist.platform.settings import load_settings
from tests.integration.platform.conftest import ROOT, TEST_APP, Plane

pytestmark = pytest.mark.slow

CONNECT_TIMEOUT_S = 0.5
RESPONSE_TIMEOUT_S = 1.0
IDLE_READ_TIMEOUT_S = 1.0
MAX_BODY_BYTES = 1 << 20
SERVICES = ("stall", "never", "hung", "die", "body", "other", "fault", "slow")
CLIENT_BODY_TIMEOUT_S = 1.0
QUICK_S = 0.5
"""What a healthy request may take while another one is held by a misbehaving worker."""
T = TypeVar("T")


def _write_config(directory: Path) -> Path:
    lines = ["[environments.drill]", 'provider = "local"', 'home = "home"', "control_port = 0"]
    for name in SERVICES:
        lines += [
            f"[environments.drill.services.{name}]",
            f'app = "{TEST_APP}"',
            "router_port = 0",
            "ready_timeout_s = 20",
            f"connect_timeout_s = {CONNECT_TIMEOUT_S}",
            f"response_timeout_s = {RESPONSE_TIMEOUT_S}",
            f"idle_read_timeout_s = {IDLE_READ_TIMEOUT_S}",
            f"max_body_bytes = {MAX_BODY_BYTES}",
            *([f"client_body_timeout_s = {CLIENT_BODY_TIMEOUT_S}"] if name == "slow" else []),
        ]
    path = directory / "mangaassist.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    from mangaassist.platform.artifacts import pack_source

    directory = tmp_path_factory.mktemp("drills")
    config = _write_config(directory)
    settings = load_settings("drill", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=30)
    compute = LocalCompute(settings.run_dir)
    artifact = pack_source(ROOT / "src", settings.home / "artifacts")
    plane = Plane(settings, compute, artifact)
    try:
        compute.deploy("other", plane.revision("r1"))
        yield plane
    finally:
        compute.close()
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left after stop: {report.left}"


def _pin(revision: str) -> dict[str, str]:
    return {PIN_HEADER: revision}


async def _alongside(
    bad: Coroutine[Any, Any, T], client: httpx.AsyncClient, plane: Plane, service: str
) -> tuple[T, list[float]]:
    """Run ``bad`` while healthy requests go, one after another until it is done, alternately to
    revision ``good`` of the same router (pinned) and to another service's router: ``bad``'s result
    and the durations of the healthy requests that finished while it ran (each a 200; at least 1)."""
    task = asyncio.ensure_future(bad)
    targets = itertools.cycle(((plane.url(service), _pin("good")), (plane.url("other"), {})))
    took: list[float] = []
    await asyncio.sleep(0.01)  # the bad request is on its way
    while not task.done():
        url, headers = next(targets)
        t0 = time.perf_counter()
        r = await client.post(f"{url}/v1/chat", json={"message": "hi"}, headers=headers)
        assert r.status_code == 200, r.text
        if not task.done():
            took.append(time.perf_counter() - t0)
        await asyncio.sleep(0.01)
    assert took, "no healthy request finished alongside"
    return await task, took


def _limits(plane: Plane, service: str, revision: str) -> dict[str, int]:
    return dict(plane.compute.stats(service)["revisions"][revision]["limits"])


def _metric(plane: Plane, service: str, family: str, **labels: str) -> float:
    text = httpx.get(f"{plane.url(service)}/_router/metrics", timeout=5).text
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            for sample in fam.samples:
                if sample.name.endswith("_total") and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
    return 0.0


def _wait(predicate: object, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"condition not reached within {timeout_s}s")


def test_a_worker_that_stalls_mid_body_gets_the_client_connection_closed_and_counted(drill: Plane) -> None:
    c = drill.compute
    c.deploy("stall", drill.revision("bad"))
    c.deploy("stall", drill.revision("good"))
    url = drill.url("stall")
    cursor = c.stats("stall")["cursor"]

    async def stalled(client: httpx.AsyncClient) -> tuple[int, bytes, float, str]:
        received = b""
        async with client.stream("GET", f"{url}/stall-body?s=5", headers=_pin("bad")) as r:
            t_headers = time.perf_counter()
            try:
                async for chunk in r.aiter_raw():
                    received += chunk
            except httpx.HTTPError as exc:  # the router closed the connection mid-body
                return r.status_code, received, time.perf_counter() - t_headers, type(exc).__name__
        raise AssertionError(f"the stalled body ended normally: {received!r}")

    async def run() -> tuple[tuple[int, bytes, float, str], list[float]]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await _alongside(stalled(client), client, drill, "stall")

    (status, received, closed_after, error), healthy = asyncio.run(run())
    assert status == 200, error  # sent before the stall: it cannot change
    assert received.startswith(b"the first part")
    assert IDLE_READ_TIMEOUT_S - 0.1 <= closed_after <= IDLE_READ_TIMEOUT_S + 1, closed_after
    assert max(healthy) < QUICK_S, healthy
    assert _limits(drill, "stall", "bad")["idle_timeout"] == 1
    stats = c.stats("stall", cursor)
    assert stats["revisions"]["bad"]["transport_errors"] == {"timeout_midstream": 1}
    [outcome] = [RequestOutcome.from_dict(o) for o in stats["observations"] if o["revision"] == "bad"]
    assert outcome.failed and outcome.error == "timeout_midstream" and outcome.status == 200
    assert _metric(drill, "stall", "mangaassist_router_limits", revision="bad", limit="idle_timeout") == 1
    with httpx.Client(timeout=5) as client:  # the worker serves on
        assert client.get(f"{url}/echo", headers=_pin("bad")).json() == {"revision": "bad"}


def test_a_worker_that_never_answers_gets_a_504_naming_the_revision_and_counted(drill: Plane) -> None:
    c = drill.compute
    c.deploy("never", drill.revision("bad"))
    c.deploy("never", drill.revision("good"))
    c.set_weights("never", {"bad": 100})  # not pinned: the judges count it
    url = drill.url("never")
    cursor = c.stats("never")["cursor"]

    async def never(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
        t0 = time.perf_counter()
        r = await client.get(f"{url}/never?s=5")
        return r, time.perf_counter() - t0

    async def run() -> tuple[tuple[httpx.Response, float], list[float]]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await _alongside(never(client), client, drill, "never")

    (r, took), healthy = asyncio.run(run())
    assert r.status_code == 504
    assert RESPONSE_TIMEOUT_S - 0.1 <= took <= RESPONSE_TIMEOUT_S + 1, took
    assert r.headers["x-mangaassist-revision"] == "bad"
    assert r.headers["x-mangaassist-router-error"] == "1"
    assert r.json()["timeout"] == "response_timeout_s" and r.json()["revision"] == "bad"
    assert max(healthy) < QUICK_S, healthy
    assert _limits(drill, "never", "bad")["response_timeout"] == 1
    stats = c.stats("never", cursor)
    [outcome] = [RequestOutcome.from_dict(o) for o in stats["observations"] if o["revision"] == "bad"]
    assert outcome.failed and outcome.error == "timeout" and outcome.status == 0 and not outcome.pinned
    assert _metric(drill, "never", "mangaassist_router_requests", revision="bad", status="504") == 1
    assert _metric(drill, "never", "mangaassist_router_limits", revision="bad", limit="response_timeout") == 1


def test_a_hung_worker_times_out_connections_and_requests_and_is_restarted(drill: Plane) -> None:
    """``/hang`` blocks the worker's event loop; with ``backlog=0`` its accept queue fills at once.
    Requests already connected time out on the response, new connections on the connect; its
    ``/healthz`` stops answering and the supervisor replaces the process."""
    c = drill.compute
    c.deploy("hung", drill.revision("bad"))
    c.deploy("hung", drill.revision("good"))
    url = drill.url("hung")
    worker = c.status("hung").revisions[0].workers[0]
    assert worker.pid is not None and worker.port
    fillers: list[socket.socket] = []

    async def hang_and_connect(
        client: httpx.AsyncClient,
    ) -> tuple[httpx.Response, float, httpx.Response, float]:
        t0 = time.perf_counter()
        first = await client.post(f"{url}/hang?s=60&backlog=0", headers=_pin("bad"))
        took_first = time.perf_counter() - t0
        for _ in range(4):  # fill the (now one-place) accept queue the blocked worker never empties
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", worker.port))
            fillers.append(s)
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        second = await client.get(f"{url}/echo", headers=_pin("bad"))
        return first, took_first, second, time.perf_counter() - t0

    async def run() -> tuple[tuple[httpx.Response, float, httpx.Response, float], list[float]]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await _alongside(hang_and_connect(client), client, drill, "hung")

    started = time.monotonic()
    (first, took_first, second, took_second), healthy = asyncio.run(run())
    assert first.status_code == 504 and first.json()["timeout"] == "response_timeout_s"
    assert took_first <= RESPONSE_TIMEOUT_S + 1, took_first
    assert second.status_code == 504, second.text
    assert second.json()["timeout"] == "connect_timeout_s"
    assert second.headers["x-mangaassist-revision"] == "bad"
    assert took_second <= CONNECT_TIMEOUT_S + 1, took_second
    assert max(healthy) < QUICK_S, healthy
    limits = _limits(drill, "hung", "bad")
    assert limits["response_timeout"] == 1 and limits["connect_timeout"] == 1

    def replaced() -> bool:
        w = c.status("hung").revisions[0].workers[0]
        return w.state is WorkerState.READY and w.pid not in (None, worker.pid)

    try:
        # liveness: 1 s apart, 3 misses of 1 s, the kill (1 s of grace), the restart
        _wait(replaced, timeout_s=15)
    finally:
        for s in fillers:
            s.close()
    detected_after = time.monotonic() - started
    after = c.status("hung").revisions[0].workers[0]
    assert after.restarts == 1
    log = (drill.settings.run_dir / "controlplane.log").read_text()
    assert "is hung: /healthz gave no answer within 1s 3 times in a row" in log
    with httpx.Client(timeout=5) as client:
        assert client.get(f"{url}/echo", headers=_pin("bad")).json() == {"revision": "bad"}
    assert detected_after < 15


def test_a_worker_that_dies_between_requests_costs_no_hang(drill: Plane) -> None:
    c = drill.compute
    c.deploy("die", drill.revision("r1", replicas=2))
    c.deploy("die", drill.revision("good"))
    c.set_weights("die", {"r1": 100})
    url = drill.url("die")
    victim = c.status("die").revisions[0].workers[0]
    assert victim.pid is not None
    seen: list[tuple[int, float, str]] = []

    async def requests_after_the_death(client: httpx.AsyncClient) -> None:
        for _ in range(10):  # keep-alive connections to both workers in the router's pools
            assert (await client.post(f"{url}/v1/chat", json={})).status_code == 200
        os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
        for _ in range(30):
            t0 = time.perf_counter()
            r = await client.post(f"{url}/v1/chat", json={})
            seen.append(
                (r.status_code, time.perf_counter() - t0, r.headers.get("x-mangaassist-router-error", ""))
            )
            await asyncio.sleep(0.01)

    async def run() -> list[float]:
        async with httpx.AsyncClient(timeout=10) as client:
            _, healthy = await _alongside(requests_after_the_death(client), client, drill, "die")
            return healthy

    healthy = asyncio.run(run())
    assert max(healthy) < QUICK_S, healthy
    for status, took, router_error in seen:
        assert status == 200 or (status in (502, 503) and router_error == "1"), (status, took)
        assert took < QUICK_S, seen
    assert sum(1 for status, *_ in seen if status == 200) >= len(seen) - 2, seen  # the live worker serves
    failed_seen = sum(1 for status, *_ in seen if status != 200)
    assert c.stats("die")["revisions"]["r1"]["failed"] == failed_seen

    def restarted() -> bool:
        w = c.status("die").revisions[0].workers[0]
        return w.state is WorkerState.READY and w.pid not in (None, victim.pid)

    _wait(restarted, timeout_s=10)


def test_a_50_mb_body_is_refused_413_fast_and_never_reaches_a_worker(drill: Plane) -> None:
    c = drill.compute
    c.deploy("body", drill.revision("r1"))
    c.deploy("body", drill.revision("good"))
    url = drill.url("body")
    worker_port = c.status("body").revisions[0].workers[0].port
    big = b"x" * (50 * 1000 * 1000)

    def chats_seen_by_the_worker() -> str:
        return httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=5).text

    before_worker = chats_seen_by_the_worker()
    before = c.stats("body")["revisions"].get("r1", {}).get("requests", 0)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    async def uploads(client: httpx.AsyncClient) -> list[tuple[httpx.Response, float]]:
        out = []
        # announced in Content-Length (refused unread), then chunked (read and counted), 3 times
        for content in (big, chunks(), big, chunks(), big, chunks()):
            t0 = time.perf_counter()
            r = await client.post(f"{url}/v1/chat", content=content, headers=_pin("r1"))
            out.append((r, time.perf_counter() - t0))
        return out

    async def run() -> tuple[list[tuple[httpx.Response, float]], list[float]]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await _alongside(uploads(client), client, drill, "body")

    answers, healthy = asyncio.run(run())
    for r, took in answers:
        assert r.status_code == 413, r.text
        assert "max_body_bytes" in r.json()["error"]
        assert r.headers["x-mangaassist-revision"] == "r1"
        assert took < 3.0, took
    assert answers[0][0].json()["error"] == (
        f"request body of 50000000 bytes (Content-Length) over max_body_bytes ({MAX_BODY_BYTES})"
    )
    assert answers[1][0].json()["error"] == f"request body over max_body_bytes ({MAX_BODY_BYTES})"
    assert max(healthy) < QUICK_S, healthy
    assert chats_seen_by_the_worker() == before_worker
    assert c.stats("body")["revisions"].get("r1", {}).get("requests", 0) == before
    assert _limits(drill, "body", "r1")["body_too_large"] == 6
    assert _metric(drill, "body", "mangaassist_router_limits", revision="r1", limit="body_too_large") == 6
    # a body just under the limit, in many pieces, goes through whole
    text = "y" * (MAX_BODY_BYTES - 100)
    payload = json.dumps({"message": text}).encode()
    assert len(payload) <= MAX_BODY_BYTES
    with httpx.Client(timeout=10) as client:
        pieces = (payload[i : i + 4096] for i in range(0, len(payload), 4096))
        r = client.post(f"{url}/v1/chat", content=pieces, headers=_pin("r1"))
    assert r.status_code == 200 and r.json()["revision"] == "r1"


# --------------------------------------------------------------- the upstream client on its own


class _OneShotServer:
    """Answers the first request on a connection, then closes it on the next one without a byte."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            self.requests.append(head.split(b" ")[0])
            if served:
                writer.transport.abort()  # read the request, then vanished: nothing received
                return
            served += 1
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


async def test_only_idempotent_requests_are_retried_after_a_reset_on_a_reused_connection() -> None:
    server = _OneShotServer()
    port = await server.start()
    pools = []
    try:
        for method, retried in (("GET", True), ("PUT", True), ("POST", False)):
            server.requests.clear()
            pool = UpstreamPool("127.0.0.1", port)
            pools.append(pool)
            first = await pool.request(method, b"/", [], b"{}", 2.0)
            assert await first.read() == b"ok"
            if retried:  # sent again on a fresh connection, which answers it
                again = await pool.request(method, b"/", [], b"{}", 2.0)
                assert await again.read() == b"ok"
                assert server.requests == [method.encode()] * 3
            else:  # the worker may have acted on it: the error goes to the client
                with pytest.raises(UpstreamError) as info:
                    await pool.request(method, b"/", [], b"{}", 2.0)
                assert info.value.kind == "reset"
                assert server.requests == [method.encode()] * 2
    finally:
        for pool in pools:
            pool.close()
        assert server.server is not None
        server.server.close()


async def test_connect_and_idle_timeouts_of_the_upstream_client() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepted: one connection fills the queue, then SYNs are dropped
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    pool = UpstreamPool("127.0.0.1", port)
    try:
        t0 = time.perf_counter()
        with pytest.raises(UpstreamError) as info:
            await pool.request("GET", b"/", [], b"", 5.0, connect_timeout_s=0.3)
        assert info.value.kind == "timeout" and info.value.phase == "connect"
        assert 0.25 <= time.perf_counter() - t0 < 1.0
    finally:
        pool.close()
        for s in fillers:
            s.close()
        listener.close()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart")
        await writer.drain()
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    pool = UpstreamPool("127.0.0.1", int(server.sockets[0].getsockname()[1]))
    try:
        response = await pool.request("GET", b"/", [], b"", 2.0, idle_timeout_s=0.3)
        assert response.status == 200
        got: list[bytes] = []

        async def drain() -> None:
            async for chunk in response.chunks():
                got.append(chunk)

        t0 = time.perf_counter()
        with pytest.raises(UpstreamError) as info:
            await drain()
        assert got == [b"part"]
        assert info.value.kind == "timeout" and info.value.phase == "idle"
        assert 0.25 <= time.perf_counter() - t0 < 1.0
    finally:
        pool.close()
        server.close()


def test_an_injected_fault_fails_every_revision_alike_and_counts_against_them(drill: Plane) -> None:
    """A drill's fault (the control API's ``PUT /v1/services/NAME/fault``): the router answers the
    fault's status for its share of the requests to its paths, counted against the revision chosen,
    other paths untouched; bad settings are refused and change nothing; clearing it ends it."""
    c = drill.compute
    c.deploy("fault", drill.revision("r1"))
    c.deploy("fault", drill.revision("r2"))
    c.set_weights("fault", {"r1": 50.0, "r2": 50.0})
    url = drill.url("fault")
    before = {rev: dict(n.get("statuses", {})) for rev, n in c.stats("fault")["revisions"].items()}
    for bad, named in (
        ({"share": 0}, "share 0.0"),
        ({"status": 200}, "status 200"),
        ({"paths": ["v1"]}, "paths"),
    ):
        with pytest.raises(Exception, match=named):
            c.set_fault("fault", **{"status": 503, "share": 1.0, "paths": ("/v1/chat",)} | {
                k: (tuple(v) if k == "paths" else v) for k, v in bad.items()
            })  # fmt: skip
    assert httpx.post(f"{url}/v1/chat", json={"message": "hi"}, timeout=5).status_code == 200  # unchanged
    assert c.set_fault("fault", status=503, share=1.0) == {"status": 503, "share": 1.0, "paths": ["/v1/chat"]}
    try:
        with httpx.Client(timeout=5) as client:
            answers = [
                client.post(f"{url}/v1/chat", json={"message": "hi"}, headers={"X-Session-Id": f"f{i}"})
                for i in range(20)
            ]
            echo = client.get(f"{url}/echo")
    finally:
        c.clear_fault("fault")
    assert {r.status_code for r in answers} == {503}
    assert {r.headers["x-mangaassist-revision"] for r in answers} == {"r1", "r2"}
    assert "injected fault" in answers[0].json()["error"]
    assert echo.status_code == 200  # another path is not part of the fault
    after = c.stats("fault")["revisions"]
    injected = sum(
        after[rev]["statuses"].get("503", 0) - before.get(rev, {}).get("503", 0) for rev in ("r1", "r2")
    )
    assert injected == 20
    assert (
        sum(
            _metric(drill, "fault", "mangaassist_router_requests", status="503", revision=r)
            for r in ("r1", "r2")
        )
        == 20
    )
    r = httpx.post(f"{url}/v1/chat", json={"message": "hi"}, timeout=5)
    assert r.status_code == 200


def test_a_client_that_stalls_its_body_gets_a_408_and_holds_nothing(drill: Plane) -> None:
    """A client sends its headers and part of the body, then nothing: the router answers 408 after
    ``client_body_timeout_s``, counted against the revision, while other clients are served."""
    c = drill.compute
    c.deploy("slow", drill.revision("r1"))
    host, port = drill.url("slow").removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"message": '
        )
        t0 = time.perf_counter()
        healthy = httpx.post(f"{drill.url('slow')}/v1/chat", json={"message": "hi"}, timeout=5)
        assert healthy.status_code == 200  # served while the slow one waits
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        took = time.perf_counter() - t0
        # the body may come in a later segment than the headers: read all Content-Length bytes
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"client_body_timeout_s" in body, body
    assert CLIENT_BODY_TIMEOUT_S * 0.8 <= took < CLIENT_BODY_TIMEOUT_S + 2.0, took
    assert _limits(drill, "slow", "r1")["client_body_timeout"] == 1
    assert (
        _metric(drill, "slow", "mangaassist_router_limits", revision="r1", limit="client_body_timeout") == 1
    )
