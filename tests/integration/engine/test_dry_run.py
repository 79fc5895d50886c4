"""``--dry-run`` of the deploy commands in an aws environment, through the real CLI: the calls each
pipeline would make, in order, none made; nothing recorded in the engine's state. Without AWS
credentials anywhere, and against moto's server with credentials (reads made, nothing written)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from tests.integration.engine.conftest import ROOT, aws_free_env
from tests.integration.static_site.conftest import make_distribution
from tests.moto_server import CREDENTIALS, client, moto_server

MANGAASSIST = Path(sys.executable).with_name("mangaassist")
CONFIG = """\
[environments.dev]
provider = "local"
home = "home"

[environments.staging]
provider = "aws"
[environments.staging.aws]
region = "us-east-1"
site_bucket = "{bucket}"
site_distribution_id = "{distribution}"
appconfig_application = "mangaassist-staging"
cluster = "mangaassist-staging"
listener_arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/m/1/2"
vpc_id = "vpc-1"
subnets = ["subnet-1"]
security_groups = ["sg-1"]
task_execution_role_arn = "arn:aws:iam::123456789012:role/exec"
app_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chatbot:1"
{endpoint}
[environments.staging.services.chatbot]
compute = "ecs"
[environments.staging.deploy]
test_command = "true"  # the suite runs in the pull request's workflow, not in these plans
"""


def _env(tmp_path: Path, config: str, credentials: bool) -> dict[str, str]:
    env = aws_free_env(tmp_path, config) | {"HF_HUB_OFFLINE": "1"}
    if credentials:
        env |= {
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        }
    return env


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [str(MANGAASSIST), *args, "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        doc = {}
    return done.returncode, doc, done.stderr


@pytest.fixture
def no_credentials(tmp_path: Path) -> dict[str, str]:
    config = CONFIG.format(bucket="mangaassist-staging-site", distribution="E123EXAMPLE", endpoint="")
    return _env(tmp_path, config, credentials=False)


def _nothing_recorded(env: dict[str, str]) -> None:
    """No run, lock or audit entry in the environment's engine state (``release`` opens it to find
    the last release; the deploy commands do not even create it)."""
    state = Path(env["MANGAASSIST_HOME"]) / "state.sqlite3"
    if not state.exists():
        return
    with sqlite3.connect(state) as db:
        counts = {
            "engine_runs": db.execute("SELECT count(*) FROM engine_runs").fetchone()[0],
            "engine_locks": db.execute("SELECT count(*) FROM engine_locks").fetchone()[0],
            "engine_audit": db.execute("SELECT count(*) FROM engine_audit").fetchone()[0],
        }
    assert counts == {"engine_runs": 0, "engine_locks": 0, "engine_audit": 0}, counts


def test_the_widget_release_is_planned_without_credentials_and_nothing_is_made(
    no_credentials: dict[str, str],
) -> None:
    code, plan, err = _cli(no_credentials, "deploy", "frontend", "--env", "staging", "--dry-run")
    assert code == 0, err[-2000:]
    assert plan["dry_run"] is True and plan["result"] == "complete", plan.get("reason")
    assert plan["reads"].startswith("not made (no AWS credentials)")
    assert not any(c["made"] for c in plan["calls"])
    changes = [(c["step"], c["service"], c["operation"]) for c in plan["calls"] if not c["read"]]
    assert ("upload", "s3", "PutObject") in changes
    assert ("publish", "cloudfront", "CreateInvalidation") in changes
    puts = [c["params"]["Key"] for c in plan["calls"] if c["operation"] == "PutObject"]
    assert any(k.startswith("assets/") for k in puts) and "channels/staging.json" in puts
    assert plan["changes"] == len(changes)
    assert {s["name"]: s["status"] for s in plan["steps"]}["verify"] == "done"
    assert next(s["note"] for s in plan["steps"] if s["name"] == "verify").startswith("not run")
    _nothing_recorded(no_credentials)


def test_how_other_pipelines_end_without_credentials(no_credentials: dict[str, str]) -> None:
    code, plan, err = _cli(no_credentials, "deploy", "monitoring", "--env", "staging", "--dry-run")
    assert code == 0 and plan["result"] == "complete" and plan["changes"] == 0, err[-2000:]

    code, plan, err = _cli(no_credentials, "migrate", "apply", "0003", "--env", "staging", "--dry-run")
    assert code == 0, err[-2000:]
    assert plan["result"] == "ends at a wait" and plan["stopped_at"] == "expand"
    changes = [c["operation"] for c in plan["calls"] if not c["read"]]
    assert changes.count("CreateHostedConfigurationVersion") == 2  # the rule's version, the pointer
    assert changes[-1] == "StartDeployment" and "GetDeployment was polled" in plan["reason"]

    # an empty account (CD-02 made the cluster and the listener, nothing runs): a first release,
    # whose plan shows every call of the candidate's deploy, which it then waits for
    code, plan, err = _cli(no_credentials, "deploy", "app", "--env", "staging", "--dry-run")
    assert code == 0 and plan["result"] == "ends after changes", (plan.get("reason"), err[-2000:])
    steps = {s["name"]: s["status"] for s in plan["steps"]}
    assert (steps["build"], steps["test"], steps["scan"], steps["candidate"]) == (
        "done",
        "done",
        "done",
        "failed",
    )
    assert "dry run: nothing was changed" in plan["reason"]
    changes = [c["operation"] for c in plan["calls"] if not c["read"]]
    assert changes == [
        "RegisterTaskDefinition",
        "CreateTargetGroup",
        "CreateRule",
        "CreateRule",
        "CreateService",
    ]
    weighted = [c for c in plan["calls"] if c["operation"] == "CreateRule"][1]["params"]
    assert weighted["Priority"] == 40000  # the service's weighted rule, made with its only revision
    assert [g["Weight"] for g in weighted["Actions"][0]["ForwardConfig"]["TargetGroups"]] == [100]
    assert not any(c["made"] for c in plan["calls"])
    _nothing_recorded(no_credentials)


def test_a_local_environment_is_refused(no_credentials: dict[str, str]) -> None:
    code, doc, err = _cli(no_credentials, "deploy", "monitoring", "--env", "dev", "--dry-run")
    assert code == 2, err[-2000:]
    assert "--dry-run shows the AWS calls of an aws environment" in json.dumps(doc)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def test_against_moto_reads_are_made_and_nothing_is_written(moto_endpoint: str, tmp_path: Path) -> None:
    s3, cloudfront = client(moto_endpoint, "s3"), client(moto_endpoint, "cloudfront")
    bucket = f"mangaassist-dry-{uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    distribution = make_distribution(cloudfront, bucket)
    config = CONFIG.format(
        bucket=bucket, distribution=distribution, endpoint=f'endpoint_url = "{moto_endpoint}"'
    )
    env = _env(tmp_path, config, credentials=True)
    code, plan, err = _cli(env, "deploy", "frontend", "--env", "staging", "--dry-run")
    assert code == 0 and plan["result"] == "complete", (plan.get("reason"), err[-2000:])
    assert plan["reads"] == "made"
    made = {c["operation"] for c in plan["calls"] if c["made"]}
    assert {"GetDistribution", "ListObjectsV2"} <= made
    assert not any(c["made"] for c in plan["calls"] if not c["read"])
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    invalidations = cloudfront.list_invalidations(DistributionId=distribution)["InvalidationList"]
    assert invalidations.get("Quantity", 0) == 0
    _nothing_recorded(env)


def test_a_release_dry_runs_its_pipelines_in_order(no_credentials: dict[str, str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "monitoring").mkdir(parents=True)
    (repo / "README.md").write_text("first\n")
    git = {**no_credentials, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    git |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *args], cwd=repo, env=git, check=True)
    (repo / "monitoring" / "slo.yaml").write_text("# changed\n")
    (repo / "infra-notes.txt").write_text("not shipped by any pipeline\n")
    for args in (["add", "."], ["commit", "-q", "-m", "second"]):
        subprocess.run(["git", *args], cwd=repo, env=git, check=True)
    code, doc, err = _cli(
        no_credentials, "release", "--env", "staging", "--since", "HEAD~1", "--repo", str(repo), "--dry-run"
    )
    assert code == 0, err[-2000:]
    assert [p["pipeline"] for p in doc["pipelines"]] == ["CD-08"]
    assert doc["pipelines"][0]["result"] == "complete" and doc["pipelines"][0]["runs"][0]["dry_run"]
    _nothing_recorded(no_credentials)
    code, doc, _ = _cli(
        no_credentials, "release", "--env", "dev", "--since", "HEAD~1", "--repo", str(repo), "--dry-run"
    )
    assert code == 2 and "--dry-run shows the AWS calls" in json.dumps(doc)
