"""Which rollout phase asks for the approvals a policy requires (``phases.approval_phase``)."""

from __future__ import annotations

import pytest

from mangaassist.delivery.rollout.phases import approval_phase
from mangaassist.delivery.rollout.strategies import Strategy, plan_for

PROD = {"approvals": 1, "max_canary_weight_before_approval": 25}
DEV = {"approvals": 0}


@pytest.mark.parametrize(
    ("steps", "asks"),
    [
        ((10.0, 50.0, 100.0), "canary-50"),  # the first step above the limit
        ((5.0, 25.0, 50.0, 100.0), "canary-50"),  # at the limit is allowed before approval
        ((10.0, 20.0, 100.0), "canary-100"),  # staying under the limit until 100% does not skip it
    ],
)
def test_a_canary_asks_at_its_first_step_above_the_limit(steps: tuple[float, ...], asks: str) -> None:
    phase = approval_phase(plan_for(Strategy.CANARY, steps=steps), PROD)
    assert phase is not None and phase.name == asks


@pytest.mark.parametrize("strategy", [Strategy.BLUE_GREEN, Strategy.ALL_AT_ONCE])
def test_strategies_that_move_everyone_at_once_ask_first_where_approvals_are_required(
    strategy: Strategy,
) -> None:
    plan = plan_for(strategy)
    phase = approval_phase(plan, PROD)
    assert phase is not None and phase.name == plan.phases[0].name
    assert approval_phase(plan, DEV) is None


def test_no_phase_asks_without_a_limit_or_approvals() -> None:
    assert approval_phase(plan_for(Strategy.CANARY, steps=(10.0, 100.0)), DEV) is None
