"""Reading the router's per-revision series from a Prometheus query API: the ``Metrics`` protocol on
aggregates, shared by the local provider (``platform.local.metrics_prometheus``: the environment's
own Prometheus) and the aws one (``platform.aws.metrics_amp``: Amazon Managed Prometheus, the same
PromQL HTTP API behind SigV4). A provider gives the base URL (the query API is
``{base}/api/v1/query``), the ``httpx.Client`` to ask it with (its auth signs each request) and a
delegate for what the series do not hold.

The routers export, per service and revision, counters of requests by status, 2xx answers by
fallback flag, transport errors by kind, feedback by rating, and a latency histogram
(``platform.request_series``: ``mangaassist_router_*``); Prometheus scrapes them (CD-08). Where no
router stands in front of the workers (ECS behind an ALB) each worker exports the same series itself
and a collector in its task remote-writes them (AMP: ``platform.aws.compute_ecs``). This reads those
series instead of per-request records, the way a judge reads CloudWatch or Managed Prometheus in
production: aggregates, not requests (``per_request`` is False).

**Cursor.** A cursor is the timestamp, in microseconds, of the newest scrape of the service's router
that Prometheus had ingested when it was read. ``outcomes(service, cursor)`` queries every counter
at that time and at the newest scrape now, and expands the difference into observations: one per
counted request (statuses exact), each with the upper bound of the latency bucket it fell in (the
latency is judged at bucket resolution, ``docs/decisions/0005-anytime-valid-canary-judge.md``), the
fallback flag on as many 2xx answers as the counter says, transport errors as ``status`` 0 with
their kind, and one feedback observation per counted rating. Increases are taken per series (each
exporter's own: the router, or each task of a revision on ECS) and summed after, so a series that
went down (its exporter restarted) counts from zero, one that is gone (a task stopped) adds nothing
and moves no other's count, and one that is new counts from zero. Because both ends of a window are
scrape times Prometheus already had, consecutive windows telescope: nothing is counted twice and
nothing is lost to ingestion delay. Observations are numbered inside the window (``seq`` between the
two cursors) and spread over it in time; within a window their order is a fixed shuffle, so a
sequential judge does not see all of a revision's errors first.

**What it cannot tell.** Requests pinned to a revision (smoke tests) are counted with the rest: the
router's counters do not separate them (the router's own records do; judges of a phase start their
window after the smoke test). Shadow counters, the provider's snapshot and the firing alerts come
from the ``Metrics`` it is given (``delegate``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

from mangaassist.core.errors import ConfigError
from mangaassist.platform.metrics import (
    Alert,
    Metrics,
    OutcomeBatch,
    OutcomeKind,
    RequestOutcome,
    ShadowCounters,
)

US = 1_000_000
"""Cursor units per second."""

# the router's families (``platform.local.stats``) and the labels each is summed by
_REQUESTS = "mangaassist_router_requests_total"
_ANSWERS = "mangaassist_router_answers_total"
_TRANSPORT = "mangaassist_router_transport_errors_total"
_FEEDBACK = "mangaassist_router_feedback_total"
_LATENCY = "mangaassist_router_latency_seconds_bucket"

Counts = dict[tuple[str, str], float]
"""Counter values by (revision, the family's other label)."""
SeriesCounts = dict[tuple[tuple[str, str], tuple[tuple[str, str], ...]], float]
"""Counter values by ((revision, label), the series' whole label set): one entry per exporter."""
K = TypeVar("K")
"""(revision, label value) -> counter value."""


class PrometheusError(RuntimeError):
    """Prometheus answered with an error or could not be reached; names the query."""


class PrometheusMetrics:
    """Per-revision outcomes expanded from the router series in Prometheus (aggregates).

    ``url``: the query API's base (or a callable giving it, None while there is none: ``missing``
    says why in the error). ``client``: the ``httpx.Client`` to ask with (its auth, if any, signs
    each request); made (and closed) here when not given. ``source``: what ``snapshot`` names as
    the judges' source."""

    per_request = False

    def __init__(
        self,
        url: str | Callable[[], str | None],
        delegate: Metrics,
        *,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
        source: str = "prometheus",
        missing: str = "no Prometheus query URL",
    ) -> None:
        self._url = url
        self._delegate = delegate
        self._http = client or httpx.Client(timeout=timeout_s)
        self._own_client = client is None
        self.source = source
        self._missing = missing

    def close(self) -> None:
        if self._own_client:
            self._http.close()

    # -- the protocol ----------------------------------------------------------------------------

    def cursor(self, service: str) -> int:
        return self._newest_scrape(self._base(), service) or 0

    def outcomes(self, service: str, cursor: int = 0) -> OutcomeBatch:
        base = self._base()  # once per read: resolving it may ask whether Prometheus is ready
        end = self._newest_scrape(base, service)
        if end is None or end <= cursor:
            return OutcomeBatch((), cursor)
        now = {family: self._counts(base, service, family, by, end) for family, by in _FAMILIES.items()}
        then = (
            {family: self._counts(base, service, family, by, cursor) for family, by in _FAMILIES.items()}
            if cursor
            else {family: {} for family in _FAMILIES}
        )
        deltas = {family: _summed(_delta(now[family], then[family])) for family in _FAMILIES}
        return OutcomeBatch(expand(service, deltas, cursor, end), end)

    def shadow(self, service: str, revision: str) -> ShadowCounters:
        return self._delegate.shadow(service, revision)

    def snapshot(self, service: str, cursor: int | None = None) -> dict[str, Any]:
        return {**self._delegate.snapshot(service, cursor), "judge_source": self.source}

    def alerts(self, service: str) -> list[Alert]:
        return self._delegate.alerts(service)

    # -- Prometheus ------------------------------------------------------------------------------

    def _base(self) -> str:
        url = self._url() if callable(self._url) else self._url
        if not url:
            raise ConfigError(self._missing)
        return url.rstrip("/")

    def _query(self, base: str, expr: str, at_us: int | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} | ({"time": f"{at_us / US:.6f}"} if at_us is not None else {})
        try:
            answer = self._http.get(f"{base}/api/v1/query", params=params)
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusError(f"{self.source} query {expr!r} at {base}: {exc}") from exc
        if answer.status_code != 200 or body.get("status") != "success":
            why = body.get("error") or body.get("message") or answer.status_code
            raise PrometheusError(f"{self.source} query {expr!r} at {base}: {why}")
        return list(body["data"]["result"])

    def _newest_scrape(self, base: str, service: str) -> int | None:
        result = self._query(base, f'max(timestamp({_REQUESTS}{{service="{_label(service)}"}}))')
        if not result:
            return None
        return round(float(result[0]["value"][1]) * US)

    def _counts(self, base: str, service: str, family: str, by: str, at_us: int) -> SeriesCounts:
        """Every series of ``family`` at ``at_us``, each under its (revision, ``by``) key and its
        whole label set: increases are taken per series and summed after (``_summed``), so one of
        several exporters (a task of a revision on ECS) that stops or restarts changes only its own
        series' increase, never the others'."""
        expr = f'{family}{{service="{_label(service)}"}}'
        out: SeriesCounts = {}
        for r in self._query(base, expr, at_us):
            metric = {str(k): str(v) for k, v in r["metric"].items() if k != "__name__"}
            key = (metric.get("revision", ""), metric.get(by, ""))
            out[(key, tuple(sorted(metric.items())))] = float(r["value"][1])
        return out


_FAMILIES: Mapping[str, str] = {
    _REQUESTS: "status",
    _ANSWERS: "fallback",
    _TRANSPORT: "kind",
    _FEEDBACK: "rating",
    _LATENCY: "le",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _summed(per_series: SeriesCounts) -> Counts:
    """Per-series increases summed by their (revision, label) key."""
    out: Counts = {}
    for (key, _series), value in per_series.items():
        out[key] = out.get(key, 0.0) + value
    return out


def _delta(now: Mapping[K, float], then: Mapping[K, float]) -> dict[K, float]:
    """Counter increase per series; a series that went down restarted from zero. A series gone
    since ``then`` (its exporter stopped) adds nothing; one new since then counts from zero."""
    out: dict[K, float] = {}
    for key, value in now.items():
        before = then.get(key, 0.0)
        out[key] = value if value < before else value - before
    return out


def expand(service: str, deltas: Mapping[str, Counts], start: int, end: int) -> tuple[RequestOutcome, ...]:
    """The observations one window's counter increases stand for (module docstring), numbered
    and timed between ``start`` and ``end`` (cursor units)."""
    drafts: list[tuple[str, dict[str, Any]]] = []
    revisions = sorted({rev for counts in deltas.values() for rev, _ in counts})
    for rev in revisions:
        drafts.extend((rev, d) for d in _revision_drafts(rev, deltas))
    if not drafts:
        return ()
    span = max(end - start, 1)
    if len(drafts) > span:  # more than one observation a microsecond: keep the numbering strict
        drafts = drafts[:span]
    rng = random.Random(f"{service}:{start}:{end}")
    rng.shuffle(drafts)
    n = len(drafts)
    out = []
    for i, (rev, fields) in enumerate(drafts):
        seq = start + (i + 1) * span // n  # strictly increasing (n <= span), the last one is ``end``
        out.append(RequestOutcome(seq=seq, time=seq / US, revision=rev, **fields))
    return tuple(out)


def _of(counts: Counts, rev: str) -> dict[str, int]:
    return {label: round(n) for (r, label), n in counts.items() if r == rev and round(n) > 0}


def _revision_drafts(rev: str, deltas: Mapping[str, Counts]) -> list[dict[str, Any]]:
    statuses = _of(deltas.get(_REQUESTS, {}), rev)
    transport = _of(deltas.get(_TRANSPORT, {}), rev)
    fallbacks = _of(deltas.get(_ANSWERS, {}), rev).get("true", 0)
    feedback = _of(deltas.get(_FEEDBACK, {}), rev)
    latencies = _latencies(_of(deltas.get(_LATENCY, {}), rev))

    requests: list[dict[str, Any]] = []
    # the router folds a transport error into the 502/504 the client got; give it back its kind
    for kind, n in sorted(transport.items()):
        folded = "504" if kind == "timeout" else "502"
        take = min(n, statuses.get(folded, 0))
        if take:
            statuses[folded] -= take
            requests.extend({"status": 0, "error": kind} for _ in range(take))
    for status, n in sorted(statuses.items()):
        code = int(status) if status.isdigit() else 0
        requests.extend({"status": code, "error": None if code else "unknown"} for _ in range(n))
    answered = [r for r in requests if 200 <= r["status"] < 300]
    for r in answered[:fallbacks]:
        r["fallback"] = True
    for i, r in enumerate(requests):
        r["latency_ms"] = latencies[i] if i < len(latencies) else (latencies[-1] if latencies else 0.0)
        r["kind"] = OutcomeKind.REQUEST
    ratings = [
        {"kind": OutcomeKind.FEEDBACK, "rating": rating}
        for rating, n in sorted(feedback.items())
        for _ in range(n)
    ]
    return requests + ratings


def _latencies(cumulative: Mapping[str, int]) -> list[float]:
    """One latency (the bucket's upper bound, in ms) per observation of a cumulative histogram's
    increase; +Inf observations get twice the largest finite bound."""
    bounds = sorted(((float("inf") if le == "+Inf" else float(le)), n) for le, n in cumulative.items())
    out: list[float] = []
    below = 0
    finite = [b for b, _ in bounds if b != float("inf")]
    for bound, running in bounds:
        n = max(0, running - below)
        below = max(below, running)
        ms = bound * 1000 if bound != float("inf") else (max(finite) * 2000 if finite else 0.0)
        out.extend([ms] * n)
    return out
