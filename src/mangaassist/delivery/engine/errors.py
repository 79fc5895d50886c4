"""Errors of the delivery engine, as types. Each message is fit to show a user as it is.

Raised by the engine's modules, caught by ``mangaassist.cli`` which prints the message on one line
and exits 2 (bad input: ``BadRequest`` and its kin) or 1 (the world said no: a held lock, a policy
block, a failed run).
"""

from __future__ import annotations

from dataclasses import dataclass

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError


class EngineError(MangaAssistError):
    """Base of every error the delivery engine raises on purpose."""


class BadRequest(EngineError):
    """The request cannot be honoured as asked (finished run, forbidden approver...). Nothing changed."""


class RunNotFound(NotFoundError, BadRequest):
    """No run has this id."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r} (see `mangaassist runs list`)")
        self.run_id = run_id


class RunFinished(BadRequest):
    """The run already reached a final state; it cannot be resumed, approved or aborted."""


class ApprovalDenied(BadRequest):
    """The approver may not approve or reject this run (policy, self-approval, duplicate)."""


class NotWaitingForApproval(BadRequest):
    """The run exists and is live but no step of it is waiting for an approval."""


class RunIsLive(BadRequest):
    """Another live process owns the run; resuming it now would run its steps twice."""


class PipelineChanged(BadRequest):
    """The pipeline's steps differ from those recorded when the run started; it cannot be resumed."""


class UnknownPipeline(BadRequest):
    """No pipeline is registered under this name."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds the lock of one (environment, target)."""

    environment: str
    target: str
    run_id: str
    requester: str
    acquired_at: str
    lease_expires_at: str | None


class LockHeld(EngineError):
    """Another run holds the (environment, target) lock and its lease has not expired."""

    def __init__(self, holder: LockHolder) -> None:
        expiry = f"; its lease expires at {holder.lease_expires_at}" if holder.lease_expires_at else ""
        super().__init__(
            f"{holder.environment}/{holder.target} is locked by run {holder.run_id}, "
            f"started by {holder.requester} at {holder.acquired_at}{expiry}"
        )
        self.holder = holder


class LeaseLost(EngineError):
    """This process no longer owns the run (its lease expired and someone took it over, or it was aborted)."""


class PolicyError(ConfigError):
    """The release policy file is malformed. The message names the file, the line and the field."""

    def __init__(self, path: str, line: int | None, field: str, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {field}: {problem}")
        self.path = path
        self.line = line
        self.field = field
        self.problem = problem


class UnknownEnvironment(BadRequest):
    """The environment is not declared in the release policy."""


class UnknownRule(BadRequest):
    """An ``--override`` names a rule that does not exist for this environment and pipeline."""


class PolicyBlocked(EngineError):
    """A policy rule forbids this run now; ``--override RULE --reason TEXT`` lets it pass (audited)."""

    def __init__(self, rule: str, explanation: str) -> None:
        super().__init__(
            f"blocked by policy rule {rule}: {explanation} "
            f"(to proceed anyway: --override {rule} --reason TEXT)"
        )
        self.rule = rule
        self.explanation = explanation


class StateStoreError(ConfigError):
    """The state database cannot be opened or used; the message names it (without its password)."""
