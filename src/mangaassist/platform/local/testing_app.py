"""A tiny workload for tests and benchmarks of the platform (shipped like httpx's MockTransport).

``create_app`` is a uvicorn factory (raw ASGI, starts in a fraction of a second) that behaves like
a revision of the chatbot where the platform can see it: it answers ``/healthz``, ``/readyz``,
``POST /v1/chat`` (JSON with ``intent``, echoing its revision and session) and
``POST /v1/feedback``; it stamps ``X-MangaAssist-Revision`` (and ``X-MangaAssist-Pid`` on
``/readyz``, like the chatbot) and, when asked, the quality headers.
Behaviour comes from environment variables (one value per revision):

=============================  ===============================================================
``TESTAPP_READY_AFTER_S``      seconds before ``/readyz`` answers 200 (default 0)
``TESTAPP_NEVER_READY``        a reason: ``/readyz`` answers 503 with it forever
``TESTAPP_STATUS``             status of every ``/v1/chat`` answer (default 200)
``TESTAPP_DELAY_MS``           delay before every ``/v1/chat`` answer
``TESTAPP_FAIL_EVERY``         every Nth ``/v1/chat`` answers 500 (a partial error rate, 1/N)
``TESTAPP_INTENT``             the ``intent`` it reports (default ``product_search``)
``TESTAPP_CRASH_ON_START``     exit at once with status 3 (a revision that cannot run)
``TESTAPP_STAMP_REVISION``     the revision it stamps and reports instead of
                               ``MANGAASSIST_REVISION`` (a process answering as another
                               revision: the supervisor never counts it ready)
=============================  ===============================================================

Other endpoints: ``GET /echo`` (tiny, for benchmarks), ``GET /stream?n=N&ms=M`` (chunked, N chunks
M ms apart), ``GET /sse?n=N&ms=M`` (server-sent events), ``GET /sleep?ms=M``, ``POST /crash``.
Request header ``X-Test-Flags: fallback,guardrail`` sets the quality headers on a chat answer.

Misbehaviour for the router's drills (tests/integration/platform/test_router_drills.py):
``GET /stall-body?s=S`` sends its headers and part of a chunked body, then nothing for S seconds
(default 60) before it ends; ``GET /never?s=S`` answers nothing for S seconds (default 60; the
process serves everything else); ``POST /hang?s=S`` blocks the whole process for S seconds (default
3600): it still accepts connections (the kernel does) but answers nothing, ``/healthz`` included;
with ``&backlog=0`` it first shrinks its listening socket's queue (the descriptor the supervisor's
launcher got, ``argv[1]``) so that new connections are not even accepted.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send


def create_app() -> Any:
    revision = os.environ.get("TESTAPP_STAMP_REVISION") or os.environ.get("MANGAASSIST_REVISION", "dev")
    if os.environ.get("TESTAPP_CRASH_ON_START"):
        os._exit(3)
    ready_at = time.monotonic() + float(os.environ.get("TESTAPP_READY_AFTER_S", "0"))
    never = os.environ.get("TESTAPP_NEVER_READY", "")
    status = int(os.environ.get("TESTAPP_STATUS", "200"))
    delay = float(os.environ.get("TESTAPP_DELAY_MS", "0")) / 1000
    intent = os.environ.get("TESTAPP_INTENT", "product_search")
    fail_every = int(os.environ.get("TESTAPP_FAIL_EVERY", "0"))
    chats = [0]
    rev_header = (b"x-mangaassist-revision", revision.encode())
    pid_header = ((b"x-mangaassist-pid", str(os.getpid()).encode()),)

    async def reply(
        send: Send,
        code: int,
        body: dict[str, Any],
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        data = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            rev_header,
            *extra,
        ]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        headers = dict(scope["headers"])
        if path == "/echo":
            await reply(send, 200, {"revision": revision})
        elif path == "/fail":  # a server error, for SLO and alert drills (CD-08)
            await reply(send, 500, {"error": "failing on purpose", "revision": revision})
        elif path == "/metrics":  # what Prometheus scrapes from a worker (CD-08)
            text = f'mangaassist_test_chats_total{{revision="{revision}"}} {chats[0]}\n'.encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4"), rev_header],
                }
            )
            await send({"type": "http.response.body", "body": text})
        elif path == "/healthz":
            await reply(send, 200, {"status": "ok", "revision": revision})
        elif path == "/readyz":
            if never:
                await reply(send, 503, {"error": "not ready", "reason": never}, pid_header)
            elif time.monotonic() < ready_at:
                await reply(send, 503, {"error": "not ready", "reason": "loading test app"}, pid_header)
            else:
                await reply(send, 200, {"ready": True, "revision": revision}, pid_header)
        elif path == "/v1/chat":
            if delay:
                await asyncio.sleep(delay)
            try:
                sent = json.loads(body or b"{}")
            except ValueError:
                sent = {}
            flags = headers.get(b"x-test-flags", b"").decode().split(",")
            extra_headers = [(b"x-mangaassist-intent", intent.encode())]
            if "fallback" in flags:
                extra_headers.append((b"x-mangaassist-fallback", b"1"))
            if "guardrail" in flags:
                extra_headers.append((b"x-mangaassist-guardrail", b"1"))
            session = headers.get(b"x-session-id", b"").decode() or sent.get("session_id")
            answer = {
                "answer": f"answer from {revision}",
                "intent": intent,
                "revision": revision,
                "session_id": session,
                "shadow": headers.get(b"x-mangaassist-shadow") == b"1",
            }
            chats[0] += 1
            if status >= 400 or (fail_every and chats[0] % fail_every == 0):
                code = status if status >= 400 else 500
                await reply(send, code, {"error": "configured failure", "revision": revision})
            else:
                await reply(send, status, answer, tuple(extra_headers))
        elif path == "/v1/feedback":
            await reply(send, 200, {"ok": True})
        elif path == "/sleep":
            await asyncio.sleep(float(query.get("ms", "100")) / 1000)
            await reply(send, 200, {"revision": revision, "slept_ms": float(query.get("ms", "100"))})
        elif path in ("/stream", "/sse"):
            n = int(query.get("n", "5"))
            pause = float(query.get("ms", "50")) / 1000
            ctype = b"text/event-stream" if path == "/sse" else b"text/plain"
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", ctype), rev_header],
                }
            )
            for i in range(n):
                chunk = f"data: {i} {time.time()}\n\n" if path == "/sse" else f"{i} {time.time()}\n"
                await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})
                await asyncio.sleep(pause)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif path == "/crash":
            os._exit(9)
        elif path == "/stall-body":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain"), rev_header],
                }
            )
            await send({"type": "http.response.body", "body": b"the first part, then ", "more_body": True})
            await asyncio.sleep(float(query.get("s", "60")))
            await send({"type": "http.response.body", "body": b"too late\n", "more_body": False})
        elif path == "/never":
            await asyncio.sleep(float(query.get("s", "60")))
            await reply(send, 200, {"revision": revision, "late": True})
        elif path == "/hang":
            if "backlog" in query:  # the launcher's listening socket: argv[1] is its descriptor
                listener = socket.socket(fileno=int(sys.argv[1]))
                listener.listen(int(query["backlog"]))
                listener.detach()  # the server keeps using the descriptor
            time.sleep(float(query.get("s", "3600")))  # blocks the event loop: nothing is answered
            await reply(send, 200, {"revision": revision, "hung_for_s": float(query.get("s", "3600"))})
        else:
            await reply(send, 404, {"error": f"no {path}"})

    return app
