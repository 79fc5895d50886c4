"""``mangaassist deploy monitoring`` and ``mangaassist rollback monitoring``: the CD-08 pipeline.

``deploy monitoring`` compiles the SLO specs for the environment, tests the rules with promtool,
installs them into the environment's Prometheus (reloaded and verified) and publishes the
dashboards; on aws it builds and checks, and says that the alarms ship with CD-02's monitoring
stack. ``rollback monitoring`` puts the previous rule set back. Both are engine runs (locked per
environment, audited). ``mangaassist monitor build|test`` compiles and tests without installing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mangaassist.cli.deploy_cmds import EnvOpt, deploy_app, rollback_app
from mangaassist.cli.engine_cmds import (
    DryRunOpt,
    JsonOpt,
    ProgressDisplay,
    dry_run,
    finish_run,
    handled,
    say,
)
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.engine.model import RunRecord, StepRecord
from mangaassist.delivery.pipelines import monitoring as cd08
from mangaassist.views.runs import run_pipeline


def _details(steps: dict[str, StepRecord]) -> None:
    for key in ("prometheus", "dashboards_dir", "where", "why"):
        for s in steps.values():
            if key in s.detail:
                say(f"  {key}: {s.detail[key]}")


def _finish(run: RunRecord, steps: dict[str, StepRecord], as_json: bool) -> None:
    finish_run(run, steps, as_json, _details)


@deploy_app.command("monitoring")
def deploy_monitoring(
    env: EnvOpt = "dev",
    slo: Annotated[
        Path | None, typer.Option("--slo", help="SLO spec file or directory (default monitoring/slos).")
    ] = None,
    dry: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compile the SLO specs, test the rules, install them in Prometheus, publish the dashboards (CD-08)."""
    with handled(as_json):
        params: dict[str, Any] = {"environment": env}
        if slo is not None:
            if not slo.exists():
                raise ConfigError(f"--slo {slo}: no such file or directory")
            params["slos"] = str(slo.resolve())
    if dry:
        return dry_run(cd08.NAME, params, env, as_json)
    with handled(as_json):
        run, steps = run_pipeline(ProgressDisplay(as_json), cd08.NAME, params, environment=env, announce=True)
    _finish(run, steps, as_json)


@rollback_app.command("monitoring")
def rollback_monitoring(env: EnvOpt = "dev", as_json: JsonOpt = False) -> None:
    """Put the previous monitoring rule set back and reload Prometheus (CD-08-rollback)."""
    with handled(as_json):
        run, steps = run_pipeline(
            ProgressDisplay(as_json), cd08.ROLLBACK, {"environment": env}, environment=env, announce=True
        )
    _finish(run, steps, as_json)


def register(app: typer.Typer) -> None:
    """The commands are on ``deploy`` and ``rollback`` (registered with them); nothing else to add."""
    del app
