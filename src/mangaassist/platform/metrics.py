"""The ``Metrics`` protocol: what each revision of a service served, provider-neutral.

Judges (``delivery.analysis``), the rollout phases (``delivery.rollout``) and the model pipeline's
shadow gate read a service's request outcomes only through this protocol, never a provider's own
shape (CD-06 judges config versions on what workers report to its ``ConfigStore``). A
provider numbers its observations (``seq``) and hands them out after a *cursor*, so a judge reads
each one once and a resumed run re-reads from the cursor its phase recorded.

Providers:

* ``platform.local.metrics.RouterMetrics``: the local router records every request (status,
  latency, quality flags, pin, session) and every feedback; this reads them over the control API.
* A provider that only has per-minute aggregates (CloudWatch, a Prometheus scrape) implements
  ``outcomes`` by emitting one observation per counted request in each period's bucket (the counts
  are exact, so rates are judged as well as from per-request data) with the latency of the
  histogram bucket it fell in (``docs/decisions/0005-anytime-valid-canary-judge.md``: latency
  judged from bucket bounds is off by at most one bucket width). ``per_request`` says which kind
  it is.

Selected by ``platform.factory.Platform.metrics``; nothing else constructs a provider.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class OutcomeKind(enum.StrEnum):
    """What one observation records."""

    REQUEST = "request"
    """A request the router (or load balancer) sent to a revision, with its answer."""
    FEEDBACK = "feedback"
    """A thumbs up/down for a conversation the revision served (``rating``)."""


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """One observation of one revision.

    ``status`` 0 means no HTTP answer came from a worker; ``error`` then says why (``connect``,
    ``reset``, ``timeout``, ``unavailable``). ``fallback``/``guardrail`` are the chatbot's quality
    flags (its answer fell back / a guardrail fired). ``pinned`` requests were routed by a revision
    pin (smoke and load tests): judges leave them out. ``rating`` is set on feedback only.
    """

    seq: int
    time: float
    kind: OutcomeKind
    revision: str
    status: int = 0
    latency_ms: float = 0.0
    error: str | None = None
    fallback: bool = False
    guardrail: bool = False
    pinned: bool = False
    session: str | None = None
    rating: str | None = None

    @property
    def failed(self) -> bool:
        """A request without an answer, or with a 5xx."""
        return self.kind is OutcomeKind.REQUEST and (self.error is not None or self.status >= 500)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestOutcome:
        return cls(
            seq=int(data.get("seq") or 0),
            time=float(data.get("time") or 0.0),
            kind=OutcomeKind(str(data.get("kind") or "request")),
            revision=str(data.get("revision") or ""),
            status=int(data.get("status") or 0),
            latency_ms=float(data.get("latency_ms") or 0.0),
            error=str(data["error"]) if data.get("error") else None,
            fallback=bool(data.get("fallback")),
            guardrail=bool(data.get("guardrail")),
            pinned=bool(data.get("pinned")),
            session=str(data["session"]) if data.get("session") else None,
            rating=str(data["rating"]) if data.get("rating") else None,
        )


@dataclass(frozen=True)
class OutcomeBatch:
    """The observations after a cursor, and the cursor to read from next time.

    ``lost``: observations that fell out of the provider's buffer before they were read (a reader
    that fell behind); reported, never silently ignored."""

    outcomes: tuple[RequestOutcome, ...]
    cursor: int
    lost: int = 0


@dataclass(frozen=True)
class ShadowCounters:
    """What a shadow revision did with the requests mirrored to it, since the shadow started.

    ``statuses``: answers by HTTP status; ``errors``: requests without an answer by kind
    (``timeout``, ``connect``...); ``latency``: the histogram of its answers (``buckets_ms`` upper
    bounds, ``counts`` per bucket, the last one +Inf); ``intent_compared``/``intent_agreed``: answers
    compared with the primary's, and how many matched; ``disagreements``: the newest differing
    requests (bounded, their text truncated)."""

    requests: int = 0
    statuses: Mapping[str, int] = field(default_factory=dict)
    errors: Mapping[str, int] = field(default_factory=dict)
    latency: Mapping[str, Any] = field(default_factory=dict)
    intent_compared: int = 0
    intent_agreed: int = 0
    disagreements: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShadowCounters:
        return cls(
            requests=int(data.get("requests") or 0),
            statuses={str(k): int(v) for k, v in (data.get("statuses") or {}).items()},
            errors={str(k): int(v) for k, v in (data.get("errors") or {}).items()},
            latency=dict(data.get("latency") or {}),
            intent_compared=int(data.get("intent_compared") or 0),
            intent_agreed=int(data.get("intent_agreed") or 0),
            disagreements=tuple(dict(d) for d in data.get("disagreements") or ()),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON for a step's output (a resumed step compares with it)."""
        return {
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "latency": dict(self.latency),
            "intent_compared": self.intent_compared,
            "intent_agreed": self.intent_agreed,
            "disagreements": [dict(d) for d in self.disagreements],
        }


QUALITY_FLAGS_METRIC = "RouterQualityFlags"
"""The workload's quality flags as a CloudWatch custom metric (dimensions ``Service``, ``Revision``,
``Flag`` = ``fallback`` | ``guardrail``): written as EMF lines by ``chatbot.emf``, read by the
CloudWatch provider, alarmed on by CD-08."""
FEEDBACK_METRIC = "RouterFeedback"
"""Customer feedback as a CloudWatch custom metric (``Service``, ``Revision``, ``Rating`` = ``up`` |
``down``), likewise."""


@dataclass(frozen=True)
class Alert:
    """An alert firing for a service (CD-08's SLO alerts: ``severity`` ``page`` or ``ticket``)."""

    name: str
    service: str
    severity: str
    summary: str = ""
    since: str | None = None

    @classmethod
    def from_labels(cls, service: str, data: Mapping[str, Any]) -> Alert:
        labels = data.get("labels") or {}
        annotations = data.get("annotations") or {}
        return cls(
            name=str(data.get("name") or labels.get("alertname", "?")),
            service=service,
            severity=str(labels.get("sloth_severity") or labels.get("severity") or ""),
            summary=str(annotations.get("summary") or annotations.get("title") or ""),
            since=data.get("starts_at"),
        )

    def line(self) -> str:
        return f"{self.severity} alert {self.name} firing for {self.service}" + (
            f" since {self.since}" if self.since else ""
        )


class Metrics(Protocol):
    """Per-revision request outcomes of the services of one environment."""

    per_request: bool
    """True when ``outcomes`` are real per-request observations; False when they are expanded from
    per-period aggregates (counts exact, latency at histogram-bucket resolution)."""

    def outcomes(self, service: str, cursor: int = 0) -> OutcomeBatch:
        """Every observation of ``service`` with ``seq`` greater than ``cursor``, oldest first."""

    def cursor(self, service: str) -> int:
        """The newest observation's number: a window that starts now starts after it."""

    def shadow(self, service: str, revision: str) -> ShadowCounters:
        """The counters of ``revision`` as the service's shadow (all zero if it never was one)."""

    def snapshot(self, service: str, cursor: int | None = None) -> dict[str, Any]:
        """The provider's own figures as JSON, for people (``mangaassist stats``); judges never
        read it."""

    def alerts(self, service: str) -> list[Alert]:
        """Alerts firing for ``service`` now (empty where the environment runs no alerting)."""


class InMemoryMetrics:
    """A ``Metrics`` holding the outcomes it is given, for unit tests of judges and phases (the
    test double ships with the protocol, like httpx's ``MockTransport``)."""

    per_request = True

    def __init__(self, outcomes: Mapping[str, list[RequestOutcome]] | None = None) -> None:
        self.recorded: dict[str, list[RequestOutcome]] = {k: list(v) for k, v in (outcomes or {}).items()}
        self.shadows: dict[tuple[str, str], ShadowCounters] = {}
        self.firing: dict[str, list[Alert]] = {}
        """What ``alerts`` returns, by service (a test sets it)."""

    def record(self, service: str, outcome: RequestOutcome) -> None:
        self.recorded.setdefault(service, []).append(outcome)

    def outcomes(self, service: str, cursor: int = 0) -> OutcomeBatch:
        after = tuple(o for o in self.recorded.get(service, []) if o.seq > cursor)
        return OutcomeBatch(after, max((o.seq for o in after), default=cursor))

    def cursor(self, service: str) -> int:
        return max((o.seq for o in self.recorded.get(service, [])), default=0)

    def shadow(self, service: str, revision: str) -> ShadowCounters:
        return self.shadows.get((service, revision), ShadowCounters())

    def snapshot(self, service: str, cursor: int | None = None) -> dict[str, Any]:
        return {"service": service, "cursor": self.cursor(service)}

    def alerts(self, service: str) -> list[Alert]:
        return list(self.firing.get(service, []))
