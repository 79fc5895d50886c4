"""The chatbot's HTTP API (FastAPI). ``create_app`` is the uvicorn factory.

Endpoints: ``POST /v1/chat``, ``POST /v1/feedback``, ``GET /healthz`` (the process is up),
``GET /readyz`` (model, index and config are loaded), ``GET /metrics`` (Prometheus), and
``POST /v1/signin`` (development tokens) only when ``MANGAASSIST_DEV_SIGNIN=1``.

The customer of a chat is the verified token of ``Authorization: Bearer``, or of
``X-MangaAssist-Authorization: Bearer`` when a signer owns ``Authorization`` (a SigV4-signed pinned
request to a Lambda function URL; the rules: ``chatbot.identity``): a ``customer_id`` in the body
is refused (400), an invalid token or two different ones answer 401 (``WWW-Authenticate: Bearer
error="invalid_token"``), and no token is an anonymous request. Tokens are never logged.

The heavy loading runs in a background thread after start-up, so ``/healthz`` answers at once
and ``/readyz`` tells a supervisor when the worker may get traffic.

Traces (``platform.tracing``): ``create_app`` sets up the process's tracing (service
``mangaassist-chatbot``, version = the revision) and ``TraceMiddleware`` makes every API request a
server span, a child of the ``traceparent`` the router sent, answered with ``X-MangaAssist-Trace-Id``
and logged with its trace id (one access line per request; every log record carries ``trace_id``).
A chat's span carries the intent, the flags and each stage's time (``mangaassist.stage.<stage>_ms``,
the numbers of ``mangaassist_chat_stage_seconds``); the call to the model endpoint is a client span
under it (``intent_remote``), so the model server's span joins the same trace. FastAPI's own
OpenTelemetry instrumentation (newer FastAPI versions, on by default once a tracer provider is set)
is turned off (``NO_NATIVE_TELEMETRY``): it would add a second server span and three operation spans
to every request, and older FastAPI versions, which ``pyproject.toml`` allows, have none.

Request series: with ``MANGAASSIST_REQUEST_SERIES=1`` (set by ``EcsServiceCompute`` when a collector
in the task remote-writes to Amazon Managed Prometheus) the worker records every request it answers
for its service (``MANGAASSIST_SERVICE``) and revision and ``/metrics`` also exports the router's
per-revision families (``mangaassist_router_*``, the same names and labels), so a canary judge reads
them where no router stands in front of the workers (``platform.request_series``: what is counted,
and what a worker cannot see that a router could). Unset, nothing of it runs: locally the router
records every request, and a worker exporting the same series would count each one twice.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mangaassist.chatbot.emf import EmfWriter
from mangaassist.chatbot.faults import FaultPlan
from mangaassist.chatbot.identity import (
    CUSTOMER_TOKEN_HEADER,
    Customer,
    InvalidToken,
    KeysUnavailable,
    TokenVerifier,
    customer_token,
    issue_token,
)
from mangaassist.chatbot.intent_remote import FallbackReason, HttpIntentClient
from mangaassist.chatbot.service import STAGES, ChatService, Runtime
from mangaassist.chatbot.settings import Settings
from mangaassist.chatbot.warmup import warm_up
from mangaassist.platform import request_series
from mangaassist.platform.request_series import RequestSeriesMiddleware, RouterCollector, RouterStats
from mangaassist.platform.tracing import TraceMiddleware, setup_tracing, trace_logging

log = logging.getLogger("mangaassist.chatbot")

MAX_MESSAGE = 4000
MessageText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_MESSAGE)]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    session_id: Identifier
    message: MessageText
    customer_id: Any = Field(default=None, exclude=True)
    """Refused (400) whenever present: the customer comes from the signed token only. Declared so
    that its presence is seen (``model_fields_set``) rather than silently ignored."""


class SignInRequest(BaseModel):
    customer_id: Identifier


SIGNIN_TTL_S = 3600
CUSTOMER_IN_BODY = (
    "customer_id is not accepted in the request body: send the customer's signed token as "
    "'Authorization: Bearer <token>' instead (docs/chatbot.md, Customer identity)"
)


class SourceOut(BaseModel):
    id: str
    title: str


class Versions(BaseModel):
    revision: str
    model: str
    config: str
    index: str
    embedder: str | None = None
    """The embedding model that embedded the query for the knowledge-base search: the ``index``
    version's own (chat answers only)."""
    configs: dict[str, str] | None = None
    """Per config profile, the version this answer was made with (CD-06; only with a config server
    or config folder, so the contract without one is unchanged)."""


class ChatResponse(BaseModel):
    answer: str
    intent: str
    confidence: float
    sources: list[SourceOut]
    session_id: str
    versions: Versions


class FeedbackRequest(BaseModel):
    session_id: Identifier
    rating: Literal["up", "down"]


EMBED_BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 32.0)
"""``mangaassist_embed_batch_size``'s buckets (BatchingEmbedder forms batches of at most 32)."""


class Metrics:
    """The worker's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mangaassist_requests_total", "HTTP requests", ["endpoint", "status"], registry=r
        )
        self.intents = Counter(
            "mangaassist_chat_intent_total", "Chat answers by intent", ["intent"], registry=r
        )
        self.fallbacks = Counter("mangaassist_chat_fallback_total", "Answers without grounding", registry=r)
        self.guardrails = Counter(
            "mangaassist_chat_guardrail_total", "Guardrail firings", ["reason"], registry=r
        )
        self.feedback = Counter("mangaassist_feedback_total", "Feedback by rating", ["rating"], registry=r)
        buckets = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
        self.latency = Histogram(
            "mangaassist_chat_latency_seconds", "Chat latency", buckets=buckets, registry=r
        )
        self.stages = Histogram(
            "mangaassist_chat_stage_seconds", "Chat time by stage", ["stage"], buckets=buckets, registry=r
        )
        self.ready = Gauge("mangaassist_ready", "1 when model, index and config are loaded", registry=r)
        self.info = Gauge(
            "mangaassist_info", "Versions served", ["revision", "model", "config", "index"], registry=r
        )
        self.intent_fallbacks = Counter(
            "mangaassist_intent_fallback_total",
            "Intent answers from the in-process champion because the model endpoint failed",
            ["reason"],
            registry=r,
        )
        self.token_rejections = Counter(
            "mangaassist_customer_token_rejected_total",
            "Chat requests refused for their customer token, by reason",
            ["reason"],
            registry=r,
        )
        self.embed_batch_size = Histogram(
            "mangaassist_embed_batch_size",
            "Queries per forward pass of the query embedder (BatchingEmbedder)",
            buckets=EMBED_BATCH_BUCKETS,
            registry=r,
        )
        self.embed_forward = Histogram(
            "mangaassist_embed_forward_seconds",
            "The query embedder's time per batch (the model alone, in its worker thread)",
            buckets=(0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0),
            registry=r,
        )

    def observe_embed_batch(self, size: int, seconds: float) -> None:
        """``BatchingEmbedder.on_batch``: one observation per batch, of its size and its time."""
        self.embed_batch_size.observe(size)
        self.embed_forward.observe(seconds)


class CountsRequests(Protocol):
    """What ``RevisionHeader`` needs of a worker's metrics: a counter labelled (endpoint, status)."""

    requests: Counter


KNOWN_PATHS: frozenset[str] = frozenset(
    {"/v1/chat", "/v1/feedback", "/v1/signin", "/healthz", "/readyz", "/metrics"}
)
_INTERNAL_ERROR = b'{"error":"internal error"}'


class RevisionHeader:
    """Pure ASGI middleware: every response carries ``X-MangaAssist-Revision`` and is counted.

    ``/readyz`` answers also carry ``X-MangaAssist-Pid`` (this process): the platform's supervisor
    counts a worker ready only when the revision and process it started are the ones answering.

    It also turns an unhandled exception into that revision's 500: Starlette's own error handler
    sits outside every user middleware, so its 500s would carry no revision header and escape the
    per-revision counts the router and the canary judges rely on.
    (Starlette's ``@app.middleware("http")`` costs about a millisecond per request; this does not.)
    The model endpoint (``chatbot.model_server``) uses it too, with its own ``known_paths``.
    """

    def __init__(
        self,
        app: ASGIApp,
        revision: str,
        metrics: CountsRequests,
        known_paths: frozenset[str] = KNOWN_PATHS,
        emf: EmfWriter | None = None,
    ) -> None:
        self.app = app
        self.emf = emf
        """On AWS: each response on the service's counted path as an EMF line (``chatbot.emf``)."""
        self.header = (b"x-mangaassist-revision", revision.encode())
        self.stamp: tuple[tuple[bytes, bytes], ...] = (self.header,)
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # unknown paths share one label: request paths must not create unbounded metric series
        path = scope.get("path", "") if scope.get("path", "") in self.known_paths else "other"
        stamp = (
            self.stamp if path != "/readyz" else (self.header, (b"x-mangaassist-pid", b"%d" % os.getpid()))
        )
        started = False
        began = time.perf_counter()

        async def stamped(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *stamp]
                self.metrics.requests.labels(path, str(message["status"])).inc()
                if self.emf is not None and (b"x-mangaassist-shadow", b"1") not in scope.get("headers", ()):
                    self.emf.request(path, int(message["status"]), time.perf_counter() - began)
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        except Exception:
            log.exception("unhandled error on %s", path)
            if started:  # the status line is gone already; the connection is all we can end
                raise
            await stamped(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_INTERNAL_ERROR)).encode()),
                    ],
                }
            )
            await stamped({"type": "http.response.body", "body": _INTERNAL_ERROR})


def _is_shadow(request: Request) -> bool:
    """The router marks mirrored requests; they are answered but change no state."""
    return request.headers.get("x-mangaassist-shadow") == "1"


def _is_pinned(request: Request) -> bool:
    """The request named its revision (``X-MangaAssist-Revision``): a gate's, not a user's."""
    return "x-mangaassist-revision" in request.headers


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        out.append({"field": ".".join(loc) or "body", "message": str(err.get("msg", "invalid"))})
    return out


def invalid_token_response(exc: InvalidToken) -> JSONResponse:
    """401 naming why the token proves nothing; RFC 6750's challenge in ``WWW-Authenticate``."""
    return JSONResponse(
        {"error": f"invalid customer token: {exc}", "reason": exc.reason.value},
        status_code=401,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.reason.value}"'},
    )


def not_ready_response(reason: str) -> JSONResponse:
    """503 with the reason and ``Retry-After``: what ``/readyz`` answers until a worker is ready."""
    return JSONResponse(
        {"error": "not ready", "reason": reason}, status_code=503, headers={"Retry-After": "1"}
    )


async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON; 422 naming every field at fault otherwise."""
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return JSONResponse({"error": "malformed JSON body"}, status_code=400)
    errors = _field_errors(exc)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse({"error": f"invalid request: {summary}", "fields": errors}, status_code=422)


def _count_intent_fallbacks(runtime: Runtime, metrics: Metrics) -> None:
    """Export the remote intent client's fallbacks (after warm-up: its calls are not traffic)."""
    client = runtime.intents
    if not isinstance(client, HttpIntentClient):
        return
    for reason in FallbackReason:  # every series exists from the start, at 0
        metrics.intent_fallbacks.labels(reason.value)
    client.on_fallback = lambda reason: metrics.intent_fallbacks.labels(reason.value).inc()


SERVICE_NAME = "mangaassist-chatbot"
"""The chatbot's ``service.name`` in traces."""
NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False}} if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}
)
"""``FastAPI(**NO_NATIVE_TELEMETRY)``: no FastAPI spans (``TraceMiddleware`` makes the one per request)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    fault = FaultPlan.parse(settings.fault)  # a bad spec stops start-up with a clear error
    setup_tracing(SERVICE_NAME, settings.revision)
    trace_logging()
    metrics = Metrics()
    rng = random.Random()
    state: dict[str, Any] = {"service": None, "error": None, "loaded_at": None}

    def load() -> None:
        try:
            runtime = Runtime.load(settings)
            warm_up(runtime)  # ready means fast: a new revision must not look slow to a canary judge
            _count_intent_fallbacks(runtime, metrics)
            # the loaded model and indexes live as long as the process: keep them out of the
            # cyclic GC's generations so collections stay short (fewer latency spikes)
            gc.collect()
            gc.freeze()
            state["service"] = ChatService(runtime, on_embed_batch=metrics.observe_embed_batch)
            state["loaded_at"] = time.time()
            metrics.ready.set(1)
            metrics.info.labels(**runtime.versions).set(1)
        except Exception as exc:  # reported by /readyz; the process stays up to say why
            log.exception("loading the chatbot runtime failed")
            state["error"] = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load, name="runtime-loader", daemon=True).start()
        yield
        service: ChatService | None = state["service"]
        if service is not None:
            await service.aclose()

    app = FastAPI(title="MangaAssist chatbot", version="1", lifespan=lifespan, **NO_NATIVE_TELEMETRY)
    app.state.metrics = metrics
    app.state.runtime_state = state

    emf = EmfWriter.from_env("chatbot", settings.revision, ("/v1/chat",))
    app.add_middleware(RevisionHeader, revision=settings.revision, metrics=metrics, emf=emf)
    if request_series.enabled():  # no router in front (ECS): the worker exports the router's series
        series = RouterStats(os.environ.get(request_series.SERVICE_ENV) or "chatbot")
        metrics.registry.register(RouterCollector(series))
        app.add_middleware(RequestSeriesMiddleware, stats=series, revision=settings.revision)
        app.state.request_series = series
    # outermost: its span covers RevisionHeader's 500s too
    app.add_middleware(TraceMiddleware, scope_name="mangaassist.chatbot", known_paths=KNOWN_PATHS)

    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]

    # the customer's identity: the development key (made on first use) or the JWKS; a bad setting
    # stops start-up with a clear error, like a bad fault spec
    verifier = TokenVerifier.from_settings(settings.identity)

    async def customer_of(request: Request) -> Customer | None:
        """The verified customer of the request's Bearer token (``Authorization``, or
        ``X-MangaAssist-Authorization`` when a signer owns ``Authorization``:
        ``identity.customer_token``); None without one (anonymous). Raises ``InvalidToken`` or
        ``KeysUnavailable``."""
        token = customer_token(
            request.headers.getlist("authorization"), request.headers.getlist(CUSTOMER_TOKEN_HEADER)
        )
        if token is None:
            return None
        if verifier.uses_network:  # a JWKS fetch blocks: keep it off the event loop
            return await asyncio.to_thread(verifier.verify, token)
        return verifier.verify(token)

    def not_ready() -> JSONResponse:
        return not_ready_response(state["error"] or "loading model, index and config")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "revision": settings.revision}

    @app.get("/readyz")
    async def readyz() -> Response:
        service: ChatService | None = state["service"]
        if service is None:
            return not_ready()
        body: dict[str, Any] = {
            "ready": True,
            "versions": service.rt.versions,
            "fault": settings.fault or None,
        }
        if service.rt.configs is not None:  # per profile: stable, candidate, percentage, and from where
            body["configs"] = service.rt.configs.status()
        return JSONResponse(body)

    @app.get("/metrics")
    async def prometheus() -> Response:
        service: ChatService | None = state["service"]
        if service is not None:  # the index version moves with the kb-live alias: report the current one
            metrics.info.clear()
            metrics.info.labels(**service.rt.versions).set(1)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat", response_model=ChatResponse, response_model_exclude_none=True)
    async def chat(body: ChatRequest, request: Request, response: Response) -> Any:
        if "customer_id" in body.model_fields_set:  # refused, so no caller silently loses its identity
            return JSONResponse({"error": CUSTOMER_IN_BODY, "field": "customer_id"}, status_code=400)
        try:
            customer = await customer_of(request)
        except InvalidToken as exc:
            metrics.token_rejections.labels(exc.reason.value).inc()
            return invalid_token_response(exc)
        except KeysUnavailable as exc:
            log.warning("customer tokens cannot be verified: %s", exc)
            return JSONResponse(
                {"error": "customer tokens cannot be verified right now; try again shortly"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        service: ChatService | None = state["service"]
        if service is None:
            return not_ready()
        started = time.perf_counter()
        faulty = fault.applies(_is_pinned(request))
        if faulty and fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        configs = service.rt.configs
        if faulty and fault.should_fail(rng):
            if configs is not None:
                versions = service.rt.active_config(body.session_id).versions
                configs.observe(versions, status=500, latency_ms=(time.perf_counter() - started) * 1000)
            return JSONResponse({"error": "injected fault (MANGAASSIST_FAULT)"}, status_code=500)
        result = await service.chat(
            body.session_id,
            body.message,
            customer.customer_id if customer is not None else None,
            shadow=_is_shadow(request),
        )
        metrics.latency.observe(time.perf_counter() - started)
        if configs is not None and not _is_shadow(request):
            configs.observe(
                result.configs,
                status=200,
                latency_ms=(time.perf_counter() - started) * 1000,
                fallback=result.fallback,
                guardrail=result.guardrail,
            )
        response.headers["X-MangaAssist-Config"] = ",".join(
            f"{k}={v}" for k, v in sorted(result.configs.items())
        )
        metrics.intents.labels(result.intent).inc()
        for stage in STAGES:
            metrics.stages.labels(stage).observe(result.timings_ms.get(stage, 0.0) / 1000)
        span = trace.get_current_span()  # TraceMiddleware's server span of this request
        if span.is_recording():
            span.set_attributes(
                {
                    "mangaassist.intent": result.intent,
                    "mangaassist.model": result.model or service.rt.intents.version,
                    "mangaassist.fallback": result.fallback,
                    "mangaassist.guardrail": result.guardrail,
                    "mangaassist.shadow": _is_shadow(request),
                    **{f"mangaassist.stage.{k}_ms": v for k, v in result.timings_ms.items()},
                }
            )
        response.headers["X-MangaAssist-Intent"] = result.intent
        response.headers["Server-Timing"] = ", ".join(
            f"{k};dur={v:.3f}" for k, v in result.timings_ms.items()
        )
        if emf is not None and not _is_shadow(request):
            emf.answer(fallback=result.fallback, guardrail=result.guardrail)
        if result.fallback:
            metrics.fallbacks.inc()
            response.headers["X-MangaAssist-Fallback"] = "1"
        if result.guardrail:
            for reason in result.guardrail_reasons:
                metrics.guardrails.labels(reason).inc()
            response.headers["X-MangaAssist-Guardrail"] = "1"
            response.headers["X-MangaAssist-Guardrail-Reasons"] = ",".join(result.guardrail_reasons)
        return ChatResponse(
            answer=result.answer,
            intent=result.intent,
            confidence=result.confidence,
            sources=[SourceOut(id=s.id, title=s.title) for s in result.sources],
            session_id=body.session_id,
            versions=Versions(
                **{
                    **service.rt.versions,
                    "index": result.index or service.rt.knowledge.version,
                    "model": result.model or service.rt.intents.version,
                    "config": result.configs.get("runtime", service.rt.config.version),
                    "embedder": result.embedder or None,
                },
                configs=result.configs if configs is not None else None,
            ),
        )

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest, request: Request) -> Any:
        service: ChatService | None = state["service"]
        if service is None:
            return not_ready()
        if not service.rt.store.session_exists(body.session_id):
            return JSONResponse({"error": f"unknown session_id {body.session_id!r}"}, status_code=404)
        if _is_shadow(request):  # the primary records the customer's feedback; a mirror must not
            return {"ok": True, "session_id": body.session_id, "rating": body.rating, "shadow": True}
        service.rt.store.record_feedback(body.session_id, body.rating)
        if service.rt.configs is not None:
            service.rt.configs.observe_feedback(
                service.rt.active_config(body.session_id).versions, body.rating
            )
        metrics.feedback.labels(body.rating).inc()
        if emf is not None:
            emf.feedback(body.rating)
        return {"ok": True, "session_id": body.session_id, "rating": body.rating}

    if settings.identity.dev_signin:  # development only: production never sets it (404 otherwise)
        dev_key = verifier.key
        assert dev_key is not None  # settings refuse the dev sign-in together with a JWKS

        @app.post("/v1/signin")
        async def signin(body: SignInRequest) -> Any:
            """A development token (1 h) for a customer the store knows."""
            service: ChatService | None = state["service"]
            if service is None:
                return not_ready()
            if not service.rt.store.customer_exists(body.customer_id):
                return JSONResponse({"error": "unknown customer"}, status_code=404)
            issued = issue_token(
                body.customer_id,
                dev_key,
                SIGNIN_TTL_S,
                audience=settings.identity.audience,
                issuer=settings.identity.issuer,
            )
            return {
                "token": issued.token,
                "token_type": "Bearer",
                "expires_at": datetime.fromtimestamp(issued.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "expires_in": SIGNIN_TTL_S,
            }

    return app
