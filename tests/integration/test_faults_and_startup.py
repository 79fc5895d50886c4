"""Fault injection and start-up failures, each on a server of its own."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.core.errors import MangaAssistError
from tests.conftest import server_env

pytestmark = pytest.mark.slow


def test_error_rate_fault_fails_chats_but_not_health(state_home: Path) -> None:
    env = server_env(state_home, MANGAASSIST_FAULT="error_rate=1.0")
    with ChatbotProcess(env=env) as server:
        r = httpx.post(f"{server.url}/v1/chat", json={"session_id": "f", "message": "hi"})
        assert r.status_code == 500
        assert "injected fault" in r.json()["error"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/readyz").json()["fault"] == "error_rate=1.0"


def test_a_users_scoped_fault_spares_the_gates_pinned_requests(state_home: Path) -> None:
    """``scope=users``: a request pinned to its revision (what smoke, latency and golden-set gates
    send) is answered; one the router sent by weight (no pin) meets the fault."""
    env = server_env(state_home, MANGAASSIST_FAULT="error_rate=1.0,scope=users")
    with ChatbotProcess(env=env) as server:
        body = {"session_id": "g", "message": "hi"}
        pinned = httpx.post(f"{server.url}/v1/chat", json=body, headers={"X-MangaAssist-Revision": "r2"})
        assert pinned.status_code == 200, pinned.text
        user = httpx.post(f"{server.url}/v1/chat", json=body)
        assert user.status_code == 500 and "injected fault" in user.json()["error"]


def test_latency_fault_adds_delay(state_home: Path) -> None:
    env = server_env(state_home, MANGAASSIST_FAULT="latency_ms=400,error_rate=0")
    with ChatbotProcess(env=env) as server:
        t0 = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/chat", json={"session_id": "f", "message": "hi"}, timeout=10)
        assert r.status_code == 200
        assert time.perf_counter() - t0 >= 0.4


def test_bad_fault_spec_stops_startup_with_a_clear_error(state_home: Path, tmp_path: Path) -> None:
    log = tmp_path / "bad.log"
    server = ChatbotProcess(env=server_env(state_home, MANGAASSIST_FAULT="error_rate=2"), log_path=log)
    with pytest.raises(MangaAssistError, match="exited"):
        server.__enter__()
    assert "error_rate must be within 0..1" in log.read_text()


def test_invalid_config_keeps_the_worker_unready_with_the_reason(state_home: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "chatbot.yaml"
    cfg.write_text("retrieval:\n  top_k: 99\n")
    server = ChatbotProcess(env=server_env(state_home, MANGAASSIST_CONFIG=str(cfg)), ready_timeout_s=60)
    server.start()
    try:
        with pytest.raises(MangaAssistError, match=r"retrieval\.top_k"):
            server.wait_ready()
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        r = httpx.get(f"{server.url}/readyz")
        assert r.status_code == 503 and "retrieval.top_k" in r.json()["reason"]
        chat = httpx.post(f"{server.url}/v1/chat", json={"session_id": "s", "message": "hi"})
        assert chat.status_code == 503
    finally:
        server.stop()
