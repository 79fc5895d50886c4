"""``LocalCompute`` waits for a crashed control plane to come back, and only then: a control plane
that runs but does not answer, or one stopped cleanly (no ``state.json``), fails at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mangaassist.platform.compute import NotRunning
from mangaassist.platform.local.client import LocalCompute
from mangaassist.platform.local.controlplane import RUNTIME_FILE, STATE_FILE
from mangaassist.platform.ports import listening_socket


def _closed_port() -> int:
    sock = listening_socket()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _runtime(run_dir: Path, pid: int, port: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"pid": pid, "control_url": f"http://127.0.0.1:{port}", "services": {"chatbot": "http://x"}}
    (run_dir / RUNTIME_FILE).write_text(json.dumps(doc))


class _Json(BaseHTTPRequestHandler):
    """Answers every request with ``answer()``'s status and JSON document."""

    def answer(self) -> tuple[int, dict[str, object]]:
        return 200, {"services": {}, "answered_by": "the new control plane"}

    def _reply(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, doc = self.answer()
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = _reply

    def log_message(self, *args: object) -> None:
        pass


def test_a_control_plane_that_runs_but_does_not_answer_fails_at_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "platform"
    _runtime(run_dir, os.getpid(), _closed_port())  # alive (this process), nothing listens
    (run_dir / STATE_FILE).write_text("{}")
    compute = LocalCompute(run_dir, reconnect_s=30)
    started = time.monotonic()
    with pytest.raises(NotRunning, match="does not answer"):
        compute.raw_status()
    assert time.monotonic() - started < 5
    compute.close()


def test_a_cleanly_stopped_control_plane_is_not_waited_for(tmp_path: Path) -> None:
    run_dir = tmp_path / "platform"
    _runtime(run_dir, os.getpid(), _closed_port())
    compute = LocalCompute(run_dir, reconnect_s=30)
    compute.runtime["pid"] = _dead_pid()  # it died, and `down` removed state.json: no crash
    started = time.monotonic()
    with pytest.raises(NotRunning):
        compute.raw_status()
    assert time.monotonic() - started < 5
    compute.close()


def test_a_crashed_control_plane_is_waited_for_on_its_new_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "platform"
    _runtime(run_dir, os.getpid(), _closed_port())
    (run_dir / STATE_FILE).write_text("{}")  # a crash leaves it
    compute = LocalCompute(run_dir, reconnect_s=30)
    compute.runtime["pid"] = dead = _dead_pid()
    _runtime(run_dir, dead, _closed_port())  # what the crashed one left
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Json)

    def restart() -> None:  # what `mangaassist up` does a moment later: another port, another pid
        time.sleep(0.6)
        _runtime(run_dir, os.getpid(), server.server_address[1])
        server.serve_forever()

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    try:
        assert compute.raw_status()["answered_by"] == "the new control plane"
        assert compute.control_url == f"http://127.0.0.1:{server.server_address[1]}"
        assert compute.runtime["pid"] == os.getpid()
    finally:
        server.shutdown()
        compute.close()
    err = capsys.readouterr().err
    assert "it crashed and is not back yet: waiting up to 30s" in err


def test_waiting_ends_after_reconnect_s(tmp_path: Path) -> None:
    run_dir = tmp_path / "platform"
    _runtime(run_dir, os.getpid(), _closed_port())
    (run_dir / STATE_FILE).write_text("{}")
    compute = LocalCompute(run_dir, reconnect_s=0.5)
    compute.runtime["pid"] = dead = _dead_pid()
    _runtime(run_dir, dead, _closed_port())  # nobody restarts it
    started = time.monotonic()
    with pytest.raises(NotRunning, match="does not answer"):
        compute.raw_status()
    assert 0.4 < time.monotonic() - started < 5
    compute.close()


class _Restoring(_Json):
    """Answers 503 ``retry`` twice (a service being restored), then 200."""

    calls = 0

    def answer(self) -> tuple[int, dict[str, object]]:
        type(self).calls += 1
        if self.calls <= 2:
            return 503, {"error": "being restored", "retry": True}
        return 200, {"weights": {"r1": 100.0}}


def test_a_503_to_retry_is_retried_until_it_is_answered(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Restoring)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    run_dir = tmp_path / "platform"
    _runtime(run_dir, os.getpid(), server.server_address[1])
    compute = LocalCompute(run_dir, reconnect_s=30)
    try:
        assert compute.set_weights("chatbot", {"r1": 100.0}) == {"r1": 100.0}
        assert _Restoring.calls == 3
    finally:
        server.shutdown()
        compute.close()
