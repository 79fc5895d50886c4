"""The dry-run recorder (``platform.aws.dryrun``): what reaches botocore, what is recorded, how
calls that were not made are answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError
from botocore.stub import Stubber

from mangaassist.core.errors import ConfigError
from mangaassist.platform import factory
from mangaassist.platform.aws.dryrun import (
    MAX_POLLS,
    DryRun,
    DryRunWait,
    OpenSearchDryRun,
    is_read,
    page_tokens,
    synthesize,
)
from mangaassist.platform.settings import PlatformSettings, load_settings

KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "eu-west-1"}


def _client(service: str) -> Any:
    return boto3.client(service, **KEYS)  # type: ignore[call-overload]


def test_a_change_never_reaches_botocore_and_reads_do() -> None:
    s3 = _client("s3")
    run = DryRun(reads_made=True)
    wrapped = run.wrap(s3)
    with Stubber(s3) as stub:  # only the read is queued: any other call reaching botocore raises
        stub.add_response("list_objects_v2", {"Contents": [], "KeyCount": 0}, {"Bucket": "b", "Prefix": "x/"})
        wrapped.put_object(Bucket="b", Key="x/a.txt", Body=b"hello")
        wrapped.delete_object(Bucket="b", Key="x/old.txt")
        listed = wrapped.list_objects_v2(Bucket="b", Prefix="x/")
        assert listed["Contents"] == [] and listed["KeyCount"] == 0  # the stubbed answer came back
        stub.assert_no_pending_responses()
    ops = [(c.operation, c.read, c.made) for c in run.calls]
    assert ops == [("PutObject", False, False), ("DeleteObject", False, False), ("ListObjectsV2", True, True)]
    assert [c.operation for c in run.changes] == ["PutObject", "DeleteObject"]
    assert run.as_list()[0]["params"]["Body"] == "<5 bytes>"


def test_a_parameter_aws_would_refuse_fails_the_call_and_records_nothing() -> None:
    run = DryRun()
    elb = run.wrap(_client("elbv2"))
    with pytest.raises(ParamValidationError, match=r"dry run, elbv2 CreateTargetGroup.*parameter Name"):
        elb.create_target_group(Name=3, Protocol="HTTP")
    assert run.calls == []


def test_an_answer_has_every_member_arns_and_hosts_that_resolve_nowhere() -> None:
    run = DryRun()
    elb = run.wrap(_client("elbv2"))
    made = elb.create_target_group(Name="tg", Protocol="HTTP", Port=80, VpcId="vpc-1", TargetType="ip")
    group = made["TargetGroups"][0]
    assert group["TargetGroupArn"].startswith("arn:aws:dry-run:")
    assert group["Protocol"] == "HTTP"  # an enum's first value that is valid for the member
    cloudfront = _client("cloudfront")
    shape = cloudfront.meta.service_model.operation_model("GetDistribution").output_shape
    answer = synthesize(shape, "GetDistribution")
    assert answer["Distribution"]["DomainName"].endswith(".invalid")


def test_without_credentials_reads_answer_an_empty_account_and_pages_end() -> None:
    run = DryRun(reads_made=False)
    s3 = run.wrap(_client("s3"))
    listed = s3.list_objects_v2(Bucket="b", Prefix="releases/")
    assert listed["Contents"] == [] and "NextContinuationToken" not in listed and "IsTruncated" not in listed
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket="b", Key="k")
    assert missing.value.response["Error"]["Code"] == "404"
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3.get_object(Bucket="b", Key="k")
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="b"))
    assert len(pages) == 1 and pages[0]["Contents"] == []
    dynamo = run.wrap(_client("dynamodb"))
    assert "Item" not in dynamo.get_item(TableName="t", Key={"pk": {"S": "a"}})
    scanned = dynamo.scan(TableName="t")
    assert scanned["Items"] == [] and "LastEvaluatedKey" not in scanned
    assert all(not c.made for c in run.calls) and all(c.read for c in run.calls)
    assert page_tokens("dynamodb", "Scan") == {"LastEvaluatedKey"}


def test_an_object_the_dry_run_put_is_read_back_from_memory() -> None:
    run = DryRun(reads_made=False)
    s3 = run.wrap(_client("s3"))
    s3.put_object(Bucket="b", Key="releases/r-1.json", Body=b'{"id": "r-1"}')
    s3.copy_object(Bucket="b", Key="index.html", CopySource={"Bucket": "b", "Key": "releases/r-1.json"})
    assert s3.get_object(Bucket="b", Key="releases/r-1.json")["Body"].read() == b'{"id": "r-1"}'
    assert s3.head_object(Bucket="b", Key="index.html")["ContentLength"] == len(b'{"id": "r-1"}')


def test_polling_for_a_change_that_was_not_made_ends_the_plan() -> None:
    run = DryRun(reads_made=False)
    cfn = run.wrap(_client("cloudformation"))
    for _ in range(MAX_POLLS + 2):  # before any change, reads are not limited
        cfn.describe_stacks(StackName="s")
    cfn.create_change_set(StackName="s", ChangeSetName="c", TemplateBody="{}", ChangeSetType="CREATE")
    for _ in range(MAX_POLLS):
        cfn.describe_change_set(StackName="s", ChangeSetName="c")
    with pytest.raises(DryRunWait, match="DescribeChangeSet was polled"):
        cfn.describe_change_set(StackName="s", ChangeSetName="c")


def test_reads_and_changes_are_told_apart_by_the_api_name() -> None:
    reads = ("DescribeServices", "GetObject", "ListAliases", "HeadObject", "Query", "Scan", "InvokeModel")
    for read in reads:
        assert is_read(read), read
    changes = ("PutObject", "CreateChangeSet", "UpdateService", "StartDeployment", "Invoke", "TagResource")
    for change in changes:
        assert not is_read(change), change


class _Transport:
    """Stands in for opensearch-py's transport: what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def perform_request(self, method: str, url: str, params: Any = None, body: Any = None) -> Any:
        self.sent.append((method, url))
        return {"hits": {"hits": [{"_id": "x"}]}}


class _OpenSearch:
    def __init__(self) -> None:
        self.transport = _Transport()


def test_opensearch_writes_are_recorded_and_searches_made_with_credentials() -> None:
    inner = _OpenSearch()
    run = DryRun(reads_made=True)
    client = OpenSearchDryRun(inner, run)
    client.transport.perform_request("PUT", "/kb-v1", body={"settings": {}})
    client.transport.perform_request("POST", "/_bulk", body=[{"index": {}}] * 100)
    found = client.transport.perform_request("POST", "/kb-v1/_search", body={"query": {}})
    assert inner.transport.sent == [("POST", "/kb-v1/_search")] and found["hits"]["hits"]
    assert [(c.operation, c.made) for c in run.calls] == [
        ("PUT /kb-v1", False),
        ("POST /_bulk", False),
        ("POST /kb-v1/_search", True),
    ]
    assert run.as_list()[1]["params"]["body"][-1] == "... 97 more"
    empty = OpenSearchDryRun(_OpenSearch(), DryRun(reads_made=False))
    assert empty.transport.perform_request("POST", "/kb-v1/_search")["hits"]["hits"] == []
    assert empty.transport.perform_request("GET", "/kb-versions/_doc/v1") == {"found": False}


def _settings(tmp_path: Path, environment: str) -> PlatformSettings:
    config = tmp_path / "mangaassist.toml"
    config.write_text(
        '[environments.dev]\nprovider = "local"\n\n'
        '[environments.staging]\nprovider = "aws"\n[environments.staging.aws]\n'
        'region = "eu-west-1"\nendpoint_url = "http://127.0.0.1:9"\n'
    )
    return load_settings(environment, config, tmp_path / "home")


def test_the_factory_wraps_every_client_only_while_a_dry_run_is_on(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "staging")
    with factory.dry_run(settings) as run:
        platform = factory.Platform(settings)
        assert platform.dry_run
        s3 = platform._client("s3")
        s3.put_object(Bucket="b", Key="k", Body=b"x")  # the endpoint is closed: it must not be called
        assert [c.operation for c in run.calls] == ["PutObject"]
        with pytest.raises(ConfigError, match="already in progress"), factory.dry_run(settings):
            pass
    assert not factory.Platform(settings).dry_run
    local = _settings(tmp_path, "dev")
    with pytest.raises(ConfigError, match="needs an aws environment"), factory.dry_run(local):
        pass
