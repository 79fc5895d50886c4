"""SLO specifications: Sloth ``prometheus/v1`` and OpenSLO ``SLO`` documents, parsed into one typed model.

Why one model: the rules (``rules.py``), the promtool tests (``promtests.py``), the CloudWatch alarms
(``cloudwatch.py``) and the dashboards (``dashboards.py``) all start from the same ``SLO`` objects, so
an SLO means the same thing in Prometheus, in CloudWatch and on a dashboard.

Accepted documents (several per file, ``---``-separated):

- Sloth ``version: "prometheus/v1"``: ``service``, ``labels``, ``slos: [{name, objective, description,
  labels, sli: {events: {error_query, total_query}} | {raw: {error_ratio_query}}, alerting: {name,
  labels, annotations, page_alert: {disable, labels, annotations}, ticket_alert: {...}}}]``.
- OpenSLO ``apiVersion: openslo/v1alpha`` ``kind: SLO`` (what Sloth reads: ``objectives[].ratioMetrics``
  with ``good`` and ``total`` Prometheus queries, ``timeWindows: [{count, unit}]``).
- OpenSLO ``apiVersion: openslo/v1`` ``kind: SLO`` with an inline ``indicator`` or an ``indicatorRef`` to
  a ``kind: SLI`` document of the same files, whose ``ratioMetric`` has ``good`` or ``bad``, and
  ``total``, each a ``metricSource`` of ``type: Prometheus`` with ``spec.query``;
  ``timeWindow: [{duration, isRolling: true}]``; ``objectives[].target`` (ratio) or ``targetPercent``.

Like Sloth, each OpenSLO objective becomes one SLO named ``NAME-INDEX``, without alerts (OpenSLO alert
policies do not map onto multiwindow burn-rate alerts), and good/total becomes the error ratio
``1 - good/total``.

Strict on purpose, where Sloth is lenient: an unknown field is an error (Sloth ignores
``pageAlert`` in a ``prometheus/v1`` file, and with it the page alert's labels: a typo that silently
changes who gets paged), so is a duplicate key, a field Sloth has but we do not implement (plugins),
an objective outside (0, 100], a query without ``{{.window}}`` (its rule would not depend on the
window, so every burn-rate window would compute the same thing), and two SLOs with one id
(``service-name``) anywhere in the files given together (their rules would overwrite each other's
series). Every problem of every file is collected and raised together as one ``SpecError`` (a
``ConfigError``) whose lines read ``FILE:LINE: FIELD: what is wrong``; line numbers come from the
YAML nodes (``yaml.compose``), so nothing is guessed.

Objectives and alert windows may differ per environment: ``load_environments`` reads
``monitoring/environments.yaml`` (its format is documented there and on ``load_environments``) and
``apply_environment`` returns the SLOs with that environment's objectives.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mangaassist.core import safeyaml
from mangaassist.core.errors import ConfigError

PROMETHEUS_V1 = "prometheus/v1"
OPENSLO_V1ALPHA = "openslo/v1alpha"
OPENSLO_V1 = "openslo/v1"

WINDOW_VAR = re.compile(r"\{\{\s*\.window\s*\}\}")
"""The one template variable a query may use; the rules substitute each window (``5m``, ``1h``...)."""
_TEMPLATE_ACTION = re.compile(r"\{\{.*?\}\}", re.S)
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
"""Service and SLO names: they become label values, rule group names and file names."""
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABEL_PREFIX = "sloth_"
"""The generated rules own every ``sloth_*`` label (``sloth_id``, ``sloth_window``...)."""

DAY = 86400


# -- errors ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (file, 1-based line, field path) and what."""

    file: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else str(self.file)
        return f"{where}: {self.field}: {self.message}"


class SpecError(ConfigError):
    """Every problem found in a set of SLO specs (or an environments file), one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (str(p.file), p.line, p.field)))
        super().__init__("\n".join(str(p) for p in self.problems))


class _Invalid(Exception):
    """Internal: the first problem of one document; the loader collects them per document."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


# -- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where something was declared (1-based line)."""

    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class EventsSLI:
    """Sloth's ``events``: error ratio = ``error_query / total_query`` (each a rate over ``{{.window}}``)."""

    error_query: str
    total_query: str


@dataclass(frozen=True)
class RawSLI:
    """Sloth's ``raw``: one query that already is the error ratio."""

    error_ratio_query: str


@dataclass(frozen=True)
class GoodTotalSLI:
    """OpenSLO's ``ratioMetric`` with ``good``: error ratio = ``1 - good/total``."""

    good_query: str
    total_query: str


SLI = EventsSLI | RawSLI | GoodTotalSLI


@dataclass(frozen=True)
class AlertSpec:
    """The page or the ticket alert of an SLO: on or off, and its own labels and annotations."""

    enabled: bool = True
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Alerting:
    """The alert rule's name, the labels and annotations both alerts share, and the two alerts."""

    name: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    page: AlertSpec = dataclasses.field(default_factory=AlertSpec)
    ticket: AlertSpec = dataclasses.field(default_factory=AlertSpec)

    @property
    def enabled(self) -> bool:
        return self.page.enabled or self.ticket.enabled


NO_ALERTS = Alerting(page=AlertSpec(enabled=False), ticket=AlertSpec(enabled=False))


@dataclass(frozen=True)
class SLO:
    """One service level objective, whatever format declared it.

    ``objective`` is a percentage in (0, 100]; ``labels`` are the service's labels overridden by the
    SLO's own; ``spec`` is the format (``prometheus/v1``, ``openslo/v1alpha``, ``openslo/v1``)."""

    service: str
    name: str
    objective: float
    description: str
    labels: Mapping[str, str]
    sli: SLI
    alerting: Alerting
    spec: str
    location: Location

    @property
    def id(self) -> str:
        """``service-name``: unique across every spec built together (Sloth's ``sloth_id``)."""
        return f"{self.service}-{self.name}"

    @property
    def key(self) -> str:
        """``service/name``: how environment overrides name an SLO."""
        return f"{self.service}/{self.name}"

    @property
    def objective_ratio(self) -> float:
        return self.objective / 100

    @property
    def error_budget(self) -> float:
        """The allowed error ratio, computed as Sloth does (``(100 - objective) / 100``: its float
        rounding is what the golden files hold)."""
        return (100 - self.objective) / 100


# -- durations ------------------------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNITS = (("y", 365 * DAY), ("w", 7 * DAY), ("d", DAY), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(text: str) -> int:
    """A Prometheus duration (``5m``, ``1h30m``, ``30d``, ``4w``) in whole seconds; ValueError if not
    one, or zero. Sub-second units are refused: no window here is shorter than a scrape."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration like 5m, 1h or 30d")
    seconds = sum(int(g) * mult for g, (_, mult) in zip(match.groups(), _UNITS, strict=True) if g)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: int) -> str:
    """Seconds as Prometheus prints a duration: the largest units first, years and weeks only when
    exact (``30d`` stays ``30d``, 28 days is ``4w``, 72 hours is ``3d``). Rule names and the
    ``sloth_window`` label are built from it, so it must match Prometheus and Sloth exactly."""
    if seconds <= 0:
        return "0s"
    out, rest = "", seconds
    for unit, mult in _UNITS:
        if unit in ("y", "w") and rest % mult:
            continue
        if rest >= mult:
            out += f"{rest // mult}{unit}"
            rest %= mult
    return out


def hours(seconds: int) -> float:
    """A duration in hours as a float, rounded the way Go's ``Duration.Hours`` rounds (whole hours
    plus the remainder): the burn-rate factors in the golden files depend on it."""
    return seconds // 3600 + (seconds % 3600) / 3600


# -- window sets ----------------------------------------------------------------------------------

Severity = Literal["page", "ticket"]


@dataclass(frozen=True)
class BurnWindow:
    """One multiwindow burn-rate condition: it fires when both the short and the long window burn
    the error budget fast enough to spend ``budget_percent`` of it within the long window."""

    budget_percent: float
    short_s: int
    long_s: int

    def factor(self, period_s: int) -> float:
        """The burn rate (multiple of the error budget) both windows must exceed."""
        return (hours(period_s) * self.budget_percent / 100) / hours(self.long_s)


@dataclass(frozen=True)
class WindowSet:
    """The SLO period and its four alert conditions (Sloth's ``AlertWindows``)."""

    name: str
    period_s: int
    page_quick: BurnWindow
    page_slow: BurnWindow
    ticket_quick: BurnWindow
    ticket_slow: BurnWindow

    def conditions(self) -> tuple[tuple[Severity, str, BurnWindow], ...]:
        """(severity, ``quick``|``slow``, condition) in the order the alert expressions use."""
        return (
            ("page", "quick", self.page_quick),
            ("page", "slow", self.page_slow),
            ("ticket", "quick", self.ticket_quick),
            ("ticket", "slow", self.ticket_slow),
        )

    def windows(self) -> tuple[int, ...]:
        """Every short and long window, shortest first: one SLI recording rule each."""
        return tuple(sorted({s for _, _, c in self.conditions() for s in (c.short_s, c.long_s)}))

    @property
    def period(self) -> str:
        return format_duration(self.period_s)


def _google(name: str, period_s: int) -> WindowSet:
    # The Google SRE workbook's recommended parameters (chapter "Alerting on SLOs"): page when 2% of
    # the budget burns in 1h (checked also over 5m) or 5% in 6h (30m); ticket when 10% burns in 1d
    # (2h) or in 3d (6h).
    return WindowSet(
        name,
        period_s,
        page_quick=BurnWindow(2, 5 * 60, 3600),
        page_slow=BurnWindow(5, 30 * 60, 6 * 3600),
        ticket_quick=BurnWindow(10, 2 * 3600, DAY),
        ticket_slow=BurnWindow(10, 6 * 3600, 3 * DAY),
    )


GOOGLE_30D = _google("google-30d", 30 * DAY)
GOOGLE_28D = _google("google-28d", 28 * DAY)
BUILTIN_WINDOW_SETS: Mapping[str, WindowSet] = {ws.name: ws for ws in (GOOGLE_30D, GOOGLE_28D)}
DEFAULT_WINDOW_SET = GOOGLE_30D


# -- YAML nodes with their place ------------------------------------------------------------------

_CONSTRUCTOR = SafeConstructor()


_CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")
)


def _construct(node: Node) -> Any:
    """A scalar node's value; None for a tag the safe loader refuses (``!python/...``, custom tags),
    which the callers then report as "not a string/number" at the node's line."""
    try:
        return _CONSTRUCTOR.construct_object(node)
    except yaml.YAMLError:
        return None


@dataclass(frozen=True)
class _At:
    """A YAML node with its file and field path, so every error can say where it is."""

    file: Path
    node: Node
    path: str

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    @property
    def location(self) -> Location:
        return Location(self.file, self.line)

    def fail(self, message: str) -> NoReturn:
        raise _Invalid(Problem(self.file, self.line, self.path or "(document)", message))

    def child(self, node: Node, key: str | int) -> _At:
        if isinstance(key, int):
            return _At(self.file, node, f"{self.path}[{key}]")
        return _At(self.file, node, f"{self.path}.{key}" if self.path else key)


def _mapping(
    at: _At,
    allowed: Iterable[str],
    *,
    required: Iterable[str] = (),
    unsupported: Mapping[str, str] | None = None,
) -> dict[str, _At]:
    """The fields of a mapping node, refusing duplicates, unknown fields and known-but-unsupported
    ones (with the reason), and naming missing required ones."""
    if not isinstance(at.node, MappingNode):
        at.fail(f"must be a mapping, not {_kind(at.node)}")
    allowed = tuple(allowed)
    unsupported = unsupported or {}
    out: dict[str, _At] = {}
    for key_node, value_node in at.node.value:
        key = _construct(key_node) if isinstance(key_node, ScalarNode) else None
        key_at = at.child(key_node, str(key))
        if not isinstance(key, str):
            key_at.fail("field names must be strings")
        if key in out:
            key_at.fail(f"duplicate field (first at line {out[key].line})")
        if key in unsupported:
            key_at.fail(f"not supported: {unsupported[key]}")
        if key not in allowed:
            key_at.fail(f"unknown field (expected one of: {', '.join(allowed)})")
        out[key] = at.child(value_node, key)
    missing = [k for k in required if k not in out]
    if missing:
        at.fail(f"missing required field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    return out


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag not in _CORE_TAGS:
        return f"a value tagged {node.tag}"
    value = _construct(node)
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def _scalar(at: _At) -> Any:
    if not isinstance(at.node, ScalarNode):
        at.fail(f"must be a scalar, not {_kind(at.node)}")
    return _construct(at.node)


def _string(at: _At, *, empty: bool = False) -> str:
    value = _scalar(at)
    if not isinstance(value, str):
        at.fail(f"must be a string, not {_kind(at.node)}")
    if not empty and not value.strip():
        at.fail("must not be empty")
    return value


def _name(at: _At) -> str:
    value = _string(at)
    if not _NAME.match(value):
        at.fail(f"{value!r} is not a name (letters, digits, '-', '_', '.'; alphanumeric at both ends)")
    return value


def _number(at: _At) -> float:
    value = _scalar(at)
    if isinstance(value, bool) or not isinstance(value, int | float):
        at.fail(f"must be a number, not {_kind(at.node)}")
    if not math.isfinite(value):
        at.fail(f"{value} is not a finite number")
    return float(value)


def _bool(at: _At) -> bool:
    value = _scalar(at)
    if not isinstance(value, bool):
        at.fail(f"must be true or false, not {_kind(at.node)}")
    return value


def _sequence(at: _At, *, nonempty: bool = True) -> list[_At]:
    if not isinstance(at.node, SequenceNode):
        at.fail(f"must be a list, not {_kind(at.node)}")
    items = [at.child(node, i) for i, node in enumerate(at.node.value)]
    if nonempty and not items:
        at.fail("must not be empty")
    return items


def _labels(at: _At, *, what: str = "label") -> dict[str, str]:
    """A ``name: value`` map of Prometheus labels (or annotations): names valid, ``sloth_*`` reserved,
    values strings (a bare ``2`` is refused rather than silently turned into ``"2"``)."""
    fields = at.node.value if isinstance(at.node, MappingNode) else None
    if fields is None:
        if _scalar(at) is None:
            return {}
        at.fail(f"must be a mapping of {what} names to strings, not {_kind(at.node)}")
    out: dict[str, str] = {}
    for key_node, value_node in fields:
        key = _construct(key_node) if isinstance(key_node, ScalarNode) else None
        key_at = at.child(key_node, str(key))
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
            key_at.fail(f"{key!r} is not a valid {what} name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)")
        if what == "label" and key.startswith(RESERVED_LABEL_PREFIX):
            key_at.fail(f"{what} names starting with {RESERVED_LABEL_PREFIX!r} are reserved for the rules")
        if key in out:
            key_at.fail("duplicate field")
        value_at = at.child(value_node, key)
        out[key] = _string(value_at, empty=True)
    return out


# -- queries --------------------------------------------------------------------------------------


def _query(at: _At) -> str:
    """A PromQL query template: it must use ``{{.window}}`` and no other template action, and its
    brackets must balance (promtool checks the PromQL itself on the generated rules)."""
    query = _string(at)
    if not WINDOW_VAR.search(query):
        at.fail("the query does not use {{.window}}: every burn-rate window would compute the same ratio")
    others = [m.group(0) for m in _TEMPLATE_ACTION.finditer(query) if not WINDOW_VAR.fullmatch(m.group(0))]
    if others:
        at.fail(f"only {{{{.window}}}} may be templated, not {others[0]}")
    problem = _unbalanced(WINDOW_VAR.sub("5m", query))
    if problem:
        at.fail(problem)
    return query


def _unbalanced(query: str) -> str | None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in query:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote != "`":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return f"unbalanced {ch!r} in the query"
    if quote:
        return "unterminated string in the query"
    if stack:
        return f"unclosed {stack[-1]!r} in the query"
    return None


def render_query(query: str, window_s: int) -> str:
    """The query for one window (``{{.window}}`` -> ``5m``)."""
    return WINDOW_VAR.sub(format_duration(window_s), query)


# -- Sloth prometheus/v1 --------------------------------------------------------------------------

_PLUGINS = "Sloth plugins are Go code; declare the SLI with events or raw"


def _sloth_alert(at: _At | None) -> AlertSpec:
    if at is None:
        return AlertSpec()
    if isinstance(at.node, ScalarNode) and _scalar(at) is None:
        return AlertSpec()
    f = _mapping(at, ("disable", "labels", "annotations"))
    return AlertSpec(
        enabled=not (_bool(f["disable"]) if "disable" in f else False),
        labels=_labels(f["labels"]) if "labels" in f else {},
        annotations=_labels(f["annotations"], what="annotation") if "annotations" in f else {},
    )


def _sloth_alerting(at: _At | None, slo_at: _At) -> Alerting:
    if at is None:
        fields: dict[str, _At] = {}
    else:
        fields = _mapping(at, ("name", "labels", "annotations", "page_alert", "ticket_alert"))
    page = _sloth_alert(fields.get("page_alert"))
    ticket = _sloth_alert(fields.get("ticket_alert"))
    name = _string(fields["name"], empty=True) if "name" in fields else ""
    if (page.enabled or ticket.enabled) and not name.strip():
        where = fields.get("name") or at or slo_at
        where.fail("alerting.name is required while the page or the ticket alert is enabled")
    if name and not _LABEL_NAME.match(name):
        fields["name"].fail(f"{name!r} is not a valid alert name ([a-zA-Z_][a-zA-Z0-9_]*)")
    return Alerting(
        name=name.strip(),
        labels=_labels(fields["labels"]) if "labels" in fields else {},
        annotations=_labels(fields["annotations"], what="annotation") if "annotations" in fields else {},
        page=page,
        ticket=ticket,
    )


def _sloth_sli(at: _At) -> SLI:
    f = _mapping(at, ("events", "raw"), unsupported={"plugin": _PLUGINS})
    if len(f) != 1:
        at.fail("declare exactly one of events (error_query and total_query) or raw (error_ratio_query)")
    if "events" in f:
        e = _mapping(f["events"], ("error_query", "total_query"), required=("error_query", "total_query"))
        return EventsSLI(_query(e["error_query"]), _query(e["total_query"]))
    r = _mapping(f["raw"], ("error_ratio_query",), required=("error_ratio_query",))
    return RawSLI(_query(r["error_ratio_query"]))


def _objective(at: _At, value: float | None = None) -> float:
    objective = _number(at) if value is None else value
    if not 0 < objective <= 100:
        at.fail(f"{objective:g} is outside (0, 100]: an objective is a percentage of good events")
    return objective


def _sloth_doc(doc: _At, problems: list[Problem]) -> list[SLO]:
    top = _mapping(
        doc,
        ("version", "service", "labels", "slos"),
        required=("version", "service", "slos"),
        unsupported={"slo_plugins": _PLUGINS},
    )
    version = _string(top["version"])
    if version != PROMETHEUS_V1:
        top["version"].fail(f"unsupported version {version!r} (expected {PROMETHEUS_V1!r})")
    service = _name(top["service"])
    service_labels = _labels(top["labels"]) if "labels" in top else {}
    out: list[SLO] = []
    for item in _sequence(top["slos"]):
        try:
            f = _mapping(
                item,
                ("name", "objective", "description", "labels", "sli", "alerting"),
                required=("name", "objective", "sli"),
                unsupported={"plugins": _PLUGINS},
            )
            out.append(
                SLO(
                    service=service,
                    name=_name(f["name"]),
                    objective=_objective(f["objective"]),
                    description=_string(f["description"], empty=True) if "description" in f else "",
                    labels={**service_labels, **(_labels(f["labels"]) if "labels" in f else {})},
                    sli=_sloth_sli(f["sli"]),
                    alerting=_sloth_alerting(f.get("alerting"), item),
                    spec=PROMETHEUS_V1,
                    location=item.location,
                )
            )
        except _Invalid as exc:  # one bad SLO does not hide the problems of the next ones
            problems.append(exc.problem)
    return out


# -- OpenSLO --------------------------------------------------------------------------------------

_WINDOW_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": DAY, "week": 7 * DAY}
_CALENDAR = "calendar-aligned windows are not supported: only rolling windows"
_TIMESLICES = "only budgetingMethod: Occurrences is supported"
_THRESHOLD = "threshold metrics are not supported: use a ratio metric"


def _budgeting(at: _At | None) -> None:
    if at is not None and _string(at) != "Occurrences":
        at.fail(f"{_scalar(at)!r}: {_TIMESLICES}")


def _check_period(at: _At, seconds: int, period_s: int) -> None:
    if seconds != period_s:
        at.fail(
            f"the time window is {format_duration(seconds)} but the SLO period is "
            f"{format_duration(period_s)} (the period of the alert window set in use)"
        )


def _prometheus_source(at: _At, *, v1: bool) -> str:
    """The query of an OpenSLO metric: v1alpha ``{source, queryType, query}``, v1
    ``{metricSource: {type, metricSourceRef, spec: {query}}}``; only Prometheus sources."""
    if not v1:
        f = _mapping(at, ("source", "queryType", "query", "metadata"), required=("source", "query"))
        source = _string(f["source"])
        if source.lower() != "prometheus":
            f["source"].fail(f"source {source!r} is not supported: only prometheus")
        return _query(f["query"])
    f = _mapping(at, ("metricSource",), required=("metricSource",))
    ms = _mapping(f["metricSource"], ("metricSourceRef", "type", "spec"), required=("type", "spec"))
    kind = _string(ms["type"])
    if kind.lower() != "prometheus":
        ms["type"].fail(f"metric source type {kind!r} is not supported: only Prometheus")
    spec = _mapping(ms["spec"], ("query",), required=("query",))
    return _query(spec["query"])


def _good_or_bad(f: dict[str, _At], at: _At, *, v1: bool) -> SLI:
    if ("good" in f) == ("bad" in f):
        at.fail("declare exactly one of good or bad (with total)")
    if "total" not in f:
        at.fail("missing required field: total")
    if "good" in f:
        good = _prometheus_source(f["good"], v1=v1)
        return GoodTotalSLI(good, _prometheus_source(f["total"], v1=v1))
    bad = _prometheus_source(f["bad"], v1=v1)
    return EventsSLI(bad, _prometheus_source(f["total"], v1=v1))


def _openslo_v1alpha(doc: _At, period_s: int) -> list[SLO]:
    top = _mapping(
        doc, ("apiVersion", "kind", "metadata", "spec"), required=("apiVersion", "kind", "metadata", "spec")
    )
    meta = _mapping(top["metadata"], ("name", "displayName"), required=("name",))
    name = _name(meta["name"])
    spec = _mapping(
        top["spec"],
        ("service", "description", "budgetingMethod", "objectives", "timeWindows"),
        required=("service", "objectives"),
        unsupported={"indicator": _THRESHOLD},
    )
    service = _name(spec["service"])
    _budgeting(spec.get("budgetingMethod"))
    if "timeWindows" in spec:
        windows = _sequence(spec["timeWindows"])
        if len(windows) > 1:
            windows[1].fail("only one time window is supported")
        w = _mapping(
            windows[0],
            ("count", "unit", "isRolling"),
            required=("count", "unit"),
            unsupported={"calendar": _CALENDAR},
        )
        if "isRolling" in w and not _bool(w["isRolling"]):
            w["isRolling"].fail(_CALENDAR)
        count = _number(w["count"])
        unit = _string(w["unit"])
        if unit.lower() not in _WINDOW_UNITS or count != int(count) or count <= 0:
            windows[0].fail(f"{count:g} {unit} is not a time window (a whole count of Second..Week)")
        _check_period(w["count"], int(count) * _WINDOW_UNITS[unit.lower()], period_s)
    description = _string(spec["description"], empty=True) if "description" in spec else ""
    out = []
    for index, item in enumerate(_sequence(spec["objectives"])):
        f = _mapping(
            item,
            ("displayName", "target", "ratioMetrics"),
            required=("target", "ratioMetrics"),
            unsupported={
                "value": _THRESHOLD,
                "op": _THRESHOLD,
                "timeSliceTarget": _TIMESLICES,
                "timeSliceWindow": _TIMESLICES,
            },
        )
        ratio = _mapping(f["ratioMetrics"], ("good", "bad", "total", "incremental"))
        sli = _good_or_bad(ratio, f["ratioMetrics"], v1=False)
        objective = _objective(f["target"], _number(f["target"]) * 100)
        out.append(
            SLO(
                service=service,
                name=f"{name}-{index}",
                objective=objective,
                description=description,
                labels={},
                sli=sli,
                alerting=NO_ALERTS,
                spec=OPENSLO_V1ALPHA,
                location=item.location,
            )
        )
    return out


def _openslo_v1_labels(at: _At) -> dict[str, str]:
    """OpenSLO v1 labels may hold a list of values (``team: [a, b]``); a Prometheus label holds one
    string, so a list becomes its items joined with commas."""
    if not isinstance(at.node, MappingNode):
        at.fail(f"must be a mapping, not {_kind(at.node)}")
    plain: list[tuple[Node, Node]] = []
    for key_node, value_node in at.node.value:
        if isinstance(value_node, SequenceNode):
            items = [_string(at.child(n, i), empty=True) for i, n in enumerate(value_node.value)]
            value_node = ScalarNode("tag:yaml.org,2002:str", ",".join(items), value_node.start_mark)
        plain.append((key_node, value_node))
    return _labels(_At(at.file, MappingNode(at.node.tag, plain, at.node.start_mark), at.path))


def _v1_indicator(at: _At) -> SLI:
    """An inline indicator ``{metadata, spec}`` or an SLI document's top: ``spec.ratioMetric``."""
    f = _mapping(at, ("metadata", "spec", "apiVersion", "kind"), required=("spec",))
    spec = _mapping(
        f["spec"],
        ("description", "ratioMetric"),
        required=("ratioMetric",),
        unsupported={"thresholdMetric": _THRESHOLD},
    )
    ratio = _mapping(
        spec["ratioMetric"],
        ("counter", "good", "bad", "total"),
        unsupported={
            "raw": "raw ratio metrics are not supported: use good or bad with total",
            "rawType": "see raw",
        },
    )
    return _good_or_bad(ratio, spec["ratioMetric"], v1=True)


def _openslo_v1(doc: _At, period_s: int, indicators: Mapping[str, _At]) -> list[SLO]:
    top = _mapping(
        doc, ("apiVersion", "kind", "metadata", "spec"), required=("apiVersion", "kind", "metadata", "spec")
    )
    meta = _mapping(top["metadata"], ("name", "displayName", "labels", "annotations"), required=("name",))
    name = _name(meta["name"])
    labels = _openslo_v1_labels(meta["labels"]) if "labels" in meta else {}
    spec = _mapping(
        top["spec"],
        (
            "description",
            "service",
            "indicator",
            "indicatorRef",
            "timeWindow",
            "budgetingMethod",
            "objectives",
        ),
        required=("service", "objectives"),
        unsupported={"alertPolicies": "alerts are the multiwindow burn-rate alerts of the window set"},
    )
    service = _name(spec["service"])
    _budgeting(spec.get("budgetingMethod"))
    if "timeWindow" in spec:
        windows = _sequence(spec["timeWindow"])
        if len(windows) > 1:
            windows[1].fail("only one time window is supported")
        w = _mapping(
            windows[0], ("duration", "isRolling"), required=("duration",), unsupported={"calendar": _CALENDAR}
        )
        if "isRolling" in w and not _bool(w["isRolling"]):
            w["isRolling"].fail(_CALENDAR)
        try:
            seconds = parse_duration(_string(w["duration"]))
        except ValueError as exc:
            w["duration"].fail(str(exc))
        _check_period(w["duration"], seconds, period_s)

    def resolve(holder: Mapping[str, _At], where: _At) -> SLI | None:
        if "indicator" in holder and "indicatorRef" in holder:
            where.fail("declare indicator or indicatorRef, not both")
        if "indicator" in holder:
            return _v1_indicator(holder["indicator"])
        if "indicatorRef" in holder:
            ref = _string(holder["indicatorRef"])
            if ref not in indicators:
                holder["indicatorRef"].fail(f"no kind: SLI document named {ref!r} in the files given")
            return _v1_indicator(indicators[ref])
        return None

    default_sli = resolve(spec, top["spec"])
    description = _string(spec["description"], empty=True) if "description" in spec else ""
    out = []
    for index, item in enumerate(_sequence(spec["objectives"])):
        f = _mapping(
            item,
            ("displayName", "target", "targetPercent", "indicator", "indicatorRef"),
            unsupported={
                "op": _THRESHOLD,
                "value": _THRESHOLD,
                "timeSliceTarget": _TIMESLICES,
                "timeSliceWindow": _TIMESLICES,
                "compositeWeight": "composite SLOs are not supported",
            },
        )
        if ("target" in f) == ("targetPercent" in f):
            item.fail("declare exactly one of target (a ratio) or targetPercent")
        if "target" in f:
            objective = _objective(f["target"], _number(f["target"]) * 100)
        else:
            objective = _objective(f["targetPercent"])
        sli = resolve(f, item) or default_sli
        if sli is None:
            item.fail("no indicator: give spec.indicator, spec.indicatorRef or one on the objective")
        out.append(
            SLO(
                service=service,
                name=f"{name}-{index}",
                objective=objective,
                description=description,
                labels=labels,
                sli=sli,
                alerting=NO_ALERTS,
                spec=OPENSLO_V1,
                location=item.location,
            )
        )
    return out


# -- loading --------------------------------------------------------------------------------------


def spec_files(paths: Iterable[Path]) -> list[Path]:
    """The files to read: each file as given, each directory's ``*.yaml`` and ``*.yml`` (sorted, not
    recursive, so a ``build/`` or ``fixtures/`` below it is not swept in)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            out.append(path)
    return out


def _documents(file: Path, problems: list[Problem]) -> Iterator[_At]:
    try:
        text = safeyaml.text_of(file.read_bytes(), str(file))
    except OSError as exc:
        problems.append(Problem(file, 0, "(file)", f"cannot read: {exc.strerror or exc}"))
        return
    except ConfigError as exc:  # too large, or not a text file
        problems.append(Problem(file, 0, "(file)", str(exc).removeprefix(f"{file}: ")))
        return
    try:
        nodes = list(yaml.compose_all(text, Loader=safeyaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.append(Problem(file, mark.line + 1 if mark else 0, "(yaml)", str(exc.problem or exc)))
        return
    except yaml.YAMLError as exc:
        problems.append(Problem(file, 0, "(yaml)", str(exc)))
        return
    for node in nodes:
        if node is None or (isinstance(node, ScalarNode) and _construct(node) is None):
            continue  # an empty document (a trailing ---)
        if isinstance(node, SequenceNode):
            # OpenSLO tools also take a YAML list of documents (the specification's examples do)
            yield from (_At(file, item, f"[{i}]") for i, item in enumerate(node.value))
        else:
            yield _At(file, node, "")


def _head(doc: _At) -> tuple[str | None, str | None]:
    """(``version`` or ``apiVersion``, ``kind``) of a document, without validating the rest."""
    if not isinstance(doc.node, MappingNode):
        doc.fail(f"a spec document must be a mapping, not {_kind(doc.node)}")
    keys: dict[str, Any] = {}
    for k, v in doc.node.value:
        if isinstance(k, ScalarNode) and isinstance(v, ScalarNode):
            keys[str(_construct(k))] = _construct(v)
    if "version" in keys:
        return "version", str(keys["version"])
    if "apiVersion" in keys:
        return str(keys["apiVersion"]), str(keys.get("kind"))
    doc.fail("neither a Sloth spec (version: prometheus/v1) nor an OpenSLO document (apiVersion: openslo/v1)")


def load_slos(paths: Iterable[Path], *, period_s: int = DEFAULT_WINDOW_SET.period_s) -> tuple[SLO, ...]:
    """Every SLO declared in ``paths`` (files, or directories of ``*.yaml``), in file and document
    order; ``period_s`` is the SLO period OpenSLO time windows must equal (the window set's).

    Raises ``SpecError`` with every problem of every file (nothing is returned half-valid)."""
    problems: list[Problem] = []
    files = spec_files(paths)
    if not files:
        raise SpecError(
            [Problem(Path(", ".join(str(p) for p in paths) or "."), 0, "(files)", "no SLO spec files")]
        )
    docs: list[tuple[_At, str, str | None]] = []
    indicators: dict[str, _At] = {}
    for file in files:
        for doc in _documents(file, problems):
            try:
                api, kind = _head(doc)
            except _Invalid as exc:
                problems.append(exc.problem)
                continue
            if api == OPENSLO_V1 and kind == "SLI":
                try:
                    top = _mapping(
                        doc, ("apiVersion", "kind", "metadata", "spec"), required=("metadata", "spec")
                    )
                    meta = _mapping(
                        top["metadata"], ("name", "displayName", "labels", "annotations"), required=("name",)
                    )
                    name = _string(meta["name"])
                    if name in indicators:
                        meta["name"].fail(
                            f"a second SLI named {name!r} (first at {indicators[name].location})"
                        )
                    indicators[name] = doc
                except _Invalid as exc:
                    problems.append(exc.problem)
                continue
            docs.append((doc, api or "", kind))
    slos: list[SLO] = []
    for doc, api, kind in docs:
        try:
            if api == "version":
                slos.extend(_sloth_doc(doc, problems))
            elif api in (OPENSLO_V1ALPHA, OPENSLO_V1) and kind == "SLO":
                parse = (
                    _openslo_v1alpha(doc, period_s)
                    if api == OPENSLO_V1ALPHA
                    else _openslo_v1(doc, period_s, indicators)
                )
                slos.extend(parse)
            elif api.startswith("sloth.slok.dev/"):
                doc.fail(f"{api} {kind} (Kubernetes) is not supported: use version: {PROMETHEUS_V1}")
            elif api in (OPENSLO_V1ALPHA, OPENSLO_V1):
                doc.fail(
                    f"kind {kind!r} is not supported here: only SLO (and SLI documents for indicatorRef)"
                )
            else:
                doc.fail(f"unsupported apiVersion {api!r} (expected {OPENSLO_V1} or {OPENSLO_V1ALPHA})")
        except _Invalid as exc:
            problems.append(exc.problem)
    seen: dict[str, SLO] = {}
    for slo in slos:
        first = seen.setdefault(slo.id, slo)
        if first is not slo:
            problems.append(
                Problem(
                    slo.location.file,
                    slo.location.line,
                    "name",
                    f"SLO {slo.id!r} (service {slo.service!r}, name {slo.name!r}) is already declared at "
                    f"{first.location}: the two would write the same series",
                )
            )
    if problems:
        raise SpecError(problems)
    return tuple(slos)


# -- alert window files and environments ------------------------------------------------------------


def _burn_window(at: _At) -> BurnWindow:
    f = _mapping(
        at,
        ("errorBudgetPercent", "shortWindow", "longWindow"),
        required=("errorBudgetPercent", "shortWindow", "longWindow"),
    )
    percent = _number(f["errorBudgetPercent"])
    if not 0 < percent <= 100:
        f["errorBudgetPercent"].fail(f"{percent:g} is outside (0, 100]")
    durations = []
    for key in ("shortWindow", "longWindow"):
        try:
            durations.append(parse_duration(_string(f[key])))
        except ValueError as exc:
            f[key].fail(str(exc))
    if durations[0] >= durations[1]:
        f["shortWindow"].fail("the short window must be shorter than the long window")
    return BurnWindow(percent, durations[0], durations[1])


def _window_spec(at: _At, name: str) -> WindowSet:
    """Sloth's ``AlertWindows`` spec: ``sloPeriod``, ``page: {quick, slow}``, ``ticket: {quick, slow}``."""
    f = _mapping(at, ("sloPeriod", "page", "ticket"), required=("sloPeriod", "page", "ticket"))
    try:
        period_s = parse_duration(_string(f["sloPeriod"]))
    except ValueError as exc:
        f["sloPeriod"].fail(str(exc))
    page = _mapping(f["page"], ("quick", "slow"), required=("quick", "slow"))
    ticket = _mapping(f["ticket"], ("quick", "slow"), required=("quick", "slow"))
    ws = WindowSet(
        name,
        period_s,
        _burn_window(page["quick"]),
        _burn_window(page["slow"]),
        _burn_window(ticket["quick"]),
        _burn_window(ticket["slow"]),
    )
    if max(ws.windows()) > period_s:
        f["sloPeriod"].fail(
            f"the period {ws.period} is shorter than the window {format_duration(max(ws.windows()))}"
        )
    return ws


def _raise_first(problems: list[Problem], error: _Invalid | None = None) -> None:
    if error is not None:
        problems.append(error.problem)
    if problems:
        raise SpecError(problems)


def load_window_set(path: Path, name: str | None = None) -> WindowSet:
    """A Sloth ``AlertWindows`` file (``apiVersion: sloth.slok.dev/v1``, ``kind: AlertWindows``,
    ``spec: {sloPeriod, page, ticket}``), named ``name`` or after the file."""
    problems: list[Problem] = []
    docs = list(_documents(path, problems))
    _raise_first(problems)
    if len(docs) != 1:
        raise SpecError([Problem(path, 0, "(file)", "expected exactly one AlertWindows document")])
    try:
        top = _mapping(docs[0], ("apiVersion", "kind", "spec"), required=("apiVersion", "kind", "spec"))
        if _string(top["apiVersion"]) != "sloth.slok.dev/v1" or _string(top["kind"]) != "AlertWindows":
            top["kind"].fail("expected apiVersion: sloth.slok.dev/v1, kind: AlertWindows")
        return _window_spec(top["spec"], name or path.stem)
    except _Invalid as exc:
        raise SpecError([exc.problem]) from None


@dataclass(frozen=True)
class Environment:
    """One environment's overrides: its alert window set and objectives by ``service/slo``."""

    name: str
    window_set: WindowSet
    objectives: Mapping[str, float]
    locations: Mapping[str, Location]
    """Where each objective override was declared (to name it when it matches no SLO)."""


@dataclass(frozen=True)
class Environments:
    """The environments file: window sets (the built-in ones and its own) and environments."""

    file: Path | None
    window_sets: Mapping[str, WindowSet]
    environments: Mapping[str, Environment]

    def get(self, name: str) -> Environment:
        if name not in self.environments:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(f"{self.file or 'environments'}: no environment {name!r} (known: {known})")
        return self.environments[name]


NO_ENVIRONMENTS = Environments(None, BUILTIN_WINDOW_SETS, {})


def load_environments(path: Path) -> Environments:
    """Read ``monitoring/environments.yaml``::

        window_sets:            # more window sets, each a Sloth AlertWindows spec
          dev-short: {sloPeriod: 1d, page: {quick: {...}, slow: {...}}, ticket: {...}}
        environments:
          dev:
            window_set: dev-short          # default: google-30d
            objectives:                    # service/slo -> objective percent
              chatbot/chat-latency: 97

    The built-in window sets are ``google-30d`` (the default) and ``google-28d``."""
    problems: list[Problem] = []
    docs = list(_documents(path, problems))
    _raise_first(problems)
    if len(docs) > 1:
        raise SpecError([Problem(path, docs[1].line, "(document)", "expected one document")])
    if not docs:
        return Environments(path, BUILTIN_WINDOW_SETS, {})
    try:
        top = _mapping(docs[0], ("window_sets", "environments"))
        sets = dict(BUILTIN_WINDOW_SETS)
        if "window_sets" in top:
            for key, at in _mapping(top["window_sets"], _mapping_keys(top["window_sets"])).items():
                if key in BUILTIN_WINDOW_SETS:
                    at.fail(f"{key!r} is a built-in window set")
                if not _NAME.match(key):
                    at.fail(f"{key!r} is not a name")
                sets[key] = _window_spec(at, key)
        envs: dict[str, Environment] = {}
        if "environments" in top:
            for env, at in _mapping(top["environments"], _mapping_keys(top["environments"])).items():
                f = _mapping(at, ("window_set", "objectives"))
                ws = DEFAULT_WINDOW_SET
                if "window_set" in f:
                    ws_name = _string(f["window_set"])
                    if ws_name not in sets:
                        f["window_set"].fail(f"no window set {ws_name!r} (known: {', '.join(sorted(sets))})")
                    ws = sets[ws_name]
                objectives: dict[str, float] = {}
                locations: dict[str, Location] = {}
                if "objectives" in f:
                    for key, obj_at in _mapping(f["objectives"], _mapping_keys(f["objectives"])).items():
                        if key.count("/") != 1:
                            obj_at.fail(f"{key!r}: name the SLO as service/slo")
                        objectives[key] = _objective(obj_at)
                        locations[key] = obj_at.location
                envs[env] = Environment(env, ws, objectives, locations)
        return Environments(path, sets, envs)
    except _Invalid as exc:
        raise SpecError([exc.problem]) from None


def _mapping_keys(at: _At) -> list[str]:
    """The keys of a mapping whose keys are free names (window sets, environments, SLO keys)."""
    if not isinstance(at.node, MappingNode):
        at.fail(f"must be a mapping, not {_kind(at.node)}")
    return [str(_construct(k)) for k, _ in at.node.value if isinstance(k, ScalarNode)]


def apply_environment(slos: Sequence[SLO], env: Environment) -> tuple[SLO, ...]:
    """The SLOs with the environment's objectives. An override naming no SLO is an error (a renamed
    SLO would otherwise silently lose its environment's objective)."""
    keys = {slo.key for slo in slos}
    unknown = [k for k in env.objectives if k not in keys]
    if unknown:
        raise SpecError(
            [
                Problem(
                    env.locations[k].file,
                    env.locations[k].line,
                    f"environments.{env.name}.objectives.{k}",
                    f"no SLO {k!r} in the specs (known: {', '.join(sorted(keys))})",
                )
                for k in unknown
            ]
        )
    return tuple(
        dataclasses.replace(slo, objective=env.objectives[slo.key]) if slo.key in env.objectives else slo
        for slo in slos
    )


# -- the shape of an SLI (for test series, CloudWatch metrics and dashboards) ----------------------

MatchOp = Literal["=", "!=", "=~", "!~"]


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a vector selector."""

    label: str
    op: MatchOp
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a series with ``labels`` passes (a missing label is the empty string, and regexes are
        anchored, as in Prometheus)."""
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def render(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op}"{escaped}"'


@dataclass(frozen=True)
class Selector:
    """A metric name and its label matchers."""

    metric: str
    matchers: tuple[Matcher, ...]

    def render(self) -> str:
        inner = ",".join(m.render() for m in self.matchers)
        return f"{self.metric}{{{inner}}}" if inner else self.metric

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class CounterRatio:
    """The SLI counts a subset of one counter's events (``subset``: the total's matchers plus
    ``extra``) over all of them (``total``); the subset is the errors, or the good events."""

    total: Selector
    subset: Selector
    subset_is_error: bool

    @property
    def extra(self) -> tuple[Matcher, ...]:
        return tuple(m for m in self.subset.matchers if m not in self.total.matchers)


@dataclass(frozen=True)
class HistogramThreshold:
    """The SLI is the share of a histogram's observations above one bucket bound ``le`` (e.g. answers
    slower than 2.5 s): errors = ``_count - _bucket{le}``, total = ``_count``."""

    count: Selector
    bucket: Selector
    le: str

    @property
    def base(self) -> str:
        return self.count.metric.removesuffix("_count")


SLIShape = CounterRatio | HistogramThreshold


class ShapeError(ValueError):
    """The SLI's queries are not one of the shapes test series and CloudWatch metrics can be derived
    from; the message says why."""


def _sel(n: str) -> str:
    """A range vector selector ``M{matchers}[{{.window}}]`` with named groups ``<n>m`` and ``<n>l``."""
    metric = rf"(?P<{n}m>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    matchers = rf'(?:\{{(?P<{n}l>(?:[^{{}}"]|"(?:[^"\\]|\\.)*")*)\}})?'
    return metric + matchers + r"\[\{\{\.window\}\}\]"


def _sum_rate(n: str) -> str:
    return r"sum\(rate\(" + _sel(n) + r"\)\)"


_COUNTER = re.compile("^" + _sum_rate("a") + "$")
_HISTOGRAM = re.compile(r"^\(?" + _sum_rate("a") + "-" + _sum_rate("b") + r"\)?$")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)(=~|!~|!=|=)"((?:[^"\\]|\\.)*)"(?:,|$)')


def _compact(query: str) -> str:
    """The query without whitespace outside string literals (so layout does not change its shape)."""
    out, quote, escaped = [], False, False
    for ch in query:
        if quote:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
            out.append(ch)
        elif not ch.isspace():
            out.append(ch)
    return WINDOW_VAR.sub("{{.window}}", "".join(out))


def _selector(metric: str, body: str | None) -> Selector:
    matchers: list[Matcher] = []
    pos = 0
    body = body or ""
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise ShapeError(f"cannot read the label matchers {body!r}")
        value = re.sub(r"\\(.)", r"\1", m.group(3))
        op: MatchOp = m.group(2)  # type: ignore[assignment]  # the regex allows only the four
        matchers.append(Matcher(m.group(1), op, value))
        pos = m.end()
    return Selector(metric, tuple(matchers))


def _counter(query: str) -> Selector:
    m = _COUNTER.match(_compact(query))
    if m is None:
        raise ShapeError(f"{query.strip()!r} is not sum(rate(METRIC{{...}}[{{{{.window}}}}]))")
    return _selector(m.group("am"), m.group("al"))


def sli_shape(sli: SLI) -> SLIShape:
    """Recognise the SLI's shape from its queries, or raise ``ShapeError``. Recognised:
    ``sum(rate(M{T}[w]))`` over ``sum(rate(M{T,E}[w]))`` for errors (or good events), and
    ``sum(rate(H_count{T}[w])) - sum(rate(H_bucket{T,le="X"}[w]))`` over ``sum(rate(H_count{T}[w]))``."""
    if isinstance(sli, RawSLI):
        raise ShapeError("a raw error-ratio query has no separate events to synthesise")
    subset_q, total_q = (
        (sli.error_query, sli.total_query)
        if isinstance(sli, EventsSLI)
        else (sli.good_query, sli.total_query)
    )
    total = _counter(total_q)
    hist = _HISTOGRAM.match(_compact(subset_q))
    if hist is not None and isinstance(sli, EventsSLI):
        count = _selector(hist.group("am"), hist.group("al"))
        bucket = _selector(hist.group("bm"), hist.group("bl"))
        base = count.metric.removesuffix("_count")
        le = [m for m in bucket.matchers if m.label == "le"]
        if (
            count != total
            or not count.metric.endswith("_count")
            or bucket.metric != base + "_bucket"
            or len(le) != 1
            or le[0].op != "="
            or set(bucket.matchers) - {le[0]} != set(count.matchers)
        ):
            raise ShapeError('a histogram SLI must be H_count{T} - H_bucket{T,le="X"} over H_count{T}')
        return HistogramThreshold(count, bucket, le[0].value)
    subset = _counter(subset_q)
    if subset.metric != total.metric:
        raise ShapeError(f"the events ({subset.metric}) and the total ({total.metric}) are different metrics")
    if not set(total.matchers) <= set(subset.matchers) or set(total.matchers) == set(subset.matchers):
        raise ShapeError("the events' selector must be the total's plus at least one matcher")
    return CounterRatio(total, subset, subset_is_error=isinstance(sli, EventsSLI))
