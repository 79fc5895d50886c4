"""``SageMakerModelRegistry``: the SageMaker client is a botocore ``Stubber`` (every request's exact
parameters are asserted, in order), S3 is moto's (packages, registration files and alias moves are
real objects there).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.aws.compute_sagemaker import SageMakerError
from mangaassist.platform.aws.model_registry_sagemaker import (
    SageMakerModelRegistry,
    package_tar,
    status_after,
)

REGION = "us-east-1"
BUCKET = "ma-models"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mangaassist-intent:1"
GROUP = "ma-intent"
GROUP_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:model-package-group/{GROUP}"
T0 = 1_750_000_000.0


def arn(version: int) -> str:
    return f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/{version}"


def iso(tick: int) -> str:
    return datetime.fromtimestamp(T0 + tick, UTC).isoformat()


class Clock:
    """Each reading is one second after the last: tick 1, 2, 3, ..."""

    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> float:
        self.ticks += 1
        return T0 + self.ticks


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def env() -> Iterator[tuple[SageMakerModelRegistry, Stubber, Any]]:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        sm = boto3.client("sagemaker", region_name=REGION)
        registry = SageMakerModelRegistry(
            sm, s3, bucket=BUCKET, image=IMAGE, prefix="registry/", group_prefix="ma-", clock=Clock()
        )
        with Stubber(sm) as stub:
            yield registry, stub, s3
            stub.assert_no_pending_responses()


def _package(tmp_path: Path) -> Path:
    package = tmp_path / "package"
    package.mkdir()
    (package / "model.joblib").write_bytes(b"\x80\x04fitted classifier bytes")
    (package / "model.json").write_text(json.dumps({"version": "intent-7", "embedder": "hashing-256"}))
    return package


def _described(
    version: int,
    status: str,
    aliases: dict[str, str] | None = None,
    registration: str | None = None,
) -> dict[str, Any]:
    meta = {"package:sha256": f"digest{version}"}
    meta.update({f"alias:{a}": at for a, at in (aliases or {}).items()})
    out: dict[str, Any] = {
        "ModelPackageName": GROUP,
        "ModelPackageGroupName": GROUP,
        "ModelPackageVersion": version,
        "ModelPackageArn": arn(version),
        "CreationTime": datetime(2025, 6, version, 12, 0, tzinfo=UTC),
        "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
        "ModelApprovalStatus": status,
        "InferenceSpecification": {
            "Containers": [
                {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/registry/intent/d{version}/model.tar.gz"}
            ],
        },
        "CustomerMetadataProperties": meta,
    }
    if registration:
        out["ModelMetrics"] = {
            "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": registration}}
        }
    return out


def _expect_group(stub: Stubber) -> None:
    stub.add_response(
        "describe_model_package_group",
        {
            "ModelPackageGroupName": GROUP,
            "ModelPackageGroupArn": GROUP_ARN,
            "CreationTime": datetime(2025, 6, 1, tzinfo=UTC),
            "CreatedBy": {},
            "ModelPackageGroupStatus": "Completed",
        },
        {"ModelPackageGroupName": GROUP},
    )


def _expect_describe(stub: Stubber, described: dict[str, Any]) -> None:
    stub.add_response("describe_model_package", described, {"ModelPackageName": described["ModelPackageArn"]})


def _expect_listing(stub: Stubber, *packages: dict[str, Any]) -> None:
    """One page of ``ListModelPackages`` and one ``DescribeModelPackage`` per package."""
    stub.add_response(
        "list_model_packages",
        {
            "ModelPackageSummaryList": [
                {
                    "ModelPackageArn": p["ModelPackageArn"],
                    "CreationTime": p["CreationTime"],
                    "ModelPackageStatus": "Completed",
                }
                for p in packages
            ]
        },
        {
            "ModelPackageGroupName": GROUP,
            "ModelPackageType": "Versioned",
            "SortBy": "CreationTime",
            "SortOrder": "Ascending",
            "MaxResults": 100,
        },
    )
    for p in packages:
        _expect_describe(stub, p)


def test_package_tar_is_reproducible(tmp_path: Path) -> None:
    package = _package(tmp_path)
    first = package_tar(package)
    (package / "model.json").touch()  # a newer mtime must not change the bytes
    assert package_tar(package) == first
    (package / "model.json").write_text("{}")
    assert package_tar(package) != first


def test_register_creates_the_group_uploads_and_creates_a_pending_package(
    env: tuple[SageMakerModelRegistry, Stubber, Any], tmp_path: Path
) -> None:
    registry, stub, s3 = env
    package = _package(tmp_path)
    digest = hashlib.sha256(package_tar(package)).hexdigest()
    base = f"registry/intent/{digest}"
    stub.add_client_error(
        "describe_model_package_group",
        "ValidationException",
        f"ModelPackageGroup {GROUP} does not exist.",
        expected_params={"ModelPackageGroupName": GROUP},
    )
    stub.add_response(
        "create_model_package_group",
        {"ModelPackageGroupArn": GROUP_ARN},
        {"ModelPackageGroupName": GROUP, "ModelPackageGroupDescription": "MangaAssist model intent"},
    )
    stub.add_response(
        "create_model_package",
        {"ModelPackageArn": arn(1)},
        {
            "ModelPackageGroupName": GROUP,
            "ModelPackageDescription": f"intent package sha256 {digest}",
            "InferenceSpecification": {
                "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{base}/model.tar.gz"}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": f"s3://{BUCKET}/{base}/registration.json",
                    }
                }
            },
            "CustomerMetadataProperties": {"package:sha256": digest},
            "ModelApprovalStatus": "PendingManualApproval",
        },
    )
    described = _described(1, "PendingManualApproval", registration=f"s3://{BUCKET}/{base}/registration.json")
    described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] = (
        f"s3://{BUCKET}/{base}/model.tar.gz"
    )
    _expect_describe(stub, described)

    version = registry.register(
        "intent",
        package,
        metrics={"macro_f1": 0.91, "accuracy": 0.93},
        params={"C": "1.0"},
        tags={"actor": "ci"},
    )

    assert (version.name, version.version, version.aliases) == ("intent", "1", ())
    assert version.source == f"s3://{BUCKET}/{base}/model.tar.gz"
    assert version.metrics == {"accuracy": 0.93, "macro_f1": 0.91}
    assert version.params == {"C": "1.0"}
    assert version.tags == {"actor": "ci", "sagemaker.approval_status": "PendingManualApproval"}
    assert version.created_at == "2025-06-01T12:00:00+00:00"
    uploaded = s3.get_object(Bucket=BUCKET, Key=f"{base}/model.tar.gz")["Body"].read()
    assert uploaded == package_tar(package)

    # the package comes back as the same files
    _expect_describe(stub, described)
    out = registry.download("intent", "1", tmp_path / "dl")
    assert out == tmp_path / "dl" / "intent-v1"
    assert (out / "model.joblib").read_bytes() == (package / "model.joblib").read_bytes()
    assert json.loads((out / "model.json").read_text())["version"] == "intent-7"


def test_register_refuses_a_file_and_a_bad_name(
    env: tuple[SageMakerModelRegistry, Stubber, Any], tmp_path: Path
) -> None:
    registry, _stub, _s3 = env
    not_a_dir = tmp_path / "model.joblib"
    not_a_dir.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a model package directory"):
        registry.register("intent", not_a_dir, metrics={}, params={})
    with pytest.raises(ConfigError, match="model package group 'ma-intent_v2'"):
        registry.register("intent_v2", _package(tmp_path), metrics={}, params={})


def test_versions_follow_pagination_and_report_aliases(
    env: tuple[SageMakerModelRegistry, Stubber, Any],
) -> None:
    registry, stub, _s3 = env
    _expect_group(stub)
    page1 = {
        "ModelPackageGroupName": GROUP,
        "ModelPackageType": "Versioned",
        "SortBy": "CreationTime",
        "SortOrder": "Ascending",
        "MaxResults": 100,
    }
    summary = {"CreationTime": datetime(2025, 6, 1, tzinfo=UTC), "ModelPackageStatus": "Completed"}
    stub.add_response(
        "list_model_packages",
        {"ModelPackageSummaryList": [{**summary, "ModelPackageArn": arn(1)}], "NextToken": "page-2"},
        page1,
    )
    stub.add_response(
        "list_model_packages",
        {
            "ModelPackageSummaryList": [
                {**summary, "ModelPackageArn": arn(2)},
                {**summary, "ModelPackageArn": arn(3)},
            ]
        },
        {**page1, "NextToken": "page-2"},
    )
    _expect_describe(stub, _described(1, "Approved", {"previous": iso(1)}))
    _expect_describe(stub, _described(2, "Approved", {"champion": iso(2), "candidate": iso(1)}))
    _expect_describe(stub, _described(3, "Rejected"))
    versions = registry.versions("intent")
    assert [(v.version, v.aliases, v.tags["sagemaker.approval_status"]) for v in versions] == [
        ("1", ("previous",), "Approved"),
        ("2", ("candidate", "champion"), "Approved"),
        ("3", (), "Rejected"),
    ]


def test_versions_of_an_unknown_model_is_empty(env: tuple[SageMakerModelRegistry, Stubber, Any]) -> None:
    registry, stub, _s3 = env
    stub.add_client_error(
        "describe_model_package_group",
        "ValidationException",
        "ModelPackageGroup ma-nope does not exist.",
        expected_params={"ModelPackageGroupName": "ma-nope"},
    )
    assert registry.versions("nope") == []


def test_promotion_approves_the_candidate_and_keeps_the_old_champion_approved_as_previous(
    env: tuple[SageMakerModelRegistry, Stubber, Any],
) -> None:
    registry, stub, s3 = env
    v1 = _described(1, "Approved", {"champion": iso(-10)})
    v2 = _described(2, "PendingManualApproval", {"candidate": iso(-5)})
    # 1) previous -> v1 (nobody held it): v1 gains the entry, stays Approved
    _expect_group(stub)
    _expect_describe(stub, v1)
    _expect_listing(stub, v1, v2)
    stub.add_response(
        "update_model_package",
        {"ModelPackageArn": arn(1)},
        {"ModelPackageArn": arn(1), "CustomerMetadataProperties": {"alias:previous": iso(1)}},
    )
    registry.set_alias("intent", "previous", "1", actor="alice", reason="promote v2")
    # 2) champion -> v2: v2 approved, then v1 loses champion (keeps previous: still Approved)
    v1 = _described(1, "Approved", {"champion": iso(-10), "previous": iso(1)})
    _expect_describe(stub, v2)
    _expect_listing(stub, v1, v2)
    stub.add_response(
        "update_model_package",
        {"ModelPackageArn": arn(2)},
        {
            "ModelPackageArn": arn(2),
            "CustomerMetadataProperties": {"alias:champion": iso(3)},
            "ModelApprovalStatus": "Approved",
            "ApprovalDescription": "champion set by alice: promote v2",
        },
    )
    stub.add_response(
        "update_model_package",
        {"ModelPackageArn": arn(1)},
        {"ModelPackageArn": arn(1), "CustomerMetadataPropertiesToRemove": ["alias:champion"]},
    )
    registry.set_alias("intent", "champion", "2", actor="alice", reason="promote v2")

    moves = [
        {
            "at": datetime.fromtimestamp(T0 + 2, UTC).isoformat(timespec="seconds"),
            "actor": "alice",
            "alias": "previous",
            "version": "1",
            "previous": None,
            "reason": "promote v2",
        },
        {
            "at": datetime.fromtimestamp(T0 + 4, UTC).isoformat(timespec="seconds"),
            "actor": "alice",
            "alias": "champion",
            "version": "2",
            "previous": "1",
            "reason": "promote v2",
        },
    ]
    assert registry.history("intent") == moves
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="registry/intent/alias-moves/")["Contents"]
    ]
    assert keys == [
        f"registry/intent/alias-moves/{int((T0 + 2) * 1e9):020d}-previous.json",
        f"registry/intent/alias-moves/{int((T0 + 4) * 1e9):020d}-champion.json",
    ]


def test_rollback_rejects_the_champion_that_lost_its_alias(
    env: tuple[SageMakerModelRegistry, Stubber, Any],
) -> None:
    registry, stub, _s3 = env
    v1 = _described(1, "Approved", {"previous": iso(-10)})
    v2 = _described(2, "Approved", {"champion": iso(-5)})
    _expect_group(stub)
    _expect_describe(stub, v1)
    _expect_listing(stub, v1, v2)
    stub.add_response(
        "update_model_package",
        {"ModelPackageArn": arn(1)},
        {"ModelPackageArn": arn(1), "CustomerMetadataProperties": {"alias:champion": iso(1)}},
    )
    stub.add_response(
        "update_model_package",
        {"ModelPackageArn": arn(2)},
        {
            "ModelPackageArn": arn(2),
            "CustomerMetadataPropertiesToRemove": ["alias:champion"],
            "ModelApprovalStatus": "Rejected",
            "ApprovalDescription": "champion removed by bob: error rate 4% on canary",
        },
    )
    registry.set_alias("intent", "champion", "1", actor="bob", reason="error rate 4% on canary")


def test_deleting_a_pending_candidate_rejects_it(env: tuple[SageMakerModelRegistry, Stubber, Any]) -> None:
    registry, stub, _s3 = env
    v3 = _described(3, "PendingManualApproval", {"candidate": iso(-1)})
    _expect_group(stub)
    _expect_listing(stub, v3)
    stub.add_response(
        "update_model_package",
        {"ModelPackageArn": arn(3)},
        {
            "ModelPackageArn": arn(3),
            "CustomerMetadataPropertiesToRemove": ["alias:candidate"],
            "ModelApprovalStatus": "Rejected",
            "ApprovalDescription": "candidate removed by gate: macro_f1 0.71 < 0.85",
        },
    )
    registry.delete_alias("intent", "candidate", actor="gate", reason="macro_f1 0.71 < 0.85")
    assert registry.history("intent")[-1]["version"] is None
    assert registry.history("intent")[-1]["previous"] == "3"


def test_alias_with_two_holders_takes_the_latest_set(
    env: tuple[SageMakerModelRegistry, Stubber, Any],
) -> None:
    registry, stub, _s3 = env
    _expect_group(stub)
    _expect_listing(
        stub,
        _described(1, "Approved", {"champion": iso(5)}),
        _described(2, "Approved", {"champion": iso(9)}),
        _described(3, "Approved", {"champion": iso(7)}),
    )
    found = registry.alias("intent", "champion")
    assert found is not None and found.version == "2"


def test_errors_are_mapped(env: tuple[SageMakerModelRegistry, Stubber, Any]) -> None:
    registry, stub, _s3 = env
    with pytest.raises(ConfigError, match="alias 'stable': expected one of candidate, champion, previous"):
        registry.set_alias("intent", "stable", "1", actor="a")
    _expect_group(stub)
    with pytest.raises(NotFoundError, match="has no version 'latest'"):
        registry.get("intent", "latest")
    stub.add_client_error(
        "describe_model_package",
        "ValidationException",
        f"ModelPackage {arn(7)} does not exist.",
        expected_params={"ModelPackageName": arn(7)},
    )
    with pytest.raises(NotFoundError, match="model intent has no version 7"):
        registry.set_alias("intent", "champion", "7", actor="a")
    stub.add_client_error(  # the other wording of a missing version (moto's, found by the contract suite)
        "describe_model_package",
        "ValidationException",
        f"Model package {arn(9)} not found",
        expected_params={"ModelPackageName": arn(9)},
    )
    with pytest.raises(NotFoundError, match="model intent has no version 9"):
        registry.get("intent", "9")
    stub.add_client_error(
        "describe_model_package",
        "ThrottlingException",
        "Rate exceeded",
        expected_params={"ModelPackageName": arn(2)},
    )
    with pytest.raises(SageMakerError, match="describe_model_package: ThrottlingException: Rate exceeded"):
        registry.get("intent", "2")
    stub.add_client_error(
        "describe_model_package_group",
        "ValidationException",
        "ModelPackageGroup ma-other does not exist.",
        expected_params={"ModelPackageGroupName": "ma-other"},
    )
    with pytest.raises(NotFoundError, match="no model 'other'"):
        registry.get("other", "1")


@pytest.mark.parametrize(
    ("aliases", "lost", "current", "expected"),
    [
        ({"champion"}, None, "PendingManualApproval", "Approved"),
        ({"previous"}, "champion", "Approved", "Approved"),
        ({"candidate"}, None, "Rejected", "PendingManualApproval"),
        ({"candidate", "champion"}, None, "Approved", "Approved"),
        (set(), "candidate", "PendingManualApproval", "Rejected"),
        (set(), "champion", "Approved", "Rejected"),
        (set(), "previous", "Approved", "Approved"),
    ],
)
def test_status_follows_the_aliases(aliases: set[str], lost: str | None, current: str, expected: str) -> None:
    assert status_after(aliases, lost, current) == expected
