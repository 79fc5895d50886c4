"""The load generator against a service that never answers: in-flight requests stay bounded, the
ticks it could not send are counted, and it stops promptly when asked."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.rollout.load import BackgroundLoad, run_load


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
