"""CD-03 end to end on the real local platform in ``dev``, with users asking the model's router: the
better model goes through gate, shadow and canary and is promoted; the alias moves last. It changes
the live revision and the champion, so it has a platform of its own (the other drills share one)."""

from __future__ import annotations

import time

import pytest

from mangaassist.delivery.engine.model import RunState
from tests.integration.model_pipeline.conftest import ModelPlane, model_users

pytestmark = pytest.mark.slow
ENVIRONMENT = "dev"


def test_a_better_model_is_promoted_and_the_alias_moves_last(model_plane: ModelPlane) -> None:
    users = model_users(model_plane.compute.url("intent-model")).start()
    started = time.monotonic()
    run, steps = model_plane.deploy(version=model_plane.models.good)
    took = time.monotonic() - started
    answers = users.stop()
    assert run.effective_state is RunState.SUCCEEDED, run.reason
    assert steps["gate"].detail["verdict"] == "PASS"
    shadow = steps["shadow"].detail
    assert shadow["verdict"] == "PASS" and shadow["numbers"]["compared"] >= 60, shadow
    for name in ("canary-50", "canary-100"):
        assert steps[name].detail["verdict"] == "PASS", steps[name].detail
    candidate = steps["resolve"].output["candidate"]
    assert model_plane.live() == {candidate: 100.0}
    assert model_plane.health()["r1"] == "retired"
    registry = model_plane.registry
    assert model_plane.champion() == model_plane.models.good
    previous = registry.alias("intent", "previous")
    assert previous is not None and previous.version == model_plane.models.champion
    promotion = steps["promote"].output
    assert promotion["champion_before"] == model_plane.models.champion
    assert promotion["champion"] == model_plane.models.good
    assert answers and all(s == 200 for s, *_ in answers)
    good = registry.get("intent", model_plane.models.good).tags["package_version"]
    assert answers[-1][1:] == (candidate, good)
    print(f"deploy model: {took:.1f}s from start to champion (shadow {shadow['numbers']})")
