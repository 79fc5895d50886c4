"""States and outcomes: every member is documented, final states are final, outcomes record their numbers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.engine import audit
from mangaassist.delivery.engine.model import RunState, StepOutcome, StepStatus, WaitFor
from mangaassist.delivery.engine.runs import Outcome


@pytest.mark.parametrize("enum", [RunState, StepStatus, StepOutcome, WaitFor])
def test_every_state_has_a_documented_meaning(enum: type) -> None:
    import inspect

    source = inspect.getsource(enum)
    for member in enum:
        after = source.split(f"{member.name} = ", 1)[1].split("\n", 2)[1]
        assert after.strip().startswith('"""'), f"{enum.__name__}.{member.name} has no docstring"


def test_final_states() -> None:
    assert {s for s in RunState if s.final} == {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.ROLLED_BACK,
        RunState.ABORTED,
    }


def test_an_outcome_records_its_verdict_numbers_and_wait() -> None:
    until = datetime(2025, 1, 1, tzinfo=UTC)
    assert Outcome.failed("slow", verdict=Verdict.FAIL, numbers={"p95_ms": 900.0}).recorded_detail() == {
        "verdict": "FAIL",
        "numbers": {"p95_ms": 900.0},
    }
    assert Outcome.wait("bake", until=until).recorded_detail() == {
        "wait_for": "time",
        "until": "2025-01-01T00:00:00.000000+00:00",
    }
    assert Outcome.wait_for_approval("x").kind is StepOutcome.WAITING


def test_an_entry_hash_covers_every_field() -> None:
    base = ("0" * 64, 1, "2025-01-01", "run-1", "ann", "step.done", '{"a":1}')
    digest = audit.entry_hash(*base)
    for i in range(len(base)):
        changed = list(base)
        changed[i] = f"{changed[i]}x" if isinstance(changed[i], str) else 2
        assert audit.entry_hash(*changed) != digest  # type: ignore[arg-type]
