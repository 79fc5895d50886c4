"""``EcrImageScanner`` against moto's server (ECR's real HTTP API as moto implements it), made by the
factory from an aws environment's settings (``endpoint_url``): an image pushed with ``put_image``
and never scanned gets a scan started, then its findings; findings configured through moto's API
(a CRITICAL, a failed scan) come back as ECR would send them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.factory import Platform
from mangaassist.platform.image_scan import ImageScanError
from mangaassist.platform.settings import PlatformSettings
from tests.moto_server import ACCOUNT, CREDENTIALS, moto_server, push_image, set_scan_result


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def platform(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    settings = PlatformSettings(
        environment="staging",
        provider="aws",
        root=tmp_path,
        home=tmp_path,
        control_port=0,
        services={},
        aws={"region": "us-east-1", "endpoint_url": endpoint},
    )
    with Platform(settings) as p:
        yield p


def test_an_image_never_scanned_is_scanned_then_its_findings_read(endpoint: str, platform: Platform) -> None:
    image = push_image(endpoint, "scan-basic")
    said: list[str] = []
    report = platform.image_scanner().findings(image, poll_s=0.01, timeout_s=5, progress=said.append)
    assert report.started  # moto's put_image does not scan: the provider started one
    assert any("starting one" in m for m in said)
    assert report.status == "COMPLETE" and report.scan_type == "basic"
    # moto's default answer: one HIGH finding in a fake package
    assert report.counts["HIGH"] == 1 and report.counts["CRITICAL"] == 0
    assert [(f.name, f.severity, f.package) for f in report.worst] == [
        ("CVE-9999-9999", "HIGH", "moto_fake 9.9.9")
    ]
    # a second look finds the scan: none started again (moto refuses a second scan the same day)
    again = platform.image_scanner().findings(image, poll_s=0.01, timeout_s=5)
    assert not again.started and again.counts["HIGH"] == 1


def test_a_critical_finding_configured_in_moto_comes_back(endpoint: str, platform: Platform) -> None:
    image = push_image(endpoint, "scan-critical")
    set_scan_result(
        endpoint,
        image,
        "COMPLETE",
        {
            "findingSeverityCounts": {"CRITICAL": 1, "MEDIUM": 2},
            "findings": [
                {
                    "name": "CVE-2026-0001",
                    "severity": "CRITICAL",
                    "uri": "https://cve.example/1",
                    "attributes": [
                        {"key": "package_name", "value": "glibc"},
                        {"key": "package_version", "value": "2.36"},
                    ],
                },
            ],
        },
    )
    report = platform.image_scanner().findings(image, poll_s=0.01, timeout_s=5)
    assert report.counts["CRITICAL"] == 1 and report.counts["MEDIUM"] == 2
    assert report.worst[0].describe() == "CVE-2026-0001 (CRITICAL in glibc 2.36)"


def test_a_failed_scan_and_a_missing_image_are_errors(endpoint: str, platform: Platform) -> None:
    image = push_image(endpoint, "scan-failed")
    set_scan_result(endpoint, image, "FAILED", {})
    with pytest.raises(ImageScanError, match="FAILED: moto says FAILED"):
        platform.image_scanner().findings(image, poll_s=0.01, timeout_s=5)
    missing = image.rsplit("@", 1)[0] + "@sha256:" + "0" * 64
    with pytest.raises(NotFoundError, match="ImageNotFoundException"):
        platform.image_scanner().findings(missing, poll_s=0.01, timeout_s=5)


def test_a_tag_is_refused_before_any_call(platform: Platform) -> None:
    with pytest.raises(ConfigError, match="names no digest"):
        platform.image_scanner().findings(
            f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scan-basic:v1", poll_s=1, timeout_s=1
        )
