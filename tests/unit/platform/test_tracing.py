"""``platform.tracing``: W3C traceparent parsing and propagation, the router's fast spans, the workers'
middleware, the log filter, and what is exported when."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import Message, Receive, Scope, Send

from mangaassist.platform import tracing
from mangaassist.platform.local.supervisor import worker_environ

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def exported() -> Iterator[tuple[tracing.Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    state = tracing.make_tracing("svc", "r7", {"MANGAASSIST_ENV": "test"}, exporter=exporter)
    yield state, exporter
    state.provider.shutdown()


def finished(state: tracing.Tracing, exporter: InMemorySpanExporter) -> list[Any]:
    state.provider.force_flush()
    return list(exporter.get_finished_spans())


# --------------------------------------------------------------------------- traceparent


def test_a_valid_traceparent_parses_as_a_remote_parent() -> None:
    ctx = tracing.parse_traceparent(VALID)
    assert ctx is not None
    assert ctx.trace_id == int(TRACE, 16) and ctx.span_id == int(PARENT, 16)
    assert ctx.is_remote and ctx.trace_flags.sampled
    not_sampled = tracing.parse_traceparent(f"00-{TRACE}-{PARENT}-00".encode())
    assert not_sampled is not None and not not_sampled.trace_flags.sampled
    assert tracing.format_traceparent(ctx) == VALID  # round trip


def test_a_later_version_may_carry_more_fields() -> None:
    ctx = tracing.parse_traceparent(f"01-{TRACE}-{PARENT}-01-something")
    assert ctx is not None and ctx.trace_id == int(TRACE, 16)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"00-{TRACE}-{PARENT}",  # no flags
        f"00-{TRACE.upper()}-{PARENT}-01",  # upper case is not allowed
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{PARENT}-01",  # short trace id
        f"00-{TRACE}-{PARENT}0-01",  # long parent id
        f"00-{TRACE}-{PARENT}-0g",  # not hex
        f"00_{TRACE}_{PARENT}_01",
    ],
)
def test_invalid_traceparents_are_ignored(value: str | None) -> None:
    assert tracing.parse_traceparent(value) is None


def test_extract_from_asgi_pairs_and_from_mappings() -> None:
    ctx = tracing.extract([(b"host", b"x"), (b"traceparent", VALID.encode())])
    assert ctx is not None and ctx.trace_id == int(TRACE, 16)
    ctx = tracing.extract({"Content-Type": "application/json", "TraceParent": VALID})
    assert ctx is not None and ctx.span_id == int(PARENT, 16)
    with_state = tracing.extract([(b"traceparent", VALID.encode()), (b"tracestate", b"vendor=abc")])
    assert with_state is not None and with_state.trace_state.get("vendor") == "abc"
    assert tracing.extract([(b"host", b"x")]) is None
    assert tracing.extract([(b"traceparent", b"00-nonsense")]) is None
    # sent twice: ambiguous, so a new trace (even when both are valid)
    assert tracing.extract([(b"traceparent", VALID.encode()), (b"traceparent", VALID.encode())]) is None


def test_replace_traceparent_keeps_one_value() -> None:
    headers = [(b"traceparent", b"old"), (b"x-session-id", b"s"), (b"TraceParent", b"old2")]
    out = tracing.replace_traceparent(headers, VALID.encode())
    assert out == [(b"x-session-id", b"s"), (b"traceparent", VALID.encode())]


def test_inject_and_current_trace_id_follow_the_current_span(
    exported: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    state, _ = exported
    assert tracing.current_trace_id() is None
    assert tracing.inject({}) == {}  # no span, no header
    with state.provider.get_tracer("t").start_as_current_span("work") as span:
        ctx = span.get_span_context()
        headers = tracing.inject({"X-Session-Id": "s"})
        assert headers == {
            "X-Session-Id": "s",
            "traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}",
        }
        current = tracing.current_trace_id()
        assert current is not None and HEX32.fullmatch(current) and int(current, 16) == ctx.trace_id
    assert tracing.current_trace_id() is None


# --------------------------------------------------------------------------- setup


def test_the_endpoint_is_read_as_the_sdk_reads_it() -> None:
    assert tracing.traces_endpoint({}) is None
    assert (
        tracing.traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"})
        == "http://c:4318/v1/traces"
    )
    both = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x",
    }
    assert tracing.traces_endpoint(both) == "http://t/x"


def test_spans_are_exported_only_with_an_endpoint() -> None:
    quiet = tracing.make_tracing("chatbot", "r1", {"MANGAASSIST_ENV": "staging"})
    try:
        assert not quiet.exporting and quiet.endpoint is None
        attributes = quiet.provider.resource.attributes
        assert attributes["service.name"] == "chatbot"
        assert attributes["service.version"] == "r1"
        assert attributes["deployment.environment"] == "staging"
        # spans still have ids (for logs and headers)
        with quiet.provider.get_tracer("t").start_as_current_span("s") as span:
            assert span.get_span_context().is_valid
    finally:
        quiet.provider.shutdown()
    loud = tracing.make_tracing("router", None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    try:
        assert loud.exporting and loud.endpoint == "http://127.0.0.1:9/v1/traces"
        assert "service.version" not in loud.provider.resource.attributes
        assert loud.provider.resource.attributes["deployment.environment"] == "dev"
    finally:
        loud.provider.shutdown()


def test_workers_inherit_the_otel_settings_but_not_its_headers() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer secret",
        "OTEL_SERVICE_NAME": "not-ours",
    }
    passed = worker_environ(environ)
    assert set(passed) == set(environ) - {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME"}


# --------------------------------------------------------------------------- the router's fast spans


def test_a_new_trace_gets_random_well_formed_ids() -> None:
    fast = tracing.FastTracer(None, "router")
    seen = set()
    for _ in range(50):
        span, continued = fast.start(None, "router x")
        assert not continued and span.parent_id == 0 and span.sampled
        assert span.traceparent().endswith(b"-03")  # sampled, and a random trace id (W3C level 2)
        assert HEX32.fullmatch(span.trace_hex.decode()) and int(span.trace_hex, 16) == span.trace_id != 0
        assert 0 < span.span_id < 2**64
        parsed = tracing.parse_traceparent(span.traceparent())
        assert parsed is not None and (parsed.trace_id, parsed.span_id) == (span.trace_id, span.span_id)
        seen.add(span.trace_id)
    assert len(seen) == 50


def test_a_traceparent_is_continued_with_a_span_of_its_own() -> None:
    fast = tracing.FastTracer(None, "router")
    span, continued = fast.start(VALID.encode(), "router x")
    assert continued
    assert span.trace_hex == TRACE.encode() and span.parent_id == int(PARENT, 16)
    assert span.span_id != int(PARENT, 16)
    assert span.traceparent() == f"00-{TRACE}-{span.span_id:016x}-01".encode()  # the caller's flags
    unsampled, _ = fast.start(f"00-{TRACE}-{PARENT}-00".encode(), "router x")
    assert unsampled.traceparent().endswith(b"-00")  # the caller's decision is propagated
    bad, continued = fast.start(b"00-broken", "router x")
    assert not continued and bad.trace_hex != TRACE.encode()
    mirror = fast.child(span)
    assert (mirror.trace_id, mirror.parent_id) == (span.trace_id, span.span_id)
    assert mirror.span_id != span.span_id


def test_fast_spans_are_exported_with_their_parents(
    exported: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    state, exporter = exported
    fast = tracing.FastTracer(state, "router")
    assert fast.exporting
    span, _ = fast.start(VALID.encode(), "router chatbot")
    mirror = fast.child(span)
    fast.end(span, "router chatbot", SpanKind.SERVER, {"http.response.status_code": 200})
    fast.end(mirror, "router chatbot shadow", SpanKind.CLIENT, {"http.response.status_code": 500}, error=True)
    spans = {s.name: s for s in finished(state, exporter)}
    server, shadow = spans["router chatbot"], spans["router chatbot shadow"]
    assert server.context.trace_id == int(TRACE, 16) and server.context.span_id == span.span_id
    assert server.parent is not None and server.parent.span_id == int(PARENT, 16) and server.parent.is_remote
    assert server.kind is SpanKind.SERVER and server.attributes["http.response.status_code"] == 200
    assert server.resource.attributes["service.name"] == "svc"
    assert (
        server.end_time is not None and server.start_time is not None and server.end_time >= server.start_time
    )
    assert shadow.parent is not None and shadow.parent.span_id == span.span_id
    assert (
        shadow.context.trace_id == server.context.trace_id and shadow.status.status_code is StatusCode.ERROR
    )
    root, _ = fast.start(None, "router chatbot")
    fast.end(root, "router chatbot", SpanKind.SERVER, {})
    assert [s.parent for s in finished(state, exporter) if s.context.span_id == root.span_id] == [None]


def test_the_sampler_decides_new_traces_and_unsampled_spans_are_not_exported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off")
    exporter = InMemorySpanExporter()
    state = tracing.make_tracing("svc", None, {}, exporter=exporter)
    try:
        fast = tracing.FastTracer(state, "router")
        root, _ = fast.start(None, "router x")
        assert not root.sampled and root.traceparent().endswith(b"-02")
        continued, _ = fast.start(VALID.encode(), "router x")
        assert continued.sampled  # parent-based: the caller sampled it
        fast.end(root, "router x", SpanKind.SERVER, {})
        fast.end(continued, "router x", SpanKind.SERVER, {})
        assert [s.context.span_id for s in finished(state, exporter)] == [continued.span_id]
    finally:
        state.provider.shutdown()


def test_a_sampler_that_ignores_parents_is_asked_for_every_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    state = tracing.make_tracing("svc", None, {}, exporter=InMemorySpanExporter())
    try:
        fast = tracing.FastTracer(state, "router")
        continued, _ = fast.start(VALID.encode(), "router x")
        root, _ = fast.start(None, "router x")
        assert not continued.sampled and continued.traceparent().endswith(b"-00")
        assert not root.sampled
    finally:
        state.provider.shutdown()


# --------------------------------------------------------------------------- workers


async def _echo_trace(scope: Scope, receive: Receive, send: Send) -> None:
    """A tiny ASGI app answering with the trace id it sees as current and logging a line."""
    logging.getLogger("mangaassist.test").warning("inside the request")
    body = (tracing.current_trace_id() or "none").encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_the_middleware_continues_the_trace_and_answers_with_its_id(
    exported: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    state, exporter = exported
    app = tracing.TraceMiddleware(
        _echo_trace,
        scope_name="t",
        known_paths=frozenset({"/v1/chat"}),
        tracer=state.provider.get_tracer("t"),
    )
    status, headers, body = _call(app, "/v1/chat", [(b"traceparent", VALID.encode())])
    assert status == 200 and body == TRACE.encode() and headers[b"x-mangaassist-trace-id"] == TRACE.encode()
    (span,) = finished(state, exporter)
    assert span.name == "POST /v1/chat" and span.kind is SpanKind.SERVER
    assert span.parent is not None and span.parent.span_id == int(PARENT, 16)
    assert span.attributes["http.response.status_code"] == 200

    exporter.clear()
    status, headers, body = _call(app, "/somewhere/else", [(b"traceparent", b"00-bad")])
    fresh = headers[b"x-mangaassist-trace-id"]
    assert HEX32.fullmatch(fresh.decode()) and fresh != TRACE.encode() and body == fresh
    (span,) = finished(state, exporter)
    assert span.parent is None and span.name == "POST other"  # unknown paths share one span name

    exporter.clear()
    status, headers, body = _call(app, "/readyz", [(b"traceparent", VALID.encode())])
    assert b"x-mangaassist-trace-id" not in headers and body == b"none"  # probes are not traced
    assert finished(state, exporter) == []


def test_an_unhandled_error_ends_the_span_as_an_error(
    exported: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    state, exporter = exported

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    app = tracing.TraceMiddleware(
        broken, scope_name="t", known_paths=frozenset(), tracer=state.provider.get_tracer("t")
    )
    with pytest.raises(RuntimeError):
        _call(app, "/x", [])
    (span,) = finished(state, exporter)
    assert span.status.status_code is StatusCode.ERROR and span.events[0].name == "exception"


def test_log_records_carry_the_trace_id(exported: tuple[tracing.Tracing, InMemorySpanExporter]) -> None:
    state, _ = exported
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(tracing.TraceIdFilter())
    handler.setFormatter(logging.Formatter(tracing.LOG_FORMAT))
    logger = logging.getLogger("mangaassist.test.tracing")
    logger.addHandler(handler)
    try:
        logger.warning("outside")
        with state.provider.get_tracer("t").start_as_current_span("s") as span:
            logger.warning("inside")
            trace_id = f"{span.get_span_context().trace_id:032x}"
    finally:
        logger.removeHandler(handler)
    assert [r.trace_id for r in records] == ["-", trace_id]  # type: ignore[attr-defined]
    assert f"trace_id={trace_id}: inside" in handler.format(records[1])


def test_trace_logging_is_installed_once() -> None:
    tracing.trace_logging()
    tracing.trace_logging()
    logger = logging.getLogger("mangaassist")
    ours = [h for h in logger.handlers if any(isinstance(f, tracing.TraceIdFilter) for f in h.filters)]
    assert len(ours) == 1
    assert logging.getLogger(tracing.ACCESS_LOGGER).isEnabledFor(logging.INFO)
