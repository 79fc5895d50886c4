"""CD-02 in staging through ``apply`` and ``drift``, with CloudFormation and S3 answered by botocore's
Stubber (moto's CloudFormation updates are partial; no AWS account exists here).

The first run diffs a real synth of staging against the same templates (``against``): no change, the
guard passes, and each of the seven stacks gets a change set (create, describe: "no changes",
delete; the stack read back), in dependency order; the monitoring template, over CloudFormation's
51,200-byte inline limit, is uploaded to the artifact bucket first. Drift detection finds every stack
in sync. The applied templates are kept in the engine's state: a second run, with no ``against``,
diffs against them and finds nothing to change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mangaassist.delivery.engine.model import RunState, StepStatus
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import infra as cd02
from mangaassist.platform.aws.cloudformation import TEMPLATE_BODY_LIMIT, ChangeSetApplier
from mangaassist.platform.factory import Platform

ROOT = Path(__file__).parents[3]
ENV = "staging"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _client(service: str) -> Any:
    make: Any = boto3.client
    return make(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def _queue(cf: Stubber, s3: Stubber, templates: dict[str, dict[str, Any]]) -> None:
    """What CloudFormation and S3 answer, in the order the apply and drift steps ask."""
    stacks = sorted(templates, key=cd02._stack_key)
    for name in stacks:
        stack = {"Stacks": [{"StackName": name, "CreationTime": T0, "StackStatus": "UPDATE_COMPLETE"}]}
        cf.add_response("describe_stacks", stack, {"StackName": name})  # the order is checked here
        cf.add_client_error("describe_change_set", "ChangeSetNotFound", "ChangeSet does not exist", 404)
        if len(json.dumps(templates[name], sort_keys=True).encode()) > TEMPLATE_BODY_LIMIT:
            s3.add_response("put_object", {})
        cf.add_response(
            "create_change_set", {"Id": f"arn:aws:cloudformation:cs/{name}", "StackId": f"arn:{name}"}
        )
        cf.add_response(
            "describe_change_set",
            {
                "ChangeSetName": "x",
                "StackName": name,
                "Status": "FAILED",
                "StatusReason": "The submitted information didn't contain changes.",
                "ExecutionStatus": "UNAVAILABLE",
                "Changes": [],
            },
        )
        cf.add_response("delete_change_set", {})
        cf.add_response("describe_stacks", stack)
    for name in stacks:
        cf.add_response("detect_stack_drift", {"StackDriftDetectionId": f"d-{name}"})
        cf.add_response(
            "describe_stack_drift_detection_status",
            {
                "StackId": f"arn:{name}",
                "StackDriftDetectionId": f"d-{name}",
                "StackDriftStatus": "IN_SYNC",
                "DetectionStatus": "DETECTION_COMPLETE",
                "Timestamp": T0,
            },
        )


def test_change_sets_stack_by_stack_then_drift_and_the_next_diff_reads_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANGAASSIST_HOME", str(tmp_path / "home"))
    before = tmp_path / "before"
    summary = cd02.synthesize({"root": str(ROOT)}, [ENV], before)
    templates = cd02.load_templates(summary["stages"][ENV])
    assert len(templates) == 7
    assert any(len(json.dumps(t, sort_keys=True).encode()) > TEMPLATE_BODY_LIMIT for t in templates.values())

    cf_client, s3_client = _client("cloudformation"), _client("s3")
    applier = ChangeSetApplier(
        cf_client, sleep=lambda _s: None, poll_s=0.01, timeout_s=5, s3=s3_client, template_bucket="artifacts"
    )
    monkeypatch.setattr(Platform, "stacks", lambda _self: applier)
    store = StateStore(f"sqlite:///{tmp_path / 'engine.db'}")
    policy = load_policy(None).for_run(ENV, cd02.NAME)

    def run(params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        pipeline = cd02.build({"environment": ENV, "root": str(ROOT), **params})
        record = Executor(store, poll_seconds=0.1).run(
            pipeline, environment=ENV, target=cd02.NAME, requester="tester", policy=policy
        )
        with store.transaction() as conn:
            return record, {s.name: s for s in store.steps(conn, record.id)}

    with Stubber(cf_client) as cf, Stubber(s3_client) as s3:
        _queue(cf, s3, templates)
        first, steps = run({"against": str(before)})
        cf.assert_no_pending_responses()
        s3.assert_no_pending_responses()
    assert first.effective_state is RunState.SUCCEEDED, first.reason
    assert steps["diff"].output["changes"] == [] and steps["guard"].status is StepStatus.DONE
    applied = steps["apply"].output
    assert set(applied["stacks"]) == set(templates)  # in dependency order: the Stubber checked it
    assert all(r["empty"] for r in applied["stacks"].values())
    assert set(applied["templates"]) == set(templates)
    assert {r["status"] for r in steps["drift"].output["drift"].values()} == {"IN_SYNC"}

    with Stubber(cf_client) as cf, Stubber(s3_client) as s3:
        _queue(cf, s3, templates)
        second, steps = run({})  # no `against`: the templates the first run applied
        cf.assert_no_pending_responses()
    assert second.effective_state is RunState.SUCCEEDED, second.reason
    assert steps["diff"].output["against"] == f"run {first.id}" and steps["diff"].output["changes"] == []
    store.close()
