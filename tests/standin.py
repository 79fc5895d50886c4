"""Real HTTP stand-ins on loopback for tests: a peer our code calls (Grafana's API, an OTLP receiver,
a worker's readiness port, a chatbot answering the load generator), served by the standard
library's ``ThreadingHTTPServer`` on a free port of 127.0.0.1 in a daemon thread.

``StandIn`` is the handler base (silent, with ``reply``); ``serving`` runs a handler class and
yields the server's base URL, and stops it (shutdown, close, thread joined) however the test ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandIn(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers in one call."""

    def reply(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``status`` with ``headers``, ``Content-Type`` and ``Content-Length``, then ``body``."""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self) -> bytes:
        """The request's body, as long as its ``Content-Length`` says (none: empty)."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler], *, before_stop: Callable[[], None] | None = None
) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (a free port) until the block ends; yields
    ``http://127.0.0.1:PORT``. ``before_stop`` runs first when it ends (release what a handler may
    be waiting on, or shutdown waits for it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name=f"standin-{handler.__name__}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if before_stop is not None:
            before_stop()
        server.shutdown()
        server.server_close()
        thread.join(5)
