"""Canary judges: decisions are pure, so these are fast and exact (seeded where random)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis import (
    ArmSample,
    JudgeSettings,
    MannWhitneyJudge,
    Observation,
    SequentialJudge,
    ThresholdJudge,
    e_value,
)
from mangaassist.delivery.analysis.baselines import mann_whitney_greater
from mangaassist.delivery.analysis.samples import BUCKETS, buckets_of


def arm(n: int, errors: int = 0, median_ms: float = 80.0, fallbacks: int = 0, seed: int = 0) -> ArmSample:
    rng = np.random.default_rng(seed)
    s = ArmSample(requests=n, errors=errors, fallbacks=fallbacks)
    s.latency += np.bincount(buckets_of(rng.lognormal(np.log(median_ms), 0.3, n)), minlength=BUCKETS)
    return s


def test_too_little_data_is_inconclusive_never_fail() -> None:
    judge = SequentialJudge(JudgeSettings(min_requests=30))
    verdict = judge.judge(arm(10, errors=10), arm(5000, errors=0))
    assert verdict.verdict is Verdict.INCONCLUSIVE
    assert all("too little data" in m.reason for m in verdict.metrics)


def test_clearly_broken_candidate_fails_with_its_numbers() -> None:
    judgement = SequentialJudge().judge(arm(300, errors=60), arm(6000, errors=60))
    assert judgement.verdict is Verdict.FAIL
    (failing,) = [m for m in judgement.failing if m.metric == "error_rate"]
    assert failing.test == "event-share e-process"
    assert failing.statistic >= failing.threshold
    assert (failing.candidate_n, failing.baseline_n) == (300, 6000)
    assert failing.candidate_value == pytest.approx(0.2)
    assert failing.as_dict()["verdict"] == "FAIL"


def test_slow_candidate_fails_on_latency_only() -> None:
    judgement = SequentialJudge().judge(arm(400, median_ms=160, seed=1), arm(8000, median_ms=80, seed=2))
    verdicts = {m.metric: m.verdict for m in judgement.metrics}
    assert verdicts["latency"] is Verdict.FAIL
    assert verdicts["error_rate"] is Verdict.PASS


@settings(max_examples=200, deadline=None)
@given(
    n_c=st.integers(30, 5000),
    ratio=st.integers(1, 40),
    rate=st.floats(0.0, 0.2),
)
def test_a_candidate_exactly_as_good_is_never_failed(n_c: int, ratio: int, rate: float) -> None:
    """When the candidate's share of events equals its share of traffic, every e-value is below 1."""
    n_b = n_c * ratio
    x_c = round(rate * n_c)
    x_b = x_c * ratio
    assert e_value(x_c, x_b, n_c / (n_c + n_b), rho_min=1.5) <= 1.0
    judgement = SequentialJudge().judge(ArmSample(n_c, x_c), ArmSample(n_b, x_b))
    assert judgement.verdict is not Verdict.FAIL


@settings(max_examples=200, deadline=None)
@given(
    n_c=st.integers(200, 3000),
    ratio=st.integers(1, 20),
    base_rate=st.floats(0.0, 0.05),
    extra=st.floats(0.2, 0.8),
)
def test_a_clearly_broken_candidate_is_always_failed(
    n_c: int, ratio: int, base_rate: float, extra: float
) -> None:
    n_b = n_c * ratio
    candidate = ArmSample(n_c, round((base_rate + extra) * n_c))
    baseline = ArmSample(n_b, round(base_rate * n_b))
    assert SequentialJudge().judge(candidate, baseline).verdict is Verdict.FAIL


def _aa_false_failures(judge: SequentialJudge | MannWhitneyJudge, deployments: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    failures = 0
    for _ in range(deployments):
        c, b = ArmSample(), ArmSample()
        for _look in range(30):  # 30 looks, each after 10 s at 50 req/s with a 5% canary
            for sample, n in ((c, rng.poisson(25)), (b, rng.poisson(475))):
                sample.requests += int(n)
                sample.errors += int(rng.binomial(n, 0.01))
                sample.fallbacks += int(rng.binomial(n, 0.05))
                sample.latency += np.bincount(
                    buckets_of(rng.lognormal(np.log(80), 0.5, n)), minlength=BUCKETS
                )
            if judge.judge(c, b).verdict is Verdict.FAIL:
                failures += 1
                break
    return failures


def test_peeking_inflates_mann_whitney_but_not_the_sequential_judge() -> None:
    sequential = _aa_false_failures(SequentialJudge(), 300, seed=11)
    peeked = _aa_false_failures(MannWhitneyJudge(), 300, seed=11)
    assert sequential <= 3  # <= 1% of 300
    assert peeked >= 15  # >= 5%: the reason the sequential judge exists


def test_a_healthy_candidate_at_a_trickle_is_never_rolled_back() -> None:
    """0.1 requests/s for a day, looked at every minute: the guarantee holds at any traffic level."""
    rng = np.random.default_rng(5)
    judge = SequentialJudge()
    c, b = ArmSample(), ArmSample()
    for _minute in range(24 * 60):
        for sample in (c, b):
            n = int(rng.poisson(3))  # 0.1 req/s, split evenly
            sample.add_feedback("up") if n and rng.random() < 0.1 else None
            for _ in range(n):
                sample.add(Observation(500 if rng.random() < 0.02 else 200, float(rng.lognormal(4, 0.5))))
        assert judge.judge(c, b).verdict is not Verdict.FAIL


def test_histogram_mann_whitney_matches_scipy() -> None:
    rng = np.random.default_rng(9)
    c_vals = rng.integers(0, 12, 300)
    b_vals = rng.integers(0, 10, 900)
    ours = mann_whitney_greater(np.bincount(c_vals, minlength=12), np.bincount(b_vals, minlength=12))
    theirs = mannwhitneyu(c_vals, b_vals, alternative="greater", method="asymptotic").pvalue
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_threshold_judge_ignores_the_baseline() -> None:
    judgement = ThresholdJudge().judge(arm(100, errors=2), arm(100, errors=50))
    assert {m.metric: m.verdict for m in judgement.metrics}["error_rate"] is Verdict.FAIL


def test_samples_from_observations() -> None:
    sample = ArmSample.of(
        [Observation(200, 10.0), Observation(503, 20.0, fallback=True), Observation(0, 30.0, guardrail=True)]
    )
    assert (sample.requests, sample.errors, sample.fallbacks, sample.guardrails) == (3, 2, 1, 1)
    assert 19.0 < sample.quantile_ms(0.5) < 22.0
    merged = sample.merged(sample)
    assert merged.requests == 6 and int(merged.latency.sum()) == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0},
        {"alpha": 1.5},
        {"min_requests": 0},
        {"alpha_weights": (0.5, 0.5)},
        {"alpha_weights": (0.4, 0.3, 0.1, 0.1, 0.2)},
        {"pass_p": 1.0},
        {"pass_p": -0.1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"alpha|min_requests|pass_p"):
        JudgeSettings(**kwargs)  # type: ignore[arg-type]


def test_across_periods_latency_is_not_compared() -> None:
    from dataclasses import replace

    slow, fast = arm(400, median_ms=160, seed=1), arm(8000, median_ms=80, seed=2)
    settings = replace(JudgeSettings(), compare_latency=False)
    judgement = SequentialJudge(settings).judge(slow, fast)
    assert {m.metric for m in judgement.metrics} == {
        "error_rate",
        "fallback_rate",
        "guardrail_rate",
        "thumbs_down_rate",
    }
    assert judgement.verdict is Verdict.PASS
    broken = SequentialJudge(settings).judge(arm(300, errors=60), arm(6000, errors=60))
    assert broken.verdict is Verdict.FAIL  # errors are still judged


def test_a_much_slower_candidate_is_not_passed_at_the_minimum_sample() -> None:
    """20 requests each at equal shares (a 5% candidate against its 5% baseline), the candidate's
    median several times the baseline's: the latency e-process has not crossed its thresholds yet,
    but the observed slowdown is far beyond +20%, so the metric is INCONCLUSIVE (the step goes on),
    not PASS; with more of the same data it FAILs. An equally fast candidate PASSes."""
    judge = SequentialJudge(JudgeSettings(min_requests=20))
    early = judge.judge(arm(20, median_ms=460, seed=3), arm(20, median_ms=60, seed=4))
    latency = next(m for m in early.metrics if m.metric == "latency")
    assert latency.verdict is Verdict.INCONCLUSIVE and latency.statistic < latency.threshold
    assert "slower than the smallest change that matters" in latency.reason
    later = judge.judge(arm(120, median_ms=460, seed=5), arm(120, median_ms=60, seed=6))
    assert next(m for m in later.metrics if m.metric == "latency").verdict is Verdict.FAIL
    same = judge.judge(arm(20, median_ms=60, seed=7), arm(20, median_ms=60, seed=8))
    assert next(m for m in same.metrics if m.metric == "latency").verdict is Verdict.PASS


def test_latency_is_judged_against_the_latency_baseline_when_given() -> None:
    """The candidate (5% share) is 30% slower than the busy stable revision but as fast as a
    baseline with its own share: with that baseline the latency metric PASSes."""
    judge = SequentialJudge(JudgeSettings(min_requests=30))
    candidate, busy, same_share = (
        arm(400, median_ms=104, seed=9), arm(8000, median_ms=80, seed=10), arm(400, median_ms=104, seed=11)
    )
    against_stable = next(m for m in judge.judge(candidate, busy).metrics if m.metric == "latency")
    assert against_stable.verdict is Verdict.FAIL
    fair = next(m for m in judge.judge(candidate, busy, same_share).metrics if m.metric == "latency")
    assert fair.verdict is Verdict.PASS and fair.baseline_n == 400


def test_a_rate_that_looks_worse_is_not_passed_at_the_minimum_sample() -> None:
    """A 50% step, 30 requests each: 8 candidate errors against none. The error e-process is below
    its doubt line (each event at 50% is weak evidence), but 8 of 8 events on a 50% share has
    p = 0.004: the metric stays INCONCLUSIVE (the step goes on) instead of PASSing a candidate that
    fails a quarter of its requests. With the guard off it PASSes: the guard is what holds it."""
    candidate, stable = arm(30, errors=8, seed=1), arm(30, errors=0, seed=2)
    errors = next(m for m in SequentialJudge().judge(candidate, stable).metrics if m.metric == "error_rate")
    assert errors.verdict is Verdict.INCONCLUSIVE and errors.statistic < errors.threshold
    assert "8 of 8 events on the candidate" in errors.reason
    off = SequentialJudge(JudgeSettings(pass_p=0.0)).judge(candidate, stable)
    assert next(m for m in off.metrics if m.metric == "error_rate").verdict is Verdict.PASS
    one = SequentialJudge().judge(arm(30, errors=1, seed=1), arm(30, errors=0, seed=2))
    assert next(m for m in one.metrics if m.metric == "error_rate").verdict is Verdict.PASS  # p = 0.5


def _drill(judge: SequentialJudge, rng: np.random.Generator, candidate_error_rate: float) -> str:
    """A 50% step at 20 req/s looked at every 0.2 s for 40 s, stable clean: the first decision
    (PASS needs 30 candidate requests, as the CD-03 drill's settings)."""
    c, b = ArmSample(), ArmSample()
    for _look in range(200):
        n = int(rng.poisson(4))
        n_c = int(rng.binomial(n, 0.5))
        c.requests += n_c
        c.errors += int(rng.binomial(n_c, candidate_error_rate))
        b.requests += n - n_c
        if min(c.requests, b.requests) == 0:
            continue
        errors = next(m for m in judge.judge(c, b).metrics if m.metric == "error_rate")
        if errors.verdict is Verdict.FAIL:
            return "FAIL"
        if errors.verdict is Verdict.PASS and c.requests >= 30:
            return "PASS"
    return "INCONCLUSIVE"


def test_a_candidate_failing_40_percent_is_failed_at_a_50_percent_step_not_passed() -> None:
    """The CD-03 canary drill's conditions, simulated 300 times: without the rate guard about one
    drill in ten PASSed the broken candidate; with it none of these do, and a clean one still PASSes."""
    judge = SequentialJudge(JudgeSettings(min_requests=10))
    unguarded = SequentialJudge(JudgeSettings(min_requests=10, pass_p=0.0))
    rng = np.random.default_rng(3)
    guarded_runs = [_drill(judge, rng, 0.4) for _ in range(300)]
    unguarded_runs = [_drill(unguarded, rng, 0.4) for _ in range(300)]
    assert guarded_runs.count("PASS") <= 2 and guarded_runs.count("FAIL") >= 295
    assert unguarded_runs.count("PASS") >= 10  # the weakness the guard closes
    assert [_drill(judge, rng, 0.0) for _ in range(50)].count("PASS") == 50
