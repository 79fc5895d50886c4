"""Serving a candidate build before it is published, and a stub chat API (CD-05's ``browser-check``).

``CandidateServer(files, api=URL, prefix="/")`` serves one build's files from memory on a free
loopback port, the way the edge serves a channel (``platform/local/edge.py``): entry files
``no-cache``, ``assets/`` immutable, the release header, the same content types; ``prefix`` is the
channel's path (``/`` or ``/previews/<branch>/``), so relative URLs are exercised as they will be
served. ``/v1/*`` is proxied to ``api`` (the environment's chatbot router or the stub).

``StubChatbot()`` answers ``POST /v1/chat`` with a fixed answer and two sources and ``POST
/v1/feedback`` with ``{"ok": true}``: the chat API of a check when no chatbot runs (tests, drills).
It counts the chats it answered.

Both are threads of the calling process, used as context managers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import httpx

from mangaassist.platform.static_site import (
    ASSET_CACHE_CONTROL,
    ENTRY_CACHE_CONTROL,
    RELEASE_HEADER,
    content_type,
    file_digest,
    is_asset,
    release_id,
)

FORWARDED = ("Content-Type", "Accept", "X-Session-Id", "Authorization", "traceparent", "tracestate")
_NOT_RETURNED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "date", "server"}
)
STUB_ANSWER = "You can return an unread manga within 30 days of delivery for a full refund."
STUB_SOURCES = (
    {"id": "returns-policy", "title": "Returns and refunds"},
    {"id": "shipping-policy", "title": "Shipping and delivery"},
)


class _Threaded:
    """A ``ThreadingHTTPServer`` on 127.0.0.1 (port 0: a free one) served by a daemon thread."""

    server: ThreadingHTTPServer

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _CandidateHandler(BaseHTTPRequestHandler):
    server: _CandidateHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, data: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/v1" or path.startswith("/v1/"):
            return self._proxy()
        prefix = self.server.prefix
        if not path.startswith(prefix):
            return self._send(404, b"not found\n", {"Content-Type": "text/plain"})
        rest = path[len(prefix) :] or "index.html"
        data = self.server.files.get(rest)
        if data is None or self.command not in ("GET", "HEAD"):
            return self._send(404, f"not found: {path}\n".encode(), {"Content-Type": "text/plain"})
        self._send(
            200,
            data,
            {
                "Content-Type": content_type(rest),
                "Cache-Control": ASSET_CACHE_CONTROL if is_asset(rest) else ENTRY_CACHE_CONTROL,
                "ETag": f'"{file_digest(data)}"',
                RELEASE_HEADER: self.server.release_id,
            },
        )

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name: value for name in FORWARDED if (value := self.headers.get(name))}
        try:
            answer = self.server.http.request(
                self.command, self.server.api + self.path, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            return self._send(502, f"the chat API cannot be reached: {exc!r}\n".encode(), {})
        returned = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_RETURNED}
        self._send(answer.status_code, answer.content, returned)

    do_GET = do_HEAD = do_POST = _route


class _CandidateHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: Mapping[str, bytes], api: str, prefix: str) -> None:
        super().__init__(("127.0.0.1", 0), _CandidateHandler)
        self.files = dict(files)
        self.release_id = release_id(self.files)
        self.api = api.rstrip("/")
        self.prefix = prefix
        self.http = httpx.Client(timeout=60.0)

    def server_close(self) -> None:
        super().server_close()
        self.http.close()


class CandidateServer(_Threaded):
    """One build's files served at ``prefix`` on a free loopback port, ``/v1`` proxied to ``api``."""

    server: _CandidateHTTPServer

    def __init__(self, files: Mapping[str, bytes], *, api: str, prefix: str = "/") -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"prefix {prefix!r}: a URL path starting and ending with /")
        self.prefix = prefix
        self.server = _CandidateHTTPServer(files, api, prefix)
        self._start()

    @property
    def page_url(self) -> str:
        """The host page (``index.html``) at the channel's path."""
        return self.url + self.prefix


class _StubHandler(BaseHTTPRequestHandler):
    server: _StubHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-MangaAssist-Revision", "stub")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path in ("/healthz", "/readyz"):
            return self._json(200, {"ok": True})
        self._json(404, {"detail": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._json(422, {"detail": "not JSON"})
        if self.path == "/v1/chat":
            self.server.chats += 1
            return self._json(
                200,
                {
                    "answer": STUB_ANSWER,
                    "intent": "policy_question",
                    "confidence": 0.97,
                    "sources": list(STUB_SOURCES),
                    "session_id": str(body.get("session_id", "")),
                    "versions": {"revision": "stub"},
                },
            )
        if self.path == "/v1/feedback":
            return self._json(200, {"ok": True})
        self._json(404, {"detail": "not found"})


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.chats = 0


class StubChatbot(_Threaded):
    """A chat API stand-in on a free loopback port: one fixed answer with two sources."""

    server: _StubHTTPServer

    def __init__(self) -> None:
        self.server = _StubHTTPServer()
        self._start()

    @property
    def chats(self) -> int:
        return self.server.chats
