"""A canary step that stays INCONCLUSIVE grows its share: the rule (pure), the window's segments, and
the real phase driven by the real engine (effects, the policy's cap, a resume in a new process)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis import ArmSample, Judgement, MetricVerdict, Segment
from mangaassist.delivery.engine import Executor, FakeClock, Outcome, Pipeline, StateStore, Step, StepContext
from mangaassist.delivery.engine.model import RunState, StepRecord, StepStatus
from mangaassist.delivery.engine.policy import default_policy
from mangaassist.delivery.rollout import executor as rollout_executor
from mangaassist.delivery.rollout import phases
from mangaassist.delivery.rollout.executor import TrafficWindow, window_segments
from mangaassist.delivery.rollout.phases import Canary, PhaseMemory, growth_cap, run_phase
from mangaassist.delivery.rollout.settings import deploy_settings
from mangaassist.delivery.rollout.strategies import (
    Action,
    Baseline,
    OnInconclusive,
    Phase,
    Strategy,
    grow,
    growth_ladder,
    plan_for,
)
from mangaassist.platform.compute import RevisionHealth, RevisionStatus, ServiceStatus
from mangaassist.platform.metrics import InMemoryMetrics, OutcomeKind, RequestOutcome


@pytest.mark.parametrize(
    ("weight", "following", "ladder"),
    [(5, 25, (10, 25)), (25, 50, (50,)), (50, 100, ()), (10, 50, (20, 50)), (40, 50, (50,)), (1, 2, (2,))],
)
def test_the_ladder_doubles_then_reaches_the_next_step_and_never_the_switch(
    weight: float, following: float, ladder: tuple[float, ...]
) -> None:
    assert growth_ladder(weight, following) == ladder


def test_canary_steps_below_100_may_grow_when_the_plan_says_so() -> None:
    plan = plan_for(Strategy.CANARY, steps=(5, 25, 50, 100), grow_after_s=20)
    assert [p.grow_to for p in plan.phases] == [(10, 25), (50,), (), ()]
    assert {p.grow_after_s for p in plan.phases} == {20}
    assert all(p.grow_to == () for p in plan_for(Strategy.CANARY).phases)  # off unless asked
    (switch,) = plan_for(Strategy.BLUE_GREEN, grow_after_s=20).phases
    assert switch.grow_to == ()


def test_the_environment_grows_canaries_after_20_s_unless_told_not_to() -> None:
    assert deploy_settings("dev").grow_after_s == 20
    assert deploy_settings("dev").plan().phases[0].grow_to == (10, 25)
    off = deploy_settings("dev", None, {"grow_after_s": 0})
    assert all(p.grow_to == () for p in off.plan().phases)


STEP = Phase(
    "canary-5", 5, Baseline.CONCURRENT, 30, 300, OnInconclusive.APPROVAL, grow_to=(10, 25), grow_after_s=20
)
INC, OK, BAD = Verdict.INCONCLUSIVE, Verdict.PASS, Verdict.FAIL


@pytest.mark.parametrize(
    ("verdict", "action", "weight", "held", "cap", "expected"),
    [
        (INC, Action.EXTEND, 5, 20, 100, 10),  # inconclusive for 20 s at 5%: the next rung
        (INC, Action.EXTEND, 10, 25, 100, 25),
        (INC, Action.EXTEND, 25, 60, 100, None),  # the top of the ladder
        (INC, Action.EXTEND, 5, 19.9, 100, None),  # not held long enough
        (INC, Action.ASK_APPROVAL, 5, 400, 100, 10),  # waiting for a person still gathers evidence
        (INC, Action.ROLLBACK, 5, 400, 100, None),
        (OK, Action.EXTEND, 5, 60, 100, None),  # a PASS short of the step's minimum sample only waits
        (BAD, Action.ROLLBACK, 5, 60, 100, None),
        (INC, Action.EXTEND, 5, 60, 25, 10),
        (INC, Action.EXTEND, 10, 60, 24, None),  # never above the policy's limit
        (INC, Action.EXTEND, 5, 60, 9, None),
    ],
)
def test_the_growth_rule(
    verdict: Verdict, action: Action, weight: float, held: float, cap: float, expected: float | None
) -> None:
    assert grow(STEP, verdict, action, weight, held, cap) == expected


def test_the_cap_is_the_policy_limit_before_an_approval_for_canaries_only() -> None:
    canary, blue_green = plan_for(Strategy.CANARY), plan_for(Strategy.BLUE_GREEN)
    assert growth_cap(canary, {"max_canary_weight_before_approval": 25}) == 25
    assert growth_cap(canary, {}) == 100
    assert growth_cap(blue_green, {"max_canary_weight_before_approval": 25}) == 100


def _request(seq: int, revision: str, status: int = 200, latency_ms: float = 10.0) -> RequestOutcome:
    return RequestOutcome(seq, 1000.0 + seq, OutcomeKind.REQUEST, revision, status, latency_ms)


def test_a_split_window_keeps_each_share_apart_and_the_totals_whole() -> None:
    metrics = InMemoryMetrics()
    window = TrafficWindow("chat", "new", "old", 0, baseline="base")
    for seq, revision in enumerate(["new", "old", "base", "old"], 1):
        metrics.record("chat", _request(seq, revision, 500 if revision == "new" else 200))
    window.read(metrics)
    window.split(6)  # the shift: what seq 5 and 6 served was routed before it
    for seq, revision in enumerate(["old", "new", "new", "base", "new"], 5):
        metrics.record("chat", _request(seq, revision))
    window.read(metrics)
    first, second = window.segments()
    assert (first.candidate.requests, first.candidate.errors, first.baseline.requests) == (2, 1, 4)
    assert (first.latency_baseline.requests if first.latency_baseline else None) == 1
    assert (second.candidate.requests, second.baseline.requests) == (2, 1)
    assert window.candidate_sample.requests == 4 and window.stable_sample.requests == 5  # totals unchanged
    window.split(20)  # nothing served since: the newest segment is empty
    assert [s.candidate.requests for s in window.segments()] == [2, 2, 0]


def test_a_window_that_cannot_be_split_is_one_segment() -> None:
    class Plain:
        candidate_sample, stable_sample, baseline_sample = ArmSample(3), ArmSample(50), ArmSample()
        baseline = None

    (only,) = window_segments(Plain())  # type: ignore[arg-type]
    assert (only.candidate.requests, only.baseline.requests, only.latency_baseline) == (3, 50, None)


# -- the real phase, driven by the real engine --------------------------------------------------------


class _Compute:
    """Weights and health of a two-revision service; remembers every weight change."""

    def __init__(self) -> None:
        self.weights: dict[str, float] = {"old": 100.0}
        self.changes: list[float] = []

    def set_weights(self, service: str, weights: dict[str, float]) -> dict[str, float]:
        self.weights = dict(weights)
        self.changes.append(self.weights.get("new", 0.0))
        return self.weights

    def status(self, service: str) -> ServiceStatus:
        revisions = tuple(
            RevisionStatus(name, "sha256:0", 1, RevisionHealth.HEALTHY, None, self.weights.get(name, 0.0), ())
            for name in ("old", "new")
        )
        return ServiceStatus(service, "http://127.0.0.1:1", revisions, self.weights, None)


class _TrafficClock(FakeClock):
    """Each sleep lets 20 requests reach the router, split as the weights say (5% -> 1 of 20)."""

    def __init__(self, metrics: InMemoryMetrics, compute: _Compute) -> None:
        super().__init__()
        self.metrics, self.compute, self.seq = metrics, compute, 0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        now = self.now().timestamp()
        to_candidate = round(20 * self.compute.weights.get("new", 0.0) / 100)
        for i in range(20):
            self.seq += 1
            revision = "new" if i < to_candidate else "old"
            outcome = RequestOutcome(self.seq, now, OutcomeKind.REQUEST, revision, 200, 20.0)
            self.metrics.record("chat", outcome)


class _Time:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def time(self) -> float:
        return self.clock.now().timestamp()

    monotonic = perf_counter = time


class _ScriptedJudge:
    """INCONCLUSIVE until the candidate has served 100 requests, then PASS; remembers the segments
    it was shown (the real judge's arithmetic is tested in tests/unit/analysis)."""

    calls: ClassVar[list[list[Segment]]] = []

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def judge(
        self, candidate: ArmSample, baseline: ArmSample, latency: ArmSample | None = None, **kw: Any
    ) -> Judgement:
        segments = [*kw.get("earlier", ()), Segment(candidate, baseline, latency)]
        _ScriptedJudge.calls.append(segments)
        n = sum(s.candidate.requests for s in segments)
        verdict = Verdict.PASS if n >= 100 else Verdict.INCONCLUSIVE
        return Judgement(
            "scripted", [MetricVerdict("error_rate", "scripted", verdict, 1.0, 250.0, n, 0, 0.0, 0.0, "")]
        )


def _grow_for_real(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int, fresh_memory: bool = False
) -> tuple[_Compute, list[StepRecord], RunState]:
    metrics, compute = InMemoryMetrics(), _Compute()
    clock = _TrafficClock(metrics, compute)
    monkeypatch.setattr(phases, "time", _Time(clock))
    monkeypatch.setattr(rollout_executor, "time", _Time(clock))
    monkeypatch.setattr(phases, "SequentialJudge", _ScriptedJudge)
    monkeypatch.setattr(_ScriptedJudge, "calls", [])
    plan = plan_for(Strategy.CANARY, steps=(5, 25, 100), min_requests=10, max_step_s=120, grow_after_s=6)
    canary = Canary(compute, metrics, "chat", "old", "new", 0.01, 10, 0)  # type: ignore[arg-type]
    memory = PhaseMemory()

    def step(ctx: StepContext) -> Outcome:  # a new process at every poll when ``fresh_memory``
        return run_phase(ctx, plan.phases[0], plan, canary, PhaseMemory() if fresh_memory else memory)

    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    policy = replace(default_policy().for_run("dev", "growth-test"), max_canary_weight_before_approval=cap)
    try:
        engine = Executor(store, clock=clock, heartbeat=False, poll_seconds=1.0)
        final = engine.run(
            Pipeline("growth-test", (Step("canary-5", step),)),
            environment="dev",
            target="growth-test",
            requester="ann",
            policy=policy,
        )
        with store.transaction() as conn:
            steps = store.steps(conn, final.id)
    finally:
        store.close()
    return compute, steps, final.state


def test_an_inconclusive_step_grows_5_10_25_and_the_judge_sees_each_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compute, (step,), state = _grow_for_real(tmp_path, monkeypatch, cap=25)
    assert state is RunState.SUCCEEDED and step.status is StepStatus.DONE
    assert compute.changes == [5, 10, 25]  # each shift once
    grown = step.detail["grown"]
    assert [g["weight"] for g in grown] == [10, 25]
    assert grown[1]["at"] - grown[0]["at"] >= 6  # each share held for grow_after_s
    assert step.detail["numbers"]["candidate_weight"] == 25
    last = _ScriptedJudge.calls[-1]
    shares = [s.candidate.requests / (s.candidate.requests + s.baseline.requests) for s in last]
    assert shares == pytest.approx([0.05, 0.10, 0.25], abs=0.01)  # one segment per share


def test_the_policy_limit_stops_the_growth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compute, (step,), _ = _grow_for_real(tmp_path, monkeypatch, cap=10)
    assert compute.changes == [5, 10]
    assert [g["weight"] for g in step.detail["grown"]] == [10]


def test_a_resumed_phase_finds_its_growths_and_applies_none_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every poll in a new process (an empty ``PhaseMemory``): the window is read again from the
    shift's cursor and split where the recorded growths began; no weight is set twice."""
    found: list[int] = []
    regrow = phases._regrow

    def counting(ctx: StepContext, split: Any) -> list[dict[str, Any]]:
        grown = regrow(ctx, split)
        found.append(len(grown))
        return grown

    monkeypatch.setattr(phases, "_regrow", counting)
    compute, _, state = _grow_for_real(tmp_path, monkeypatch, cap=25, fresh_memory=True)
    assert found[0] == 0 and 1 in found  # the second poll found the first growth recorded
    assert state is RunState.SUCCEEDED and compute.changes == [5, 10, 25]
    last = _ScriptedJudge.calls[-1]
    shares = [s.candidate.requests / (s.candidate.requests + s.baseline.requests) for s in last]
    assert shares == pytest.approx([0.05, 0.10, 0.25], abs=0.01)
