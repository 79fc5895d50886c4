"""Unhandled errors inside the app: still a revision's 500, counted, and the worker keeps serving.

Runs the real app in process (Starlette's TestClient drives its lifespan) with the hashing
embedder, so the runtime loads in about a second.
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def _count(text: str, path: str, status: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mangaassist_requests_total" and sample.labels == {
                "endpoint": path,
                "status": status,
            }:
                return sample.value
    return 0.0


def test_unhandled_error_is_a_counted_500_of_this_revision(client: TestClient) -> None:
    service = client.app.state.runtime_state["service"]  # type: ignore[attr-defined]

    async def explode(*_: object) -> None:
        raise RuntimeError("boom")

    service.chat = explode
    r = client.post("/v1/chat", json={"session_id": "s", "message": "hi"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal error"}
    assert r.headers["X-MangaAssist-Revision"] == "r-err"
    assert _count(client.get("/metrics").text, "/v1/chat", "500") == 1
    assert client.get("/healthz").status_code == 200  # the worker is still serving


def test_unknown_paths_share_one_metric_label(client: TestClient) -> None:
    for i in range(5):
        assert client.get(f"/no/such/path/{i}").status_code == 404
    text = client.get("/metrics").text
    assert _count(text, "other", "404") == 5
    assert "/no/such/path" not in text
