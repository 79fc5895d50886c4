"""CD-06 on the shared rollout phases: its plan, its bucket split and cursors (pure, no IO)."""

from __future__ import annotations

from typing import Any

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis import JudgeSettings
from mangaassist.delivery.pipelines.config import BucketSplit, cursor_of, rollout_plan, rollout_report
from mangaassist.delivery.rollout.strategies import Action, Baseline, OnInconclusive, Strategy, decide
from mangaassist.platform.config_store import Observations, Rollout


def test_a_linear_plan_is_one_judged_phase_per_step_then_the_bake() -> None:
    plan = rollout_plan({"strategy": "linear", "step": 50, "step_seconds": 2, "step_max_seconds": 40})
    assert [p.name for p in plan.phases] == ["rollout-50", "rollout-100", "bake"]
    first, full, bake = plan.phases
    assert (first.baseline, full.baseline, bake.baseline) == (
        Baseline.CONCURRENT,
        Baseline.PRE_SWITCH,
        Baseline.PRE_SWITCH,
    )
    assert (first.hold_s, first.max_duration_s, first.on_inconclusive) == (2, 40, OnInconclusive.ROLLBACK)
    assert (bake.hold_s, bake.on_inconclusive) == (60, OnInconclusive.PROCEED)
    assert plan.strategy is Strategy.CANARY
    assert rollout_plan({"strategy": "all-at-once"}).strategy is Strategy.ALL_AT_ONCE


def test_bad_timings_are_refused_with_their_values() -> None:
    with pytest.raises(ConfigError, match="step_max_seconds >= step_seconds"):
        rollout_plan({"step_seconds": 30, "step_max_seconds": 10})


def test_a_bake_only_ends_early_on_fail_and_proceeds_when_its_time_is_up() -> None:
    bake = rollout_plan({"bake_seconds": 5}).phases[-1]
    assert decide(bake, Verdict.FAIL, 1, 0.5) is Action.ROLLBACK
    assert decide(bake, Verdict.PASS, 100, 1.0) is Action.EXTEND
    assert decide(bake, Verdict.INCONCLUSIVE, 3, 5.0) is Action.PROCEED


class _Store:
    """The two ``ConfigStore`` calls a bucket split makes, recorded."""

    def __init__(self) -> None:
        self.observed: dict[str, Observations] = {}
        self.moves: list[tuple[str | None, float]] = []

    def set_rollout(self, profile: str, *, candidate: str | None, percentage: float, **_: Any) -> Rollout:
        self.moves.append((candidate, percentage))
        return self.rollout(profile)

    def rollout(self, profile: str) -> Rollout:
        candidate, percentage = self.moves[-1] if self.moves else (None, 0.0)
        return Rollout(profile, "old", candidate, percentage)

    def observations(self, profile: str) -> dict[str, Observations]:
        return self.observed


def test_the_split_judges_each_version_from_the_cursor_its_shift_recorded() -> None:
    store = _Store()
    store.observed = {"old": Observations(requests=10, errors=1, latencies_ms=[5.0] * 10)}
    split = BucketSplit(store, "prompts", "new", "old", "ann", JudgeSettings(), {})  # type: ignore[arg-type]
    shifted = split.shift(20)
    assert store.moves == [("new", 20)] and shifted["cursor"]["old"]["requests"] == 10
    store.observed = {
        "old": Observations(requests=18, errors=1, fallbacks=2, latencies_ms=[5.0] * 18),
        "new": Observations(requests=3, errors=2, fallbacks=1, latencies_ms=[9.0] * 3),
    }
    window = split.window(shifted["cursor"], concurrent=True)
    assert window.read() == 11
    assert (window.candidate_sample.requests, window.candidate_sample.errors) == (3, 2)
    stable = window.stable_sample
    assert (stable.requests, stable.errors, stable.fallbacks) == (8, 0, 2)
    assert window.first_candidate_error_at is not None
    assert window.cursor == cursor_of(store.observed)
    # what the old version served between two cursors: the pre-switch baseline of a later phase
    assert split.pre_switch(shifted["cursor"], window.cursor).requests == 8
    split.shift(20)  # the same share again (a bake after its step): no second move
    assert store.moves == [("new", 20)]
    restored = split.restore()
    assert store.moves[-1] == (None, 0) and restored["took_ms"] >= 0


class _Record:
    def __init__(self, verdict: str | None, numbers: dict[str, float]) -> None:
        self.detail = {"verdict": verdict, "numbers": numbers}


def test_the_report_lists_judged_phases_in_order() -> None:
    steps = {
        "validate": _Record("PASS", {"checks": 3}),
        "rollout-50": _Record("PASS", {"candidate_requests": 40, "stable_requests": 38, "elapsed_s": 2.04}),
        "rollout-100": _Record("FAIL", {"candidate_requests": 9, "candidate_fallbacks": 7, "elapsed_s": 1}),
        "bake": _Record(None, {}),
    }
    rows = rollout_report(steps)
    assert [(r["percentage"], r["verdict"]) for r in rows] == [(50.0, "PASS"), (100.0, "FAIL")]
    assert rows[0]["baseline_requests"] == 38 and rows[1]["candidate_fallbacks"] == 7
