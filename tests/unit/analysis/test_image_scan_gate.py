"""CD-01's image gate (``image_scan_gate``) and its limits (``scan_limits``, ``scan_limits`` in
``[environments.ENV.deploy]``): pure decisions, exact reasons, refused input named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.gates import (
    DEFAULT_SCAN_LIMITS,
    image_scan_gate,
    release_images_gate,
    scan_limits,
)
from mangaassist.delivery.rollout.settings import deploy_settings
from mangaassist.platform.image_scan import SEVERITIES

WORST: list[dict[str, Any]] = [
    {"name": "CVE-2026-1", "severity": "CRITICAL", "package": "glibc 2.36", "uri": "https://cve.example/1"},
    {"name": "CVE-2026-2", "severity": "HIGH", "package": None, "uri": None},
]


def test_no_finding_passes_with_one_check_per_limited_severity() -> None:
    result = image_scan_gate({}, DEFAULT_SCAN_LIMITS, image="img@sha256:x")
    assert result.verdict is Verdict.PASS
    assert [(c.name, c.observed, c.limit, c.rule) for c in result.checks] == [
        ("CRITICAL", 0, 0, "<= 0 CRITICAL finding(s)"),
        ("HIGH", 0, 0, "<= 0 HIGH finding(s)"),
    ]
    assert result.numbers() == {f"findings_{s.lower()}": 0.0 for s in SEVERITIES}
    assert result.as_dict()["candidate_version"] == "img@sha256:x"


def test_one_critical_fails_naming_severity_count_limit_and_the_worst_finding() -> None:
    result = image_scan_gate({"CRITICAL": 1, "HIGH": 1, "LOW": 7}, {"CRITICAL": 0, "HIGH": 1}, worst=WORST)
    assert result.verdict is Verdict.FAIL
    assert result.reasons == (
        "1 CRITICAL finding(s) in the image, at most 0 allowed, e.g. CVE-2026-1 in glibc 2.36",
    )
    assert result.numbers()["findings_low"] == 7.0  # counted, not limited
    two = image_scan_gate({"HIGH": 2}, {"HIGH": 1}, worst=WORST)
    assert two.reasons == ("2 HIGH finding(s) in the image, at most 1 allowed, e.g. CVE-2026-2",)


def test_checks_go_worst_first_whatever_the_order_of_the_limits() -> None:
    result = image_scan_gate({}, {"LOW": 3, "CRITICAL": 0, "MEDIUM": 1})
    assert [c.name for c in result.checks] == ["CRITICAL", "MEDIUM", "LOW"]


def test_limits_are_read_from_tables_and_from_the_command_line() -> None:
    assert scan_limits({"critical": 0, "High": "2"}, "here") == {"CRITICAL": 0, "HIGH": 2}
    assert scan_limits("HIGH=3, untriaged=10", "--scan-limit") == {"HIGH": 3, "UNTRIAGED": 10}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"SEVERE": 1}, "where: unknown severity 'SEVERE' (known: CRITICAL, HIGH,"),
        ({"HIGH": -1}, "where: HIGH = -1: expected a whole number >= 0"),
        ({"HIGH": 1.5}, "where: HIGH = 1.5: expected a whole number >= 0"),
        ({"HIGH": True}, "where: HIGH = True: expected a whole number >= 0"),
        ("HIGH", "where: 'HIGH': expected SEVERITY=COUNT"),
        (["HIGH"], "where: expected a table of severity = count"),
    ],
)
def test_bad_limits_are_refused_naming_what_and_where(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        scan_limits(raw, "where")
    assert message in str(err.value)


def test_the_environment_raises_limits_over_the_defaults_and_a_run_over_both(tmp_path: Path) -> None:
    config = tmp_path / "mangaassist.toml"
    config.write_text(
        "[environments.prod.deploy]\nscan_limits = { HIGH = 2, MEDIUM = 10 }\nscan_timeout_s = 120\n"
    )
    settings = deploy_settings("prod", config)
    assert settings.scan_limits == {"CRITICAL": 0, "HIGH": 2, "MEDIUM": 10}
    assert (settings.scan_poll_s, settings.scan_timeout_s) == (10.0, 120.0)
    run = deploy_settings("prod", config, {"scan_limits": {"CRITICAL": 1}})
    assert run.scan_limits == {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 10}
    assert deploy_settings("dev", config).scan_limits == {"CRITICAL": 0, "HIGH": 0}


def test_an_unknown_severity_in_the_file_names_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "mangaassist.toml"
    config.write_text("[environments.prod.deploy]\nscan_limits = { HIGHEST = 0 }\n")
    with pytest.raises(ConfigError) as err:
        deploy_settings("prod", config)
    assert str(err.value).startswith(
        "mangaassist.toml: environments.prod.deploy.scan_limits: unknown severity 'HIGHEST'"
    )
    config.write_text("[environments.prod.deploy]\nscan_poll_s = 0\n")
    with pytest.raises(ConfigError, match=r"deploy\.scan_poll_s: expected a number > 0, got 0"):
        deploy_settings("prod", config)


def test_the_release_gate_judges_every_image_naming_each_in_its_checks_and_reasons() -> None:
    clean = image_scan_gate({"LOW": 4}, DEFAULT_SCAN_LIMITS, image="ecs@sha256:1")
    failing = image_scan_gate(
        {"CRITICAL": 1, "LOW": 1}, DEFAULT_SCAN_LIMITS, worst=WORST, image="fn@sha256:2"
    )
    result = release_images_gate([("ECS_IMAGE", clean), ("LAMBDA_IMAGE", failing)], {"revision": "rel-1"})
    assert result.verdict is Verdict.FAIL
    assert [c.name for c in result.checks] == [
        "ECS_IMAGE: CRITICAL",
        "ECS_IMAGE: HIGH",
        "LAMBDA_IMAGE: CRITICAL",
        "LAMBDA_IMAGE: HIGH",
    ]
    assert result.reasons == (
        "LAMBDA_IMAGE: 1 CRITICAL finding(s) in the image, at most 0 allowed, e.g. CVE-2026-1 in glibc 2.36",
    )
    # each severity's number is the most any one image has, which is what the limits judge
    assert result.numbers()["findings_critical"] == 1.0 and result.numbers()["findings_low"] == 4.0
    assert result.numbers()["images"] == 2.0
    shown = result.as_dict()
    assert shown["revision"] == "rel-1" and shown["candidate_version"] == "ecs@sha256:1, fn@sha256:2"
    assert [(i["label"], i["verdict"], i["candidate_version"]) for i in shown["images"]] == [
        ("ECS_IMAGE", "PASS", "ecs@sha256:1"),
        ("LAMBDA_IMAGE", "FAIL", "fn@sha256:2"),
    ]
    assert shown["images"][1]["reasons"] == [failing.reasons[0]]  # the image's own, without its label
    assert release_images_gate([("ECS_IMAGE", clean)], {}).verdict is Verdict.PASS
