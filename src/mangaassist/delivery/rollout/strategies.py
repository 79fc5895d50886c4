"""Rollout strategies as data: a plan is an ordered tuple of ``Phase``s, and ``decide`` is the rule.

``plan_for`` turns a strategy and the environment's settings into phases; the CD-01 pipeline makes
one engine step per phase and ``rollout.executor`` applies it. Nothing here does IO, so the unit
tests cover every decision (``tests/unit/rollout``).

A phase sets the candidate's weight, then judges what the candidate served since the phase began
against a *baseline* of the stable revision: what it served over the same period (``CONCURRENT``,
canary steps below 100%), or what it served before the switch (``PRE_SWITCH``: the 100% step of a
canary, blue-green's and all-at-once's switch, when the stable revision no longer gets new
conversations).

A canary step that stays INCONCLUSIVE grows its share instead of only waiting (``grow``): after
``grow_after_s`` at a share without a decision it moves to the next of ``Phase.grow_to`` (twice
its weight, then the next step's weight; never above the policy's
``max_canary_weight_before_approval``), so a doubtful candidate is decided sooner. The judge keeps
the evidence gathered at each share (``analysis.sequential``, segments).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mangaassist.core.verdict import Verdict


class Strategy(StrEnum):
    """How the candidate takes traffic."""

    CANARY = "canary"
    """Weights follow a schedule (5, 25, 50, 100 %); the judge compares both revisions at each step."""
    BLUE_GREEN = "blue-green"
    """A full-size candidate takes 100% in one atomic switch; the old revision stays warm for the
    rollback window while the judge compares the candidate with the pre-switch baseline."""
    ALL_AT_ONCE = "all-at-once"
    """100% at once and no rollback window; the old revision is retired as soon as the judge passes.
    Allowed in ``dev`` only by default."""


class Baseline(StrEnum):
    """What the candidate is compared with during a phase."""

    CONCURRENT = "concurrent"
    """The stable revision's requests over the same period (both serve at the same time)."""
    PRE_SWITCH = "pre-switch"
    """The stable revision's requests before the candidate took all new conversations."""


class OnInconclusive(StrEnum):
    """What a phase does when its maximum duration ends without a PASS."""

    ROLLBACK = "rollback"
    """Roll back: all traffic to the stable revision, retire the candidate."""
    APPROVAL = "approval"
    """Hold the current weights and wait for a person (``mangaassist approve RUN``); a rejection rolls
    back. A healthy candidate on little traffic is then never rolled back by the clock."""
    PROCEED = "proceed"
    """Go on: the phase is a watch for alarms (a bake), which only a FAIL ends early."""


class Action(StrEnum):
    """What the executor does after consulting the judge."""

    PROCEED = "proceed"
    """The phase passed: go to the next phase (or promote)."""
    EXTEND = "extend"
    """Not yet: keep the weights and keep judging (too little data, evidence building, bake time)."""
    ROLLBACK = "rollback"
    """FAIL, or INCONCLUSIVE past the maximum duration with ``OnInconclusive.ROLLBACK``."""
    ASK_APPROVAL = "ask-approval"
    """INCONCLUSIVE past the maximum duration with ``OnInconclusive.APPROVAL``."""


@dataclass(frozen=True)
class Phase:
    """One step of a rollout: a weight, a baseline, and when the phase may end."""

    name: str
    """The engine step's name (``canary-25``, ``switch``); renaming it breaks runs in flight."""
    weight: float
    """The candidate's share of new conversations, in %."""
    baseline: Baseline
    min_requests: int
    """Requests the candidate must have served in this phase before it can PASS."""
    max_duration_s: float
    """How long INCONCLUSIVE may extend the phase before ``on_inconclusive`` applies."""
    on_inconclusive: OnInconclusive
    hold_s: float = 0.0
    """The phase lasts at least this long even when the judge passes (blue-green's rollback window)."""
    grow_to: tuple[float, ...] = ()
    """Larger shares (%) the phase may give the candidate, in order, while the judge stays
    INCONCLUSIVE (``grow``); the run's policy caps them. Empty: the share never changes."""
    grow_after_s: float = 0.0
    """How long a share is kept while INCONCLUSIVE before the next of ``grow_to`` (0: never)."""


@dataclass(frozen=True)
class RolloutPlan:
    strategy: Strategy
    phases: tuple[Phase, ...]
    keep_warm: bool
    """Whether the old revision stays up during the last phase (so a rollback is a weight flip)."""

    def describe(self) -> str:
        steps = " -> ".join(f"{p.weight:g}%" for p in self.phases)
        return f"{self.strategy.value}: {steps}"


def plan_for(
    strategy: Strategy,
    *,
    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0),
    min_requests: int = 30,
    max_step_s: float = 300.0,
    on_inconclusive: OnInconclusive = OnInconclusive.APPROVAL,
    rollback_window_s: float = 600.0,
    grow_after_s: float = 0.0,
) -> RolloutPlan:
    """The phases of ``strategy``. Canary steps must increase and end at 100. ``grow_after_s`` > 0:
    each canary step below 100% grows while INCONCLUSIVE (``growth_ladder``, ``grow``)."""
    if strategy is Strategy.CANARY:
        if not steps or list(steps) != sorted(set(steps)) or steps[-1] != 100 or steps[0] <= 0:
            raise ValueError(f"canary steps must increase within (0, 100] and end at 100, got {steps}")
        phases = tuple(
            Phase(
                f"canary-{w:g}",
                w,
                Baseline.CONCURRENT if w < 100 else Baseline.PRE_SWITCH,
                min_requests,
                max_step_s,
                on_inconclusive,
                grow_to=growth_ladder(w, nxt) if grow_after_s > 0 else (),
                grow_after_s=grow_after_s,
            )
            for w, nxt in zip(steps, (*steps[1:], 100.0), strict=True)
        )
        return RolloutPlan(strategy, phases, keep_warm=True)
    if strategy is Strategy.BLUE_GREEN:
        switch = Phase(
            "switch",
            100.0,
            Baseline.PRE_SWITCH,
            min_requests,
            max(max_step_s, rollback_window_s),
            on_inconclusive,
            hold_s=rollback_window_s,
        )
        return RolloutPlan(strategy, (switch,), keep_warm=True)
    switch = Phase("switch", 100.0, Baseline.PRE_SWITCH, min_requests, max_step_s, on_inconclusive)
    return RolloutPlan(strategy, (switch,), keep_warm=False)


def growth_ladder(weight: float, next_weight: float) -> tuple[float, ...]:
    """The shares a canary step at ``weight`` may grow to before the next step (``next_weight``):
    twice its weight, then the next step's, each only if it lies strictly between the two; never
    100% (the switch, judged against the stable revision's past). 5% before 25%: (10, 25)."""
    return tuple(sorted({w for w in (2 * weight, next_weight) if weight < w <= next_weight and w < 100}))


def grow(
    phase: Phase,
    verdict: Verdict,
    action: Action,
    weight: float,
    held_s: float,
    cap: float,
) -> float | None:
    """The share to give the candidate now, or None. A step grows when the judge leaves it
    INCONCLUSIVE (``action`` EXTEND, or ASK_APPROVAL: a step waiting for a person keeps gathering
    evidence) after it has held its current ``weight`` for ``grow_after_s``: to the next rung of
    ``grow_to`` above ``weight`` that is at most ``cap`` (the policy's
    ``max_canary_weight_before_approval``)."""
    if phase.grow_after_s <= 0 or verdict is not Verdict.INCONCLUSIVE or held_s < phase.grow_after_s:
        return None
    if action not in (Action.EXTEND, Action.ASK_APPROVAL):
        return None
    return next((w for w in phase.grow_to if weight < w <= cap), None)


def decide(phase: Phase, verdict: Verdict, candidate_n: int, elapsed_s: float) -> Action:
    """The rule of every phase: FAIL rolls back at once; PASS with enough data after the hold ends
    the phase; anything else extends it until ``max_duration_s``, then ``on_inconclusive``."""
    if verdict is Verdict.FAIL:
        return Action.ROLLBACK
    if elapsed_s < phase.hold_s:
        return Action.EXTEND
    if verdict is Verdict.PASS and candidate_n >= phase.min_requests:
        return Action.PROCEED
    if elapsed_s >= phase.max_duration_s:
        if phase.on_inconclusive is OnInconclusive.ROLLBACK:
            return Action.ROLLBACK
        if phase.on_inconclusive is OnInconclusive.PROCEED:
            return Action.PROCEED
        return Action.ASK_APPROVAL
    return Action.EXTEND
