"""``EcrImageScanner`` with botocore's ``Stubber`` (the exact requests ECR gets): image references,
waiting for a scan, pages, enhanced findings, a scan started when none exists, failures, the
timeout. moto's server runs the same provider in ``tests/integration/platform/test_ecr_image_scan.py``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.delivery.pipelines.image_scan import release_images, scan_release
from mangaassist.platform.aws import compute_ecs, compute_lambda
from mangaassist.platform.aws.dryrun import MAX_POLLS, DryRun, DryRunWait
from mangaassist.platform.aws.image_scan import EcrImageScanner, parse_image_ref
from mangaassist.platform.factory import Platform
from mangaassist.platform.image_scan import (
    IMAGE_ENV,
    IMAGE_ENVS,
    LAMBDA_IMAGE_ENV,
    SEVERITIES,
    ImageScanError,
    image_identity,
)
from mangaassist.platform.settings import PlatformSettings

DIGEST = "sha256:" + "ab" * 32
REPO = "mangaassist-staging-chatbot"
IMAGE = f"222222222222.dkr.ecr.us-east-1.amazonaws.com/{REPO}@{DIGEST}"
EXPECTED = {
    "registryId": "222222222222",
    "repositoryName": REPO,
    "imageId": {"imageDigest": DIGEST},
    "maxResults": 1000,
}
START = {k: v for k, v in EXPECTED.items() if k != "maxResults"}


class Clock:
    """A fake monotonic clock: ``sleep`` moves it, nothing really waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def ecr() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "ecr", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def answer(status: str, findings: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "registryId": "222222222222",
        "repositoryName": REPO,
        "imageId": {"imageDigest": DIGEST},
        "imageScanStatus": {"status": status, "description": f"the scan is {status.lower()}"},
        **extra,
    }
    if findings is not None:
        body["imageScanFindings"] = findings
    return body


def basic(name: str, severity: str, package: str = "openssl", version: str = "3.0.1") -> dict[str, Any]:
    return {
        "name": name,
        "uri": f"https://cve.example/{name}",
        "severity": severity,
        "attributes": [
            {"key": "package_name", "value": package},
            {"key": "package_version", "value": version},
            {"key": "CVSS3_SCORE", "value": "9.8" if severity == "CRITICAL" else "5.0"},
        ],
    }


# -- references -----------------------------------------------------------------------------------


def test_a_reference_by_digest_is_parsed_and_a_tag_beside_it_kept() -> None:
    ref = parse_image_ref(IMAGE)
    assert (ref.account, ref.region, ref.repository, ref.digest, ref.tag) == (
        "222222222222",
        "us-east-1",
        REPO,
        DIGEST,
        None,
    )
    tagged = parse_image_ref(f"222222222222.dkr.ecr.eu-west-3.amazonaws.com/team/chatbot:abc123@{DIGEST}")
    assert (tagged.region, tagged.repository, tagged.tag) == ("eu-west-3", "team/chatbot", "abc123")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (f"222222222222.dkr.ecr.us-east-1.amazonaws.com/{REPO}:abc123", "names no digest"),
        ("", "it is empty"),
        (f"docker.io/library/python@{DIGEST}", "not an Amazon ECR image"),
        (f"222222222222.dkr.ecr.us-east-1.amazonaws.com/{REPO}@sha256:abc", "malformed"),
        (f"2222.dkr.ecr.us-east-1.amazonaws.com/{REPO}@{DIGEST}", "malformed"),
    ],
)
def test_anything_but_an_ecr_reference_by_digest_is_refused_naming_it(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_image_ref(value)
    assert repr(value) in str(err.value) and why in str(err.value)
    assert "@sha256:" in str(err.value)  # says what is expected


def test_an_image_of_another_region_than_the_client_is_refused(ecr: tuple[Any, Stubber]) -> None:
    client, _ = ecr
    other = IMAGE.replace("us-east-1", "eu-west-1")
    with pytest.raises(ConfigError, match=r"is in eu-west-1; .* client is in us-east-1"):
        EcrImageScanner(client).findings(other, poll_s=1, timeout_s=0)


def test_the_neutral_names_are_the_providers() -> None:
    assert IMAGE_ENV == compute_ecs.IMAGE_ENV
    assert LAMBDA_IMAGE_ENV == compute_lambda.IMAGE_ENV
    assert IMAGE_ENVS == (compute_ecs.IMAGE_ENV, compute_lambda.IMAGE_ENV)
    assert SEVERITIES[:2] == ("CRITICAL", "HIGH")


# -- findings -------------------------------------------------------------------------------------


def test_a_scan_in_progress_is_waited_for_then_every_page_read(ecr: tuple[Any, Stubber]) -> None:
    client, stub = ecr
    clock = Clock()
    stub.add_response("describe_image_scan_findings", answer("IN_PROGRESS"), EXPECTED)
    stub.add_response("describe_image_scan_findings", answer("PENDING"), EXPECTED)
    counts = {"CRITICAL": 1, "HIGH": 1, "LOW": 1}
    first = {
        "findingSeverityCounts": counts,
        "findings": [basic("CVE-2024-0002", "LOW"), basic("CVE-2024-0003", "HIGH", "zlib", "1.2")],
        "imageScanCompletedAt": datetime(2026, 12, 7, 17, 0, tzinfo=UTC),
    }
    stub.add_response("describe_image_scan_findings", answer("COMPLETE", first, nextToken="page-2"), EXPECTED)
    second = {"findings": [basic("CVE-2024-0001", "CRITICAL")]}
    stub.add_response(
        "describe_image_scan_findings", answer("COMPLETE", second), {**EXPECTED, "nextToken": "page-2"}
    )
    said: list[str] = []
    report = EcrImageScanner(client, sleep=clock.sleep, clock=clock).findings(
        IMAGE, poll_s=2, timeout_s=60, progress=said.append
    )
    assert clock.slept == [2, 2]
    assert [m.split(";")[0] for m in said] == [
        f"scan of {REPO}@{DIGEST[:19]}: IN_PROGRESS",
        f"scan of {REPO}@{DIGEST[:19]}: PENDING",
    ]
    assert report.status == "COMPLETE" and report.scan_type == "basic" and not report.started
    assert report.counts == {**dict.fromkeys(SEVERITIES, 0), **counts}
    assert report.total == 3
    assert [(f.name, f.severity, f.package) for f in report.worst] == [
        ("CVE-2024-0001", "CRITICAL", "openssl 3.0.1"),
        ("CVE-2024-0003", "HIGH", "zlib 1.2"),
        ("CVE-2024-0002", "LOW", "openssl 3.0.1"),
    ]
    assert report.worst[0].uri == "https://cve.example/CVE-2024-0001"
    assert report.completed_at == "2026-12-07T17:00:00+00:00"


def test_an_image_never_scanned_gets_a_scan_started_once(ecr: tuple[Any, Stubber]) -> None:
    client, stub = ecr
    clock = Clock()
    stub.add_client_error("describe_image_scan_findings", "ScanNotFoundException", "no scan", 400, EXPECTED)
    stub.add_response(
        "start_image_scan",
        {"registryId": "222222222222", "repositoryName": REPO, "imageScanStatus": {"status": "IN_PROGRESS"}},
        START,
    )
    # ECR may not show the scan at once: not found again is waited for, never a second start
    stub.add_client_error("describe_image_scan_findings", "ScanNotFoundException", "no scan", 400, EXPECTED)
    stub.add_response("describe_image_scan_findings", answer("COMPLETE", {"findings": []}), EXPECTED)
    said: list[str] = []
    report = EcrImageScanner(client, sleep=clock.sleep, clock=clock).findings(
        IMAGE, poll_s=1, timeout_s=10, progress=said.append
    )
    assert report.started and report.status == "COMPLETE"
    assert report.counts["CRITICAL"] == 0 and report.worst == ()
    assert any("has no scan" in m and "starting one" in m for m in said)


def test_enhanced_findings_are_read_with_inspectors_shapes(ecr: tuple[Any, Stubber]) -> None:
    client, stub = ecr
    enhanced = {
        "findingSeverityCounts": {"HIGH": 1, "UNTRIAGED": 1},
        "enhancedFindings": [
            {
                "severity": "UNTRIAGED",
                "title": "CVE-2025-9 - busybox",
                "packageVulnerabilityDetails": {"vulnerabilityId": "CVE-2025-9"},
            },
            {
                "severity": "HIGH",
                "score": 8.1,
                "title": "CVE-2025-1 - requests",
                "packageVulnerabilityDetails": {
                    "vulnerabilityId": "CVE-2025-1",
                    "sourceUrl": "https://nvd.example/CVE-2025-1",
                    "vulnerablePackages": [{"name": "requests", "version": "2.0.0"}],
                },
            },
        ],
    }
    stub.add_response("describe_image_scan_findings", answer("ACTIVE", enhanced), EXPECTED)
    report = EcrImageScanner(client).findings(IMAGE, poll_s=1, timeout_s=0)
    assert report.scan_type == "enhanced" and report.status == "ACTIVE"
    assert report.counts["UNTRIAGED"] == 1 and report.counts["HIGH"] == 1
    assert [f.as_dict() for f in report.worst] == [
        {
            "name": "CVE-2025-1",
            "severity": "HIGH",
            "package": "requests 2.0.0",
            "uri": "https://nvd.example/CVE-2025-1",
        },
        {"name": "CVE-2025-9", "severity": "UNTRIAGED", "package": None, "uri": None},
    ]


def test_an_enhanced_registry_refusing_a_manual_scan_is_waited_for(ecr: tuple[Any, Stubber]) -> None:
    client, stub = ecr
    clock = Clock()
    stub.add_client_error("describe_image_scan_findings", "ScanNotFoundException", "no scan", 400, EXPECTED)
    stub.add_client_error("start_image_scan", "ValidationException", "enhanced scanning is on", 400, START)
    stub.add_response("describe_image_scan_findings", answer("ACTIVE", {"enhancedFindings": []}), EXPECTED)
    said: list[str] = []
    report = EcrImageScanner(client, sleep=clock.sleep, clock=clock).findings(
        IMAGE, poll_s=5, timeout_s=30, progress=said.append
    )
    assert report.status == "ACTIVE" and clock.slept == [5]
    assert any("refused a manual scan (enhanced scanning is on)" in m for m in said)


@pytest.mark.parametrize("status", ["FAILED", "UNSUPPORTED_IMAGE", "SCAN_ELIGIBILITY_EXPIRED"])
def test_a_scan_that_gives_no_findings_is_an_error_with_ecrs_words(
    ecr: tuple[Any, Stubber], status: str
) -> None:
    client, stub = ecr
    stub.add_response("describe_image_scan_findings", answer(status), EXPECTED)
    with pytest.raises(ImageScanError) as err:
        EcrImageScanner(client).findings(IMAGE, poll_s=1, timeout_s=60)
    assert str(err.value) == f"scan of {IMAGE}: {status}: the scan is {status.lower()}"


def test_a_scan_still_running_at_the_timeout_is_an_error(ecr: tuple[Any, Stubber]) -> None:
    client, stub = ecr
    clock = Clock()
    for _ in range(4):  # at 0, 2, 4 and a last look at 5 s
        stub.add_response("describe_image_scan_findings", answer("IN_PROGRESS"), EXPECTED)
    with pytest.raises(ImageScanError, match=r"still IN_PROGRESS after 5 s .*scan_timeout_s"):
        EcrImageScanner(client, sleep=clock.sleep, clock=clock).findings(IMAGE, poll_s=2, timeout_s=5)
    assert clock.slept == [2, 2, 1]  # the last wait is what was left, never past the timeout


def test_a_missing_image_is_not_found_and_other_errors_are_named(ecr: tuple[Any, Stubber]) -> None:
    client, stub = ecr
    stub.add_client_error(
        "describe_image_scan_findings", "ImageNotFoundException", "no such image", 400, EXPECTED
    )
    with pytest.raises(NotFoundError, match=re.escape(f"of {IMAGE}: ImageNotFoundException: no such image")):
        EcrImageScanner(client).findings(IMAGE, poll_s=1, timeout_s=0)
    stub.add_client_error("describe_image_scan_findings", "ScanNotFoundException", "no scan", 400, EXPECTED)
    stub.add_client_error("start_image_scan", "LimitExceededException", "one scan a day", 400, START)
    with pytest.raises(ImageScanError, match=r"StartImageScan of .*LimitExceededException: one scan a day"):
        EcrImageScanner(client).findings(IMAGE, poll_s=1, timeout_s=0)


def test_bad_poll_settings_are_refused(ecr: tuple[Any, Stubber]) -> None:
    client, _ = ecr
    with pytest.raises(ConfigError, match="poll_s must be > 0"):
        EcrImageScanner(client).findings(IMAGE, poll_s=0, timeout_s=10)


def test_a_dry_run_records_the_scan_it_would_start_and_ends_at_a_wait(ecr: tuple[Any, Stubber]) -> None:
    client, stub = ecr
    run = DryRun(reads_made=True)
    for _ in range(1 + MAX_POLLS):  # the first look, then the polls a dry run answers after a change
        stub.add_client_error(
            "describe_image_scan_findings", "ScanNotFoundException", "no scan", 400, EXPECTED
        )
    clock = Clock()
    scanner = EcrImageScanner(run.wrap(client), sleep=clock.sleep, clock=clock)
    with pytest.raises(DryRunWait):
        scanner.findings(IMAGE, poll_s=1, timeout_s=60)
    # StartImageScan never reached the client (the Stubber had none queued): recorded, not made
    assert [(c.operation, c.read, c.made) for c in run.calls][:2] == [
        ("DescribeImageScanFindings", True, True),
        ("StartImageScan", False, False),
    ]


def test_the_local_platform_has_no_image_scanner(tmp_path: Path) -> None:
    settings = PlatformSettings(
        environment="dev", provider="local", root=tmp_path, home=tmp_path, control_port=0, services={}
    )
    with pytest.raises(ConfigError, match=r"no ImageScanner provider yet .*wheel-based revisions"):
        Platform(settings).image_scanner()


# -- CD-01's scan step over every image a release names (ECS_IMAGE, LAMBDA_IMAGE) ------------------

OTHER_REPO = "mangaassist-staging-chatbot-lambda"
OTHER_DIGEST = "sha256:" + "cd" * 32
OTHER = f"222222222222.dkr.ecr.us-east-1.amazonaws.com/{OTHER_REPO}@{OTHER_DIGEST}"


def test_a_tag_beside_a_digest_does_not_make_another_image() -> None:
    tagged = IMAGE.replace(f"{REPO}@", f"{REPO}:v1@")
    assert image_identity(tagged) == image_identity(f"  {IMAGE} ") == IMAGE
    assert image_identity("registry.example:5000/repo@sha256:1") == "registry.example:5000/repo@sha256:1"
    assert image_identity("registry.example:5000/repo:v2@sha256:1") == "registry.example:5000/repo@sha256:1"
    assert (
        image_identity("repo:v1") == "repo:v1"
    )  # no digest: the reference as it is (the scanner refuses it)
    assert release_images({"ECS_IMAGE": IMAGE, "LAMBDA_IMAGE": tagged}) == [("ECS_IMAGE+LAMBDA_IMAGE", IMAGE)]
    assert release_images({"LAMBDA_IMAGE": OTHER, "ECS_IMAGE": IMAGE, "OTHER": "x"}) == [
        ("ECS_IMAGE", IMAGE),
        ("LAMBDA_IMAGE", OTHER),
    ]
    assert release_images({"ECS_IMAGE": " ", "LAMBDA_IMAGE": ""}) == []


class Step:
    """What ``scan_release`` reads of a step's context and its run."""

    def __init__(self) -> None:
        self.params = {"environment": "staging"}
        self.said: list[str] = []
        self.run = SimpleNamespace(environment="staging", overrides={})

    def progress(self, message: str, fraction: float | None = None) -> None:
        self.said.append(message)


def scan_with(client: Any, set_env: dict[str, str]) -> tuple[Any, Step]:
    scanner = EcrImageScanner(client, sleep=Clock().sleep, clock=Clock())
    scope = SimpleNamespace(platform=SimpleNamespace(provider="aws", image_scanner=lambda: scanner))
    step = Step()
    return scan_release(scope, step, set_env, "rel-1"), step  # type: ignore[arg-type]


@pytest.fixture
def no_deploy_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``mangaassist.toml`` without deploy settings: the default limits, CRITICAL and HIGH <= 0."""
    config = tmp_path / "mangaassist.toml"
    config.write_text('[environments.staging]\nprovider = "aws"\n')
    monkeypatch.setenv("MANGAASSIST_PLATFORM_CONFIG", str(config))


def test_the_scan_step_reads_each_images_findings_by_digest(
    ecr: tuple[Any, Stubber], no_deploy_table: None
) -> None:
    client, stub = ecr
    stub.add_response("describe_image_scan_findings", answer("COMPLETE", {"findings": []}), EXPECTED)
    other = {
        "registryId": "222222222222",
        "repositoryName": OTHER_REPO,
        "imageId": {"imageDigest": OTHER_DIGEST},
    }
    high = {"findingSeverityCounts": {"HIGH": 1}, "findings": [basic("CVE-2024-0009", "HIGH")]}
    stub.add_response(
        "describe_image_scan_findings",
        {**answer("COMPLETE", high), "repositoryName": OTHER_REPO, "imageId": {"imageDigest": OTHER_DIGEST}},
        {**other, "maxResults": 1000},
    )
    outcome, step = scan_with(client, {"LAMBDA_IMAGE": OTHER, "ECS_IMAGE": IMAGE})
    stub.assert_no_pending_responses()  # one DescribeImageScanFindings per image, ECS's first
    assert outcome.verdict.value == "FAIL"
    assert outcome.reason == (
        "image scan: LAMBDA_IMAGE: 1 HIGH finding(s) in the image, at most 0 allowed, "
        "e.g. CVE-2024-0009 in openssl 3.0.1; nothing was deployed"
    )
    images = outcome.detail["images"]
    assert [(i["label"], i["verdict"], i["scan"]["digest"]) for i in images] == [
        ("ECS_IMAGE", "PASS", DIGEST),
        ("LAMBDA_IMAGE", "FAIL", OTHER_DIGEST),
    ]
    assert images[1]["scan"]["worst"][0]["name"] == "CVE-2024-0009"
    assert [m for m in step.said if m.startswith("scan findings of")] == [
        f"scan findings of ECS_IMAGE {IMAGE} (limits: CRITICAL <= 0, HIGH <= 0)",
        f"scan findings of LAMBDA_IMAGE {OTHER} (limits: CRITICAL <= 0, HIGH <= 0)",
    ]


def test_the_scan_step_reads_one_image_named_twice_once(
    ecr: tuple[Any, Stubber], no_deploy_table: None
) -> None:
    client, stub = ecr
    stub.add_response("describe_image_scan_findings", answer("COMPLETE", {"findings": []}), EXPECTED)
    tagged = IMAGE.replace(f"{REPO}@", f"{REPO}:v1@")
    outcome, _ = scan_with(client, {"ECS_IMAGE": tagged, "LAMBDA_IMAGE": IMAGE})
    stub.assert_no_pending_responses()  # one request: a second would find no response queued
    assert outcome.verdict.value == "PASS"
    assert [i["label"] for i in outcome.detail["images"]] == ["ECS_IMAGE+LAMBDA_IMAGE"]
    assert outcome.numbers["images"] == 1.0
