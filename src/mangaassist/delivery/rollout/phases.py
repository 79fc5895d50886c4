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
  rolls back (``strategies.decide``). Every consultation's statistics go into a bounded trail
  (``analysis.evidence.EvidenceTrail``, at most 120 points), written into the step's detail as
  ``"evidence"`` when the phase ends: what the dashboard draws over time. A canary step that stays
  INCONCLUSIVE grows its share instead of only waiting (``strategies.grow``: 5% -> 10% -> 25%
  before a 25% step, never above the policy's ``max_canary_weight_before_approval``); each growth
  is a shift (effect ``grow-N``) and splits the window, so the judge weighs each share on its own
  and keeps the evidence of all of them.
* ``retire_after_drain``: the promotion's drain: the old revision is retired once it served nothing
  unpinned for ``drain_idle_s`` (at the latest after ``drain_max_s``).
* ``restore_and_retire``: a rollback: all traffic to the stable revision (if it still lives), the
  candidate retired.

Every change goes through ``ctx.effect`` so a resumed run never applies one twice; a phase resumed
after a kill keeps judging from the cursor its shift recorded. What a phase has read so far lives in
the run's ``PhaseMemory`` (made by the pipeline's ``build``, gone with the process), never in a
module global: a resumed run, in a new process, re-reads from the recorded cursor.

Traffic is read only through the provider-neutral ``Metrics`` protocol; weights change only
through ``Compute``. Both come from ``platform.factory``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mangaassist.core.errors import NotFoundError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis import ArmSample, JudgeSettings, SequentialJudge
from mangaassist.delivery.analysis.evidence import EvidenceTrail
from mangaassist.delivery.engine.model import WaitFor
from mangaassist.delivery.engine.runs import Outcome, Step, StepContext, approval_step
from mangaassist.delivery.rollout.executor import (
    Consultation,
    JudgedWindow,
    SegmentedWindow,
    TrafficWindow,
    candidate_health,
    consult,
    judge_settings,
    restore,
    shift,
)
from mangaassist.delivery.rollout.strategies import Action, Baseline, Phase, RolloutPlan, Strategy, grow
from mangaassist.platform.compute import Compute, Revision, RevisionHealth, RevisionStatus, ServiceStatus
from mangaassist.platform.metrics import Alert, Metrics, OutcomeKind

SLICE_S = 10.0
"""How long a phase step judges before handing back to the engine (which then checks aborts and
polls it again); the judge itself is consulted every ``TICK_S``."""
TICK_S = 0.2
GROWTH = "growth"
"""The checkpoint holding the shares a phase decided to grow to, in order (``_regrow``)."""


class TrafficSplit(Protocol):
    """What a judged rollout moves and reads: the candidate's share (of new conversations of a
    service, of session buckets of a config profile) and what each side served since a cursor.

    ``run_phase`` drives any of them the same way; the cursors are JSON so a phase resumed in
    another process judges from where its shift left off."""

    @property
    def stable(self) -> str:
        """The side that has all the traffic before and after a rollback (for messages)."""
        ...

    @property
    def judge(self) -> JudgeSettings:
        """The sequential judge's settings for this rollout."""
        ...

    @property
    def first_cursor(self) -> Any:
        """Where the first phase's pre-switch baseline starts (before the rollout began)."""
        ...

    @property
    def not_judged(self) -> str | None:
        """Why the phases only shift and do not judge, or None."""
        ...

    def shift(self, weight: float) -> dict[str, Any]:
        """Give the candidate ``weight``%; return JSON with the ``cursor`` right after it and ``at``."""
        ...

    def restore(self) -> dict[str, Any]:
        """Everything back to the stable side at once; JSON with ``at`` and ``took_ms``."""
        ...

    def window(self, cursor: Any, concurrent: bool) -> JudgedWindow:
        """A window that reads from ``cursor`` (``concurrent``: with the baseline arm, if any)."""
        ...

    def pre_switch(self, start: Any, end: Any) -> ArmSample:
        """What the stable side served between two cursors (a PRE_SWITCH phase's baseline)."""
        ...

    def candidate_problem(self) -> str | None:
        """Why the candidate cannot take traffic now (gone, unhealthy), or None."""
        ...


@dataclass(frozen=True)
class Canary:
    """What a pipeline rolls out: the two revisions of one service and how they are judged (the
    ``TrafficSplit`` of a service: weights through ``Compute``, outcomes through ``Metrics``)."""

    compute: Compute
    metrics: Metrics
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

    @property
    def judge(self) -> JudgeSettings:
        return judge_settings(self.alpha, self.judge_min_requests)

    @property
    def first_cursor(self) -> int:
        return self.baseline_cursor

    def shift(self, weight: float) -> dict[str, Any]:
        return shift(
            self.compute, self.metrics, self.service, self.candidate, self.stable, weight, self.baseline
        )

    def restore(self) -> dict[str, Any]:
        return restore(self.compute, self.service, self.stable)

    def window(self, cursor: Any, concurrent: bool) -> _MetricsWindow:
        arm = self.baseline if concurrent else None
        return _MetricsWindow(self.service, self.candidate, self.stable, int(cursor), self.metrics, arm)

    def pre_switch(self, start: Any, end: Any) -> ArmSample:
        # what the comparison arm served before the switch: the baseline copy when there is one
        # (the stable revision carried no new conversations while it ran beside it)
        before = self.baseline or self.stable
        return stable_between(self.metrics, self.service, self.candidate, before, int(start), int(end))

    def candidate_problem(self) -> str | None:
        health, why = candidate_health(self.compute, self.service, self.candidate)
        if health not in (RevisionHealth.HEALTHY, RevisionHealth.DEGRADED):
            return f"candidate {self.candidate} is {health.value if health else 'gone'} ({why})"
        pages = page_alerts(self.metrics, self.service)
        if pages:  # CD-08: an SLO burning fast for the service stops its rollout
            return f"{pages[0].line()}: the rollout stops on a page alert for its service"
        return None


class _MetricsWindow(TrafficWindow):
    """A ``TrafficWindow`` that knows its ``Metrics`` (the ``JudgedWindow`` of a service)."""

    def __init__(
        self, service: str, candidate: str, stable: str, cursor: int, metrics: Metrics, baseline: str | None
    ) -> None:
        super().__init__(service, candidate, stable, cursor, baseline=baseline)
        self._metrics = metrics

    def read(self, metrics: Metrics | None = None) -> int:
        return super().read(metrics or self._metrics)


@dataclass
class PhaseMemory:
    """What the phases of one run have read so far, per step: the judged window and the
    pre-switch sample. Owned by the pipeline object of the run (``build``); a run resumed in
    another process starts with an empty one and re-reads from the cursor its shift recorded."""

    windows: dict[str, JudgedWindow] = field(default_factory=dict)
    pre_switch: dict[str, ArmSample] = field(default_factory=dict)
    evidence: dict[str, EvidenceTrail] = field(default_factory=dict)
    """Each phase's consultations of its judge over time, bounded (``analysis.evidence``); written
    into the step's detail (``"evidence"``) when the phase ends."""
    growth: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Each phase's growths so far: the shifts of ``grow`` (``weight``, ``cursor``, ``at``)."""


def approval_phase(plan: RolloutPlan, policy: Mapping[str, Any]) -> Phase | None:
    """The phase that asks for the approvals the run's policy requires (None: none does): a canary's
    first phase above ``max_canary_weight_before_approval`` (the 100% switch included, so steps that
    stay under the limit until 100% cannot skip it); blue/green's and all-at-once's first phase, when
    the policy requires approvals (they move every conversation at once). The engine adds no approval
    step to these pipelines (``Pipeline.inline_approval``)."""
    if plan.strategy is Strategy.CANARY:
        limit = float(policy.get("max_canary_weight_before_approval", 100))
    else:
        limit = 0.0 if int(policy.get("approvals", 0)) > 0 else 100.0
    return next((p for p in plan.phases if p.weight > limit), None)


def run_phase(
    ctx: StepContext, phase: Phase, plan: RolloutPlan, split: TrafficSplit, memory: PhaseMemory
) -> Outcome:
    """Shift to ``phase.weight`` and judge until PASS (done), FAIL (restored, failed) or not yet (wait)."""
    asks = approval_phase(plan, ctx.run.policy)
    if asks is not None and asks.name == phase.name:
        gate = approval_step(phase.name).run(ctx)
        if gate.kind.value != "done":
            return gate
    shifted = ctx.effect("shift", lambda _k: split.shift(phase.weight))
    if split.not_judged:
        return Outcome.done(
            {
                "start_cursor": shifted["cursor"],
                "cursor": shifted["cursor"],
                "shifted_at": shifted["at"],
                "at": time.time(),
            },
            detail={"not_judged": split.not_judged},
        )
    window = memory.windows.get(ctx.step)
    grown = memory.growth.get(ctx.step)
    if window is None or grown is None:
        concurrent = phase.baseline is Baseline.CONCURRENT and phase.weight < 100
        window = memory.windows[ctx.step] = split.window(shifted["cursor"], concurrent)
        grown = memory.growth[ctx.step] = _regrow(ctx, split)
        for done in grown:
            if isinstance(window, SegmentedWindow):
                window.split(done["cursor"])
    can_grow = bool(phase.grow_to) and isinstance(window, SegmentedWindow)
    cap = growth_cap(plan, ctx.run.policy)
    pre_switch = None
    if phase.baseline is Baseline.PRE_SWITCH:
        pre_switch = memory.pre_switch.get(ctx.step)
        if pre_switch is None:
            start = _previous_cursor(ctx, phase, plan, split.first_cursor)
            pre_switch = memory.pre_switch[ctx.step] = split.pre_switch(start, shifted["cursor"])
    judge = SequentialJudge(split.judge)
    trail = memory.evidence.get(ctx.step)
    if trail is None:
        trail = memory.evidence[ctx.step] = EvidenceTrail(shifted_at=float(shifted["at"]))
    deadline = time.monotonic() + SLICE_S
    next_health = 0.0
    consultation: Consultation | None = None
    while True:
        now = time.monotonic()
        if now >= next_health:
            problem = split.candidate_problem()
            next_health = now + 1.0
            if problem is not None:
                restored = ctx.effect("restore", lambda _k: split.restore())
                return Outcome.failed(
                    f"{problem}; all traffic back on {split.stable}",
                    verdict=Verdict.FAIL,
                    numbers={"restore_ms": round(float(restored.get("took_ms", 0.0)), 3)},
                    detail=_evidence(trail),
                )
        window.read()
        elapsed = time.time() - float(shifted["at"])
        consultation = consult(judge, phase, window, elapsed, pre_switch, grown)
        trail.record(
            consultation.elapsed_s,
            consultation.judgement,
            consultation.candidate.requests,
            consultation.baseline.requests,
        )
        if can_grow and isinstance(window, SegmentedWindow):
            weight = float(grown[-1]["weight"]) if grown else phase.weight
            since = float(grown[-1]["at"]) if grown else float(shifted["at"])
            held = time.time() - since
            to = grow(phase, consultation.verdict, consultation.action, weight, held, cap)
            if to is not None:
                ctx.save_checkpoint(GROWTH, [*(float(g["weight"]) for g in grown), to])
                done = _grow_effect(ctx, split, len(grown) + 1, to)
                grown.append(done)
                window.split(done["cursor"])
                ctx.progress(f"{phase.name}: inconclusive after {held:.0f}s at {weight:g}%, {to:g}% now")
        if consultation.action is Action.ROLLBACK:
            return _roll_back_now(ctx, consultation, window, split, trail)
        if consultation.action is Action.PROCEED:
            return _passed(consultation, shifted, window, trail=trail)
        if consultation.action is Action.ASK_APPROVAL:
            status = ctx.approval()
            if status.rejected_by is not None:
                ctx.effect("restore", lambda _k: split.restore())
                return Outcome.failed(
                    f"rejected by {status.rejected_by.actor} after an inconclusive {phase.name}",
                    verdict=Verdict.INCONCLUSIVE,
                    numbers=consultation.numbers(),
                    detail={**consultation.detail(), **_evidence(trail)},
                )
            if status.approvers and len(status.approvers) >= status.needed:
                passed = _passed(consultation, shifted, window, verdict="INCONCLUSIVE")
                return Outcome.done(
                    passed.output,
                    verdict=consultation.verdict,
                    numbers=consultation.numbers(),
                    detail={
                        **consultation.detail(),
                        "approved_by": list(status.approvers),
                        **_evidence(trail),
                    },
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


def growth_cap(plan: RolloutPlan, policy: Mapping[str, Any]) -> float:
    """The largest share a phase may grow to: a canary's policy limit before an approval
    (``max_canary_weight_before_approval``; none: 100)."""
    if plan.strategy is Strategy.CANARY:
        return float(policy.get("max_canary_weight_before_approval", 100))
    return 100.0


def _regrow(ctx: StepContext, split: TrafficSplit) -> list[dict[str, Any]]:
    """The growths this phase decided so far, in order, each applied once. A decision is saved
    (checkpoint ``GROWTH``) before its shift (effect ``grow-N``): a run killed between the two
    applies the shift when it resumes; one killed after it finds the shift recorded, with the cursor
    where the new share began."""
    decided = ctx.saved_checkpoint(GROWTH) or []
    return [_grow_effect(ctx, split, i, float(w)) for i, w in enumerate(decided, 1)]


def _grow_effect(ctx: StepContext, split: TrafficSplit, index: int, weight: float) -> dict[str, Any]:
    def apply(_key: str) -> dict[str, Any]:
        return {**split.shift(weight), "weight": weight}

    shifted: dict[str, Any] = ctx.effect(f"grow-{index}", apply)
    return shifted


def _evidence(trail: EvidenceTrail | None) -> dict[str, Any]:
    """The detail entry of a phase's evidence over time (none before the judge was consulted)."""
    return {"evidence": trail.as_dict()} if trail is not None and trail.consultations else {}


def _passed(
    c: Consultation,
    shifted: dict[str, Any],
    window: JudgedWindow,
    verdict: str | None = None,
    *,
    trail: EvidenceTrail | None = None,
) -> Outcome:
    numbers = c.numbers()
    return Outcome.done(
        {
            "start_cursor": shifted["cursor"],
            "cursor": window.cursor,
            "shifted_at": shifted["at"],
            "at": time.time(),
            "verdict": verdict or c.verdict.value,
            "numbers": numbers,
        },
        verdict=c.verdict,
        numbers=numbers,
        detail={**c.detail(), **_evidence(trail)},
    )


def _roll_back_now(
    ctx: StepContext,
    c: Consultation,
    window: JudgedWindow,
    split: TrafficSplit,
    trail: EvidenceTrail | None = None,
) -> Outcome:
    """FAIL (or inconclusive past the limit): everything back on the stable side now."""
    restored = ctx.effect("restore", lambda _k: split.restore())
    numbers = {**c.numbers(), "restore_ms": round(float(restored.get("took_ms", 0.0)), 3)}
    if window.first_candidate_error_at is not None:
        numbers["first_error_to_restore_s"] = round(
            float(restored["at"]) - window.first_candidate_error_at, 3
        )
    failing = ", ".join(f"{m.metric} (e={m.statistic:.3g} >= {m.threshold:.3g})" for m in c.judgement.failing)
    why = f"judge: FAIL on {failing}" if failing else f"{c.phase} inconclusive after {c.elapsed_s:.0f}s"
    return Outcome.failed(
        f"{why}; all traffic back on {split.stable}",
        verdict=c.verdict,
        numbers=numbers,
        detail={**c.detail(), **_evidence(trail)},
    )


def page_alerts(metrics: Metrics, service: str) -> list[Alert]:
    """Page alerts firing for ``service`` (CD-08's SLO burn-rate alerts, through ``Metrics``)."""
    return [a for a in metrics.alerts(service) if a.severity == "page"]


def alerts_block(ctx: StepContext, metrics: Metrics, service: str) -> Outcome | None:
    """The failure of a deploy that would start while a page alert fires for ``service``, unless
    the run carries ``--override ENV.alerts`` (audited); None when it may start."""
    pages = page_alerts(metrics, service)
    rule = f"{ctx.run.environment}.alerts"
    if not pages:
        return None
    if rule in ctx.run.overrides:
        ctx.progress(f"{pages[0].line()}; started anyway ({rule}: {ctx.run.overrides[rule]})")
        return None
    return Outcome.failed(
        f"{pages[0].line()}: a deploy of {service} does not start while a page alert fires "
        f"(--override {rule} --reason TEXT to start it anyway)",
        detail={"alerts": [a.line() for a in pages]},
    )


def retire_after_drain(
    ctx: StepContext, canary: Canary, last: dict[str, Any], drain_idle_s: float, drain_max_s: float
) -> tuple[Outcome | None, float]:
    """After the last phase (its output ``last``): wait (the Outcome) until the stable revision has
    drained, then retire it (an effect); returns (None, seconds the drain added after the last
    phase ended) once retired."""
    compute, metrics, service, stable = canary.compute, canary.metrics, canary.service, canary.stable
    # watched from the last phase's shift (its weight change: from then on the old revision takes
    # no new conversations): nothing seen after that cursor does not mean idle, the revision may have
    # served a conversation just before it, so it has been idle at most since the shift (retiring it
    # earlier moved live conversations to the new revision: one conversation, two revisions). Runs
    # recorded before "shifted_at" existed fall back to the phase's end (later, so as safe).
    shifted_at = last.get("shifted_at")
    since = float(shifted_at if shifted_at is not None else last.get("at") or time.time())
    cursor = int((last.get("start_cursor") if shifted_at is not None else last.get("cursor")) or 0)
    idle = idle_for(metrics, service, stable, cursor)
    if canary.baseline:  # its conversations drain like the stable revision's
        idle = min(idle, idle_for(metrics, service, canary.baseline, cursor))
    now = time.time()
    idle = min(idle, now - since)
    waited = max(0.0, now - float(last.get("at") or now))  # what the drain added after the last phase
    drained = idle >= drain_idle_s or waited >= drain_max_s
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


def _previous_cursor(ctx: StepContext, phase: Phase, plan: RolloutPlan, first: Any) -> Any:
    """Where the pre-switch baseline starts: the shift of the last earlier phase in which the stable
    side still took new traffic (below 100%), or ``first``. A bake after the 100% phase is thus
    compared with what the stable side served in the last shared phase."""
    names = [p.name for p in plan.phases]
    index = names.index(phase.name)
    for earlier in reversed(plan.phases[:index]):
        if earlier.weight < 100:
            previous = ctx.outputs.get(earlier.name, {})
            if previous.get("start_cursor") is not None:
                return previous["start_cursor"]
            break
    return first


def stable_between(
    metrics: Metrics, service: str, candidate: str, stable: str, start: int, end: int
) -> ArmSample:
    """What ``stable`` served between two cursors (the pre-switch baseline of a phase)."""
    window = TrafficWindow(service, candidate, stable, start)
    for outcome in metrics.outcomes(service, start).outcomes:
        if outcome.seq <= end:
            window.add(outcome)
    return window.stable_sample


def idle_for(metrics: Metrics, service: str, revision: str, cursor: int) -> float:
    """Seconds since ``revision`` last served an unpinned request after ``cursor`` (inf: none)."""
    last = None
    for outcome in metrics.outcomes(service, cursor).outcomes:
        if outcome.revision == revision and outcome.kind is OutcomeKind.REQUEST and not outcome.pinned:
            last = outcome.time
    return float("inf") if last is None else time.time() - last


def retire(compute: Compute, service: str, revision: str, *, last: bool = False) -> dict[str, Any]:
    """Retire ``revision`` (``last``: even as the service's only one, ``Compute.retire``); one that
    is gone already counts as retired."""
    try:
        status = compute.retire(service, revision, last=last)
    except NotFoundError:
        return {"revision": revision, "health": "retired"}
    return {"revision": revision, "health": status.health.value}


def stable_revision(compute: Compute, service: str) -> RevisionStatus | None:
    """The revision that takes every new conversation of ``service``, or None while traffic is split."""
    return stable_of(compute.status(service))


def stable_of(status: ServiceStatus) -> RevisionStatus | None:
    """``stable_revision`` of a status already read."""
    live = [name for name, weight in status.weights.items() if weight > 0]
    if len(live) != 1:
        return None
    return next(r for r in status.revisions if r.name == live[0])


def split_traffic(compute: Compute, service: str, hint: str = "") -> Outcome:
    """The failure of a deploy that finds the traffic of ``service`` split (another deploy's)."""
    weights = dict(compute.status(service).weights)
    return Outcome.failed(
        f"traffic of {service} is split {weights}: finish or roll back that deploy first{hint}"
    )


def deploy_ready(
    ctx: StepContext, compute: Compute, service: str, revision: Revision, timeout_s: float, *, effect: str
) -> Outcome | None:
    """Deploy ``revision`` at 0% (an effect named ``effect``) and wait until it is ready; the failed
    outcome when it is not healthy, else None. Revisions are named after what they run, so a
    repeated deploy is the same revision."""

    def deploy(_key: str) -> dict[str, Any]:
        status = compute.deploy(service, revision, timeout_s=timeout_s)
        return {"health": status.health.value, "reason": status.reason}

    deployed = ctx.effect(effect, deploy)
    if deployed["health"] != RevisionHealth.HEALTHY.value:
        what = "baseline" if effect.endswith("baseline") else "candidate"
        return Outcome.failed(f"{what} {revision.name} is {deployed['health']}: {deployed['reason']}")
    return None


def phase_steps(
    plan: RolloutPlan, run_for: Callable[[Phase], Callable[[StepContext], Outcome]]
) -> list[Step]:
    """One engine step per phase of ``plan``; ``run_for(phase)`` is the step's function."""
    return [Step(p.name, run_for(p), f"{p.weight:g}% to the candidate, judged") for p in plan.phases]
