"""Distributed traces (OpenTelemetry): W3C ``traceparent`` from the router to the chatbot to the model.

One request is one trace: the router of a service reads the client's ``traceparent`` (or starts a
trace), records a ``router <service>`` span and sends its own span as the ``traceparent`` to the
worker; a worker (``TraceMiddleware``) makes its server span a child of the router's, the chatbot's
call to the model endpoint (``chatbot.intent_remote``) is a client span whose context goes on to the
model service's router, and so on. Every traced response carries ``X-MangaAssist-Trace-Id`` (the 32
hex digits of the trace id; the router's value is what a client sees), and ``trace_logging()``
puts the id into every log record a worker writes (``TraceIdFilter``, ``trace_id=``; ``-`` outside a
request), with one access line per traced request.

**Setup** (``setup_tracing(service_name, revision)``, once per process; a later call is a no-op, so
in one process the first service wins, which matters only for tests that run apps in process): a
``TracerProvider`` with the resource ``service.name``, ``service.version`` (the revision) and
``deployment.environment`` (``MANGAASSIST_ENV``, default ``dev``), also installed as OpenTelemetry's
global provider. Spans are **exported** over OTLP/HTTP (protobuf) by a ``BatchSpanProcessor`` only
when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the
base; ``/v1/traces`` is appended) is set, as the SDK reads them; in production that is the ADOT
collector's OTLP receiver, which forwards to X-Ray. Without either, spans are still created (ids
exist for logs and headers) but go nowhere. The SDK's own variables apply: ``OTEL_TRACES_SAMPLER``
and ``OTEL_TRACES_SAMPLER_ARG`` (default: parent-based, always on), ``OTEL_BSP_*`` (batch delay and
sizes), ``OTEL_EXPORTER_OTLP_HEADERS``/``_TIMEOUT``/``_COMPRESSION``. From the control plane,
workers inherit only the two endpoints, ``OTEL_TRACES_SAMPLER``/``_ARG`` and
``OTEL_BSP_SCHEDULE_DELAY`` (``platform.local.supervisor``, the allow-list): the headers may carry
credentials, so a service that needs them names ``OTEL_EXPORTER_OTLP_HEADERS`` in ``pass_env``.

**Overhead.** Workers use the SDK's spans (about 20 us each, against milliseconds of work); FastAPI's
own instrumentation is turned off (``chatbot.app``). The router, whose budget is a fraction of a
millisecond, does not: ``FastTracer`` parses and formats ``traceparent`` by hand, draws ids with
``random.getrandbits`` (as the SDK does), follows the parent's sampled flag under a parent-based
sampler (what ``OTEL_TRACES_SAMPLER`` makes: the default delegates) and asks the sampler about new
traces unless it samples them all (the default), and only when a span is sampled *and* exported
builds a finished ``ReadableSpan`` at its end for the batch processor. Measured in process: about
2 us a request unexported, 5 to 7 us exported; encoding and sending happen on the processor's thread,
in batches, off the event loop's request path (but not off its GIL).

**W3C rules kept**: a ``traceparent`` that is malformed, upper-case, all-zero, version ``ff``, of
version ``00`` with extra fields, or sent more than once is ignored (a new trace starts, and its
``tracestate`` is dropped with it); the sampled flag is propagated; ``tracestate`` passes through
unchanged with a valid parent.
"""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_ID_HEADER = "X-MangaAssist-Trace-Id"
TRACE_ID_HEADER_BYTES = b"x-mangaassist-trace-id"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ACCESS_LOGGER = "mangaassist.access"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s trace_id=%(trace_id)s: %(message)s"

_TRACEPARENT_RE = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
_SAMPLED_BIT = 0x01
_RANDOM_BIT = 0x02  # W3C trace context level 2: the trace id's right 7 bytes are random
_EMPTY = TraceState()

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- traceparent


def _parse(raw: bytes) -> tuple[bytes, int, int, int] | None:
    """(trace id's hex digits, trace id, parent id, flags) of a valid ``traceparent``, else None."""
    m = _TRACEPARENT_RE.fullmatch(raw.strip(b" \t"))
    if m is None:
        return None
    version, trace_hex, span_hex, flags, rest = m.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    if trace_hex == _ZERO_TRACE or span_hex == _ZERO_SPAN:
        return None
    return trace_hex, int(trace_hex, 16), int(span_hex, 16), int(flags, 16)


def parse_traceparent(value: str | bytes | None) -> SpanContext | None:
    """The remote parent a ``traceparent`` value names, or None if it is absent or invalid (W3C)."""
    if not value:
        return None
    parsed = _parse(value.encode("latin-1") if isinstance(value, str) else value)
    if parsed is None:
        return None
    _, trace_id, span_id, flags = parsed
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def format_traceparent(ctx: SpanContext) -> str:
    """The ``traceparent`` value (version 00) of a span context."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def extract(headers: Iterable[tuple[bytes, bytes]] | Mapping[str, str]) -> SpanContext | None:
    """The remote parent of a request from its headers: ASGI byte pairs (names lower-case) or a
    mapping (httpx, any case), with its ``tracestate``. Absent, invalid or repeated ``traceparent``:
    None (a new trace)."""
    pairs: Iterable[tuple[str | bytes, str | bytes]]
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    parents: list[str | bytes] = []
    states: list[str] = []
    for name, value in pairs:
        key = name.lower()
        if key in (b"traceparent", TRACEPARENT):
            parents.append(value)
        elif key in (b"tracestate", TRACESTATE):
            states.append(value.decode("latin-1") if isinstance(value, bytes) else value)
    parent = parse_traceparent(parents[0]) if len(parents) == 1 else None
    if parent is None or not states:
        return parent
    return SpanContext(
        parent.trace_id, parent.span_id, True, parent.trace_flags, TraceState.from_header(states)
    )


def replace_traceparent(headers: Iterable[tuple[bytes, bytes]], value: bytes) -> list[tuple[bytes, bytes]]:
    """ASGI-style header pairs with every ``traceparent`` replaced by ``value`` (added once, last)."""
    return [(k, v) for k, v in headers if k.lower() != b"traceparent"] + [(b"traceparent", value)]


def inject(headers: MutableMapping[str, str], ctx: SpanContext | None = None) -> MutableMapping[str, str]:
    """Put ``traceparent`` (and ``tracestate`` when there is one) of ``ctx`` (default: the current
    span's) into ``headers`` (for httpx); nothing when there is no valid span. Returns ``headers``."""
    if ctx is None:
        ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        headers[TRACEPARENT] = format_traceparent(ctx)
        if ctx.trace_state:
            headers[TRACESTATE] = ctx.trace_state.to_header()
    return headers


def current_trace_id() -> str | None:
    """The 32 hex digits of the current span's trace id, or None outside a valid span."""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class Tracing:
    """A process's tracing: the provider, and the processor that exports (None: nothing exported)."""

    provider: TracerProvider
    processor: SpanProcessor | None
    endpoint: str | None

    @property
    def exporting(self) -> bool:
        return self.processor is not None


def traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """Where spans are sent, as the SDK reads it: the signal's URL, else the base URL + ``/v1/traces``."""
    url = environ.get(TRACES_ENDPOINT_ENV, "").strip()
    if url:
        return url
    base = environ.get(ENDPOINT_ENV, "").strip()
    return f"{base.rstrip('/')}/v1/traces" if base else None


def make_tracing(
    service_name: str,
    revision: str | None,
    environ: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> Tracing:
    """A ``Tracing`` for one service (not installed anywhere; ``setup_tracing`` installs one).

    ``exporter`` overrides the OTLP exporter (tests); otherwise one exists only with an endpoint.
    """
    environ = os.environ if environ is None else environ
    environment = environ.get("MANGAASSIST_ENV") or "dev"
    attributes: dict[str, str] = {
        "service.name": service_name,
        "deployment.environment": environment,
        "deployment.environment.name": environment,
    }
    if revision:
        attributes["service.version"] = revision
    provider = TracerProvider(resource=Resource.create(attributes))
    endpoint = traces_endpoint(environ)
    if exporter is None and endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    processor: SpanProcessor | None = None
    if exporter is not None:
        processor = BatchSpanProcessor(exporter)
        provider.add_span_processor(processor)
    return Tracing(provider, processor, endpoint)


_lock = threading.Lock()
_state: Tracing | None = None


def setup_tracing(service_name: str, revision: str | None) -> None:
    """Set up this process's tracing (module docstring). Idempotent: later calls change nothing."""
    global _state
    with _lock:
        if _state is not None:
            if _state.provider.resource.attributes.get("service.name") != service_name:
                log.debug("tracing is set up already; %s keeps the first service's provider", service_name)
            return
        state = make_tracing(service_name, revision)
        trace.set_tracer_provider(state.provider)  # warns and keeps the old one if someone set it first
        _state = state
        if state.endpoint:
            log.info("exporting spans of %s to %s", service_name, state.endpoint)


def current_tracing() -> Tracing | None:
    """The process's ``Tracing`` once ``setup_tracing`` ran."""
    return _state


def get_tracer(name: str) -> trace.Tracer:
    """A tracer of this process's provider (the global one until ``setup_tracing`` ran)."""
    state = _state
    return state.provider.get_tracer(name) if state is not None else trace.get_tracer(name)


# --------------------------------------------------------------------------- the router's spans


class FastSpan:
    """A span the router records without the SDK's per-span machinery (``FastTracer``)."""

    __slots__ = ("flags", "parent_id", "parent_remote", "span_id", "start_ns", "trace_hex", "trace_id")

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        parent_id: int,
        parent_remote: bool,
        flags: int,
        trace_hex: bytes,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.parent_remote = parent_remote
        self.flags = flags
        """W3C trace flags: 0x01 sampled, 0x02 random trace id (as the SDK sets them)."""
        self.start_ns = time.time_ns()
        self.trace_hex = trace_hex
        """The trace id's 32 hex digits: the value of ``X-MangaAssist-Trace-Id``."""

    @property
    def sampled(self) -> bool:
        return bool(self.flags & _SAMPLED_BIT)

    def traceparent(self) -> bytes:
        """This span as the ``traceparent`` to send downstream."""
        return b"00-%s-%016x-%02x" % (self.trace_hex, self.span_id, self.flags)


def _span_id(rng: random.Random) -> int:
    span_id = rng.getrandbits(64)
    while not span_id:  # pragma: no cover - one chance in 2**64
        span_id = rng.getrandbits(64)
    return span_id


class FastTracer:
    """Spans for a hot path (the router): ids, sampling and ``traceparent`` by hand, and an SDK span
    built only for a span that is sampled and exported, at its end. See the module docstring."""

    def __init__(self, tracing: Tracing | None, scope: str) -> None:
        self.tracing = tracing
        self.scope = InstrumentationScope(scope)
        self._rng = random.Random()
        self._processor = tracing.processor if tracing is not None else None
        # Short cuts for the samplers OTEL_TRACES_SAMPLER makes (the provider's comes from there): a
        # parent-based one follows a remote parent's flag (its default delegates), and the default
        # (parent-based, always on) samples every new trace. Any other sampler is asked every time.
        sampler = tracing.provider.sampler if tracing is not None else None
        self._parent_decides = sampler is None or isinstance(sampler, ParentBased)
        self._roots_sampled = sampler is None or sampler.get_description().startswith(
            "ParentBased{root:AlwaysOnSampler"
        )

    @property
    def exporting(self) -> bool:
        """Whether a sampled span's ``end`` records anything (callers skip building attributes)."""
        return self._processor is not None

    def start(
        self, traceparent: bytes | None, name: str, kind: SpanKind = SpanKind.SERVER
    ) -> tuple[FastSpan, bool]:
        """A span continuing ``traceparent`` (the incoming header's value) or starting a trace.

        Returns the span and whether the parent was valid (if not, drop the request's ``tracestate``).
        """
        parsed = _parse(traceparent) if traceparent else None
        rng = self._rng
        if parsed is not None:
            trace_hex, trace_id, parent_id, parent_flags = parsed
            flags = parent_flags & ~_SAMPLED_BIT
            if self._parent_decides:
                sampled = bool(parent_flags & _SAMPLED_BIT)
            else:
                parent = SpanContext(trace_id, parent_id, True, TraceFlags(parent_flags))
                sampled = self._ask_sampler(
                    trace.set_span_in_context(NonRecordingSpan(parent), Context()), trace_id, name, kind
                )
        else:
            trace_id = rng.getrandbits(128)
            while not trace_id:  # pragma: no cover - one chance in 2**128
                trace_id = rng.getrandbits(128)
            trace_hex = b"%032x" % trace_id
            parent_id = 0
            flags = _RANDOM_BIT
            sampled = self._roots_sampled or self._ask_sampler(Context(), trace_id, name, kind)
        if sampled:
            flags |= _SAMPLED_BIT
        span = FastSpan(trace_id, _span_id(rng), parent_id, parsed is not None, flags, trace_hex)
        return span, parsed is not None

    def _ask_sampler(self, context: Context, trace_id: int, name: str, kind: SpanKind) -> bool:
        if self.tracing is None:
            return True
        result = self.tracing.provider.sampler.should_sample(context, trace_id, name, kind)
        return result.decision is Decision.RECORD_AND_SAMPLE

    def child(self, parent: FastSpan) -> FastSpan:
        """A span of the same trace under ``parent`` (a mirrored request), sampled like it."""
        return FastSpan(
            parent.trace_id, _span_id(self._rng), parent.span_id, False, parent.flags, parent.trace_hex
        )

    def end(
        self,
        span: FastSpan,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, str | bool | int | float],
        error: bool = False,
    ) -> None:
        """Finish ``span``: exported when it is sampled and spans are exported, else nothing to do."""
        processor = self._processor
        if processor is None or not span.sampled:
            return
        assert self.tracing is not None
        flags = TraceFlags(span.flags)
        parent = (
            SpanContext(span.trace_id, span.parent_id, span.parent_remote, flags, _EMPTY)
            if span.parent_id
            else None
        )
        processor.on_end(
            ReadableSpan(
                name=name,
                context=SpanContext(span.trace_id, span.span_id, False, flags, _EMPTY),
                parent=parent,
                resource=self.tracing.provider.resource,
                attributes=attributes,
                kind=kind,
                status=Status(StatusCode.ERROR) if error else Status(StatusCode.UNSET),
                start_time=span.start_ns,
                end_time=time.time_ns(),
                instrumentation_scope=self.scope,
            )
        )


# --------------------------------------------------------------------------- workers


class TraceMiddleware:
    """Pure ASGI middleware: a SERVER span per request (a child of the ``traceparent`` received),
    current while the app runs, ``X-MangaAssist-Trace-Id`` on the response, one access log line.

    ``untraced`` paths (probes, metrics scrapes) pass through without a span or a header.
    Span names use the path only when it is one of ``known_paths`` (bounded cardinality).
    ``tracer``: default, this process's (``get_tracer(scope_name)``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        scope_name: str,
        known_paths: frozenset[str],
        untraced: frozenset[str] = frozenset({"/healthz", "/readyz", "/metrics"}),
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.app = app
        self.tracer = tracer or get_tracer(scope_name)
        self.known_paths = known_paths
        self.untraced = untraced
        self.access = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.untraced:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        parent = extract(scope["headers"])
        parent_context = (
            Context() if parent is None else trace.set_span_in_context(NonRecordingSpan(parent), Context())
        )
        route = path if path in self.known_paths else "other"
        span = self.tracer.start_span(
            f"{method} {route}",
            context=parent_context,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path, "http.route": route},
        )
        ctx = span.get_span_context()
        header = (TRACE_ID_HEADER_BYTES, b"%032x" % ctx.trace_id) if ctx.is_valid else None
        status = 0
        started = time.perf_counter()

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if header is not None:
                    message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            if self.access.isEnabledFor(logging.INFO):
                self.access.info(
                    "%s %s %d %.1fms", method, path, status, (time.perf_counter() - started) * 1000
                )
            otel_context.detach(token)


class TraceIdFilter(logging.Filter):
    """Adds ``trace_id`` to every record: the current trace's 32 hex digits, or ``-``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            record.trace_id = current_trace_id() or "-"
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a worker's log file; pytest's capture)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def trace_logging() -> None:
    """Make the ``mangaassist`` loggers of a worker write ``LOG_FORMAT`` (with ``trace_id``) to
    stderr, and the access lines (``mangaassist.access``, INFO) with them. Idempotent.

    Levels of the other loggers are left alone (WARNING from the root, as before); the records
    still propagate, so a handler on the root (pytest's) sees them too.
    """
    logger = logging.getLogger("mangaassist")
    with _lock:
        if any(isinstance(h, _StderrHandler) for h in logger.handlers):
            return
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(TraceIdFilter())
        logger.addHandler(handler)
        access = logging.getLogger(ACCESS_LOGGER)
        if access.level == logging.NOTSET:
            access.setLevel(logging.INFO)
