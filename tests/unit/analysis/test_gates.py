"""The pinned-load error gate: an exact one-sided binomial test."""

from __future__ import annotations

import random

import pytest

from mangaassist.delivery.analysis.gates import binomial_tail, errors_allowed, too_many_errors


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
