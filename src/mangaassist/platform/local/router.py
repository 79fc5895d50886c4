"""The router: a reverse proxy in front of one service's revisions (raw ASGI, run by uvicorn).

It splits new conversations by weight, keeps a conversation on the revision it started on while
that revision lives (session id from ``X-Session-Id``, else the ``ma_session`` cookie), honours
``X-MangaAssist-Revision`` pins, mirrors a share of requests to a shadow revision, streams
responses through, and records every outcome in ``RouterStats``. A mirror's intent (header
``X-MangaAssist-Intent`` or the JSON ``intent``) is compared with the primary's; the newest
disagreements (request text truncated, both intents) are kept in the shadow's stats for review.

The control plane owns one ``Router`` per service and changes it only by ``publish``-ing a new
immutable ``RoutingTable``: each request reads the table once, so a weight change is atomic and
never drops a request in flight. ``GET /_router/stats`` (JSON, ``?cursor=N``) and
``GET /_router/metrics`` (Prometheus) are read-only; changes go through the control API only.

Limits (per service in ``mangaassist.toml``, docs/platform.md): a request body is read into a list
of chunks joined once, and one over ``max_body_bytes`` (or announcing more in ``Content-Length``)
is answered 413 before any worker is contacted, and one whose body does not arrive within
``client_body_timeout_s`` (a client that stalls or trickles) is answered 408. A worker that takes longer than
``connect_timeout_s`` to accept a connection or ``response_timeout_s`` to send its response
headers is answered 504 (a refused or reset connection 502); once the headers went out, a body
that goes silent for ``idle_read_timeout_s`` cannot change the status any more: the client's
connection is closed. Each of those is counted by revision (``limits``: ``connect_timeout``,
``response_timeout``, ``idle_timeout``, ``body_too_large``), a timeout also as a failed request
(``error`` ``timeout``, or ``timeout_midstream`` after the headers). A refused connection is tried
once on another worker of the revision (nothing was sent); what ``upstream`` retries is in its
docstring.

Fault injection (drills, like Istio's ``fault.abort``): a routing table may carry a ``Fault``, set
through the control API (``PUT /v1/services/NAME/fault``). A request to one of its paths is then
answered by the router itself with the fault's status, for ``share`` of the requests, after the
revision was chosen, and recorded against that revision as if its worker had answered so: an outage
of the whole service, every revision alike, which the SLO alerts see and a canary judge cannot tell
apart from the stable revision's.

Traces (``platform.tracing``): every proxied request gets a span ``router <service>`` (SERVER;
method, path, the revision chosen, status, pinned, mirrored), a child of the client's ``traceparent``
or the root of a new trace. The worker gets that span as its ``traceparent`` (any incoming one is
replaced; ``tracestate`` passes only with a valid parent), a mirrored request a child span of it
(``router <service> shadow``, CLIENT: same trace, its own span id), and the client the trace id in
``X-MangaAssist-Trace-Id`` (also on the router's own error answers). Spans are recorded with
``FastTracer`` (ids and headers by hand; an SDK span only when sampled and exported), which keeps
the cost to a few microseconds a request.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Message, Receive, Scope, Send

from mangaassist.platform import tracing
from mangaassist.platform.local.stats import RevisionCounters, RouterCollector, RouterStats, ShadowCounters
from mangaassist.platform.local.upstream import UpstreamError, UpstreamPool, UpstreamResponse

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"content-length",
        b"host",
    }
)
# not forwarded to a worker either: the router sends its own span as the traceparent, and the
# tracestate of a request whose traceparent was invalid belongs to no trace
_NOT_FORWARDED = _HOP_BY_HOP | {b"traceparent"}
_NOT_FORWARDED_NEW_TRACE = _NOT_FORWARDED | {b"tracestate"}
_TRACE_ID = tracing.TRACE_ID_HEADER_BYTES
ROUTER_SERVICE_NAME = "mangaassist-router"
_SHADOW_MAX_IN_FLIGHT = 64
_REVISION = b"x-mangaassist-revision"
_CONTENT_LENGTH = b"content-length"
LIMITS = ("connect_timeout", "response_timeout", "idle_timeout", "body_too_large", "client_body_timeout")
"""What the router counts by revision when a limit cut a request short (``Router.limits``)."""
log = logging.getLogger("mangaassist.platform")


@dataclass(frozen=True)
class RouteTarget:
    """A revision the router may send requests to, with its ready workers (maybe none just now)."""

    name: str
    pools: tuple[UpstreamPool, ...]
    counter: itertools.count[int] = field(default_factory=itertools.count, compare=False)

    def pick(self) -> UpstreamPool | None:
        if not self.pools:
            return None
        if len(self.pools) == 1:
            return self.pools[0]
        return self.pools[next(self.counter) % len(self.pools)]


@dataclass(frozen=True)
class Fault:
    """An injected failure of a service (module docstring): ``status`` for ``share`` of the
    requests to ``paths`` (exact paths)."""

    status: int = 503
    share: float = 1.0
    paths: tuple[str, ...] = ("/v1/chat",)

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"fault status {self.status} is not an HTTP error status (400-599)")
        if not 0 < self.share <= 1:
            raise ValueError(f"fault share {self.share} is not within (0, 1]")
        if not self.paths or any(not p.startswith("/") for p in self.paths):
            raise ValueError(f"fault paths {list(self.paths)} must be absolute paths")

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "share": self.share, "paths": list(self.paths)}


@dataclass(frozen=True)
class RoutingTable:
    """One immutable routing decision: who lives, who gets new conversations, who shadows.

    ``targets``: every living revision (pins and existing conversations can reach all of them).
    ``weights``: the split of new conversations, percentages by revision name. Only revisions with
    a ready worker take part in a draw, so a revision that is not ready gets nothing new (unless
    none is ready: then the failures are counted against the weighted revisions).
    """

    version: int
    targets: Mapping[str, RouteTarget]
    weights: Mapping[str, float]
    shadow: str | None = None
    shadow_share: float = 0.0
    fault: Fault | None = None
    _names: tuple[str, ...] = ()
    _deck: WeightedDeck | None = field(default=None, compare=False)

    @classmethod
    def build(
        cls,
        version: int,
        targets: Mapping[str, RouteTarget],
        weights: Mapping[str, float],
        shadow: str | None = None,
        shadow_share: float = 0.0,
        fault: Fault | None = None,
    ) -> RoutingTable:
        names: list[str] = []
        shares: list[float] = []
        for name, weight in sorted(weights.items()):
            target = targets.get(name)
            if weight > 0 and target is not None and target.pools:
                names.append(name)
                shares.append(weight)
        # nobody weighted is ready (a crash gap): draw among the weighted live revisions anyway,
        # so the failure is answered 503 and counted against the revision that should have served
        if not names:
            for name, weight in sorted(weights.items()):
                if weight > 0 and name in targets:
                    names.append(name)
                    shares.append(weight)
        return cls(
            version,
            dict(targets),
            dict(weights),
            shadow,
            shadow_share,
            fault,
            tuple(names),
            WeightedDeck(tuple(names), tuple(shares)) if len(names) > 1 else None,
        )

    def draw(self, rng: random.Random) -> RouteTarget | None:
        """A revision for a new conversation, by weight among the ready ones.

        Draws come from a shuffled deck (``WeightedDeck``): every block of draws holds each
        revision's exact share, in random order. If no weighted revision is ready, one of them
        anyway (its request fails and is counted); None only when no live revision has weight.
        """
        if not self._names:
            return None
        if len(self._names) == 1:
            return self.targets[self._names[0]]
        assert self._deck is not None
        return self.targets[self._deck.draw(rng)]


class WeightedDeck:
    """Block randomisation of a weighted split: a deck of ``size`` cards holding each name's share
    (largest remainder), shuffled; drawn card by card and reshuffled when empty.

    Independent draws (a weighted coin per conversation) miss the split by the binomial error:
    2,000 conversations at 70/30 land outside 3 points about 1 time in 300. A deck keeps every
    completed block exact and is still random in order, so no client pattern lines up with it
    (a round robin would send every 20th request of a periodic client to a 5% canary). ``size``
    is the smallest of 100, 1,000 and 10,000 that holds every share exactly (percentages: 100).
    """

    SIZES = (100, 1_000, 10_000)

    def __init__(self, names: tuple[str, ...], weights: tuple[float, ...]) -> None:
        total = sum(weights)
        self.size = self.SIZES[-1]
        for size in self.SIZES:
            if all(abs(w * size / total - round(w * size / total)) < 1e-9 for w in weights):
                self.size = size
                break
        exact = [w * self.size / total for w in weights]
        counts = [int(x) for x in exact]
        by_remainder = sorted(range(len(names)), key=lambda i: exact[i] - counts[i], reverse=True)
        for i in by_remainder[: self.size - sum(counts)]:
            counts[i] += 1
        self._cards = [name for name, n in zip(names, counts, strict=True) for _ in range(n)]
        self._left: list[str] = []

    def draw(self, rng: random.Random) -> str:
        if not self._left:
            self._left = list(self._cards)
            rng.shuffle(self._left)
        return self._left.pop()


class StickySessions:
    """Session id -> revision name, least recently used forgotten beyond ``capacity``."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._map: collections.OrderedDict[str, str] = collections.OrderedDict()

    def get(self, session: str) -> str | None:
        rev = self._map.get(session)
        if rev is not None:
            self._map.move_to_end(session)
        return rev

    def set(self, session: str, revision: str) -> None:
        self._map[session] = revision
        self._map.move_to_end(session)
        if len(self._map) > self.capacity:
            self._map.popitem(last=False)

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(self._map.values()))


def _session_of(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """Session id and pinned revision of a request."""
    session, pin, _, _, _ = _request_keys(headers)
    return session, pin


def _request_keys(
    headers: list[tuple[bytes, bytes]],
) -> tuple[str | None, str | None, bytes | None, bytes | None, bool]:
    """Session id, pinned revision, ``traceparent`` (``b""`` when sent more than once: invalid),
    ``Content-Length`` (as sent) and whether a body may follow (HTTP/1.1: only with a
    ``Content-Length`` or a ``Transfer-Encoding``)."""
    session = cookie = pin = None
    traceparent: bytes | None = None
    length: bytes | None = None
    encoded = False
    for name, value in headers:
        if name == b"x-session-id":
            session = value.decode("latin-1")
        elif name == _REVISION:
            pin = value.decode("latin-1")
        elif name == b"cookie":
            cookie = value.decode("latin-1")
        elif name == b"traceparent":
            traceparent = value if traceparent is None else b""
        elif name == _CONTENT_LENGTH:
            length = value
        elif name == b"transfer-encoding":
            encoded = True
    if session is None and cookie is not None and "ma_session" in cookie:
        try:
            morsel = SimpleCookie(cookie).get("ma_session")
        except CookieError:
            morsel = None
        if morsel is not None and morsel.value:
            session = morsel.value
    return session, pin, traceparent, length, encoded or (length is not None and length != b"0")


async def _reply(
    send: Send,
    status: int,
    body: dict[str, Any],
    trace_id: bytes | None = None,
    revision: str | None = None,
) -> None:
    """An answer of the router's own (``X-MangaAssist-Router-Error: 1``); ``revision``: the one the
    request was for (header ``X-MangaAssist-Revision``, as a worker's answer carries it)."""
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"x-mangaassist-router-error", b"1"),
    ]
    if trace_id is not None:
        headers.append((_TRACE_ID, trace_id))
    if revision is not None:
        headers.append((_REVISION, revision.encode("latin-1", "replace")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _intent_of(response: UpstreamResponse, body: bytes | None) -> str | None:
    for name, value in response.headers:
        if name == b"x-mangaassist-intent":
            return value.decode("latin-1")
    if body is None:
        return None
    for name, value in response.headers:
        if name == b"content-type" and b"json" in value:
            try:
                data = json.loads(body)
            except ValueError:
                return None
            intent = data.get("intent") if isinstance(data, dict) else None
            return str(intent) if intent is not None else None
    return None


def _text_of(body: bytes) -> str | None:
    """The ``text`` of a JSON request body (the model endpoint's), or its ``message`` (the chatbot's)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    text = data.get("text", data.get("message"))
    return text if isinstance(text, str) else None


class LimitsCollector(Collector):
    """Prometheus view of ``Router.limits``: ``mangaassist_router_limits_total``."""

    def __init__(self, service: str, limits: Mapping[str, collections.Counter[str]]) -> None:
        self.service = service
        self.limits = limits

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "mangaassist_router_limits",
            "Requests a router limit cut short, by revision: connect_timeout and response_timeout "
            "(answered 504), idle_timeout (connection closed mid-body), body_too_large (answered 413)",
            labels=["service", "revision", "limit"],
        )
        for revision, counts in self.limits.items():
            for limit in LIMITS:
                family.add_metric([self.service, revision, limit], counts[limit])
        yield family


class Router:
    """The ASGI app of one service's router. See the module docstring."""

    def __init__(
        self,
        service: str,
        *,
        shadow_timeout_s: float = 10.0,
        connect_timeout_s: float = 2.0,
        response_timeout_s: float = 60.0,
        idle_read_timeout_s: float = 30.0,
        max_body_bytes: int = 10 * 1024 * 1024,
        client_body_timeout_s: float = 30.0,
    ) -> None:
        self.service = service
        self.table = RoutingTable.build(0, {}, {})
        self.sticky = StickySessions()
        self.stats = RouterStats(service)
        self.shadow_timeout_s = shadow_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.response_timeout_s = response_timeout_s
        self.idle_read_timeout_s = idle_read_timeout_s
        self.max_body_bytes = max_body_bytes
        self.client_body_timeout_s = client_body_timeout_s
        self.limits: dict[str, collections.Counter[str]] = {}
        """Revision -> how often each of ``LIMITS`` cut one of its requests short."""
        self.rng = random.Random()
        self.registry = CollectorRegistry()
        self.registry.register(RouterCollector(self.stats))
        self.registry.register(LimitsCollector(service, self.limits))
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        tracing.setup_tracing(ROUTER_SERVICE_NAME, None)  # once per process (the control plane)
        self.tracer = tracing.FastTracer(tracing.current_tracing(), "mangaassist.platform.local.router")
        self._span_name = f"router {service}"
        self._shadow_span_name = f"router {service} shadow"

    def publish(self, table: RoutingTable) -> None:
        """Swap in a new routing table (a single reference assignment: atomic for every request)."""
        self.table = table

    def in_flight(self, revision: str) -> int:
        c = self.stats.revisions.get(revision)
        return c.in_flight if c else 0

    def count_limit(self, revision: str, limit: str) -> None:
        counts = self.limits.get(revision)
        if counts is None:
            counts = self.limits[revision] = collections.Counter()
        counts[limit] += 1

    def snapshot(self, cursor: int | None = None) -> dict[str, Any]:
        """``RouterStats.snapshot`` with each revision's ``limits`` and the current ``routing``."""
        snapshot = self.stats.snapshot(cursor)
        revisions: dict[str, Any] = snapshot["revisions"]
        for name in revisions.keys() | self.limits.keys():
            counts = self.limits.get(name, collections.Counter())
            entry = revisions.setdefault(name, RevisionCounters().as_dict())
            entry["limits"] = {limit: counts[limit] for limit in LIMITS}
        snapshot["routing"] = self.describe()
        return snapshot

    def _target(
        self, table: RoutingTable, session: str | None, pin: str | None, assign: bool
    ) -> RouteTarget | None:
        """The revision for a request: the pinned one (None if it does not live), the session's, or a
        draw by weight. ``assign``: a drawn revision becomes the session's (and is counted)."""
        if pin is not None:
            return table.targets.get(pin)
        if session is None:
            return table.draw(self.rng)
        name = self.sticky.get(session)
        target = table.targets.get(name) if name is not None else None
        if target is None:
            target = table.draw(self.rng)
            if target is not None and assign:
                if name is not None:
                    self.stats.revision(name).sessions_moved_out += 1
                self.stats.revision(target.name).sessions_started += 1
                self.sticky.set(session, target.name)
        return target

    async def _too_large(
        self,
        send: Send,
        scope: Scope,
        span: tracing.FastSpan,
        session: str | None,
        pin: str | None,
        announced: int | None,
    ) -> None:
        """Answer 413 (no worker contacted), counted against the revision it would have gone to."""
        size = f" of {announced} bytes (Content-Length)" if announced is not None else ""
        message = f"request body{size} over max_body_bytes ({self.max_body_bytes})"
        await self._refuse(send, scope, span, session, pin, 413, "body_too_large", message)

    async def _refuse(
        self,
        send: Send,
        scope: Scope,
        span: tracing.FastSpan,
        session: str | None,
        pin: str | None,
        status: int,
        limit: str,
        message: str,
    ) -> None:
        """Answer ``status`` for a request a limit stopped before any worker was contacted, counted
        (``limit``) against the revision it would have gone to."""
        target = self._target(self.table, session, pin, assign=False)
        if target is not None:
            self.count_limit(target.name, limit)
        else:
            self.stats.unrouted[limit] += 1
        await _reply(
            send, status, {"error": message}, span.trace_hex, target.name if target is not None else None
        )
        self._end_span(span, scope, None, status, limit, pin is not None, False)

    async def _read_body(self, receive: Receive, parts: list[bytes], limit: int) -> str | None:
        """Read the request body into ``parts``: None when whole, else ``gone`` (the client left),
        ``late`` (not within ``client_body_timeout_s``: a client that stalls or trickles holds
        nothing for long; one timer) or ``too_large`` (past ``limit``)."""
        size = 0
        try:
            async with asyncio.timeout(self.client_body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return "gone"
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > limit:
                            return "too_large"
                        parts.append(chunk)
                    if not message.get("more_body", False):
                        return None
        except TimeoutError:
            return "late"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return
        path: str = scope["path"]
        if path.startswith("/_router/"):
            await self._introspect(scope, send)
            return
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        session, pin, traceparent, length, has_body = _request_keys(headers)
        span, continued = self.tracer.start(traceparent, self._span_name)
        trace_id = span.trace_hex

        limit = self.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:  # before reading any
            await self._too_large(send, scope, span, session, pin, int(length))
            return
        parts: list[bytes] = []
        if has_body:  # without one (most GETs) there is nothing to wait for: no timer, no await
            read = await self._read_body(receive, parts, limit)
            if read == "gone":
                return
            if read == "late":
                waited = self.client_body_timeout_s
                late = f"the request body did not arrive within client_body_timeout_s ({waited:g})"
                await self._refuse(send, scope, span, session, pin, 408, "client_body_timeout", late)
                return
            if read == "too_large":
                await self._too_large(send, scope, span, session, pin, None)
                return
        body = parts[0] if len(parts) == 1 else b"".join(parts)  # b"" when there are none

        table = self.table  # one snapshot per request: this is what makes changes atomic
        target = self._target(table, session, pin, assign=True)
        if pin is not None and target is None:
            self.stats.unrouted["unknown_revision"] += 1
            await _reply(send, 404, {"error": f"no live revision {pin!r} of {self.service}"}, trace_id)
            self._end_span(span, scope, pin, 404, "unknown_revision", True, False)
            return
        if target is None:
            self.stats.unrouted["no_revision"] += 1
            await _reply(send, 503, {"error": f"no revision of {self.service} is ready"}, trace_id)
            self._end_span(span, scope, None, 503, "no_revision", False, False)
            return

        fault = table.fault
        if fault is not None and path in fault.paths and self.rng.random() < fault.share:
            self.stats.record(
                target.name, fault.status, (time.perf_counter() - started) * 1000, None,
                False, False, pin is not None, session,
            )  # fmt: skip
            answer = {
                "error": f"injected fault: {self.service} answers {fault.status}",
                "revision": target.name,
            }
            await _reply(send, fault.status, answer, trace_id, target.name)
            self._end_span(span, scope, target.name, fault.status, "injected_fault", pin is not None, False)
            return

        method: str = scope["method"]
        query: bytes = scope.get("query_string", b"")
        raw_path: bytes = scope.get("raw_path") or path.encode()
        target_bytes = raw_path + b"?" + query if query else raw_path
        client = scope.get("client")
        dropped = _NOT_FORWARDED if continued else _NOT_FORWARDED_NEW_TRACE
        forwarded = [(k, v) for k, v in headers if k not in dropped]
        if client:
            forwarded.append((b"x-forwarded-for", str(client[0]).encode()))

        intent_future: asyncio.Future[str | None] | None = None
        if (
            table.shadow is not None
            and pin is None
            and table.shadow != target.name
            and path != "/v1/feedback"
            and self.rng.random() < table.shadow_share
        ):
            intent_future = self._mirror(table, method, target_bytes, forwarded, body, span)
        forwarded.append((b"traceparent", span.traceparent()))

        counters = self.stats.revision(target.name)
        counters.in_flight += 1
        status: int = 0
        error: str | None = "client_gone"  # unless _forward returns
        try:
            status, error = await self._forward(
                target, method, target_bytes, forwarded, body, send, started, session, pin is not None,
                path, intent_future, trace_id,
            )  # fmt: skip
        finally:
            counters.in_flight -= 1
            if intent_future is not None and not intent_future.done():
                intent_future.set_result(None)
            self._end_span(
                span, scope, target.name, status, error, pin is not None, intent_future is not None
            )

    def _end_span(
        self,
        span: tracing.FastSpan,
        scope: Scope,
        revision: str | None,
        status: int,
        error: str | None,
        pinned: bool,
        mirrored: bool,
    ) -> None:
        if not span.sampled or not self.tracer.exporting:
            return  # nothing to record: skip building the attributes
        attributes: dict[str, str | bool | int] = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "http.response.status_code": status,
            "mangaassist.service": self.service,
            "mangaassist.pinned": pinned,
            "mangaassist.shadow": mirrored,
        }
        if revision is not None:
            attributes["mangaassist.revision"] = revision
        if error is not None:
            attributes["error.type"] = error
        self.tracer.end(span, self._span_name, SpanKind.SERVER, attributes, error=status >= 500 or not status)

    async def _forward(
        self,
        target: RouteTarget,
        method: str,
        target_bytes: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        send: Send,
        started: float,
        session: str | None,
        pinned: bool,
        path: str,
        intent_future: asyncio.Future[str | None] | None,
        trace_id: bytes,
    ) -> tuple[int, str | None]:
        """Send the request to a worker of ``target`` and its answer to the client: (status, error).

        A worker that refuses the connection (nothing sent) is replaced by the revision's next one,
        once. After the response headers went out, a worker error (reset, idle timeout) closes the
        client's connection: it is recorded as ``<kind>_midstream`` and returned, not raised."""
        stats = self.stats
        pool = target.pick()
        if pool is None:
            stats.record(
                target.name,
                0,
                (time.perf_counter() - started) * 1000,
                "unavailable",
                False,
                False,
                pinned,
                session,
            )
            await _reply(
                send, 503, {"error": f"revision {target.name} has no ready worker"}, trace_id, target.name
            )
            return 503, "unavailable"
        try:
            try:
                response = await pool.request(
                    method, target_bytes, headers, body, self.response_timeout_s,
                    connect_timeout_s=self.connect_timeout_s, idle_timeout_s=self.idle_read_timeout_s,
                )  # fmt: skip
            except UpstreamError as exc:
                pools = target.pools
                if exc.kind != "connect" or len(pools) < 2 or pool not in pools:
                    raise
                other = pools[(pools.index(pool) + 1) % len(pools)]
                response = await other.request(
                    method, target_bytes, headers, body, self.response_timeout_s,
                    connect_timeout_s=self.connect_timeout_s, idle_timeout_s=self.idle_read_timeout_s,
                )  # fmt: skip
        except UpstreamError as exc:
            stats.record(
                target.name,
                0,
                (time.perf_counter() - started) * 1000,
                exc.kind,
                False,
                False,
                pinned,
                session,
            )
            answer: dict[str, Any] = {"error": f"revision {target.name}: {exc}", "revision": target.name}
            if exc.kind == "timeout":
                status = 504
                phase = exc.phase or "response"
                answer["timeout"] = f"{phase}_timeout_s"  # which limit: the setting's name
                self.count_limit(target.name, f"{phase}_timeout")
            else:
                status = 502
            await _reply(send, status, answer, trace_id, target.name)
            return status, exc.kind
        fallback = guardrail = False
        out_headers: list[tuple[bytes, bytes]] = []
        for name, value in response.headers:
            if name in _HOP_BY_HOP and name != b"content-length":
                continue
            if name == b"x-mangaassist-fallback":
                fallback = value == b"1"
            elif name == b"x-mangaassist-guardrail":
                guardrail = value == b"1"
            elif name == _TRACE_ID:
                continue  # the worker's (the same trace, normally); the client gets the router's
            out_headers.append((name, value))
        out_headers.append((_TRACE_ID, trace_id))
        keep_body = intent_future is not None or (path == "/v1/feedback" and response.status == 200)
        kept: list[bytes] = []
        error: str | None = None
        try:
            await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
            async for chunk in response.chunks():
                if keep_body:
                    kept.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamError as exc:
            # the status went out already: all that is left is to close the client's connection,
            # which the server does when the app returns before the response is complete
            error = f"{exc.kind}_midstream"
            if exc.kind == "timeout":
                self.count_limit(target.name, "idle_timeout")
            log.warning(
                "router %s: revision %s broke its answer after the headers (%s): client connection closed",
                self.service, target.name, exc,
            )  # fmt: skip
            return response.status, error
        except BaseException:
            error = "client_gone"
            response.abandon()
            raise
        finally:
            stats.record(
                target.name, response.status, (time.perf_counter() - started) * 1000, error,
                fallback, guardrail, pinned, session,
            )  # fmt: skip
        if intent_future is not None and not intent_future.done():
            intent_future.set_result(_intent_of(response, b"".join(kept)))
        if path == "/v1/feedback" and response.status == 200:
            self._note_feedback(target.name, session, b"".join(kept), body)
        return response.status, error

    def _note_feedback(self, served_by: str, session: str | None, response: bytes, request: bytes) -> None:
        try:
            sent = json.loads(request)
        except ValueError:
            return
        if not isinstance(sent, dict):
            return
        session = str(sent.get("session_id") or session or "")
        rating = str(sent.get("rating", ""))
        if session and rating:
            # the revision that served the conversation, which is the one this request went to
            self.stats.record_feedback(self.sticky.get(session) or served_by, session, rating)

    def _mirror(
        self,
        table: RoutingTable,
        method: str,
        target_bytes: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        span: tracing.FastSpan,
    ) -> asyncio.Future[str | None] | None:
        assert table.shadow is not None
        counters = self.stats.shadow(table.shadow)
        shadow = table.targets.get(table.shadow)
        pool = shadow.pick() if shadow is not None else None
        if pool is None:
            counters.errors["unavailable"] += 1
            return None
        if counters.in_flight >= _SHADOW_MAX_IN_FLIGHT:
            counters.skipped += 1
            return None
        primary_intent: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        child = self.tracer.child(span)  # the same trace, a span of its own
        mirrored = [*headers, (b"traceparent", child.traceparent()), (b"x-mangaassist-shadow", b"1")]
        task = asyncio.create_task(
            self._shadow_request(
                counters, pool, method, target_bytes, mirrored, body, primary_intent, child, table.shadow
            )
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)
        return primary_intent

    async def _shadow_request(
        self,
        counters: ShadowCounters,
        pool: UpstreamPool,
        method: str,
        target_bytes: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        primary_intent: asyncio.Future[str | None],
        span: tracing.FastSpan,
        revision: str,
    ) -> None:
        """Send a mirror (``headers`` carry its traceparent and the shadow mark) and compare intents."""
        counters.in_flight += 1
        counters.requests += 1
        started = time.perf_counter()
        response: UpstreamResponse | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.shadow_timeout_s):
                response = await pool.request(
                    method, target_bytes, headers, body, self.shadow_timeout_s,
                    connect_timeout_s=self.connect_timeout_s,
                )  # fmt: skip
                data = await response.read(1 << 20)
            counters.statuses[response.status] += 1
            counters.latency.observe((time.perf_counter() - started) * 1000)
            shadow_intent = _intent_of(response, data)
            if shadow_intent is not None:
                async with asyncio.timeout(self.shadow_timeout_s):
                    mine = await asyncio.shield(primary_intent)
                if mine is not None:
                    counters.compared(mine, shadow_intent, _text_of(body) if mine != shadow_intent else None)
        except TimeoutError:
            counters.errors["timeout"] += 1
            error = "timeout"
            if response is not None:
                response.abandon()
        except UpstreamError as exc:
            counters.errors[exc.kind] += 1
            error = exc.kind
        finally:
            counters.in_flight -= 1
            if span.sampled and self.tracer.exporting:
                status = response.status if response is not None else 0
                attributes: dict[str, str | bool | int] = {
                    "http.request.method": method,
                    "url.path": target_bytes.partition(b"?")[0].decode("latin-1"),
                    "http.response.status_code": status,
                    "mangaassist.service": self.service,
                    "mangaassist.revision": revision,
                    "mangaassist.shadow": True,
                }
                if error is not None:
                    attributes["error.type"] = error
                self.tracer.end(
                    span,
                    self._shadow_span_name,
                    SpanKind.CLIENT,
                    attributes,
                    error=error is not None or status >= 500,
                )

    async def _introspect(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        if path == "/_router/metrics":
            data = generate_latest(self.registry)
            content_type = CONTENT_TYPE_LATEST.encode()
        elif path == "/_router/stats":
            cursor: int | None = None
            for part in scope.get("query_string", b"").decode().split("&"):
                key, _, value = part.partition("=")
                if key == "cursor" and value.lstrip("-").isdigit():
                    cursor = int(value)
            data = json.dumps(self.snapshot(cursor)).encode()
            content_type = b"application/json"
        else:
            await _reply(send, 404, {"error": f"no such router endpoint {path}"})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(data)).encode())],
            }
        )
        message: Message = {"type": "http.response.body", "body": data}
        await send(message)

    def describe(self) -> dict[str, Any]:
        table = self.table
        return {
            "version": table.version,
            "weights": dict(table.weights),
            "live": sorted(table.targets),
            "ready": {name: len(t.pools) for name, t in table.targets.items()},
            "shadow": {"revision": table.shadow, "share": table.shadow_share} if table.shadow else None,
            "sessions": self.sticky.counts(),
        }

    async def aclose(self) -> None:
        for task in list(self._shadow_tasks):
            task.cancel()
        for target in self.table.targets.values():
            for pool in target.pools:
                pool.close()
