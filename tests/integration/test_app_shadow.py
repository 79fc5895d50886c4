"""Mirrored (shadow) requests are answered like any other but change no state."""

from __future__ import annotations

from fastapi.testclient import TestClient

SHADOW = {"X-MangaAssist-Shadow": "1"}


def _rows(client: TestClient, table: str, pk: str | None = None) -> list[dict[str, object]]:
    tables = client.app.state.runtime_state["service"].rt.store.tables  # type: ignore[attr-defined]
    if pk is not None:
        return tables.query(table, pk)
    return list(tables.scan(table))


def test_a_shadow_chat_writes_no_session(client: TestClient) -> None:
    r = client.post("/v1/chat", json={"session_id": "mirror-1", "message": "hi there"}, headers=SHADOW)
    assert r.status_code == 200
    assert r.json()["answer"]
    assert _rows(client, "sessions", "mirror-1") == []
    client.post("/v1/chat", json={"session_id": "real-1", "message": "hi there"})
    assert len(_rows(client, "sessions", "real-1")) == 2  # meta and one turn: the control works


def test_a_shadow_handoff_opens_no_ticket(client: TestClient) -> None:
    before = len(_rows(client, "tickets"))
    r = client.post("/v1/chat", json={"session_id": "mirror-2", "message": "human please"}, headers=SHADOW)
    body = r.json()
    if body["intent"] == "human_handoff":  # the hashing embedder's classifier may read it otherwise
        assert body["sources"][0]["id"] == "HT-SHADOW"
    assert len(_rows(client, "tickets")) == before


def test_shadow_feedback_is_not_recorded(client: TestClient) -> None:
    client.post("/v1/chat", json={"session_id": "fb", "message": "hello"})
    r = client.post("/v1/feedback", json={"session_id": "fb", "rating": "down"}, headers=SHADOW)
    assert r.status_code == 200
    assert r.json()["shadow"] is True
    assert not [row for row in _rows(client, "sessions", "fb") if str(row["sk"]).startswith("feedback#")]


def test_the_warm_up_before_ready_writes_nothing(client: TestClient) -> None:
    assert _rows(client, "sessions") == []
    assert _rows(client, "tickets") == []
