"""``mangaassist deploy model`` in ``prod`` as separate processes, on the real platform with users:
the deploy is killed (SIGKILL) in the middle of its canary, ``runs resume`` takes it over, the run
then waits for the approval prod's policy requires, the requester's own approval is refused,
another person's is accepted, and the run ends with the alias and the router's weights agreeing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mangaassist.delivery.engine import audit, people
from mangaassist.delivery.engine.model import StepRecord
from tests.integration.model_pipeline.conftest import ModelPlane, model_users

pytestmark = pytest.mark.slow
ENVIRONMENT = "prod"
MODEL_DEPLOY = {
    "steps": "50,100",
    "min_requests": 120,  # a canary step of a few seconds: time to kill the deploy inside it
    "judge_min_requests": 10,
    "max_step_s": 60,
    "on_inconclusive": "rollback",
    "drain_idle_s": 0.5,
    "drain_max_s": 10,
}
POLICY = """\
environments:
  prod:
    approvals: 1
    self_approval: false
    rollback: automatic
"""
MANGAASSIST = Path(sys.executable).parent / "mangaassist"


def _env(plane: ModelPlane, actor: str) -> dict[str, str]:
    """The CLI's environment as ``actor``, signed in with an identity token (prod refuses names)."""
    policy = plane.directory / "policy.yaml"
    policy.write_text(POLICY)
    token = people.issue_token(people.load_key(plane.store.secrets_dir), actor, 3600)
    return {
        **plane.env,
        "MANGAASSIST_IDENTITY_TOKEN": token,
        "MANGAASSIST_POLICY": str(policy),
        "COLUMNS": "200",
    }


def _steps(plane: ModelPlane, run_id: str) -> dict[str, StepRecord]:
    with plane.store.transaction() as conn:
        return {s.name: s for s in plane.store.steps(conn, run_id)}


def _wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _run_id(plane: ModelPlane) -> str | None:
    from datetime import UTC, datetime

    with plane.store.transaction() as conn:
        runs = plane.store.runs(conn, datetime.now(UTC), limit=5, environment="prod")
    return runs[0].id if runs else None


def test_killed_mid_canary_resumed_then_approved_by_someone_else(model_plane: ModelPlane) -> None:
    models = model_plane.models
    alice = _env(model_plane, "alice")
    override = ["--override-gate", "--reason", "hurry", "--config", str(models.config), "--yes", "--json"]
    refused = subprocess.run(
        [str(MANGAASSIST), "deploy", "model", "intent", "--env", "prod", *override],
        env=alice,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2, refused.stdout
    assert "does not let a failed gate pass" in json.loads(refused.stdout)["error"]
    users = model_users(model_plane.compute.url("intent-model")).start()
    argv = [str(MANGAASSIST), "deploy", "model", "intent", "--env", "prod", "--version", models.good]
    argv += ["--config", str(models.config), "--yes", "--json"]
    deploy = subprocess.Popen(argv, env=alice, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = _wait_for(lambda: _run_id(model_plane), 60, "the run")
        _wait_for(
            lambda: _steps(model_plane, run_id)["canary-50"].status.value in ("running", "waiting"),
            120,
            "the canary",
        )
        time.sleep(1.0)  # inside the phase: shifted, judging
        deploy.send_signal(signal.SIGKILL)
        deploy.wait(timeout=10)
    finally:
        if deploy.poll() is None:
            deploy.kill()
    candidate = _steps(model_plane, run_id)["resolve"].output["candidate"]
    assert model_plane.live() == {"r1": 50.0, candidate: 50.0}  # left mid-canary
    assert model_plane.champion() == models.champion

    resume = subprocess.Popen(
        [str(MANGAASSIST), "runs", "resume", run_id, "--json"],
        env=alice,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(
            lambda: _steps(model_plane, run_id)["approve"].status.value == "waiting", 120, "the approval"
        )
        assert model_plane.champion() == models.champion  # nothing moves without the approval
        own = subprocess.run([str(MANGAASSIST), "approve", run_id], env=alice, capture_output=True, text=True)
        assert own.returncode == 2 and "alice" in own.stderr, own.stderr
        other = subprocess.run(
            [str(MANGAASSIST), "approve", run_id],
            env=_env(model_plane, "bob"),
            capture_output=True,
            text=True,
        )
        assert other.returncode == 0, other.stderr
        out, err = resume.communicate(timeout=120)
    finally:
        if resume.poll() is None:
            resume.kill()
    answers = users.stop()
    assert resume.returncode == 0, err
    assert json.loads(out)["state"] == "succeeded"
    # consistent: the alias and the weights agree, the old revision is gone, nothing applied twice
    assert model_plane.champion() == models.good
    assert model_plane.live() == {candidate: 100.0}
    assert model_plane.health()["r1"] == "retired"
    steps = _steps(model_plane, run_id)
    assert steps["approve"].output["approved_by"] == ["bob"]
    assert steps["promote"].output["champion"] == models.good
    with model_plane.store.transaction() as conn:
        effects = [
            (e.detail.get("step"), e.detail.get("effect"))
            for e in audit.entries(conn, run_id=run_id)
            if e.kind == "step.effect"
        ]
    assert effects.count(("canary-50", "shift")) == 1 and effects.count(("promote", "promote-alias")) == 1, (
        effects
    )
    assert answers and all(s == 200 for s, *_ in answers)
    assert os.environ.get("MANGAASSIST_HOME") == str(model_plane.settings.home)
