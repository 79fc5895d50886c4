"""``mangaassist infra synth|plan|diff`` and ``mangaassist deploy infra``: CD-02.

``synth``, ``plan`` and ``diff`` need no AWS credentials: ``synth`` runs the CDK app offline
(``infra/app.py``, cdk-nag inside); ``plan`` shows what ``deploy infra`` would do: for a local
environment the resources the local provider would create or update (and drift), for an aws one the
classified changes of a fresh synth against the templates last applied there, the destructive ones
marked; ``diff`` is that comparison, optionally ``--against`` a directory of earlier templates.
``deploy infra`` runs the CD-02 pipeline on the delivery engine (locked, audited, resumable).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from mangaassist.cli.deploy_cmds import EnvOpt, deploy_app
from mangaassist.cli.engine_cmds import (
    DryRunOpt,
    JsonOpt,
    ProgressDisplay,
    _print_json,
    _state_text,
    console,
    dry_run,
    fail,
    handled,
    say,
)
from mangaassist.core.errors import ConfigError
from mangaassist.core.resources import ENVIRONMENTS
from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.infra import TemplateChange, classify
from mangaassist.delivery.pipelines import infra as cd02
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.platform.factory import settings_for
from mangaassist.views.runs import run_pipeline

infra_app = typer.Typer(
    help="Infrastructure as code (CD-02): synthesize, plan and diff without AWS credentials.",
    no_args_is_help=True,
)

AgainstOpt = Annotated[
    Path | None,
    typer.Option(
        "--against", help="Diff against the templates in this directory (an earlier synth).", file_okay=False
    ),
]


def _params(env: str, root: Path | None = None, against: Path | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"environment": env}
    if root is not None:
        params["root"] = str(root)
    if against is not None:
        if not against.is_dir():
            raise ConfigError(f"--against {against}: no such directory")
        params["against"] = str(against.resolve())
    return params


@infra_app.command("synth")
def synth(
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="Environment(s) to synthesize (default: dev, staging, prod)."),
    ] = None,
    outdir: Annotated[
        Path | None, typer.Option(help="Where the templates go (default: a temporary directory).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Synthesize the CDK app offline: one stage per environment, cdk-nag's checks inside."""
    with handled(as_json):
        unknown = [e for e in env or [] if e not in ENVIRONMENTS]
        if unknown:
            raise ConfigError(f"--env {', '.join(unknown)}: unknown (have: {', '.join(ENVIRONMENTS)})")
        out = outdir or Path(tempfile.mkdtemp(prefix="mangaassist-synth-"))
        summary = cd02.synthesize({}, list(env) if env else None, out)
    if as_json:
        _print_json(summary)
        return
    for stage, stacks in summary.get("stages", {}).items():
        say(f"{stage}: {len(stacks)} stacks")
        for stack, path in stacks.items():
            say(f"  {stack:<28} {path}")
    say(f"synthesized in {summary.get('seconds', 0):.1f} s into {summary.get('outdir', out)}")


def _aws_changes(env: str, against: Path | None) -> tuple[str, list[TemplateChange]]:
    params = _params(env, against=against)
    out = Path(tempfile.mkdtemp(prefix="mangaassist-synth-"))
    summary = cd02.synthesize(params, [env], out)
    new = cd02.load_templates(summary["stages"][env])
    if against is not None:
        return str(against), classify(cd02.templates_in(against, env), new)
    store = StateStore()
    try:
        with store.transaction() as conn:
            from datetime import UTC, datetime

            last = store.last_output(conn, datetime.now(UTC), cd02.NAME, env, "apply")
    finally:
        store.close()
    if last is None:
        return "nothing applied yet", classify({}, new)
    return f"run {last[0]}", classify(dict(last[1].get("templates", {})), new)


def _show_changes(env: str, source: str, changes: list[TemplateChange], as_json: bool) -> None:
    destructive = [c for c in changes if c.destructive]
    if as_json:
        _print_json(
            {
                "environment": env,
                "against": source,
                "changes": [c.as_dict() for c in changes],
                "destructive": len(destructive),
            }
        )
        return
    say(f"{env}: {len(changes)} change(s) against {source}")
    for c in changes:
        say(f"  {c.line()}")
    if destructive:
        say(
            f"{len(destructive)} destructive: deploy infra refuses them unless started with "
            f"--override-destructive --reason TEXT ({env}.destructive, audited)"
        )


@infra_app.command("plan")
def plan(env: EnvOpt = "dev", as_json: JsonOpt = False) -> None:
    """What `deploy infra` would change: local resources (and drift), or classified stack changes."""
    with handled(as_json):
        provider = settings_for(env).provider
        if provider == "local":
            scope = RunScope(env)
            try:
                changes = cd02.local_plan(scope, _params(env))
            finally:
                scope.close()
        else:
            source, template_changes = _aws_changes(env, None)
    if provider != "local":
        _show_changes(env, source, template_changes, as_json)
        return
    todo = [c for c in changes if c["action"] != "unchanged"]
    if as_json:
        _print_json({"environment": env, "provider": provider, "changes": changes, "to_change": len(todo)})
        return
    for c in changes:
        drift = f"  (drift: {c['drift']})" if c["drift"] else ""
        props = f" [{', '.join(c['changed'])}]" if c["changed"] else ""
        say(f"  {c['action']:<9} {c['kind']}/{c['name']}{props}{drift}")
    say(
        f"{env}: {len(todo)} to change, {len(changes) - len(todo)} unchanged"
        if todo
        else f"{env}: no changes"
    )


@infra_app.command("diff")
def diff(env: EnvOpt = "staging", against: AgainstOpt = None, as_json: JsonOpt = False) -> None:
    """Classified changes of a fresh synth against what was last applied (or --against DIR)."""
    with handled(as_json):
        if env not in ENVIRONMENTS:
            raise ConfigError(f"--env {env}: unknown (have: {', '.join(ENVIRONMENTS)})")
        source, changes = _aws_changes(env, against)
    _show_changes(env, source, changes, as_json)


@deploy_app.command("infra")
def deploy_infra(
    env: EnvOpt = "dev",
    against: AgainstOpt = None,
    override_destructive: Annotated[
        bool,
        typer.Option(
            "--override-destructive", help="Accept replacing or deleting stateful resources (needs --reason)."
        ),
    ] = False,
    reason: Annotated[str, typer.Option(help="Why the override (audited).")] = "",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    dry: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Provision the declared resources on the environment (CD-02): locally idempotent; on aws
    synth, gates, diff, destructive guard, approval by policy, change sets, drift detection."""
    if override_destructive and not reason.strip():
        raise fail("--override-destructive needs --reason TEXT (overrides are audited)", 2, as_json=as_json)
    with handled(as_json):
        params = _params(env, against=against)
        provider = settings_for(env).provider
        overrides = {f"{env}.destructive": reason} if override_destructive else {}
    if dry:
        return dry_run(cd02.NAME, params, env, as_json)
    if provider != "local" and not yes:
        if not sys.stdin.isatty():
            raise fail(
                "not a terminal: pass --yes to deploy infrastructure without confirmation", 2, as_json=as_json
            )
        typer.confirm(f"deploy the infrastructure of {env}?", abort=True)
    with handled(as_json):
        run, steps = run_pipeline(
            ProgressDisplay(as_json), cd02.NAME, params, environment=env, overrides=overrides, announce=True
        )
    doc = {
        "run": run.id,
        "state": run.effective_state.value,
        "reason": run.reason,
        "steps": {
            n: {"status": s.status.value, "detail": s.detail, "output": s.output} for n, s in steps.items()
        },
    }
    if as_json:
        _print_json(doc)
    else:
        if "apply" in steps and steps["apply"].detail.get("message"):
            say(str(steps["apply"].detail["message"]))
        if "diff" in steps:
            for line in steps["diff"].detail.get("diff", []):
                say(f"  {line}")
        console.print(f"run {run.id} {_state_text(run.effective_state)}", highlight=False)
        if run.reason:
            say(f"reason: {run.reason}")
    if run.effective_state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(infra_app, name="infra")
