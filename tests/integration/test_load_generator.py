"""The load generator against a service that never answers: in-flight requests stay bounded, the
ticks it could not send are counted, and it stops promptly when asked."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.rollout.load import BackgroundLoad, run_load
from tests.standin import StandIn, serving


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts every connection and reads, never answers."""
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_a_silent_service_bounds_what_is_in_flight_and_stops_promptly(silent_server: str) -> None:
    load = BackgroundLoad(silent_server, rps=200, sessions=5, max_in_flight=16, seed=3).start()
    time.sleep(1.5)
    asked = time.monotonic()
    report = load.stop()
    took = time.monotonic() - asked
    assert took < 15, took  # 5 s of grace for answers in flight, then cancelled
    assert report.abandoned <= 16 and report.abandoned > 0, report.as_dict()
    assert report.skipped > 100, report.as_dict()  # about 300 ticks, at most 16 sent
    assert report.ok == 0


def test_max_in_flight_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_in_flight 0"):
        run_load("http://127.0.0.1:9", rps=1, duration_s=1, max_in_flight=0)


@pytest.fixture
def answering_server() -> Iterator[tuple[int, list[dict[str, str]]]]:
    """Answers every chat 200 with an intent, on loopback; records each request's headers."""
    seen: list[dict[str, str]] = []

    class Handler(StandIn):
        def do_POST(self) -> None:
            self.body()
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.reply(200, json.dumps({"intent": "chitchat", "answer": "hi"}).encode())

    with serving(Handler) as url:
        port = urlsplit(url).port
        assert port is not None
        yield port, seen


class _Stamp(httpx.Auth):
    """What a pin's signer does to each request, in miniature: a header of its own."""

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["X-Signed"] = "yes"
        yield request


def test_a_url_that_is_not_loopback_is_loaded_only_when_the_environment_gave_it(
    answering_server: tuple[int, list[dict[str, str]]],
) -> None:
    """``0.0.0.0`` is not a loopback address (so ``check_loopback`` refuses it) yet reaches this
    machine's loopback server: a stand-in for an ALB or a function URL that needs no network."""
    port, seen = answering_server
    url = f"http://0.0.0.0:{port}"
    with pytest.raises(ConfigError, match="only sent to loopback"):
        run_load(url, rps=20, duration_s=0.5)
    assert seen == []  # refused before anything was sent

    pin = {"X-MangaAssist-Revision": "rel-abc"}
    report = run_load(
        url, rps=20, duration_s=0.5, headers=pin, auth=_Stamp(), remote=True, seed=1, feedback_share=0.0
    )
    assert report.ok == report.requests > 0 and report.failed == 0, report.as_dict()
    assert len(seen) == report.requests
    assert all(h.get("x-mangaassist-revision") == "rel-abc" and h.get("x-signed") == "yes" for h in seen)


@pytest.mark.parametrize("url", ["ftp://example.com/", "http:///v1/chat", "example.com"])
def test_a_remote_url_must_be_http_with_a_host(url: str) -> None:
    with pytest.raises(ConfigError, match="http or https URL with a host"):
        run_load(url, rps=1, duration_s=1, remote=True)
