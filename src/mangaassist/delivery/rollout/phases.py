"""Judged rollout phases as engine steps: shift, judge until a decision, drain, retire, restore.

The canary machinery that CD-01 (``pipelines.app``, the chatbot) and CD-03 (``pipelines.model``,
the intent model endpoint) share. A pipeline describes what it rolls out as a ``Canary`` (the
service, the stable and candidate revisions, the judge's settings, where the pre-switch baseline
starts) and calls:

* ``run_phase``: one engine step per ``strategies.Phase``. It shifts the weight (an effect), then
  reads what both revisions served since the shift (``executor.TrafficWindow``) and consults the
  anytime-valid ``SequentialJudge`` every ``TICK_S`` for ``SLICE_S`` before handing back to the
  engine (``Outcome.wait``, polled again). PASS at the minimum sample ends the phase, FAIL (or a
  candidate that stops being healthy) puts all traffic back on the stable revision at once and fails
  the step with the verdict's numbers; an INCONCLUSIVE phase past its limit asks for an approval or
  rolls back (``strategies.decide``).
* ``retire_after_drain``: the promotion's drain: the old revision is retired once it served nothing
  unpinned for ``drain_idle_s`` (at the latest after ``drain_max_s``).
* ``restore_and_retire``: a rollback: all traffic to the stable revision (if it still lives), the
  candidate retired.

Every change goes through ``ctx.effect`` so a resumed run never applies one twice; a phase resumed
after a kill keeps judging from the cursor its shift recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mangaassist.core.errors import NotFoundError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis import ArmSample, SequentialJudge
from mangaassist.delivery.engine.model import WaitFor
from mangaassist.delivery.engine.runs import Outcome, StepContext, approval_step
from mangaassist.delivery.rollout.executor import (
    Consultation,
    TrafficWindow,
    candidate_health,
    consult,
    judge_settings,
    restore,
    shift,
)
from mangaassist.delivery.rollout.strategies import Action, Baseline, Phase, RolloutPlan, Strategy
from mangaassist.platform.compute import Compute, RevisionHealth
from mangaassist.platform.factory import compute_for

SLICE_S = 10.0
"""How long a phase step judges before handing back to the engine (which then checks aborts and
polls it again); the judge itself is consulted every ``TICK_S``."""
TICK_S = 0.2


@dataclass(frozen=True)
class Canary:
    """What a pipeline rolls out: the two revisions of one service and how they are judged."""

    compute: Compute
    service: str
    stable: str
    candidate: str
    alpha: float
    """The judge's false-rollback budget for the whole deployment."""
    judge_min_requests: int
    """The judge's "too little data" floor per revision."""
    baseline_cursor: int
    """The router's stats cursor before the first phase: where the first pre-switch baseline starts."""
    not_judged: str | None = None
    """Why the phases only shift and do not judge (a rollback to a release that was live), or None."""
    baseline: str | None = None
    """A fresh copy of the stable release that gets the candidate's share in every phase below 100%
    and is what the candidate's *latency* is judged against there (Kayenta's baseline): a revision
    with a small share of the traffic serves measurably slower than one with a large share,
    whichever code it runs, so judging a 5% candidate's latency against the 95% stable revision
    fails good releases (docs/pipelines/cd-01-app.md). Rates are judged against the stable release
    as a whole (stable and baseline revisions): they do not depend on the share, and the larger
    sample makes each candidate error weigh more. None: everything against the stable revision."""


_WINDOWS: dict[tuple[str, str], TrafficWindow] = {}
"""Windows read so far by this process, per (run, step); a resumed run re-reads from the cursor."""
_BASELINES: dict[tuple[str, str], ArmSample] = {}


def run_phase(ctx: StepContext, phase: Phase, plan: RolloutPlan, canary: Canary) -> Outcome:
    """Shift to ``phase.weight`` and judge until PASS (done), FAIL (restored, failed) or not yet (wait)."""
    compute, service, stable, candidate = canary.compute, canary.service, canary.stable, canary.candidate
    limit = float(ctx.run.policy.get("max_canary_weight_before_approval", 100))
    if plan.strategy is Strategy.CANARY and phase.weight > limit and phase.weight < 100:
        gate = approval_step(phase.name).run(ctx)
        if gate.kind.value != "done":
            return gate
    shifted = ctx.effect(
        "shift", lambda _k: shift(compute, service, candidate, stable, phase.weight, canary.baseline)
    )
    if canary.not_judged:
        return Outcome.done(
            {"start_cursor": shifted["cursor"], "cursor": shifted["cursor"], "at": time.time()},
            detail={"not_judged": canary.not_judged},
        )
    key = (ctx.run.id, ctx.step)
    window = _WINDOWS.get(key)
    if window is None:
        concurrent = phase.baseline is Baseline.CONCURRENT and phase.weight < 100
        arm = canary.baseline if concurrent else None
        cursor = int(shifted["cursor"])
        window = _WINDOWS[key] = TrafficWindow(service, candidate, stable, cursor, baseline=arm)
    pre_switch = None
    if phase.baseline is Baseline.PRE_SWITCH:
        pre_switch = _BASELINES.get(key)
        if pre_switch is None:
            start = _previous_cursor(ctx, phase, plan, canary.baseline_cursor)
            # what the comparison arm served before the switch: the baseline copy when there is
            # one (the stable revision carried no new conversations while it ran beside it)
            before = canary.baseline or stable
            pre_switch = _BASELINES[key] = stable_between(
                compute, service, candidate, before, start, int(shifted["cursor"])
            )
    judge = SequentialJudge(judge_settings(canary.alpha, canary.judge_min_requests))
    deadline = time.monotonic() + SLICE_S
    next_health = 0.0
    consultation: Consultation | None = None
    while True:
        now = time.monotonic()
        if now >= next_health:
            health, why = candidate_health(compute, service, candidate)
            next_health = now + 1.0
            if health not in (RevisionHealth.HEALTHY, RevisionHealth.DEGRADED):
                restored = ctx.effect("restore", lambda _k: restore(compute, service, stable))
                return Outcome.failed(
                    f"candidate {candidate} is {health.value if health else 'gone'} ({why}); "
                    f"all traffic back on {stable}",
                    verdict=Verdict.FAIL,
                    numbers={"restore_ms": round(float(restored.get("took_ms", 0.0)), 3)},
                )
        window.read(compute)
        elapsed = time.time() - float(shifted["at"])
        consultation = consult(judge, phase, window, elapsed, pre_switch)
        if consultation.action is Action.ROLLBACK:
            return _roll_back_now(ctx, consultation, window, compute, service, stable)
        if consultation.action is Action.PROCEED:
            return _passed(consultation, shifted, window)
        if consultation.action is Action.ASK_APPROVAL:
            status = ctx.approval()
            if status.rejected_by is not None:
                ctx.effect("restore", lambda _k: restore(compute, service, stable))
                return Outcome.failed(
                    f"rejected by {status.rejected_by.actor} after an inconclusive {phase.name}",
                    verdict=Verdict.INCONCLUSIVE,
                    numbers=consultation.numbers(),
                    detail=consultation.detail(),
                )
            if status.approvers and len(status.approvers) >= status.needed:
                passed = _passed(consultation, shifted, window, verdict="INCONCLUSIVE")
                return Outcome.done(
                    passed.output,
                    verdict=consultation.verdict,
                    numbers=consultation.numbers(),
                    detail={**consultation.detail(), "approved_by": list(status.approvers)},
                )
            return Outcome.wait_for_approval(
                f"{phase.name} still inconclusive after {phase.max_duration_s:g}s: "
                f"mangaassist approve {ctx.run.id} --as NAME to go on, or reject it to roll back"
            )
        if time.monotonic() >= deadline:
            break
        ctx.sleep(TICK_S)
    summary = consultation.judgement.summary() if consultation else "no data"
    ctx.progress(f"{phase.weight:g}%: {summary}")
    return Outcome.wait(f"{phase.name}: {summary}", for_=WaitFor.DATA)


def _passed(
    c: Consultation, shifted: dict[str, Any], window: TrafficWindow, verdict: str | None = None
) -> Outcome:
    numbers = c.numbers()
    return Outcome.done(
        {
            "start_cursor": shifted["cursor"],
            "cursor": window.cursor,
            "at": time.time(),
            "verdict": verdict or c.verdict.value,
            "numbers": numbers,
        },
        verdict=c.verdict,
        numbers=numbers,
        detail=c.detail(),
    )


def _roll_back_now(
    ctx: StepContext, c: Consultation, window: TrafficWindow, compute: Compute, service: str, stable: str
) -> Outcome:
    """FAIL (or inconclusive past the limit): every new conversation to the stable revision now."""
    restored = ctx.effect("restore", lambda _k: restore(compute, service, stable))
    numbers = {**c.numbers(), "restore_ms": round(float(restored.get("took_ms", 0.0)), 3)}
    if window.first_candidate_error_at is not None:
        numbers["first_error_to_restore_s"] = round(
            float(restored["at"]) - window.first_candidate_error_at, 3
        )
    failing = ", ".join(f"{m.metric} (e={m.statistic:.3g} >= {m.threshold:.3g})" for m in c.judgement.failing)
    why = f"judge: FAIL on {failing}" if failing else f"{c.phase} inconclusive after {c.elapsed_s:.0f}s"
    return Outcome.failed(
        f"{why}; all traffic back on {stable}", verdict=c.verdict, numbers=numbers, detail=c.detail()
    )


def retire_after_drain(
    ctx: StepContext, canary: Canary, last: dict[str, Any], drain_idle_s: float, drain_max_s: float
) -> tuple[Outcome | None, float]:
    """After the last phase (its output ``last``): wait (the Outcome) until the stable revision has
    drained, then retire it (an effect); returns (None, seconds it took to drain) once retired."""
    compute, service, stable = canary.compute, canary.service, canary.stable
    since = float(last.get("at") or time.time())
    idle, waited = idle_for(compute, service, stable, int(last.get("cursor") or 0))
    if canary.baseline:  # its conversations drain like the stable revision's
        idle = min(idle, idle_for(compute, service, canary.baseline, int(last.get("cursor") or 0))[0])
    # nothing seen after the cursor does not mean idle: the revision may have served a conversation
    # just before it, so it has been idle at most since the last phase ended (retiring it earlier
    # moved live conversations to the new revision: a conversation answered by two revisions)
    idle = min(idle, time.time() - since)
    drained = idle >= drain_idle_s or time.time() - since >= drain_max_s
    if not drained:
        ctx.progress(f"draining {stable}: idle for {idle:.1f}s (need {drain_idle_s:g}s)")
        return Outcome.wait(f"draining {stable}", for_=WaitFor.TIME), waited
    ctx.effect("retire-old", lambda _k: retire(compute, service, stable))
    if canary.baseline:
        ctx.effect("retire-baseline", lambda _k: retire(compute, service, str(canary.baseline)))
    return None, waited


def restore_and_retire(
    ctx: StepContext, compute: Compute, service: str, stable: str, candidate: str, baseline: str | None = None
) -> Outcome:
    """A rollback: all traffic to the stable revision (if it is not there yet), then retire the
    candidate (and the baseline copy of the stable release, if one was started)."""
    live = {r.name for r in compute.status(service).revisions if r.health is not RevisionHealth.RETIRED}
    restored: dict[str, Any] = {}
    if stable in live:
        restored = ctx.effect("restore", lambda _k: restore(compute, service, stable))
    if candidate in live:
        ctx.effect("retire-candidate", lambda _k: retire(compute, service, candidate))
    if baseline is not None and baseline in live:
        ctx.effect("retire-baseline", lambda _k: retire(compute, service, baseline))
    return Outcome.done(
        detail={"stable": stable, "retired": candidate, "baseline": baseline, "restore": restored}
    )


def _previous_cursor(ctx: StepContext, phase: Phase, plan: RolloutPlan, first: int) -> int:
    """Where the pre-switch baseline starts: the previous phase's shift, or ``first``."""
    names = [p.name for p in plan.phases]
    index = names.index(phase.name)
    if index > 0:
        previous = ctx.outputs.get(names[index - 1], {})
        if previous.get("start_cursor") is not None:
            return int(previous["start_cursor"])
    return first


def stable_between(
    compute: Compute, service: str, candidate: str, stable: str, start: int, end: int
) -> ArmSample:
    window = TrafficWindow(service, candidate, stable, start)
    data = compute.stats(service, start)
    for obs in data.get("observations", []):
        if int(obs.get("seq", 0)) <= end:
            window._add(obs)
    return window.stable_sample


def idle_for(compute: Compute, service: str, revision: str, cursor: int) -> tuple[float, float]:
    """Seconds since ``revision`` last served an unpinned request after ``cursor``, and since the cursor."""
    data = compute.stats(service, cursor)
    last = None
    first = None
    for obs in data.get("observations", []):
        first = first if first is not None else float(obs["time"])
        if obs.get("revision") == revision and obs.get("kind") == "request" and not obs.get("pinned"):
            last = float(obs["time"])
    now = time.time()
    if last is None:
        return float("inf"), now - (first or now)
    return now - last, now - (first or now)


def retire(compute: Compute, service: str, revision: str) -> dict[str, Any]:
    try:
        status = compute.retire(service, revision)
    except NotFoundError:
        return {"revision": revision, "health": "retired"}
    return {"revision": revision, "health": status.health.value}


COMPUTES: dict[str, Compute] = {}
"""The platform client of each environment, made once per process (``compute_of``)."""


def compute_of(environment: str) -> Compute:
    compute = COMPUTES.get(environment)
    if compute is None:
        compute = COMPUTES[environment] = compute_for(environment)
    return compute


def stats_cursor(compute: Compute, service: str) -> int:
    """The router's newest observation number (a window that starts now starts after it)."""
    return int(compute.stats(service, 1 << 62).get("cursor", 0))
