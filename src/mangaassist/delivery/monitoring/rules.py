"""Prometheus recording and alerting rules for SLOs, exactly as Sloth generates them (CD-08).

Why Sloth's output, to the label: the rules are what every other piece reads (Grafana's SLO
dashboards, Sloth's own dashboards, Alertmanager routes on ``sloth_severity``), and Sloth's layout is
the one people and tools already know. ``tests/unit/monitoring/test_rules_sloth_golden.py`` proves
the equivalence on Sloth's own golden files. No Sloth code is used: this is our Python, written
against those files.

For each SLO (``sloth_id`` = ``service-slo``), three rule groups:

1. ``sloth-slo-sli-recordings-ID``: ``slo:sli_error:ratio_rate<W>`` for every window W of the window
   set (5m, 30m, 1h, 2h, 6h, 1d, 3d for ``google-30d``), each the SLI's error ratio over W, and one for
   the SLO period (``30d``), computed cheaply as the mean of the shortest window's ratio over the
   period (``sum_over_time / count_over_time``), as Sloth does.
2. ``sloth-slo-meta-recordings-ID``: ``slo:objective:ratio``, ``slo:error_budget:ratio``,
   ``slo:time_period:days``, ``slo:current_burn_rate:ratio`` (the shortest window's ratio over the
   budget), ``slo:period_burn_rate:ratio``, ``slo:period_error_budget_remaining:ratio`` and
   ``sloth_slo_info`` (objective, spec, mode and generator version as labels).
3. ``sloth-slo-alerts-ID`` (when an alert is enabled): one alert rule per severity named
   ``alerting.name``, labelled ``sloth_severity: page|ticket``, firing when both windows of either of
   its conditions burn faster than the condition's factor times the error budget (google-30d: page on
   5m and 1h above 14.4x, or 30m and 6h above 6x; ticket on 2h and 1d above 3x, or 6h and 3d above 1x).

Every recording carries the SLO's labels (the service's, overridden by the SLO's, then the extra
labels) and ``sloth_id``, ``sloth_service``, ``sloth_slo`` (plus ``sloth_window`` on SLI ratios); the
alerts carry the alerting labels, the severity's labels and ``sloth_severity``, and Sloth's ``title``
and ``summary`` annotations unless the spec overrides them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from mangaassist import __version__
from mangaassist.delivery.monitoring.slo import (
    OPENSLO_V1,
    OPENSLO_V1ALPHA,
    SLO,
    AlertSpec,
    EventsSLI,
    RawSLI,
    Severity,
    WindowSet,
    format_duration,
    render_query,
)

GENERATOR_VERSION = f"mangaassist-{__version__}"
"""The ``sloth_version`` label of ``sloth_slo_info``: which generator wrote the rules."""

ID_LABEL, SERVICE_LABEL, SLO_LABEL = "sloth_id", "sloth_service", "sloth_slo"
WINDOW_LABEL, SEVERITY_LABEL = "sloth_window", "sloth_severity"


def format_float(value: float) -> str:
    """A float as Go's ``%v`` prints it, which is what Sloth's templates do: the shortest digits that
    read back as the same float, no ``.0`` on whole numbers (``30``, ``14.4``, ``0.9990000000000001``,
    ``1e-05``). Python's ``repr`` agrees except for the ``.0`` and for magnitudes >= 1e16."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def sli_error_metric(window_s: int) -> str:
    """``slo:sli_error:ratio_rate5m`` for 300 seconds."""
    return f"slo:sli_error:ratio_rate{format_duration(window_s)}"


def slo_selector(slo: SLO) -> str:
    """``{sloth_id="...", sloth_service="...", sloth_slo="..."}``: how every rule finds this SLO's series."""
    pairs = ((ID_LABEL, slo.id), (SERVICE_LABEL, slo.service), (SLO_LABEL, slo.name))
    return "{" + ", ".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def slo_labels(slo: SLO) -> dict[str, str]:
    """The three labels that identify an SLO's series."""
    return {ID_LABEL: slo.id, SERVICE_LABEL: slo.service, SLO_LABEL: slo.name}


@dataclass(frozen=True)
class Rule:
    """A recording (``kind="record"``) or alerting rule."""

    kind: Literal["record", "alert"]
    name: str
    expr: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: self.name, "expr": self.expr}
        if self.labels:
            out["labels"] = dict(sorted(self.labels.items()))
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out


@dataclass(frozen=True)
class RuleGroup:
    """One Prometheus rule group, and the SLO it belongs to."""

    name: str
    rules: tuple[Rule, ...]
    slo_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rules": [r.as_dict() for r in self.rules]}


@dataclass(frozen=True)
class RuleOptions:
    """Sloth's ``generate`` switches: ``--disable-recordings``, ``--disable-alerts``, ``-l k=v``."""

    recordings: bool = True
    alerts: bool = True
    extra_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    version: str = GENERATOR_VERSION


# -- the SLI --------------------------------------------------------------------------------------


def sli_expr(slo: SLO, window_s: int) -> str:
    """The SLI's error ratio over one window, laid out as Sloth lays it out."""
    sli = slo.sli
    if isinstance(sli, EventsSLI):
        error = render_query(sli.error_query, window_s)
        total = render_query(sli.total_query, window_s)
        return f"({error})\n/\n({total})\n"
    if isinstance(sli, RawSLI):
        return f"({render_query(sli.error_ratio_query, window_s)})"
    good = render_query(sli.good_query, window_s).strip()
    total = render_query(sli.total_query, window_s).strip()
    # OpenSLO counts good events; the rules want the error ratio.
    return f"(\n  1 - (\n    (\n      {good}\n    )\n    /\n    (\n      {total}\n    )\n  )\n)"


def _recording_labels(slo: SLO, options: RuleOptions) -> dict[str, str]:
    return {**slo.labels, **options.extra_labels, **slo_labels(slo)}


def sli_recordings(slo: SLO, ws: WindowSet, options: RuleOptions) -> list[Rule]:
    labels = _recording_labels(slo, options)
    rules = [
        Rule(
            "record",
            sli_error_metric(w),
            sli_expr(slo, w),
            {**labels, WINDOW_LABEL: format_duration(w)},
        )
        for w in ws.windows()
    ]
    # The period's ratio averages the shortest window's over the period: a rate over 30 days of raw
    # series would be expensive to evaluate every minute.
    short = ws.page_quick.short_s
    sel = slo_selector(slo)
    period = ws.period
    rules.append(
        Rule(
            "record",
            sli_error_metric(ws.period_s),
            f"sum_over_time({sli_error_metric(short)}{sel}[{period}])\n/ ignoring ({WINDOW_LABEL})\n"
            f"count_over_time({sli_error_metric(short)}{sel}[{period}])\n",
            {**labels, WINDOW_LABEL: period},
        )
    )
    return rules


def _spec_mode(slo: SLO) -> str:
    return "cli-gen-openslo" if slo.spec in (OPENSLO_V1ALPHA, OPENSLO_V1) else "cli-gen-prom"


def meta_recordings(slo: SLO, ws: WindowSet, options: RuleOptions) -> list[Rule]:
    labels = _recording_labels(slo, options)
    sel = slo_selector(slo)
    ratio = format_float(slo.objective_ratio)
    on = f"/ on({ID_LABEL}, {SLO_LABEL}, {SERVICE_LABEL}) group_left"
    return [
        Rule("record", "slo:objective:ratio", f"vector({ratio})", labels),
        Rule("record", "slo:error_budget:ratio", f"vector(1-{ratio})", labels),
        Rule("record", "slo:time_period:days", f"vector({format_float(ws.period_s / 86400)})", labels),
        Rule(
            "record",
            "slo:current_burn_rate:ratio",
            f"{sli_error_metric(ws.page_quick.short_s)}{sel}\n{on}\nslo:error_budget:ratio{sel}\n",
            labels,
        ),
        Rule(
            "record",
            "slo:period_burn_rate:ratio",
            f"{sli_error_metric(ws.period_s)}{sel}\n{on}\nslo:error_budget:ratio{sel}\n",
            labels,
        ),
        Rule(
            "record",
            "slo:period_error_budget_remaining:ratio",
            f"1 - slo:period_burn_rate:ratio{sel}",
            labels,
        ),
        Rule(
            "record",
            "sloth_slo_info",
            "vector(1)",
            {
                **labels,
                "sloth_mode": _spec_mode(slo),
                "sloth_objective": format_float(slo.objective),
                "sloth_spec": slo.spec,
                "sloth_version": options.version,
            },
        ),
    ]


# -- alerts ---------------------------------------------------------------------------------------


def alert_expr(slo: SLO, ws: WindowSet, severity: Severity) -> str:
    """Both conditions of a severity, each ``short AND long`` above ``factor * error budget``."""
    sel = slo_selector(slo)
    budget = format_float(slo.error_budget)
    blocks = []
    for sev, _speed, cond in ws.conditions():
        if sev != severity:
            continue
        factor = format_float(cond.factor(ws.period_s))
        lines = [
            f"    max({sli_error_metric(w)}{sel} > ({factor} * {budget})) without ({WINDOW_LABEL})"
            for w in (cond.short_s, cond.long_s)
        ]
        blocks.append("(\n" + "\n    and\n".join(lines) + "\n)")
    return "\nor\n".join(blocks) + "\n"


def alert_annotations(slo: SLO, severity: Severity, alert: AlertSpec) -> dict[str, str]:
    """Sloth's ``title`` and ``summary`` (label templates Prometheus expands), then the spec's own."""
    who = f"{{{{$labels.{SERVICE_LABEL}}}}} {{{{$labels.{SLO_LABEL}}}}}"
    return {
        "title": f"({severity}) {who} SLO error budget burn rate is too fast.",
        "summary": f"{who} SLO error budget burn rate is over expected.",
        **slo.alerting.annotations,
        **alert.annotations,
    }


def alert_rule(slo: SLO, ws: WindowSet, severity: Severity) -> Rule:
    alert = slo.alerting.page if severity == "page" else slo.alerting.ticket
    return Rule(
        "alert",
        slo.alerting.name,
        alert_expr(slo, ws, severity),
        {SEVERITY_LABEL: severity, **slo.alerting.labels, **alert.labels},
        alert_annotations(slo, severity, alert),
    )


def alert_rules(slo: SLO, ws: WindowSet) -> list[Rule]:
    severities: tuple[Severity, ...] = ("page", "ticket")
    return [
        alert_rule(slo, ws, sev)
        for sev in severities
        if (slo.alerting.page if sev == "page" else slo.alerting.ticket).enabled
    ]


# -- groups and files -----------------------------------------------------------------------------


def slo_groups(slo: SLO, ws: WindowSet, options: RuleOptions | None = None) -> list[RuleGroup]:
    """The (up to) three groups of one SLO, in Sloth's order; empty groups are left out."""
    options = options or RuleOptions()
    groups = []
    if options.recordings:
        groups.append(
            RuleGroup(f"sloth-slo-sli-recordings-{slo.id}", tuple(sli_recordings(slo, ws, options)), slo.id)
        )
        groups.append(
            RuleGroup(f"sloth-slo-meta-recordings-{slo.id}", tuple(meta_recordings(slo, ws, options)), slo.id)
        )
    if options.alerts:
        alerts = alert_rules(slo, ws)
        if alerts:
            groups.append(RuleGroup(f"sloth-slo-alerts-{slo.id}", tuple(alerts), slo.id))
    return groups


def generate(slos: Iterable[SLO], ws: WindowSet, options: RuleOptions | None = None) -> list[RuleGroup]:
    """Every SLO's groups, in the SLOs' order (which is the specs' file and document order)."""
    return [group for slo in slos for group in slo_groups(slo, ws, options)]


def rule_file(groups: Sequence[RuleGroup]) -> dict[str, Any]:
    """A Prometheus rule file's content: ``{"groups": [...]}``."""
    return {"groups": [g.as_dict() for g in groups]}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as ``|`` blocks, so the files read like Sloth's."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(document: Any, header: str = "") -> str:
    """YAML text (keys in the order given, long lines unwrapped), after an optional comment header."""
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return lines + body
