"""Traces end to end on a real local platform: router -> chatbot -> router -> intent model server.

A tiny OTLP/HTTP receiver (``http.server`` on a free loopback port, protobuf bodies decoded with
``ExportTraceServiceRequest``) stands in for the ADOT collector. The control plane starts with
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at it (and a 200 ms batch delay); its workers inherit both
through the supervisor's allow-list. The chatbot (hashing embedder) is linked to the intent-model
service as in ``mangaassist.toml``'s dev environment, so a chat crosses two routers and three
processes. Checked: the client's trace id comes back in ``X-MangaAssist-Trace-Id``; the receiver
gets that trace's spans from the router, the chatbot and the model server, linked parent to child;
a request without ``traceparent`` gets a new trace; the chatbot's log line for the request carries
the trace id; a mirrored (shadow) model request is a sibling span of the same trace. A second
platform without the endpoint still answers with trace ids but exports nothing.
"""

from __future__ import annotations

import gzip
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from mangaassist.chatbot.service import STAGES
from mangaassist.core.artifact import Artifact
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import Revision
from mangaassist.platform.local.client import (
    LocalCompute,
    _alive,
    _worker_pids,
    read_pid,
    start_control_plane,
    stop_control_plane,
)
from mangaassist.platform.settings import PlatformSettings, load_settings
from tests.standin import StandIn, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[3]
CHATBOT_APP = "mangaassist.chatbot.app:create_app"
MODEL_APP = "mangaassist.chatbot.model_server:create_app"
ROUTER, CHATBOT, MODEL = "mangaassist-router", "mangaassist-chatbot", "mangaassist-intent-model"
HEX32 = r"[0-9a-f]{32}"


@dataclass(frozen=True)
class Span:
    service: str
    version: str | None
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


@dataclass
class Receiver:
    """What an OTLP/HTTP collector would have received."""

    url: str
    spans: list[Span] = field(default_factory=list)
    posts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(
        self, trace_id: str, done: Callable[[list[Span]], bool], timeout_s: float = 15.0
    ) -> list[Span]:
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.of_trace(trace_id)
            if done(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.1)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _decode(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    out = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                out.append(
                    Span(
                        service=resource.get("service.name", ""),
                        version=resource.get("service.version"),
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in s.attributes},
                    )
                )
    return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(StandIn):
        def do_POST(self) -> None:
            body = self.body()
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.reply(404)
                return
            spans = _decode(body)
            with state.lock:
                state.posts += 1
                state.spans.extend(spans)
            self.reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    with serving(Handler) as url:
        state.url = url
        yield state


@dataclass
class Plane:
    settings: PlatformSettings
    compute: LocalCompute
    artifact: Artifact

    def deploy(self, service: str, name: str) -> None:
        """Revision ``name`` of ``service`` from this tree (the project root is the repository, not
        the directory of the test's ``mangaassist.toml``)."""
        app = CHATBOT_APP if service == "chatbot" else MODEL_APP
        revision = Revision(name, self.artifact, app, {"MANGAASSIST_ROOT": str(ROOT)}, 1)
        status = self.compute.deploy(service, revision, timeout_s=180)
        assert status.health.value == "healthy", status.reason

    def url(self, service: str) -> str:
        return self.compute.url(service)

    def worker_logs(self, service: str) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in (self.settings.run_dir / "workers").glob(f"{service}-*.log")
        )


def _write_config(directory: Path, chatbot: bool) -> Path:
    hashing = "MANGAASSIST_EMBEDDER = 'hashing'\nMANGAASSIST_FAULT = ''\n"
    text = (
        "[environments.test]\nprovider = 'local'\nhome = 'home'\ncontrol_port = 0\n"
        "[environments.test.services.intent-model]\n"
        f"app = '{MODEL_APP}'\nrouter_port = 0\nready_timeout_s = 120\n"
        "shadow_timeout_s = 5\n"
        f"[environments.test.services.intent-model.env]\n{hashing}"
    )
    if chatbot:
        text += (
            "[environments.test.services.chatbot]\n"
            f"app = '{CHATBOT_APP}'\nrouter_port = 0\nready_timeout_s = 180\n"
            "shadow_timeout_s = 5\n"
            # the first answers of a cold worker may take longer than the 300 ms default
            f"[environments.test.services.chatbot.env]\n{hashing}MANGAASSIST_INTENT_TIMEOUT_MS = '5000'\n"
            "[environments.test.services.chatbot.links]\nMANGAASSIST_INTENT_URL = 'intent-model'\n"
        )
    path = directory / "mangaassist.toml"
    path.write_text(text)
    return path


def _plane(directory: Path, chatbot: bool, extra_env: dict[str, str]) -> Iterator[Plane]:
    config = _write_config(directory, chatbot)
    settings = load_settings("test", config)
    compute: LocalCompute | None = None
    try:  # stopped below even when it fails to start
        start_control_plane(settings, config, wait_s=60, extra_env=extra_env)
        compute = LocalCompute(settings.run_dir)
        plane = Plane(settings, compute, pack_source(ROOT / "src", settings.home / "artifacts"))
        plane.deploy("intent-model", "r1")  # first: the chatbot warms up through it
        if chatbot:
            plane.deploy("chatbot", "r1")
        yield plane
    finally:
        if compute is not None:
            compute.close()
        pid = read_pid(settings.run_dir)
        workers = _worker_pids(settings.run_dir)
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left after stop: {report.left}"
        assert not any(_alive(p) for p in [*workers, *([pid] if pid else [])])


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Plane]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    yield from _plane(tmp_path_factory.mktemp("traced"), chatbot=True, extra_env=env)


def _traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


def _chat(plane: Plane, session: str, **headers: str) -> httpx.Response:
    r = httpx.post(
        f"{plane.url('chatbot')}/v1/chat",
        json={"session_id": session, "message": "Do you have Frieren volume 5?"},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def _one(spans: list[Span], service: str, name: str) -> Span:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, f"{service} {name!r}: {[(s.service, s.name) for s in spans]}"
    return found[0]


def _ancestors(span: Span, spans: list[Span]) -> list[Span]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def _complete(spans: list[Span]) -> bool:
    return {(s.service, s.name) for s in spans} >= {
        (ROUTER, "router chatbot"),
        (CHATBOT, "POST /v1/chat"),
        (CHATBOT, "intent-model POST /v1/intent"),
        (ROUTER, "router intent-model"),
        (MODEL, "POST /v1/intent"),
        *((CHATBOT, f"chat {stage}") for stage in STAGES),
    }


def test_a_chat_is_one_trace_from_the_router_to_the_model_server(traced: Plane, receiver: Receiver) -> None:
    trace_id, client_span, traceparent = _traceparent()
    r = _chat(traced, "trace-1", traceparent=traceparent)
    assert r.headers["x-mangaassist-trace-id"] == trace_id

    spans = receiver.wait_for(trace_id, _complete)
    assert {s.service for s in spans} >= {ROUTER, CHATBOT, MODEL}
    router = _one(spans, ROUTER, "router chatbot")
    server = _one(spans, CHATBOT, "POST /v1/chat")
    client = _one(spans, CHATBOT, "intent-model POST /v1/intent")
    model_router = _one(spans, ROUTER, "router intent-model")
    model = _one(spans, MODEL, "POST /v1/intent")

    stages = {name: _one(spans, CHATBOT, f"chat {name}") for name in STAGES}

    assert router.parent_id == client_span  # the client's span is the router's parent
    assert server.parent_id == router.span_id  # the router's span is the chatbot's parent
    # one child span per stage of the answer; the model endpoint's call nests under the intent stage
    assert all(stage.parent_id == server.span_id for stage in stages.values())
    assert client.parent_id == stages["intent"].span_id
    assert model_router.parent_id == client.span_id
    assert model.parent_id == model_router.span_id
    assert server in _ancestors(model, spans) and router in _ancestors(model, spans)

    assert router.attributes["mangaassist.revision"] == "r1"
    assert router.attributes["http.response.status_code"] == 200
    assert router.attributes["mangaassist.pinned"] is False
    assert server.version == "r1" and model.version == "r1"
    assert server.attributes["mangaassist.intent"] == r.headers["x-mangaassist-intent"]
    assert server.attributes["mangaassist.stage.intent_ms"] > 0
    assert model.attributes["mangaassist.intent"] == r.headers["x-mangaassist-intent"]
    assert client.attributes["http.response.status_code"] == 200
    assert "mangaassist.fallback" not in client.attributes  # the endpoint answered
    assert client.attributes["mangaassist.model"] == model.attributes["mangaassist.model"]

    # the chatbot's log line for this request carries the trace id
    deadline = time.monotonic() + 5
    while trace_id not in traced.worker_logs("chatbot") and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in traced.worker_logs("chatbot").splitlines() if trace_id in line]
    assert any("POST /v1/chat 200" in line for line in lines), lines
    assert any(trace_id in line for line in traced.worker_logs("intent-model").splitlines())


def test_a_request_without_traceparent_starts_a_new_trace(traced: Plane, receiver: Receiver) -> None:
    known, _, traceparent = _traceparent()
    first = _chat(traced, "trace-2", traceparent=traceparent)
    fresh = _chat(traced, "trace-3")
    again = _chat(traced, "trace-3", traceparent="00-not-a-valid-header-01")
    trace_ids = {first.headers["x-mangaassist-trace-id"], fresh.headers["x-mangaassist-trace-id"]}
    trace_ids.add(again.headers["x-mangaassist-trace-id"])
    assert first.headers["x-mangaassist-trace-id"] == known
    assert len(trace_ids) == 3
    new = fresh.headers["x-mangaassist-trace-id"]
    assert len(new) == 32 and int(new, 16) != 0
    spans = receiver.wait_for(new, _complete)
    assert _complete(spans)
    assert _one(spans, ROUTER, "router chatbot").parent_id == ""  # the router's span is the root


def test_a_shadow_request_is_a_sibling_span_of_the_same_trace(traced: Plane, receiver: Receiver) -> None:
    compute = traced.compute
    traced.deploy("intent-model", "r2")
    compute.set_shadow("intent-model", "r2", 1.0)
    try:
        trace_id, _, traceparent = _traceparent()
        r = _chat(traced, "trace-shadow", traceparent=traceparent)
        assert r.headers["x-mangaassist-trace-id"] == trace_id

        def mirrored(spans: list[Span]) -> bool:
            return len([s for s in spans if s.service == MODEL]) == 2 and _complete(spans)

        spans = receiver.wait_for(trace_id, mirrored)
    finally:
        compute.clear_shadow("intent-model")
    primary = _one(spans, ROUTER, "router intent-model")
    shadow = _one(spans, ROUTER, "router intent-model shadow")
    assert shadow.parent_id == primary.span_id and shadow.attributes["mangaassist.revision"] == "r2"
    assert primary.attributes["mangaassist.shadow"] is True
    servers = {s.version: s for s in spans if s.service == MODEL}
    assert set(servers) == {"r1", "r2"}
    assert servers["r1"].parent_id == primary.span_id
    assert servers["r2"].parent_id == shadow.span_id  # the same trace id, a span id of its own
    assert servers["r1"].span_id != servers["r2"].span_id


@pytest.fixture(scope="module")
def untraced(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Plane]:
    # no endpoint, but every other setting: nothing may reach the receiver (or the SDK's default)
    yield from _plane(
        tmp_path_factory.mktemp("untraced"), chatbot=False, extra_env={"OTEL_BSP_SCHEDULE_DELAY": "200"}
    )


def test_without_an_endpoint_nothing_is_exported_but_ids_are_there(
    untraced: Plane, receiver: Receiver
) -> None:
    trace_id, _, traceparent = _traceparent()
    url = f"{untraced.url('intent-model')}/v1/intent"
    r = httpx.post(url, json={"text": "hello"}, headers={"traceparent": traceparent}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["x-mangaassist-trace-id"] == trace_id
    fresh = httpx.post(url, json={"text": "hello"}, timeout=10).headers["x-mangaassist-trace-id"]
    assert len(fresh) == 32 and fresh != trace_id
    time.sleep(1.0)  # five batch delays
    assert receiver.of_trace(trace_id) == [] and receiver.of_trace(fresh) == []
    # the workers still log the ids; nothing tried to export (an exporter without a collector complains)
    deadline = time.monotonic() + 5
    while trace_id not in untraced.worker_logs("intent-model") and time.monotonic() < deadline:
        time.sleep(0.1)
    logs = untraced.worker_logs("intent-model") + (untraced.settings.run_dir / "controlplane.log").read_text()
    assert trace_id in logs
    assert re.search(r"export\w* span", logs, re.IGNORECASE) is None
