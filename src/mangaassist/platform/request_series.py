"""Per-revision request outcomes, for judges, dashboards and Prometheus: recorded by the local
router (``platform.local.router``) or, where no router stands in front of the workers, by each worker
itself (``RequestSeriesMiddleware``: on ECS behind an ALB).

A recorder calls ``RouterStats.record`` once per request (a few dictionary and list operations,
no locks: everything runs on one event loop). Readers get JSON (``snapshot``, with a cursor over
the raw recent observations) or Prometheus text (``RouterCollector``, computed at scrape time so the
hot path never touches prometheus-client). Both recorders export the same ``mangaassist_router_*``
families with the same labels (``service``, ``revision``, ...), so ``platform.prometheus`` reads
either unchanged. ``platform.local.stats`` re-exports the router's side of this module.

**A worker's own series** (``RequestSeriesMiddleware``; the chatbot adds it when
``MANGAASSIST_REQUEST_SERIES=1``, which ``EcsServiceCompute`` sets when a collector remote-writes
the series to Amazon Managed Prometheus): every request the worker answers except its probes and
scrapes (``/healthz``, ``/readyz``, ``/metrics``: on AWS those come from the ALB's health checks and
the collector, not from clients), with the status it sent, its latency inside the worker, the
``X-MangaAssist-Fallback``/``-Guardrail`` flags of its answer, pinned when the request carried
``X-MangaAssist-Revision``, and a ``POST /v1/feedback`` answered 200 as that rating for the worker's
own revision (the router credits the revision the conversation is sticky to; behind an ALB the
stickiness is the ALB's, and the feedback reaches the revision the cookie keeps it on). A request
marked ``X-MangaAssist-Shadow: 1`` is counted as that revision's mirrored request, not as traffic.
Each worker process counts only what it served: a revision's total is the sum over its tasks (a
Prometheus series per task, told apart by the scraper's labels), and a counter starts again at 0
when its worker restarts.

**What a worker cannot see** that the router could: requests no worker answered. A 502 or 504 the
load balancer sent because no target accepted or answered in time, a connection refused or reset
before the worker's app saw it, a request the ALB answered itself (no registered target: 503): none of
them reaches the middleware. A response the worker broke after its status went out is counted as
the router would count it (a ``reset_midstream`` transport error, folded into 502). Its latency is
the time inside the worker's app, without the load balancer's hops. On AWS, what the workers cannot
see is in CloudWatch's ALB metrics (``AWS/ApplicationELB``: ``HTTPCode_ELB_5XX_Count``,
``TargetConnectionErrorCount``, ``RejectedConnectionCount``, per target group: per revision), which
the SLO alarms and ``CloudWatchMetrics`` read. Locally the router records every request and the
workers run without this middleware: both exporting the same series would count each request twice.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENABLE_ENV = "MANGAASSIST_REQUEST_SERIES"
"""``1``: the worker records and exports its own request series (module docstring); unset or ``0``:
it does not (the local router records them)."""
SERVICE_ENV = "MANGAASSIST_SERVICE"
"""The service the series are labelled with (the providers set it in every worker's environment)."""
NOT_COUNTED: frozenset[str] = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: not client requests, not counted by a worker."""
FEEDBACK_PATH = "/v1/feedback"
FEEDBACK_BODY_MAX = 64 * 1024
"""Bytes of a feedback request's body kept to read its rating (a valid one is far smaller)."""

# Upper bounds in milliseconds: fine below 10 ms (the router's own budget), coarser above.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    *(0.25 * i for i in range(1, 8)),  # 0.25 .. 1.75
    *(2.0 + 0.5 * i for i in range(0, 17)),  # 2 .. 10
    12, 14, 16, 18, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100, 125, 150, 175, 200,
    250, 300, 350, 400, 450, 500, 600, 700, 800, 900, 1000, 1250, 1500, 1750, 2000, 2500,
    3000, 4000, 5000, 7500, 10000, 15000, 20000, 30000, 60000,
)  # fmt: skip

OBSERVATION_FIELDS = (
    "seq", "time", "kind", "revision", "status", "latency_ms", "error",
    "fallback", "guardrail", "pinned", "session", "rating",
)  # fmt: skip
"""One raw observation: ``kind`` is ``request`` or ``feedback``; ``status`` 0 means the request
never got an HTTP answer from a worker (``error`` says why: ``connect``, ``reset``, ``timeout``,
``unavailable`` when no worker was ready)."""
DISAGREEMENTS_KEPT = 20
"""The newest mirrored requests on which a shadow's intent differed from the primary's, kept for
review (CD-03 writes them to the shadow step); older ones are dropped, so memory stays bounded."""
DISAGREEMENT_TEXT_MAX = 200
"""Characters of a disagreeing request's ``text`` kept (user text: keep little of it)."""


class Histogram:
    """Counts per latency bucket (``LATENCY_BUCKETS_MS``, then +Inf) and their sum."""

    __slots__ = ("counts", "sum_ms")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.sum_ms = 0.0

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self.sum_ms += ms

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (None without data)."""
        total = sum(self.counts)
        if not total:
            return None
        rank = q * total
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else float("inf")
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "buckets_ms": [*LATENCY_BUCKETS_MS, "+Inf"],
            "counts": list(self.counts),
            "sum_ms": round(self.sum_ms, 3),
        }


@dataclass
class RevisionCounters:
    """What the router (or a worker: module docstring) saw for one revision since it started."""

    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    transport_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    latency: Histogram = field(default_factory=Histogram)
    fallback: int = 0
    guardrail: int = 0
    pinned: int = 0
    in_flight: int = 0
    sessions_started: int = 0
    sessions_moved_out: int = 0
    """Conversations that had to leave this revision (retired or failed) for another one."""
    feedback: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def failed(self) -> int:
        """Requests that got no answer or a 5xx."""
        five = sum(n for status, n in self.statuses.items() if status >= 500)
        return five + sum(self.transport_errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": dict(self.transport_errors),
            "latency": self.latency.as_dict(),
            "p50_ms": self.latency.quantile(0.5),
            "p99_ms": self.latency.quantile(0.99),
            "fallback": self.fallback,
            "guardrail": self.guardrail,
            "pinned": self.pinned,
            "in_flight": self.in_flight,
            "sessions_started": self.sessions_started,
            "sessions_moved_out": self.sessions_moved_out,
            "feedback": dict(self.feedback),
        }


@dataclass
class ShadowCounters:
    """Outcomes of mirrored requests sent to one shadow revision (never seen by users)."""

    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    latency: Histogram = field(default_factory=Histogram)
    skipped: int = 0
    """Not mirrored because too many shadow requests were already in flight."""
    in_flight: int = 0
    intent_compared: int = 0
    intent_agreed: int = 0
    disagreements: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=DISAGREEMENTS_KEPT)
    )
    """A sample (the newest ``DISAGREEMENTS_KEPT``) of the comparisons that disagreed."""

    def compared(self, primary: str, shadow: str, text: str | None) -> None:
        """One intent comparison of a mirrored request; a disagreement is kept in the sample."""
        self.intent_compared += 1
        if primary == shadow:
            self.intent_agreed += 1
            return
        self.disagreements.append(
            {
                "time": round(time.time(), 3),
                "text": (text or "")[:DISAGREEMENT_TEXT_MAX],
                "primary": primary,
                "shadow": shadow,
            }
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "latency": self.latency.as_dict(),
            "p50_ms": self.latency.quantile(0.5),
            "p99_ms": self.latency.quantile(0.99),
            "skipped": self.skipped,
            "in_flight": self.in_flight,
            "intent_compared": self.intent_compared,
            "intent_agreed": self.intent_agreed,
            "intent_agreement": (self.intent_agreed / self.intent_compared) if self.intent_compared else None,
            "disagreements": list(self.disagreements),
        }


class RouterStats:
    """Every outcome the router of one service (or one worker) recorded, by revision; raw observations
    with a cursor."""

    def __init__(self, service: str, keep: int = 50_000) -> None:
        self.service = service
        self.started = time.time()
        self.revisions: dict[str, RevisionCounters] = {}
        self.shadows: dict[str, ShadowCounters] = {}
        self.unrouted: collections.Counter[str] = collections.Counter()
        """Requests the router answered itself, by reason (``unknown_revision``, ``no_revision``)."""
        self.observations: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=keep)
        self.seq = 0

    def revision(self, name: str) -> RevisionCounters:
        counters = self.revisions.get(name)
        if counters is None:
            counters = self.revisions[name] = RevisionCounters()
        return counters

    def shadow(self, name: str) -> ShadowCounters:
        counters = self.shadows.get(name)
        if counters is None:
            counters = self.shadows[name] = ShadowCounters()
        return counters

    def record(
        self,
        revision: str,
        status: int,
        latency_ms: float,
        error: str | None,
        fallback: bool,
        guardrail: bool,
        pinned: bool,
        session: str | None,
    ) -> None:
        c = self.revision(revision)
        c.requests += 1
        if error is None:
            c.statuses[status] += 1
        else:
            c.transport_errors[error] += 1
        c.latency.observe(latency_ms)
        if fallback:
            c.fallback += 1
        if guardrail:
            c.guardrail += 1
        if pinned:
            c.pinned += 1
        self.seq += 1
        self.observations.append(
            (self.seq, time.time(), "request", revision, status, round(latency_ms, 3), error,
             fallback, guardrail, pinned, session, None)
        )  # fmt: skip

    def record_feedback(self, revision: str, session: str, rating: str) -> None:
        self.revision(revision).feedback[rating] += 1
        self.seq += 1
        self.observations.append(
            (self.seq, time.time(), "feedback", revision, 0, 0.0, None, False, False, False, session, rating)
        )

    def observations_after(self, cursor: int) -> Iterator[dict[str, Any]]:
        if not self.observations or self.observations[-1][0] <= cursor:
            return
        first = self.observations[0][0]
        start = max(0, cursor - first + 1)
        for i in range(start, len(self.observations)):
            yield dict(zip(OBSERVATION_FIELDS, self.observations[i], strict=True))

    def snapshot(self, cursor: int | None = None) -> dict[str, Any]:
        """The counters by revision; with ``cursor``, the raw observations after it as well."""
        out: dict[str, Any] = {
            "service": self.service,
            "since": self.started,
            "revisions": {name: c.as_dict() for name, c in self.revisions.items()},
            "shadow": {name: c.as_dict() for name, c in self.shadows.items()},
            "unrouted": dict(self.unrouted),
            "cursor": self.seq,
        }
        if cursor is not None:
            out["observations"] = list(self.observations_after(cursor))
            out["oldest_kept"] = self.observations[0][0] if self.observations else None
        return out


class RouterCollector(Collector):
    """Prometheus view of a ``RouterStats`` (register it in a ``CollectorRegistry``)."""

    def __init__(self, stats: RouterStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        s = self.stats
        svc = s.service
        requests = CounterMetricFamily(
            "mangaassist_router_requests",
            "Requests by revision and the status the client got (a transport error as the router's 502/504)",
            labels=["service", "revision", "status"],
        )
        answers = CounterMetricFamily(
            "mangaassist_router_answers",
            "2xx answers by revision; fallback=true when the answer carried X-MangaAssist-Fallback",
            labels=["service", "revision", "fallback"],
        )
        errors = CounterMetricFamily(
            "mangaassist_router_transport_errors",
            "Requests that got no HTTP answer from a worker",
            labels=["service", "revision", "kind"],
        )
        flags = CounterMetricFamily(
            "mangaassist_router_quality_flags",
            "Responses carrying X-MangaAssist-Fallback / -Guardrail",
            labels=["service", "revision", "flag"],
        )
        feedback = CounterMetricFamily(
            "mangaassist_router_feedback",
            "Feedback for sessions a revision served",
            labels=["service", "revision", "rating"],
        )
        moved = CounterMetricFamily(
            "mangaassist_router_sessions_moved",
            "Conversations that had to leave a revision",
            labels=["service", "revision"],
        )
        in_flight = GaugeMetricFamily(
            "mangaassist_router_in_flight", "Requests in flight", labels=["service", "revision"]
        )
        latency = HistogramMetricFamily(
            "mangaassist_router_latency_seconds", "Latency through the router", labels=["service", "revision"]
        )
        shadow = CounterMetricFamily(
            "mangaassist_router_shadow_requests",
            "Mirrored requests by outcome",
            labels=["service", "revision", "outcome"],
        )
        agreement = CounterMetricFamily(
            "mangaassist_router_shadow_intent",
            "Intent comparisons shadow vs primary",
            labels=["service", "revision", "result"],
        )
        for rev, c in s.revisions.items():
            seen = collections.Counter({str(status): n for status, n in c.statuses.items()})
            for kind, n in c.transport_errors.items():  # what the client got instead (router.py)
                seen["504" if kind == "timeout" else "502"] += n
            for code, n in sorted(seen.items()):
                requests.add_metric([svc, rev, code], n)
            ok = sum(n for status, n in c.statuses.items() if 200 <= status < 300)
            answers.add_metric([svc, rev, "true"], c.fallback)
            answers.add_metric([svc, rev, "false"], max(0, ok - c.fallback))
            for kind, n in c.transport_errors.items():
                errors.add_metric([svc, rev, kind], n)
            flags.add_metric([svc, rev, "fallback"], c.fallback)
            flags.add_metric([svc, rev, "guardrail"], c.guardrail)
            for rating, n in c.feedback.items():
                feedback.add_metric([svc, rev, rating], n)
            moved.add_metric([svc, rev], c.sessions_moved_out)
            in_flight.add_metric([svc, rev], c.in_flight)
            latency.add_metric([svc, rev], _buckets(c.latency), c.latency.sum_ms / 1000)
        for rev, sc in s.shadows.items():
            for status, n in sc.statuses.items():
                shadow.add_metric([svc, rev, str(status)], n)
            for kind, n in sc.errors.items():
                shadow.add_metric([svc, rev, kind], n)
            agreement.add_metric([svc, rev, "agreed"], sc.intent_agreed)
            agreement.add_metric([svc, rev, "disagreed"], sc.intent_compared - sc.intent_agreed)
        yield from (requests, answers, errors, flags, feedback, moved, in_flight, latency, shadow, agreement)


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip((*LATENCY_BUCKETS_MS, float("inf")), h.counts, strict=True):
        running += n
        out.append(("+Inf" if bound == float("inf") else repr(bound / 1000), running))
    return out


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``MANGAASSIST_REQUEST_SERIES`` asks the worker to record its own request series."""
    value = (os.environ if environ is None else environ).get(ENABLE_ENV, "").strip().lower()
    return value in ("1", "true", "yes", "on")


def feedback_of(body: bytes, session: str | None) -> tuple[str, str] | None:
    """(session, rating) of a feedback request's JSON body, as the router reads it; None if it has none."""
    try:
        sent = json.loads(body)
    except ValueError:
        return None
    if not isinstance(sent, dict):
        return None
    found = str(sent.get("session_id") or session or "")
    rating = str(sent.get("rating", ""))
    return (found, rating) if found and rating else None


class RequestSeriesMiddleware:
    """Pure ASGI middleware: every request the worker answers, recorded in ``stats`` for its own
    ``revision`` the way the router records it (module docstring: what is counted, what a worker
    cannot see). Export the record with ``RouterCollector(stats)`` in the worker's registry.

    Put it inside the tracing middleware and outside whatever turns an unhandled error into a 500
    (the chatbot's ``RevisionHeader``), so the status it records is the one the client got."""

    def __init__(
        self, app: ASGIApp, stats: RouterStats, revision: str, not_counted: frozenset[str] = NOT_COUNTED
    ) -> None:
        self.app = app
        self.stats = stats
        self.revision = revision
        self.not_counted = not_counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self.not_counted:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        session: str | None = None
        pinned = shadow = False
        for name, value in scope.get("headers", ()):
            if name == b"x-session-id":
                session = value.decode("latin-1")
            elif name == b"x-mangaassist-revision":
                pinned = True
            elif name == b"x-mangaassist-shadow":
                shadow = value == b"1"
        feedback = scope.get("path") == FEEDBACK_PATH and scope.get("method") == "POST"
        kept: list[bytes] = []
        size = 0
        status = 0
        fallback = guardrail = complete = False

        async def reading() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request" and size < FEEDBACK_BODY_MAX:
                chunk = message.get("body", b"")
                kept.append(chunk)
                size += len(chunk)
            return message

        async def watched(message: Message) -> None:
            nonlocal status, fallback, guardrail, complete
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-mangaassist-fallback":
                        fallback = value == b"1"
                    elif name.lower() == b"x-mangaassist-guardrail":
                        guardrail = value == b"1"
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True

        counters = self.stats.shadow(self.revision) if shadow else self.stats.revision(self.revision)
        counters.in_flight += 1
        error: str | None = None
        try:
            await self.app(scope, reading if feedback else receive, watched)
            if not complete:  # the app returned without finishing its answer: the connection ends
                error = "reset_midstream" if status else "reset"
        except (asyncio.CancelledError, OSError):
            error = "client_gone"
            raise
        except Exception:
            error = "reset_midstream" if status else "reset"
            raise
        finally:
            counters.in_flight -= 1
            latency_ms = (time.perf_counter() - started) * 1000
            if shadow:
                self._shadow(status, error, latency_ms)
            else:
                self.stats.record(
                    self.revision, status, latency_ms, error, fallback, guardrail, pinned, session
                )
                if feedback and status == 200 and error is None:
                    found = feedback_of(b"".join(kept), session)
                    if found is not None:
                        self.stats.record_feedback(self.revision, *found)

    def _shadow(self, status: int, error: str | None, latency_ms: float) -> None:
        """A mirrored request this worker answered, counted as the router counts its shadow's."""
        counters = self.stats.shadow(self.revision)
        counters.requests += 1
        if error is None:
            counters.statuses[status] += 1
            counters.latency.observe(latency_ms)
        else:
            counters.errors[error] += 1
