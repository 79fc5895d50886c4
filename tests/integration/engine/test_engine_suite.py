"""The engine's behaviour on a real state store, once on SQLite and once on PostgreSQL.

Time is a ``FakeClock``: lease expiry and approval timeouts happen without waiting. Approvals that
"arrive while the run waits" are made from the clock's sleep, which is exactly when the executor polls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from mangaassist.delivery.engine import approvals, audit, people
from mangaassist.delivery.engine.clock import FakeClock, iso
from mangaassist.delivery.engine.errors import (
    ApprovalDenied,
    LeaseLost,
    LockHeld,
    NotWaitingForApproval,
    PipelineChanged,
    PolicyBlocked,
    RunFinished,
    RunIsLive,
    RunNotFound,
    UnknownRule,
)
from mangaassist.delivery.engine.locks import Owner
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord, StepStatus, WaitFor
from mangaassist.delivery.engine.policy import EnvironmentPolicy, default_policy, parse_policy
from mangaassist.delivery.engine.runs import Executor, Outcome, Pipeline, Step, StepContext, approval_step
from mangaassist.delivery.engine.state import StateStore, audit_head, audit_log, effects
from mangaassist.delivery.engine.state import approvals as approvals_table
from mangaassist.delivery.pipelines import demo

WEDNESDAY = datetime(2025, 1, 8, 12, 0, tzinfo=UTC)
SATURDAY = datetime(2025, 1, 11, 12, 0, tzinfo=UTC)
FRIDAY_1459 = datetime(2025, 1, 10, 14, 59, tzinfo=UTC)
MONDAY_0900 = datetime(2025, 1, 13, 9, 0, tzinfo=UTC)


class PollingClock(FakeClock):
    """A fake clock that runs ``on_sleep`` callbacks when the executor sleeps (= polls)."""

    def __init__(self, start: datetime = WEDNESDAY) -> None:
        super().__init__(start)
        self.on_sleep: list[Callable[[], None]] = []

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.on_sleep:
            self.on_sleep.pop(0)()


def executor(store: StateStore, clock: FakeClock, **kw: object) -> Executor:
    kw.setdefault("poll_seconds", 5.0)
    return Executor(store, clock=clock, heartbeat=False, **kw)  # type: ignore[arg-type]


def signed(name: str) -> people.Actor:
    """A person with a verified identity (prod accepts no free-text names; identity sources are
    tested in tests/integration/engine/test_people.py)."""
    return people.Actor(name, "token", "test")


def prod() -> EnvironmentPolicy:
    return default_policy().for_run("prod", "demo")


def dev() -> EnvironmentPolicy:
    return default_policy().for_run("dev", "demo")


def kinds(store: StateStore, run_id: str) -> list[str]:
    with store.transaction() as conn:
        return [e.kind for e in audit.entries(conn, run_id)]


def steps_of(store: StateStore, run_id: str) -> dict[str, StepStatus]:
    with store.transaction() as conn:
        return {s.name: s.status for s in store.steps(conn, run_id)}


def decide(
    store: StateStore,
    clock: FakeClock,
    run_id: str,
    actor: str,
    decision: approvals.Decision,
    comment: str = "",
) -> approvals.ApprovalRecord:
    with store.transaction() as conn:
        run = store.run(conn, run_id, clock.now())
        return approvals.decide(
            store, conn, run, decision=decision, actor=signed(actor), comment=comment, now=clock.now()
        )


# -- the state machine ---------------------------------------------------------------------------


def test_a_run_goes_through_its_steps_and_records_every_transition(store: StateStore) -> None:
    clock = FakeClock(WEDNESDAY)
    final = executor(store, clock).run(
        demo.build({}), environment="dev", target="demo", requester=signed("ann"), policy=dev()
    )
    assert final.state is RunState.SUCCEEDED and final.finished_at is not None
    assert steps_of(store, final.id) == dict.fromkeys(["prepare", "apply", "verify"], StepStatus.DONE)
    assert kinds(store, final.id) == [
        "run.started",
        "step.started",
        "step.effect",
        "step.done",
        "step.started",
        "step.effect",
        "step.done",
        "step.started",
        "step.done",
        "run.finished",
    ]
    with store.transaction() as conn:
        verify = store.steps(conn, final.id)[2]
        assert verify.detail["verdict"] == "PASS" and verify.detail["numbers"]["requests"] == 200.0
        assert conn.execute(sa.text("SELECT count(*) FROM engine_locks")).scalar_one() == 0  # released


def test_failed_step_rolls_back_automatically_when_policy_says_so(store: StateStore) -> None:
    final = executor(store, FakeClock()).run(
        demo.build({"fail_at": "apply"}),
        environment="dev",
        target="demo",
        requester=signed("ann"),
        policy=dev(),
    )
    assert final.state is RunState.ROLLED_BACK
    assert final.reason == "step apply failed: demo failure requested at apply"
    assert steps_of(store, final.id) == {
        "prepare": StepStatus.DONE,
        "apply": StepStatus.FAILED,
        "verify": StepStatus.SKIPPED,
    }
    assert {"step.failed", "rollback.started", "rollback.done"} <= set(kinds(store, final.id))


def test_manual_rollback_policy_leaves_a_failed_run_for_an_operator(store: StateStore) -> None:
    policy = parse_policy("environments:\n  dev:\n    rollback: manual\n", "p.yaml").for_run("dev", "demo")
    final = executor(store, FakeClock()).run(
        demo.build({"fail_at": "verify"}),
        environment="dev",
        target="demo",
        requester=signed("ann"),
        policy=policy,
    )
    assert final.state is RunState.FAILED
    assert "rollback.manual" in kinds(store, final.id) and "rollback.started" not in kinds(store, final.id)


def test_a_failing_rollback_is_reported_not_hidden(store: StateStore) -> None:
    final = executor(store, FakeClock()).run(
        demo.build({"fail_at": "apply", "rollback_fails": True}),
        environment="dev",
        target="demo",
        requester=signed("ann"),
        policy=dev(),
    )
    assert final.state is RunState.FAILED
    assert final.reason is not None and final.reason.endswith(
        "rollback failed: demo rollback failure requested"
    )


def test_a_step_that_raises_fails_the_run_with_the_exception(store: StateStore) -> None:
    def boom(_ctx: StepContext) -> Outcome:
        raise RuntimeError("disk full")

    pipeline = Pipeline("boom", (Step("boom", boom),))
    final = executor(store, FakeClock()).run(
        pipeline, environment="dev", target="x", requester=signed("ann"), policy=dev()
    )
    assert final.state is RunState.FAILED and final.reason == "step boom failed: RuntimeError: disk full"


def test_waiting_for_time_polls_until_then_continues(store: StateStore) -> None:
    clock = FakeClock(WEDNESDAY)
    until = datetime(2025, 1, 8, 12, 0, 12, tzinfo=UTC)

    def bake(ctx: StepContext) -> Outcome:
        if ctx.now() < until:
            return Outcome.wait("baking", for_=WaitFor.TIME, until=until)
        return Outcome.done({"baked_at": ctx.now().isoformat()})

    pipeline = Pipeline("bake", (Step("bake", bake),))
    final = executor(store, clock).run(
        pipeline, environment="dev", target="x", requester=signed("ann"), policy=dev()
    )
    assert final.state is RunState.SUCCEEDED
    assert clock.now() == until  # slept exactly until, in poll-sized slices
    assert kinds(store, final.id).count("step.waiting") == 1  # one transition, however many polls


def test_effects_recorded_by_an_earlier_attempt_are_not_applied_again(store: StateStore) -> None:
    applied: list[str] = []
    attempts = {"n": 0}

    def flaky(ctx: StepContext) -> Outcome:
        ctx.effect("create", lambda key: applied.append(key))
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise KeyboardInterrupt  # the process "dies" after the effect, before the step is done
        return Outcome.done()

    pipeline = Pipeline("flaky", (Step("flaky", flaky),))
    clock = FakeClock()
    ex = executor(store, clock)
    record = ex.start(pipeline, environment="dev", target="x", requester=signed("ann"), policy=dev())
    with pytest.raises(KeyboardInterrupt):
        ex.drive(record.id, pipeline)
    final = ex.resume(record.id, pipeline, actor="ann")
    assert final.state is RunState.SUCCEEDED
    assert applied == [f"{record.id}/flaky/create"]  # once, with its idempotency key
    with store.transaction() as conn:
        assert store.steps(conn, record.id)[0].attempts == 2


# -- resume and leases ---------------------------------------------------------------------------


def start_and_abandon(
    store: StateStore,
    clock: FakeClock,
    pipeline: Pipeline,
    policy: EnvironmentPolicy | None = None,
    **kw: object,
) -> RunRecord:
    """Start a run from a process that then vanishes (another host: only lease expiry tells)."""
    ghost = executor(store, clock, owner=Owner(pid=1, host="ci-runner-7"))
    return ghost.start(  # type: ignore[arg-type]
        pipeline, environment="prod", target="web", requester=signed("ann"), policy=policy or prod(), **kw
    )


def prod_freezes() -> EnvironmentPolicy:
    """Prod's windows and freezes without its approvals (the freeze tests; approvals are tested apart)."""
    return dataclasses.replace(prod(), approvals=0)


def test_a_run_whose_lease_expired_shows_as_interrupted_and_resumes(store: StateStore) -> None:
    clock = PollingClock(WEDNESDAY)
    pipeline = demo.build({})
    run = start_and_abandon(store, clock, pipeline)
    # prod: the engine put an approval before the first change; carl gives it while bob's resume waits
    clock.on_sleep.append(lambda: decide(store, clock, run.id, "carl", approvals.Decision.APPROVED))
    with store.transaction() as conn:
        assert store.run(conn, run.id, clock.now()).effective_state is RunState.RUNNING
    with pytest.raises(RunIsLive, match="ci-runner-7"):
        executor(store, clock).resume(run.id, pipeline, actor="bob")
    clock.advance(31)
    with store.transaction() as conn:
        assert store.runs(conn, clock.now())[0].effective_state is RunState.INTERRUPTED
    final = executor(store, clock).resume(run.id, pipeline, actor="bob")
    assert final.state is RunState.SUCCEEDED
    with pytest.raises(RunFinished, match="already succeeded"):
        executor(store, clock).resume(run.id, pipeline, actor="bob")


def test_resume_refuses_a_pipeline_whose_steps_changed(store: StateStore) -> None:
    clock = FakeClock()
    run = start_and_abandon(store, clock, demo.build({}))
    clock.advance(60)
    with pytest.raises(PipelineChanged, match="was started with steps"):
        executor(store, clock).resume(run.id, demo.build({"approval": True}), actor="bob")


def test_a_second_run_fails_at_once_naming_the_holder(store: StateStore) -> None:
    clock = FakeClock(WEDNESDAY)
    first = start_and_abandon(store, clock, demo.build({}))
    with pytest.raises(LockHeld) as caught:
        executor(store, clock).start(
            demo.build({}), environment="prod", target="web", requester=signed("bob"), policy=prod()
        )
    message = str(caught.value)
    assert first.id in message and "started by ann at 2025-01-08T12:00:00" in message
    with store.transaction() as conn:  # nothing half-written: the refused run does not exist
        assert [r.id for r in store.runs(conn, clock.now())] == [first.id]


def test_an_expired_lease_is_taken_over_by_a_new_run(store: StateStore) -> None:
    clock = FakeClock(WEDNESDAY)
    first = start_and_abandon(store, clock, demo.build({}))
    clock.advance(31)
    second = executor(store, clock).start(
        demo.build({}), environment="prod", target="web", requester=signed("bob"), policy=prod()
    )
    with store.transaction() as conn:
        old = store.run(conn, first.id, clock.now())
    assert old.state is RunState.ABORTED and second.id in (old.reason or "")
    assert "lock.taken_over" in kinds(store, first.id)


def test_abort_of_an_interrupted_run_rolls_back_and_frees_the_lock(store: StateStore) -> None:
    clock = FakeClock()
    pipeline = demo.build({})
    run = start_and_abandon(store, clock, pipeline)
    clock.advance(60)
    final = executor(store, clock).abort(run.id, pipeline, actor="ops", reason="bad build")
    assert final.state is RunState.ABORTED and final.reason == "aborted by ops: bad build"
    assert {"run.abort_requested", "run.finished"} <= set(kinds(store, run.id))
    executor(store, clock).start(
        pipeline, environment="prod", target="web", requester=signed("bob"), policy=prod()
    )


def test_abort_of_a_live_run_asks_its_process_to_stop(store: StateStore) -> None:
    clock = PollingClock()
    pipeline = demo.build({"approval": True})
    ex = executor(store, clock)
    run = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod())
    other = executor(store, clock, owner=Owner(pid=2, host="laptop"))
    clock.on_sleep.append(lambda: other.abort(run.id, pipeline, actor="ops", reason="stop"))
    final = ex.drive(run.id, pipeline)
    assert final.state is RunState.ABORTED and "aborted by ops" in (final.reason or "")
    assert "rollback.done" in kinds(store, run.id)


# -- approvals -----------------------------------------------------------------------------------


def test_prod_needs_one_approval_from_someone_else(store: StateStore) -> None:
    clock = PollingClock()
    pipeline = demo.build({"approval": True})
    ex = executor(store, clock)
    run = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod())
    errors: list[Exception] = []

    def try_self_then_other() -> None:
        try:
            decide(store, clock, run.id, "ann", approvals.Decision.APPROVED)
        except ApprovalDenied as exc:
            errors.append(exc)
        decide(store, clock, run.id, "bob", approvals.Decision.APPROVED, "looks good")

    clock.on_sleep.append(try_self_then_other)
    final = ex.drive(run.id, pipeline)
    assert final.state is RunState.SUCCEEDED
    assert len(errors) == 1 and "may not approve it in prod" in str(errors[0])
    with store.transaction() as conn:
        recorded = approvals.records(conn, run.id)
        step = store.steps(conn, run.id)[1]
    assert [(r.actor, r.comment) for r in recorded] == [("bob", "looks good")]
    assert step.output == {"approved_by": ["bob"]}
    assert "approval.approved" in kinds(store, run.id)


def test_dev_allows_self_approval_and_no_approval_is_needed(store: StateStore) -> None:
    final = executor(store, FakeClock()).run(
        demo.build({"approval": True}),
        environment="dev",
        target="demo",
        requester=signed("ann"),
        policy=dev(),
    )
    assert final.state is RunState.SUCCEEDED
    with store.transaction() as conn:
        assert store.steps(conn, final.id)[1].detail == {"approvals_required": 0}


def test_only_listed_approvers_may_approve_and_each_counts_once(store: StateStore) -> None:
    text = "environments:\n  prod:\n    approvals: 2\n    approvers: [bob, cid]\n"
    policy = parse_policy(text, "p.yaml").for_run("prod", "demo")
    clock = PollingClock()
    pipeline = demo.build({"approval": True})
    ex = executor(store, clock)
    run = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=policy)
    denied: list[str] = []

    def round_one() -> None:
        for actor in ("eve", "bob", "bob"):
            try:
                decide(store, clock, run.id, actor, approvals.Decision.APPROVED)
            except ApprovalDenied as exc:
                denied.append(str(exc))

    clock.on_sleep += [round_one, lambda: decide(store, clock, run.id, "cid", approvals.Decision.APPROVED)]
    final = ex.drive(run.id, pipeline)
    assert final.state is RunState.SUCCEEDED
    assert denied[0] == "eve may not approve prod runs (approvers: bob, cid)"
    assert "already approved" in denied[1]


def test_a_name_written_differently_is_the_same_person(store: StateStore) -> None:
    """Identities are compared normalised (case, whitespace, Unicode): the requester cannot approve
    their own prod run as "Ann ", and "BOB" after "bob" is not a second approver."""
    text = "environments:\n  prod:\n    approvals: 2\n    approvers: [Bob, cid]\n    self_approval: false\n"
    policy = parse_policy(text, "p.yaml").for_run("prod", "demo")
    clock = PollingClock()
    pipeline = demo.build({"approval": True})
    ex = executor(store, clock)
    run = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=policy)
    denied: list[str] = []

    def round_one() -> None:
        for actor in ("Ann ", "\uff21nn", "bob", " BOB", "b  o b"):
            try:
                decide(store, clock, run.id, actor, approvals.Decision.APPROVED)
            except ApprovalDenied as exc:
                denied.append(str(exc))

    clock.on_sleep += [round_one, lambda: decide(store, clock, run.id, "CID", approvals.Decision.APPROVED)]
    final = ex.drive(run.id, pipeline)
    assert final.state is RunState.SUCCEEDED
    assert "may not approve" in denied[0] and "may not approve" in denied[1]  # "Ann ", fullwidth "Ａnn"
    assert "already approved" in denied[2]  # " BOB" after "bob"
    assert denied[3].startswith("b  o b may not approve prod runs")
    with store.transaction() as conn:
        assert store.steps(conn, run.id)[1].output == {"approved_by": ["bob", "CID"]}


def test_rejection_aborts_the_run_and_rolls_it_back(store: StateStore) -> None:
    clock = PollingClock()
    pipeline = demo.build({"approval": True})
    ex = executor(store, clock)
    run = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod())
    clock.on_sleep.append(
        lambda: decide(store, clock, run.id, "bob", approvals.Decision.REJECTED, "not today")
    )
    final = ex.drive(run.id, pipeline)
    assert final.state is RunState.ABORTED
    assert final.reason is not None and "rejected by bob: not today" in final.reason
    assert {"approval.rejected", "rollback.done"} <= set(kinds(store, run.id))


def test_approval_timeout_aborts_the_run_safely(store: StateStore) -> None:
    clock = FakeClock(WEDNESDAY)
    pipeline = demo.build({"approval": True})
    ex = executor(store, clock, poll_seconds=3600.0)  # a poll an hour: 24 polls to the timeout
    final = ex.run(pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod())
    assert final.state is RunState.ABORTED and "approval timed out" in (final.reason or "")
    assert (clock.now() - WEDNESDAY).total_seconds() >= 24 * 3600
    with store.transaction() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM engine_locks")).scalar_one() == 0


def test_bad_approvals_are_refused_and_change_nothing(store: StateStore) -> None:
    clock = FakeClock()
    done = executor(store, clock).run(
        demo.build({}), environment="dev", target="demo", requester=signed("ann"), policy=dev()
    )
    with pytest.raises(RunFinished, match="already succeeded"):
        decide(store, clock, done.id, "bob", approvals.Decision.APPROVED)
    with pytest.raises(RunNotFound):
        decide(store, clock, "run-nope", "bob", approvals.Decision.APPROVED)
    running = start_and_abandon(store, clock, demo.build({}))
    with pytest.raises(NotWaitingForApproval):
        decide(store, clock, running.id, "bob", approvals.Decision.APPROVED)
    with store.transaction() as conn:
        assert approvals.records(conn, done.id) == [] and approvals.records(conn, running.id) == []


# -- policy at start -----------------------------------------------------------------------------


def test_a_freeze_blocks_the_run_naming_the_rule_and_an_override_lets_it_pass(store: StateStore) -> None:
    clock = FakeClock(SATURDAY)
    pipeline = demo.build({})
    with pytest.raises(PolicyBlocked) as caught:
        executor(store, clock).start(
            pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod()
        )
    assert caught.value.rule == "prod.freeze.weekend"
    assert "Fri 15:00 to Mon 09:00 UTC" in str(caught.value) and "--override prod.freeze.weekend" in str(
        caught.value
    )
    with pytest.raises(UnknownRule):
        executor(store, clock).start(
            pipeline,
            environment="prod",
            target="web",
            requester=signed("ann"),
            policy=prod(),
            overrides={"prod.freeze.typo": "x"},
        )
    run = executor(store, clock).start(
        pipeline,
        environment="prod",
        target="web",
        requester=signed("ann"),
        policy=prod(),
        overrides={"prod.freeze.weekend": "hotfix for INC-42"},
    )
    with store.transaction() as conn:
        entries = audit.entries(conn)
    blocked = [e for e in entries if e.kind == "policy.blocked"]
    override = [e for e in entries if e.kind == "policy.override"]
    assert blocked[0].detail["rules"] == ["prod.freeze.weekend"]
    assert override[0].run_id == run.id and override[0].detail == {
        "rule": "prod.freeze.weekend",
        "reason": "hotfix for INC-42",
    }
    assert override[0].actor == "ann"


# -- audit tampering -----------------------------------------------------------------------------


def audited_store(store: StateStore) -> None:
    executor(store, FakeClock()).run(
        demo.build({}), environment="dev", target="demo", requester=signed("ann"), policy=dev()
    )


def problems(store: StateStore) -> list[str]:
    with store.transaction() as conn:
        return [p.message for p in audit.verify(conn, store)[1]]


def test_an_untouched_audit_log_verifies(store: StateStore) -> None:
    audited_store(store)
    with store.transaction() as conn:
        count, found = audit.verify(conn, store)
    assert count == 10 and found == []


def test_an_edited_entry_is_found(store: StateStore) -> None:
    audited_store(store)
    with store.transaction() as conn:
        conn.execute(audit_log.update().where(audit_log.c.seq == 4).values(actor="mallory"))
    assert problems(store) == ["content does not match its keyed hash (edited or re-chained)"]


def test_a_deleted_entry_is_found(store: StateStore) -> None:
    audited_store(store)
    with store.transaction() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 5))
    found = problems(store)
    assert "entries 5..5 are missing (deleted)" in found
    assert any("does not chain" in p for p in found)


def test_deleting_the_newest_entries_is_found(store: StateStore) -> None:
    audited_store(store)
    with store.transaction() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq >= 9))
    found = problems(store)
    assert found[0] == (
        "the log ends at entry 8 but 10 were appended (newest entries deleted, or the head was edited)"
    )
    # and the anchor, outside the database, saw entry 10
    assert found[1].startswith("the anchor saw entry 10 (at ") and found[1].endswith(
        "but the log ends at entry 8: the database was rolled back to an older copy"
    )
    assert len(found) == 2


def test_a_log_rechained_without_the_key_is_found(store: StateStore) -> None:
    """Whoever can write the database edits entry 4 and recomputes every hash after it (the unkeyed
    sha256 they can compute) and the head: the chain is consistent again, but not keyed."""
    audited_store(store)
    with store.transaction() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).mappings()]
        prev = rows[2]["hash"]
        for row in rows[3:]:
            actor = "mallory" if row["seq"] == 4 else row["actor"]
            digest = audit.entry_hash(
                prev, row["seq"], row["at"], row["run_id"], actor, row["kind"], row["detail"]
            )
            conn.execute(
                audit_log.update()
                .where(audit_log.c.seq == row["seq"])
                .values(actor=actor, prev_hash=prev, hash=digest)
            )
            prev = digest
        conn.execute(audit_head.update().values(hash=prev))
    found = problems(store)
    assert "an unkeyed entry after keyed ones (re-chained without the key)" in found
    assert any(p.startswith("differs from the hash anchored at ") for p in found)


def test_a_database_restored_from_an_older_copy_is_found(store: StateStore, tmp_path: Path) -> None:
    """The log as it was after the first run, restored after a second run: consistent, keyed, and
    behind the anchor."""
    audited_store(store)
    with store.transaction() as conn:
        kept = [dict(r) for r in conn.execute(sa.select(audit_log)).mappings()]
        head = dict(conn.execute(sa.select(audit_head)).mappings().one())
    audited_store(store)
    with store.transaction() as conn:
        conn.execute(audit_log.delete())
        conn.execute(audit_log.insert(), kept)
        conn.execute(audit_head.update().values(seq=head["seq"], hash=head["hash"]))
    found = problems(store)
    assert len(found) == 1 and "but the log ends at entry 10: the database was rolled back" in found[0]


def test_an_approval_written_behind_the_engines_back_is_found(store: StateStore) -> None:
    audited_store(store)
    with store.transaction() as conn:
        run_id = conn.execute(sa.select(audit_log.c.run_id).where(audit_log.c.run_id.is_not(None))).scalar()
        conn.execute(
            approvals_table.insert().values(
                run_id=run_id, step="approval", decision="approved", actor="mallory", comment="", at="x"
            )
        )
    found = problems(store)
    assert len(found) == 1 and "(approved by mallory on run " in found[0]
    assert found[0].endswith("has no entry in the log (written behind the engine's back)")


def test_secret_looking_params_are_redacted_in_the_log_but_kept_for_the_run(store: StateStore) -> None:
    params = {
        "token": "s3cr3t",
        "note": "key AKIAABCDEFGHIJKLMNOP here",
        "nested": {"db_password": "x"},
        "n": 3,
    }
    run = executor(store, FakeClock()).run(
        demo.build(params), environment="dev", target="demo", requester=signed("ann"), policy=dev()
    )
    with store.transaction() as conn:
        started = next(e for e in audit.entries(conn, run.id) if e.kind == "run.started")
        kept = store.run(conn, run.id, FakeClock().now()).params
    assert started.detail["params"] == {
        "token": "[redacted]",
        "note": "key [redacted] here",
        "nested": {"db_password": "[redacted]"},
        "n": 3,
    }
    assert kept["token"] == "s3cr3t"  # the run needs it to resume


def test_reordered_entries_are_found(store: StateStore) -> None:
    audited_store(store)
    with store.transaction() as conn:  # swap entries 3 and 4 (contents and hashes move, seq stays)
        rows = {
            r["seq"]: dict(r)
            for r in conn.execute(sa.select(audit_log).where(audit_log.c.seq.in_([3, 4]))).mappings()
        }
        for seq, other in ((3, 4), (4, 3)):
            values = {k: v for k, v in rows[other].items() if k != "seq"}
            conn.execute(audit_log.update().where(audit_log.c.seq == seq).values(**values))
    found = problems(store)
    assert any("does not chain" in p for p in found)


# -- policy again at every step: windows and freezes after the start ------------------------------


def deploying(
    applied: list[datetime], *, approval: bool = False, prepare_s: float = 0.0, prepare_effect: bool = True
) -> Pipeline:
    """prepare (optionally slow, with an effect after it), [approval], deploy (an effect)."""

    def prepare(ctx: StepContext) -> Outcome:
        if prepare_s:
            ctx.sleep(prepare_s)
            if prepare_effect:
                ctx.effect("stage", lambda _key: applied.append(ctx.now()))
        return Outcome.done()

    def deploy(ctx: StepContext) -> Outcome:
        ctx.effect("deploy", lambda _key: applied.append(ctx.now()))
        return Outcome.done()

    steps = [Step("prepare", prepare)]
    if approval:
        steps.append(approval_step())
    steps.append(Step("deploy", deploy))
    return Pipeline("deploying", tuple(steps))


def blocked_entries(store: StateStore, run_id: str) -> list[dict[str, object]]:
    with store.transaction() as conn:
        return [e.detail for e in audit.entries(conn, run_id) if e.kind == "policy.blocked"]


def assert_never_during_the_freeze(applied: list[datetime]) -> None:
    assert applied, "nothing was deployed"
    for moment in applied:
        assert not prod().blocks(moment), f"an effect was applied at {moment:%a %H:%M} during the freeze"


def test_a_freeze_that_begins_while_waiting_for_approval_holds_the_deploy_until_it_ends(
    store: StateStore,
) -> None:
    """Started Fri 14:59, approved Sat 08:59 (in the freeze): deploys Mon 09:00, not Saturday."""
    clock = PollingClock(FRIDAY_1459)
    applied: list[datetime] = []
    pipeline = deploying(applied, approval=True)
    ex = executor(store, clock, poll_seconds=3600.0)
    run = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod())

    def approve_saturday_morning() -> None:
        clock.advance((datetime(2025, 1, 11, 8, 59, tzinfo=UTC) - clock.now()).total_seconds())
        decide(store, clock, run.id, "bob", approvals.Decision.APPROVED, "ship it")

    clock.on_sleep.append(approve_saturday_morning)
    final = ex.drive(run.id, pipeline)
    assert final.state is RunState.SUCCEEDED
    assert applied == [MONDAY_0900]
    assert_never_during_the_freeze(applied)
    blocked = blocked_entries(store, run.id)
    assert blocked and blocked[0]["rules"] == ["prod.freeze.weekend"]
    assert blocked[0]["until"] == iso(MONDAY_0900)


def test_a_step_reached_during_a_freeze_waits_for_time_naming_the_rule(store: StateStore) -> None:
    clock = PollingClock(FRIDAY_1459)
    applied: list[datetime] = []
    pipeline = deploying(applied, prepare_s=150.0, prepare_effect=False)  # deploy is reached at 15:01:30
    ex = executor(store, clock, poll_seconds=3600.0)
    seen: dict[str, object] = {}

    def look() -> None:
        with store.transaction() as conn:
            seen["run"] = store.run(conn, run.id, clock.now()).state
            seen["deploy"] = store.steps(conn, run.id)[1]

    clock.on_sleep += [lambda: None, look]  # prepare's own sleep, then the first poll of the hold
    run = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod_freezes())
    final = ex.drive(run.id, pipeline)
    assert final.state is RunState.SUCCEEDED
    assert applied == [MONDAY_0900]
    step = seen["deploy"]
    assert isinstance(step, StepRecord) and seen["run"] is RunState.WAITING
    assert step.status is StepStatus.WAITING
    assert step.detail == {
        "wait_for": "time",
        "until": iso(MONDAY_0900),
        "blocked_by": ["prod.freeze.weekend"],
    }
    assert step.reason is not None and step.reason.startswith("blocked by policy rule prod.freeze.weekend: ")
    with store.transaction() as conn:
        deploy = store.steps(conn, run.id)[1]
    assert deploy.attempts == 1 and deploy.detail == {} and deploy.reason is None


def test_an_effect_is_not_applied_when_the_freeze_begins_inside_its_step(store: StateStore) -> None:
    clock = FakeClock(FRIDAY_1459)
    applied: list[datetime] = []
    pipeline = deploying(applied, prepare_s=120.0)  # prepare's effect would land at 15:01
    final = executor(store, clock, poll_seconds=3600.0).run(
        pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod_freezes()
    )
    assert final.state is RunState.SUCCEEDED
    assert_never_during_the_freeze(applied)
    assert applied[0] == datetime(2025, 1, 13, 9, 2, tzinfo=UTC)  # prepare ran again from Monday 09:00
    with store.transaction() as conn:
        assert store.steps(conn, final.id)[0].attempts == 2
    assert blocked_entries(store, final.id)[0]["step"] == "prepare"


def test_resuming_during_a_freeze_waits_for_it_to_end(store: StateStore) -> None:
    clock = FakeClock(FRIDAY_1459)
    applied: list[datetime] = []
    pipeline = deploying(applied)
    run = start_and_abandon(
        store, clock, pipeline, prod_freezes()
    )  # started before the freeze, then the host died
    clock.advance(20 * 3600)  # Saturday 10:59
    final = executor(store, clock, poll_seconds=3600.0).resume(run.id, pipeline, actor="bob")
    assert final.state is RunState.SUCCEEDED
    assert applied == [MONDAY_0900]
    with store.transaction() as conn:
        prepare = store.steps(conn, run.id)[0]
    assert prepare.started_at is not None and prepare.started_at >= iso(MONDAY_0900)
    assert kinds(store, run.id)[:3] == ["run.started", "run.resumed", "policy.blocked"]


def test_an_override_given_at_start_holds_for_every_step(store: StateStore) -> None:
    clock = FakeClock(SATURDAY)
    applied: list[datetime] = []
    final = executor(store, clock).run(
        deploying(applied, prepare_s=60.0),
        environment="prod",
        target="web",
        requester=signed("ann"),
        policy=prod_freezes(),
        overrides={"prod.freeze.weekend": "hotfix for INC-42"},
    )
    assert final.state is RunState.SUCCEEDED and len(applied) == 2
    assert blocked_entries(store, final.id) == []


def test_a_step_reached_after_the_window_closes_waits_for_the_next_window(store: StateStore) -> None:
    text = (
        "timezone: Europe/Paris\n"
        "environments:\n"
        "  prod:\n"
        "    windows:\n"
        '      - {name: office, days: [mon, tue, wed, thu, fri], from: "09:00", to: "17:00"}\n'
    )
    policy = parse_policy(text, "windows.yaml").for_run("prod", "deploying")
    clock = FakeClock(datetime(2025, 1, 8, 15, 58, tzinfo=UTC))  # Wed 16:58 in Paris
    applied: list[datetime] = []
    final = executor(store, clock, poll_seconds=3600.0).run(
        deploying(applied, prepare_s=120.0, prepare_effect=False),
        environment="prod",
        target="web",
        requester=signed("ann"),
        policy=policy,
    )
    assert final.state is RunState.SUCCEEDED
    # deploy is reached at 17:00 in Paris, as the window closes: it runs when the next one opens
    assert applied == [datetime(2025, 1, 9, 8, 0, tzinfo=UTC)]  # Thursday 09:00 in Paris
    blocked = blocked_entries(store, final.id)
    assert blocked[0]["rules"] == ["prod.windows"] and blocked[0]["step"] == "deploy"


def test_the_approval_timeout_still_applies_while_a_freeze_holds_the_run(store: StateStore) -> None:
    text = (
        "environments:\n"
        "  prod:\n"
        "    approvals: 1\n"
        "    self_approval: false\n"
        "    approval_timeout: 2h\n"
        '    freezes: [{name: weekend, from: "fri 15:00", to: "mon 09:00"}]\n'
    )
    policy = parse_policy(text, "p.yaml").for_run("prod", "deploying")
    clock = FakeClock(FRIDAY_1459)
    applied: list[datetime] = []
    final = executor(store, clock, poll_seconds=600.0).run(
        deploying(applied, approval=True),
        environment="prod",
        target="web",
        requester=signed("ann"),
        policy=policy,
    )
    assert final.state is RunState.ABORTED and "approval timed out" in (final.reason or "")
    assert clock.now() < datetime(2025, 1, 10, 17, 30, tzinfo=UTC)  # not held until Monday
    assert applied == []


# -- fencing: a process that lost its lease changes nothing --------------------------------------


def test_a_process_whose_run_was_taken_over_applies_no_effect(store: StateStore) -> None:
    """A stalls past its lease; B takes the lock over; A's next effect must not be applied."""
    clock = FakeClock(WEDNESDAY)
    applied: list[str] = []
    b = executor(store, clock, owner=Owner(pid=999_999, host="otherhost"))

    def noop(_ctx: StepContext) -> Outcome:
        return Outcome.done()

    def stalls(ctx: StepContext) -> Outcome:
        clock.advance(120)  # process A stalls past its lease
        b.start(
            Pipeline("x", (Step("s", noop),)),
            environment="dev",
            target="web",
            requester=signed("bob"),
            policy=dev(),
        )
        ctx.effect("deploy", lambda key: applied.append(key))
        return Outcome.done()

    a = executor(store, clock)
    with pytest.raises(LeaseLost):
        a.run(
            Pipeline("x", (Step("s", stalls),)),
            environment="dev",
            target="web",
            requester=signed("ann"),
            policy=dev(),
        )
    assert applied == []
    with store.transaction() as conn:
        assert conn.execute(sa.select(effects)).all() == []


def test_an_executor_of_the_same_process_is_fenced_by_the_lease_token(store: StateStore) -> None:
    """Same pid@host, but the run was resumed by another executor: the old one applies nothing."""
    clock = FakeClock(WEDNESDAY)
    me = Owner(pid=4242, host="ci-runner-1")
    applied: list[str] = []
    first = executor(store, clock, owner=me)
    second = executor(store, clock, owner=me)
    seen: list[str] = []

    def taken_over(ctx: StepContext) -> Outcome:
        def from_the_new_holder(_ctx: StepContext) -> Outcome:
            try:
                ctx.effect("deploy", lambda key: applied.append(f"old:{key}"))  # the old executor's context
            except LeaseLost as exc:
                seen.append(str(exc))
            return Outcome.done()

        second.resume(ctx.run.id, Pipeline("x", (Step("s", from_the_new_holder),)), actor="ops")
        return Outcome.done()

    with pytest.raises(LeaseLost):
        first.run(
            Pipeline("x", (Step("s", taken_over),)),
            environment="dev",
            target="web",
            requester=signed("ann"),
            policy=dev(),
        )
    assert applied == [] and len(seen) == 1


def test_an_effect_applied_after_the_lease_was_lost_is_not_recorded(store: StateStore) -> None:
    clock = FakeClock(WEDNESDAY)
    b = executor(store, clock, owner=Owner(pid=999_999, host="otherhost"))

    def noop(_ctx: StepContext) -> Outcome:
        return Outcome.done()

    def slow_apply(_key: str) -> str:
        clock.advance(120)  # the target took two minutes; meanwhile the lock was taken over
        b.start(
            Pipeline("x", (Step("s", noop),)),
            environment="dev",
            target="web",
            requester=signed("bob"),
            policy=dev(),
        )
        return "done"

    def step(ctx: StepContext) -> Outcome:
        ctx.effect("deploy", slow_apply)
        return Outcome.done()

    with pytest.raises(LeaseLost):
        executor(store, clock).run(
            Pipeline("x", (Step("s", step),)),
            environment="dev",
            target="web",
            requester=signed("ann"),
            policy=dev(),
        )
    with store.transaction() as conn:
        assert conn.execute(sa.select(effects)).all() == []


def test_a_database_from_before_the_lease_token_gets_the_column(state_url: str) -> None:
    old = StateStore(state_url)
    with old.transaction() as conn:
        conn.execute(sa.text("ALTER TABLE engine_runs DROP COLUMN lease_token"))
    old.close()
    store = StateStore(state_url)
    try:
        with store.transaction() as conn:
            assert "lease_token" in {c["name"] for c in sa.inspect(conn).get_columns("engine_runs")}
        final = executor(store, FakeClock()).run(
            demo.build({}), environment="dev", target="demo", requester=signed("ann"), policy=dev()
        )
        assert final.state is RunState.SUCCEEDED
    finally:
        store.close()


def test_the_pipelines_resources_are_released_when_the_executor_stops_driving_it(store: StateStore) -> None:
    clock = FakeClock(WEDNESDAY)
    closed: list[str] = []
    built = demo.build({})
    pipeline = dataclasses.replace(built, close=lambda: closed.append("closed"))
    final = executor(store, clock).run(
        pipeline, environment="dev", target="demo", requester=signed("ann"), policy=dev()
    )
    assert final.state is RunState.SUCCEEDED and closed == ["closed"]


# -- four-eyes the engine enforces ------------------------------------------------------------------


def _checked_then_deployed(applied: list[str]) -> Pipeline:
    """A pipeline with no approval step of its own: a read-only check, then a change."""

    def check(ctx: StepContext) -> Outcome:
        return Outcome.done()

    def deploy(ctx: StepContext) -> Outcome:
        ctx.effect("deploy", lambda _key: applied.append("deployed"))
        return Outcome.done()

    return Pipeline("checked", (Step("check", check, changes=False), Step("deploy", deploy)))


def test_prod_puts_an_approval_before_the_first_change_of_a_pipeline_without_one(store: StateStore) -> None:
    clock = PollingClock()
    applied: list[str] = []
    pipeline = _checked_then_deployed(applied)
    ex = executor(store, clock)
    run = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod())
    assert run.step_names == ["check", "approval", "deploy"]  # after the read-only step, before the change
    seen: dict[str, object] = {}
    errors: list[Exception] = []

    def approve() -> None:
        seen["applied_while_waiting"] = list(applied)
        try:
            decide(store, clock, run.id, "ann", approvals.Decision.APPROVED)  # the requester: refused
        except ApprovalDenied as exc:
            errors.append(exc)
        decide(store, clock, run.id, "bob", approvals.Decision.APPROVED)

    clock.on_sleep.append(approve)
    final = ex.drive(run.id, pipeline)  # the pipeline object without the step: the engine adds it again
    assert final.state is RunState.SUCCEEDED and applied == ["deployed"]
    assert seen["applied_while_waiting"] == []  # nothing changed before the approval
    assert len(errors) == 1 and "may not approve it in prod" in str(errors[0])


def test_no_approval_is_added_in_dev_for_a_restore_or_where_the_pipeline_asks_itself(
    store: StateStore,
) -> None:
    applied: list[str] = []
    pipeline = _checked_then_deployed(applied)
    dev_run = executor(store, FakeClock()).run(
        pipeline, environment="dev", target="a", requester=signed("ann"), policy=dev()
    )
    assert dev_run.step_names == ["check", "deploy"] and dev_run.state is RunState.SUCCEEDED
    for variant in (
        dataclasses.replace(pipeline, restores=True),
        dataclasses.replace(pipeline, inline_approval=True),
    ):
        run = executor(store, FakeClock()).start(
            variant, environment="prod", target="b", requester=signed("ann"), policy=prod()
        )
        assert run.step_names == ["check", "deploy"]
        executor(store, FakeClock()).abort(run.id, None, actor="ann", reason="test")


def test_a_prod_run_with_the_added_approval_resumes_with_the_same_steps(store: StateStore) -> None:
    clock = PollingClock(WEDNESDAY)
    applied: list[str] = []
    pipeline = _checked_then_deployed(applied)
    run = start_and_abandon(store, clock, pipeline)
    assert run.step_names == ["check", "approval", "deploy"]
    clock.advance(60)
    clock.on_sleep.append(lambda: decide(store, clock, run.id, "bob", approvals.Decision.APPROVED))
    final = executor(store, clock).resume(run.id, pipeline, actor="carl")
    assert final.state is RunState.SUCCEEDED and applied == ["deployed"]
