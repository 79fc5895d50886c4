"""CD-03 end to end on the real local platform in ``dev``, with users asking the model's router.

The tests share one platform, each leaving it as it found it (r1 live at 100%, the champion the
70% model), so they pass in any order (the suite runs in random order); the promotion, which
changes both, has a platform of its own (``test_model_promotion.py``):

1. the offline gate blocks the shuffled-label model: nothing is deployed;
2. the same model forced past the gate with the audited dev override is caught in shadow: no user
   request ever reaches it, and the disagreements are logged for review;
3. a candidate whose every answer is a 500 fails in shadow at once, users unaffected;
4. a candidate failing 40% of its requests passes a shadow told to tolerate errors, and the canary
   judge fails it: weights back on r1, the candidate retired, the alias untouched;
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mangaassist.delivery.engine import audit
from mangaassist.delivery.engine.model import RunState
from tests.integration.model_pipeline.conftest import ModelPlane, model_users

pytestmark = pytest.mark.slow
ENVIRONMENT = "dev"


def _audit(plane: ModelPlane, run_id: str) -> list[audit.AuditEntry]:
    with plane.store.transaction() as conn:
        return list(audit.entries(conn, run_id=run_id))


def _assert_untouched(plane: ModelPlane, candidate: str | None) -> None:
    assert plane.live() == {"r1": 100.0}
    assert plane.champion() == plane.models.champion
    assert plane.compute.status("intent-model").shadow is None
    if candidate:
        assert plane.health()[candidate] == "retired"


def test_the_offline_gate_blocks_a_shuffled_label_model(model_plane: ModelPlane) -> None:
    before = model_plane.health()  # earlier drills (any order) leave retired candidates behind
    run, steps = model_plane.deploy(version=model_plane.models.shuffled)
    assert run.effective_state is RunState.ROLLED_BACK, run.reason
    assert "failed the offline gate" in (run.reason or "") and "macro_f1" in (run.reason or "")
    gate = steps["gate"].detail
    assert gate["verdict"] == "FAIL" and any(not row["ok"] for row in gate["gate"]["rows"])
    assert steps["deploy"].status.value == "skipped"
    assert model_plane.health() == before  # nothing was deployed
    _assert_untouched(model_plane, None)


def test_a_forced_bad_model_is_caught_in_shadow_before_any_user_request(model_plane: ModelPlane) -> None:
    users = model_users(model_plane.compute.url("intent-model")).start()
    run, steps = model_plane.deploy(
        overrides={"dev.gates": "drill: a shuffled-label model must be caught in shadow"},
        version=model_plane.models.shuffled,
    )
    answers = users.stop()
    assert run.effective_state is RunState.ROLLED_BACK, run.reason
    assert steps["gate"].detail["overridden"] == "dev.gates" and steps["gate"].detail["verdict"] == "FAIL"
    overrides = [e for e in _audit(model_plane, run.id) if e.kind == "policy.override"]
    assert overrides and "shuffled-label" in json.dumps(overrides[0].detail)
    shadow = steps["shadow"].detail
    assert shadow["verdict"] == "FAIL" and "agreement" in shadow["reasons"][0]
    assert shadow["numbers"]["compared"] >= 60 and shadow["numbers"]["agreement"] < 0.5
    kept = shadow["shadow"]["disagreements"]
    assert kept and all(d["primary"] != d["shadow"] and d["text"] for d in kept)
    review = Path(shadow["disagreements_file"]).read_text().splitlines()
    assert (
        len(review) == len(kept)
        and json.loads(review[0])["candidate"] == steps["resolve"].output["candidate"]
    )
    candidate = steps["resolve"].output["candidate"]
    requests, pinned = model_plane.served(candidate)
    assert requests == pinned == 1  # the deploy step's pinned check; not one user request
    assert answers and {(s, rev) for s, rev, _ in answers} == {(200, "r1")}
    assert {v for *_, v in answers} == {
        model_plane.registry.get("intent", model_plane.models.champion).tags["package_version"]
    }
    assert steps["canary-50"].status.value == "skipped"
    _assert_untouched(model_plane, candidate)


def test_a_failing_shadow_never_affects_users(model_plane: ModelPlane) -> None:
    users = model_users(model_plane.compute.url("intent-model")).start()
    run, steps = model_plane.deploy(
        version=model_plane.models.good, set_env={"MANGAASSIST_FAULT": "error_rate=1"}
    )
    answers = users.stop()
    assert run.effective_state is RunState.ROLLED_BACK, run.reason
    shadow = steps["shadow"].detail
    assert shadow["verdict"] == "FAIL" and "mirrored requests failed" in shadow["reasons"][0]
    candidate = steps["resolve"].output["candidate"]
    requests, pinned = model_plane.served(candidate)
    assert requests == pinned == 1
    assert answers and {(s, rev) for s, rev, _ in answers} == {(200, "r1")}
    _assert_untouched(model_plane, candidate)


def test_a_canary_fail_puts_the_weights_back_and_leaves_the_alias(model_plane: ModelPlane) -> None:
    users = model_users(model_plane.compute.url("intent-model")).start()
    run, steps = model_plane.deploy(
        version=model_plane.models.good,
        set_env={"MANGAASSIST_FAULT": "error_rate=0.4"},
        shadow_max_error_rate=1.0,  # this drill lets the errors through the shadow, to the judge
    )
    answers = users.stop()
    assert run.effective_state is RunState.ROLLED_BACK, run.reason
    assert steps["shadow"].detail["verdict"] == "PASS"
    canary = steps["canary-50"].detail
    assert canary["verdict"] == "FAIL" and "error_rate" in (run.reason or ""), run.reason
    assert canary["numbers"]["candidate_error_rate"] > canary["numbers"]["stable_error_rate"]
    assert steps["approve"].status.value == "skipped" and steps["promote"].status.value == "skipped"
    candidate = steps["resolve"].output["candidate"]
    assert any(rev == candidate for _, rev, _ in answers)  # it did serve users before the judge caught it
    _assert_untouched(model_plane, candidate)
