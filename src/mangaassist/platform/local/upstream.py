"""A small, fast HTTP/1.1 client for the router: keep-alive connection pools to worker processes.

The router forwards every request through an ``UpstreamPool`` (one per worker endpoint). It parses
responses with ``httptools`` straight off the socket and hands the body on chunk by chunk as it
arrives, so chunked responses and server-sent events pass through without buffering. (httpx's
pure-Python stack costs several times more per request; the router's latency budget is 2 ms p99.)

Limits (``UpstreamError`` kind ``timeout``, its ``phase`` saying which): a connection must be made
within ``connect_timeout_s`` (``connect``), the response headers must arrive within ``timeout_s``
of the request being written (``response``), and once they did, the body may not go silent for
longer than ``idle_timeout_s`` between two chunks (``idle``: the connection is closed).

Retries: only where the worker cannot have acted on the request. A request written on a reused
keep-alive connection that the worker had just closed (reset, nothing received) is sent again once
on a fresh connection, and only for an idempotent method (``GET``, ``HEAD``, ``OPTIONS``, ``PUT``,
``DELETE``, ``TRACE``): a ``POST`` that was written may have been read and acted on. A refused
connection sent nothing; the router may try it on another worker (``router.py``).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import AsyncIterator, Sequence

import httptools

Headers = Sequence[tuple[bytes, bytes]]

_MAX_BUFFER = 1 << 20  # pause reading from the worker when the client lags this far behind
_IDLE_S = 30.0  # workers keep idle connections 75 s; drop ours well before
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods a request of which may be sent twice (RFC 9110, 9.2.2): the only ones retried."""


class UpstreamError(Exception):
    """The worker could not be reached or broke the exchange; ``kind`` says how.

    Kinds: ``connect`` (refused or unreachable), ``timeout`` (``phase``: ``connect``, ``response``
    or ``idle``), ``reset``, ``bad_response``, ``too_large``."""

    def __init__(self, kind: str, detail: str = "", *, phase: str | None = None) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.phase = phase


class UpstreamResponse:
    """Status and headers of a worker's answer; the body is read with ``chunks()``."""

    def __init__(self, conn: _Connection, idle_timeout_s: float | None = None) -> None:
        self._conn = conn
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.idle_timeout_s = idle_timeout_s

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; the connection goes back to the pool once it is complete.

        Raises ``UpstreamError`` (``timeout``, phase ``idle``) when the worker sends nothing for
        ``idle_timeout_s`` while more is expected; the connection is closed then."""
        conn = self._conn
        idle = self.idle_timeout_s
        loop = asyncio.get_running_loop()
        while True:
            if conn.body:
                data = b"".join(conn.body)
                conn.body.clear()
                conn.buffered = 0
                if conn.paused:
                    conn.paused = False
                    if conn.transport is not None:
                        conn.transport.resume_reading()
                yield data
                continue
            if conn.complete:
                conn.finish()
                return
            if conn.error is not None:
                raise conn.error
            conn.waiter = loop.create_future()
            if idle is None:
                await conn.waiter
                continue
            timer = loop.call_later(idle, conn.idle_out, idle)
            try:
                await conn.waiter
            finally:
                timer.cancel()

    async def read(self, limit: int = 1 << 24) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                self._conn.close()
                raise UpstreamError("too_large", f"body over {limit} bytes")
        return b"".join(parts)

    def abandon(self) -> None:
        """Stop reading (the client went away): the connection is closed, not reused."""
        if not self._conn.complete:
            self._conn.close()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.headers_future: asyncio.Future[UpstreamResponse] | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.complete = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.received = False
        self.keep_alive = True
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("bad_response", str(exc)))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None and not self.complete and self.error is None:
            self._fail(UpstreamError("reset", str(exc or "connection closed by the worker")))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        fut = self.headers_future
        if fut is not None and not fut.done():
            fut.set_result(self.response)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _MAX_BUFFER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # helpers
    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:  # the first failure is the cause (a timeout, then our own close)
            self.error = error
        else:
            error = self.error
        fut = self.headers_future
        if fut is not None and not fut.done():
            fut.set_exception(error)
        self._wake()

    def time_out(self, timeout_s: float) -> None:
        if self.headers_future is not None and not self.headers_future.done():
            self._fail(
                UpstreamError("timeout", f"no response headers within {timeout_s:g}s", phase="response")
            )

    def idle_out(self, timeout_s: float) -> None:
        if self.response is not None and not self.complete:
            self._fail(
                UpstreamError("timeout", f"no body data for {timeout_s:g}s after the headers", phase="idle")
            )
            self.close()

    def start(self, request: bytes, idle_timeout_s: float | None = None) -> asyncio.Future[UpstreamResponse]:
        self.response = UpstreamResponse(self, idle_timeout_s)
        self.headers_future = asyncio.get_running_loop().create_future()
        self.body.clear()
        self.buffered = 0
        self.complete = False
        self.error = None
        self.received = False
        assert self.transport is not None
        self.transport.write(request)
        return self.headers_future

    def finish(self) -> None:
        self.response = None
        self.headers_future = None
        if self.keep_alive and not self.closed:
            self.idle_since = time.monotonic()
            self.pool.release(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one worker (``host:port``)."""

    def __init__(self, host: str, port: int, max_idle: int = 128) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._host_header = f"{host}:{port}".encode()

    async def _connect(self, timeout_s: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port
                )
        except TimeoutError:  # ours, or the system's (ETIMEDOUT) without one
            within = f" within {timeout_s:g}s" if timeout_s is not None else ""
            raise UpstreamError(
                "timeout", f"no connection to {self.host}:{self.port}{within}", phase="connect"
            ) from None
        except OSError as exc:
            raise UpstreamError("connect", str(exc)) from None
        conn.transport = transport  # uvloop may call connection_made after create_connection returns
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def release(self, conn: _Connection) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def request(
        self,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes,
        timeout_s: float,
        *,
        connect_timeout_s: float | None = None,
        idle_timeout_s: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; return once the response headers arrived (body via ``chunks()``).

        ``timeout_s``: from the request written to the response headers; ``connect_timeout_s``: for
        a new connection (None: the system's); ``idle_timeout_s``: the longest silence within the
        body (None: none). An idempotent request sent on a reused connection that the worker had
        just closed (nothing received) is retried once on a fresh connection (module docstring).
        """
        lines = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", self._host_header, b"\r\n"]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        lines += [b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body]
        request = b"".join(lines)
        now = time.monotonic()
        for attempt in (0, 1):
            conn: _Connection | None = None
            while self._idle:
                candidate = self._idle.pop()
                if candidate.closed or now - candidate.idle_since > _IDLE_S:
                    candidate.close()
                    continue
                conn = candidate
                break
            reused = conn is not None
            if conn is None:
                conn = await self._connect(connect_timeout_s)
            fut = conn.start(request, idle_timeout_s)
            if method == "HEAD":
                conn.keep_alive = False
            timer = asyncio.get_running_loop().call_later(timeout_s, conn.time_out, timeout_s)
            try:
                response = await fut
            except UpstreamError as exc:
                conn.close()
                if (
                    reused
                    and attempt == 0
                    and not conn.received
                    and exc.kind == "reset"
                    and method in IDEMPOTENT
                ):
                    continue
                raise
            finally:
                timer.cancel()
            if method == "HEAD":
                conn.complete = True
            return response
        raise UpstreamError("reset", "connection closed twice")  # pragma: no cover
