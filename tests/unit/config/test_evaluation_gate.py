"""CD-06's evaluation gate (``evaluation_gate``): a check that passes on the live config and fails
on the candidate is a regression and fails the gate; one failing on both does not."""

from __future__ import annotations

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.gates import (
    EvalScore,
    evaluation_gate,
    evaluation_status,
    regression_check,
)


def score(case: str, live: float, candidate: float, threshold: float = 0.8) -> EvalScore:
    return EvalScore("prompts", case, "cites_source", threshold, live, candidate)


def test_each_check_is_ok_a_regression_or_failing_on_both() -> None:
    assert evaluation_status(regression_check(score("a", 1.0, 0.9))) == "ok"
    assert evaluation_status(regression_check(score("a", 0.8, 0.8))) == "ok"  # at the threshold
    assert evaluation_status(regression_check(score("a", 0.8, 0.79))) == "regression"
    assert evaluation_status(regression_check(score("a", 0.5, 0.3))) == "failing on both"
    assert evaluation_status(regression_check(score("a", 0.2, 0.9))) == "ok"  # the candidate fixed it


def test_a_regression_fails_the_gate_with_its_case_and_check() -> None:
    result = evaluation_gate([score("greeting", 1.0, 1.0), score("returns-window", 1.0, 0.0)])
    assert result.verdict is Verdict.FAIL
    assert [c.name for c in result.failed] == ["returns-window/cites_source"]
    assert result.reasons == (
        "returns-window/cites_source passes on live and fails on the candidate (1.00 -> 0.00, threshold 0.8)",
    )
    assert result.numbers() == {"checks": 2.0, "regressions": 1.0}


def test_checks_failing_on_both_do_not_block() -> None:
    result = evaluation_gate([score("greeting", 1.0, 1.0), score("legacy", 0.4, 0.1)])
    assert result.verdict is Verdict.PASS and result.reasons == ()
    assert result.numbers() == {"checks": 2.0, "regressions": 0.0}
    legacy = result.checks[1]
    assert not legacy.passed and not legacy.blocking and legacy.baseline == 0.4


def test_rows_keep_the_columns_config_deploy_prints() -> None:
    result = evaluation_gate([score("returns-window", 1.0, 0.0), score("legacy", 0.4, 0.1)])
    rows = result.as_dict()["rows"]
    assert rows[0] == {
        "suite": "prompts",
        "case": "returns-window",
        "check": "cites_source",
        "threshold": 0.8,
        "live": 1.0,
        "candidate": 0.0,
        "status": "regression",
    }
    assert [r["status"] for r in rows] == ["regression", "failing on both"]


def test_no_suites_pass_with_nothing_checked() -> None:
    result = evaluation_gate([])
    assert result.passed and result.numbers() == {"checks": 0.0, "regressions": 0.0}
    assert result.as_dict()["rows"] == []
