"""Runs: a pipeline's named steps executed one after another, durably, by one executor.

A pipeline is data (``Pipeline``: ordered ``Step``s and an optional rollback). ``Executor`` is the
only thing that moves a run forward. After every transition it persists the run and the step in
one transaction, together with the audit entry that records it, so a process killed at any point
leaves a state that ``resume`` continues from:

- a step marked DONE is never executed again for that run;
- a step that was RUNNING when the process died runs again, but each effect it applied through
  ``StepContext.effect`` is recorded (a marker keyed by run, step and effect name) and not applied
  again; the apply function receives an idempotency key so the target can deduplicate the one
  window the marker cannot close (applied, then killed before the marker committed);
- a run that was stopping (a step failed, an abort was asked) resumes its rollback, not its steps;
- before every step (and every poll of a waiting step, and on resume) the run's deploy windows and
  freezes are checked again: while one blocks (and was not overridden at start) the step does not
  run, it waits (``WaitFor.TIME``) until the block ends. An effect about to be applied inside a step
  is checked too, so no effect is ever applied during a freeze or outside the windows;
- every write, and every effect before it is applied, checks this process still holds the run's
  lease and its fencing token (``locks``), so a process whose run was taken over changes nothing.

Who calls it: ``mangaassist runs ...`` and ``mangaassist release`` (through the CLI), pipelines'
tests, and the crash tests which kill it with SIGKILL at every boundary that ``observer`` reports.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.engine import approvals, audit, locks, people
from mangaassist.delivery.engine.clock import Clock, SystemClock, iso, parse_iso
from mangaassist.delivery.engine.errors import (
    LeaseLost,
    PipelineChanged,
    PolicyBlocked,
    RunFinished,
    RunIsLive,
)
from mangaassist.delivery.engine.model import (
    RunRecord,
    RunState,
    StepOutcome,
    StepRecord,
    StepStatus,
    WaitFor,
)
from mangaassist.delivery.engine.policy import Block, EnvironmentPolicy
from mangaassist.delivery.engine.state import (
    StateStore,
    checkpoints,
    dumps,
    effects,
    loads,
    owner_gone,
    runs,
    steps,
)

ROLLBACK = "rollback"
"""The name effects and audit entries of a pipeline's rollback are recorded under."""


@dataclass(frozen=True)
class Outcome:
    """What a step returns. Build it with ``done``, ``failed``, ``wait`` or ``wait_for_approval``."""

    kind: StepOutcome
    reason: str = ""
    output: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict | None = None
    numbers: dict[str, float] = field(default_factory=dict)
    wait_for: WaitFor | None = None
    until: datetime | None = None
    abort: bool = False
    """For FAILED: end the run as ABORTED (a rejection, an approval timeout) rather than FAILED."""

    @classmethod
    def done(
        cls,
        output: dict[str, Any] | None = None,
        *,
        detail: dict[str, Any] | None = None,
        verdict: Verdict | None = None,
        numbers: dict[str, float] | None = None,
    ) -> Outcome:
        return cls(
            StepOutcome.DONE, output=output or {}, detail=detail or {}, verdict=verdict, numbers=numbers or {}
        )

    @classmethod
    def failed(
        cls,
        reason: str,
        *,
        detail: dict[str, Any] | None = None,
        verdict: Verdict | None = None,
        numbers: dict[str, float] | None = None,
        abort: bool = False,
    ) -> Outcome:
        return cls(
            StepOutcome.FAILED,
            reason=reason,
            detail=detail or {},
            verdict=verdict,
            numbers=numbers or {},
            abort=abort,
        )

    @classmethod
    def wait(cls, reason: str, *, for_: WaitFor = WaitFor.TIME, until: datetime | None = None) -> Outcome:
        return cls(StepOutcome.WAITING, reason=reason, wait_for=for_, until=until)

    @classmethod
    def wait_for_approval(cls, reason: str) -> Outcome:
        return cls(StepOutcome.WAITING, reason=reason, wait_for=WaitFor.APPROVAL)

    def recorded_detail(self) -> dict[str, Any]:
        detail = dict(self.detail)
        if self.verdict is not None:
            detail["verdict"] = self.verdict.value
        if self.numbers:
            detail["numbers"] = self.numbers
        if self.wait_for is not None:
            detail["wait_for"] = self.wait_for.value
        if self.until is not None:
            detail["until"] = iso(self.until)
        return detail


StepFn = Callable[["StepContext"], Outcome]


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFn
    description: str = ""
    changes: bool = True
    """Whether the step changes what users get or what the environment runs. The engine puts the
    approvals an environment requires before the first step that does (``required_approval``):
    building, testing, gating, diffing are ``changes=False``."""
    approves: bool = False
    """An approval step (``approval_step``)."""
    observes: bool = False
    """The step only looks at what the steps before it changed, live (a verification through the
    served site, a load test of the new revision): a dry run, which changes nothing, skips it."""


@dataclass(frozen=True)
class Pipeline:
    """A named, ordered list of steps, and what undoes them when a run fails or is aborted."""

    name: str
    steps: tuple[Step, ...]
    rollback: StepFn | None = None
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    """What the pipeline was built from; stored with each run so ``resume`` can build it again."""
    inline_approval: bool = False
    """The pipeline asks for the approvals itself, inside a step (CD-01's rollout phases, before
    the traffic passes the policy's ``max_canary_weight_before_approval``)."""
    restores: bool = False
    """A rollback pipeline: it puts back a release that was approved when it shipped; no approval is
    added (an incident must not wait for a second person)."""
    close: Callable[[], None] | None = None
    """Releases what the pipeline object holds in memory (its run's platform clients); the executor
    calls it when it stops driving the run. What it closes is made again if the run is driven later."""

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


@dataclass(frozen=True)
class ProgressEvent:
    """What the executor tells a progress display (Rich spinner, plain lines, nothing)."""

    kind: str
    """``step.started``, ``step.progress``, ``step.waiting``, ``step.done``, ``step.failed``,
    ``rollback.started``, ``rollback.done``, ``run.finished``."""
    run_id: str
    step: str | None = None
    message: str = ""
    fraction: float | None = None


Reporter = Callable[[ProgressEvent], None]
Observer = Callable[[str], None]
"""Called at every boundary (``step:apply:started``, ``step:apply:done``...); the crash tests kill there."""


def _set_run_state(conn: Connection, run_id: str, state: RunState, now: datetime) -> None:
    """Move a run to ``state`` inside the caller's transaction (which also appends its audit entry)."""
    conn.execute(runs.update().where(runs.c.id == run_id).values(state=state.value, updated_at=iso(now)))


class StepContext:
    """What a step sees of its run, and the only way it should apply an effect (``effect``)."""

    def __init__(
        self,
        executor: Executor,
        run: RunRecord,
        step: str,
        attempt: int,
        waiting_since: datetime | None,
        outputs: dict[str, dict[str, Any]],
    ) -> None:
        self._executor = executor
        self.run = run
        self.step = step
        self.attempt = attempt
        self.waiting_since = waiting_since
        self.outputs = outputs

    @property
    def params(self) -> dict[str, Any]:
        return self.run.params

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and resumes of this step of this run."""
        return f"{self.run.id}/{self.step}"

    def now(self) -> datetime:
        return self._executor.clock.now()

    def sleep(self, seconds: float) -> None:
        self._executor.clock.sleep(seconds)

    def effect(self, name: str, apply: Callable[[str], Any]) -> Any:
        """Apply a change to the world at most once per run: ``apply(key)`` then record a marker.

        If the marker exists (an earlier attempt applied it), return its recorded result without
        calling ``apply``. ``key`` is the idempotency key the target must deduplicate on, which
        closes the window between applying and recording.
        """
        return self._executor._effect(self, name, apply)

    def checkpoint(self, label: str) -> None:
        """Report a boundary inside the step (for observers and crash tests)."""
        self._executor._observe(f"step:{self.step}:{label}")

    def saved_checkpoint(self, name: str) -> Any:
        """The value last saved under ``name`` by this step of this run (any attempt), or None."""
        return self._executor._checkpoint(self, name)

    def save_checkpoint(self, name: str, value: Any) -> None:
        """Record where this step is inside its work (JSON), fenced like an effect: a process whose
        lease was taken over raises ``LeaseLost`` here and records nothing. A step that runs again
        after a crash starts from what ``saved_checkpoint`` returns."""
        self._executor._save_checkpoint(self, name, value)

    def progress(self, message: str, fraction: float | None = None) -> None:
        self._executor._report(ProgressEvent("step.progress", self.run.id, self.step, message, fraction))

    def last_output(self, step: str) -> tuple[str, dict[str, Any]] | None:
        """The output of ``step`` in the newest succeeded run of this run's pipeline and environment,
        with that run's id; None if there is none (``StateStore.last_output``). What CD-02 diffs
        against: the templates its last successful run applied."""
        store = self._executor.store
        with store.transaction() as conn:
            return store.last_output(conn, self.now(), self.run.pipeline, self.run.environment, step)

    def approval(self) -> approvals.ApprovalStatus:
        with self._executor.store.transaction() as conn:
            return approvals.status(conn, self.run, self.step, self.waiting_since or self.now(), self.now())


def approval_step(
    name: str = "approval", description: str = "wait for the approvals policy requires"
) -> Step:
    """A step that passes when the run's policy is satisfied: enough approvals, none rejecting."""

    def gate(ctx: StepContext) -> Outcome:
        rule = f"{ctx.run.environment}.approvals"
        override = (
            {"overridden": rule, "reason": ctx.run.overrides[rule]} if rule in ctx.run.overrides else {}
        )
        status = ctx.approval()
        if status.needed == 0:
            return Outcome.done(detail={"approvals_required": 0, **override})
        stop = approval_stop(status)
        if stop is not None:
            return stop
        if status.granted:
            return Outcome.done(
                {"approved_by": list(status.approvers)},
                detail={"approved_by": list(status.approvers), **override},
            )
        missing = status.needed - len(status.approvers)
        return Outcome.wait_for_approval(
            f"waiting for {missing} approval(s) until {status.deadline}: "
            f"mangaassist approve {ctx.run.id} --as NAME"
        )

    return Step(name, gate, description, changes=False, approves=True)


REQUIRED_APPROVAL = "approval"
"""The name of the approval step the engine adds (``required_approval``)."""


def required_approval(pipeline: Pipeline, approvals: int) -> Pipeline:
    """``pipeline`` as the engine runs it where the policy requires ``approvals``: with an approval
    step before its first step that changes anything, unless it has one of its own, asks for the
    approvals inline, or restores a previous release. Deterministic: a resumed run gets the same
    steps (the run records the step names and the policy it started with)."""
    if (
        approvals <= 0
        or pipeline.inline_approval
        or pipeline.restores
        or any(s.approves for s in pipeline.steps)
    ):
        return pipeline
    first = next((i for i, s in enumerate(pipeline.steps) if s.changes), None)
    if first is None:
        return pipeline
    gate = approval_step(REQUIRED_APPROVAL, "approval the policy requires before the first change")
    steps = (*pipeline.steps[:first], gate, *pipeline.steps[first:])
    return dataclasses.replace(pipeline, steps=steps)


def approval_stop(status: approvals.ApprovalStatus) -> Outcome | None:
    """The outcome that ends an approval wait without approval: a rejection, or the timeout."""
    if status.rejected_by is not None:
        who = status.rejected_by
        return Outcome.failed(f"rejected by {who.actor}: {who.comment}", abort=True)
    if not status.granted and status.timed_out:
        return Outcome.failed(
            f"approval timed out at {status.deadline} with {len(status.approvers)}/{status.needed} approvals",
            abort=True,
        )
    return None


class _Deferred(BaseException):
    """Raised from ``StepContext.effect`` when a policy rule blocks now: the step stops, applies
    nothing, and runs again from its start once the block ends (its recorded effects are not applied
    again). A ``BaseException`` so that a step's ``except Exception`` cannot swallow it."""

    def __init__(self, blocking: list[Block], until: datetime | None) -> None:
        super().__init__(blocking[0].rule)
        self.blocking = blocking
        self.until = until


def new_run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


class Executor:
    """Starts, drives, resumes and aborts runs. The only writer of run and step state."""

    def __init__(
        self,
        store: StateStore,
        *,
        clock: Clock | None = None,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        heartbeat: bool = True,
        reporter: Reporter | None = None,
        observer: Observer | None = None,
        owner: locks.Owner | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.heartbeat = heartbeat
        self.reporter = reporter
        self.observer = observer
        self.owner = owner or locks.Owner.me()
        self._tokens: dict[str, str] = {}
        """run id -> the fencing token of the lease this executor took on it."""

    # -- public operations -----------------------------------------------------------------------

    def start(
        self,
        pipeline: Pipeline,
        *,
        environment: str,
        target: str,
        requester: str | people.Actor,
        policy: EnvironmentPolicy,
        overrides: dict[str, str] | None = None,
        also_lock: Sequence[str] = (),
    ) -> RunRecord:
        """Check policy, take the (environment, target) lock and record the run, all or nothing.

        ``requester``: who asks, with how they were identified (a plain name is free text); the
        policy's ``identities`` must accept it (``people.check_source``).
        ``also_lock``: more targets the run holds until it ends (CD-07 holds the app's, so that no
        app deploy runs during a migration and no migration during an app deploy)."""
        asking = people.as_actor(requester)
        people.check_source(asking, policy.as_dict(), "requester")
        requester = asking.name
        overrides = dict(overrides or {})
        policy.check_overrides(overrides)
        pipeline = required_approval(pipeline, policy.approvals)
        now = self.clock.now()
        blocking = [b for b in policy.blocks(now) if b.rule not in overrides]
        if blocking:
            with self.store.transaction() as conn:
                audit.append(
                    self.store,
                    conn,
                    at=now,
                    kind="policy.blocked",
                    actor=requester,
                    detail={
                        "environment": environment,
                        "target": target,
                        "pipeline": pipeline.name,
                        "rules": [b.rule for b in blocking],
                        "why": [b.explanation for b in blocking],
                    },
                )
            raise PolicyBlocked(blocking[0].rule, blocking[0].explanation)
        run_id = new_run_id()
        token = locks.new_token()
        with self.store.transaction() as conn:
            conn.execute(
                runs.insert().values(
                    id=run_id,
                    pipeline=pipeline.name,
                    environment=environment,
                    target=target,
                    requester=requester,
                    state=RunState.RUNNING.value,
                    params=dumps(pipeline.params),
                    step_names=dumps(pipeline.step_names),
                    created_at=iso(now),
                    updated_at=iso(now),
                    finished_at=None,
                    owner=self.owner.label,
                    owner_pid=self.owner.pid,
                    owner_host=self.owner.host,
                    lease_expires_at=iso(now + timedelta(seconds=self.lease_seconds)),
                    lease_token=token,
                    reason=None,
                    overrides=dumps(overrides),
                    stopping=None,
                    policy=dumps(policy.as_dict()),
                )
            )
            conn.execute(
                steps.insert(),
                [
                    {
                        "run_id": run_id,
                        "idx": i,
                        "name": s.name,
                        "status": StepStatus.PENDING.value,
                        "attempts": 0,
                        "detail": "{}",
                        "output": "{}",
                    }
                    for i, s in enumerate(pipeline.steps)
                ],
            )
            for held in dict.fromkeys((target, *also_lock)):
                locks.acquire(
                    self.store,
                    conn,
                    environment=environment,
                    target=held,
                    run_id=run_id,
                    requester=requester,
                    now=now,
                )
            audit.append(
                self.store,
                conn,
                at=now,
                kind="run.started",
                actor=requester,
                run_id=run_id,
                detail={
                    "pipeline": pipeline.name,
                    "environment": environment,
                    "target": target,
                    "steps": pipeline.step_names,
                    "params": audit.redact_params(pipeline.params),
                    "owner": self.owner.label,
                    "policy": policy.source,
                    "identity": {"source": asking.source, "evidence": asking.evidence},
                },
            )
            for rule, reason in overrides.items():
                audit.append(
                    self.store,
                    conn,
                    at=now,
                    kind="policy.override",
                    actor=requester,
                    run_id=run_id,
                    detail={"rule": rule, "reason": reason},
                )
            record = self.store.run(conn, run_id, now)
        self._tokens[run_id] = token
        self._observe("run:created")
        return record

    def run(self, pipeline: Pipeline, **start: Any) -> RunRecord:
        """``start`` then ``drive`` to a final state."""
        record = self.start(pipeline, **start)
        return self.drive(record.id, pipeline)

    def resume(self, run_id: str, pipeline: Pipeline, *, actor: str) -> RunRecord:
        """Take over an interrupted run and drive it to a final state."""
        now = self.clock.now()
        with self.store.transaction() as conn:
            run = self.store.run(conn, run_id, now, for_update=True)
            if run.state.final:
                raise RunFinished(
                    f"run {run_id} already {run.state.value.replace('_', ' ')}; nothing to resume"
                )
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().one()
            if run.owner != self.owner.label and not owner_gone(row, now):
                raise RunIsLive(
                    f"run {run_id} is being driven by process {run.owner} "
                    f"(lease until {run.lease_expires_at}); "
                    "resume it after that process stops, or `mangaassist runs abort` it"
                )
            pipeline = required_approval(pipeline, int(run.policy.get("approvals", 0)))
            if run.step_names != pipeline.step_names:
                raise PipelineChanged(
                    f"run {run_id} was started with steps {run.step_names}; pipeline {pipeline.name} now has "
                    f"{pipeline.step_names}. Abort it (`mangaassist runs abort {run_id}`) and start a new run"
                )
            self._tokens[run_id] = locks.take(conn, run_id, self.owner, now, self.lease_seconds)
            audit.append(
                self.store,
                conn,
                at=now,
                kind="run.resumed",
                actor=actor,
                run_id=run_id,
                detail={"previous_owner": run.owner, "owner": self.owner.label},
            )
        self._observe("run:resumed")
        return self.drive(run_id, pipeline)

    def abort(self, run_id: str, pipeline: Pipeline | None, *, actor: str, reason: str) -> RunRecord:
        """Stop a run safely: roll back (if the pipeline has a rollback) and release its lock.

        A run driven by a live process is asked to stop: that process rolls back after its current
        step. An interrupted run is taken over and stopped here.
        """
        now = self.clock.now()
        stopping = {
            "state": RunState.ABORTED.value,
            "reason": f"aborted by {actor}: {reason}",
            "rollback": True,
        }
        with self.store.transaction() as conn:
            run = self.store.run(conn, run_id, now, for_update=True)
            if run.state.final:
                raise RunFinished(
                    f"run {run_id} already {run.state.value.replace('_', ' ')}; nothing to abort"
                )
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().one()
            live = run.owner != self.owner.label and not owner_gone(row, now)
            if run.stopping is None:
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id)
                    .values(stopping=dumps(stopping), updated_at=iso(now))
                )
            audit.append(
                self.store,
                conn,
                at=now,
                kind="run.abort_requested",
                actor=actor,
                run_id=run_id,
                detail={"reason": reason, "live_owner": run.owner if live else None},
            )
            if live:
                return self.store.run(conn, run_id, now)
            self._tokens[run_id] = locks.take(conn, run_id, self.owner, now, self.lease_seconds)
        return self._finish(run_id, pipeline)

    def drive(self, run_id: str, pipeline: Pipeline) -> RunRecord:
        """Execute the run's remaining steps in order until it reaches a final state.

        Before each step (and each poll of a waiting step) the run's deploy windows and freezes are
        evaluated again; while one blocks, the step waits for it to end (``_gate``).
        """
        with self.store.transaction() as conn:  # the steps it started with (``required_approval``)
            started = self.store.run(conn, run_id, self.clock.now())
        pipeline = required_approval(pipeline, int(started.policy.get("approvals", 0)))
        if run_id not in self._tokens:
            # Driving a run this executor did not start or take: adopt the lease if this process
            # holds it (same pid@host); otherwise the first renew raises LeaseLost.
            with self.store.transaction() as conn:
                token = locks.current_token(conn, run_id, self.owner)
            if token is not None:
                self._tokens[run_id] = token
        noted: set[tuple[str, tuple[str, ...]]] = set()
        with ExitStack() as stack:
            if pipeline.close is not None:
                stack.callback(pipeline.close)
            beat = None
            if self.heartbeat:
                beat = stack.enter_context(
                    locks.Heartbeat(
                        self.store,
                        run_id,
                        self.owner,
                        self.lease_seconds,
                        self.clock,
                        self._tokens.get(run_id),
                    )
                )
            while True:
                if beat is not None and beat.lost.is_set():
                    raise LeaseLost(
                        f"run {run_id}: this process lost its lease; another process took the run over"
                    )
                now = self.clock.now()
                with self.store.transaction() as conn:
                    run = self.store.run(conn, run_id, now)
                    if run.state.final:
                        return run
                    self._renew(conn, run_id, now)
                    records = self.store.steps(conn, run_id)
                if run.stopping is not None:
                    return self._finish(run_id, pipeline)
                pending = next((r for r in records if r.status is not StepStatus.DONE), None)
                if pending is None:
                    return self._succeed(run)
                step = pipeline.step(pending.name)
                if self._gate(run, step, pending, noted):
                    continue
                self._execute(run, step, pending, records)

    # -- the lease -------------------------------------------------------------------------------

    def _renew(self, conn: Connection, run_id: str, now: datetime) -> None:
        """Renew this process's lease inside ``conn``'s transaction, or raise ``LeaseLost``."""
        locks.renew(conn, run_id, self.owner, now, self.lease_seconds, self._tokens.get(run_id))

    # -- policy, again at every step -------------------------------------------------------------

    def _blocking(self, run: RunRecord, now: datetime) -> tuple[list[Block], datetime | None]:
        """The run's deploy-time rules (from its policy snapshot) that block now, and when they end."""
        policy = EnvironmentPolicy.from_snapshot(run.policy, run.environment, run.pipeline)
        blocking = [b for b in policy.blocks(now) if b.rule not in run.overrides]
        if not blocking:
            return [], None
        return blocking, policy.clear_at(now, run.overrides)

    def _gate(
        self, run: RunRecord, step: Step, record: StepRecord, noted: set[tuple[str, tuple[str, ...]]]
    ) -> bool:
        """Hold the step while a deploy window or freeze blocks: True when it must not run now.

        A step that has not started (or must run again) is marked WAITING for time, with the rule
        and until when, and that is audited (``policy.blocked``). A step already waiting keeps its
        row (an approval step still takes approvals) but is not polled: only a rejection or the
        approval timeout can end it during the block, as they would without one.
        """
        now = self.clock.now()
        blocking, until = self._blocking(run, now)
        if not blocking:
            return False
        rules = [b.rule for b in blocking]
        started_wait = record.status is StepStatus.WAITING and "blocked_by" not in record.detail
        if started_wait and record.detail.get("wait_for") == WaitFor.APPROVAL.value:
            with self.store.transaction() as conn:
                since_text = conn.execute(
                    sa.select(steps.c.waiting_since).where(
                        steps.c.run_id == run.id, steps.c.idx == record.index
                    )
                ).scalar_one()
                since = parse_iso(since_text) if since_text else now
                stop = approval_stop(approvals.status(conn, run, step.name, since, now))
            if stop is not None:
                self._record(run, step, record, stop, since)
                return True
        key = (step.name, tuple(rules))
        if started_wait:
            if key not in noted:
                with self.store.transaction() as conn:
                    self._renew(conn, run.id, now)
                    self._audit_block(conn, run, step, blocking, until, now)
        elif record.status is not StepStatus.WAITING or record.detail.get("blocked_by") != rules:
            self._hold(run, step, record, blocking, until, now)
        if key not in noted:
            noted.add(key)
            self._observe(f"step:{step.name}:blocked")
            self._report(ProgressEvent("step.blocked", run.id, step.name, _block_reason(blocking, until)))
        pause = self.poll_seconds
        if until is not None:
            pause = max(0.0, min(pause, (until - now).total_seconds()))
        self.clock.sleep(pause)
        return True

    def _hold(
        self,
        run: RunRecord,
        step: Step,
        record: StepRecord,
        blocking: list[Block],
        until: datetime | None,
        now: datetime,
    ) -> None:
        """Persist a policy wait on a step that has not started (or will run again)."""
        detail: dict[str, Any] = {"wait_for": WaitFor.TIME.value, "blocked_by": [b.rule for b in blocking]}
        if until is not None:
            detail["until"] = iso(until)
        with self.store.transaction() as conn:
            self._renew(conn, run.id, now)
            conn.execute(
                steps.update()
                .where(steps.c.run_id == run.id, steps.c.idx == record.index)
                .values(
                    status=StepStatus.WAITING.value,
                    waiting_since=iso(now),
                    reason=_block_reason(blocking, until),
                    detail=dumps(detail),
                )
            )
            _set_run_state(conn, run.id, RunState.WAITING, now)
            self._audit_block(conn, run, step, blocking, until, now)

    def _audit_block(
        self,
        conn: Connection,
        run: RunRecord,
        step: Step,
        blocking: list[Block],
        until: datetime | None,
        now: datetime,
    ) -> None:
        audit.append(
            self.store,
            conn,
            at=now,
            kind="policy.blocked",
            actor=self.owner.label,
            run_id=run.id,
            detail={
                "environment": run.environment,
                "target": run.target,
                "pipeline": run.pipeline,
                "step": step.name,
                "rules": [b.rule for b in blocking],
                "why": [b.explanation for b in blocking],
                "until": iso(until) if until is not None else None,
            },
        )

    # -- one step --------------------------------------------------------------------------------

    def _execute(self, run: RunRecord, step: Step, record: StepRecord, records: list[StepRecord]) -> None:
        now = self.clock.now()
        attempt = record.attempts
        waiting_since = None
        if record.status is StepStatus.WAITING and "blocked_by" not in record.detail:
            with self.store.transaction() as conn:
                waiting_since_text = conn.execute(
                    sa.select(steps.c.waiting_since).where(
                        steps.c.run_id == run.id, steps.c.idx == record.index
                    )
                ).scalar_one()
            waiting_since = parse_iso(waiting_since_text) if waiting_since_text else now
        else:
            attempt += 1
            with self.store.transaction() as conn:
                self._renew(conn, run.id, now)
                conn.execute(
                    steps.update()
                    .where(steps.c.run_id == run.id, steps.c.idx == record.index)
                    .values(
                        status=StepStatus.RUNNING.value,
                        attempts=attempt,
                        started_at=record.started_at or iso(now),
                        waiting_since=None,
                        reason=None,
                        detail="{}",
                    )
                )
                _set_run_state(conn, run.id, RunState.RUNNING, now)
                audit.append(
                    self.store,
                    conn,
                    at=now,
                    kind="step.started",
                    actor=self.owner.label,
                    run_id=run.id,
                    detail={"step": step.name, "attempt": attempt},
                )
            record = replace(
                record,
                status=StepStatus.RUNNING,
                attempts=attempt,
                started_at=record.started_at or iso(now),
                reason=None,
                detail={},
            )
            self._observe(f"step:{step.name}:started")
            self._report(ProgressEvent("step.started", run.id, step.name, step.description or step.name))
        outputs = {r.name: r.output for r in records if r.status is StepStatus.DONE}
        ctx = StepContext(self, run, step.name, attempt, waiting_since, outputs)
        try:
            outcome = step.run(ctx)
        except LeaseLost:
            raise
        except _Deferred as deferred:  # a window closed or a freeze began inside the step
            self._hold(run, step, record, deferred.blocking, deferred.until, self.clock.now())
            return
        except Exception as exc:  # a step that raises has failed; the run must still stop cleanly
            outcome = Outcome.failed(f"{type(exc).__name__}: {exc}")
        self._record(run, step, record, outcome, waiting_since)

    def _record(
        self, run: RunRecord, step: Step, record: StepRecord, outcome: Outcome, waiting_since: datetime | None
    ) -> None:
        now = self.clock.now()
        where = (steps.c.run_id == run.id) & (steps.c.idx == record.index)
        detail = outcome.recorded_detail()
        if outcome.kind is StepOutcome.WAITING:
            if waiting_since is None:
                with self.store.transaction() as conn:
                    self._renew(conn, run.id, now)
                    conn.execute(
                        steps.update()
                        .where(where)
                        .values(
                            status=StepStatus.WAITING.value,
                            waiting_since=iso(now),
                            reason=outcome.reason,
                            detail=dumps(detail),
                        )
                    )
                    _set_run_state(conn, run.id, RunState.WAITING, now)
                    audit.append(
                        self.store,
                        conn,
                        at=now,
                        kind="step.waiting",
                        actor=self.owner.label,
                        run_id=run.id,
                        detail={"step": step.name, "reason": outcome.reason, **detail},
                    )
                self._observe(f"step:{step.name}:waiting")
                self._report(ProgressEvent("step.waiting", run.id, step.name, outcome.reason))
            pause = self.poll_seconds
            if outcome.until is not None:
                pause = max(0.0, min(pause, (outcome.until - now).total_seconds()))
            self.clock.sleep(pause)
            return
        started = parse_iso(record.started_at) if record.started_at else now
        duration = (now - started).total_seconds()
        with self.store.transaction() as conn:
            self._renew(conn, run.id, now)
            if outcome.kind is StepOutcome.DONE:
                conn.execute(
                    steps.update()
                    .where(where)
                    .values(
                        status=StepStatus.DONE.value,
                        finished_at=iso(now),
                        duration_s=duration,
                        reason=None,
                        detail=dumps(detail),
                        output=dumps(outcome.output),
                    )
                )
                _set_run_state(conn, run.id, RunState.RUNNING, now)
                audit.append(
                    self.store,
                    conn,
                    at=now,
                    kind="step.done",
                    actor=self.owner.label,
                    run_id=run.id,
                    detail={"step": step.name, "duration_s": round(duration, 3), **detail},
                )
            else:
                final = RunState.ABORTED if outcome.abort else RunState.FAILED
                rollback = outcome.abort or run.policy.get("rollback", "automatic") == "automatic"
                stopping = {
                    "state": final.value,
                    "reason": f"step {step.name} failed: {outcome.reason}",
                    "rollback": rollback,
                }
                conn.execute(
                    steps.update()
                    .where(where)
                    .values(
                        status=StepStatus.FAILED.value,
                        finished_at=iso(now),
                        duration_s=duration,
                        reason=outcome.reason,
                        detail=dumps(detail),
                    )
                )
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run.id)
                    .values(stopping=dumps(stopping), updated_at=iso(now))
                )
                audit.append(
                    self.store,
                    conn,
                    at=now,
                    kind="step.failed",
                    actor=self.owner.label,
                    run_id=run.id,
                    detail={
                        "step": step.name,
                        "reason": outcome.reason,
                        "duration_s": round(duration, 3),
                        **detail,
                    },
                )
        if outcome.kind is StepOutcome.DONE:
            self._observe(f"step:{step.name}:done")
            self._report(ProgressEvent("step.done", run.id, step.name, _summary(detail), 1.0))
        else:
            self._observe(f"step:{step.name}:failed")
            self._report(ProgressEvent("step.failed", run.id, step.name, outcome.reason))

    def _effect(self, ctx: StepContext, name: str, apply: Callable[[str], Any]) -> Any:
        key = f"{ctx.idempotency_key}/{name}"
        where = (effects.c.run_id == ctx.run.id) & (effects.c.step == ctx.step) & (effects.c.name == name)
        now = self.clock.now()
        with self.store.transaction() as conn:
            # Fencing: in the transaction that reads the marker, prove this process still holds the
            # lease (same owner, same token) and push it forward; LeaseLost here applies nothing.
            self._renew(conn, ctx.run.id, now)
            recorded = conn.execute(sa.select(effects.c.result).where(where)).scalar_one_or_none()
        if recorded is not None:
            return loads(recorded) if recorded != "null" else None
        if ctx.step != ROLLBACK:  # a rollback restores; it is never held by a window or freeze
            blocking, until = self._blocking(ctx.run, now)
            if blocking:
                raise _Deferred(blocking, until)
        result = apply(key)
        self._observe(f"step:{ctx.step}:effect:{name}:applied")
        now = self.clock.now()
        with self.store.transaction() as conn:
            self._renew(conn, ctx.run.id, now)  # the marker is recorded only while we still hold it
            conn.execute(
                effects.insert().values(
                    run_id=ctx.run.id,
                    step=ctx.step,
                    name=name,
                    idempotency_key=key,
                    result=dumps(result),
                    applied_at=iso(now),
                )
            )
            audit.append(
                self.store,
                conn,
                at=now,
                kind="step.effect",
                actor=self.owner.label,
                run_id=ctx.run.id,
                detail={"step": ctx.step, "effect": name, "key": key},
            )
        return result

    def _checkpoint(self, ctx: StepContext, name: str) -> Any:
        where = (
            (checkpoints.c.run_id == ctx.run.id)
            & (checkpoints.c.step == ctx.step)
            & (checkpoints.c.name == name)
        )
        with self.store.transaction() as conn:
            value = conn.execute(sa.select(checkpoints.c.value).where(where)).scalar_one_or_none()
        return None if value is None else loads(value)

    def _save_checkpoint(self, ctx: StepContext, name: str, value: Any) -> None:
        now = self.clock.now()
        where = (
            (checkpoints.c.run_id == ctx.run.id)
            & (checkpoints.c.step == ctx.step)
            & (checkpoints.c.name == name)
        )
        with self.store.transaction() as conn:
            self._renew(conn, ctx.run.id, now)
            changed = conn.execute(
                checkpoints.update().where(where).values(value=dumps(value), saved_at=iso(now))
            )
            if changed.rowcount == 0:
                conn.execute(
                    checkpoints.insert().values(
                        run_id=ctx.run.id, step=ctx.step, name=name, value=dumps(value), saved_at=iso(now)
                    )
                )

    # -- endings ---------------------------------------------------------------------------------

    def _succeed(self, run: RunRecord) -> RunRecord:
        now = self.clock.now()
        with self.store.transaction() as conn:
            self._renew(conn, run.id, now)
            self._finalize(conn, run, RunState.SUCCEEDED, None, now)
            record = self.store.run(conn, run.id, now)
        self._observe("run:finished")
        self._report(ProgressEvent("run.finished", run.id, None, RunState.SUCCEEDED.value))
        return record

    def _finish(self, run_id: str, pipeline: Pipeline | None) -> RunRecord:
        """Complete a stopping run: roll back if asked and possible, then the final state."""
        now = self.clock.now()
        with self.store.transaction() as conn:
            run = self.store.run(conn, run_id, now)
            records = self.store.steps(conn, run_id)
        stopping = run.stopping or {}
        final = RunState(stopping.get("state", RunState.ABORTED.value))
        reason = str(stopping.get("reason", ""))
        touched = any(r.status is not StepStatus.PENDING for r in records)
        rollback_fn = pipeline.rollback if pipeline is not None else None
        if stopping.get("rollback") and touched and rollback_fn is not None:
            final, reason = self._rollback(run, rollback_fn, final, reason, records)
        elif not stopping.get("rollback") and touched:
            with self.store.transaction() as conn:
                self._renew(conn, run_id, self.clock.now())
                audit.append(
                    self.store,
                    conn,
                    at=self.clock.now(),
                    kind="rollback.manual",
                    actor=self.owner.label,
                    run_id=run_id,
                    detail={"why": "policy: rollback is manual", "reason": reason},
                )
        now = self.clock.now()
        with self.store.transaction() as conn:
            self._renew(conn, run_id, now)
            self._finalize(conn, run, final, reason, now)
            record = self.store.run(conn, run_id, now)
        self._observe("run:finished")
        self._report(ProgressEvent("run.finished", run_id, None, f"{final.value}: {reason}"))
        return record

    def _rollback(
        self, run: RunRecord, rollback_fn: StepFn, final: RunState, reason: str, records: list[StepRecord]
    ) -> tuple[RunState, str]:
        self._observe("rollback:started")
        self._report(ProgressEvent("rollback.started", run.id, ROLLBACK, reason))
        with self.store.transaction() as conn:
            self._renew(conn, run.id, self.clock.now())
            audit.append(
                self.store,
                conn,
                at=self.clock.now(),
                kind="rollback.started",
                actor=self.owner.label,
                run_id=run.id,
                detail={"reason": reason},
            )
        outputs = {r.name: r.output for r in records if r.status is StepStatus.DONE}
        ctx = StepContext(self, run, ROLLBACK, 1, None, outputs)
        while True:
            try:
                outcome = rollback_fn(ctx)
            except LeaseLost:
                raise
            except Exception as exc:  # a failing rollback is reported, never hidden
                outcome = Outcome.failed(f"{type(exc).__name__}: {exc}")
            if outcome.kind is not StepOutcome.WAITING:
                break
            self.clock.sleep(self.poll_seconds)
        ok = outcome.kind is StepOutcome.DONE
        with self.store.transaction() as conn:
            self._renew(conn, run.id, self.clock.now())
            audit.append(
                self.store,
                conn,
                at=self.clock.now(),
                kind="rollback.done" if ok else "rollback.failed",
                actor=self.owner.label,
                run_id=run.id,
                detail={"reason": outcome.reason, **outcome.recorded_detail()},
            )
        self._report(
            ProgressEvent("rollback.done", run.id, ROLLBACK, "rolled back" if ok else outcome.reason)
        )
        if not ok:
            return RunState.FAILED, f"{reason}; rollback failed: {outcome.reason}"
        if final is RunState.FAILED:
            return RunState.ROLLED_BACK, reason
        return final, f"{reason} (rolled back)"

    def _finalize(
        self, conn: Connection, run: RunRecord, state: RunState, reason: str | None, now: datetime
    ) -> None:
        conn.execute(
            runs.update()
            .where(runs.c.id == run.id)
            .values(
                state=state.value,
                reason=reason,
                finished_at=iso(now),
                updated_at=iso(now),
                owner=None,
                owner_pid=None,
                owner_host=None,
                lease_expires_at=None,
                lease_token=None,
            )
        )
        conn.execute(
            steps.update()
            .where(
                steps.c.run_id == run.id,
                steps.c.status.in_([StepStatus.PENDING.value, StepStatus.WAITING.value]),
            )
            .values(status=StepStatus.SKIPPED.value)
        )
        conn.execute(
            steps.update()
            .where(steps.c.run_id == run.id, steps.c.status == StepStatus.RUNNING.value)
            .values(
                status=StepStatus.FAILED.value,
                reason="interrupted; the run stopped before this step finished",
            )
        )
        locks.release(conn, run.environment, run.target, run.id)
        audit.append(
            self.store,
            conn,
            at=now,
            kind="run.finished",
            actor=self.owner.label,
            run_id=run.id,
            detail={"state": state.value, "reason": reason},
        )

    # -- reporting -------------------------------------------------------------------------------

    def _observe(self, point: str) -> None:
        if self.observer is not None:
            self.observer(point)

    def _report(self, event: ProgressEvent) -> None:
        if self.reporter is not None:
            self.reporter(event)


def _block_reason(blocking: list[Block], until: datetime | None) -> str:
    first = blocking[0]
    more = f" (and {', '.join(b.rule for b in blocking[1:])})" if len(blocking) > 1 else ""
    when = f"waits until {iso(until)}" if until is not None else "waits until it no longer applies"
    return f"blocked by policy rule {first.rule}{more}: {first.explanation}; {when}"


def _summary(detail: dict[str, Any]) -> str:
    parts = []
    if "verdict" in detail:
        parts.append(str(detail["verdict"]))
    for key, value in (detail.get("numbers") or {}).items():
        parts.append(f"{key}={value}")
    if "approved_by" in detail:
        parts.append("approved by " + ", ".join(detail["approved_by"]))
    return " ".join(parts)
