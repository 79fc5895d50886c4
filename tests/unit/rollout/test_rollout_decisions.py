"""Rollout decisions (pure): plans per strategy, the phase rule, settings, the stats window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.rollout.executor import TrafficWindow, shift
from mangaassist.delivery.rollout.load import check_loopback
from mangaassist.delivery.rollout.settings import deploy_settings
from mangaassist.delivery.rollout.strategies import (
    Action,
    Baseline,
    OnInconclusive,
    Phase,
    Strategy,
    decide,
    plan_for,
)
from mangaassist.platform.metrics import InMemoryMetrics, RequestOutcome

PHASE = Phase("canary-5", 5, Baseline.CONCURRENT, 30, 60, OnInconclusive.ROLLBACK)


def test_canary_plan_follows_the_schedule_and_judges_100_against_the_pre_switch_baseline() -> None:
    plan = plan_for(Strategy.CANARY, steps=(5, 25, 50, 100))
    assert [p.name for p in plan.phases] == ["canary-5", "canary-25", "canary-50", "canary-100"]
    assert [p.baseline for p in plan.phases] == [Baseline.CONCURRENT] * 3 + [Baseline.PRE_SWITCH]
    with pytest.raises(ValueError, match="end at 100"):
        plan_for(Strategy.CANARY, steps=(5, 50))


def test_blue_green_holds_for_the_rollback_window_and_all_at_once_does_not() -> None:
    (switch,) = plan_for(Strategy.BLUE_GREEN, rollback_window_s=600).phases
    assert (switch.weight, switch.hold_s, switch.baseline) == (100, 600, Baseline.PRE_SWITCH)
    assert decide(switch, Verdict.PASS, 10_000, elapsed_s=599) is Action.EXTEND
    assert decide(switch, Verdict.PASS, 10_000, elapsed_s=600) is Action.PROCEED
    assert decide(switch, Verdict.FAIL, 50, elapsed_s=1) is Action.ROLLBACK  # FAIL acts inside the window
    (once,) = plan_for(Strategy.ALL_AT_ONCE).phases
    assert once.hold_s == 0 and not plan_for(Strategy.ALL_AT_ONCE).keep_warm


@pytest.mark.parametrize(
    ("verdict", "n", "elapsed", "expected"),
    [
        (Verdict.FAIL, 3, 0.5, Action.ROLLBACK),  # at any moment
        (Verdict.PASS, 29, 10, Action.EXTEND),  # PASS needs the step's minimum sample
        (Verdict.PASS, 30, 10, Action.PROCEED),
        (Verdict.INCONCLUSIVE, 500, 59, Action.EXTEND),  # extends up to the maximum duration
        (Verdict.INCONCLUSIVE, 500, 60, Action.ROLLBACK),
        (Verdict.PASS, 3, 60, Action.ROLLBACK),  # too little data by the deadline: policy decides
    ],
)
def test_the_phase_rule(verdict: Verdict, n: int, elapsed: float, expected: Action) -> None:
    assert decide(PHASE, verdict, n, elapsed) is expected


def test_inconclusive_at_the_deadline_can_wait_for_a_person_instead() -> None:
    phase = Phase("canary-5", 5, Baseline.CONCURRENT, 30, 60, OnInconclusive.APPROVAL)
    assert decide(phase, Verdict.INCONCLUSIVE, 2, 61) is Action.ASK_APPROVAL


def test_settings_defaults_file_and_overrides(tmp_path: Path) -> None:
    dev, staging = deploy_settings("dev"), deploy_settings("staging")
    assert dev.latency_budget_ms == 300 and dev.steps == (5, 25, 50, 100)
    assert Strategy.ALL_AT_ONCE in dev.strategies and Strategy.ALL_AT_ONCE not in staging.strategies
    config = tmp_path / "mangaassist.toml"
    config.write_text('[environments.dev.deploy]\nlatency_budget_ms = 150\ntest_command = "make test"\n')
    s = deploy_settings("dev", config, {"steps": "10,50"})
    assert (s.latency_budget_ms, s.test_command, s.steps) == (150, "make test", (10, 50, 100))
    config.write_text("[environments.dev.deploy]\nbudget = 1\n")
    with pytest.raises(ConfigError, match=r"deploy\.budget: unknown setting"):
        deploy_settings("dev", config)
    with pytest.raises(ConfigError, match="steps"):
        deploy_settings("dev", None, {"steps": "50,25"})
    assert dev.pinned_error_rate == 0.01 and dev.canary_baseline is True
    assert deploy_settings("dev", None, {"canary_baseline": False}).canary_baseline is False
    with pytest.raises(ConfigError, match="canary_baseline: expected a boolean"):
        deploy_settings("dev", None, {"canary_baseline": "yes"})
    assert deploy_settings("dev", None, {"pinned_error_rate": "0.05"}).pinned_error_rate == 0.05
    with pytest.raises(ConfigError, match=r"pinned_error_rate: expected a number within \[0, 1\)"):
        deploy_settings("dev", None, {"pinned_error_rate": 1.5})


def _obs(seq: int, revision: str, status: int = 200, **extra: Any) -> RequestOutcome:
    return RequestOutcome.from_dict(
        {"seq": seq, "time": 1000.0 + seq, "kind": "request", "revision": revision, "status": status,
         "latency_ms": 10.0, "error": None, "fallback": False, "guardrail": False, "pinned": False,
         "session": "s", "rating": None, **extra}
    )  # fmt: skip


def test_the_window_leaves_out_pinned_requests_and_counts_errors_and_feedback() -> None:
    stats = InMemoryMetrics(
        {"chatbot": [
            _obs(1, "cand", 500),
            _obs(2, "cand", 200, pinned=True),  # a smoke or load-gate request: not the users'
            _obs(3, "stable"),
            _obs(4, "cand", 0, error="reset"),
            _obs(5, "stable", kind="feedback", rating="down"),
            _obs(6, "other"),
        ]}
    )
    window = TrafficWindow("chatbot", "cand", "stable", 0)
    assert window.read(stats) == 6
    c, s = window.candidate_sample, window.stable_sample
    assert (c.requests, c.errors, s.requests, s.thumbs_down) == (2, 2, 1, 1)
    assert window.first_candidate_error_at == 1001.0 and window.cursor == 6


def test_load_goes_to_loopback_only() -> None:
    check_loopback("http://127.0.0.1:8080")
    check_loopback("http://localhost:1")
    with pytest.raises(ConfigError, match="loopback"):
        check_loopback("http://example.com")


class _Weights:
    def __init__(self) -> None:
        self.applied: dict[str, float] = {}

    def set_weights(self, service: str, weights: dict[str, float]) -> dict[str, float]:
        self.applied = dict(weights)
        return self.applied



@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        (5.0, {"c": 5.0, "b": 5.0, "s": 90.0}),
        (50.0, {"c": 50.0, "b": 50.0, "s": 0.0}),
        (75.0, {"c": 75.0, "b": 25.0, "s": 0.0}),
        (100.0, {"c": 100.0}),
    ],
)
def test_shift_gives_the_baseline_the_candidates_share(weight: float, expected: dict[str, float]) -> None:
    compute = _Weights()
    metrics = InMemoryMetrics({"svc": [_obs(7, "s")]})
    out = shift(compute, metrics, "svc", "c", "s", weight, baseline="b")  # type: ignore[arg-type]
    assert compute.applied == expected and out["cursor"] == 7
    shift(compute, metrics, "svc", "c", "s", 25.0)  # type: ignore[arg-type]
    assert compute.applied == {"c": 25.0, "s": 75.0}


def test_a_window_with_a_baseline_judges_rates_on_the_release_and_latency_on_the_baseline() -> None:
    window = TrafficWindow("svc", "c", "s", 0, baseline="b")
    observations = [
        {"seq": 1, "kind": "request", "revision": "s", "status": 200, "latency_ms": 10.0},
        {"seq": 2, "kind": "request", "revision": "b", "status": 500, "latency_ms": 40.0},
        {"seq": 3, "kind": "request", "revision": "c", "status": 200, "latency_ms": 41.0},
        {"seq": 4, "kind": "request", "revision": "x", "status": 200, "latency_ms": 1.0},
    ]
    for obs in observations:
        window.add(RequestOutcome.from_dict(obs))
    assert window.stable_sample.requests == 2 and window.stable_sample.errors == 1
    assert window.baseline_sample.requests == 1 and window.baseline_sample.errors == 1
    assert window.candidate_sample.requests == 1
