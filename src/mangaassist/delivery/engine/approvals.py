"""Approvals: people letting a waiting run go on (or stopping it), as the run's policy allows.

A step asks for an approval by returning ``Outcome.wait_for_approval`` (``runs.approval_step`` does
that for you). ``mangaassist approve RUN --as NAME [--comment]`` and ``mangaassist reject RUN --as
NAME --comment`` call ``decide``; the waiting step reads ``status`` on its next poll. The rules come
from the policy snapshot stored with the run when it started (a policy edit does not change the
rules of a run in flight):

- only the listed ``approvers`` may decide (empty list: anyone);
- the requester may not approve their own run unless ``self_approval`` is true (false in prod);
- one person counts once; ``approvals`` distinct approvers are needed;
- a rejection stops the run (rolled back as policy says); past ``approval_timeout`` it is aborted;
- ``--override ENV.approvals`` (only where the policy's ``approval_overrides`` allows it) does not
  skip people: it replaces the approvals required by one confirmation, and the requester may not
  give it where ``self_approval`` is false (an override is itself an approval that needs another
  person where four-eyes applies).

Every decision is audited with who, when and the comment, in the same transaction.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mangaassist.delivery.engine import audit, people
from mangaassist.delivery.engine.clock import iso
from mangaassist.delivery.engine.errors import ApprovalDenied, BadRequest, NotWaitingForApproval, RunFinished
from mangaassist.delivery.engine.model import RunRecord, StepStatus, WaitFor
from mangaassist.delivery.engine.state import StateStore, approvals, steps


class Decision(StrEnum):
    APPROVED = "approved"
    """Counts towards the approvals the policy requires."""
    REJECTED = "rejected"
    """Stops the run; one rejection is enough."""


@dataclass(frozen=True)
class ApprovalRecord:
    step: str
    decision: Decision
    actor: str
    comment: str
    at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "decision": self.decision.value,
            "actor": self.actor,
            "comment": self.comment,
            "at": self.at,
        }


@dataclass(frozen=True)
class ApprovalStatus:
    """Where the approval of one step stands, for the waiting step to act on."""

    needed: int
    approvers: tuple[str, ...]
    rejected_by: ApprovalRecord | None = None
    deadline: str | None = None
    timed_out: bool = False
    records: list[ApprovalRecord] = field(default_factory=list)

    @property
    def granted(self) -> bool:
        return self.rejected_by is None and len(self.approvers) >= self.needed


def records(conn: Connection, run_id: str) -> list[ApprovalRecord]:
    rows = conn.execute(
        sa.select(approvals).where(approvals.c.run_id == run_id).order_by(approvals.c.id)
    ).mappings()
    return [
        ApprovalRecord(r["step"], Decision(r["decision"]), r["actor"], r["comment"], r["at"]) for r in rows
    ]


def identity(name: str) -> str:
    """Who a name means, for every comparison of people (requester, approvers, the allowed list):
    Unicode NFKC, case-folded, inner whitespace collapsed, trimmed. "Alice ", "ALICE" and "alice" are
    one person; the name is recorded as it was given."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def status(
    conn: Connection, run: RunRecord, step: str, waiting_since: datetime, now: datetime
) -> ApprovalStatus:
    needed = int(run.policy.get("approvals", 0))
    if needed > 0 and overridden(run):
        needed = 1  # the override stands in for the approvals; one other person confirms it
    timeout = float(run.policy.get("approval_timeout_s", 86400.0))
    mine = [r for r in records(conn, run.id) if r.step == step]
    rejected = next((r for r in mine if r.decision is Decision.REJECTED), None)
    people: dict[str, str] = {}
    for r in mine:
        if r.decision is Decision.APPROVED:
            people.setdefault(identity(r.actor), r.actor)
    approvers = tuple(people.values())
    deadline = waiting_since + timedelta(seconds=timeout)
    return ApprovalStatus(
        needed=needed,
        approvers=approvers,
        rejected_by=rejected,
        deadline=iso(deadline),
        timed_out=now >= deadline,
        records=mine,
    )


def overridden(run: RunRecord) -> bool:
    """Whether the run started with ``--override ENV.approvals`` (where the policy allows it)."""
    return f"{run.environment}.approvals" in run.overrides


def waiting_step(conn: Connection, run_id: str) -> str | None:
    rows = conn.execute(
        sa.select(steps.c.name, steps.c.detail).where(
            steps.c.run_id == run_id, steps.c.status == StepStatus.WAITING.value
        )
    ).all()
    for name, detail in rows:
        if f'"wait_for":"{WaitFor.APPROVAL.value}"' in (detail or ""):
            return str(name)
    return None


def decide(
    store: StateStore,
    conn: Connection,
    run: RunRecord,
    *,
    decision: Decision,
    actor: str | people.Actor,
    comment: str,
    now: datetime,
) -> ApprovalRecord:
    """Check that ``actor`` may decide on ``run`` now, record it and audit it (caller's transaction).
    The run's policy must accept how ``actor`` was identified (a plain name is free text)."""
    deciding = people.as_actor(actor)
    actor = deciding.name.strip()
    if not actor:
        raise BadRequest("--as NAME is required: say who approves")
    if run.state.final:
        raise RunFinished(
            f"run {run.id} already {run.state.value.replace('_', ' ')}; there is nothing to {_verb(decision)}"
        )
    step = waiting_step(conn, run.id)
    if step is None:
        raise NotWaitingForApproval(
            f"run {run.id} is not waiting for an approval (it is {run.effective_state.value})"
        )
    people.check_source(deciding, run.policy, "approver")
    allowed = tuple(run.policy.get("approvers") or ())
    env = run.environment
    who = identity(actor)
    if allowed and who not in {identity(a) for a in allowed}:
        raise ApprovalDenied(
            f"{actor} may not {_verb(decision)} {env} runs (approvers: {', '.join(allowed)})"
        )
    if decision is Decision.APPROVED:
        if who == identity(run.requester) and not run.policy.get("self_approval", True):
            raise ApprovalDenied(
                f"{actor} started run {run.id} and may not approve it in {env} "
                f"(policy: self_approval is false); ask someone else"
            )
        previous = [r for r in records(conn, run.id) if r.step == step and identity(r.actor) == who]
        if any(r.decision is Decision.APPROVED for r in previous):
            raise ApprovalDenied(
                f"{actor} already approved run {run.id}; approvals must come from different people"
            )
    elif not comment.strip():
        raise BadRequest("a rejection needs --comment TEXT saying why")
    record = ApprovalRecord(step, decision, actor, comment, iso(now))
    conn.execute(approvals.insert().values(run_id=run.id, **{k: v for k, v in record.as_dict().items()}))
    audit.append(
        store,
        conn,
        at=now,
        kind=f"approval.{decision.value}",
        actor=actor,
        run_id=run.id,
        detail={
            "step": step,
            "comment": comment,
            "requester": run.requester,
            "environment": env,
            "identity": {"source": deciding.source, "evidence": deciding.evidence},
        },
    )
    return record


def _verb(decision: Decision) -> str:
    return "approve" if decision is Decision.APPROVED else "reject"
