"""``platform.request_series``: what a worker's ``RequestSeriesMiddleware`` records (as the router
would), and that the router's module still exports the very same records and collector."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mangaassist.platform import request_series
from mangaassist.platform.local import stats
from mangaassist.platform.request_series import (
    RequestSeriesMiddleware,
    RouterCollector,
    RouterStats,
    enabled,
    feedback_of,
)


def _app(series: RouterStats) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat")
    async def chat(request: Request) -> Response:
        body = await request.json()
        headers = {"X-MangaAssist-Fallback": "1"} if body.get("fallback") else {}
        if body.get("guardrail"):
            headers["X-MangaAssist-Guardrail"] = "1"
        return JSONResponse({"ok": True}, status_code=int(body.get("status", 200)), headers=headers)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"ok": True}, status_code=404 if body["session_id"] == "gone" else 200)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/broken")
    async def broken() -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"part"
            raise RuntimeError("broke mid-answer")

        return StreamingResponse(chunks())

    app.add_middleware(RequestSeriesMiddleware, stats=series, revision="r2")
    return app


@pytest.fixture
def series() -> RouterStats:
    return RouterStats("chatbot")


def test_a_worker_records_its_requests_as_the_router_would(series: RouterStats) -> None:
    with TestClient(_app(series), raise_server_exceptions=False) as client:
        client.post("/v1/chat", json={}, headers={"X-Session-Id": "s1"})
        client.post("/v1/chat", json={"fallback": True})
        client.post("/v1/chat", json={"guardrail": True}, headers={"X-MangaAssist-Revision": "r2"})
        client.post("/v1/chat", json={"status": 500})
        client.post("/v1/feedback", json={"session_id": "s1", "rating": "up"})
        client.post("/v1/feedback", json={"session_id": "gone", "rating": "down"})  # 404: no rating
        client.get("/healthz")  # a probe: not counted
        client.post("/v1/chat", json={}, headers={"X-MangaAssist-Shadow": "1"})  # a mirror
        client.get("/broken")  # the status went out, then the answer broke
    c = series.revisions["r2"]
    assert c.requests == 7 and c.in_flight == 0
    assert dict(c.statuses) == {200: 4, 500: 1, 404: 1}
    assert dict(c.transport_errors) == {"reset_midstream": 1}
    assert (c.fallback, c.guardrail, c.pinned) == (1, 1, 1)
    assert dict(c.feedback) == {"up": 1}
    shadow = series.shadows["r2"]
    assert shadow.requests == 1 and dict(shadow.statuses) == {200: 1} and shadow.in_flight == 0
    kinds = [o["kind"] for o in series.observations_after(0)]
    assert kinds.count("feedback") == 1 and kinds.count("request") == 7

    registry = CollectorRegistry()
    registry.register(RouterCollector(series))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    requests = {
        s.labels["status"]: s.value for s in families["mangaassist_router_requests"].samples
        if s.name.endswith("_total")
    }  # fmt: skip
    assert requests == {"200": 4.0, "404": 1.0, "500": 1.0, "502": 1.0}  # the break, as the router folds it
    assert {s.labels["service"] for f in families.values() for s in f.samples} == {"chatbot"}


def test_the_router_module_re_exports_the_shared_records() -> None:
    assert stats.RouterStats is request_series.RouterStats
    assert stats.RouterCollector is request_series.RouterCollector
    assert stats.RevisionCounters is request_series.RevisionCounters
    assert stats.Histogram is request_series.Histogram


def test_the_setting_and_the_feedback_body() -> None:
    assert enabled({"MANGAASSIST_REQUEST_SERIES": "1"}) and enabled({"MANGAASSIST_REQUEST_SERIES": "true"})
    assert not enabled({}) and not enabled({"MANGAASSIST_REQUEST_SERIES": "0"})
    assert feedback_of(b'{"session_id": "s", "rating": "up"}', None) == ("s", "up")
    assert feedback_of(b'{"rating": "down"}', "h") == ("h", "down")
    assert feedback_of(b"not json", "s") is None and feedback_of(b"[1]", "s") is None
    assert feedback_of(b'{"session_id": "s"}', None) is None
