"""``mangaassist deploy frontend``, ``rollback frontend`` and ``previews list|delete``: CD-05.

``deploy frontend`` builds the widget (``frontend/``, or ``--source``), runs its typecheck, unit
tests and size budget, checks the candidate in headless Chromium, uploads the new files, points the
environment's channel (or ``--preview BRANCH``'s) at the release and verifies it through the edge.
``rollback frontend`` points the channel back to the previous release (or ``--to``). ``previews``
lists and deletes branch previews. Each is an engine run (locked per environment with CD-05's
lock, audited, resumable).
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
    _print_json,
    _table,
    dry_run,
    finish_run,
    handled,
    say,
)
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.engine.model import RunRecord, StepRecord
from mangaassist.delivery.pipelines import frontend as cd05
from mangaassist.platform.factory import opened
from mangaassist.views import inventory
from mangaassist.views.runs import run_pipeline

previews_app = typer.Typer(help="Branch previews of the widget (CD-05): list, delete.", no_args_is_help=True)

PreviewOpt = Annotated[
    str | None,
    typer.Option("--preview", help="Deploy to the preview channel of this branch (/previews/BRANCH/)."),
]

SHOWN = ("release_id", "url", "screenshot", "chat_api", "done", "deleted")


def _details(steps: dict[str, StepRecord]) -> None:
    upload = steps.get("upload")
    if upload is not None and upload.output:
        say(
            f"  uploaded: {', '.join(upload.output['uploaded']) or 'nothing'}; "
            f"skipped (already stored): {len(upload.output['skipped'])} file(s)"
        )
    budget = (steps["gates"].output.get("budget") if "gates" in steps else None) or None
    if budget:
        loader, total = budget["loader_gzip_bytes"], budget["total_gzip_bytes"]
        say(
            f"  sizes (gzip): loader.js {loader:,} B of {budget['loader_budget_bytes']:,}; "
            f"all JS+CSS {total:,} B of {budget['total_budget_bytes']:,}"
        )
    shown: set[tuple[str, str]] = set()
    for step in steps.values():
        for key in SHOWN:
            value = step.output.get(key) if key in step.output else step.detail.get(key)
            if value and (key, str(value)) not in shown:
                shown.add((key, str(value)))
                say(f"  {step.name} {key}: {value}")
        for problem in step.detail.get("problems") or []:
            say(f"  {step.name} problem: {problem}")


def _finish(run: RunRecord, steps: dict[str, StepRecord], as_json: bool) -> None:
    finish_run(run, steps, as_json, _details)


@deploy_app.command("frontend")
def deploy_frontend(
    env: EnvOpt = "dev",
    preview: PreviewOpt = None,
    source: Annotated[
        Path | None, typer.Option("--source", help="The widget's source directory (default frontend/).")
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            help="Chat API the pre-publish browser check sends /v1 to (default: the environment's "
            "chatbot router if it answers, else a stub; 'stub' forces the stub).",
        ),
    ] = None,
    dry: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build, gate, browser-check and publish the chat widget to the environment or a preview (CD-05)."""
    with handled(as_json):
        params: dict[str, Any] = {"environment": env}
        if preview is not None:
            params["preview"] = preview
        if source is not None:
            if not source.is_dir():
                raise ConfigError(f"--source {source}: no such directory")
            params["source"] = str(source.resolve())
        if api:
            params["api"] = api
    if dry:
        return dry_run(cd05.NAME, params, env, as_json)
    with handled(as_json):
        run, steps = run_pipeline(
            ProgressDisplay(as_json), cd05.NAME, params, environment=env, target=cd05.NAME, announce=True
        )
    _finish(run, steps, as_json)


@rollback_app.command("frontend")
def rollback_frontend(
    env: EnvOpt = "dev",
    to: Annotated[
        str | None, typer.Option("--to", help="The release to go back to (default: the previous one).")
    ] = None,
    preview: Annotated[
        str | None, typer.Option("--preview", help="Roll back this branch's preview instead.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Point the widget's channel back to the previous release and verify the edge serves it (CD-05)."""
    with handled(as_json):
        params: dict[str, Any] = {"environment": env}
        if to:
            params["to"] = to
        if preview is not None:
            params["preview"] = preview
        run, steps = run_pipeline(
            ProgressDisplay(as_json), cd05.ROLLBACK, params, environment=env, target=cd05.NAME, announce=True
        )
    _finish(run, steps, as_json)


@previews_app.command("list")
def previews_list(env: EnvOpt = "dev", as_json: JsonOpt = False) -> None:
    """The branches with a preview of the widget: live release, URL, last move."""
    with handled(as_json), opened(env) as platform:
        rows = inventory.preview_rows(platform.static_site())
    if as_json:
        _print_json(rows)
        return
    if not rows:
        say(f"no previews in {env}")
        return
    _table(
        f"previews in {env}",
        ["branch", "release", "url", "moved at", "moves"],
        [[str(r[k]) for k in ("branch", "release", "url", "moved_at", "moves")] for r in rows],
    )


@previews_app.command("delete")
def previews_delete(
    branch: Annotated[str, typer.Argument(help="The branch whose preview goes.")],
    env: EnvOpt = "dev",
    as_json: JsonOpt = False,
) -> None:
    """Remove a branch's preview channel (its releases stay until gc) (CD-05-preview-delete)."""
    with handled(as_json):
        params = {"environment": env, "preview": branch}
        run, steps = run_pipeline(
            ProgressDisplay(as_json), cd05.PREVIEW_DELETE, params, environment=env, target=cd05.NAME
        )
    _finish(run, steps, as_json)


def register(app: typer.Typer) -> None:
    """``deploy frontend`` and ``rollback frontend`` are on ``deploy`` and ``rollback``; ``previews``
    is a group of its own."""
    app.add_typer(previews_app, name="previews")
