"""CD-02 in prod, up to the guard, with no AWS account: the real CDK app synthesizes prod twice (the
declaration as it is, then with the orders table re-keyed), the pipeline diffs the new templates
against the first synth (``against``), classifies the key change as a replacement of a stateful
resource and refuses it before any AWS call. The CLI's ``infra diff --against`` shows the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mangaassist.delivery.engine import people
from mangaassist.delivery.engine.model import RunState, StepStatus
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import infra as cd02
from mangaassist.demo.infra import rekeyed

ROOT = Path(__file__).parents[3]
RESOURCES = ROOT / "infra" / "resources.toml"
# the weekend freeze of prod (policy.yaml) is overridden so the test does not depend on the day
FREEZE = {"prod.freeze.weekend": "test: CD-02 guard in prod, any day"}


@pytest.fixture(scope="module")
def first_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth-prod")
    summary = cd02.synthesize({"root": str(ROOT)}, ["prod"], out)
    assert set(summary["stages"]) == {"prod"}
    return out


def test_a_partition_key_change_is_refused_in_prod_before_any_aws_call(
    first_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANGAASSIST_HOME", str(tmp_path / "home"))
    store = StateStore(f"sqlite:///{tmp_path / 'engine.db'}")
    params = {
        "environment": "prod",
        "root": str(ROOT),
        "resources": str(rekeyed(RESOURCES, tmp_path)),
        "against": str(first_synth),
    }
    pipeline = cd02.build(params)
    run = Executor(store, poll_seconds=0.1).run(
        pipeline,
        environment="prod",
        target=cd02.NAME,
        requester=people.Actor("tester", "token", "test"),
        policy=load_policy(None).for_run("prod", cd02.NAME),
        overrides=FREEZE,
    )
    with store.transaction() as conn:
        steps = {s.name: s for s in store.steps(conn, run.id)}
    assert run.effective_state in (RunState.FAILED, RunState.ROLLED_BACK), run.reason
    assert steps["synth"].status is StepStatus.DONE and steps["gates"].status is StepStatus.DONE
    assert steps["gates"].detail["verdict"] == "PASS"
    diff = steps["diff"].output["changes"]
    orders = [
        c for c in diff if c["stack"] == "mangaassist-prod-data" and c["type"] == "AWS::DynamoDB::Table"
    ]
    assert len(orders) == 1 and orders[0]["change"] == "replace" and orders[0]["destructive"]
    assert orders[0]["properties"][0] == "KeySchema"
    assert steps["guard"].status is StepStatus.FAILED
    assert "destructive change(s) refused" in (run.reason or "") and "--override prod.destructive" in (
        run.reason or ""
    )
    # nothing after the guard ran: no approval asked, no change set made
    assert {steps[n].status for n in ("approve", "apply", "drift")} == {StepStatus.SKIPPED}
    assert steps["apply"].attempts == 0
    store.close()


def test_the_cli_diff_against_the_same_synth_shows_no_change(first_synth: Path) -> None:
    env = {**os.environ, "MANGAASSIST_ROOT": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mangaassist.cli.main",
            "infra",
            "diff",
            "--env",
            "prod",
            "--against",
            str(first_synth),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["changes"] == [] and report["destructive"] == 0 and report["against"] == str(first_synth)
