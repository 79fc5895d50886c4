"""The delivery engine's commands: ``runs``, ``approve``, ``reject``, ``audit``, ``release``.

Registered on the main app by ``register(app)``. Data commands take ``--json`` and then print one
JSON document on stdout (progress, if any, goes to stderr as plain lines); when such a command fails,
that document is ``{"error": MESSAGE, "exit_code": N}``, still on stdout. In a terminal, long steps
show Rich spinners and bars and tables are Rich tables; elsewhere, one plain line per event and
tables as tab-separated lines with a header, never cut to the width of a terminal. Errors print one
line and exit 2 (bad input: unknown run, forbidden approver, malformed policy, unusable state
database) or 1 (a held lock, a policy block, a run or release that did not succeed, a broken audit
chain). Text that comes from data (run ids, reasons, policy paths, comments) is escaped before it
goes through Rich markup, so ``[...]`` in it is printed as is.

Environment: ``MANGAASSIST_STATE_URL`` / ``MANGAASSIST_HOME`` (state store), ``MANGAASSIST_POLICY``
(policy file), ``MANGAASSIST_ACTOR`` (who you are when ``--as`` is omitted; default: the OS user),
``MANGAASSIST_LEASE_SECONDS`` (default 30) and ``MANGAASSIST_POLL_SECONDS`` (default 1).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.delivery import planner
from mangaassist.delivery.engine import approvals, audit
from mangaassist.delivery.engine.errors import BadRequest, UnknownPipeline
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Pipeline
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import registry
from mangaassist.views import history, progress
from mangaassist.views.runs import engine_executor, preflight, resolve_actor, resolve_identity

console = Console()
err = Console(stderr=True)

runs_app = typer.Typer(help="Pipeline runs: list, show, start, resume, abort.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log: list it, or `audit verify` it.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
AsOpt = Annotated[
    str | None, typer.Option("--as", help="Who you are (default: MANGAASSIST_ACTOR or the OS user).")
]


def fail(message: str, code: int = 1, *, as_json: bool = False) -> typer.Exit:
    """Report an error: one line on stderr, or under ``--json`` one JSON object on stdout."""
    if as_json:
        _print_json({"error": message, "exit_code": code})
    else:
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def handled(as_json: bool = False) -> Iterator[None]:
    """Engine errors become one line on stderr (``--json``: one JSON object on stdout): exit 2 for
    bad input, 1 for everything else."""
    try:
        yield
    except (BadRequest, ConfigError) as exc:
        raise fail(str(exc), 2, as_json=as_json) from None
    except MangaAssistError as exc:
        raise fail(str(exc), 1, as_json=as_json) from None


def say(text: str, *, stream: Console | None = None) -> None:
    """Print plain text (no markup, no highlighting, no wrapping at the terminal's width)."""
    progress.say(stream or console, text)


def _one_line(cell: str) -> str:
    return " ".join(cell.replace("\t", " ").splitlines())


def _table(title: str | None, columns: list[str], rows: list[list[str | Text]]) -> None:
    """A Rich table in a terminal; elsewhere tab-separated lines under a header, never truncated."""
    if not console.is_terminal:
        lines = [columns, *([cell.plain if isinstance(cell, Text) else cell for cell in row] for row in rows)]
        # written as they are: Rich would expand the tabs (and wrap at 80 columns off a terminal)
        console.file.write("".join("\t".join(_one_line(c) for c in line) + "\n" for line in lines))
        console.file.flush()
        return
    table = Table(title=Text(title) if title else None, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in ("id", "state", "started"))
    for row in rows:
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
    console.print(table)


def _store() -> StateStore:
    return StateStore()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# -- progress ------------------------------------------------------------------------------------


class ProgressDisplay(progress.ProgressDisplay):
    """Rich spinners and bars in a terminal; plain lines elsewhere (stderr under ``--json``)."""

    def __init__(self, as_json: bool) -> None:
        super().__init__(err if as_json else console, rich=not as_json)


# -- runs ----------------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    env: Annotated[str | None, typer.Option("--env", help="Only runs of this environment.")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only runs of this pipeline.")] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="Only runs in this state (running, waiting, interrupted, succeeded, ...)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many of the newest runs.")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """The newest runs, newest first; a run whose process died shows as interrupted."""
    with handled(as_json):
        store = _store()
        now = engine_executor(store).clock.now()
        records = history.list_runs(store, now, limit=limit, environment=env, pipeline=pipeline, state=state)
    if as_json:
        _print_json(records)
        return
    if not records:
        say("no runs yet (start one with `mangaassist release` or `mangaassist runs start demo`)")
        return
    _table(
        f"runs ({store.display_url})",
        ["id", "pipeline", "env/target", "state", "steps", "requester", "started", "owner"],
        [
            [
                r["id"],
                r["pipeline"],
                f"{r['environment']}/{r['target']}",
                _state_cell(RunState(r["state"])),
                r["progress"],
                r["requester"],
                r["created_at"][:19].replace("T", " "),
                r["owner"] or "",
            ]
            for r in records
        ],
    )


def _state_text(state: RunState) -> str:
    colour = {
        RunState.SUCCEEDED: "green",
        RunState.FAILED: "red",
        RunState.INTERRUPTED: "magenta",
        RunState.WAITING: "yellow",
        RunState.ROLLED_BACK: "red",
        RunState.ABORTED: "red",
    }.get(state, "cyan")
    return f"[{colour}]{state.value}[/]"


def finish_run(
    run: RunRecord,
    steps: dict[str, StepRecord],
    as_json: bool,
    details: Callable[[dict[str, StepRecord]], None] | None = None,
) -> None:
    """How a deploy, rollback or migration command ends: the run and its steps as one JSON document,
    or a line per step with its numbers (then ``details``, the pipeline's own lines), the final state
    and the reason; exit 1 unless the run succeeded."""
    if as_json:
        _print_json(
            {
                "run": run.id,
                "pipeline": run.pipeline,
                "state": run.effective_state.value,
                "reason": run.reason,
                "steps": {
                    n: {"status": s.status.value, "reason": s.reason, "detail": s.detail, "output": s.output}
                    for n, s in steps.items()
                },
            }
        )
    else:
        width = max((len(n) for n in steps), default=0)
        for name, s in steps.items():
            numbers = " ".join(f"{k}={v:g}" for k, v in (s.detail.get("numbers") or {}).items())
            say(f"  {name:<{width}} {s.status.value:<9} {numbers}".rstrip())
        if details is not None:
            details(steps)
        console.print(f"run {run.id} {_state_text(run.effective_state)}", highlight=False)
        if run.reason:
            say(f"reason: {run.reason}")
    if run.effective_state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="In an aws environment: print the AWS calls the run would make, in order, and make none "
        "(reads are made when AWS credentials are found); nothing is recorded.",
    ),
]


def dry_run(pipeline: str, params: dict[str, Any], env: str, as_json: bool) -> None:
    """``--dry-run`` of a deploy command (``views.dry_run``): the plan as JSON, or a line per step
    and per call; exit 1 if a step failed."""
    from mangaassist.views.dry_run import dry_run_pipeline

    with handled(as_json):
        plan = dry_run_pipeline(pipeline, params, environment=env)
    if as_json:
        _print_json(plan)
    else:
        say(f"dry run of {pipeline} in {env}: nothing was changed; reads {plan['reads']}")
        if plan["approvals_required"]:
            say(f"assumed: the {plan['approvals_required']} approval(s) the policy asks for are given")
        calls: dict[str, list[dict[str, Any]]] = {}
        for call in plan["calls"]:
            calls.setdefault(str(call.get("step")), []).append(call)
        for step in plan["steps"]:
            say(f"  {step['name']:<14} {step['status']:<8} {step['note'] or step['reason'] or ''}".rstrip())
            for call in calls.get(step["name"], []):
                if call["read"]:
                    continue
                brief = json.dumps(call["params"], default=str)
                say(f"      {call['service']} {call['operation']} {brief[:160]}")
        say(f"{plan['changes']} call(s) that would change something; result: {plan['result']}")
        if plan["stopped_at"]:
            say(f"stopped at: {plan['stopped_at']}")
        if plan["reason"]:
            say(f"reason: {plan['reason']}")
    if plan["result"] == "failed":
        raise typer.Exit(1)


def _state_cell(state: RunState) -> Text:
    return Text.from_markup(_state_text(state))


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run id (see `runs list`).")],
    as_json: JsonOpt = False,
) -> None:
    """A run's timeline: steps, durations, verdicts with their numbers, who approved."""
    with handled(as_json):
        store = _store()
        now = engine_executor(store).clock.now()
        shown = history.show_run(store, run_id, now)
        with store.transaction() as conn:
            run = store.run(conn, run_id, now)
            steps = store.steps(conn, run_id)
            decisions = approvals.records(conn, run_id)
    if as_json:
        _print_json(shown)
        return
    console.print(
        f"[bold]{escape(run.id)}[/] {escape(run.pipeline)} -> "
        f"{escape(run.environment)}/{escape(run.target)}  "
        f"{_state_text(run.effective_state)}"
        f"  requested by {escape(run.requester)} at {run.created_at[:19].replace('T', ' ')}",
        highlight=False,
        soft_wrap=True,
    )
    if run.reason:
        say(f"reason: {run.reason}")
    for rule, why in run.overrides.items():
        console.print(f"[yellow]override[/] {escape(rule)}: {escape(why)}", highlight=False, soft_wrap=True)
    _table(
        None,
        ["#", "step", "status", "tries", "started", "duration", "detail"],
        [
            [
                str(s.index + 1),
                s.name,
                s.status.value,
                str(s.attempts),
                (s.started_at or "")[11:19],
                f"{s.duration_s:.1f}s" if s.duration_s is not None else "",
                _detail_text(s),
            ]
            for s in steps
        ],
    )
    for d in decisions:
        comment = f": {d.comment}" if d.comment else ""
        say(f"{d.decision.value} by {d.actor} at {d.at[:19].replace('T', ' ')}{comment}")


def _detail_text(step: StepRecord) -> str:
    parts = []
    detail = step.detail
    if "verdict" in detail:
        parts.append(str(detail["verdict"]))
    numbers = detail.get("numbers") or {}
    parts += [f"{k}={v}" for k, v in numbers.items()]
    if detail.get("approved_by"):
        parts.append("approved by " + ", ".join(detail["approved_by"]))
    if detail.get("overridden"):
        parts.append(f"overridden ({detail['overridden']}: {detail.get('reason', '')})")
    if step.reason:
        parts.append(step.reason)
    return " ".join(parts)


def _pipeline_of(run: RunRecord) -> Pipeline:
    return registry.build(run.pipeline, run.params)


def _finish_run(run: RunRecord, as_json: bool) -> None:
    if as_json:
        _print_json(run.as_dict())
    else:
        reason = f": {escape(run.reason)}" if run.reason else ""
        console.print(
            f"run {escape(run.id)} {_state_text(run.effective_state)}{reason}",
            highlight=False,
            soft_wrap=True,
        )
    if run.effective_state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BadRequest(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _overrides(rules: list[str], reason: str | None) -> dict[str, str]:
    if rules and not (reason or "").strip():
        raise BadRequest("--override needs --reason TEXT: overrides are audited with their reason")
    return {rule: (reason or "").strip() for rule in rules}


@runs_app.command("start")
def runs_start(
    pipeline: Annotated[str, typer.Argument(help="A built pipeline (today: demo).")],
    env: Annotated[str, typer.Option("--env", help="Target environment (as in policy.yaml).")] = "dev",
    target: Annotated[
        str | None, typer.Option(help="What is deployed; the lock is per (env, target).")
    ] = None,
    actor: AsOpt = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="KEY=VALUE (JSON values allowed).")
    ] = None,
    override: Annotated[
        list[str] | None, typer.Option("--override", help="A policy rule to let pass.")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why the override (required with --override).")] = None,
    policy_path: Annotated[
        Path | None, typer.Option("--policy", help="Policy file (default: policy.yaml).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a run of a pipeline and drive it to its end (Ctrl-C or a kill leaves it resumable)."""
    with handled(as_json):
        params = _parse_params(param or [])
        overrides = _overrides(override or [], reason)
        built = registry.build(pipeline, params)
        policy = load_policy(policy_path).for_run(env, pipeline)
        store = _store()
        with ProgressDisplay(as_json) as display:
            executor = engine_executor(store, display)
            record = executor.start(
                built,
                environment=env,
                target=target or pipeline,
                requester=resolve_identity(actor, store),
                policy=policy,
                overrides=overrides,
            )
            say(f"run {record.id} started", stream=display.stream)
            final = executor.drive(record.id, built)
    _finish_run(final, as_json)


@runs_app.command("resume")
def runs_resume(
    run_id: Annotated[str, typer.Argument(help="An interrupted run (see `runs list`).")],
    actor: AsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue an interrupted run: done steps are not repeated, no effect is applied twice."""
    with handled(as_json):
        store = _store()
        with ProgressDisplay(as_json) as display:
            executor = engine_executor(store, display)
            with store.transaction() as conn:
                run = store.run(conn, run_id, executor.clock.now())
            final = executor.resume(run_id, _pipeline_of(run), actor=resolve_actor(actor))
    _finish_run(final, as_json)


@runs_app.command("abort")
def runs_abort(
    run_id: Annotated[str, typer.Argument(help="A run that has not finished.")],
    actor: AsOpt = None,
    reason: Annotated[str, typer.Option(help="Why (audited).")] = "aborted from the command line",
    as_json: JsonOpt = False,
) -> None:
    """Stop a run safely: roll it back if its pipeline can, release its lock (audited)."""
    with handled(as_json):
        store = _store()
        with ProgressDisplay(as_json) as display:
            executor = engine_executor(store, display)
            with store.transaction() as conn:
                run = store.run(conn, run_id, executor.clock.now())
            try:
                pipeline: Pipeline | None = _pipeline_of(run)
            except UnknownPipeline:
                pipeline = None
            final = executor.abort(run_id, pipeline, actor=resolve_actor(actor), reason=reason)
    if as_json:
        _print_json(final.as_dict())
    elif final.state.final:
        console.print(
            f"run {escape(final.id)} {_state_text(final.state)}: {escape(final.reason or '')}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        say(f"abort requested: run {final.id}'s process {final.owner} stops after its current step")


# -- approvals -----------------------------------------------------------------------------------


def _decide(
    run_id: str, actor: str | None, comment: str, decision: approvals.Decision, as_json: bool
) -> None:
    with handled(as_json):
        store = _store()
        deciding = resolve_identity(actor, store)
        now = engine_executor(store).clock.now()
        with store.transaction() as conn:
            run = store.run(conn, run_id, now, for_update=True)
            record = approvals.decide(
                store, conn, run, decision=decision, actor=deciding, comment=comment, now=now
            )
    if as_json:
        _print_json({"run_id": run_id, **record.as_dict()})
    else:
        say(f"run {run_id}: {record.decision.value} by {record.actor} (step {record.step})")


def approve(
    run_id: Annotated[str, typer.Argument(help="A run waiting for approval.")],
    actor: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Who approves (checked against policy); with MANGAASSIST_IDENTITY_TOKEN (or another "
            "verified identity) it may be left out and must agree.",
        ),
    ] = None,
    comment: Annotated[str, typer.Option(help="Why (audited).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Approve a waiting run, as policy allows (who may, and whether the requester may)."""
    _decide(run_id, actor, comment, approvals.Decision.APPROVED, as_json)


def reject(
    run_id: Annotated[str, typer.Argument(help="A run waiting for approval.")],
    comment: Annotated[str, typer.Option(help="Why (required, audited).")],
    actor: Annotated[str | None, typer.Option("--as", help="Who rejects (as for approve).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a waiting run: it stops and rolls back."""
    _decide(run_id, actor, comment, approvals.Decision.REJECTED, as_json)


# -- audit ---------------------------------------------------------------------------------------


@audit_app.callback(invoke_without_command=True)
def audit_list(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's entries.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the audit log (every transition and decision), oldest first."""
    if ctx.invoked_subcommand is not None:
        return
    with handled(as_json):
        store = _store()
        with store.transaction() as conn:
            entries = audit.entries(conn, run_id)
    if as_json:
        _print_json(history.audit_log(store, run_id))
        return
    for e in entries:
        detail = json.dumps(e.detail, default=str, ensure_ascii=False)
        console.print(
            f"{e.seq:>5} {e.at[:19].replace('T', ' ')} {e.run_id or '-':<16} {e.actor:<20} "
            f"{e.kind:<20} {detail}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the keyed chain and its anchor: an edited, deleted, reordered or re-chained entry, a log
    rolled back to an older copy, or an approval written behind the engine's back fails (exit 1)."""
    with handled(as_json):
        store = _store()
        checked = history.audit_check(store)
    problems = checked["problems"]
    if as_json:
        _print_json(checked)
    elif problems:
        for p in problems:
            where = f"entry {p['seq']}" if p["seq"] is not None else "log"
            err.print(
                f"[bold red]tampered:[/] {where}: {escape(p['problem'])}", highlight=False, soft_wrap=True
            )
    else:
        head = checked["head"]
        say(
            f"audit log intact: {checked['entries']} entries, chain verified "
            f"(head: entry {head['seq']}, hash {head['hash']})"
        )
    if problems:
        raise typer.Exit(1)


# -- release -------------------------------------------------------------------------------------


def release(
    plan_only: Annotated[bool, typer.Option("--plan", help="Only print the plan; run nothing.")] = False,
    since: Annotated[
        str | None, typer.Option(help="Git ref to compare with (default: last release).")
    ] = None,
    env: Annotated[str, typer.Option("--env", help="Target environment.")] = "dev",
    repo: Annotated[Path, typer.Option(help="The repository to plan from.")] = Path("."),
    actor: AsOpt = None,
    override: Annotated[
        list[str] | None, typer.Option("--override", help="A policy rule to let pass.")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why the override (required with --override).")] = None,
    policy_path: Annotated[
        Path | None, typer.Option("--policy", help="Policy file (default: policy.yaml).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Run the plan without asking for confirmation.")] = False,
    dry: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Plan (--plan) or run a release: changed paths -> pipelines, in dependency order.

    --dry-run (an aws environment): dry-run each planned pipeline's runs in order, stopping at the
    first that fails; each is planned against AWS as it is (not as the ones before would leave it)."""
    with handled(as_json):
        overrides = _overrides(override or [], reason)
        policy = load_policy(policy_path)
        policy.for_run(env, "release")  # unknown environment: fail before touching anything
        store = _store()
        base = since or planner.last_release(store, env)
        plan = planner.plan_release(
            planner.changed_paths(repo, base),
            environment=env,
            is_built=registry.is_built,
            since=base,
            head=planner.git_head(repo),
        )
        if plan_only:
            _show_plan(plan, as_json)
            return
        if dry:
            _release_dry_run(plan, env, as_json)
            return
        if plan.pipelines:
            preflight(env, store)
        if not yes:
            if as_json or not sys.stdin.isatty():
                raise fail(
                    "not a terminal: pass --yes to run the release without confirmation", 2, as_json=as_json
                )
            _show_plan(plan, False)
            typer.confirm(f"run these {len(plan.pipelines)} pipeline(s) in {env}?", abort=True)
        requester = resolve_identity(actor, store)
        with ProgressDisplay(as_json) as display:
            executor = engine_executor(store, display)

            def run_one(item: planner.PlannedPipeline) -> tuple[bool, str | None, str]:
                record = None
                try:
                    runs = registry.release_runs(item.id, env, item.paths)
                    if not runs:
                        return True, None, "nothing to run"
                    for params in runs:  # several for CD-07 (one per pending migration), in order
                        record = executor.run(
                            registry.build(item.id, params),
                            environment=env,
                            target=item.id,
                            requester=requester,
                            policy=policy.for_run(env, item.id),
                            overrides=overrides,
                            also_lock=registry.ALSO_LOCK.get(item.id, ()),
                        )
                        if record.state is not RunState.SUCCEEDED:
                            break
                except MangaAssistError as exc:
                    return False, record.id if record else None, str(exc)
                assert record is not None
                return (
                    record.state is RunState.SUCCEEDED,
                    record.id,
                    f"{record.state.value} {record.reason or ''}"
                    + (f" ({len(runs)} runs)" if len(runs) > 1 else ""),
                )

            summary = planner.execute(plan, run_one, store=store, actor=requester.name)
    if as_json:
        _print_json(summary.as_dict())
    else:
        _show_plan(plan, False)
        console.print("[bold]release summary[/]")
        for result in summary.results:
            run = f" (run {result.run_id})" if result.run_id else ""
            say(f"  {result.id}: {result.status.value}{run} {result.detail}".rstrip())
        verdict = "succeeded" if summary.succeeded else "stopped"
        say(f"release {summary.id} {verdict}")
    if not summary.succeeded:
        raise typer.Exit(1)


def _release_dry_run(plan: planner.ReleasePlan, env: str, as_json: bool) -> None:
    """``release --dry-run``: each planned pipeline's runs dry-run in order (``views.dry_run``),
    until one fails; the rest are reported as not dry-run."""
    from mangaassist.platform import factory
    from mangaassist.views.dry_run import dry_run_pipeline

    settings = factory.settings_for(env)
    if settings.provider != "aws":
        raise ConfigError(
            f"environment {env} runs on provider {settings.provider!r}: --dry-run shows the AWS calls "
            "of an aws environment (staging, prod); --plan shows a local release's pipelines"
        )
    results: list[dict[str, Any]] = []
    stopped = False
    for item in plan.pipelines:
        if stopped or not item.built:
            why = "not built yet" if not item.built else "not dry-run: a pipeline before it failed"
            results.append({"pipeline": item.id, "result": why, "runs": []})
            continue
        with factory.dry_run(settings):  # CD-07 lists its pending migrations
            runs = registry.release_runs(item.id, env, item.paths)
        plans = []
        for params in runs:
            one = dry_run_pipeline(item.id, params, environment=env)
            plans.append(one)
            if one["result"] == "failed":
                stopped = True
                break
        result = "nothing to run" if not runs else plans[-1]["result"]
        results.append({"pipeline": item.id, "result": result, "runs": plans})
    if as_json:
        _print_json({"dry_run": True, "plan": plan.as_dict(), "pipelines": results})
    else:
        _show_plan(plan, False)
        console.print("[bold]release dry run[/] (nothing was changed)")
        for entry in results:
            changes = sum(int(p["changes"]) for p in entry["runs"])
            count = f", {len(entry['runs'])} runs" if len(entry["runs"]) > 1 else ""
            say(f"  {entry['pipeline']}: {entry['result']} ({changes} change(s){count})")
            for one in entry["runs"]:
                if one["reason"]:
                    say(f"     {one['stopped_at']}: {one['reason']}")
    if stopped:
        raise typer.Exit(1)


def _show_plan(plan: planner.ReleasePlan, as_json: bool) -> None:
    if as_json:
        _print_json(plan.as_dict())
        return
    base = plan.since or "nothing (first release: every tracked file is new)"
    console.print(
        f"[bold]release plan for {escape(plan.environment)}[/], changes since {escape(base)}",
        highlight=False,
        soft_wrap=True,
    )
    if not plan.pipelines:
        say("  nothing to release: no changed path belongs to a pipeline")
    for n, item in enumerate(plan.pipelines, 1):
        built = "" if item.built else " [yellow](not built yet)[/]"
        console.print(
            f"  {n}. {escape(item.id)} {escape(item.title)}{built}", highlight=False, soft_wrap=True
        )
        say(f"     why: {item.reason}")
        for after in item.after:
            say(f"     after {after}")
    if plan.unmapped:
        shown = ", ".join(plan.unmapped[:5]) + (" ..." if len(plan.unmapped) > 5 else "")
        say(f"  not shipped by any pipeline ({len(plan.unmapped)}): {shown}")


def register(app: typer.Typer) -> None:
    """Add the engine's commands to the main ``mangaassist`` app."""
    app.add_typer(runs_app, name="runs")
    app.add_typer(audit_app, name="audit")
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("release")(release)
