"""``mangaassist monitor``: the SLO compiler of CD-08 from the command line.

``monitor build`` validates the SLO specs (``monitoring/slos`` by default; Sloth ``prometheus/v1`` or
OpenSLO) and writes the Prometheus rules, their promtool tests, the Grafana dashboards and the
CloudWatch alarms in one go, or nothing if anything is wrong (exit 2, every problem as
``FILE:LINE: FIELD: message``). ``--env ENV`` applies ``monitoring/environments.yaml`` (objectives
and alert windows of that environment; ``dev`` uses the short ``dev-short`` windows). The default
output is ``monitoring/build`` in the state directory (``.mangaassist/monitoring/build``, or under
``MANGAASSIST_HOME``): generated, not committed, and replaced by each build, whatever its
environment (give ``--out`` to keep several). It is not what Prometheus evaluates: the local
platform keeps its own ``monitoring/rules`` there, which ``mangaassist deploy monitoring`` (CD-08)
fills from a build of its own.

``monitor test`` runs ``promtool check rules`` and ``promtool test rules`` on a build (exit 1 when
promtool reports a failure, 2 when promtool is missing or there is no build).

Registered on the main app by ``register(app)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mangaassist.cli.engine_cmds import JsonOpt, _print_json, console, err, handled, say
from mangaassist.delivery.monitoring import promtests
from mangaassist.delivery.monitoring.build import BuildReport, build
from mangaassist.platform.settings import find_root, state_home

monitor_app = typer.Typer(
    help="SLOs (CD-08): compile specs into Prometheus rules, promtool tests, dashboards, alarms.",
    no_args_is_help=True,
)

SPECS_DIR = Path("monitoring/slos")
OUT_DIR = Path("monitoring/build")

OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Build directory (default: the state directory's monitoring/build)."),
]


def _root() -> Path:
    return find_root(needs=(str(SPECS_DIR),))


def default_out() -> Path:
    """``STATE/monitoring/build`` (``STATE``: ``MANGAASSIST_HOME`` or ``ROOT/.mangaassist``)."""
    return state_home(_root()) / OUT_DIR


def _summary(report: BuildReport) -> None:
    env = f"environment {report.environment}" if report.environment else "no environment"
    say(
        f"built {len(report.slos)} SLOs ({env}, window set {report.window_set}, period {report.period}) "
        f"into {report.out}"
    )
    say(
        f"  prometheus: {report.recording_rules} recording rules and {report.alert_rules} alerts in "
        f"{len(report.rule_files)} files; {report.test_cases} promtool test cases in "
        f"{len(report.test_files)} files"
    )
    say(f"  grafana: {len(report.dashboards)} dashboards")
    say(
        f"  cloudwatch: {report.metric_alarms} alarms and {report.composite_alarms} composite alarms "
        f"({report.alarms_file})"
    )
    for label, missing in (
        ("no promtool tests", report.untested),
        ("no CloudWatch alarms", report.no_alarms),
    ):
        for slo_id, why in missing.items():
            err.print(f"[yellow]{label}:[/] {escape(slo_id)}: {escape(why)}", highlight=False, soft_wrap=True)


@monitor_app.command("build")
def monitor_build(
    slo: Annotated[
        list[Path] | None,
        typer.Option("--slo", help="An SLO spec file or directory (repeatable; default monitoring/slos)."),
    ] = None,
    out: OutOpt = None,
    env: Annotated[
        str | None,
        typer.Option("--env", help="Apply this environment of monitoring/environments.yaml (e.g. dev)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate the SLO specs, then write rules, promtool tests, dashboards and alarms (all or nothing)."""
    with handled(as_json):
        paths = list(slo) if slo else [_root() / SPECS_DIR]
        report = build(paths, out or default_out(), env)
    if as_json:
        _print_json(report.as_dict())
    else:
        _summary(report)


@monitor_app.command("test")
def monitor_test(out: OutOpt = None, as_json: JsonOpt = False) -> None:
    """Run promtool check rules and promtool test rules on a build."""
    with handled(as_json):
        where = out or default_out()
        runs = promtests.run_promtool(where)
    ok = all(run.ok for run in runs)
    if as_json:
        _print_json(
            {
                "out": str(where),
                "ok": ok,
                "runs": [
                    {"command": list(r.command), "returncode": r.returncode, "output": r.output} for r in runs
                ],
            }
        )
    else:
        for run in runs:
            verb = " ".join(Path(run.command[0]).name.split() + list(run.command[1:3]))
            files = len(run.command) - 3
            state = "[green]ok[/]" if run.ok else "[red]FAILED[/]"
            console.print(f"{escape(verb)} ({files} files): {state}", highlight=False)
            if not run.ok:
                say(run.output)
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
