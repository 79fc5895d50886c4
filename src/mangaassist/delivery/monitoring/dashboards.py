"""Grafana dashboards for the SLOs and the services, built with ``grafana-foundation-sdk`` (CD-08).

Why generated: the panels query the series the rules record (``slo:*``, ``ALERTS``) and the metrics
the SLIs read, so building both from the same ``SLO`` objects keeps them from drifting apart (a
renamed SLO or metric changes its dashboard in the same build). The SDK's typed builders catch a
malformed panel at build time; the JSON is what Grafana's provisioning or API takes.

- ``mangaassist-slos`` (``slo-overview.json``): the SLO alerts firing now, then one row per SLO: the
  SLI over the period against its objective, the error budget remaining, the burn rate over the
  alert windows against the page and ticket factors, and the SLO's alerts.
- ``mangaassist-svc-SERVICE`` (``service-SERVICE.json``), one per service with SLOs: request rate,
  errors and error ratio by revision (the metrics of the service's availability SLI), latency
  quantiles by revision (its latency SLI's histogram, else the router's
  ``mangaassist_router_latency_seconds``), shadow agreement by revision
  (``mangaassist_router_shadow_intent_total{result="agreed|disagreed"}``, what the router already
  counts), the config and knowledge-base versions each revision serves (``mangaassist_info{revision,
  model, config, index}``, the chatbot workers' info gauge, which Prometheus scrapes with the
  target label ``mangaassist_service``, as the local platform labels worker targets), and the
  service's SLO budgets.

Every panel reads the ``datasource`` variable (a Prometheus data source chosen on the dashboard).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from mangaassist.delivery.monitoring.rules import format_float, sli_error_metric, slo_selector
from mangaassist.delivery.monitoring.slo import (
    SLO,
    CounterRatio,
    HistogramThreshold,
    ShapeError,
    WindowSet,
    format_duration,
    sli_shape,
)

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
OVERVIEW_UID = "mangaassist-slos"
ROUTER_PREFIX = "mangaassist_router_"
ROUTER_LATENCY = "mangaassist_router_latency_seconds_bucket"
SHADOW = "mangaassist_router_shadow_intent_total"
INFO = "mangaassist_info"
TARGET_SERVICE = "mangaassist_service"
"""The label the local platform's Prometheus puts on every worker target (``platform/local``)."""
RATE = "[$__rate_interval]"


def service_uid(service: str) -> str:
    return f"mangaassist-svc-{service}"


class _Ids:
    """Panel ids, unique within a dashboard (Grafana keys panel state by them)."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next


def _q(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant().format(PromQueryFormat.TABLE)
    return query


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def _stat(ids: _Ids, title: str, expr: str, unit: str, thresholds: dashboard.ThresholdsConfig) -> stat.Panel:
    return (
        stat.Panel()
        .id(ids())
        .title(title)
        .datasource(DATASOURCE)
        .with_target(_q(expr))
        .unit(unit)
        .decimals(3)
        .thresholds(thresholds)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .span(6)
        .height(6)
    )


def _series(
    ids: _Ids, title: str, queries: Sequence[prometheus.Dataquery], unit: str, span: int = 12
) -> timeseries.Panel:
    panel = timeseries.Panel().id(ids()).title(title).datasource(DATASOURCE).unit(unit).span(span).height(8)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _table(ids: _Ids, title: str, expr: str, span: int = 12) -> table.Panel:
    return (
        table.Panel()
        .id(ids())
        .title(title)
        .datasource(DATASOURCE)
        .with_target(_q(expr, instant=True))
        .span(span)
        .height(6)
        .no_value("none")
    )


def _encode(board: dashboard.Dashboard) -> dict[str, Any]:
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def _base(uid: str, title: str, tags: list[str]) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["mangaassist", *tags])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )


def _slo_row(board: dashboard.Dashboard, ids: _Ids, slo: SLO, ws: WindowSet) -> dashboard.Dashboard:
    sel = slo_selector(slo)
    objective = slo.objective_ratio
    period = ws.period
    board = board.with_row(
        dashboard.Row(f"{slo.service} / {slo.name}: {format_float(slo.objective)}% over {period}").id(ids())
    )
    board = board.with_panel(
        _stat(
            ids,
            f"SLI over {period}",
            f"1 - {sli_error_metric(ws.period_s)}{sel}",
            "percentunit",
            _thresholds((None, "red"), (objective, "green")),
        ).description(
            slo.description
            or f"Share of good events over {period}; objective {format_float(slo.objective)}%."
        )
    )
    board = board.with_panel(
        _stat(
            ids,
            "Error budget remaining",
            f"slo:period_error_budget_remaining:ratio{sel}",
            "percentunit",
            _thresholds((None, "red"), (0, "orange"), (0.25, "green")),
        )
    )
    windows = ws.windows()
    burn = [
        _q(
            f"{sli_error_metric(w)}{sel} / on(sloth_id, sloth_slo, sloth_service) group_left "
            f"slo:error_budget:ratio{sel}",
            format_duration(w),
            ref=chr(ord("A") + i),
        )
        for i, w in enumerate(windows)
    ]
    page = ws.page_quick.factor(ws.period_s)
    ticket = ws.ticket_slow.factor(ws.period_s)
    board = board.with_panel(
        _series(ids, "Burn rate by window (x error budget)", burn, "x", span=12)
        .thresholds(_thresholds((None, "green"), (ticket, "orange"), (page, "red")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
        .description(f"Ticket at {format_float(ticket)}x (slowest), page at {format_float(page)}x (fastest).")
    )
    return board.with_panel(_table(ids, "Alerts of this SLO", f'ALERTS{{sloth_id="{slo.id}"}}', span=24))


def slo_overview(slos: Sequence[SLO], ws: WindowSet) -> dict[str, Any]:
    """The SLO overview dashboard (every SLO), as Grafana JSON."""
    ids = _Ids()
    board = _base(OVERVIEW_UID, "MangaAssist SLOs", ["slo"]).description(
        f"SLOs over {ws.period} (window set {ws.name}): SLI, error budget, burn rates, alerts."
    )
    board = board.with_row(dashboard.Row("Firing SLO alerts").id(ids()))
    board = board.with_panel(_table(ids, "Firing now", 'ALERTS{alertstate="firing", sloth_id!=""}', span=24))
    for slo in slos:
        board = _slo_row(board, ids, slo, ws)
    return _encode(board)


def _by_revision(expr: str) -> str:
    return f"sum by (revision) (rate({expr}{RATE}))"


def service_dashboard(service: str, slos: Sequence[SLO], ws: WindowSet) -> dict[str, Any]:
    """One service's dashboard, from the metrics its SLIs read (see the module docstring)."""
    ids = _Ids()
    shapes = []
    for slo in slos:
        try:
            shapes.append(sli_shape(slo.sli))
        except ShapeError:
            continue
    board = _base(service_uid(service), f"MangaAssist service: {service}", ["service", service]).description(
        f"Traffic, errors, latency, shadow agreement and versions of {service}, by revision."
    )
    behind_router = any(
        (s.total.metric if isinstance(s, CounterRatio) else s.count.metric).startswith(ROUTER_PREFIX)
        for s in shapes
    )
    counters = [s for s in shapes if isinstance(s, CounterRatio) and s.subset_is_error]
    board = board.with_row(dashboard.Row("Traffic and errors").id(ids()))
    if counters:
        c = counters[0]
        total, errors = c.total.render(), c.subset.render()
        board = board.with_panel(
            _series(ids, "Requests/s by revision", [_q(_by_revision(total), "{{revision}}")], "reqps", 8)
        )
        board = board.with_panel(
            _series(ids, "Errors/s by revision", [_q(_by_revision(errors), "{{revision}}")], "reqps", 8)
        )
        board = board.with_panel(
            _series(
                ids,
                "Error ratio by revision",
                [_q(f"{_by_revision(errors)} / {_by_revision(total)}", "{{revision}}")],
                "percentunit",
                8,
            )
        )
    histograms = [s for s in shapes if isinstance(s, HistogramThreshold)]
    bucket = None
    if histograms:
        h = histograms[0]
        others = [m for m in h.bucket.matchers if m.label != "le"]
        bucket = h.bucket.metric + ("{" + ",".join(m.render() for m in others) + "}" if others else "")
    elif behind_router:
        bucket = f'{ROUTER_LATENCY}{{service="{service}"}}'
    if bucket:
        board = board.with_row(dashboard.Row("Latency").id(ids()))
        quantiles = [
            _q(
                f"histogram_quantile({q}, sum by (le, revision) (rate({bucket}{RATE})))",
                f"p{round(q * 100)} {{{{revision}}}}",
                ref=chr(ord("A") + i),
            )
            for i, q in enumerate((0.5, 0.95, 0.99))
        ]
        board = board.with_panel(_series(ids, "Latency quantiles by revision", quantiles, "s", 24))
    if behind_router:
        board = board.with_row(dashboard.Row("Shadow").id(ids()))
        agreed = f'{SHADOW}{{service="{service}",result="agreed"}}'
        compared = f'{SHADOW}{{service="{service}"}}'
        board = board.with_panel(
            _series(
                ids,
                "Shadow agreement by revision",
                [_q(f"{_by_revision(agreed)} / {_by_revision(compared)}", "{{revision}}")],
                "percentunit",
                24,
            ).description("Share of mirrored requests whose answer (intent) matched the primary's.")
        )
    board = board.with_row(dashboard.Row("Versions").id(ids()))
    board = board.with_panel(
        _table(
            ids,
            "Config and knowledge-base versions by revision",
            f'max by (revision, config, index, model) ({INFO}{{{TARGET_SERVICE}="{service}"}})',
            24,
        )
    )
    board = board.with_row(dashboard.Row("SLOs").id(ids()))
    for slo in slos:
        board = board.with_panel(
            _stat(
                ids,
                f"{slo.name}: budget remaining",
                f"slo:period_error_budget_remaining:ratio{slo_selector(slo)}",
                "percentunit",
                _thresholds((None, "red"), (0, "orange"), (0.25, "green")),
            ).links([dashboard.DashboardLink("SLO overview").url(f"/d/{OVERVIEW_UID}")])
        )
    return _encode(board)


def dashboards(slos: Sequence[SLO], ws: WindowSet) -> dict[str, dict[str, Any]]:
    """Every dashboard by file name: ``slo-overview.json`` and ``service-SERVICE.json``."""
    out = {"slo-overview.json": slo_overview(slos, ws)}
    services = dict.fromkeys(slo.service for slo in slos)
    for service in services:
        out[f"service-{service}.json"] = service_dashboard(
            service, [s for s in slos if s.service == service], ws
        )
    return out
