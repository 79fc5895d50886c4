"""CD-07, database migrations: online expand/contract with a dual write and a resumable backfill.

``apply`` (``CD-07``), one engine step each:

1. ``check``: the migration file is valid against ``infra/resources.toml`` (``migrations.spec``);
   earlier migrations of the same table are live; the index an ``add_index`` fills exists (CD-02
   provisions it); the migration is not live already.
2. ``expand``: its ``Rule`` (phase ``expand``) is published in the runtime config's ``schema``
   profile (CD-06's store; one version, promoted to every session at once), then the step waits
   ``propagation_s`` for the workers' next poll: from then on the chatbot writes both shapes
   (``platform.tables.ShapedTables``).
3. ``backfill``: ``migrations.backfill.backfill``: a parallel scan in ``segments``, throttled to
   ``rate`` items a second, every write conditional; each segment's scan key is saved in the
   engine's state after every page (``StepContext.save_checkpoint``), so a killed run resumes
   there (``mangaassist migrate resume RUN``).
4. ``verify``: every item against the new shape; any difference fails the run here, with a sample.
5. ``cutover``: the rule's phase becomes ``cutover``: reads use the new shape (an order lookup by
   status queries the new index, say).
6. ``bake``: ``bake_s`` of the environment under CD-08's page alerts for the chatbot; one firing
   fails the run.

A failed or aborted ``apply`` is rolled back by the engine (policy ``rollback: automatic``): the rule
is withdrawn (reads and writes back to the old shape) and the added attributes are removed from
the items, throttled like the backfill. ``CD-07-rollback`` (``migrate rollback ID``) does the same
for a migration that is live but not contracted.

Params: ``environment``, ``migration`` (id), ``digest`` (the file's, at the start), ``rate``,
``segments``, ``page`` (override the file's backfill settings), ``bake_s``, ``propagation_s``
(default: two config polls and a second, the poll read from ``MANGAASSIST_CONFIG_POLL`` in the
process running the migration: give it the workers' value, or pass ``propagation_s``; the wait is for
liveness only, verify catches a worker that wrote without the rule), ``config_url``, ``service`` (whose page
alerts the bake watches: ``chatbot``), ``root``, ``dir`` (another migrations directory).

``CD-07-contract`` (``migrate contract ID``): once the environment's rollback window has passed
since the cutover, the rule's phase becomes ``contracted`` (writers drop the retired attributes)
and the retired attributes are removed from every item. An irreversible contract waits for at least
one recorded approval in every environment (more if the policy asks).

Every CD-07 run holds the ``CD-07`` lock (one migration at a time per environment: their rules
share the ``schema`` profile) and CD-01's (no app deploy while a migration runs, and no migration
while one does). A run resumed after its migration file changed is refused: the file's digest is a
run param, compared at every build.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.core.migrations import SCHEMA_PROFILE, Rules
from mangaassist.core.resources import Declaration, load_declaration
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext
from mangaassist.delivery.migrations.backfill import SegmentProgress, backfill, clear, strip, verify
from mangaassist.delivery.migrations.spec import Migration, find, load_all
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.delivery.rollout.phases import page_alerts
from mangaassist.platform.config_store import ConfigStore
from mangaassist.platform.factory import platform_for
from mangaassist.platform.settings import find_root

NAME = "CD-07"
CONTRACT = "CD-07-contract"
ROLLBACK = "CD-07-rollback"
LOCKS = ("CD-01",)
"""What a CD-07 run holds besides its own lock: the app's (``also_lock``)."""


def root_of(params: dict[str, Any]) -> Path:
    return find_root(params.get("root"), needs=("migrations", "infra/resources.toml"))


def declaration_of(params: dict[str, Any]) -> Declaration:
    return load_declaration(root_of(params) / "infra" / "resources.toml")


def migrations_dir(params: dict[str, Any]) -> Path:
    return Path(params["dir"]) if params.get("dir") else root_of(params) / "migrations"


def migration_of(params: dict[str, Any]) -> Migration:
    """The run's migration, refused if its file changed since the run started (``digest``)."""
    if not params.get("migration"):
        raise ConfigError("CD-07 needs the param migration=ID")
    migration = find(migrations_dir(params), declaration_of(params), str(params["migration"]))
    started = params.get("digest")
    if started and started != migration.digest:
        raise ConfigError(
            f"{migration.path}: the file changed since the run started (digest {started[:12]} at the start, "
            f"{migration.digest[:12]} now); put it back as it was, or roll back and apply it again"
        )
    return migration


def _environment(params: dict[str, Any]) -> str:
    environment = params.get("environment")
    if not environment:
        raise ConfigError("CD-07 needs the param environment=NAME")
    return str(environment)


def _propagation(params: dict[str, Any]) -> float:
    if params.get("propagation_s") is not None:
        return float(params["propagation_s"])
    # the workers' poll interval (the same variable they read): two polls and a second
    poll = float(os.environ.get("MANGAASSIST_CONFIG_POLL", "2.0"))
    return 2 * poll + 1


# -- the schema profile ---------------------------------------------------------------------------


def live_rules(store: ConfigStore) -> Rules:
    """The rules every writer follows now (the ``schema`` profile's stable version)."""
    rollout = store.rollout(SCHEMA_PROFILE)
    if rollout.stable is None:
        return Rules()
    return Rules.from_content(store.version(SCHEMA_PROFILE, rollout.stable).content)


def publish(store: ConfigStore, rules: Rules, *, actor: str, reason: str) -> dict[str, Any]:
    """Make ``rules`` what every writer follows (a new version of the profile, promoted)."""
    version = store.create_version(SCHEMA_PROFILE, rules.content(), author=actor, message=reason)
    store.promote(SCHEMA_PROFILE, version.version, actor=actor, reason=reason)
    return {"version": version.version, "at": time.time(), "rules": len(rules.rules)}


def _store(scope: RunScope, ctx: StepContext) -> ConfigStore:
    return scope.platform.config_store(ctx.params.get("config_url"))


def release_runs(environment: str) -> list[dict[str, Any]]:
    """What ``mangaassist release`` runs of CD-07: one apply per pending migration, in order."""
    params: dict[str, Any] = {"environment": environment}
    rules = live_rules(platform_for(environment).config_store())
    return [
        {**params, "migration": m.id, "digest": m.digest}
        for m in load_all(migrations_dir(params), declaration_of(params))
        if rules.get(m.id) is None
    ]


# -- apply ----------------------------------------------------------------------------------------


def build(params: dict[str, Any]) -> Pipeline:
    environment = _environment(params)
    migration = migration_of(params)  # a bad file fails before the run starts
    scope = RunScope(environment)
    steps = (
        Step(
            "check", scope.bind(_check), "the file, the earlier migrations, the index it fills", changes=False
        ),
        Step("expand", scope.bind(_expand), "publish the dual-write rule; writers add the new shape"),
        Step("backfill", scope.bind(_backfill), "bring every existing item to the new shape, throttled"),
        Step("verify", scope.bind(_verify), "every item against the new shape: 0 differences"),
        Step("cutover", scope.bind(_cutover), "reads switch to the new shape"),
        Step("bake", scope.bind(_bake), "watch CD-08's page alerts for the bake time"),
    )
    return Pipeline(
        NAME,
        steps,
        rollback=scope.bind(_undo),
        description=f"migration {migration.id} on {migration.table}",
        params=params,
        close=scope.close,
    )


def _check(scope: RunScope, ctx: StepContext) -> Outcome:
    migration = migration_of(ctx.params)
    store = _store(scope, ctx)
    rules = live_rules(store)
    live = rules.get(migration.id)
    if live is not None and live.phase != "expand":
        return Outcome.failed(f"migration {migration.id} is live already ({live.phase})", abort=True)
    earlier = [
        m
        for m in load_all(migrations_dir(ctx.params), declaration_of(ctx.params))
        if m.table == migration.table and m.number < migration.number
    ]
    pending = [m.id for m in earlier if (r := rules.get(m.id)) is None or r.phase == "expand"]
    if pending:
        return Outcome.failed(
            f"apply the earlier migrations of {migration.table} first: {', '.join(pending)}", abort=True
        )
    tables = scope.platform.tables()
    if migration.index is not None and migration.index not in {
        i.name for i in tables.indexes(migration.table)
    }:
        return Outcome.failed(
            f"table {migration.table} has no index {migration.index} in {ctx.run.environment}: "
            "it is declared in infra/resources.toml; create it with 'mangaassist deploy infra' first",
            abort=True,
        )
    return Outcome.done(
        {"migration": migration.id, "digest": migration.digest, "table": migration.table},
        detail=migration.summary(),
    )


def _expand(scope: RunScope, ctx: StepContext) -> Outcome:
    migration = migration_of(ctx.params)
    rule = migration.rule("expand")
    published = _publish(
        ctx, _store(scope, ctx), lambda rules: rules.with_rule(rule), f"{migration.id} expand"
    )
    return Outcome.done(published, detail={"schema_version": published["version"]})


def _publish(
    ctx: StepContext, store: ConfigStore, change: Callable[[Rules], Rules], what: str, effect: str = "publish"
) -> dict[str, Any]:
    """Change the live rules (an effect: applied once per run), then wait for the workers."""
    published: dict[str, Any] = ctx.effect(
        effect,
        lambda key: publish(
            store, change(live_rules(store)), actor=ctx.run.requester, reason=f"{NAME} {what} ({key})"
        ),
    )
    _settle(ctx, published)
    return published


def _strip(
    scope: RunScope, ctx: StepContext, migration: Migration, phase: str, attributes: tuple[str, ...]
) -> int:
    """Remove ``attributes`` from every item of the migration's table (an effect), throttled."""
    removed: int = ctx.effect(
        "strip",
        lambda _key: strip(
            scope.platform.tables(),
            migration.rule(phase),
            attributes,
            rate=_rate(ctx, migration),
            segments=_segments(ctx, migration),
            page=_page(ctx, migration),
        ),
    )
    return removed


def _clear(scope: RunScope, ctx: StepContext, migration: Migration, table: str) -> int:
    """Delete every item of ``table`` (an effect), throttled: a ``change_key`` rollback or contract."""
    removed: int = ctx.effect(
        f"clear-{table}",
        lambda _key: clear(
            scope.platform.tables(),
            table,
            rate=_rate(ctx, migration),
            segments=_segments(ctx, migration),
            page=_page(ctx, migration),
        ),
    )
    return removed


def _settle(ctx: StepContext, published: dict[str, Any]) -> None:
    """Wait until the workers' next poll has brought them the published rules."""
    left = float(published["at"]) + _propagation(ctx.params) - time.time()
    if left > 0:
        ctx.progress(f"waiting {left:.1f}s for every worker to follow schema version {published['version']}")
        ctx.sleep(left)


def _segments(ctx: StepContext, migration: Migration) -> int:
    return int(ctx.params.get("segments") or migration.backfill.segments)


def _rate(ctx: StepContext, migration: Migration) -> float:
    return float(ctx.params.get("rate") or migration.backfill.rate)


def _page(ctx: StepContext, migration: Migration) -> int:
    return int(ctx.params.get("page") or migration.backfill.page)


def _backfill(scope: RunScope, ctx: StepContext) -> Outcome:
    migration = migration_of(ctx.params)
    tables = scope.platform.tables()
    total = _segments(ctx, migration)
    rate = _rate(ctx, migration)
    progress = [
        SegmentProgress.from_dict(saved)
        if (saved := ctx.saved_checkpoint(f"segment-{i}"))
        else SegmentProgress(i)
        for i in range(total)
    ]
    resumed = sum(1 for p in progress if p.pages)
    if resumed:
        ctx.progress(f"resuming {resumed} segment(s) from their checkpoints")
    lock = threading.Lock()

    def save(p: SegmentProgress) -> None:
        with lock:
            ctx.save_checkpoint(f"segment-{p.segment}", p.as_dict())

    def report(r: Any) -> None:
        totals = r.totals()
        ctx.progress(
            f"{totals['scanned']} items scanned, {totals['written']} written, "
            f"{totals['conflicts']} left to newer writes; "
            f"{sum(s.done for s in r.segments)}/{total} segments done"
        )

    result = backfill(
        tables,
        migration.rule("expand"),
        progress,
        rate=rate,
        page=_page(ctx, migration),
        save=save,
        report=report,
    )
    doc = result.as_dict()
    doc["resumed_segments"] = resumed
    numbers = {k: float(v) for k, v in doc.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return Outcome.done(doc, numbers=numbers, detail={k: v for k, v in doc.items() if k != "segments"})


def _verify(scope: RunScope, ctx: StepContext) -> Outcome:
    migration = migration_of(ctx.params)
    report = verify(scope.platform.tables(), migration.rule("expand"), segments=_segments(ctx, migration))
    doc = report.as_dict()
    numbers = {"checked": float(report.checked), "differences": float(report.differences)}
    if report.differences:
        return Outcome.failed(
            f"{report.differences} of {report.checked} items differ from the new shape "
            f"(first: {report.sample[0]['pk']}/{report.sample[0]['sk']}); no cutover",
            detail=doc,
            numbers=numbers,
        )
    return Outcome.done(doc, numbers=numbers, detail=doc)


def _cutover(scope: RunScope, ctx: StepContext) -> Outcome:
    migration = migration_of(ctx.params)
    published = _publish(
        ctx,
        _store(scope, ctx),
        lambda rules: rules.with_rule(migration.rule("cutover", cut_over_at=time.time())),
        f"{migration.id} cutover",
    )
    return Outcome.done(
        {**published, "cut_over_at": published["at"]}, detail={"schema_version": published["version"]}
    )


def _bake(scope: RunScope, ctx: StepContext) -> Outcome:
    migration = migration_of(ctx.params)
    seconds = float(ctx.params.get("bake_s", migration.bake_s.get(ctx.run.environment, 0.0)))
    if seconds <= 0:
        return Outcome.done({"baked_s": 0.0}, detail={"why": "no bake (bake 0s)"})
    cut = float(ctx.outputs["cutover"]["cut_over_at"])
    metrics = scope.metrics()
    service = str(ctx.params.get("service") or "chatbot")
    while True:
        firing = page_alerts(metrics, service)
        if firing:
            return Outcome.failed(f"{firing[0].line()} during the bake of {migration.id}")
        left = cut + seconds - time.time()
        if left <= 0:
            return Outcome.done({"baked_s": seconds}, numbers={"baked_s": seconds})
        ctx.progress(f"baking: {left:.0f}s left, no page alert for {service}")
        ctx.sleep(min(left, 1.0))


def _undo(scope: RunScope, ctx: StepContext) -> Outcome:
    """A failed or aborted apply: withdraw the rule and remove what expand added."""
    return _withdraw(scope, ctx, migration_of(ctx.params))


def _withdraw(scope: RunScope, ctx: StepContext, migration: Migration) -> Outcome:
    store = _store(scope, ctx)
    rules = live_rules(store)
    live = rules.get(migration.id)
    if live is not None and live.phase == "contracted":
        return Outcome.failed(
            f"{migration.id} is contracted: there is no old shape to go back to", abort=True
        )
    if live is not None:
        _publish(
            ctx, store, lambda rules: rules.without(migration.id), f"{migration.id} withdrawn", "withdraw"
        )
    if migration.move is not None:  # the copies go, the items stay
        removed = _clear(scope, ctx, migration, migration.move.table)
    else:
        removed = _strip(scope, ctx, migration, "expand", migration.added)
    return Outcome.done(
        {"withdrawn": live is not None, "items_stripped": removed}, numbers={"items_stripped": float(removed)}
    )


# -- rollback ---------------------------------------------------------------------------------------


def build_rollback(params: dict[str, Any]) -> Pipeline:
    _environment(params)
    migration = migration_of(params)
    scope = RunScope(str(params["environment"]))
    return Pipeline(
        ROLLBACK,
        (
            Step(
                "withdraw",
                scope.bind(_undo),
                "the old shape back for readers and writers, the added attributes removed",
            ),
        ),
        description=f"roll back migration {migration.id}",
        params=params,
        close=scope.close,
        restores=True,
    )


# -- contract ---------------------------------------------------------------------------------------


def build_contract(params: dict[str, Any]) -> Pipeline:
    _environment(params)
    migration = migration_of(params)
    scope = RunScope(str(params["environment"]))
    return Pipeline(
        CONTRACT,
        (
            Step(
                "window",
                scope.bind(_window),
                "the rollback window since the cutover has passed",
                changes=False,
            ),
            Step(
                "approval",
                scope.bind(_approval),
                "the approvals the policy (and an irreversible contract) need",
                changes=False,
                approves=True,
            ),
            Step(
                "contract", scope.bind(_contract), "writers drop the retired attributes; the items lose them"
            ),
        ),
        description=f"contract migration {migration.id}",
        params=params,
        close=scope.close,
    )


def _window(scope: RunScope, ctx: StepContext) -> Outcome:
    migration = migration_of(ctx.params)
    live = live_rules(_store(scope, ctx)).get(migration.id)
    if live is None or live.phase == "expand":
        return Outcome.failed(
            f"{migration.id} is not cut over in {ctx.run.environment}: apply it first", abort=True
        )
    if live.phase == "contracted":
        return Outcome.done({"already": True}, detail={"already": True})
    cut = float(live.cut_over_at or 0.0)
    window = migration.rollback_window_s.get(ctx.run.environment, 0.0)
    ends = cut + window
    if time.time() < ends:
        left = ends - time.time()
        return Outcome.failed(
            f"{migration.id}'s rollback window in {ctx.run.environment} ends in {left:.0f}s "
            f"(at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ends))} UTC): contract after it",
            abort=True,
        )
    return Outcome.done({"cut_over_at": cut, "window_s": window})


def _approval(scope: RunScope, ctx: StepContext) -> Outcome:
    migration = migration_of(ctx.params)
    status = ctx.approval()
    needed = max(status.needed, 1 if migration.irreversible else 0)
    if status.rejected_by is not None:
        return Outcome.failed(
            f"rejected by {status.rejected_by.actor}: {status.rejected_by.comment}", abort=True
        )
    if len(status.approvers) >= needed:
        return Outcome.done({"approved_by": list(status.approvers), "needed": needed})
    return Outcome.wait_for_approval(
        f"the contract of {migration.id} removes {', '.join(migration.removes) or 'nothing'} for good: "
        f"{needed - len(status.approvers)} more approval(s): mangaassist approve {ctx.run.id} --as NAME"
    )


def _contract(scope: RunScope, ctx: StepContext) -> Outcome:
    migration = migration_of(ctx.params)

    def contracted(rules: Rules) -> Rules:
        live = rules.get(migration.id)
        cut = live.cut_over_at if live is not None else None
        return rules.with_rule(migration.rule("contracted", cut_over_at=cut))

    published = _publish(ctx, _store(scope, ctx), contracted, f"{migration.id} contract")
    removed = 0
    if migration.move is not None:  # the items go, their copies in the new table stay
        removed = _clear(scope, ctx, migration, migration.table)
    elif migration.removes:
        removed = _strip(scope, ctx, migration, "contracted", migration.removes)
    return Outcome.done({"schema_version": published["version"], "items_stripped": removed})
