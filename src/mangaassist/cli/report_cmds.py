"""``mangaassist report``: reports read from the engine's run history.

``report delivery [--since 7d|DATE] [--env NAME] [--json]``: the delivery-performance report
(``delivery.report``; docs/engine.md, "Delivery performance"): per pipeline and environment, the
deployments, their lead time, the change failure rate, the time to restore and the steps that
stopped bad releases. ``--json`` prints ``DeliveryReport.as_dict()``; otherwise a Rich table in a
terminal, tab-separated lines elsewhere. Bad input (a ``--since`` that is neither a duration nor a
date, or not in the past; an unknown environment) exits 2 with one line.

Environment: ``MANGAASSIST_STATE_URL`` / ``MANGAASSIST_HOME`` (state store), ``MANGAASSIST_POLICY``
(which environments exist).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from mangaassist.cli.engine_cmds import JsonOpt, _print_json, _table, handled, say
from mangaassist.delivery.engine.clock import SystemClock
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.report import DeliveryReport, Measures, delivery_report, human_duration, parse_since

report_app = typer.Typer(help="Reports from the engine's run history: delivery.", no_args_is_help=True)

DEFAULT_SINCE = "30d"


@report_app.command("delivery")
def report_delivery(
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="Runs that finished from then on: a duration back from now (7d, 12h, 2w) "
            "or an ISO date or time in UTC (2025-01-31, 2025-01-31T09:00).",
        ),
    ] = DEFAULT_SINCE,
    env: Annotated[
        str | None,
        typer.Option("--env", help="Only this environment (default: every environment)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The DORA measures per pipeline and environment, and the steps that stopped bad releases.

    Deployments, lead time, change failure rate, time to restore (docs/engine.md, "Delivery performance").
    """
    with handled(as_json):
        now = SystemClock().now()
        start = parse_since(since, now)
        store = StateStore()
        try:
            report = delivery_report(store, now, start, env)
        finally:
            store.close()
    if as_json:
        _print_json(report.as_dict())
        return
    _show(report)


def _duration(seconds: float | None) -> str:
    return human_duration(seconds, none="-")


def _row(pipeline: str, environment: str, m: Measures) -> list[str | Text]:
    cfr = m.change_failure_rate
    restore = m.time_to_restore
    per_day = m.deployments.per_day
    return [
        pipeline,
        environment,
        str(m.deployments.count),
        f"{per_day:.3g}" if per_day is not None else "-",
        f"{_duration(m.lead_time.median_s)} / {_duration(m.lead_time.p90_s)}",
        f"{cfr.rate:.0%} ({cfr.failures}/{cfr.finished})" if cfr.rate is not None else "-",
        _duration(restore.median_s) + (f" ({restore.restored})" if restore.restored else ""),
        str(restore.open),
        ", ".join(f"{step} {n}" for step, n in m.stopped_at.items()),
    ]


def _show(report: DeliveryReport) -> None:
    where = report.environment or "every environment"
    if report.window_start is None:
        say(f"delivery performance, {where}: no runs yet")
        return
    start = report.window_start.strftime("%Y-%m-%d %H:%M")
    end = report.generated_at.strftime("%Y-%m-%d %H:%M")
    days = report.window_days or 0.0
    say(f"delivery performance, {where}: runs finished {start} .. {end} UTC ({days:.1f} days)")
    if not report.groups:
        say("no run finished in this window")
        return
    rows = [_row(g.pipeline, g.environment, g.measures) for g in report.groups]
    if len(report.groups) > 1:
        rows.append(_row("all", report.environment or "all", report.totals))
    _table(
        None,
        [
            "pipeline",
            "env",
            "deploys",
            "per day",
            "lead time p50 / p90",
            "change failures",
            "restore p50",
            "open",
            "stopped at",
        ],
        rows,
    )
    say(
        "lead time is measured from the run being requested to its success "
        f"(basis: {report.lead_time_basis}), not from the commit: no run records its commit's time"
    )


def register(app: typer.Typer) -> None:
    """Add ``report`` to the main ``mangaassist`` app."""
    app.add_typer(report_app, name="report")
