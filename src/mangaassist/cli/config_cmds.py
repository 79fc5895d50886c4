"""``mangaassist config``: configuration and prompts (CD-06) from the command line.

``validate`` checks profiles (schema, then semantics; every error names file, line and field);
``deploy`` runs the CD-06 pipeline on the delivery engine (locked per environment and profile,
audited, resumable); ``rollback`` points a profile back at an earlier version (a pointer move,
locked and audited on the engine's log via the config server's history); ``history`` lists
versions with who, when and the diff; ``serve`` runs the local config server in the foreground.
Registered on the main app by ``register(app)``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from mangaassist.cli.engine_cmds import (
    DryRunOpt,
    JsonOpt,
    ProgressDisplay,
    _print_json,
    _state_text,
    console,
    dry_run,
    handled,
)
from mangaassist.core.configspec import PROFILES
from mangaassist.delivery.config_profiles import validate_all
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord
from mangaassist.delivery.pipelines import config as pipeline
from mangaassist.views.runs import run_pipeline
from mangaassist.views.tables import eval_table, rollout_table

config_app = typer.Typer(
    help="Configuration and prompts (CD-06): validate, deploy, rollback, history.", no_args_is_help=True
)
EnvOpt = Annotated[str, typer.Option("--env", help="Target environment (as in policy.yaml).")]
UrlOpt = Annotated[
    str | None, typer.Option("--url", help="Config server (default MANGAASSIST_CONFIG_URL or the local one).")
]
DirOpt = Annotated[
    Path | None, typer.Option("--dir", help="Folder of profiles (default: the project's config/).")
]


def _params(url: str | None, directory: Path | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if url:
        params["url"] = url
    if directory is not None:
        params["config_dir"] = str(directory.resolve())
    return params


def _seconds(raw: str) -> float:
    raw = raw.strip().lower()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if raw.endswith(suffix):
            return float(raw[: -len(suffix)]) * units[suffix]
    return float(raw)


@config_app.command("validate")
def config_validate(
    profile: Annotated[
        str | None, typer.Argument(help=f"One of {', '.join(PROFILES)}; all if omitted.")
    ] = None,
    directory: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check profiles against their JSON Schema, then semantically. Exit 2 if anything is wrong."""
    with handled(as_json):
        folder = directory or pipeline.config_dir({})
        names = (profile,) if profile else None
        report = validate_all(folder, names)
    problems = [p for found in report.values() for p in found]
    if as_json:
        _print_json(
            {
                "valid": not problems,
                "profiles": {name: [p.as_dict() for p in found] for name, found in report.items()},
            }
        )
    else:
        for name, found in report.items():
            mark = "[green]ok[/]" if not found else f"[red]{len(found)} problem(s)[/]"
            console.print(f"{name}: {mark}", highlight=False)
            for p in found:
                console.print(f"  {escape(str(p))}", highlight=False)
    if problems:
        raise typer.Exit(2)


def run_deploy(
    params: dict[str, Any], env: str, as_json: bool, actor: str | None = None, name: str = pipeline.NAME
) -> tuple[RunRecord, dict[str, StepRecord]]:
    """Start and drive one CD-06 run (a deploy, or ``CD-06-rollback``): (run, steps by name)."""
    return run_pipeline(
        ProgressDisplay(as_json),
        name,
        params,
        environment=env,
        target=pipeline.target(params["profile"]),
        requester=actor,
    )


@config_app.command("deploy")
def config_deploy(
    profile: Annotated[str, typer.Argument(help=f"One of {', '.join(PROFILES)}.")],
    strategy: Annotated[str, typer.Option(help="linear, exponential or all-at-once.")] = "linear",
    step: Annotated[float, typer.Option(help="Percent of session buckets per step.")] = 20.0,
    bake: Annotated[str, typer.Option(help="Bake time at 100% (e.g. 60s, 2m).")] = "60s",
    step_time: Annotated[str, typer.Option("--step-time", help="Minimum time per step.")] = "10s",
    env: EnvOpt = "dev",
    url: UrlOpt = None,
    directory: DirOpt = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the evaluation gate (recorded).")] = False,
    embedder: Annotated[str | None, typer.Option(help="Embedder for the evaluation run.")] = None,
    dry: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate, evaluate, version and roll out PROFILE by session bucket, judged at every step."""
    params = {
        "profile": profile,
        "strategy": strategy,
        "step": step,
        "bake_seconds": _seconds(bake),
        "step_seconds": _seconds(step_time),
        "step_max_seconds": max(60.0, 6 * _seconds(step_time)),
        **_params(url, directory),
    }
    if no_eval:
        params["evaluate"] = False
    if embedder:
        params["embedder"] = embedder
    if dry:
        return dry_run(pipeline.NAME, params, env, as_json)
    with handled(as_json):
        run, steps = run_deploy(params, env, as_json)
    rows = steps["evaluate"].detail.get("rows", []) if "evaluate" in steps else []
    rollout = pipeline.rollout_report(steps)
    if as_json:
        _print_json(
            {
                "run": run.id,
                "state": run.effective_state.value,
                "reason": run.reason,
                "version": steps["version"].output if "version" in steps else {},
                "validate": steps["validate"].detail if "validate" in steps else {},
                "evaluation": rows,
                "rollout": rollout,
                "promote": steps["promote"].output if "promote" in steps else {},
            }
        )
    else:
        problems = steps["validate"].detail.get("problems", []) if "validate" in steps else []
        for p in problems:
            console.print(f"  {escape(p['file'])}:{p['line']}: {escape(p['field'])}: {escape(p['message'])}")
        if rows:
            console.print(eval_table(rows))
        if rollout:
            console.print(rollout_table(rollout))
        console.print(f"run {run.id} {_state_text(run.effective_state)}", highlight=False)
        if run.reason:
            console.print(f"reason: {escape(run.reason)}", highlight=False)
    if run.effective_state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


@config_app.command("rollback")
def config_rollback(
    profile: Annotated[str, typer.Argument(help=f"One of {', '.join(PROFILES)}.")],
    to: Annotated[str | None, typer.Option("--to", help="A version (default: the one before).")] = None,
    env: EnvOpt = "dev",
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point PROFILE back at an earlier version: in force on every worker within one poll interval.

    A locked, audited engine run (CD-06-rollback): refused while a deploy of PROFILE runs.
    """
    params: dict[str, Any] = {"profile": profile, **_params(url, None)}
    if to:
        params["to"] = to
    with handled(as_json):
        run, steps = run_deploy(params, env, as_json, name=pipeline.ROLLBACK)
    moved = steps["move-pointer"].output if "move-pointer" in steps else {}
    if as_json:
        _print_json({"run": run.id, "state": run.effective_state.value, "reason": run.reason, **moved})
    elif run.effective_state is RunState.SUCCEEDED:
        console.print(f"{profile} -> {moved['live']} (was {moved['previous']})", highlight=False)
    else:
        console.print(f"run {run.id} {_state_text(run.effective_state)}", highlight=False)
        if run.reason:
            console.print(f"reason: {escape(run.reason)}", highlight=False)
    if run.effective_state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


def _diff(old: Any, new: Any) -> list[str]:
    a = yaml.safe_dump(old, sort_keys=True).splitlines() if old is not None else []
    b = yaml.safe_dump(new, sort_keys=True).splitlines()
    return [line for line in difflib.unified_diff(a, b, lineterm="", n=1)][2:]


@config_app.command("history")
def config_history(
    profile: Annotated[str, typer.Argument(help=f"One of {', '.join(PROFILES)}.")],
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Versions (who, when, diff against the one before) and every rollout change."""
    with handled(as_json):
        store = pipeline.open_store(_params(url, None))
        versions = store.versions(profile)
        events = store.history(profile)
        live = store.rollout(profile)
    entries = []
    previous = None
    for v in versions:
        entries.append({**v.as_dict(), "diff": _diff(previous, v.content)})
        previous = v.content
    if as_json:
        for e in entries:
            e.pop("content")
        _print_json({"profile": profile, "rollout": live.as_dict(), "versions": entries, "events": events})
        return
    console.print(
        f"[bold]{profile}[/]: stable {live.stable}, candidate {live.candidate} at {live.percentage:g}%",
        highlight=False,
    )
    for e in entries:
        console.print(
            f"\n[bold]{e['version']}[/] by {escape(e['author'])} at {e['created_at']}", highlight=False
        )
        for line in e["diff"]:
            color = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
            console.print(f"  [{color}]{escape(line)}[/]", highlight=False)
    table = Table(title="changes")
    for column in ("at", "who", "action", "version", "percent", "reason"):
        table.add_column(column)
    for ev in events:
        pct = "" if ev["percentage"] is None else f"{ev['percentage']:g}%"
        table.add_row(
            ev["at"][:19], ev["actor"], ev["action"], ev["version"] or "", pct, escape(ev["reason"] or "")
        )
    console.print(table)


@config_app.command("serve")
def config_serve(
    port: Annotated[int, typer.Option(help="Loopback port; 0 picks a free one.")] = 0,
) -> None:
    """Run the local config server in the foreground (state under MANGAASSIST_HOME)."""
    from mangaassist.platform.factory import platform_for

    home = pipeline.state_home({})
    home.mkdir(parents=True, exist_ok=True)
    console.print(f"config server state in {home}; URL in {home / 'config-server.json'}")
    platform_for(home=home.resolve()).serve_config_server(port)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
