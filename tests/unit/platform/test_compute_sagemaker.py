"""``SageMakerEndpointCompute`` against moto (SageMaker, S3, CloudWatch) and, where moto has no
support, botocore's ``Stubber``.

moto 5.2.5 has no ``UpdateEndpoint`` (it raises ``NotImplementedError``; see
``test_moto_still_lacks_update_endpoint``, which fails once moto gains it so the shim below can go).
The ``update_endpoint`` fixture adds it to moto's SageMaker backend with AWS's documented meaning:
the endpoint takes the new endpoint config's production variants at their initial weights. moto
also drops ``ShadowProductionVariants``, so ``set_shadow`` / ``clear_shadow`` are tested with
``Stubber`` on the exact requests.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.core.responses import ActionResult
from moto.sagemaker.models import SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

from mangaassist.core.artifact import Artifact
from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.aws.compute_sagemaker import (
    TARGET_VARIANT_HEADER,
    EndpointStateError,
    SageMakerEndpointCompute,
    SageMakerError,
)
from mangaassist.platform.compute import Pin, Revision, RevisionHealth, Shadow

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/mangaassist-endpoint"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mangaassist-intent:1"


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _moto_update_endpoint(self: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str) -> str:
    if endpoint_name not in self.endpoints:
        self.describe_endpoint(endpoint_name)  # raises moto's "Could not find endpoint"
    endpoint = self.endpoints[endpoint_name]
    config = self.describe_endpoint_config(endpoint_config_name)
    endpoint.endpoint_config_name = endpoint_config_name
    endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
    return str(endpoint.arn)


def _moto_update_endpoint_response(self: SageMakerResponse) -> ActionResult:
    arn = _moto_update_endpoint(
        self.sagemaker_backend,
        self._get_param("EndpointName"),
        self._get_param("EndpointConfigName"),
    )
    return ActionResult({"EndpointArn": arn})


@pytest.fixture
def update_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SageMakerModelBackend, "update_endpoint", _moto_update_endpoint, raising=False)
    monkeypatch.setattr(SageMakerResponse, "update_endpoint", _moto_update_endpoint_response, raising=False)


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        yield {
            "sagemaker": boto3.client("sagemaker", region_name=REGION),
            "s3": boto3.client("s3", region_name=REGION),
            "cloudwatch": boto3.client("cloudwatch", region_name=REGION),
        }


def _compute(aws: dict[str, Any], **kw: Any) -> SageMakerEndpointCompute:
    counter = itertools.count(1)
    return SageMakerEndpointCompute(
        aws["sagemaker"],
        execution_role_arn=ROLE,
        image=IMAGE,
        name_prefix="ma-test-",
        cloudwatch=aws["cloudwatch"],
        poll_s=0.0,
        config_suffix=lambda: f"c{next(counter)}",
        **kw,
    )


def _revision(tmp_path: Path, name: str, **env: str) -> Revision:
    path = tmp_path / f"{name}.tar.gz"
    path.write_bytes(f"model package of {name}".encode())
    env.setdefault("SAGEMAKER_MODEL_DATA_URL", f"s3://models/intent/{name}/model.tar.gz")
    return Revision(name=name, artifact=Artifact.of(path), app="mangaassist.chatbot.app:create_app", env=env)


def _weights(sm: Any, endpoint: str) -> dict[str, float]:
    described = sm.describe_endpoint(EndpointName=endpoint)
    return {v["VariantName"]: float(v.get("CurrentWeight", 0.0)) for v in described["ProductionVariants"]}


def test_moto_still_lacks_update_endpoint(aws: dict[str, Any]) -> None:
    with pytest.raises(NotImplementedError, match="update_endpoint"):
        aws["sagemaker"].update_endpoint(EndpointName="x", EndpointConfigName="y")


def test_first_deploy_creates_the_endpoint_at_100(aws: dict[str, Any], tmp_path: Path) -> None:
    compute = _compute(aws)
    r1 = _revision(tmp_path, "r1", INTENT_THRESHOLD="0.4")
    status = compute.deploy("intent", r1)
    assert (status.name, status.health, status.weight, status.replicas) == (
        "r1",
        RevisionHealth.HEALTHY,
        100.0,
        1,
    )
    assert status.digest == r1.artifact.digest
    sm = aws["sagemaker"]
    assert _weights(sm, "ma-test-intent") == {"r1": 100.0}
    model = sm.describe_model(ModelName=f"ma-test-intent-r1-{r1.artifact.digest[:8]}")
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert container["ModelDataUrl"] == "s3://models/intent/r1/model.tar.gz"
    assert container["Environment"] == {
        "INTENT_THRESHOLD": "0.4",
        "MANGAASSIST_REVISION": "r1",
        "MANGAASSIST_APP": "mangaassist.chatbot.app:create_app",
        "MANGAASSIST_ARTIFACT_DIGEST": r1.artifact.digest,
    }
    assert compute.services() == ["intent"]
    assert compute.url("intent") == (
        "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/ma-test-intent/invocations"
    )
    assert compute.pin("intent", "r1") == Pin(compute.url("intent"), {TARGET_VARIANT_HEADER: "r1"})
    # an endpoint always serves a variant: the only one is not retired even as the last (CD-01's
    # first release rolled back), and nothing changes
    with pytest.raises(ConfigError, match="an endpoint always serves one"):
        compute.retire("intent", "r1", last=True)
    assert _weights(sm, "ma-test-intent") == {"r1": 100.0}


def test_two_revisions_weights_move_and_retire(
    aws: dict[str, Any], tmp_path: Path, update_endpoint: None
) -> None:
    compute = _compute(aws)
    sm = aws["sagemaker"]
    compute.deploy("intent", _revision(tmp_path, "r1"))
    r2 = compute.deploy("intent", _revision(tmp_path, "r2"))
    assert (r2.name, r2.health, r2.weight) == ("r2", RevisionHealth.HEALTHY, 0.0)
    assert _weights(sm, "ma-test-intent") == {"r1": 100.0, "r2": 0.0}
    # the superseded endpoint config is deleted once the endpoint runs on the new one
    configs = [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    assert configs == ["ma-test-intent-c2"]

    for pct in (5.0, 25.0, 100.0):
        applied = compute.set_weights("intent", {"r1": 100.0 - pct, "r2": pct})
        expected = {"r1": 100.0 - pct, "r2": pct}
        assert _weights(sm, "ma-test-intent") == expected
        assert dict(applied) == {k: v for k, v in expected.items() if v > 0}
        status = compute.status("intent")
        assert {r.name: r.weight for r in status.revisions} == expected
        assert dict(status.weights) == {k: v for k, v in expected.items() if v > 0}

    with pytest.raises(EndpointStateError, match="r2 still has weight 100"):
        compute.retire("intent", "r2")
    retired = compute.retire("intent", "r1")
    assert retired.health is RevisionHealth.RETIRED
    assert _weights(sm, "ma-test-intent") == {"r2": 100.0}
    assert [r.name for r in compute.status("intent").revisions] == ["r2"]
    models = [m["ModelName"] for m in sm.list_models()["Models"]]
    assert len(models) == 1 and models[0].startswith("ma-test-intent-r2-")
    with pytest.raises(NotFoundError, match="service intent has no revision 'r1'"):
        compute.pin("intent", "r1")


def test_deploy_existing_revision_name_is_refused(
    aws: dict[str, Any], tmp_path: Path, update_endpoint: None
) -> None:
    compute = _compute(aws)
    compute.deploy("intent", _revision(tmp_path, "r1"))
    with pytest.raises(ConfigError, match="already has a revision 'r1'"):
        compute.deploy("intent", _revision(tmp_path, "r1"))


def test_errors_name_what_is_wrong(aws: dict[str, Any], tmp_path: Path, update_endpoint: None) -> None:
    compute = _compute(aws)
    with pytest.raises(NotFoundError, match="no SageMaker endpoint 'ma-test-chatbot'"):
        compute.status("chatbot")
    with pytest.raises(NotFoundError, match="no SageMaker endpoint"):
        compute.set_weights("chatbot", {"r1": 100.0})
    compute.deploy("intent", _revision(tmp_path, "r1"))
    compute.deploy("intent", _revision(tmp_path, "r2"))
    with pytest.raises(NotFoundError, match=r"no revision 'r9'.*variants: r1, r2"):
        compute.set_weights("intent", {"r1": 90.0, "r9": 10.0})
    with pytest.raises(ConfigError, match=r"add up to 100.*got 95 from r1=90, r2=5"):
        compute.set_weights("intent", {"r1": 90.0, "r2": 5.0})
    with pytest.raises(ConfigError, match="weight of r2 is negative"):
        compute.set_weights("intent", {"r1": 110.0, "r2": -10.0})
    with pytest.raises(NotFoundError, match="no revision 'r9'"):
        compute.retire("intent", "r9")
    with pytest.raises(ConfigError, match="revision name 'r_3' is not a valid SageMaker name"):
        compute.deploy("intent", _revision(tmp_path, "r_3"))
    # nothing changed on the endpoint after the refused calls
    assert _weights(aws["sagemaker"], "ma-test-intent") == {"r1": 100.0, "r2": 0.0}


def test_missing_image_or_model_data_is_a_config_error(aws: dict[str, Any], tmp_path: Path) -> None:
    no_image = SageMakerEndpointCompute(aws["sagemaker"], execution_role_arn=ROLE, poll_s=0.0)
    with pytest.raises(ConfigError, match=r"no container image.*SAGEMAKER_IMAGE"):
        no_image.deploy("intent", _revision(tmp_path, "r1"))
    rev = _revision(tmp_path, "r1")
    bare = Revision(rev.name, rev.artifact, rev.app, env={})
    with pytest.raises(ConfigError, match=r"SAGEMAKER_MODEL_DATA_URL.*artifact_bucket"):
        _compute(aws).deploy("intent", bare)


def test_artifact_is_uploaded_to_s3_content_addressed(aws: dict[str, Any], tmp_path: Path) -> None:
    aws["s3"].create_bucket(Bucket="ma-artifacts")
    compute = _compute(aws, s3=aws["s3"], artifact_bucket="ma-artifacts")
    rev = _revision(tmp_path, "r1")
    bare = Revision(rev.name, rev.artifact, rev.app, env={})
    compute.deploy("intent", bare)
    key = f"endpoint-artifacts/intent/{rev.artifact.digest}.tar.gz"
    body = aws["s3"].get_object(Bucket="ma-artifacts", Key=key)["Body"].read()
    assert body == rev.artifact.path.read_bytes()
    model = aws["sagemaker"].describe_model(ModelName=f"ma-test-intent-r1-{rev.artifact.digest[:8]}")
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://ma-artifacts/{key}"


def test_stats_reads_cloudwatch_per_variant(
    aws: dict[str, Any], tmp_path: Path, update_endpoint: None
) -> None:
    compute = _compute(aws)
    compute.deploy("intent", _revision(tmp_path, "r1"))
    compute.deploy("intent", _revision(tmp_path, "r2"))
    now = datetime.now(UTC)
    cw = aws["cloudwatch"]
    for variant, invocations, errors, latency in (("r1", 90.0, 1.0, 2000.0), ("r2", 10.0, 3.0, 5000.0)):
        dims = [
            {"Name": "EndpointName", "Value": "ma-test-intent"},
            {"Name": "VariantName", "Value": variant},
        ]
        cw.put_metric_data(
            Namespace="AWS/SageMaker",
            MetricData=[
                {"MetricName": "Invocations", "Dimensions": dims, "Value": invocations, "Timestamp": now},
                {"MetricName": "Invocation5XXErrors", "Dimensions": dims, "Value": errors, "Timestamp": now},
                {"MetricName": "ModelLatency", "Dimensions": dims, "Value": latency, "Timestamp": now},
            ],
        )
    data = compute.stats("intent", 0)
    assert data["observations"] == []
    assert data["revisions"]["r1"]["requests"] == 90.0
    assert data["revisions"]["r1"]["failed"] == 1.0
    assert data["revisions"]["r2"]["requests"] == 10.0
    assert data["revisions"]["r2"]["errors_5xx"] == 3.0
    assert data["revisions"]["r2"]["model_latency_us_avg"] == 5000.0
    # a cursor in the future (how pipelines ask for "the cursor now") returns no figures
    later = compute.stats("intent", 1 << 62)
    assert later["revisions"]["r1"]["requests"] == 0.0
    assert later["cursor"] >= data["cursor"]


def test_stats_without_cloudwatch_says_what_is_missing(aws: dict[str, Any], tmp_path: Path) -> None:
    compute = SageMakerEndpointCompute(aws["sagemaker"], execution_role_arn=ROLE, image=IMAGE, poll_s=0.0)
    with pytest.raises(ConfigError, match="give SageMakerEndpointCompute a cloudwatch client"):
        compute.stats("intent")


# ---------------------------------------------------------------- shadow (Stubber: moto drops it)

ENDPOINT = "ma-test-intent"
ENDPOINT_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{ENDPOINT}"


def _variant(name: str, weight: float) -> dict[str, Any]:
    return {
        "VariantName": name,
        "ModelName": f"{ENDPOINT}-{name}-abcdef12",
        "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large",
        "InitialVariantWeight": weight,
    }


def _described(config: str, variants: dict[str, float], shadow: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "EndpointName": ENDPOINT,
        "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{ENDPOINT}",
        "EndpointConfigName": config,
        "EndpointStatus": "InService",
        "CreationTime": datetime(2025, 1, 1, tzinfo=UTC),
        "LastModifiedTime": datetime(2025, 1, 1, tzinfo=UTC),
        "ProductionVariants": [
            {"VariantName": n, "CurrentWeight": w, "DesiredWeight": w, "CurrentInstanceCount": 1}
            for n, w in variants.items()
        ],
    }
    if shadow:
        out["ShadowProductionVariants"] = [
            {"VariantName": shadow, "CurrentWeight": 20.0, "DesiredWeight": 20.0, "CurrentInstanceCount": 1}
        ]
    return out


def _config(
    name: str, variants: list[dict[str, Any]], shadows: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "EndpointConfigName": name,
        "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/{name}",
        "ProductionVariants": variants,
        "CreationTime": datetime(2025, 1, 1, tzinfo=UTC),
    }
    if shadows:
        out["ShadowProductionVariants"] = shadows
    return out


@pytest.fixture
def stubbed() -> Iterator[tuple[SageMakerEndpointCompute, Stubber]]:
    sm = boto3.client("sagemaker", region_name=REGION)
    counter = itertools.count(1)
    compute = SageMakerEndpointCompute(
        sm,
        execution_role_arn=ROLE,
        image=IMAGE,
        name_prefix="ma-test-",
        poll_s=0.0,
        config_suffix=lambda: f"s{next(counter)}",
    )
    with Stubber(sm) as stub:
        yield compute, stub
        stub.assert_no_pending_responses()


def test_set_shadow_moves_the_revision_into_shadow_production_variants(
    stubbed: tuple[SageMakerEndpointCompute, Stubber],
) -> None:
    compute, stub = stubbed
    stub.add_response(
        "describe_endpoint", _described("old", {"r1": 100.0, "r2": 0.0}), {"EndpointName": ENDPOINT}
    )
    stub.add_response(
        "describe_endpoint_config",
        _config("old", [_variant("r1", 100.0), _variant("r2", 0.0)]),
        {"EndpointConfigName": "old"},
    )
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/x"},
        {
            "EndpointConfigName": f"{ENDPOINT}-s1",
            "ProductionVariants": [_variant("r1", 100.0)],
            "ShadowProductionVariants": [_variant("r2", 20.0)],
        },
    )
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": ENDPOINT_ARN},
        {"EndpointName": ENDPOINT, "EndpointConfigName": f"{ENDPOINT}-s1"},
    )
    stub.add_response(
        "describe_endpoint",
        _described(f"{ENDPOINT}-s1", {"r1": 100.0}, shadow="r2"),
        {"EndpointName": ENDPOINT},
    )
    stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "old"})
    assert compute.set_shadow("intent", "r2", 0.2) == Shadow("r2", 0.2)


def test_status_reports_the_shadow_and_its_share(stubbed: tuple[SageMakerEndpointCompute, Stubber]) -> None:
    compute, stub = stubbed
    stub.add_response(
        "describe_endpoint", _described("cfg", {"r1": 100.0}, shadow="r2"), {"EndpointName": ENDPOINT}
    )
    stub.add_response(
        "describe_endpoint_config",
        _config("cfg", [_variant("r1", 100.0)], [_variant("r2", 20.0)]),
        {"EndpointConfigName": "cfg"},
    )
    for name in ("r1", "r2"):
        stub.add_response(
            "describe_model",
            {
                "ModelName": f"{ENDPOINT}-{name}-abcdef12",
                "ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m",
                "CreationTime": datetime(2025, 1, 1, tzinfo=UTC),
                "PrimaryContainer": {
                    "Image": IMAGE,
                    "Environment": {"MANGAASSIST_ARTIFACT_DIGEST": f"d-{name}"},
                },
            },
            {"ModelName": f"{ENDPOINT}-{name}-abcdef12"},
        )
    status = compute.status("intent")
    assert status.shadow == Shadow("r2", 0.2)
    assert dict(status.weights) == {"r1": 100.0}
    assert [(r.name, r.digest, r.weight) for r in status.revisions] == [
        ("r1", "d-r1", 100.0),
        ("r2", "d-r2", 0.0),
    ]


def test_clear_shadow_returns_the_revision_as_a_variant_at_zero(
    stubbed: tuple[SageMakerEndpointCompute, Stubber],
) -> None:
    compute, stub = stubbed
    stub.add_response(
        "describe_endpoint", _described("cfg", {"r1": 100.0}, shadow="r2"), {"EndpointName": ENDPOINT}
    )
    stub.add_response(
        "describe_endpoint_config",
        _config("cfg", [_variant("r1", 100.0)], [_variant("r2", 20.0)]),
        {"EndpointConfigName": "cfg"},
    )
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/x"},
        {
            "EndpointConfigName": f"{ENDPOINT}-s1",
            "ProductionVariants": [_variant("r1", 100.0), _variant("r2", 0.0)],
        },
    )
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": ENDPOINT_ARN},
        {"EndpointName": ENDPOINT, "EndpointConfigName": f"{ENDPOINT}-s1"},
    )
    stub.add_response(
        "describe_endpoint",
        _described(f"{ENDPOINT}-s1", {"r1": 100.0, "r2": 0.0}),
        {"EndpointName": ENDPOINT},
    )
    stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "cfg"})
    compute.clear_shadow("intent")


def test_shadow_needs_one_serving_variant(stubbed: tuple[SageMakerEndpointCompute, Stubber]) -> None:
    compute, stub = stubbed
    stub.add_response(
        "describe_endpoint", _described("cfg", {"r1": 95.0, "r2": 5.0, "r3": 0.0}), {"EndpointName": ENDPOINT}
    )
    stub.add_response(
        "describe_endpoint_config",
        _config("cfg", [_variant("r1", 95.0), _variant("r2", 5.0), _variant("r3", 0.0)]),
        {"EndpointConfigName": "cfg"},
    )
    with pytest.raises(EndpointStateError, match=r"exactly one serving variant.*r1=95, r2=5"):
        compute.set_shadow("intent", "r3", 0.1)
    with pytest.raises(ConfigError, match=r"shadow share 1.5"):
        compute.set_shadow("intent", "r3", 1.5)


def test_update_in_progress_is_waited_for(stubbed: tuple[SageMakerEndpointCompute, Stubber]) -> None:
    compute, stub = stubbed
    updating = _described("cfg", {"r1": 100.0, "r2": 0.0})
    updating["EndpointStatus"] = "Updating"
    stub.add_response(
        "describe_endpoint", _described("cfg", {"r1": 100.0, "r2": 0.0}), {"EndpointName": ENDPOINT}
    )
    stub.add_response(
        "update_endpoint_weights_and_capacities",
        {"EndpointArn": ENDPOINT_ARN},
        {
            "EndpointName": ENDPOINT,
            "DesiredWeightsAndCapacities": [
                {"VariantName": "r1", "DesiredWeight": 95.0},
                {"VariantName": "r2", "DesiredWeight": 5.0},
            ],
        },
    )
    stub.add_response("describe_endpoint", updating, {"EndpointName": ENDPOINT})
    stub.add_response(
        "describe_endpoint", _described("cfg", {"r1": 95.0, "r2": 5.0}), {"EndpointName": ENDPOINT}
    )
    assert dict(compute.set_weights("intent", {"r1": 95.0, "r2": 5.0})) == {"r1": 95.0, "r2": 5.0}


def test_other_client_errors_name_the_operation(stubbed: tuple[SageMakerEndpointCompute, Stubber]) -> None:
    compute, stub = stubbed
    stub.add_client_error(
        "describe_endpoint",
        "ThrottlingException",
        "Rate exceeded",
        expected_params={"EndpointName": ENDPOINT},
    )
    with pytest.raises(SageMakerError, match=r"DescribeEndpoint ma-test-intent.*Rate exceeded"):
        compute.status("intent")


def test_deploy_while_shadowing_is_refused(
    stubbed: tuple[SageMakerEndpointCompute, Stubber], tmp_path: Path
) -> None:
    compute, stub = stubbed
    stub.add_response(
        "describe_endpoint", _described("cfg", {"r1": 100.0}, shadow="r2"), {"EndpointName": ENDPOINT}
    )
    stub.add_response(
        "describe_endpoint_config",
        _config("cfg", [_variant("r1", 100.0)], [_variant("r2", 20.0)]),
        {"EndpointConfigName": "cfg"},
    )
    with pytest.raises(EndpointStateError, match=r"shadows r2.*clear the shadow"):
        compute.deploy("intent", _revision(tmp_path, "r3"))


def test_deploy_that_times_out_reports_starting(
    stubbed: tuple[SageMakerEndpointCompute, Stubber], tmp_path: Path
) -> None:
    compute, stub = stubbed
    r2 = _revision(tmp_path, "r2")
    model = f"{ENDPOINT}-r2-{r2.artifact.digest[:8]}"
    stub.add_response("describe_endpoint", _described("cfg", {"r1": 100.0}), {"EndpointName": ENDPOINT})
    stub.add_response(
        "describe_endpoint_config", _config("cfg", [_variant("r1", 100.0)]), {"EndpointConfigName": "cfg"}
    )
    stub.add_response(
        "create_model",
        {"ModelArn": f"arn:aws:sagemaker:us-east-1:123456789012:model/{model}"},
        {
            "ModelName": model,
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {
                "Image": IMAGE,
                "ModelDataUrl": "s3://models/intent/r2/model.tar.gz",
                "Environment": {
                    "MANGAASSIST_REVISION": "r2",
                    "MANGAASSIST_APP": "mangaassist.chatbot.app:create_app",
                    "MANGAASSIST_ARTIFACT_DIGEST": r2.artifact.digest,
                },
            },
        },
    )
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/x"},
        {
            "EndpointConfigName": f"{ENDPOINT}-s1",
            "ProductionVariants": [_variant("r1", 100.0), {**_variant("r2", 0.0), "ModelName": model}],
        },
    )
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": ENDPOINT_ARN},
        {"EndpointName": ENDPOINT, "EndpointConfigName": f"{ENDPOINT}-s1"},
    )
    updating = _described("cfg", {"r1": 100.0})
    updating["EndpointStatus"] = "Updating"
    stub.add_response("describe_endpoint", updating, {"EndpointName": ENDPOINT})
    status = compute.deploy("intent", r2, timeout_s=0.0)
    assert (status.name, status.health, status.reason) == (
        "r2",
        RevisionHealth.STARTING,
        "endpoint still Updating",
    )
