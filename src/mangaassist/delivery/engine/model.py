"""What the engine persists about a run, and the states it moves through.

The enums here are the vocabulary of ``runs list``, ``runs show``, the audit log and the JSON the CLI
prints. Records are read-only snapshots loaded from the state store (``state.py``); the executor
(``runs.py``) is the only writer of run and step rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    """Where a run is in its life. Stored in ``runs.state`` except ``INTERRUPTED`` (derived)."""

    RUNNING = "running"
    """A process owns the run (it holds an unexpired lease) and is executing a step."""
    WAITING = "waiting"
    """A step is waiting (for a time, for more data or for an approval); its process polls it."""
    INTERRUPTED = "interrupted"
    """Never stored: shown for a RUNNING or WAITING run whose process is gone (its lease expired or its
    PID no longer exists on this host). ``runs resume ID`` continues it; ``runs abort ID`` ends it."""
    SUCCEEDED = "succeeded"
    """Every step is done. Final."""
    FAILED = "failed"
    """A step failed and the run was not rolled back (policy says rollback is manual, or the rollback
    itself failed). Final: the environment may need a look."""
    ROLLED_BACK = "rolled_back"
    """A step failed and the pipeline's rollback ran to completion. Final."""
    ABORTED = "aborted"
    """Stopped on purpose: ``runs abort``, a rejection, an approval timeout, or superseded by a newer run
    after its lease expired. The rollback ran if the pipeline has one. Final."""

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.ROLLED_BACK, RunState.ABORTED})


class StepStatus(StrEnum):
    """Where one step is. Stored in ``steps.status``."""

    PENDING = "pending"
    """Not started yet."""
    RUNNING = "running"
    """Started; if the run is interrupted here the step runs again on resume, and its effects that
    were recorded (``StepContext.effect``) are not applied again."""
    WAITING = "waiting"
    """Returned WAITING; polled again until it is done or failed."""
    DONE = "done"
    """Finished; never executed again for this run."""
    FAILED = "failed"
    """Returned FAILED (or raised); the run stopped here."""
    SKIPPED = "skipped"
    """Not executed because the run ended (failed, aborted) before reaching it."""


class StepOutcome(StrEnum):
    """What a step function returns (in an ``Outcome``)."""

    DONE = "done"
    """The step did its work; the run moves to the next step."""
    WAITING = "waiting"
    """Not yet: waiting for a time, for more data or for an approval. The step is called again later."""
    FAILED = "failed"
    """The step cannot succeed; the reason says why. The run stops (and rolls back if policy says so)."""


class WaitFor(StrEnum):
    """What a WAITING step waits for."""

    TIME = "time"
    """A moment (``Outcome.until``): bake time, a deploy window."""
    DATA = "data"
    """More observations (a judge said INCONCLUSIVE)."""
    APPROVAL = "approval"
    """People: ``mangaassist approve RUN --as NAME``."""


@dataclass(frozen=True)
class StepRecord:
    """One row of ``steps``."""

    run_id: str
    index: int
    name: str
    status: StepStatus
    attempts: int
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    reason: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    """The outcome's detail: ``verdict``, ``numbers``, ``wait_for``, ``until``, free-form facts."""
    output: dict[str, Any] = field(default_factory=dict)
    """What the step passes on to later steps (``StepContext.outputs``)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "status": self.status.value,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "reason": self.reason,
            "detail": self.detail,
            "output": self.output,
        }


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``, with the derived ``effective_state``."""

    id: str
    pipeline: str
    environment: str
    target: str
    requester: str
    state: RunState
    params: dict[str, Any]
    step_names: list[str]
    created_at: str
    updated_at: str
    finished_at: str | None
    owner: str | None
    """``pid@host`` of the process that drives the run, while it lives."""
    owner_pid: int | None
    owner_host: str | None
    lease_expires_at: str | None
    reason: str | None
    overrides: dict[str, str]
    """Policy rules overridden for this run, each with its recorded reason."""
    stopping: dict[str, Any] | None
    """Set when the run has begun to stop (a step failed, an abort was asked): the final state it is
    heading to, why, who asked and whether to roll back. A run interrupted while stopping resumes its
    rollback, not its steps."""
    policy: dict[str, Any]
    """The approval and rollback rules in force when the run started (``EnvironmentPolicy.as_dict``)."""
    effective_state: RunState

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "environment": self.environment,
            "target": self.target,
            "requester": self.requester,
            "state": self.effective_state.value,
            "stored_state": self.state.value,
            "params": self.params,
            "steps": self.step_names,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "owner": self.owner,
            "lease_expires_at": self.lease_expires_at,
            "reason": self.reason,
            "overrides": self.overrides,
            "policy": self.policy,
        }
