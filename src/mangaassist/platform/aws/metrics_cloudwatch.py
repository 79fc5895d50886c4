"""``CloudWatchMetrics``: the ``Metrics`` protocol on CloudWatch's per-revision aggregates.

On AWS nothing records single requests for the judges: the load balancer (or SageMaker) publishes
per-minute metrics per target group (or variant), and the workload publishes its quality flags as
embedded-metric-format (EMF) log lines, which CloudWatch turns into custom metrics. This provider
reads both with ``GetMetricData`` and expands them into observations, the way
``PrometheusMetrics`` expands the local routers' counters: aggregates, not requests
(``per_request`` is False; ``docs/decisions/0005-anytime-valid-canary-judge.md``).

**What is read, per revision** (``RevisionSource``, from the ``Compute`` that runs the service:
``sources_of``), one ``period_s`` (60 s) datapoint at a time:

=====================  ========================================================================
kind ``alb`` (ECS)     ``AWS/ApplicationELB`` with dimensions ``LoadBalancer`` and ``TargetGroup``
                       (the revision's target group): ``RequestCount``,
                       ``HTTPCode_Target_{2,3,4,5}XX_Count``, ``TargetConnectionErrorCount``
                       (``Sum``) and ``TargetResponseTime`` (seconds; percentiles, below)
kind ``sagemaker``     ``AWS/SageMaker`` with ``EndpointName`` and ``VariantName``:
                       ``Invocations``, ``Invocation4XXErrors``, ``Invocation5XXErrors`` (``Sum``)
                       and ``ModelLatency`` (microseconds; percentiles)
quality flags (both)   namespace ``namespace`` (``MangaAssist``), as CD-08's alarms name them
                       (``delivery/monitoring/cloudwatch.py``): ``RouterQualityFlags`` with
                       dimensions ``Service``, ``Revision``, ``Flag`` (``fallback`` |
                       ``guardrail``) and ``RouterFeedback`` with ``Service``, ``Revision``,
                       ``Rating`` (``up`` | ``down``), ``Sum``
=====================  ========================================================================

The EMF line that yields one flag: ``{"_aws": {"Timestamp": MS, "CloudWatchMetrics":
[{"Namespace": "MangaAssist", "Dimensions": [["Service", "Revision", "Flag"]], "Metrics":
[{"Name": "RouterQualityFlags", "Unit": "Count"}]}]}, "Service": "chatbot", "Revision": "r2",
"Flag": "fallback", "RouterQualityFlags": 1}``. The chatbot writes them to its standard output
(``chatbot.emf``, on with ``MANGAASSIST_EMF=1``, which ``EcsServiceCompute`` sets): the task's
``awslogs`` driver sends them to CloudWatch Logs, which extracts the metrics. A workload that
writes none has ``fallback`` and ``guardrail`` False and no feedback here (the rates the judge
compares on them are then 0 on both sides: no evidence, never a false alarm).

**Cursor.** Microseconds since the epoch of the end of the newest *settled* period: a period is
settled ``settle_s`` (180 s) after it ends, since the load balancer's datapoints arrive a minute or
two late. ``outcomes(service, cursor)`` reads the whole periods between the cursor and the newest
settled one (cursor 0: the last ``lookback_s``, one hour) and returns the latter as the next
cursor, so windows telescope: nothing is counted twice. A datapoint that arrives later than
``settle_s`` after its period ended is never read (raise ``settle_s`` if CloudWatch lags more).
The judge thus sees a phase's traffic ``settle_s`` plus up to a period late: a phase must last
several periods longer than on the local platform.

**Expansion**, per revision and period: one observation per counted request. ``status`` is the
class (200, 300, 400, 500), exact in number; requests the load balancer sent to the target group
but no target answered (``RequestCount`` minus the four classes) are ``status`` 0 with ``error``
``connect`` (up to ``TargetConnectionErrorCount``) or ``unavailable`` (the ALB answered 502, 503
or 504 itself; CloudWatch does not say which). The ``fallback`` and ``guardrail`` flags are set on
as many 2xx answers as the custom metrics count, and each ``RouterFeedback`` count is a feedback
observation.

**Latency resolution.** CloudWatch has no histogram of ``TargetResponseTime``; it has percentiles.
Per period this reads the percentiles ``latency_percentiles`` (p1, p5, p10, p20, ..., p90, p95,
p99, p99.9) and ``Maximum``; the k-th of n answered requests (rank ``q = (k - 0.5) / n``) gets
the smallest of those percentiles at or above ``q`` (``Maximum`` above p99.9): an upper bound,
like the upper bound of a histogram bucket, off by at most the gap between two neighbouring
percentiles of that period's distribution (wide in the tail: between p99 and p99.9 and the
maximum). The latencies are then dealt to the period's answered requests in a seeded random order
(which request was slow is not known). With ``latency_percentiles=()`` every answered request gets
the period's ``Average`` (moto's server, which has no percentile statistics, is tested that way).
Failed requests without an answer have latency 0.

**What it cannot tell.** Pinned requests (smoke tests) are counted with the rest (``pinned`` is
always False): the load balancer's metrics do not separate them; judges start their window after
the smoke test. ALB 5xx errors it answers before choosing a target are per load balancer, not per
target group, so no revision gets them. Sessions are unknown (``session`` None). An ALB has no
shadow, so ``shadow`` is all zero.

**Alerts.** ``alerts(service)`` lists CD-08's SLO alarms that CD-02's monitoring stack creates
(``delivery/monitoring/cloudwatch.py``): the composite alarms named ``alarm_prefix`` + ``SLO-ID`` +
``-page`` or ``-ticket`` (one per SLO and severity) that are in ``ALARM``
(``DescribeAlarms``, paginated), whose description names the service they guard (``... of service
NAME: ...``, ``SERVICE_IN_DESCRIPTION``). The conditions' composites and the window alarms under
them are not alerts. An alarm in ``ALARM`` without actions enabled still counts: the gate reads the
state, not who was notified. Without ``alarm_prefix`` there are no alerts.

Chosen by ``platform.factory.Platform.metrics`` for aws environments.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.platform.metrics import (
    FEEDBACK_METRIC,
    QUALITY_FLAGS_METRIC,
    Alert,
    OutcomeBatch,
    OutcomeKind,
    RequestOutcome,
    ShadowCounters,
)

US = 1_000_000
"""Cursor units per second."""
NAMESPACE = "MangaAssist"
LATENCY_PERCENTILES: tuple[float, ...] = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.9)
FLAGS = ("fallback", "guardrail")
RATINGS = ("up", "down")
_MAX_QUERIES = 500
SEVERITIES = ("page", "ticket")
SERVICE_IN_DESCRIPTION = re.compile(r" of service ([A-Za-z0-9][A-Za-z0-9_.-]*): ")
"""How a severity composite's description names the service it guards (CD-08 writes it so)."""

# key -> (metric name, statistic) per kind; the latency metric and its unit (to milliseconds)
_COUNTS: Mapping[str, Mapping[str, str]] = {
    "alb": {
        "requests": "RequestCount",
        "200": "HTTPCode_Target_2XX_Count",
        "300": "HTTPCode_Target_3XX_Count",
        "400": "HTTPCode_Target_4XX_Count",
        "500": "HTTPCode_Target_5XX_Count",
        "connect": "TargetConnectionErrorCount",
    },
    "sagemaker": {
        "requests": "Invocations",
        "400": "Invocation4XXErrors",
        "500": "Invocation5XXErrors",
    },
}
_NAMESPACES = {"alb": "AWS/ApplicationELB", "sagemaker": "AWS/SageMaker"}
_LATENCY = {"alb": ("TargetResponseTime", 1000.0), "sagemaker": ("ModelLatency", 0.001)}


class CloudWatchError(MangaAssistError):
    """CloudWatch refused a call; the message names the operation and AWS's code."""


@dataclass(frozen=True)
class RevisionSource:
    """Where one revision's request metrics are: ``kind`` ``alb`` or ``sagemaker`` and the
    dimensions of its target group or variant."""

    kind: str
    dimensions: Mapping[str, str]

    def __post_init__(self) -> None:
        if self.kind not in _COUNTS:
            raise ConfigError(f"metric source kind {self.kind!r} is unknown (have: {', '.join(_COUNTS)})")


Sources = Callable[[str], Mapping[str, RevisionSource]]
"""A service's live revisions and where their metrics are."""


def sources_of(compute: Any) -> Sources:
    """The metric sources of the services ``compute`` runs: ECS revisions by their target groups
    (``alb_dimensions``), SageMaker variants by endpoint and variant; a routed compute per service
    (``for_service``)."""

    def sources(service: str) -> Mapping[str, RevisionSource]:
        target = compute.for_service(service) if hasattr(compute, "for_service") else compute
        if hasattr(target, "alb_dimensions"):
            return {rev: RevisionSource("alb", dims) for rev, dims in target.alb_dimensions(service).items()}
        if hasattr(target, "endpoint_name"):
            endpoint = target.endpoint_name(service)
            return {
                r.name: RevisionSource("sagemaker", {"EndpointName": endpoint, "VariantName": r.name})
                for r in target.status(service).revisions
            }
        raise ConfigError(f"service {service}: no CloudWatch metrics known for {type(target).__name__}")

    return sources


@dataclass
class _Period:
    """One revision's figures in one period: counts by key, latency statistics by name."""

    counts: dict[str, float] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)


class CloudWatchMetrics:
    """Per-revision outcomes expanded from CloudWatch's per-period metrics (module docstring)."""

    per_request = False

    def __init__(
        self,
        cloudwatch: Any,
        sources: Sources,
        *,
        namespace: str = NAMESPACE,
        period_s: int = 60,
        settle_s: float = 180.0,
        lookback_s: float = 3600.0,
        latency_percentiles: Sequence[float] = LATENCY_PERCENTILES,
        clock: Callable[[], float] = time.time,
        alarm_prefix: str | None = None,
    ) -> None:
        if period_s <= 0 or (period_s % 60 and period_s not in (1, 5, 10, 20, 30)):
            raise ConfigError(
                f"period_s {period_s}: CloudWatch periods are 1, 5, 10, 20, 30 or a multiple of 60"
            )
        self.cloudwatch = cloudwatch
        self._sources = sources
        self.namespace = namespace
        self.period_s = period_s
        self.settle_s = settle_s
        self.lookback_s = lookback_s
        self.percentiles = tuple(sorted(latency_percentiles))
        self._clock = clock
        self.alarm_prefix = alarm_prefix
        """``mangaassist-ENV-slo-``: where the environment's SLO alarms' names start."""
        self._known: dict[str, dict[str, RevisionSource]] = {}
        """Every revision seen per service: a retired revision's last periods are still read."""

    # -- the protocol ----------------------------------------------------------------------------

    def cursor(self, service: str) -> int:
        return self._settled() * US

    def outcomes(self, service: str, cursor: int = 0) -> OutcomeBatch:
        end = self._settled()
        start = (cursor // US) if cursor else int(end - self.lookback_s)
        start -= start % self.period_s
        if end <= start:
            return OutcomeBatch((), cursor)
        sources = self._sources_for(service)
        if not sources:
            return OutcomeBatch((), end * US)
        periods = self._read(service, sources, start, end)
        return OutcomeBatch(self._expand(service, periods, start, end), end * US)

    def shadow(self, service: str, revision: str) -> ShadowCounters:
        return ShadowCounters()  # an ALB (or this reading of SageMaker) has no shadow

    def snapshot(self, service: str, cursor: int | None = None) -> dict[str, Any]:
        batch = self.outcomes(service, cursor or 0)
        revisions: dict[str, dict[str, Any]] = {}
        for o in batch.outcomes:
            figures = revisions.setdefault(
                o.revision, {"requests": 0, "failed": 0, "statuses": {}, "fallback": 0, "feedback": {}}
            )
            if o.kind is OutcomeKind.FEEDBACK:
                figures["feedback"][o.rating or ""] = figures["feedback"].get(o.rating or "", 0) + 1
                continue
            figures["requests"] += 1
            figures["failed"] += o.failed
            figures["fallback"] += o.fallback
            key = str(o.status or o.error)
            figures["statuses"][key] = figures["statuses"].get(key, 0) + 1
        return {
            "source": "cloudwatch",
            "service": service,
            "period_s": self.period_s,
            "settle_s": self.settle_s,
            "cursor": batch.cursor,
            "revisions": revisions,
            "sources": {r: {"kind": s.kind, **s.dimensions} for r, s in self._known.get(service, {}).items()},
        }

    def alerts(self, service: str) -> list[Alert]:
        if not self.alarm_prefix:
            return []
        found: list[Alert] = []
        try:
            pages = self.cloudwatch.get_paginator("describe_alarms").paginate(
                AlarmNamePrefix=self.alarm_prefix, AlarmTypes=["CompositeAlarm"], StateValue="ALARM"
            )
            composites = [a for page in pages for a in page.get("CompositeAlarms", [])]
        except (BotoCoreError, ClientError) as exc:
            raise CloudWatchError(f"CloudWatch DescribeAlarms {self.alarm_prefix}*: {exc}") from exc
        for alarm in composites:
            name = str(alarm.get("AlarmName", ""))
            severity = name.rsplit("-", 1)[-1]
            guarded = SERVICE_IN_DESCRIPTION.search(str(alarm.get("AlarmDescription") or ""))
            if alarm.get("StateValue", "ALARM") != "ALARM":
                continue  # the request asked for ALARM only; a server that ignored it is not believed
            if severity not in SEVERITIES or guarded is None or guarded.group(1) != service:
                continue
            since = alarm.get("StateTransitionedTimestamp") or alarm.get("StateUpdatedTimestamp")
            found.append(
                Alert(
                    name=name,
                    service=service,
                    severity=severity,
                    summary=str(alarm.get("AlarmDescription") or ""),
                    since=since.isoformat() if isinstance(since, datetime) else None,
                )
            )
        return found

    # -- CloudWatch ------------------------------------------------------------------------------

    def _settled(self) -> int:
        """End (Unix seconds) of the newest period CloudWatch is taken to have complete."""
        ready = int(self._clock() - self.settle_s)
        return ready - ready % self.period_s

    def _sources_for(self, service: str) -> dict[str, RevisionSource]:
        known = self._known.setdefault(service, {})
        known.update(self._sources(service))
        return dict(known)

    def _queries(
        self, service: str, sources: Mapping[str, RevisionSource]
    ) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str, str]]]:
        """The metric queries and, by query id, (revision, ``count`` | ``latency``, key)."""
        queries: list[dict[str, Any]] = []
        ids: dict[str, tuple[str, str, str]] = {}

        def add(
            revision: str,
            what: str,
            key: str,
            namespace: str,
            metric: str,
            dims: Mapping[str, str],
            stat: str,
        ) -> None:
            qid = f"q{len(queries)}"
            ids[qid] = (revision, what, key)
            queries.append(
                {
                    "Id": qid,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": metric,
                            "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                        },
                        "Period": self.period_s,
                        "Stat": stat,
                    },
                    "ReturnData": True,
                }
            )

        for rev, source in sorted(sources.items()):
            namespace = _NAMESPACES[source.kind]
            for key, metric in _COUNTS[source.kind].items():
                add(rev, "count", key, namespace, metric, source.dimensions, "Sum")
            metric, _ = _LATENCY[source.kind]
            stats = [f"p{p:g}" for p in self.percentiles] + ["Maximum"] if self.percentiles else ["Average"]
            for stat in stats:
                add(rev, "latency", stat, namespace, metric, source.dimensions, stat)
            own = {"Service": service, "Revision": rev}
            for flag in FLAGS:
                add(
                    rev,
                    "count",
                    f"flag:{flag}",
                    self.namespace,
                    QUALITY_FLAGS_METRIC,
                    {**own, "Flag": flag},
                    "Sum",
                )
            for rating in RATINGS:
                add(
                    rev,
                    "count",
                    f"rating:{rating}",
                    self.namespace,
                    FEEDBACK_METRIC,
                    {**own, "Rating": rating},
                    "Sum",
                )
        return queries, ids

    def _read(
        self, service: str, sources: Mapping[str, RevisionSource], start: int, end: int
    ) -> dict[tuple[int, str], _Period]:
        """(period start, revision) -> its figures, for the periods in [start, end)."""
        queries, ids = self._queries(service, sources)
        out: dict[tuple[int, str], _Period] = {}
        for chunk in _chunks(queries, _MAX_QUERIES):
            token: str | None = None
            while True:
                params: dict[str, Any] = {
                    "MetricDataQueries": chunk,
                    "StartTime": datetime.fromtimestamp(start, UTC),
                    "EndTime": datetime.fromtimestamp(end, UTC),
                    "ScanBy": "TimestampAscending",
                }
                if token:
                    params["NextToken"] = token
                page = self._call("get_metric_data", **params)
                for result in page.get("MetricDataResults", []):
                    rev, what, key = ids[result["Id"]]
                    for stamp, value in zip(
                        result.get("Timestamps", []), result.get("Values", []), strict=False
                    ):
                        at = int(stamp.timestamp())
                        if not start <= at < end:
                            continue
                        period = out.setdefault((at - at % self.period_s, rev), _Period())
                        target = period.counts if what == "count" else period.latency
                        target[key] = target.get(key, 0.0) + float(value) if what == "count" else float(value)
                token = page.get("NextToken")
                if not token:
                    break
        return out

    def _call(self, op: str, **params: Any) -> Any:
        try:
            return getattr(self.cloudwatch, op)(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise CloudWatchError(f"{op}: {err.get('Code', '?')}: {err.get('Message', exc)}") from None

    # -- expansion -------------------------------------------------------------------------------

    def _expand(
        self, service: str, periods: Mapping[tuple[int, str], _Period], start: int, end: int
    ) -> tuple[RequestOutcome, ...]:
        kinds = {rev: s.kind for rev, s in self._known.get(service, {}).items()}
        by_period: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for (at, rev), figures in sorted(periods.items()):
            drafts = self._drafts(kinds.get(rev, "alb"), figures, random.Random(f"{service}:{rev}:{at}"))
            by_period.setdefault(at, []).extend((rev, d) for d in drafts)
        total = sum(len(d) for d in by_period.values())
        if not total:
            return ()
        span = (end - start) * US
        out: list[RequestOutcome] = []
        i = 0
        for at in sorted(by_period):
            entries = by_period[at]
            random.Random(f"{service}:{at}").shuffle(entries)  # a revision's errors are not all first
            for j, (rev, fields) in enumerate(entries):
                i += 1
                seq = start * US + i * span // total  # strictly increasing (total <= span); the last is end
                when = at + (j + 0.5) * self.period_s / len(entries)
                out.append(RequestOutcome(seq=seq, time=when, revision=rev, **fields))
        return tuple(out)

    def _drafts(self, kind: str, figures: _Period, rng: random.Random) -> list[dict[str, Any]]:
        counts = {k: max(0, round(v)) for k, v in figures.counts.items()}
        requests = counts.get("requests", 0)
        statuses = {code: counts.get(code, 0) for code in ("200", "300", "400", "500")}
        if kind == "sagemaker":  # no 2xx metric: the invocations that were no error
            statuses["200"] = max(0, requests - statuses["400"] - statuses["500"])
        answered_n = sum(statuses.values())
        unanswered = max(0, requests - answered_n)
        connect = min(unanswered, counts.get("connect", 0))
        drafts: list[dict[str, Any]] = []
        for code, n in statuses.items():
            drafts.extend({"kind": OutcomeKind.REQUEST, "status": int(code)} for _ in range(n))
        latencies = self._latencies(kind, figures.latency, len(drafts))
        rng.shuffle(latencies)
        for draft, latency in zip(drafts, latencies, strict=False):
            draft["latency_ms"] = latency
        ok = [d for d in drafts if 200 <= d["status"] < 300]
        for flag in FLAGS:
            for d in ok[: counts.get(f"flag:{flag}", 0)]:
                d[flag] = True
        drafts.extend({"kind": OutcomeKind.REQUEST, "status": 0, "error": "connect"} for _ in range(connect))
        drafts.extend(
            {"kind": OutcomeKind.REQUEST, "status": 0, "error": "unavailable"}
            for _ in range(unanswered - connect)
        )
        for rating in RATINGS:
            drafts.extend(
                {"kind": OutcomeKind.FEEDBACK, "rating": rating}
                for _ in range(counts.get(f"rating:{rating}", 0))
            )
        return drafts

    def _latencies(self, kind: str, stats: Mapping[str, float], n: int) -> list[float]:
        """``n`` latencies (ms) from one period's statistics (module docstring, "Latency resolution")."""
        scale = _LATENCY[kind][1]
        if not n or not stats:
            return [0.0] * n
        if not self.percentiles:
            return [stats.get("Average", 0.0) * scale] * n
        grid = [(p, stats[f"p{p:g}"]) for p in self.percentiles if f"p{p:g}" in stats]
        if "Maximum" in stats:
            grid.append((100.0, stats["Maximum"]))
        if not grid:
            return [0.0] * n
        out = []
        for k in range(1, n + 1):
            rank = (k - 0.5) * 100.0 / n
            value = next((v for p, v in grid if p >= rank), grid[-1][1])
            out.append(value * scale)
        return out


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
