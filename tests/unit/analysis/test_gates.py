"""The shared gate result (``GateCheck`` / ``GateResult``), the one comparison every gate decides
with (``check``), the step outcome built from a result, and CD-01's pinned-load gate (an exact
one-sided binomial test on the errors, a p99 budget)."""

from __future__ import annotations

import math
import random

import pytest

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.gates import (
    Comparison,
    GateResult,
    binomial_tail,
    check,
    errors_allowed,
    pinned_load_gate,
    too_many_errors,
)
from mangaassist.delivery.engine.model import StepOutcome
from mangaassist.delivery.pipelines.gating import gate_outcome

# -- the comparison and the result type ----------------------------------------------------------


def test_comparisons_hold_with_their_slack_and_never_on_nan() -> None:
    assert Comparison.AT_LEAST.holds(0.9, 0.9) and not Comparison.AT_LEAST.holds(0.8999, 0.9)
    assert Comparison.AT_LEAST.holds(0.9 - 1e-10, 0.9, eps=1e-9)
    assert Comparison.AT_MOST.holds(50.0, 50.0) and not Comparison.AT_MOST.holds(50.01, 50.0)
    assert Comparison.AT_MOST.holds(50.0 + 1e-10, 50.0, eps=1e-9)
    assert Comparison.EQUAL.holds(384, 384) and not Comparison.EQUAL.holds(383, 384)
    for comparison in Comparison:
        assert not comparison.holds(math.nan, 1.0)


def test_a_check_passes_or_fails_with_the_rule_and_a_reason() -> None:
    ok = check("mrr", 0.93, Comparison.AT_LEAST, 0.85, reason="too low")
    assert ok.passed and ok.reason == "" and ok.rule == ">= 0.85" and not ok.blocks
    low = check("mrr", 0.8, Comparison.AT_LEAST, 0.85)
    assert not low.passed and low.blocks and low.reason == "mrr 0.8 (>= 0.85)"
    worded = check("mrr", 0.8, Comparison.AT_LEAST, 0.85, reason="mrr too low", rule="at least 0.85")
    assert (worded.reason, worded.rule) == ("mrr too low", "at least 0.85")


def test_a_check_fails_when_unmeasured_without_a_limit_or_when_a_requirement_does_not_hold() -> None:
    missing = check("ece", None, Comparison.AT_MOST, 0.15)
    assert not missing.passed and missing.reason == "ece: not measured"
    assert not check("macro_f1", 0.9, Comparison.AT_LEAST, None).passed
    assert not check("chunk count", 10, Comparison.EQUAL, 10, requires=False).passed
    assert check("chunk count", 10, Comparison.EQUAL, 10, requires=True).passed


def test_the_result_fails_on_any_blocking_check_and_keeps_their_order() -> None:
    first = check("a", 1, Comparison.AT_LEAST, 2, reason="a is low")
    waived = check("b", 1, Comparison.AT_LEAST, 2, reason="b is low", blocking=False)
    fine = check("c", 3, Comparison.AT_LEAST, 2)
    last = check("d", 5, Comparison.AT_MOST, 2, reason="d is high")
    result = GateResult((first, waived, fine, last))
    assert result.verdict is Verdict.FAIL and not result.passed
    assert result.reasons == ("a is low", "d is high")
    assert result.failed == (first, last)
    assert GateResult((waived, fine)).verdict is Verdict.PASS  # a non-blocking miss does not fail it
    assert GateResult(()).passed  # nothing to object


def test_numbers_are_flat_floats_and_more_can_be_recorded() -> None:
    result = GateResult((), {"requests": 30, "p99_ms": 12.5})
    more = result.with_numbers(p50_ms=3.0)
    assert result.numbers() == {"requests": 30.0, "p99_ms": 12.5}
    assert more.numbers() == {"requests": 30.0, "p99_ms": 12.5, "p50_ms": 3.0}
    assert all(type(v) is float for v in more.numbers().values())


def test_as_dict_has_the_verdict_every_check_and_the_gates_own_report() -> None:
    low = check("mrr", 0.8, Comparison.AT_LEAST, 0.85, baseline=0.9)
    body = GateResult((low,), report={"rows": [1]}, candidate_version="v2", baseline_version="v1").as_dict()
    assert body["verdict"] == "FAIL" and body["reasons"] == ["mrr 0.8 (>= 0.85)"]
    assert (body["candidate_version"], body["baseline_version"], body["rows"]) == ("v2", "v1", [1])
    assert body["checks"] == [
        {
            "name": "mrr",
            "observed": 0.8,
            "comparison": ">=",
            "limit": 0.85,
            "baseline": 0.9,
            "rule": ">= 0.85",
            "passed": False,
            "blocking": True,
            "reason": "mrr 0.8 (>= 0.85)",
        }
    ]
    # a gate whose readers know its checks under other columns replaces the generic list
    assert GateResult((low,), report={"checks": ["kb row"]}).as_dict()["checks"] == ["kb row"]


def test_a_passing_result_is_a_done_step_with_verdict_numbers_and_detail() -> None:
    result = GateResult((check("a", 3, Comparison.AT_LEAST, 2),), {"a": 3})
    done = gate_outcome(result, output={"verdict": "PASS"}, failure="never used")
    assert done.kind is StepOutcome.DONE and done.output == {"verdict": "PASS"}
    assert done.verdict is Verdict.PASS and done.numbers == {"a": 3.0}
    assert done.detail == result.as_dict() and done.reason == ""


def test_a_failing_result_is_a_failed_step_with_the_given_reason() -> None:
    result = GateResult((check("a", 1, Comparison.AT_LEAST, 2),), {"a": 1})
    failed = gate_outcome(result, failure="gate failed: a", detail={"gate": "x"}, abort=True)
    assert failed.kind is StepOutcome.FAILED and failed.reason == "gate failed: a" and failed.abort
    assert failed.verdict is Verdict.FAIL and failed.numbers == {"a": 1.0}
    assert failed.detail == {"gate": "x"}
    assert not gate_outcome(result, failure="f").abort


# -- CD-01: the pinned load's error test -----------------------------------------------------------


def test_binomial_tail_matches_known_values() -> None:
    assert binomial_tail(0, 10, 0.3) == 1.0
    assert binomial_tail(11, 10, 0.3) == 0.0
    assert binomial_tail(10, 10, 0.5) == pytest.approx(0.5**10)
    assert binomial_tail(1, 30, 0.01) == pytest.approx(1 - 0.99**30)


def test_threshold_for_30_requests_at_1_percent() -> None:
    assert errors_allowed(30, 0.01, 0.001) == 3
    assert not too_many_errors(3, 30, 0.01, 0.001)
    assert too_many_errors(4, 30, 0.01, 0.001)
    assert not too_many_errors(0, 0, 0.01, 0.001)


def test_power_and_false_failures_by_simulation() -> None:
    rng = random.Random(7)

    def fail_share(p: float, trials: int = 4000) -> float:
        hits = 0
        for _ in range(trials):
            failed = sum(rng.random() < p for _ in range(30))
            hits += too_many_errors(failed, 30, 0.01, 0.001)
        return hits / trials

    assert fail_share(0.2) > 0.8  # a 20% error rate is stopped before users most of the time
    assert fail_share(0.001) < 0.001  # a healthy revision is practically never stopped


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        too_many_errors(1, 10, 1.5, 0.01)
    with pytest.raises(ValueError, match="alpha"):
        errors_allowed(0, 0.01, 1.0)  # even with nothing to test
    with pytest.raises(ValueError, match="rate"):
        _load(requests=0, succeeded=0, failed=0, error_rate=-0.1)


# -- CD-01: the pinned-load gate -------------------------------------------------------------------


def _load(
    *,
    requests: int = 30,
    succeeded: int = 30,
    failed: int = 0,
    p99_ms: float = 120.0,
    budget_ms: float = 300.0,
    error_rate: float = 0.01,
) -> GateResult:
    return pinned_load_gate(
        requests=requests,
        succeeded=succeeded,
        failed=failed,
        p99_ms=p99_ms,
        budget_ms=budget_ms,
        error_rate=error_rate,
        alpha=0.001,
        candidate_version="r2",
    )


def test_a_healthy_pinned_load_passes_and_records_its_numbers() -> None:
    result = _load(succeeded=27, failed=3)  # 3 of 30 still fit a 1% error rate
    assert result.verdict is Verdict.PASS and result.candidate_version == "r2"
    assert [c.name for c in result.checks] == ["succeeded", "failed", "p99_ms"]
    assert result.numbers() == {
        "requests": 30.0,
        "failed": 3.0,
        "failed_allowed": 3.0,
        "p99_ms": 120.0,
        "budget_ms": 300.0,
    }


def test_too_many_pinned_failures_fail_with_the_allowed_count() -> None:
    result = _load(succeeded=26, failed=4)
    assert result.verdict is Verdict.FAIL
    assert result.reasons == ("4 of 30 pinned requests failed (at most 3 fit an error rate of 1.0%)",)
    failed = next(c for c in result.checks if c.name == "failed")
    assert (failed.observed, failed.limit, failed.comparison) == (4, 3, Comparison.AT_MOST)


def test_a_p99_over_the_budget_fails_and_at_the_budget_passes() -> None:
    assert _load(p99_ms=300.0).passed
    assert _load(p99_ms=301.0).reasons == ("p99 301 ms over the budget of 300 ms",)


def test_a_load_where_nothing_succeeded_fails_even_with_few_requests() -> None:
    # one failure of one request fits a 1% error rate (P = 0.01 > alpha); nothing succeeded though
    result = _load(requests=1, succeeded=0, failed=1, p99_ms=-1.0)
    assert result.reasons == ("no request of the load test succeeded",)
    assert _load(requests=0, succeeded=0, failed=0, p99_ms=-1.0).reasons == (
        "no request of the load test succeeded",
    )


@pytest.mark.parametrize(("rate", "alpha"), [(0.01, 0.001), (0.05, 0.01), (0.0, 0.05), (0.2, 0.001)])
def test_the_allowed_count_is_exactly_the_binomial_test(rate: float, alpha: float) -> None:
    """``failed <= errors_allowed`` (the gate's check) decides as ``too_many_errors`` does."""
    for requests in range(0, 61):
        for failed in range(0, requests + 1):
            result = pinned_load_gate(
                requests=requests,
                succeeded=requests - failed + 1,  # keep the other checks out of the way
                failed=failed,
                p99_ms=1.0,
                budget_ms=2.0,
                error_rate=rate,
                alpha=alpha,
            )
            assert result.passed is not too_many_errors(failed, requests, rate, alpha), (requests, failed)
