"""The floor of a Python reverse proxy: what uvloop + httptools cost per request with nothing else.

``benchmarks/router_overhead.py`` runs it beside the router and nginx, on the same workers and the
same weighted split, so the ratio the router reaches can be read against the most a Python proxy on
this machine can reach. It is a measuring stick, not a router: no timeouts, limits, stats, traces,
sticky sessions, pins, mirrors or chunked bodies; keep-alive upstream connections, one write per
request and per response.

    python benchmarks/python_floor_proxy.py PORT UPSTREAM_PORT:WEIGHT [UPSTREAM_PORT:WEIGHT ...]
"""

from __future__ import annotations

import asyncio
import collections
import random
import sys

import httptools
import uvloop

_HOP = frozenset({b"connection", b"keep-alive", b"content-length", b"transfer-encoding", b"host"})


class Upstream(asyncio.Protocol):
    """One keep-alive connection to a worker; a request at a time."""

    def __init__(self, idle: collections.deque[Upstream]) -> None:
        self.idle = idle
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        assert waiter is not None
        waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))
        self.headers, self.body = [], []
        self.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("worker closed the connection"))


class Proxy(asyncio.Protocol):
    def __init__(
        self, ports: list[int], weights: list[int], idle: dict[int, collections.deque[Upstream]]
    ) -> None:
        self.ports, self.weights, self.idle = ports, weights, idle
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        request = (self.parser.get_method(), self.url, self.headers, b"".join(self.body))
        self.url, self.headers, self.body = b"", [], []
        asyncio.get_running_loop().create_task(self.forward(*request))

    async def forward(
        self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        port = random.choices(self.ports, self.weights)[0]
        idle = self.idle[port]
        if idle:
            conn = idle.pop()
        else:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(lambda: Upstream(idle), "127.0.0.1", port)
        out = [method, b" ", url, b" HTTP/1.1\r\nhost: 127.0.0.1\r\n"]
        for name, value in headers:
            if name.lower() not in _HOP:
                out += [name, b": ", value, b"\r\n"]
        out.append(b"content-length: %d\r\n\r\n" % len(body))
        out.append(body)
        conn.waiter = asyncio.get_running_loop().create_future()
        assert conn.transport is not None
        conn.transport.write(b"".join(out))
        status, response_headers, response_body = await conn.waiter
        reply = [b"HTTP/1.1 %d -\r\n" % status]
        for name, value in response_headers:
            if name.lower() not in _HOP:
                reply += [name, b": ", value, b"\r\n"]
        reply += [b"content-length: %d\r\n\r\n" % len(response_body), response_body]
        assert self.transport is not None
        self.transport.write(b"".join(reply))


async def serve(port: int, upstreams: list[tuple[int, int]]) -> None:
    ports = [p for p, _ in upstreams]
    weights = [w for _, w in upstreams]
    idle: dict[int, collections.deque[Upstream]] = {p: collections.deque() for p in ports}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Proxy(ports, weights, idle), "127.0.0.1", port, backlog=2048)
    await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any(":" not in a for a in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    upstreams = [(int(p), int(w)) for p, w in (a.split(":", 1) for a in argv[1:])]
    uvloop.run(serve(int(argv[0]), upstreams))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
