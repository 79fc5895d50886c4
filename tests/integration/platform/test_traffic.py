"""Traffic through the real router to real worker processes: split, stickiness, weight moves, pins."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid

import httpx
import pytest

from mangaassist.platform.compute import PIN_HEADER, Pin, RevisionHealth
from tests.integration.platform.conftest import Plane

pytestmark = pytest.mark.slow


def _new_session() -> str:
    return uuid.uuid4().hex


async def _chat(client: httpx.AsyncClient, url: str, session: str | None, **headers: str) -> httpx.Response:
    h = dict(headers)
    if session is not None:
        h["X-Session-Id"] = session
    return await client.post(
        f"{url}/v1/chat", json={"session_id": session or "x", "message": "hi"}, headers=h
    )


def test_new_conversations_are_split_by_weight_within_3_points(plane: Plane) -> None:
    c = plane.compute
    c.deploy("split", plane.revision("r1"))
    c.deploy("split", plane.revision("r2"))
    c.set_weights("split", {"r1": 70, "r2": 30})
    url = plane.url("split")
    sessions = [_new_session() for _ in range(2000)]
    # another test of the session may have sent conversations to this service first (any order)
    before = c.stats("split")["revisions"]
    started_before = sum(before.get(r, {}).get("sessions_started", 0) for r in ("r1", "r2"))

    async def run() -> dict[str, str]:
        served: dict[str, str] = {}
        sem = asyncio.Semaphore(40)
        async with httpx.AsyncClient(timeout=10) as client:

            async def one(s: str) -> None:
                async with sem:
                    r = await _chat(client, url, s)
                    assert r.status_code == 200
                    served[s] = r.json()["revision"]

            await asyncio.gather(*(one(s) for s in sessions))
            # the same conversations again: each stays on its revision
            again = sessions[:300]
            for s in again:
                r = await _chat(client, url, s)
                assert r.json()["revision"] == served[s]
        return served

    served = asyncio.run(run())
    share_r2 = collections.Counter(served.values())["r2"] / len(sessions)
    assert abs(share_r2 - 0.30) <= 0.03, share_r2
    stats = c.stats("split")["revisions"]
    started = stats["r2"]["sessions_started"] + stats["r1"]["sessions_started"]
    assert started - started_before == 2000


def test_weights_move_under_load_without_failures_or_split_conversations(plane: Plane) -> None:
    c = plane.compute
    c.deploy("shift", plane.revision("r1", replicas=2))
    c.deploy("shift", plane.revision("r2", replicas=2))
    c.set_weights("shift", {"r1": 100})
    url = plane.url("shift")
    seen: dict[str, set[str]] = collections.defaultdict(set)
    statuses: collections.Counter[int] = collections.Counter()
    errors: list[str] = []

    async def run() -> None:
        stop = asyncio.Event()

        async def client_loop(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                session = _new_session()
                for _ in range(4):  # a short conversation
                    try:
                        r = await _chat(client, url, session)
                    except httpx.HTTPError as exc:
                        errors.append(repr(exc))
                        continue
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        seen[session].add(r.json()["revision"])

        async def mover() -> None:
            for w in (0, 5, 25, 50, 100):
                await asyncio.to_thread(
                    c.set_weights, "shift", {"r1": 100 - w, "r2": w} if w < 100 else {"r2": 100}
                )
                await asyncio.sleep(0.6)
            stop.set()

        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.gather(mover(), *(client_loop(client) for _ in range(12)))

    asyncio.run(run())
    assert errors == []
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 500
    split = {s: revs for s, revs in seen.items() if len(revs) > 1}
    assert split == {}, f"{len(split)} conversations served by two revisions"
    started_on = collections.Counter(next(iter(r)) for r in seen.values())
    assert started_on["r1"] > 0 and started_on["r2"] > 0
    stats = c.stats("shift")
    assert stats["revisions"]["r1"]["failed"] == stats["revisions"]["r2"]["failed"] == 0
    assert stats["revisions"]["r1"]["sessions_moved_out"] == 0


def test_a_pin_reaches_a_zero_percent_revision(plane: Plane) -> None:
    c = plane.compute
    c.deploy("pin", plane.revision("stable"))
    c.deploy("pin", plane.revision("candidate"))
    assert c.status("pin").weights == {"stable": 100.0}
    url = plane.url("pin")
    pin = c.pin("pin", "candidate")
    assert pin == Pin(url, {PIN_HEADER: "candidate"})  # the router, told by a header
    headers = dict(pin.headers)
    with httpx.Client(timeout=5) as client:
        unpinned = {client.post(f"{url}/v1/chat", json={}).json()["revision"] for _ in range(30)}
        pinned = [client.post(f"{pin.url}/v1/chat", json={}, headers=headers) for _ in range(10)]
        unknown = client.post(f"{url}/v1/chat", json={}, headers={PIN_HEADER: "nope"})
        # a pinned smoke request does not capture the conversation
        client.post(f"{url}/v1/chat", json={}, headers={**headers, "X-Session-Id": "smoke"})
        after = client.post(f"{url}/v1/chat", json={}, headers={"X-Session-Id": "smoke"})
    assert unpinned == {"stable"}
    assert {r.json()["revision"] for r in pinned} == {"candidate"}
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    assert after.json()["revision"] == "stable"
    assert c.stats("pin")["revisions"]["candidate"]["pinned"] == 11


def test_cookie_session_is_sticky_and_requests_without_session_are_split(plane: Plane) -> None:
    # reuses the "split" service's 70/30 split if it ran; deploy if not
    c = plane.compute
    if "r2" not in {r.name for r in c.status("split").revisions}:
        c.deploy("split", plane.revision("r1"))
        c.deploy("split", plane.revision("r2"))
    c.set_weights("split", {"r1": 50, "r2": 50})
    url = plane.url("split")
    with httpx.Client(timeout=5) as client:
        per_request = collections.Counter(
            client.post(f"{url}/v1/chat", json={}).json()["revision"] for _ in range(200)
        )
        for i in range(20):
            cookie = {"Cookie": f"theme=dark; ma_session=cookie-{i}"}
            revs = {
                client.post(f"{url}/v1/chat", json={}, headers=cookie).json()["revision"] for _ in range(5)
            }
            assert len(revs) == 1
    assert per_request["r1"] > 50 and per_request["r2"] > 50


def test_retire_drains_in_flight_requests_and_counts_moved_conversations(plane: Plane) -> None:
    c = plane.compute
    c.deploy("retire", plane.revision("old"))
    c.deploy("retire", plane.revision("new"))
    c.set_weights("retire", {"old": 100})
    url = plane.url("retire")
    with httpx.Client(timeout=10) as client:
        for i in range(10):
            assert (
                client.post(f"{url}/v1/chat", json={}, headers={"X-Session-Id": f"conv-{i}"}).json()[
                    "revision"
                ]
                == "old"
            )
    c.set_weights("retire", {"new": 100})

    async def run() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(timeout=10) as client:
            slow = asyncio.create_task(client.get(f"{url}/sleep?ms=1200", headers={"X-Session-Id": "conv-0"}))
            await asyncio.sleep(0.3)  # the slow request is in flight on "old"
            t0 = time.monotonic()
            await asyncio.to_thread(c.retire, "retire", "old", drain_timeout_s=10)
            return await slow, time.monotonic() - t0

    slow, retire_took = asyncio.run(run())
    assert slow.status_code == 200 and slow.json()["revision"] == "old"  # drained, not dropped
    assert retire_took >= 0.7
    status = {r.name: r for r in c.status("retire").revisions}
    assert status["old"].health is RevisionHealth.RETIRED
    assert all(w.pid is None for w in status["old"].workers)
    with httpx.Client(timeout=10) as client:
        moved = [
            client.post(f"{url}/v1/chat", json={}, headers={"X-Session-Id": f"conv-{i}"}) for i in range(10)
        ]
    assert {r.json()["revision"] for r in moved} == {"new"}
    assert c.stats("retire")["revisions"]["old"]["sessions_moved_out"] == 10
    with pytest.raises(Exception, match="weight"):
        c.retire("retire", "new")
