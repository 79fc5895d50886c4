"""CD-06 on the shared rollout phases: a ``config deploy`` killed (SIGKILL) in the middle of a
judged step is taken over by ``runs resume``, which judges on from the cursor the step's shift
recorded (no second shift, the same window start) and promotes the version."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.delivery.engine.model import RunState, StepStatus
from mangaassist.delivery.engine.state import StateStore
from tests.integration.config.conftest import ConfigServer
from tests.integration.config.test_config_delivery import ROOT, Traffic, _seed

MANGAASSIST = Path(sys.executable).parent / "mangaassist"


def _wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _steps(store: StateStore, run_id: str) -> dict[str, Any]:
    with store.transaction() as conn:
        return {s.name: s for s in store.steps(conn, run_id)}


def _run_id(store: StateStore) -> str | None:
    from datetime import UTC, datetime

    with store.transaction() as conn:
        runs = store.runs(conn, datetime.now(UTC), limit=5, environment="dev")
    return runs[0].id if runs else None


def test_a_config_rollout_killed_mid_judgement_resumes_from_its_cursor(
    config_server: ConfigServer, followed_chatbot: ChatbotProcess, tmp_path: Path
) -> None:
    seeded = _seed(config_server, ROOT / "config")
    good = tmp_path / "good"
    shutil.copytree(ROOT / "config", good)
    prompts = good / "prompts.yaml"
    prompts.write_text(prompts.read_text().replace("name the sources you used", "name every source you used"))
    state_url = f"sqlite:///{tmp_path / 'engine.sqlite3'}"
    store = StateStore(state_url)
    env = {
        **os.environ,
        "MANGAASSIST_STATE_URL": state_url,
        "MANGAASSIST_HOME": str(tmp_path / "cli-home"),
        "MANGAASSIST_ACTOR": "ann",
        "MANGAASSIST_POLL_SECONDS": "0.2",
        "COLUMNS": "200",
    }
    deploy_argv = [
        str(MANGAASSIST), "config", "deploy", "prompts", "--url", config_server.url, "--dir", str(good),
        "--no-eval", "--step", "50", "--step-time", "8s", "--bake", "1s", "--json",
    ]  # fmt: skip
    with Traffic(followed_chatbot):
        deploy = subprocess.Popen(deploy_argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            run_id = _wait_for(lambda: _run_id(store), 60, "the run to start")
            # inside the 50% step: its shift is recorded and it is judging (it holds at least 8 s)
            _wait_for(
                lambda: _steps(store, run_id)["rollout-50"].status is StepStatus.RUNNING
                and config_server.store.rollout("prompts").percentage == 50,
                60,
                "the 50% step to judge",
            )
            time.sleep(2)
            deploy.send_signal(signal.SIGKILL)
            deploy.wait(timeout=10)
        finally:
            if deploy.poll() is None:
                deploy.kill()
        moves_before = [e for e in config_server.store.history("prompts") if e["action"] == "rollout"]
        assert [e["percentage"] for e in moves_before] == [50.0]
        resumed = subprocess.run(
            [str(MANGAASSIST), "runs", "resume", run_id, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert resumed.returncode == 0, resumed.stderr
    from datetime import UTC, datetime

    with store.transaction() as conn:
        run = store.run(conn, run_id, datetime.now(UTC))
    assert run.state is RunState.SUCCEEDED, run.reason
    steps = _steps(store, run_id)
    half = steps["rollout-50"]
    assert half.attempts >= 2  # started by the deploy, finished by the resume
    assert half.detail["verdict"] == "PASS"
    # the shift was applied once (the effect's marker), and the resumed judgement started at its cursor
    moves = [e for e in config_server.store.history("prompts") if e["action"] == "rollout"]
    assert [e["percentage"] for e in moves] == [50.0, 100.0]
    rollout = config_server.store.rollout("prompts")
    new = rollout.stable
    assert new not in (None, seeded["prompts"]) and rollout.candidate is None
    # the window starts where the shift left it, before the kill: the new version had served
    # nothing then (a judgement restarted after the resume would start after its first answers)
    start, end = half.output["start_cursor"], half.output["cursor"]
    assert start.get(new, {}).get("requests", 0) == 0 < end[new]["requests"]
    assert half.detail["numbers"]["elapsed_s"] >= 8  # measured from the recorded shift
