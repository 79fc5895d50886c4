"""Canary evidence over time (``delivery.analysis.evidence``): the trail a judged phase records and
``canary_evidence``, which reads it back from a run's step records."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis import ArmSample, JudgeSettings, Observation, SequentialJudge
from mangaassist.delivery.analysis.evidence import (
    E_PROCESS,
    INFINITY,
    MAX_POINTS,
    EvidenceTrail,
    canary_evidence,
)
from mangaassist.delivery.analysis.judgement import Judgement, MetricVerdict
from mangaassist.delivery.engine import Executor, FakeClock, Outcome, Pipeline, StateStore, Step, StepContext
from mangaassist.delivery.engine.model import StepRecord, StepStatus
from mangaassist.delivery.engine.policy import default_policy
from mangaassist.delivery.rollout import executor as rollout_executor
from mangaassist.delivery.rollout import phases
from mangaassist.delivery.rollout.executor import consult
from mangaassist.delivery.rollout.phases import Canary, PhaseMemory, run_phase
from mangaassist.delivery.rollout.strategies import (
    Action,
    Baseline,
    OnInconclusive,
    Phase,
    Strategy,
    plan_for,
)
from mangaassist.platform.compute import RevisionHealth, RevisionStatus, ServiceStatus
from mangaassist.platform.metrics import InMemoryMetrics, OutcomeKind, RequestOutcome

RUN = "run-0123456789ab"
PHASE = Phase("canary-5", 5, Baseline.CONCURRENT, 30, 300, OnInconclusive.APPROVAL)

# A step as CD-01 recorded it before the evidence trail existed (a real `canary-5` failure, trimmed to
# two metrics): the judgement holds each metric's final statistic only.
LEGACY_FAILED = StepRecord(
    run_id=RUN,
    index=5,
    name="canary-5",
    status=StepStatus.FAILED,
    attempts=1,
    started_at="2025-01-08T12:00:00.000000+00:00",
    finished_at="2025-01-08T12:00:14.000000+00:00",
    duration_s=14.0,
    reason="judge: FAIL on latency (e=335 >= 333); all traffic back on r1",
    detail={
        "phase": "canary-5",
        "action": "rollback",
        "judgement": {
            "judge": "sequential",
            "verdict": "FAIL",
            "metrics": [
                {"metric": "error_rate", "test": E_PROCESS, "verdict": "PASS", "statistic": 0.95,
                 "threshold": 250.0, "candidate_n": 33, "baseline_n": 640, "candidate_value": 0.0,
                 "baseline_value": 0.0, "reason": "no evidence the candidate is worse (e-value 0.95)"},
                {"metric": "latency", "test": E_PROCESS, "verdict": "FAIL", "statistic": 335.0,
                 "threshold": 333.3333333333333, "candidate_n": 33, "baseline_n": 31,
                 "candidate_value": 412.0, "baseline_value": 24.1,
                 "reason": "candidate worse: e-value 335 >= 333"},
            ],
        },
        "summary": "sequential: FAIL error_rate=PASS(0.95) latency=FAIL(335)",
        "verdict": "FAIL",
        "numbers": {"candidate_requests": 33.0, "stable_requests": 640.0, "elapsed_s": 12.5,
                    "e_error_rate": 0.95, "e_latency": 335.0, "threshold": 333.333, "restore_ms": 6.1},
    },
)  # fmt: skip


def _metric(name: str, e: float, verdict: Verdict, threshold: float = 250.0) -> MetricVerdict:
    return MetricVerdict(name, E_PROCESS, verdict, e, threshold, 40, 700, 0.0, 0.0, f"{name} {verdict.value}")


def _judgement(e: float, verdict: Verdict = Verdict.INCONCLUSIVE) -> Judgement:
    return Judgement("sequential", [_metric("error_rate", e, verdict), _metric("latency", 1.0, Verdict.PASS)])


def _record(
    detail: dict[str, Any], status: StepStatus, *, output: dict[str, Any] | None = None
) -> StepRecord:
    return StepRecord(RUN, 6, "canary-25", status, 1, None, "2025-01-08T12:01:00.000000+00:00", 30.0,
                      None if status is StepStatus.DONE else "failed", detail, output or {})  # fmt: skip


def _sample(requests: int, errors: int = 0, latency_ms: float = 20.0) -> ArmSample:
    return ArmSample.of([Observation(500 if i < errors else 200, latency_ms) for i in range(requests)])


# -- the trail ----------------------------------------------------------------------------------------


def test_the_trail_keeps_every_consultation_while_there_is_room() -> None:
    trail = EvidenceTrail(shifted_at=1000.0)
    for i in range(5):
        trail.record(i * 0.2, _judgement(1.0 + i), 10 * i, 200 * i)
    d = trail.as_dict()
    assert d["t"] == [0.0, 0.2, 0.4, 0.6, 0.8] and d["every"] == 1 and d["consultations"] == 5
    assert d["candidate_n"] == [0, 10, 20, 30, 40] and d["shifted_at"] == 1000.0
    assert d["metrics"]["error_rate"] == {
        "test": E_PROCESS,
        "threshold": 250.0,
        "statistic": [1.0, 2.0, 3.0, 4.0, 5.0],
        "verdicts": "IIIII",
    }


@pytest.mark.parametrize("n", [119, 120, 121, 500, 3001])
def test_the_trail_is_bounded_evenly_thinned_and_ends_with_the_newest_consultation(n: int) -> None:
    trail = EvidenceTrail()
    for i in range(n):
        trail.record(float(i), _judgement(float(i)), i, i)
    t = trail.as_dict()["t"]
    assert len(t) <= MAX_POINTS and t[0] == 0.0 and t[-1] == n - 1
    gaps = {b - a for a, b in itertools.pairwise(t[:-1])}
    assert gaps == {float(trail.every)}  # evenly spaced (the newest point may come sooner)
    assert len(t) >= MAX_POINTS // 2 or n < MAX_POINTS // 2


def test_the_trail_writes_json_without_nan_or_infinity() -> None:
    trail = EvidenceTrail()
    trail.record(0.2, _judgement(math.inf, Verdict.FAIL), 1, 1)
    trail.record(0.4, Judgement("sequential", [_metric("error_rate", math.nan, Verdict.PASS)]), 1, 1)
    d = trail.as_dict()
    json.dumps(d, allow_nan=False)
    assert d["metrics"]["error_rate"]["statistic"] == [INFINITY, None]
    assert d["metrics"]["latency"]["verdicts"] == "P-"  # not judged at the second consultation


# -- reading step records -----------------------------------------------------------------------------


def test_a_step_recorded_before_the_trail_gives_one_point_the_final_judgement() -> None:
    latency = canary_evidence([LEGACY_FAILED])[1]
    assert (latency.metric, latency.step, latency.step_index) == ("latency", "canary-5", 5)
    assert [(p.t, p.value, p.verdict, p.candidate_n, p.baseline_n) for p in latency.points] == [
        (12.5, 335.0, "FAIL", 33, 31)
    ]
    assert latency.threshold == pytest.approx(333.333, abs=1e-3) and latency.higher_is_worse
    assert latency.pass_below == pytest.approx(math.sqrt(333.3333333333333))
    assert (latency.decision, latency.decision_verdict, latency.decided_t) == ("rollback", "FAIL", 12.5)
    assert latency.decided_at == LEGACY_FAILED.finished_at  # no shift time recorded: the step's end
    assert latency.decisive and latency.scale == "log" and latency.consultations is None
    error_rate = canary_evidence([LEGACY_FAILED])[0]
    assert error_rate.verdict == "PASS" and not error_rate.decisive


def test_steps_that_are_not_judged_phases_give_nothing() -> None:
    others = [
        _record({"verdict": "PASS", "numbers": {"p99_ms": 120.0}}, StepStatus.DONE),  # a gate
        _record({"skipped": "already live"}, StepStatus.DONE),
        _record({"not_judged": "rollback of rel-1"}, StepStatus.DONE),
        _record({"wait_for": "data"}, StepStatus.WAITING),  # a phase still judging
        _record(
            {"verdict": "FAIL", "numbers": {"restore_ms": 4.0}}, StepStatus.FAILED
        ),  # unhealthy, no trail
        _record({"shadow": {"requests": 40}, "verdict": "PASS", "reasons": []}, StepStatus.DONE),
    ]
    assert canary_evidence(others) == []


def _consulted(
    candidate: ArmSample, stable: ArmSample, elapsed: float, trail: EvidenceTrail
) -> rollout_executor.Consultation:
    """One real consultation of the real judge, recorded on ``trail`` as ``run_phase`` does."""

    class _Window:
        candidate_sample, stable_sample, baseline_sample = candidate, stable, ArmSample()
        baseline = None
        first_candidate_error_at = None
        cursor = 0

        def read(self) -> int:
            return 0

    judge = SequentialJudge(JudgeSettings(alpha=0.01, min_requests=10))
    c = consult(judge, PHASE, _Window(), elapsed)
    trail.record(c.elapsed_s, c.judgement, c.candidate.requests, c.baseline.requests)
    return c


def test_a_passed_phase_reads_back_per_metric_with_its_points_and_decision() -> None:
    trail = EvidenceTrail(shifted_at=1736337600.0)
    for i in range(1, 20):
        c = _consulted(_sample(6 * i), _sample(114 * i), 0.2 * i, trail)
        if c.action is not Action.EXTEND:
            break
    assert c.action is Action.PROCEED and i == 5  # the phase's 30 candidate requests
    outcome = Outcome.done(
        {"shifted_at": 1736337600.0, "verdict": "PASS"},
        verdict=c.verdict,
        numbers=c.numbers(),
        detail={**c.detail(), "evidence": trail.as_dict()},
    )  # what run_phase's `_passed` returns; the engine records `recorded_detail()`
    series = canary_evidence([_record(outcome.recorded_detail(), StepStatus.DONE, output=outcome.output)])
    assert [s.metric for s in series] == ["error_rate", "latency", "fallback_rate", "guardrail_rate",
                                          "thumbs_down_rate"]  # fmt: skip
    error_rate = series[0]
    assert [p.t for p in error_rate.points] == pytest.approx([0.2 * i for i in range(1, 6)])
    assert [p.candidate_n for p in error_rate.points] == [6 * i for i in range(1, 6)]
    assert error_rate.points[0].verdict == "INCONCLUSIVE"  # too little data at first
    assert error_rate.points[-1].verdict == "PASS" and error_rate.points[-1].value == 1.0
    assert (error_rate.decision, error_rate.decision_verdict) == ("proceed", "PASS")
    assert error_rate.decided_t == pytest.approx(1.0) and error_rate.consultations == 5
    assert error_rate.started_at == "2025-01-08T12:00:00.000000+00:00"
    assert error_rate.decided_at == "2025-01-08T12:00:01.000000+00:00"
    assert error_rate.threshold == pytest.approx(250.0) and error_rate.decisive
    assert error_rate.decision_point == error_rate.points[-1]
    assert error_rate.label() == "proceed (PASS) at 1.0 s"
    doc = json.loads(json.dumps([s.as_dict() for s in series], allow_nan=False))
    assert set(doc[0]) >= {"metric", "points", "threshold", "higher_is_worse", "decision", "decided_t"}


def test_approved_rejected_and_stopped_phases_say_so() -> None:
    trail = EvidenceTrail(shifted_at=1000.0)
    c = _consulted(_sample(3), _sample(60), 301.0, trail)  # too little data by the deadline
    assert c.action is Action.ASK_APPROVAL
    detail = {**c.detail(), "evidence": trail.as_dict()}
    approved = Outcome.done(verdict=c.verdict, numbers=c.numbers(), detail={**detail, "approved_by": ["bo"]})
    rejected = Outcome.failed(
        "rejected by bo", verdict=Verdict.INCONCLUSIVE, numbers=c.numbers(), detail=detail
    )
    stopped = Outcome.failed("candidate gone", verdict=Verdict.FAIL, numbers={"restore_ms": 5.0},
                             detail={"evidence": trail.as_dict()})  # fmt: skip
    decisions = [
        (s.decision, s.decision_verdict, s.decisive)
        for o, status in (
            (approved, StepStatus.DONE),
            (rejected, StepStatus.FAILED),
            (stopped, StepStatus.FAILED),
        )
        for s in canary_evidence([_record(o.recorded_detail(), status)])[:1]
    ]
    assert decisions == [
        ("approved", "INCONCLUSIVE", True),
        ("rejected", "INCONCLUSIVE", True),
        ("stopped", "FAIL", False),  # the judge did not decide it
    ]
    (stopped_series, *_) = canary_evidence([_record(stopped.recorded_detail(), StepStatus.FAILED)])
    assert stopped_series.decided_t == 301.0  # the last consultation before the stop


def test_hostile_or_broken_details_do_not_break_the_reader() -> None:
    broken = _record(
        {"judgement": {"metrics": [{"metric": "<x>", "statistic": "nan?", "threshold": None}, "junk"]},
         "evidence": {"t": [0.1, None, "x"], "metrics": {"<x>": {"statistic": [1.0]}, "y": "junk"}}},
        StepStatus.FAILED,
    )  # fmt: skip
    (series,) = canary_evidence([broken])
    assert series.metric == "<x>" and series.threshold is None and series.decision == "rollback"
    assert [(p.t, p.value) for p in series.points] == [(0.1, 1.0)]
    json.dumps(series.as_dict(), allow_nan=False)
    odd = {
        "judgement": {"metrics": 5},
        "evidence": {"t": 3, "metrics": {"e": {"statistic": 7, "verdicts": 1}}},
    }
    (series,) = canary_evidence([_record(odd, StepStatus.DONE)])
    assert (series.metric, series.points, series.decision) == ("e", (), "proceed")


# -- the real analysis, driven by the real engine -----------------------------------------------------


class _Compute:
    """Weights and health of a two-revision service (what ``Canary`` asks of ``Compute``)."""

    def __init__(self) -> None:
        self.weights: dict[str, float] = {"old": 100.0}

    def set_weights(self, service: str, weights: dict[str, float]) -> dict[str, float]:
        self.weights = dict(weights)
        return self.weights

    def status(self, service: str) -> ServiceStatus:
        revisions = tuple(
            RevisionStatus(name, "sha256:0", 1, RevisionHealth.HEALTHY, None, self.weights.get(name, 0.0), ())
            for name in ("old", "new")
        )
        return ServiceStatus(service, "http://127.0.0.1:1", revisions, self.weights, None)


class _TrafficClock(FakeClock):
    """Each sleep (the phase's 0.2 s tick, the engine's poll) lets 19 stable and 1 candidate request
    reach the router; ``candidate_fails`` says whether the candidate's fail."""

    def __init__(self, metrics: InMemoryMetrics, candidate_fails: Callable[[int], bool]) -> None:
        super().__init__()
        self.metrics, self.fails, self.seq = metrics, candidate_fails, 0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        now = self.now().timestamp()
        for i in range(20):
            self.seq += 1
            revision = "new" if i == 0 else "old"
            status = 500 if revision == "new" and self.fails(self.seq) else 200
            self.metrics.record(
                "chat", RequestOutcome(self.seq, now, OutcomeKind.REQUEST, revision, status, 20.0)
            )


class _Time:
    """``time`` as the phase sees it, moved by the engine's fake clock (ticks are 0.2 s apart)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def time(self) -> float:
        return self.clock.now().timestamp()

    monotonic = perf_counter = time


def _run_phase_for_real(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, candidate_fails: Callable[[int], bool]
) -> list[StepRecord]:
    metrics = InMemoryMetrics()
    clock = _TrafficClock(metrics, candidate_fails)
    monkeypatch.setattr(phases, "time", _Time(clock))
    monkeypatch.setattr(rollout_executor, "time", _Time(clock))
    plan = plan_for(Strategy.CANARY, steps=(5, 100), min_requests=10, max_step_s=60)
    canary = Canary(_Compute(), metrics, "chat", "old", "new", 0.01, 10, 0)  # type: ignore[arg-type]
    memory = PhaseMemory()

    def step(ctx: StepContext) -> Outcome:
        return run_phase(ctx, plan.phases[0], plan, canary, memory)

    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        engine = Executor(store, clock=clock, heartbeat=False, poll_seconds=1.0)
        final = engine.run(
            Pipeline("evidence-test", (Step("canary-5", step),)),
            environment="dev",
            target="evidence-test",
            requester="ann",
            policy=default_policy().for_run("dev", "evidence-test"),
        )
        with store.transaction() as conn:
            steps = store.steps(conn, final.id)
    finally:
        store.close()
    return steps


def test_a_failing_candidate_judged_by_the_real_phase_leaves_its_evidence_in_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = _run_phase_for_real(tmp_path, monkeypatch, lambda seq: True)  # every candidate request fails
    (step,) = steps
    assert step.status is StepStatus.FAILED and step.detail["verdict"] == "FAIL"
    assert step.detail["evidence"]["consultations"] >= 10  # the judge was consulted at every tick
    series = {s.metric: s for s in canary_evidence(steps)}
    errors = series["error_rate"]
    assert (errors.decision, errors.verdict, errors.decisive) == ("rollback", "FAIL", True)
    values = [p.value for p in errors.points]
    assert len(values) == step.detail["evidence"]["consultations"]  # fewer than MAX_POINTS: all kept
    assert values[0] == 1.0 and values[-1] is not None and values[-1] >= errors.threshold  # type: ignore[operator]
    assert all(b >= a for a, b in itertools.pairwise(values))  # type: ignore[operator]
    ts = [p.t for p in errors.points]
    assert ts == sorted(ts) and ts[1] - ts[0] == pytest.approx(0.2)  # one point per 0.2 s tick
    assert errors.decided_t == pytest.approx(ts[-1], abs=1e-3)
    assert errors.decision_point == errors.points[-1]
    assert errors.points[0].verdict == "INCONCLUSIVE" and errors.points[-1].verdict == "FAIL"
    assert step.detail["numbers"]["elapsed_s"] == pytest.approx(ts[-1], abs=1e-3)  # numbers unchanged
    assert series["latency"].verdict == "PASS" and not series["latency"].decisive


def test_a_healthy_candidate_judged_by_the_real_phase_proceeds_with_its_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = _run_phase_for_real(tmp_path, monkeypatch, lambda seq: False)
    (step,) = steps
    assert step.status is StepStatus.DONE and step.detail["verdict"] == "PASS"
    errors = canary_evidence(steps)[0]
    assert errors.decision == "proceed" and errors.points[-1].candidate_n == 10  # PASS at min_requests
    assert errors.started_at is not None and errors.decided_at is not None
    assert all(p.value is not None and p.value <= 1.0 for p in errors.points)
