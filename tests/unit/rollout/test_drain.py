"""The promotion's drain (``rollout.phases.retire_after_drain``): when the old revision is retired."""

from __future__ import annotations

import time
from typing import Any, cast

from mangaassist.delivery.engine import StepContext
from mangaassist.delivery.rollout.phases import Canary, retire_after_drain
from mangaassist.platform.compute import Compute
from mangaassist.platform.metrics import InMemoryMetrics, OutcomeKind, RequestOutcome


class _Ctx:
    """The two things the drain asks of its step: progress lines and effects (run at once)."""

    def __init__(self) -> None:
        self.effects: list[str] = []
        self.lines: list[str] = []

    def progress(self, line: str) -> None:
        self.lines.append(line)

    def effect(self, key: str, fn: Any) -> Any:
        self.effects.append(key)
        return {}


class _Compute:
    # pragma: no cover - never reached here
    def retire(self, service: str, revision: str, *, last: bool = False) -> None:  # pragma: no cover
        raise AssertionError("the fake context runs no effect")


def _canary(metrics: InMemoryMetrics) -> Canary:
    return Canary(cast(Compute, _Compute()), metrics, "chat", "old", "new", 0.05, 10, 0)


def _served(metrics: InMemoryMetrics, seq: int, at: float, revision: str = "old") -> None:
    metrics.record("chat", RequestOutcome(seq, at, OutcomeKind.REQUEST, revision, status=200))


def _drain(metrics: InMemoryMetrics, last: dict[str, Any]) -> tuple[bool, float, _Ctx]:
    ctx = _Ctx()
    waiting, waited = retire_after_drain(cast(StepContext, ctx), _canary(metrics), last, 2.0, 60.0)
    return waiting is None, waited, ctx


def test_an_old_revision_idle_since_the_shift_is_retired_without_waiting_after_the_phase() -> None:
    now = time.time()
    metrics = InMemoryMetrics()
    _served(metrics, 1, now - 10)  # before the shift to 100%
    _served(metrics, 2, now - 3, "new")
    retired, waited, ctx = _drain(
        metrics, {"start_cursor": 1, "cursor": 2, "shifted_at": now - 5, "at": now - 0.1}
    )
    assert retired and ctx.effects == ["retire-old"]
    assert waited < 1.0  # the 100% phase itself was the drain


def test_a_conversation_still_on_the_old_revision_after_the_shift_holds_the_retirement() -> None:
    now = time.time()
    metrics = InMemoryMetrics()
    _served(metrics, 1, now - 10)
    _served(metrics, 2, now - 0.5)  # a sticky conversation answered after the shift
    retired, _waited, ctx = _drain(
        metrics, {"start_cursor": 1, "cursor": 2, "shifted_at": now - 5, "at": now - 0.1}
    )
    assert not retired and ctx.effects == []
    assert "idle for 0.5s" in ctx.lines[-1]


def test_nothing_seen_since_a_recent_shift_is_not_idle_long_enough() -> None:
    now = time.time()
    metrics = InMemoryMetrics()
    _served(metrics, 1, now - 10)
    retired, _waited, ctx = _drain(
        metrics, {"start_cursor": 1, "cursor": 1, "shifted_at": now - 1, "at": now}
    )
    assert not retired and ctx.effects == []


def test_a_run_recorded_without_the_shift_time_drains_from_the_phase_end() -> None:
    now = time.time()
    metrics = InMemoryMetrics()
    _served(metrics, 1, now - 10)
    retired, _waited, _ctx = _drain(metrics, {"start_cursor": 0, "cursor": 1, "at": now - 1})
    assert not retired
    retired, _waited, _ctx = _drain(metrics, {"start_cursor": 0, "cursor": 1, "at": now - 2.5})
    assert retired


def test_the_drain_gives_up_waiting_after_its_limit_from_the_phase_end() -> None:
    now = time.time()
    metrics = InMemoryMetrics()
    _served(metrics, 1, now - 0.1)  # still busy
    retired, waited, _ctx = _drain(
        metrics, {"start_cursor": 0, "cursor": 0, "shifted_at": now - 70, "at": now - 61}
    )
    assert retired and waited >= 60
