"""Run the chatbot as a real child process on a loopback port: start, wait for ready, stop.

Used by ``mangaassist demo``, the integration tests and the benchmarks, so all three exercise
the service exactly as ``mangaassist serve`` runs it (both run ``chatbot.serve``).
``ModelEndpointProcess`` does the same for the intent model endpoint (``chatbot.model_server``, run
by uvicorn as the platform's workers run it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from mangaassist.core.errors import MangaAssistError
from mangaassist.platform.ports import listening_socket


class ChatbotProcess:
    """``python -m mangaassist.chatbot.serve`` (what ``mangaassist serve`` runs) in a child process.
    Use as a context manager."""

    what = "the chatbot"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        port: int = 0,
        log_path: Path | None = None,
        ready_timeout_s: float = 180.0,
    ) -> None:
        # port 0: a socket bound here and handed to the child (never freed and bound again)
        self._socket = None if port else listening_socket()
        self.port = int(self._socket.getsockname()[1]) if self._socket is not None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.readiness: dict[str, Any] = {}
        self.killed = False
        self.exit_status: int | None = None

    def start(self) -> Self:
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        fds = (self._socket.fileno(),) if self._socket else ()
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, env=self.env, pass_fds=fds
            )
        finally:
            if self.log_path and not isinstance(out, int):
                out.close()
            if self._socket is not None:  # the child has its own copy: the port is its alone
                self._socket.close()
                self._socket = None
        return self

    def listen_args(self) -> list[str]:
        """Where the child listens: the handed-down socket, or the port it was asked for."""
        if self._socket is not None:
            return ["--fd", str(self._socket.fileno())]
        return ["--port", str(self.port)]

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mangaassist.chatbot.serve", *self.listen_args(), "--log-level", "warning",
        ]  # fmt: skip

    def wait_ready(self) -> dict[str, Any]:
        """Poll ``/readyz`` until ready; raise with the reason if the worker reports it cannot start."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MangaAssistError(
                    f"{self.what} exited with status {self.proc.returncode} before it was ready"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2.0)
                if r.status_code == 200:
                    self.readiness = dict(r.json())
                    return self.readiness
                reason = str(r.json().get("reason", ""))
                if reason and not reason.startswith("loading"):
                    raise MangaAssistError(f"{self.what} cannot start: {reason}")
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise MangaAssistError(f"{self.what} was not ready after {self.ready_timeout_s:.0f}s")

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``. Returns 0 for a graceful stop.

        uvicorn shuts down gracefully on SIGTERM and then re-raises the signal, so the process
        ends "by SIGTERM" even when it finished cleanly; that counts as 0 here. A process that had
        to be killed returns its real (negative) status and sets ``killed``.
        """
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait()
            if self.proc.returncode == -signal.SIGTERM and not self.killed:
                return 0
        return int(self.proc.returncode)

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.exit_status = self.stop()


class ModelEndpointProcess(ChatbotProcess):
    """The intent model endpoint (``chatbot.model_server``) under uvicorn in a child process.

    Its environment picks the model (``MANGAASSIST_MODEL_PACKAGE``, else the default model).
    """

    what = "the model endpoint"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mangaassist.chatbot.serve",
            "--app", "mangaassist.chatbot.model_server:create_app",
            *self.listen_args(), "--log-level", "warning",
        ]  # fmt: skip
