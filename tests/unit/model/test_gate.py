"""The intent model's evaluation gate (``model_metrics_gate`` under the limits of ``GateConfig``):
pure decisions over measured metrics, and the config's validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mangaassist.chatbot.intent import AUGMENT_COPIES, AUGMENT_SEED, HYPERPARAMS, NGRAMS
from mangaassist.chatbot.intent_training import TrainingConfig
from mangaassist.core.errors import ConfigError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.gates import Comparison, GateResult, model_metrics_gate
from mangaassist.delivery.model_gate import GateConfig

ROOT = Path(__file__).resolve().parents[3]
CONFIG = GateConfig.from_mapping(
    {
        "metrics": {
            "macro_f1": {"min": 0.88, "max_drop": 0.01},
            "recall_human_handoff": {"min": 0.90, "max_drop": 0.02},
            "ece": {"max": 0.15, "max_rise": 0.03},
            "p99_latency_ms": {"max": 25},
            "size_mb": {"max": 0.5},
        }
    }
)
CHAMPION = {
    "macro_f1": 0.92,
    "recall_human_handoff": 0.97,
    "ece": 0.09,
    "p99_latency_ms": 0.5,
    "size_mb": 0.01,
}


def _with(**changes: float) -> dict[str, float]:
    return {**CHAMPION, **changes}


def gate(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    config: GateConfig = CONFIG,
    **versions: str,
) -> GateResult:
    return model_metrics_gate(candidate, champion, config.limits, **versions)


def rows(result: GateResult) -> list[dict[str, Any]]:
    """The side-by-side table the CLI, the demo and ``deploy model --json`` read."""
    table: list[dict[str, Any]] = result.report["rows"]
    return table


def test_a_better_candidate_passes_with_one_row_per_metric() -> None:
    report = gate(_with(macro_f1=0.93, recall_human_handoff=1.0), CHAMPION, CONFIG)
    assert report.verdict is Verdict.PASS and report.reasons == ()
    assert [r["metric"] for r in rows(report)] == [
        "macro_f1",
        "recall_human_handoff",
        "ece",
        "p99_latency_ms",
        "size_mb",
    ]
    first = rows(report)[0]
    assert (first["champion"], first["candidate"], first["ok"]) == (0.92, 0.93, True)
    assert first["limit"] == ">= 0.88, >= champion - 0.01"
    # every limit is one check: min and max_drop for macro_f1, the drop's bound from the champion
    f1 = [c for c in report.checks if c.name == "macro_f1"]
    assert [(c.comparison, c.limit, c.baseline) for c in f1] == [
        (Comparison.AT_LEAST, 0.88, None),
        (Comparison.AT_LEAST, pytest.approx(0.91), 0.92),
    ]
    assert report.numbers()["macro_f1"] == 0.93 and report.numbers()["size_mb"] == 0.01


def test_a_drop_within_the_tolerance_passes_and_beyond_it_fails() -> None:
    assert gate(_with(macro_f1=0.91), CHAMPION, CONFIG).passed  # exactly champion - 0.01
    report = gate(_with(macro_f1=0.9099), CHAMPION, CONFIG)
    assert report.verdict is Verdict.FAIL
    assert report.reasons == ("macro_f1 0.9099 is more than 0.01 below the champion's 0.92",)


def test_missing_a_request_for_a_human_is_blocked_even_above_the_floor() -> None:
    # 0.9474 is above the 0.90 floor but 0.026 (one example of 38) below the champion
    report = gate(_with(recall_human_handoff=0.9474), CHAMPION, CONFIG)
    assert not report.passed
    assert "recall_human_handoff 0.9474 is more than 0.02 below" in report.reasons[0]


def test_absolute_limits_hold_without_a_champion() -> None:
    report = gate(_with(macro_f1=0.13, ece=0.28), None, CONFIG)
    assert report.verdict is Verdict.FAIL
    assert report.reasons == (
        "macro_f1 0.13 is below the minimum 0.88",
        "ece 0.28 is above the maximum 0.15",
    )
    assert all(r["champion"] is None for r in rows(report))
    assert rows(report)[0]["limit"] == ">= 0.88"  # no champion clause when there is none
    assert gate(CHAMPION, None, CONFIG).passed


def test_lower_is_better_metrics_compare_upwards() -> None:
    assert gate(_with(ece=0.12), CHAMPION, CONFIG).passed  # +0.03 is tolerated
    assert not gate(_with(ece=0.1201), CHAMPION, CONFIG).passed
    assert not gate(_with(p99_latency_ms=25.01), CHAMPION, CONFIG).passed
    assert not gate(_with(size_mb=0.6), CHAMPION, CONFIG).passed


def test_a_metric_the_candidate_lacks_fails_one_the_champion_lacks_is_not_compared() -> None:
    candidate = dict(CHAMPION)
    del candidate["ece"]
    report = gate(candidate, CHAMPION, CONFIG)
    assert report.reasons == ("ece: not measured for the candidate",)
    assert "ece" not in report.numbers()  # nothing measured, nothing recorded
    champion = dict(CHAMPION)
    del champion["ece"]
    report = gate(_with(ece=0.14), champion, CONFIG)
    assert report.passed
    ece_row = next(r for r in rows(report) if r["metric"] == "ece")
    assert ece_row["champion"] is None and "not compared" in ece_row["note"]


def test_a_limit_on_the_champion_alone_records_the_metric_without_a_champion() -> None:
    config = GateConfig.from_mapping({"metrics": {"macro_f1": {"max_drop": 0.01}}})
    alone = gate({"macro_f1": 0.5}, None, config)
    assert alone.passed and alone.checks == ()
    assert rows(alone)[0]["limit"] == "recorded only" and alone.numbers() == {"macro_f1": 0.5}
    assert gate({"macro_f1": 0.5}, {"macro_f1": 0.9}, config).reasons == (
        "macro_f1 0.5 is more than 0.01 below the champion's 0.9",
    )
    nan = gate({"macro_f1": float("nan")}, None, config)  # not a measurement: fails, recorded nowhere
    assert nan.reasons == ("macro_f1: not measured for the candidate",) and nan.numbers() == {}


def test_values_are_compared_as_recorded_to_four_decimals() -> None:
    assert gate(_with(macro_f1=0.91 - 1e-7), CHAMPION, CONFIG).passed


def test_report_as_dict_is_the_side_by_side_table() -> None:
    body: dict[str, Any] = gate(
        _with(macro_f1=0.5), CHAMPION, CONFIG, candidate_version="3", champion_version="2"
    ).as_dict()
    assert body["verdict"] == "FAIL" and body["candidate_version"] == "3"
    assert body["champion_version"] == "2" and len(body["reasons"]) == 2
    assert body["rows"][0] == {
        "metric": "macro_f1",
        "candidate": 0.5,
        "champion": 0.92,
        "limit": ">= 0.88, >= champion - 0.01",
        "ok": False,
        "note": "macro_f1 0.5 is below the minimum 0.88; "
        "macro_f1 0.5 is more than 0.01 below the champion's 0.92",
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "gate: expected a mapping"),
        ({"metric": {}}, "unknown key"),
        ({"metrics": {}}, "gate.metrics: expected a non-empty mapping"),
        ({"metrics": {"f2": {"min": 1}}}, "gate.metrics.f2: unknown metric"),
        ({"metrics": {"macro_f1": {"minimum": 0.8}}}, "gate.metrics.macro_f1.minimum: unknown limit"),
        ({"metrics": {"macro_f1": {"min": "high"}}}, "gate.metrics.macro_f1.min: expected a number"),
        ({"metrics": {"macro_f1": {"max_drop": -0.1}}}, "max_drop: must be >= 0"),
        ({"metrics": {"macro_f1": {"max_rise": 0.1}}}, "better when higher; use max_drop"),
        ({"metrics": {"ece": {"max_drop": 0.1}}}, "better when lower; use max_rise"),
        ({"metrics": {"ece": {"min": 0.5, "max": 0.1}}}, "min 0.5 is above max 0.1"),
        ({"metrics": {"ece": None}}, "gate.metrics.ece: expected a mapping"),
    ],
)
def test_config_errors_name_the_field(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GateConfig.from_mapping(raw)


def test_the_shipped_config_is_valid() -> None:
    config = TrainingConfig.load(ROOT / "ml" / "intent.yaml", ROOT)
    assert config.model_name == "intent" and config.train_path == ROOT / "ml/intents/train.jsonl"
    assert (config.C, config.max_iter, config.class_weight) == (8.0, 2000, "balanced")
    # the chatbot's in-process model (chatbot.intent) is the model the file trains
    assert config.hyperparameters() == HYPERPARAMS and config.ngrams() == NGRAMS
    assert (config.augment_copies, config.augment_seed) == (AUGMENT_COPIES, AUGMENT_SEED)
    limits = {limit.metric: limit for limit in GateConfig.load(ROOT / "ml" / "intent.yaml").limits}
    assert (
        limits["recall_human_handoff"].min is not None and limits["recall_human_handoff"].max_drop is not None
    )
    assert {"macro_f1", "ece", "p99_latency_ms", "size_mb"} <= set(limits)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {train_fraction: 1.5}", r"train_fraction: 1.5 is out of range \(>= 0.0 and <= 1.0\)"),
        ("data: {train_fraction: 0}", "train_fraction 0.0: expected a share in"),
        ("training: {C: -1}", r"C: -1 is out of range"),
        ("training: {max_iter: 10.5}", "max_iter: expected a whole number"),
        ("training: {class_weight: heavy}", "training.class_weight: expected 'balanced' or null"),
        ("training: {shuffle_labels: 1}", "training.shuffle_labels: expected true or false"),
        ("training: {learning_rate: 1}", r"training: unknown key\(s\) learning_rate"),
        ("training: {char_ngram_min_df: 0}", r"char_ngram_min_df: 0 is out of range \(>= 1\)"),
        ("training: {char_ngram_weight: -0.5}", r"char_ngram_weight: -0.5 is out of range \(>= 0.0\)"),
        ("training: {word_ngram_weight: heavy}", "word_ngram_weight: expected a number"),
        ("trainer: {}", r"unknown key\(s\) trainer"),
        ("model: 'my model'", "model: expected a name"),
        ("data: [1]", "data: expected a mapping"),
        ("data: {train: 3}", "data.train: expected a file path"),
        ("- a list", "expected a mapping with sections"),
        ("data: {", "not valid YAML"),
    ],
)
def test_training_config_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "intent.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        TrainingConfig.load(path, ROOT)
    assert str(path) in str(caught.value)


def test_command_line_overrides_are_validated() -> None:
    config = TrainingConfig.load(ROOT / "ml" / "intent.yaml", ROOT)
    assert config.with_overrides(train_fraction=0.7, shuffle_labels=True).train_fraction == 0.7
    with pytest.raises(ConfigError, match=r"train_fraction 1\.2"):
        config.with_overrides(train_fraction=1.2)


def test_absolute_limits_agree_with_mlflow_validate_evaluation_results() -> None:
    """MLflow's MetricThreshold(threshold=...) is the same rule as min/max here (see model_gate)."""
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import (
        ModelValidationFailedException,
        validate_evaluation_results,
    )

    thresholds = {
        "macro_f1": MetricThreshold(threshold=0.88, greater_is_better=True),  # type: ignore[no-untyped-call]
        "ece": MetricThreshold(threshold=0.15, greater_is_better=False),  # type: ignore[no-untyped-call]
    }
    config = GateConfig.from_mapping({"metrics": {"macro_f1": {"min": 0.88}, "ece": {"max": 0.15}}})
    for f1 in (0.87, 0.88, 0.93):
        for ece in (0.1, 0.15, 0.2):
            metrics = {"macro_f1": f1, "ece": ece}
            try:
                result = EvaluationResult(metrics=metrics, artifacts={})  # type: ignore[no-untyped-call]
                validate_evaluation_results(thresholds, result)
                mlflow_passed = True
            except ModelValidationFailedException:
                mlflow_passed = False
            assert gate(metrics, None, config).passed is mlflow_passed, metrics
