"""Shadows that fail or hang, crashed workers, revisions that never get ready, streaming, stats."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mangaassist.platform.compute import RevisionHealth, WorkerState
from tests.integration.platform.conftest import Plane

pytestmark = pytest.mark.slow


def _wait(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_failing_or_hanging_shadow_leaves_user_responses_untouched(plane: Plane) -> None:
    c = plane.compute
    c.deploy("shadow", plane.revision("primary"))
    c.deploy("shadow", plane.revision("failing", TESTAPP_STATUS="500"))
    c.deploy("shadow", plane.revision("hanging", TESTAPP_DELAY_MS="30000"))
    c.deploy("shadow", plane.revision("other-intent", TESTAPP_INTENT="recommendation"))
    c.deploy("shadow", plane.revision("same-intent"))
    url = plane.url("shadow")

    def burst(n: int) -> list[tuple[int, str, float]]:
        out = []
        with httpx.Client(timeout=5) as client:
            for i in range(n):
                t0 = time.perf_counter()
                r = client.post(f"{url}/v1/chat", json={}, headers={"X-Session-Id": f"s-{i}"})
                out.append((r.status_code, r.json()["revision"], time.perf_counter() - t0))
        return out

    c.set_shadow("shadow", "failing", 1.0)
    answers = burst(60)
    assert {(s, rev) for s, rev, _ in answers} == {(200, "primary")}
    _wait(lambda: c.stats("shadow")["shadow"].get("failing", {}).get("statuses", {}).get("500") == 60)

    # hanging shadow (30 s): users keep getting fast answers; the mirrors time out after 2 s
    c.set_shadow("shadow", "hanging", 1.0)
    answers = burst(40)
    assert {(s, rev) for s, rev, _ in answers} == {(200, "primary")}
    assert max(t for *_, t in answers) < 0.5
    hung = c.stats("shadow")["shadow"]["hanging"]
    assert hung["in_flight"] > 0 and hung["requests"] == 40
    _wait(lambda: c.stats("shadow")["shadow"]["hanging"]["errors"].get("timeout") == 40, timeout_s=8)

    c.set_shadow("shadow", "other-intent", 1.0)
    burst(20)
    c.set_shadow("shadow", "same-intent", 0.5)
    burst(200)
    c.clear_shadow("shadow")
    burst(10)

    def settled() -> bool:
        s = c.stats("shadow")["shadow"]
        return s["other-intent"]["intent_compared"] == 20 and s["same-intent"]["in_flight"] == 0

    _wait(settled)
    s = c.stats("shadow")["shadow"]
    assert s["other-intent"]["intent_agreed"] == 0
    disagreements = s["other-intent"]["disagreements"]  # kept for review, newest 20
    assert len(disagreements) == 20 and all(d["primary"] != d["shadow"] for d in disagreements)
    assert s["same-intent"]["disagreements"] == []
    same = s["same-intent"]
    assert 60 <= same["intent_compared"] <= 140 and same["intent_agreement"] == 1.0
    assert c.stats("shadow")["revisions"]["primary"]["requests"] == 330
    assert c.status("shadow").shadow is None


def test_sigkill_worker_is_restarted_and_failed_requests_in_the_gap_are_counted(plane: Plane) -> None:
    c = plane.compute
    c.deploy("crash", plane.revision("r1"))
    url = plane.url("crash")
    worker = c.status("crash").revisions[0].workers[0]
    assert worker.pid is not None and worker.state is WorkerState.READY
    seen: list[int] = []

    async def run() -> None:
        stop = asyncio.Event()

        async def load(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                try:
                    r = await client.post(f"{url}/v1/chat", json={})
                    seen.append(r.status_code)
                except httpx.HTTPError:
                    seen.append(0)
                await asyncio.sleep(0.005)

        async def killer() -> None:
            await asyncio.sleep(0.3)
            os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                w = (await asyncio.to_thread(c.status, "crash")).revisions[0].workers[0]
                if w.state is WorkerState.READY and w.pid not in (None, worker.pid):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            stop.set()

        async with httpx.AsyncClient(timeout=5) as client:
            await asyncio.gather(killer(), *(load(client) for _ in range(4)))

    asyncio.run(run())
    after = c.status("crash").revisions[0]
    assert after.health is RevisionHealth.HEALTHY
    assert after.workers[0].restarts == 1 and after.workers[0].pid != worker.pid
    failed_seen = sum(1 for s in seen if s != 200)
    assert failed_seen > 0, "the gap should have failed some requests"
    assert seen[-1] == 200  # served again after the restart
    stats = c.stats("crash")["revisions"]["r1"]
    assert stats["failed"] == failed_seen
    assert stats["transport_errors"].get("unavailable", 0) > 0  # the router sent nothing to the down worker


def test_revision_that_never_gets_ready_is_reported_and_gets_no_traffic(plane: Plane) -> None:
    c = plane.compute
    c.deploy("broken", plane.revision("good"))
    bad = c.deploy("broken", plane.revision("bad", TESTAPP_NEVER_READY="index version kb-42 missing"))
    assert bad.health is RevisionHealth.UNHEALTHY
    assert bad.reason is not None and "index version kb-42 missing" in bad.reason
    crashing = c.deploy("broken", plane.revision("crashing", TESTAPP_CRASH_ON_START="1"), timeout_s=20)
    assert crashing.health is RevisionHealth.UNHEALTHY
    assert crashing.reason is not None and "crashed 5 times in a row" in crashing.reason
    c.set_weights("broken", {"good": 50, "bad": 25, "crashing": 25})
    url = plane.url("broken")
    with httpx.Client(timeout=5) as client:
        revs = {
            client.post(f"{url}/v1/chat", json={}, headers={"X-Session-Id": f"b{i}"}).json()["revision"]
            for i in range(50)
        }
        pinned = client.post(f"{url}/v1/chat", json={}, headers={"X-MangaAssist-Revision": "bad"})
    assert revs == {"good"}
    assert pinned.status_code == 404  # an unhealthy revision is not routable, even by pin


def test_streams_and_server_sent_events_pass_through_unbuffered(plane: Plane) -> None:
    c = plane.compute
    c.deploy("stream", plane.revision("r1"))
    url = plane.url("stream")
    with httpx.Client(timeout=10) as client:
        for path, ctype in (("/sse?n=5&ms=200", "text/event-stream"), ("/stream?n=5&ms=200", "text/plain")):
            t0 = time.perf_counter()
            arrivals = []
            with client.stream("GET", url + path) as r:
                assert r.headers["content-type"].startswith(ctype)
                assert r.headers.get("transfer-encoding") == "chunked"
                for chunk in r.iter_raw():
                    arrivals.append((time.perf_counter() - t0, chunk))
            total = arrivals[-1][0]
            assert total >= 0.8
            assert arrivals[0][0] < 0.15, "the first event must arrive before the stream ends"
            assert b"".join(ch for _, ch in arrivals).count(b"\n") >= 5


def test_stats_cursor_quality_flags_feedback_and_prometheus(plane: Plane) -> None:
    c = plane.compute
    c.deploy("stats", plane.revision("r1"))
    url = plane.url("stats")
    with httpx.Client(timeout=5) as client:
        base = client.get(f"{url}/_router/stats").json()["cursor"]
        client.post(f"{url}/v1/chat", json={}, headers={"X-Session-Id": "q1", "X-Test-Flags": "fallback"})
        client.post(
            f"{url}/v1/chat", json={}, headers={"X-Session-Id": "q1", "X-Test-Flags": "guardrail,fallback"}
        )
        client.post(
            f"{url}/v1/feedback", json={"session_id": "q1", "rating": "down"}, headers={"X-Session-Id": "q1"}
        )
        first = client.get(f"{url}/_router/stats?cursor={base}").json()
        client.post(f"{url}/v1/chat", json={}, headers={"X-Session-Id": "q2"})
        newer = client.get(f"{url}/_router/stats?cursor={first['cursor']}").json()
        metrics = client.get(f"{url}/_router/metrics").text
    r1 = first["revisions"]["r1"]
    assert r1["fallback"] == 2 and r1["guardrail"] == 1 and r1["feedback"] == {"down": 1}
    kinds = [(o["kind"], o["session"]) for o in first["observations"]]
    assert kinds == [("request", "q1"), ("request", "q1"), ("request", "q1"), ("feedback", "q1")]
    assert [o["session"] for o in newer["observations"]] == ["q2"]
    assert newer["observations"][0]["latency_ms"] > 0
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    requests = {
        s.labels["status"]: s.value
        for s in families["mangaassist_router_requests"].samples
        if s.labels["revision"] == "r1"
    }
    assert requests == {"200": 4.0}
    count = [s for s in families["mangaassist_router_latency_seconds"].samples if s.name.endswith("_count")]
    assert count[0].value == 4.0
    fb = [s for s in families["mangaassist_router_feedback"].samples if s.name.endswith("_total")]
    assert [(s.labels["rating"], s.value) for s in fb] == [("down", 1.0)]
