"""CloudWatch alarms for the SLOs: the same multiwindow burn-rate alerts as the Prometheus rules (CD-08).

Why: staging and prod run on AWS, where the burn-rate alerts must live in CloudWatch to page anyone
(and to gate CD-01 and CD-03 rollouts). The definitions are plain data (``as_dict`` gives
CloudFormation's ``AWS::CloudWatch::Alarm`` / ``AWS::CloudWatch::CompositeAlarm`` properties), so a
CDK stack can create them with ``CfnAlarm`` / ``CfnCompositeAlarm`` and tests can read them here.

Per SLO and enabled severity, for each of its two conditions (page: quick and slow; ticket: quick
and slow), two metric-math alarms, one on the short window and one on the long window, each
``error ratio > factor * error budget`` over one datapoint whose period is the window; a composite
alarm ANDs them (the condition), and a composite per severity ORs the two conditions (what pages,
or opens the ticket). Missing data is not breaching: no traffic is no evidence of errors, as in
Prometheus, where a ratio of nothing is no series.

Metric mapping (namespace ``MangaAssist``), derived from the SLI's Prometheus selectors
(``slo.sli_shape``), which the workload's CloudWatch metrics (embedded metric format) mirror:

- metric name: the Prometheus name without the ``mangaassist_`` prefix and the ``_total`` suffix
  (counters) or the ``_seconds`` unit (histograms), in CamelCase:
  ``mangaassist_router_requests_total`` -> ``RouterRequests``,
  ``mangaassist_router_latency_seconds`` -> ``RouterLatency`` (unit Seconds),
  ``mangaassist_router_answers_total`` -> ``RouterAnswers``,
  ``mangaassist_config_requests_total`` -> ``ConfigRequests``;
- dimensions: each ``label="value"`` matcher, the label in CamelCase (``service="chatbot"`` ->
  ``Service=chatbot``); the error (or good) events are the same metric with their extra matchers as
  more dimensions: ``fallback="true"`` -> ``Fallback=true``, and a status-class regex ``status=~"5.."``
  -> ``Status=5xx`` (the publisher records the status class, since CloudWatch cannot match a regex);
- counters are read with the ``Sum`` statistic: ratio = ``FILL(errors, 0) / total`` (or
  ``1 - FILL(good, 0) / total``);
- a histogram threshold ``le="2.5"`` is CloudWatch's percentile rank of the latency metric:
  ratio = ``1 - PR(:2.5) / 100`` (PR(:X) is the percentage of observations <= X).

Any other matcher (a negation, another regex) has no CloudWatch equivalent and is refused with a
``ConfigError`` naming the SLO. CloudWatch's own limits are checked: a period is 10, 20, 30 or a
multiple of 60 seconds, and one datapoint may cover at most a day below an hour's period, seven days
from an hour up (the 3-day window fits).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.core.resources import physical_name
from mangaassist.delivery.monitoring.rules import format_float
from mangaassist.delivery.monitoring.slo import (
    SLO,
    CounterRatio,
    HistogramThreshold,
    Matcher,
    Severity,
    ShapeError,
    WindowSet,
    format_duration,
    sli_shape,
)

NAMESPACE = "MangaAssist"


class Unmappable(ConfigError):
    """The SLO's SLI has no CloudWatch equivalent (a raw query, a negated matcher...): the build
    reports the SLO without alarms rather than failing every other SLO."""


PREFIX = "mangaassist_"


def metric_name(prometheus_name: str) -> str:
    """``mangaassist_router_requests_total`` -> ``RouterRequests`` (see the module docstring)."""
    name = prometheus_name.removeprefix(PREFIX)
    for suffix in ("_total", "_count", "_bucket", "_seconds"):
        name = name.removesuffix(suffix)
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _dimension_name(label: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in label.split("_") if part)


_STATUS_CLASS = re.compile(r"^([1-5])\.\.$")


def _dimension(slo: SLO, matcher: Matcher) -> tuple[str, str]:
    if matcher.op == "=":
        return _dimension_name(matcher.label), matcher.value
    status = _STATUS_CLASS.match(matcher.value)
    if matcher.op == "=~" and status:
        return _dimension_name(matcher.label), f"{status.group(1)}xx"
    raise Unmappable(
        f"SLO {slo.id} ({slo.location}): the matcher {matcher.render()} has no CloudWatch dimension "
        '(only label="value" and status classes like status=~"5..")'
    )


@dataclass(frozen=True)
class MetricStat:
    """A CloudWatch metric read with one statistic."""

    name: str
    dimensions: tuple[tuple[str, str], ...]
    stat: str

    def as_dict(self, period_s: int) -> dict[str, Any]:
        return {
            "Metric": {
                "Namespace": NAMESPACE,
                "MetricName": self.name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
            },
            "Period": period_s,
            "Stat": self.stat,
        }


@dataclass(frozen=True)
class ErrorRatio:
    """How to compute an SLO's error ratio in CloudWatch: named metrics and a math expression."""

    metrics: tuple[tuple[str, MetricStat], ...]
    expression: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": {
                i: {"MetricName": m.name, "Dimensions": dict(m.dimensions), "Stat": m.stat}
                for i, m in self.metrics
            },
            "expression": self.expression,
        }


def error_ratio(slo: SLO) -> ErrorRatio:
    """The SLO's error ratio as CloudWatch metric math, or a ConfigError saying why it has none."""
    try:
        shape = sli_shape(slo.sli)
    except ShapeError as exc:
        raise Unmappable(
            f"SLO {slo.id} ({slo.location}): no CloudWatch metrics for this SLI: {exc}"
        ) from None
    if isinstance(shape, CounterRatio):
        for m in shape.total.matchers:
            if m.op != "=":
                raise Unmappable(
                    f'SLO {slo.id} ({slo.location}): the total\'s matcher {m.render()} is not label="value"'
                )
        name = metric_name(shape.total.metric)
        base = tuple(_dimension(slo, m) for m in shape.total.matchers)
        subset = base + tuple(_dimension(slo, m) for m in shape.extra)
        total = MetricStat(name, base, "Sum")
        if shape.subset_is_error:
            return ErrorRatio(
                (("errors", MetricStat(name, subset, "Sum")), ("total", total)), "FILL(errors, 0) / total"
            )
        return ErrorRatio(
            (("good", MetricStat(name, subset, "Sum")), ("total", total)), "1 - FILL(good, 0) / total"
        )
    assert isinstance(shape, HistogramThreshold)
    for m in shape.count.matchers:
        if m.op != "=":
            raise Unmappable(f'SLO {slo.id} ({slo.location}): the matcher {m.render()} is not label="value"')
    dims = tuple(_dimension(slo, m) for m in shape.count.matchers)
    good = MetricStat(metric_name(shape.base), dims, f"PR(:{shape.le})")
    return ErrorRatio((("goodpct", good),), "1 - goodpct / 100")


def check_period(period_s: int, evaluation_periods: int = 1) -> None:
    """CloudWatch's limits on an alarm's period and evaluation range (PutMetricAlarm)."""
    if period_s not in (10, 20, 30) and period_s % 60:
        raise ConfigError(
            f"CloudWatch cannot use a {format_duration(period_s)} window: periods are 10, 20, 30 or a "
            "multiple of 60 seconds"
        )
    limit = 86400 if period_s < 3600 else 7 * 86400
    if period_s * evaluation_periods > limit:
        raise ConfigError(
            f"CloudWatch cannot evaluate {evaluation_periods} x {format_duration(period_s)}: at most "
            f"{format_duration(limit)} for periods {'under' if limit == 86400 else 'of'} an hour"
            f"{'' if limit == 86400 else ' or more'}"
        )


@dataclass(frozen=True)
class MetricAlarm:
    """One window's alarm: ``error ratio over the window > threshold``."""

    name: str
    description: str
    ratio: ErrorRatio
    period_s: int
    threshold: float
    slo_id: str
    severity: Severity
    speed: str

    def as_dict(self) -> dict[str, Any]:
        """CloudFormation ``AWS::CloudWatch::Alarm`` properties."""
        metrics: list[dict[str, Any]] = [
            {"Id": i, "MetricStat": m.as_dict(self.period_s), "ReturnData": False}
            for i, m in self.ratio.metrics
        ]
        metrics.append(
            {
                "Id": "ratio",
                "Expression": self.ratio.expression,
                "Label": f"{self.slo_id} error ratio over {format_duration(self.period_s)}",
                "ReturnData": True,
            }
        )
        return {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "Metrics": metrics,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": self.threshold,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "TreatMissingData": "notBreaching",
            "ActionsEnabled": False,
        }


@dataclass(frozen=True)
class CompositeAlarm:
    """``AND`` of a condition's two windows, or ``OR`` of a severity's two conditions."""

    name: str
    description: str
    rule: str
    children: tuple[str, ...]
    slo_id: str
    severity: Severity
    speed: str | None
    """``quick`` or ``slow`` for a condition; None for the severity's composite."""

    def as_dict(self) -> dict[str, Any]:
        """CloudFormation ``AWS::CloudWatch::CompositeAlarm`` properties. Only the severity composites
        act (a CDK stack adds the SNS or paging actions); the others only compose."""
        return {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "AlarmRule": self.rule,
            "ActionsEnabled": self.speed is None,
        }


@dataclass(frozen=True)
class SLOAlarms:
    """Every alarm of one SLO."""

    slo_id: str
    ratio: ErrorRatio
    metric_alarms: tuple[MetricAlarm, ...]
    composites: tuple[CompositeAlarm, ...]


def alarm_prefix(environment: str | None) -> str:
    """``mangaassist-ENV-`` (the resource naming of infra/resources.toml), or ``mangaassist-``."""
    return physical_name(environment, "") if environment else "mangaassist-"


def slo_alarms(slo: SLO, ws: WindowSet, environment: str | None = None) -> SLOAlarms:
    """The alarms of one SLO (none for a severity whose alert is disabled)."""
    ratio = error_ratio(slo)
    prefix = f"{alarm_prefix(environment)}slo-{slo.id}"
    metric_alarms: list[MetricAlarm] = []
    composites: list[CompositeAlarm] = []
    by_severity: dict[Severity, list[str]] = {}
    for severity, speed, cond in ws.conditions():
        if not (slo.alerting.page if severity == "page" else slo.alerting.ticket).enabled:
            continue
        factor = cond.factor(ws.period_s)
        threshold = factor * slo.error_budget
        names = []
        for window in (cond.short_s, cond.long_s):
            check_period(window)
            name = f"{prefix}-{severity}-{speed}-{format_duration(window)}"
            names.append(name)
            metric_alarms.append(
                MetricAlarm(
                    name=name,
                    description=(
                        f"{slo.id}: error ratio over {format_duration(window)} above {format_float(factor)}x "
                        f"the error budget ({format_float(slo.error_budget)}, objective "
                        f"{format_float(slo.objective)}%)"
                    ),
                    ratio=ratio,
                    period_s=window,
                    threshold=threshold,
                    slo_id=slo.id,
                    severity=severity,
                    speed=speed,
                )
            )
        condition = f"{prefix}-{severity}-{speed}"
        composites.append(
            CompositeAlarm(
                name=condition,
                description=(
                    f"{slo.id}: {severity} {speed} condition: {format_duration(cond.short_s)} and "
                    f"{format_duration(cond.long_s)} both above {format_float(factor)}x the error budget"
                ),
                rule=" AND ".join(f'ALARM("{n}")' for n in names),
                children=tuple(names),
                slo_id=slo.id,
                severity=severity,
                speed=speed,
            )
        )
        by_severity.setdefault(severity, []).append(condition)
    for severity, conditions in by_severity.items():
        composites.append(
            CompositeAlarm(
                name=f"{prefix}-{severity}",
                # CloudWatchMetrics.alerts reads the service from " of service NAME: "
                description=(
                    f"{slo.id}: the {severity} alert of service {slo.service}: "
                    "the error budget burns too fast"
                ),
                rule=" OR ".join(f'ALARM("{n}")' for n in conditions),
                children=tuple(conditions),
                slo_id=slo.id,
                severity=severity,
                speed=None,
            )
        )
    return SLOAlarms(slo.id, ratio, tuple(metric_alarms), tuple(composites))


def alarms(
    slos: Sequence[SLO], ws: WindowSet, environment: str | None = None
) -> tuple[list[SLOAlarms], dict[str, str]]:
    """Every SLO's alarms, and why the SLOs without any have none (``Unmappable``). A window
    CloudWatch cannot evaluate raises ``ConfigError``: it concerns every SLO."""
    out: list[SLOAlarms] = []
    unmapped: dict[str, str] = {}
    for slo in slos:
        try:
            out.append(slo_alarms(slo, ws, environment))
        except Unmappable as exc:
            unmapped[slo.id] = str(exc)
    return out, unmapped


def alarms_document(slos: Sequence[SLO], ws: WindowSet, environment: str | None = None) -> dict[str, Any]:
    """The JSON ``build`` writes to ``cloudwatch/alarms.json``: the metric mapping per SLO, the SLOs
    without alarms and why, then the alarms (children before the composites that reference them: the
    order to create them in)."""
    every, unmapped = alarms(slos, ws, environment)
    return {
        "namespace": NAMESPACE,
        "environment": environment,
        "window_set": ws.name,
        "period": ws.period,
        "slos": {a.slo_id: a.ratio.as_dict() for a in every},
        "unmapped": unmapped,
        "alarms": [m.as_dict() for a in every for m in a.metric_alarms],
        "composite_alarms": [c.as_dict() for a in every for c in a.composites],
    }
