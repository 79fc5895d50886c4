"""The CD-03 shadow gate (``pipelines.model.shadow_decision``) and the reading of router counters:
pure decisions over numbers, no platform."""

from __future__ import annotations

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.pipelines.model import (
    ShadowDecision,
    ShadowReading,
    ShadowSettings,
    shadow_decision,
)

SETTINGS = ShadowSettings(shadow_min_requests=100, shadow_min_agreement=0.85, shadow_p99_budget_ms=100)


def decide(
    reading: ShadowReading,
    elapsed_s: float = 10,
    champion: float | None = 0.9,
    candidate: float | None = 0.92,
) -> ShadowDecision | None:
    return shadow_decision(
        reading, SETTINGS, elapsed_s=elapsed_s, champion_accuracy=champion, candidate_accuracy=candidate
    )


def test_waits_for_enough_comparisons_then_inconclusive_after_the_limit() -> None:
    few = ShadowReading(requests=50, answered=50, compared=50, agreed=50, p99_ms=5)
    assert decide(few) is None
    late = decide(few, elapsed_s=SETTINGS.shadow_max_s)
    assert late is not None and late.verdict is Verdict.INCONCLUSIVE and "only 50" in late.reasons[0]


def test_agreement_above_the_threshold_passes() -> None:
    ok = decide(ShadowReading(requests=120, answered=120, compared=120, agreed=110, p99_ms=5))
    assert ok is not None and ok.verdict is Verdict.PASS and ok.reasons == ()


def test_disagreement_within_both_models_offline_errors_is_explained_by_the_gain() -> None:
    # 80% agreement: 20% disagreement <= (1 - 0.88) + (1 - 0.90) = 22%, and the candidate is better
    reading = ShadowReading(requests=100, answered=100, compared=100, agreed=80, p99_ms=5)
    explained = decide(reading, champion=0.88, candidate=0.90)
    assert explained is not None and explained.verdict is Verdict.PASS and explained.explained_by_offline
    # the same disagreement from a candidate worse offline, or beyond the bound, is not explained
    worse = decide(reading, champion=0.90, candidate=0.88)
    assert worse is not None and worse.verdict is Verdict.FAIL and "does not explain" in worse.reasons[0]
    beyond = decide(reading, champion=0.95, candidate=0.96)
    assert beyond is not None and beyond.verdict is Verdict.FAIL
    no_champion = decide(reading, champion=None)
    assert no_champion is not None and no_champion.verdict is Verdict.FAIL


def test_a_shuffled_label_model_fails_on_agreement() -> None:
    shuffled = decide(
        ShadowReading(requests=100, answered=100, compared=100, agreed=14, p99_ms=5), candidate=0.13
    )
    assert shuffled is not None and shuffled.verdict is Verdict.FAIL and "14.0%" in shuffled.reasons[0]


def test_any_mirrored_error_fails_at_once_and_latency_has_a_budget() -> None:
    failing = decide(ShadowReading(requests=3, answered=2, failed=1, compared=2, agreed=2, p99_ms=5))
    assert failing is not None and failing.verdict is Verdict.FAIL and "1 of 3" in failing.reasons[0]
    slow = decide(ShadowReading(requests=100, answered=100, compared=100, agreed=100, p99_ms=500))
    assert slow is not None and slow.verdict is Verdict.FAIL and "p99 500" in slow.reasons[0]


def test_reading_is_the_difference_of_two_counter_snapshots() -> None:
    buckets = [1.0, 5.0, 10.0, "+Inf"]
    before = {
        "requests": 10, "statuses": {"200": 10}, "errors": {}, "intent_compared": 10, "intent_agreed": 9,
        "latency": {"buckets_ms": buckets, "counts": [10, 0, 0, 0]}, "now": 100.0,
    }  # fmt: skip
    now = {
        "requests": 110, "statuses": {"200": 105, "500": 2}, "errors": {"timeout": 3},
        "intent_compared": 105, "intent_agreed": 94,
        "latency": {"buckets_ms": buckets, "counts": [10, 90, 7, 0]},
        "disagreements": [{"time": 99.0, "text": "old"}, {"time": 101.0, "text": "new"}],
    }  # fmt: skip
    r = ShadowReading.since(before, now)
    assert (r.requests, r.answered, r.failed, r.compared, r.agreed) == (100, 95, 5, 95, 85)
    assert r.p99_ms == 10.0 and [d["text"] for d in r.disagreements] == ["new"]
    assert r.numbers()["error_rate"] == 0.05


def test_bad_shadow_settings_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="shadow_share"):
        ShadowSettings.from_params({"shadow_share": 0})
    with pytest.raises(ConfigError, match="shadow_min_requests: expected a number"):
        ShadowSettings.from_params({"shadow_min_requests": "many"})
    assert ShadowSettings.from_params({"shadow_min_agreement": "0.5"}).shadow_min_agreement == 0.5
