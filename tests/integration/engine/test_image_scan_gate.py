"""CD-01's ``scan`` step run by the real engine in an aws environment whose ECR is moto's server: the
image named by the release's ``ECS_IMAGE`` PASSes with no finding, FAILs with one CRITICAL (the
run stops; the reason names the image's variable, the severity, the count, the limit and the
finding; the verdict and its numbers are in the run and the audit log), PASSes when the run raises
that limit (recorded in the run's params), and is skipped, visibly, on the local platform and for a
release without an image. ``LAMBDA_IMAGE`` is judged as well, alone or beside ``ECS_IMAGE`` (the
same limits, each image's findings in the detail; one image named by both is judged once), and an
image the scanner gives nothing for stops the step with the images judged before it recorded.
Limits and poll settings come from ``[environments.staging.deploy]`` of the test's
``mangaassist.toml``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mangaassist.delivery.engine import Executor, Pipeline, StateStore, Step, StepContext
from mangaassist.delivery.engine import audit as audit_log
from mangaassist.delivery.engine.model import RunState, StepStatus
from mangaassist.delivery.engine.policy import default_policy
from mangaassist.delivery.pipelines.image_scan import NO_IMAGE_AWS, NO_IMAGE_LOCAL, scan_release
from mangaassist.delivery.pipelines.scope import RunScope
from tests.moto_server import ACCOUNT, CREDENTIALS, moto_server, push_image, set_scan_result

CONFIG = """\
[environments.dev]
provider = "local"
home = "home-dev"

[environments.staging]
provider = "aws"
home = "home-staging"

[environments.staging.aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[environments.staging.deploy]
scan_limits = {{ medium = 5 }}
scan_poll_s = 0.01
scan_timeout_s = 5
"""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def config(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mangaassist.toml"
    path.write_text(CONFIG.format(endpoint=endpoint))
    monkeypatch.setenv("MANGAASSIST_PLATFORM_CONFIG", str(path))
    monkeypatch.delenv("MANGAASSIST_HOME", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    return path


def pushed(endpoint: str, repository: str, findings: dict[str, Any] | None) -> str:
    """An image in ``repository`` whose scan moto answers with ``findings`` (None: moto's default,
    one HIGH), as a reference by digest."""
    image = push_image(endpoint, repository)
    if findings is not None:
        set_scan_result(endpoint, image, "COMPLETE", findings)
    return image


def run_scan(
    tmp_path: Path,
    environment: str,
    set_env: dict[str, str],
    params: dict[str, Any] | None = None,
    overrides: dict[str, str] | None = None,
) -> tuple[RunState, Any, list[audit_log.AuditEntry], str | None]:
    """One run of a pipeline holding CD-01's scan step: its state, the step's record, the run's
    audit entries and its reason."""
    scope = RunScope(environment)

    def scan(ctx: StepContext) -> Any:
        return scan_release(scope, ctx, set_env, "rel-test")

    pipeline = Pipeline(
        "CD-01",
        (Step("scan", scan, "judge the image's vulnerability findings", changes=False),),
        params={"environment": environment, **(params or {})},
        close=scope.close,
    )
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        engine = Executor(store, heartbeat=False, poll_seconds=0.01)
        run = engine.run(
            pipeline,
            environment=environment,
            target="CD-01",
            requester="ann",
            policy=replace(default_policy().for_run(environment, "CD-01"), gate_overrides=bool(overrides)),
            overrides=overrides,
        )
        with store.transaction() as conn:
            (step,) = store.steps(conn, run.id)
            entries = audit_log.entries(conn, run.id)
    finally:
        store.close()
    return run.state, step, entries, run.reason


def test_an_image_with_no_finding_passes(config: Path, endpoint: str, tmp_path: Path) -> None:
    image = pushed(endpoint, "gate-clean", {"findings": [], "findingSeverityCounts": {}})
    state, step, _, _ = run_scan(tmp_path, "staging", {"ECS_IMAGE": image})
    assert state is RunState.SUCCEEDED and step.status is StepStatus.DONE
    assert step.detail["verdict"] == "PASS"
    checks = {c["name"]: (c["observed"], c["limit"], c["rule"]) for c in step.detail["checks"]}
    # the defaults (CRITICAL, HIGH <= 0) and the file's MEDIUM, merged
    assert checks == {
        "ECS_IMAGE: CRITICAL": (0, 0, "<= 0 CRITICAL finding(s)"),
        "ECS_IMAGE: HIGH": (0, 0, "<= 0 HIGH finding(s)"),
        "ECS_IMAGE: MEDIUM": (0, 5, "<= 5 MEDIUM finding(s)"),
    }
    (only,) = step.detail["images"]
    assert only["label"] == "ECS_IMAGE" and only["verdict"] == "PASS"
    assert only["scan"]["image"] == image and only["scan"]["started"] is True
    assert step.detail["revision"] == "rel-test" and step.detail["numbers"]["images"] == 1


def test_one_critical_finding_stops_the_release_and_is_recorded(
    config: Path, endpoint: str, tmp_path: Path
) -> None:
    findings = {
        "findingSeverityCounts": {"CRITICAL": 1, "LOW": 3},
        "findings": [
            {
                "name": "CVE-2026-0001",
                "severity": "CRITICAL",
                "uri": "https://cve.example/CVE-2026-0001",
                "attributes": [
                    {"key": "package_name", "value": "glibc"},
                    {"key": "package_version", "value": "2.36"},
                ],
            }
        ],
    }
    image = pushed(endpoint, "gate-critical", findings)
    state, step, entries, reason = run_scan(tmp_path, "staging", {"ECS_IMAGE": image})
    assert state is RunState.FAILED and step.status is StepStatus.FAILED
    expected = (
        "ECS_IMAGE: 1 CRITICAL finding(s) in the image, at most 0 allowed, e.g. CVE-2026-0001 in glibc 2.36"
    )
    assert reason is not None and expected in reason and "nothing was deployed" in reason
    assert step.detail["verdict"] == "FAIL" and step.detail["reasons"] == [expected]
    assert step.detail["numbers"]["findings_critical"] == 1 and step.detail["numbers"]["findings_low"] == 3
    recorded = [e for e in entries if e.detail.get("step") == "scan" and e.detail.get("verdict") == "FAIL"]
    assert recorded and recorded[-1].detail["numbers"]["findings_critical"] == 1


def test_a_limit_raised_for_one_run_passes_and_is_in_its_params(
    config: Path, endpoint: str, tmp_path: Path
) -> None:
    image = pushed(endpoint, "gate-accepted", {"findingSeverityCounts": {"CRITICAL": 1}, "findings": []})
    state, step, entries, _ = run_scan(
        tmp_path, "staging", {"ECS_IMAGE": image}, params={"scan_limits": {"CRITICAL": 1}}
    )
    assert state is RunState.SUCCEEDED and step.detail["verdict"] == "PASS"
    assert step.detail["limits"] == {"CRITICAL": 1, "HIGH": 0, "MEDIUM": 5}
    started = next(e for e in entries if e.kind == "run.started")
    assert started.detail["params"]["scan_limits"] == {"CRITICAL": 1}


def test_an_unknown_severity_in_a_run_is_refused_naming_it(
    config: Path, endpoint: str, tmp_path: Path
) -> None:
    image = pushed(endpoint, "gate-typo", None)
    state, _, _, reason = run_scan(
        tmp_path, "staging", {"ECS_IMAGE": image}, params={"scan_limits": {"SEVERE": 1}}
    )
    assert state is RunState.FAILED
    assert reason is not None and "params.scan_limits: unknown severity 'SEVERE'" in reason


def test_a_tag_only_image_fails_the_step_naming_it(config: Path, tmp_path: Path) -> None:
    image = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/gate-clean:v1"
    state, step, _, reason = run_scan(tmp_path, "staging", {"ECS_IMAGE": image})
    assert state is RunState.FAILED and step.detail["image"] == image
    assert reason is not None and f"image reference {image!r}: it names no digest" in reason


def test_without_an_image_or_on_the_local_platform_the_step_says_why_it_did_not_scan(
    config: Path, tmp_path: Path
) -> None:
    state, step, _, _ = run_scan(tmp_path, "staging", {"MANGAASSIST_FAULT": "latency_ms=1"})
    assert state is RunState.SUCCEEDED and step.detail["skipped"] == NO_IMAGE_AWS
    state, step, _, _ = run_scan(tmp_path / "local", "dev", {})
    assert state is RunState.SUCCEEDED and step.detail["skipped"] == NO_IMAGE_LOCAL
    assert "verdict" not in step.detail  # done, not judged


def test_a_rollback_to_a_release_that_was_live_is_not_held_by_its_findings(
    config: Path, endpoint: str, tmp_path: Path
) -> None:
    image = pushed(endpoint, "gate-rollback", {"findingSeverityCounts": {"CRITICAL": 3}, "findings": []})
    state, step, _, _ = run_scan(tmp_path, "staging", {"ECS_IMAGE": image}, params={"rollback_of": "rel-old"})
    assert state is RunState.SUCCEEDED
    assert step.detail["skipped"].startswith("a rollback to rel-old, a release that was live")


def test_cd01_scans_after_the_tests_and_before_the_candidate(config: Path) -> None:
    from mangaassist.delivery.pipelines import app as cd01

    pipeline = cd01.build({"environment": "dev"})
    assert pipeline.step_names[:4] == ["build", "test", "scan", "candidate"]
    scan = next(s for s in pipeline.steps if s.name == "scan")
    assert scan.changes is False  # read-only: a policy's approval step goes after it, before the candidate


def test_where_the_policy_allows_it_an_override_lets_a_failed_scan_through_recorded(
    config: Path, endpoint: str, tmp_path: Path
) -> None:
    image = pushed(endpoint, "gate-override", {"findingSeverityCounts": {"HIGH": 1}, "findings": []})
    state, step, entries, _ = run_scan(
        tmp_path,
        "staging",
        {"ECS_IMAGE": image},
        overrides={"staging.gates": "CVE accepted by sec-review 12"},
    )
    assert state is RunState.SUCCEEDED
    assert step.detail["verdict"] == "FAIL" and step.detail["overridden"] == "staging.gates"
    assert step.detail["override_reason"] == "CVE accepted by sec-review 12"
    assert any(e.kind == "policy.override" for e in entries)


# -- every image the release names: ECS_IMAGE and LAMBDA_IMAGE ---------------------------------------

CLEAN: dict[str, Any] = {"findings": [], "findingSeverityCounts": {}}
ONE_CRITICAL: dict[str, Any] = {
    "findingSeverityCounts": {"CRITICAL": 1, "MEDIUM": 2},
    "findings": [{"name": "CVE-2026-0009", "severity": "CRITICAL", "attributes": []}],
}


def test_both_images_are_judged_each_with_the_same_limits_and_the_failing_one_named(
    config: Path, endpoint: str, tmp_path: Path
) -> None:
    ecs = pushed(endpoint, "gate-both-ecs", CLEAN)
    function = pushed(endpoint, "gate-both-lambda", ONE_CRITICAL)
    state, step, entries, reason = run_scan(tmp_path, "staging", {"ECS_IMAGE": ecs, "LAMBDA_IMAGE": function})
    assert state is RunState.FAILED and step.status is StepStatus.FAILED
    expected = "LAMBDA_IMAGE: 1 CRITICAL finding(s) in the image, at most 0 allowed, e.g. CVE-2026-0009"
    assert step.detail["reasons"] == [expected]
    assert reason == f"step scan failed: image scan: {expected}; nothing was deployed"
    first, second = step.detail["images"]
    assert (first["label"], first["verdict"], first["scan"]["image"]) == ("ECS_IMAGE", "PASS", ecs)
    assert (second["label"], second["verdict"], second["scan"]["image"]) == ("LAMBDA_IMAGE", "FAIL", function)
    assert first["scan"]["digest"] == ecs.split("@")[1] and second["scan"]["counts"]["MEDIUM"] == 2
    assert (
        first["limits"]
        == second["limits"]
        == step.detail["limits"]
        == {"CRITICAL": 0, "HIGH": 0, "MEDIUM": 5}
    )
    assert [c["name"] for c in step.detail["checks"]] == [
        f"{label}: {severity}"
        for label in ("ECS_IMAGE", "LAMBDA_IMAGE")
        for severity in ("CRITICAL", "HIGH", "MEDIUM")
    ]
    # the numbers: the most of each severity any one image has (what the limits are held against)
    assert step.detail["numbers"]["findings_critical"] == 1 and step.detail["numbers"]["images"] == 2
    recorded = [e for e in entries if e.detail.get("step") == "scan" and e.detail.get("verdict") == "FAIL"]
    assert recorded and recorded[-1].detail["numbers"]["images"] == 2


def test_a_lambda_image_alone_is_judged(config: Path, endpoint: str, tmp_path: Path) -> None:
    function = pushed(endpoint, "gate-lambda-alone", CLEAN)
    state, step, _, _ = run_scan(tmp_path, "staging", {"LAMBDA_IMAGE": function})
    assert state is RunState.SUCCEEDED and step.detail["verdict"] == "PASS"
    assert [(i["label"], i["scan"]["image"]) for i in step.detail["images"]] == [("LAMBDA_IMAGE", function)]


def test_one_image_named_by_both_variables_is_judged_once(
    config: Path, endpoint: str, tmp_path: Path
) -> None:
    image = pushed(endpoint, "gate-same", CLEAN)
    repository, digest = image.split("@")
    tagged = f"{repository}:v1@{digest}"  # a tag beside the digest: the same image
    state, step, _, _ = run_scan(tmp_path, "staging", {"ECS_IMAGE": image, "LAMBDA_IMAGE": tagged})
    assert state is RunState.SUCCEEDED
    (only,) = step.detail["images"]
    assert only["label"] == "ECS_IMAGE+LAMBDA_IMAGE" and only["scan"]["image"] == image
    assert step.detail["numbers"]["images"] == 1


def test_an_image_the_scanner_refuses_stops_the_step_with_the_images_judged_before_it(
    config: Path, endpoint: str, tmp_path: Path
) -> None:
    ecs = pushed(endpoint, "gate-before-error", CLEAN)
    tag_only = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/gate-before-error:v1"
    state, step, _, reason = run_scan(tmp_path, "staging", {"ECS_IMAGE": ecs, "LAMBDA_IMAGE": tag_only})
    assert state is RunState.FAILED
    assert reason is not None and reason.startswith(
        f"step scan failed: image scan of LAMBDA_IMAGE: image reference {tag_only!r}"
    )
    assert step.detail["image"] == tag_only and step.detail["label"] == "LAMBDA_IMAGE"
    assert [(i["label"], i["verdict"]) for i in step.detail["images"]] == [("ECS_IMAGE", "PASS")]


def test_on_the_local_platform_the_images_named_are_said_and_not_scanned(
    config: Path, tmp_path: Path
) -> None:
    state, step, _, _ = run_scan(tmp_path, "dev", {"ECS_IMAGE": "a@sha256:1", "LAMBDA_IMAGE": "b@sha256:2"})
    assert state is RunState.SUCCEEDED
    assert step.detail["skipped"] == (
        f"{NO_IMAGE_LOCAL} (ECS_IMAGE=a@sha256:1, LAMBDA_IMAGE=b@sha256:2: only environment variables there)"
    )
