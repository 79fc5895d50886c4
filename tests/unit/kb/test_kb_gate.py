"""CD-04's gate (``retrieval_gate``): the index's own checks, retrieval quality against the floors
and the live version, query latency; the table ``kb build`` prints and the numbers it records."""

from __future__ import annotations

from typing import Any

import pytest

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.gates import (
    Comparison,
    GateResult,
    RetrievalThresholds,
    check,
    retrieval_gate,
)

T = RetrievalThresholds()  # floors 0.90 / 0.85 / 0.88, tolerance 0.03, p95 50 ms
GOOD = {"recall_at_5": 0.98765, "mrr": 0.94, "ndcg_at_10": 0.95, "p95_ms": 3.14159, "questions": 94.0}


def table(result: GateResult) -> dict[str, dict[str, Any]]:
    rows: list[dict[str, Any]] = result.report["checks"]
    return {r["check"]: r for r in rows}


def test_a_good_first_version_passes_with_one_row_per_check() -> None:
    result = retrieval_gate(GOOD, None, T, candidate_version="kb-new")
    assert result.verdict is Verdict.PASS and result.report["failures"] == []
    rows = table(result)
    assert list(rows) == ["recall_at_5", "mrr", "ndcg_at_10", "query p95 ms"]
    assert rows["recall_at_5"] == {
        "check": "recall_at_5",
        "ok": True,
        "new": 0.9877,
        "live": None,
        "limit": ">= 0.9",
    }
    assert rows["query p95 ms"] == {
        "check": "query p95 ms",
        "ok": True,
        "new": 3.142,
        "live": None,
        "limit": "<= 50.0",
    }
    assert result.as_dict()["candidate_version"] == "kb-new"


def test_a_drop_beyond_the_tolerance_below_live_fails_even_above_the_floor() -> None:
    live = {**GOOD, "recall_at_5": 0.99}
    result = retrieval_gate({**GOOD, "recall_at_5": 0.95}, live, T)  # floor 0.90 met, live - 0.03 not
    assert result.verdict is Verdict.FAIL
    assert result.reasons == ("recall_at_5 0.95 (>= 0.9 and >= live - 0.03)",)
    row = table(result)["recall_at_5"]
    assert (row["ok"], row["new"], row["live"]) == (False, 0.95, 0.99)
    recall = next(c for c in result.checks if c.name == "recall_at_5")
    assert recall.limit == pytest.approx(0.96) and recall.baseline == 0.99
    assert retrieval_gate({**GOOD, "recall_at_5": 0.97}, live, T).passed  # within the tolerance


def test_the_floor_holds_when_live_was_worse() -> None:
    live = {**GOOD, "mrr": 0.5}
    result = retrieval_gate({**GOOD, "mrr": 0.84}, live, T)  # far above live, under the floor
    assert result.reasons == ("mrr 0.84 (>= 0.85 and >= live - 0.03)",)
    assert retrieval_gate({**GOOD, "mrr": 0.86}, live, T).passed


def test_query_latency_over_the_budget_fails() -> None:
    result = retrieval_gate({**GOOD, "p95_ms": 61.23456}, None, T)
    assert result.reasons == ("query p95 ms 61.235 (<= 50.0)",)
    assert retrieval_gate({**GOOD, "p95_ms": 61.0}, None, RetrievalThresholds(p95_ms=80)).passed


def test_live_figures_without_a_metric_compare_on_the_floor_only() -> None:
    # another embedding model's recorded figures may lack one: nothing to compare it with
    result = retrieval_gate(GOOD, {"recall_at_5": 0.99}, T)
    assert result.passed
    assert table(result)["mrr"]["live"] is None and table(result)["mrr"]["limit"] == ">= 0.85"


def test_the_index_checks_come_first_and_fail_the_gate() -> None:
    count = check(
        "chunk count",
        391,
        Comparison.EQUAL,
        392,
        baseline=390,
        rule="== 392 from sources; lost 1, unexpected 0, duplicated 0, stale 0",
        requires=False,
    )
    dimension = check("embedding dimension", 384, Comparison.EQUAL, 384, baseline=256)
    result = retrieval_gate(GOOD, None, T, structure=(count, dimension))
    assert result.reasons == (
        "chunk count 391 (== 392 from sources; lost 1, unexpected 0, duplicated 0, stale 0)",
    )
    assert list(table(result))[:2] == ["chunk count", "embedding dimension"]
    assert table(result)["chunk count"]["new"] == 391 and table(result)["chunk count"]["live"] == 390
    assert table(result)["embedding dimension"] == {
        "check": "embedding dimension",
        "ok": True,
        "new": 384,
        "live": 256,
        "limit": "== 384",
    }


def test_the_report_and_numbers_keep_what_kb_build_shows_and_the_audit_records() -> None:
    live = {**GOOD, "mrr": 0.99}
    result = retrieval_gate({**GOOD, "mrr": 0.9}, live, T, candidate_version="kb-2", baseline_version="kb-1")
    body = result.as_dict()
    assert body["verdict"] == "FAIL" and body["failures"] == list(result.reasons) == body["reasons"]
    assert body["new"]["mrr"] == 0.9 and body["live"] == live
    assert (body["candidate_version"], body["baseline_version"]) == ("kb-2", "kb-1")
    assert {"check", "new", "live", "limit", "ok"} == set(body["checks"][0])
    assert result.numbers() == {
        "recall_at_5": 0.9877,
        "mrr": 0.9,
        "ndcg_at_10": 0.95,
        "p95_ms": 3.1416,
        "questions": 94.0,
    }


def test_compared_unrounded_shown_rounded() -> None:
    # 0.899996 shows as 0.9 but is under the 0.90 floor: the comparison uses the measured value
    result = retrieval_gate({**GOOD, "recall_at_5": 0.899996}, None, T)
    assert not result.passed and table(result)["recall_at_5"]["new"] == 0.9
