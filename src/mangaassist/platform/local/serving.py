"""What the control plane and the router host share to serve HTTP: uvicorn on sockets they bind
themselves (TCP on loopback, or a Unix socket), several servers on one event loop, and a small raw
ASGI base for their JSON APIs (``JsonApi``: one JSON body in, one JSON document out, errors mapped
to statuses: 404 not found, 409 conflict, 503 not now (``retry``), 400 bad input, 500 anything
else, logged)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError

log = logging.getLogger("mangaassist.platform")


class Conflict(MangaAssistError):
    """The operation does not fit the current state (e.g. retiring a revision that has weight)."""


class Unavailable(MangaAssistError):
    """Not now, soon: answered 503 with ``"retry": true`` (a service being restored after a crash)."""


class EmbeddedServer(uvicorn.Server):
    """uvicorn on a loop it shares with other servers: the process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: the kernel picks); ConfigError naming it if taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def listen_unix(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, readable and writable by its owner only (0600): what
    is said on it changes routing, so no other local user may speak. A stale file is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    sock.listen(256)
    sock.setblocking(False)
    return sock


def serve(app: Any, sock: socket.socket) -> tuple[EmbeddedServer, asyncio.Task[None]]:
    """uvicorn serving ``app`` on ``sock`` as a task of the running loop."""
    config = uvicorn.Config(
        app,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # nothing sits in front of these servers: the peer is the client
        timeout_keep_alive=30,
        backlog=2048,
        server_header=False,  # the worker's Server and Date headers pass through unchanged
        date_header=False,
        timeout_graceful_shutdown=5,
    )
    server = EmbeddedServer(config)
    return server, asyncio.create_task(server.serve(sockets=[sock]))


def query_int(query: bytes, key: str, default: int) -> int:
    """The non-negative integer ``key`` of a query string, else ``default``."""
    for item in query.decode(errors="replace").split("&"):
        name, _, value = item.partition("=")
        if name == key and value.isdigit():
            return int(value)
    return default


def json_body(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ConfigError("request body must be a JSON object")
    return body


class JsonApi:
    """A raw ASGI JSON API: subclasses answer ``handle``; ``answered`` runs after the reply."""

    name = "API"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        path = scope["path"]
        try:
            status, result = (
                200,
                await self.handle(scope["method"], path, scope["query_string"], b"".join(chunks)),
            )
        except NotFoundError as exc:
            status, result = 404, {"error": str(exc)}
        except Conflict as exc:
            status, result = 409, {"error": str(exc)}
        except Unavailable as exc:
            status, result = 503, {"error": str(exc), "retry": True}
        except MangaAssistError as exc:
            status, result = 400, {"error": str(exc)}
        except Exception as exc:  # reported to the caller; the process keeps running
            log.exception("%s error", self.name)
            status, result = 500, {"error": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(result).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
        self.answered(path, status)

    async def handle(self, method: str, path: str, query: bytes, raw: bytes) -> Any:
        raise NotImplementedError

    def answered(self, path: str, status: int) -> None:
        """After the answer went out (a shutdown request stops here, once it is answered)."""


def run_process(main: Coroutine[Any, Any, None]) -> None:
    """Run a server process's ``main`` on uvloop (asyncio's loop without it); a ``MangaAssistError``
    is printed as ``error: ...`` and exits with status 2."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(main)
    except MangaAssistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def until_signalled(
    stopping: asyncio.Event, start: Callable[[], Awaitable[None]], shutdown: Callable[[], Awaitable[None]]
) -> None:
    """A server process's life: ``start``, then wait until SIGTERM or SIGINT (or anything else
    sets ``stopping``), then ``shutdown``."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await start()
    await stopping.wait()
    await shutdown()
