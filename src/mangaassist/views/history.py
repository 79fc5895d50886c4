"""The engine's history as JSON-able data: what ``runs list|show --json``, ``audit --json`` and the
dashboard's pages and ``/api`` all read, so a terminal and a browser never disagree.

- ``list_runs``: the newest runs, filtered by pipeline, environment and (effective) state, each with
  its progress (``done/total current-step``) and, while it waits for people, ``awaiting_approval``;
- ``show_run``: one run with its timeline (steps, durations, verdicts, outputs), approvals, what it
  waits for, the number of its audit entries and its canary evidence over time
  (``run_with_evidence``: the same with the evidence as series, for drawing);
- ``audit_log`` and ``audit_check``: the audit entries and the chain's verification.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mangaassist.delivery.analysis.evidence import EvidenceSeries, canary_evidence
from mangaassist.delivery.engine import approvals, audit
from mangaassist.delivery.engine.errors import BadRequest
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord, StepStatus, WaitFor
from mangaassist.delivery.engine.state import StateStore

MAX_LIMIT = 1000
SCAN_FOR_STATE = 2000
"""How many of the newest runs a state filter looks through (the state is derived, not a column)."""


def progress(steps: list[StepRecord]) -> str:
    """``done/total current-step``: how far a run got."""
    done = sum(1 for s in steps if s.status is StepStatus.DONE)
    current = next((s.name for s in steps if s.status not in (StepStatus.DONE, StepStatus.SKIPPED)), "")
    return f"{done}/{len(steps)} {current}".strip()


def _awaiting(run: RunRecord, steps: list[StepRecord]) -> str | None:
    """The step waiting for people, if the run waits for an approval."""
    if run.effective_state is not RunState.WAITING:
        return None
    for s in steps:
        if s.status is StepStatus.WAITING and s.detail.get("wait_for") == WaitFor.APPROVAL.value:
            return s.name
    return None


def list_runs(
    store: StateStore,
    now: datetime,
    *,
    limit: int = 30,
    environment: str | None = None,
    pipeline: str | None = None,
    state: str | None = None,
) -> list[dict[str, Any]]:
    """The newest ``limit`` runs (newest first) matching every filter given."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit {limit}: expected 1 to {MAX_LIMIT}")
    wanted: RunState | None = None
    if state:
        try:
            wanted = RunState(state)
        except ValueError:
            known = ", ".join(s.value for s in RunState)
            raise BadRequest(f"state {state!r}: expected one of {known}") from None
    scan = SCAN_FOR_STATE if wanted is not None else limit
    out: list[dict[str, Any]] = []
    with store.transaction() as conn:
        for run in store.runs(
            conn, now, limit=scan, environment=environment or None, pipeline=pipeline or None
        ):
            if wanted is not None and run.effective_state is not wanted:
                continue
            steps = store.steps(conn, run.id)
            out.append(
                {**run.as_dict(), "progress": progress(steps), "awaiting_approval": _awaiting(run, steps)}
            )
            if len(out) >= limit:
                break
    return out


def show_run(store: StateStore, run_id: str, now: datetime) -> dict[str, Any]:
    """One run (``RunNotFound`` if there is none): the record, ``timeline`` (its steps),
    ``approvals`` (decisions so far), ``awaiting_approval`` (the step waiting for people, with
    how many approvals it needs and who approved so far), ``audit_entries`` and ``evidence``."""
    return run_with_evidence(store, run_id, now)[0]


def run_with_evidence(
    store: StateStore, run_id: str, now: datetime
) -> tuple[dict[str, Any], list[EvidenceSeries]]:
    """``show_run`` and its canary evidence as series (for drawing), from one read of the run."""
    with store.transaction() as conn:
        run = store.run(conn, run_id, now)
        steps = store.steps(conn, run_id)
        decisions = approvals.records(conn, run_id)
        entries = audit.entries(conn, run_id)
    waiting = _awaiting(run, steps)
    awaiting: dict[str, Any] | None = None
    if waiting is not None:
        mine = [d for d in decisions if d.step == waiting]
        awaiting = {
            "step": waiting,
            "needed": int(run.policy.get("approvals", 0)),
            "approved_by": [d.actor for d in mine if d.decision is approvals.Decision.APPROVED],
            "approvers": list(run.policy.get("approvers") or ()),
            "self_approval": bool(run.policy.get("self_approval", True)),
        }
    series = canary_evidence(steps)
    shown = {
        **run.as_dict(),
        "progress": progress(steps),
        "timeline": [s.as_dict() for s in steps],
        "approvals": [d.as_dict() for d in decisions],
        "awaiting_approval": awaiting,
        "audit_entries": len(entries),
        "evidence": [e.as_dict() for e in series],
    }
    return shown, series


def audit_log(store: StateStore, run_id: str | None = None) -> list[dict[str, Any]]:
    with store.transaction() as conn:
        return [e.as_dict() for e in audit.entries(conn, run_id)]


def audit_check(store: StateStore) -> dict[str, Any]:
    """``audit verify``'s result: entries, intact, head and problems."""
    with store.transaction() as conn:
        count, problems = audit.verify(conn, store)
        head = audit.head(conn)
    return {
        "entries": count,
        "intact": not problems,
        "head": {"seq": head.seq, "hash": head.hash},
        "problems": [{"seq": p.seq, "problem": p.message} for p in problems],
    }
