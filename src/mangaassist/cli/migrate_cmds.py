"""``mangaassist migrate``: CD-07's database migrations from the command line.

``list`` (every file in ``migrations/`` with its state in the environment: pending, expand,
cutover, contracted), ``plan [ID]`` (what ``apply`` would do, or the next pending migration),
``apply ID`` (an engine run: expand, backfill, verify, cutover, bake), ``status`` (the live rules
and the newest CD-07 runs with their backfill progress), ``resume RUN`` (a killed apply goes on from
its checkpoints), ``verify ID`` (compare every item with the new shape now, changing nothing),
``rollback ID`` and ``contract ID``. ``--rate`` and ``--segments`` override the file's backfill
settings for one run. Every problem in a migration file is printed as ``FILE:LINE: FIELD: message``
(exit 2); nothing runs.

Registered on the main app by ``register(app)``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mangaassist.cli.deploy_cmds import EnvOpt
from mangaassist.cli.engine_cmds import (
    AsOpt,
    DryRunOpt,
    JsonOpt,
    ProgressDisplay,
    _print_json,
    _store,
    dry_run,
    finish_run,
    handled,
    runs_resume,
    say,
)
from mangaassist.delivery.engine.clock import SystemClock
from mangaassist.delivery.engine.errors import BadRequest
from mangaassist.delivery.engine.model import RunRecord, StepRecord
from mangaassist.delivery.migrations.backfill import verify
from mangaassist.delivery.migrations.spec import Migration, find, load_all
from mangaassist.delivery.pipelines import migration as cd07
from mangaassist.platform.factory import platform_for
from mangaassist.views.runs import run_pipeline

migrate_app = typer.Typer(
    help="Database migrations (CD-07): online expand/contract with a dual write and a resumable backfill.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="A migration: its file's stem (0001_name) or its number (1).")]
RateOpt = Annotated[
    float | None, typer.Option("--rate", help="Backfill items a second (default: the file's backfill.rate).")
]
SegmentsOpt = Annotated[
    int | None,
    typer.Option("--segments", help="Parallel scan segments (default: the file's backfill.segments)."),
]
PageOpt = Annotated[
    int | None, typer.Option("--page", help="Items a scan page holds (default: the file's backfill.page).")
]
BakeOpt = Annotated[
    float | None,
    typer.Option(
        "--bake", help="Seconds to bake under the page alerts after the cutover (default: the file's)."
    ),
]
PIPELINES = (cd07.NAME, cd07.CONTRACT, cd07.ROLLBACK)


def _params(env: str) -> dict[str, Any]:
    return {"environment": env}


def _all() -> list[Migration]:
    params: dict[str, Any] = {}
    return load_all(cd07.migrations_dir(params), cd07.declaration_of(params))


def _one(ident: str) -> Migration:
    params: dict[str, Any] = {}
    return find(cd07.migrations_dir(params), cd07.declaration_of(params), ident)


def _states(env: str) -> dict[str, dict[str, Any]]:
    migrations = _all()  # a bad file is reported before anything is started
    rules = cd07.live_rules(platform_for(env).config_store())
    out: dict[str, dict[str, Any]] = {}
    for m in migrations:
        live = rules.get(m.id)
        out[m.id] = {
            "id": m.id,
            "table": m.table,
            "kind": m.kind,
            "state": live.phase if live is not None else "pending",
            "cut_over_at": live.cut_over_at if live is not None else None,
            "description": m.description,
        }
    return out


def _check_rate(rate: float | None, segments: int | None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if rate is not None:
        if rate <= 0:
            raise BadRequest(f"--rate {rate:g}: a positive number of items a second")
        extra["rate"] = rate
    if segments is not None:
        if not 1 <= segments <= 64:
            raise BadRequest(f"--segments {segments}: a whole number from 1 to 64")
        extra["segments"] = segments
    return extra


@migrate_app.command("list")
def migrate_list(env: EnvOpt = "dev", as_json: JsonOpt = False) -> None:
    """Every migration file and its state in the environment."""
    with handled(as_json):
        states = _states(env)
    if as_json:
        _print_json(list(states.values()))
        return
    if not states:
        say("no migrations in migrations/")
    for s in states.values():
        say(f"{s['id']:<40} {s['table']:<10} {s['kind']:<17} {s['state']}")


@migrate_app.command("plan")
def migrate_plan(
    ident: Annotated[str | None, typer.Argument(help="A migration (default: the next pending one).")] = None,
    env: EnvOpt = "dev",
    rate: RateOpt = None,
    segments: SegmentsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What ``apply`` would do: the file (validated), the rule writers get, the backfill, the bake."""
    with handled(as_json):
        extra = _check_rate(rate, segments)
        states = _states(env)
        if ident is None:
            pending = [s["id"] for s in states.values() if s["state"] == "pending"]
            if not pending:
                doc: dict[str, Any] = {"environment": env, "next": None}
                if as_json:
                    _print_json(doc)
                else:
                    say(f"nothing to apply in {env}: every migration is live")
                return
            ident = pending[0]
        m = _one(ident)
        summary = m.summary()
        doc = {
            "environment": env,
            "migration": summary,
            "state": states[m.id]["state"],
            "rule": m.rule("expand").as_dict(),
            "backfill": {
                "rate": extra.get("rate", m.backfill.rate),
                "segments": extra.get("segments", m.backfill.segments),
                "page": m.backfill.page,
            },
            "bake_s": m.bake_s.get(env, 0.0),
            "rollback_window_s": m.rollback_window_s.get(env, 0.0),
            "steps": ["check", "expand", "backfill", "verify", "cutover", "bake"],
            "contract": {"removes": list(m.removes), "irreversible": m.irreversible},
        }
    if as_json:
        _print_json(doc)
        return
    say(f"{m.id} ({m.kind} on {m.table}) in {env}: now {doc['state']}")
    say(f"  {m.description}")
    for name, d in m.adds:
        say(f"  add {name} = {d.fn}({', '.join(d.sources)}{''.join(f', {k}={v}' for k, v in d.params)})")
    if m.index:
        say(f"  fills index {m.index}")
    b = doc["backfill"]
    say(f"  backfill: {b['rate']:g} items/s, {b['segments']} segments, pages of {b['page']}")
    say(f"  bake {doc['bake_s']:g}s; rollback window {doc['rollback_window_s']:g}s before a contract")
    if m.removes:
        say(f"  contract removes {', '.join(m.removes)} (irreversible: an approval is required)")


def _finish(run: RunRecord, steps: dict[str, StepRecord], as_json: bool) -> None:
    finish_run(run, steps, as_json)


def _run(
    pipeline: str,
    ident: str,
    env: str,
    extra: dict[str, Any],
    as_json: bool,
    actor: str | None,
    dry: bool = False,
) -> None:
    with handled(as_json):
        m = _one(ident)
        params = {**_params(env), "migration": m.id, "digest": m.digest, **extra}
    if dry:
        return dry_run(pipeline, params, env, as_json)
    with handled(as_json):
        run, steps = run_pipeline(
            ProgressDisplay(as_json),
            pipeline,
            params,
            environment=env,
            target=cd07.NAME,
            requester=actor,
            announce=True,
            also_lock=cd07.LOCKS,
        )
    _finish(run, steps, as_json)


@migrate_app.command("apply")
def migrate_apply(
    ident: IdArg,
    env: EnvOpt = "dev",
    rate: RateOpt = None,
    segments: SegmentsOpt = None,
    page: PageOpt = None,
    bake: BakeOpt = None,
    actor: AsOpt = None,
    dry: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Expand, backfill, verify, cut over and bake one migration (CD-07, an engine run)."""
    with handled(as_json):
        extra = _check_rate(rate, segments)
        if page is not None:
            if not 1 <= page <= 1000:
                raise BadRequest(f"--page {page}: a whole number from 1 to 1000")
            extra["page"] = page
        if bake is not None:
            if bake < 0:
                raise BadRequest(f"--bake {bake:g}: a number of seconds, 0 or more")
            extra["bake_s"] = bake
    _run(cd07.NAME, ident, env, extra, as_json, actor, dry)


@migrate_app.command("rollback")
def migrate_rollback(
    ident: IdArg, env: EnvOpt = "dev", rate: RateOpt = None, actor: AsOpt = None, as_json: JsonOpt = False
) -> None:
    """Withdraw a live migration that is not contracted: old reads and writes, added attributes removed."""
    with handled(as_json):
        extra = _check_rate(rate, None)
    _run(cd07.ROLLBACK, ident, env, extra, as_json, actor)


@migrate_app.command("contract")
def migrate_contract(
    ident: IdArg, env: EnvOpt = "dev", rate: RateOpt = None, actor: AsOpt = None, as_json: JsonOpt = False
) -> None:
    """After the rollback window: writers drop the retired attributes, the items lose them."""
    with handled(as_json):
        extra = _check_rate(rate, None)
    _run(cd07.CONTRACT, ident, env, extra, as_json, actor)


@migrate_app.command("resume")
def migrate_resume(
    run_id: Annotated[str, typer.Argument(help="An interrupted CD-07 run (see `migrate status`).")],
    actor: AsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Go on with a killed migration run from its checkpoints (refused if its file changed)."""
    with handled(as_json):
        store = _store()
        with store.transaction() as conn:
            run = store.run(conn, run_id, SystemClock().now())
        if run.pipeline not in PIPELINES:
            raise BadRequest(
                f"run {run_id} is a {run.pipeline} run, not a migration: use `mangaassist runs resume`"
            )
        cd07.migration_of(run.params)  # a changed file is refused before anything runs
    runs_resume(run_id, actor, as_json)


@migrate_app.command("status")
def migrate_status(env: EnvOpt = "dev", as_json: JsonOpt = False) -> None:
    """The migrations' states and the newest migration runs, with their backfill progress."""
    with handled(as_json):
        states = _states(env)
        store = _store()
        clock = SystemClock()
        with store.transaction() as conn:
            recent = [
                r
                for r in store.runs(conn, clock.now(), limit=200, environment=env)
                if r.pipeline in PIPELINES
            ]
            runs = []
            for r in recent[:10]:
                steps = {s.name: s for s in store.steps(conn, r.id)}
                backfill = steps.get("backfill")
                runs.append(
                    {
                        "run": r.id,
                        "pipeline": r.pipeline,
                        "migration": r.params.get("migration"),
                        "state": r.effective_state.value,
                        "step": next(
                            (n for n, s in steps.items() if s.status.value in ("running", "waiting")), None
                        ),
                        "backfill": (backfill.detail if backfill is not None else {}),
                        "created_at": r.created_at,
                    }
                )
    doc = {"environment": env, "migrations": list(states.values()), "runs": runs}
    if as_json:
        _print_json(doc)
        return
    for s in states.values():
        say(f"{s['id']:<40} {s['state']}")
    for shown in runs:
        line = f"{shown['run']} {shown['pipeline']:<15} {shown['migration']} {shown['state']}"
        if shown["step"]:
            line += f" at {shown['step']}"
        say(line)


@migrate_app.command("verify")
def migrate_verify(ident: IdArg, env: EnvOpt = "dev", as_json: JsonOpt = False) -> None:
    """Compare every item of the table with the migration's new shape now (reads only)."""
    with handled(as_json):
        m = _one(ident)
        report = verify(platform_for(env).tables(), m.rule("expand"), segments=m.backfill.segments)
    doc = {"migration": m.id, "environment": env, **report.as_dict()}
    if as_json:
        _print_json(doc)
    else:
        say(
            f"{m.id} in {env}: {report.checked} items checked, {report.differences} differ from the new shape"
        )
        for s in report.sample:
            say(f"  {s['pk']}/{s['sk']}: expected {s['expected']}, found {s['found']}")
    if report.differences:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(migrate_app, name="migrate")
