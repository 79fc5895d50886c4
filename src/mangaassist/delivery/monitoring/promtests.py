"""``promtool test rules`` unit tests for the generated SLO rules, one file per SLO (CD-08).

Why: an alert that cannot fire, or fires on every blip, is found in production otherwise. Each SLO
gets four scenarios, played on synthetic series of the metrics its SLI reads, and checked by
Prometheus' own rule engine (``promtool test rules``):

1. ``fast-burn``: errors at 1.25x the page's quick factor (18x the budget with google-30d), sustained
   from the start: the page fires (and the ticket, whose thresholds are lower) after three of the
   page's short windows (15 minutes); the SLI ratio, the objective and the current burn rate have the
   values the burn implies.
2. ``blip``: six clean hours, then one short window (5 minutes) at 10x: nothing fires. ``spike``:
   the same at 20x, above the 14.4x page threshold on the 5-minute window (checked), and still
   nothing fires, because the 1-hour window does not agree: the point of multiwindow alerts.
3. ``slow-burn``: one clean hour, then 2x for three hours: after 30 minutes nothing has fired; at
   the end the ticket fires and the page does not.
4. ``silent``: no series at all (a service that is down without a scrape, or not deployed): no
   alert, and no SLI ratio (``absent``, not 0%).

The expectations are not hard-coded: ``_expected`` replays the same schedule through the window
arithmetic (the error ratio over each window is the error increase over the total increase between
the window's first and last samples) and the window set's factors, and every expectation is refused
if a ratio lies within 10% of its threshold, so a test never depends on float noise or on
Prometheus' extrapolation. Scenarios scale with the window set (``dev-short`` plays the same story
in minutes).

The series come from the SLI's shape (``slo.sli_shape``): a counter with a subset of error (or
good) events, or a histogram threshold. Label values are chosen to satisfy (or violate) the
selectors' matchers; an SLI of another shape (a raw ratio query, say) raises ``Untestable`` with the
reason, which ``build`` reports rather than skipping silently. Annotations may use only
``{{$labels.x}}`` templates, whose expansion the tests must predict.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.monitoring.rules import (
    SEVERITY_LABEL,
    WINDOW_LABEL,
    RuleOptions,
    alert_annotations,
    format_float,
    sli_error_metric,
    slo_groups,
    slo_labels,
    slo_selector,
)
from mangaassist.delivery.monitoring.slo import (
    SLO,
    CounterRatio,
    HistogramThreshold,
    Matcher,
    Selector,
    Severity,
    ShapeError,
    WindowSet,
    format_duration,
    sli_shape,
)

REQUESTS_PER_STEP = 1000.0
"""Events per sample interval in every scenario; with ``QUANTUM`` errors, an error ratio is exact to
1/64000, fine enough for a 99.99% objective's 2x burn (0.0002)."""
MARGIN = 0.10
"""How far (relative) every window's ratio must stay from every threshold it is compared with."""
FAST_BURN = 1.25
"""The fast-burn scenario burns this multiple of the page's quick factor."""


class Untestable(ValueError):
    """The SLO's tests cannot be generated; the message says why (the build reports it)."""


# -- series ---------------------------------------------------------------------------------------

_POOL = ("200", "500", "503", "429", "404", "false", "true", "ok", "error", "other")
_OPPOSITE = {"true": "false", "false": "true"}


def _pick(label: str, constraints: Sequence[Matcher], violate: Matcher | None) -> str | None:
    """A value for ``label`` passing every constraint and failing ``violate`` (None: impossible).
    Candidates are the matchers' own literals (and a boolean's opposite: ``fallback="false"`` for the
    good answers of ``fallback="true"``), a pool of status codes and flags, then absence."""
    literals = [m.value for m in (*constraints, *([violate] if violate else [])) if m.op in ("=", "!=")]
    opposites = [_OPPOSITE[v] for v in literals if v in _OPPOSITE]
    for value in (*literals, *opposites, *_POOL, ""):
        labels = {label: value}
        if all(m.matches(labels) for m in constraints) and (violate is None or not violate.matches(labels)):
            return value
    return None


def _solve(matchers: Sequence[Matcher], violate: Matcher | None = None) -> dict[str, str]:
    labels: dict[str, str] = {}
    names = dict.fromkeys([m.label for m in matchers] + ([violate.label] if violate else []))
    for label in names:
        value = _pick(
            label,
            [m for m in matchers if m.label == label],
            violate if violate and violate.label == label else None,
        )
        if value is None:
            raise Untestable(f"no value of label {label!r} satisfies the SLI's matchers")
        if value:
            labels[label] = value
    return labels


def _other_than(selector: Selector, extra: Sequence[Matcher]) -> dict[str, str]:
    """Labels matching ``selector`` but failing at least one of the ``extra`` matchers."""
    for matcher in extra:
        try:
            return _solve(selector.matchers, violate=matcher)
        except Untestable:
            continue
    raise Untestable("no series can match the total's selector without matching the events'")


def _series_name(metric: str, labels: Mapping[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{metric}{{{inner}}}"


def _counter_values(start: float, increments: Sequence[float]) -> str:
    """promtool's expanding notation for a counter: runs of equal increments as ``a+bxn``."""
    parts: list[str] = []
    value = start
    i = 0
    while i < len(increments):
        j = i
        while j < len(increments) and increments[j] == increments[i]:
            j += 1
        inc = increments[i]
        if not parts:  # the first run also carries the starting sample
            parts.append(f"{format_float(value)}+{format_float(inc)}x{j - i}")
            value += inc * (j - i)
        else:
            first = value + inc
            parts.append(f"{format_float(first)}+{format_float(inc)}x{j - i - 1}")
            value = first + inc * (j - i - 1)
        i = j
    return " ".join(parts) if parts else format_float(start)


QUANTUM = 1 / 64
"""Error increments are whole multiples of this (exact in binary): a counter built from inexact
increments can step down by 1e-13 between two runs of samples, which ``rate()`` reads as a reset and
an enormous burst of errors."""


@dataclass(frozen=True)
class _Phase:
    """``steps`` sample intervals during which ``ratio`` of the events are errors."""

    steps: int
    ratio: float


def _bad_increments(phases: Sequence[_Phase]) -> list[float]:
    """Errors added at each sample, the schedule's ratios rounded to ``QUANTUM`` (the expectations
    use the same rounded figures)."""
    return [round(p.ratio * REQUESTS_PER_STEP / QUANTUM) * QUANTUM for p in phases for _ in range(p.steps)]


def _input_series(slo: SLO, phases: Sequence[_Phase]) -> list[dict[str, str]]:
    """The SLI's input series for a schedule of error ratios (empty schedule: no series at all)."""
    if not phases:
        return []
    try:
        shape = sli_shape(slo.sli)
    except ShapeError as exc:
        raise Untestable(str(exc)) from None
    bad = _bad_increments(phases)
    total = [REQUESTS_PER_STEP] * len(bad)
    good = [t - b for t, b in zip(total, bad, strict=True)]
    # Counters start well above zero: Prometheus limits a rate's extrapolation when a counter
    # starts near zero, which would skew one side of the ratio.
    if isinstance(shape, CounterRatio):
        subset = _solve(shape.subset.matchers)
        rest = _other_than(shape.total, shape.extra)
        error_labels, good_labels = (subset, rest) if shape.subset_is_error else (rest, subset)
        return [
            {
                "series": _series_name(shape.total.metric, error_labels),
                "values": _counter_values(1000.0, bad),
            },
            {
                "series": _series_name(shape.total.metric, good_labels),
                "values": _counter_values(100000.0, good),
            },
        ]
    assert isinstance(shape, HistogramThreshold)
    base = _solve(shape.count.matchers)
    return [
        {"series": _series_name(shape.count.metric, base), "values": _counter_values(100000.0, total)},
        {
            "series": _series_name(shape.bucket.metric, {**base, "le": shape.le}),
            "values": _counter_values(99000.0, good),
        },
        {
            "series": _series_name(shape.bucket.metric, {**base, "le": "+Inf"}),
            "values": _counter_values(100000.0, total),
        },
    ]


# -- what should fire -----------------------------------------------------------------------------


def _window_ratio(phases: Sequence[_Phase], step: int, t: int, window: int) -> float | None:
    """The error ratio a ``rate()`` over ``window`` sees at ``t``: error increase over total increase
    between the first and last samples in ``[t - window, t]`` (None: fewer than two samples)."""
    per_step = [b / REQUESTS_PER_STEP for b in _bad_increments(phases)]
    last = min(t // step, len(per_step))
    first = max(0, -(-(t - window) // step))
    if last - first < 1:
        return None
    return sum(per_step[first:last]) / (last - first)


def _expected(
    slo: SLO, ws: WindowSet, phases: Sequence[_Phase], step: int, t: int
) -> tuple[list[Severity], dict[int, float | None]]:
    """The severities firing at ``t`` and every window's ratio; Untestable if a ratio is too close to
    a threshold to be a fair test."""
    ratios = {w: _window_ratio(phases, step, t, w) for w in ws.windows()}
    firing: list[Severity] = []
    for severity, _speed, cond in ws.conditions():
        threshold = cond.factor(ws.period_s) * slo.error_budget
        over = []
        for w in (cond.short_s, cond.long_s):
            r = ratios[w]
            if r is not None and threshold > 0 and abs(r - threshold) < MARGIN * threshold:
                raise Untestable(
                    f"at {format_duration(t)} the {format_duration(w)} ratio {r:.4g} is within "
                    f"{MARGIN:.0%} of the {severity} threshold {threshold:.4g}"
                )
            over.append(r is not None and r > threshold)
        enabled = (slo.alerting.page if severity == "page" else slo.alerting.ticket).enabled
        if all(over) and enabled and severity not in firing:
            firing.append(severity)
    return firing, ratios


_LABEL_TEMPLATE = re.compile(r"\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def _expand(template: str, labels: Mapping[str, str]) -> str:
    out = _LABEL_TEMPLATE.sub(lambda m: labels.get(m.group(1), ""), template)
    if "{{" in out:
        raise Untestable(f"the annotation {template!r} uses templates other than {{{{$labels.x}}}}")
    return out


def _alert_labels(slo: SLO, options: RuleOptions, severity: Severity) -> dict[str, str]:
    alert = slo.alerting.page if severity == "page" else slo.alerting.ticket
    # the alert keeps the recording's labels (but sloth_window) and adds its own
    return {
        **slo.labels,
        **options.extra_labels,
        **slo_labels(slo),
        SEVERITY_LABEL: severity,
        **slo.alerting.labels,
        **alert.labels,
    }


def _alert_test(slo: SLO, options: RuleOptions, t: int, firing: Sequence[Severity]) -> dict[str, Any]:
    alerts = []
    for severity in firing:
        labels = _alert_labels(slo, options, severity)
        alert = slo.alerting.page if severity == "page" else slo.alerting.ticket
        annotations = {k: _expand(v, labels) for k, v in alert_annotations(slo, severity, alert).items()}
        alerts.append({"exp_labels": labels, "exp_annotations": annotations})
    return {"eval_time": format_duration(t), "alertname": slo.alerting.name, "exp_alerts": alerts}


def _labels_text(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _close_to(expr: str, value: float, t: int, labels: Mapping[str, str]) -> dict[str, Any]:
    """``expr`` is within a millionth of ``value`` (rates carry float noise; ``bool`` drops the name)."""
    tolerance = format_float(max(abs(value) * 1e-6, 1e-12))
    return {
        "expr": f"abs({expr} - {format_float(value)}) < bool {tolerance}",
        "eval_time": format_duration(t),
        "exp_samples": [{"labels": _labels_text(labels), "value": 1}],
    }


# -- scenarios ------------------------------------------------------------------------------------


def sample_step(ws: WindowSet) -> int:
    """Seconds between samples and rule evaluations: a fifth of the shortest window, at most 1m."""
    return max(1, min(60, ws.page_quick.short_s // 5))


@dataclass(frozen=True)
class Scenario:
    """One ``tests:`` entry: a schedule of error ratios and what must (not) fire when."""

    name: str
    description: str
    phases: tuple[_Phase, ...]
    evals: tuple[int, ...]


def scenarios(slo: SLO, ws: WindowSet) -> list[Scenario]:
    step = sample_step(ws)
    budget = slo.error_budget

    def steps(seconds: int) -> int:
        return max(2, seconds // step)

    fast = min(1.0, FAST_BURN * ws.page_quick.factor(ws.period_s) * budget)
    short, long_ = ws.page_quick.short_s, ws.page_quick.long_s
    calm = ws.page_slow.long_s
    after = ws.page_slow.short_s
    out = [
        Scenario(
            "fast-burn",
            f"errors at {fast / budget:.3g}x the budget from the start: the page (if enabled) and the "
            f"ticket fire within {format_duration(3 * short)}",
            (_Phase(steps(3 * short), fast),),
            (steps(3 * short) * step,),
        )
    ]
    for name, burn in (("blip", 10.0), ("spike", 20.0)):
        ratio = min(1.0, burn * budget)
        phases = (_Phase(steps(calm), 0.0), _Phase(steps(short), ratio), _Phase(steps(after), 0.0))
        end = (steps(calm) + steps(short)) * step
        out.append(
            Scenario(
                name,
                f"{format_duration(calm)} clean, then {format_duration(short)} at {burn:g}x the budget: "
                "the long windows do not agree, nothing fires",
                phases,
                (end, end + short, end + steps(after) * step),
            )
        )
    slow = min(1.0, 2.0 * budget)
    slow_phases = (_Phase(steps(long_), 0.0), _Phase(steps(3 * long_), slow))
    start = steps(long_) * step
    out.append(
        Scenario(
            "slow-burn",
            f"{format_duration(long_)} clean, then 2x the budget: nothing after "
            f"{format_duration(long_ // 2)}, only the ticket after {format_duration(3 * long_)}",
            slow_phases,
            (start + long_ // 2, start + steps(3 * long_) * step),
        )
    )
    out.append(
        Scenario(
            "silent",
            "no series at all: no alert and no SLI ratio",
            (),
            (calm,),
        )
    )
    return out


def slo_test_file(
    slo: SLO, ws: WindowSet, rule_file: str, options: RuleOptions | None = None
) -> dict[str, Any]:
    """The ``promtool test rules`` document for one SLO; ``rule_file`` is relative to the test file."""
    options = options or RuleOptions()
    step = sample_step(ws)
    recording = {**slo.labels, **options.extra_labels, **slo_labels(slo)}
    sel = slo_selector(slo)
    short = ws.page_quick.short_s
    tests = []
    for sc in scenarios(slo, ws):
        case: dict[str, Any] = {
            "name": f"{slo.id} {sc.name}: {sc.description}",
            "interval": format_duration(step),
            "input_series": _input_series(slo, sc.phases),
        }
        alert_tests: list[dict[str, Any]] = []
        expr_tests: list[dict[str, Any]] = []
        for t in sc.evals:
            firing, ratios = _expected(slo, ws, sc.phases, step, t)
            if slo.alerting.enabled:
                alert_tests.append(_alert_test(slo, options, t, firing))
            if sc.name == "silent":
                for metric in (sli_error_metric(short), "slo:current_burn_rate:ratio"):
                    expr_tests.append(
                        {"expr": f"{metric}{sel}", "eval_time": format_duration(t), "exp_samples": []}
                    )
            elif sc.name == "fast-burn":
                ratio = ratios[short]
                assert ratio is not None
                window_labels = {**recording, WINDOW_LABEL: format_duration(short)}
                expr_tests.append(_close_to(f"{sli_error_metric(short)}{sel}", ratio, t, window_labels))
                # the burn rate keeps the short window's sloth_window label (group_left), as Sloth's does
                expr_tests.append(
                    _close_to(f"slo:current_burn_rate:ratio{sel}", ratio / slo.error_budget, t, window_labels)
                )
                expr_tests.append(
                    {
                        "expr": f"slo:objective:ratio{sel}",
                        "eval_time": format_duration(t),
                        "exp_samples": [
                            {
                                "labels": "slo:objective:ratio" + _labels_text(recording),
                                "value": slo.objective_ratio,
                            }
                        ],
                    }
                )
            elif sc.name == "spike" and t == sc.evals[0]:
                # the short window alone is above the page threshold: only the long one holds it back
                threshold = ws.page_quick.factor(ws.period_s) * slo.error_budget
                window_labels = {**recording, WINDOW_LABEL: format_duration(short)}
                expr_tests.append(
                    {
                        "expr": f"{sli_error_metric(short)}{sel} > bool {format_float(threshold)}",
                        "eval_time": format_duration(t),
                        "exp_samples": [{"labels": _labels_text(window_labels), "value": 1}],
                    }
                )
        if alert_tests:
            case["alert_rule_test"] = alert_tests
        if expr_tests:
            case["promql_expr_test"] = expr_tests
        tests.append(case)
    # promtool evaluates groups in a random order unless told: recordings first, then the alerts that
    # read them, as a running Prometheus settles to (otherwise an alert may fire one step late)
    order = [g.name for g in slo_groups(slo, ws, options)]
    return {
        "rule_files": [rule_file],
        "evaluation_interval": format_duration(step),
        "group_eval_order": order,
        "tests": tests,
    }


def expectations(slo: SLO, ws: WindowSet) -> dict[str, list[tuple[str, list[Severity]]]]:
    """Per scenario, (eval time, firing severities): what the generated tests assert, for people and
    for the tests of this module."""
    step = sample_step(ws)
    return {
        sc.name: [(format_duration(t), _expected(slo, ws, sc.phases, step, t)[0]) for t in sc.evals]
        for sc in scenarios(slo, ws)
    }


# -- running promtool -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PromtoolRun:
    """One promtool invocation and what it said."""

    command: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def promtool_path() -> str:
    """The ``promtool`` binary, or a ConfigError saying how to install it."""
    found = shutil.which("promtool")
    if not found:
        raise ConfigError(
            "promtool is not installed: apt-get install prometheus (make setup runs "
            "scripts/install-monitoring.sh as root)"
        )
    return found


def run_promtool(out: Path, *, timeout_s: float = 600) -> list[PromtoolRun]:
    """``promtool check rules`` on ``out/prometheus/rules/*.yml``, then ``promtool test rules`` on
    ``out/prometheus/tests/*.yml`` (only if the check passed): the runs, in order."""
    promtool = promtool_path()
    rules = sorted((out / "prometheus" / "rules").glob("*.yml"))
    tests = sorted((out / "prometheus" / "tests").glob("*.yml"))
    if not rules:
        raise ConfigError(f"{out}: no prometheus/rules/*.yml (run `mangaassist monitor build` first)")
    runs = []
    for verb, files in (("check", rules), ("test", tests)):
        if not files:
            continue
        command = (promtool, verb, "rules", *(str(f) for f in files))
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        runs.append(PromtoolRun(command, done.returncode, (done.stdout + done.stderr).strip()))
        if done.returncode != 0:
            break
    return runs
