"""``ChangeSetApplier`` against botocore's ``Stubber`` on a real boto3 ``cloudformation`` client: every
request is asserted parameter by parameter, responses are shaped as the service model says (the
Stubber validates them), nothing sleeps for real and no request leaves the process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.platform.aws.cloudformation import (
    STATEFUL_TYPES,
    ChangeSet,
    ChangeSetApplier,
    ChangeSetFailedError,
    ChangeSetType,
    CloudFormationError,
    ResourceChange,
    StackFailedError,
    StackTimeoutError,
    change_set_name,
)

STACK = "mangaassist-dev-data"
STACK_ID = f"arn:aws:cloudformation:us-east-1:123456789012:stack/{STACK}/0a1b2c3d-1111-2222-3333-444455556666"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
TEMPLATE = json.dumps(
    {
        "Resources": {
            "Orders": {"Type": "AWS::DynamoDB::Table", "Properties": {"TableName": "mangaassist-dev-orders"}},
            "Api": {"Type": "AWS::Lambda::Function", "Properties": {"Runtime": "python3.12"}},
        }
    }
)
TAGS = {"project": "mangaassist", "env": "dev", "owner": "platform"}
PARAMS = {"Env": "dev", "Retention": "30"}
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
NAME = change_set_name(TEMPLATE, PARAMS, TAGS)
CS_ID = f"arn:aws:cloudformation:us-east-1:123456789012:changeSet/{NAME}/9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"
EMPTY_REASON = (
    "The submitted information didn't contain changes. Submit different information to create a change set."
)


@dataclass
class Fake:
    """A clock that never moves and a sleep that only records: waits end by the sleeps asked for."""

    slept: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@dataclass
class Aws:
    applier: ChangeSetApplier
    stub: Stubber
    fake: Fake


def _client() -> Any:
    factory: Any = boto3.client
    return factory(
        "cloudformation", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


@pytest.fixture
def aws() -> Iterator[Aws]:
    client = _client()
    fake = Fake()
    stub = Stubber(client)
    applier = ChangeSetApplier(client, sleep=fake.sleep, clock=fake.clock, poll_s=5.0, timeout_s=60.0)
    with stub:
        yield Aws(applier, stub, fake)
        stub.assert_no_pending_responses()


# -- response builders ----------------------------------------------------------------------------


def stack(status: str, reason: str | None = None, outputs: dict[str, str] | None = None) -> dict[str, Any]:
    got: dict[str, Any] = {"StackId": STACK_ID, "StackName": STACK, "CreationTime": T0, "StackStatus": status}
    if reason:
        got["StackStatusReason"] = reason
    if outputs:
        got["Outputs"] = [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]
    return {"Stacks": [got]}


def expect_stack(aws: Aws, status: str, **kwargs: Any) -> None:
    aws.stub.add_response("describe_stacks", stack(status, **kwargs), {"StackName": STACK})


def expect_no_stack(aws: Aws) -> None:
    aws.stub.add_client_error(
        "describe_stacks",
        service_error_code="ValidationError",
        service_message=f"Stack with id {STACK} does not exist",
        http_status_code=400,
        expected_params={"StackName": STACK},
    )


def expect_no_change_set(aws: Aws, name: str = NAME) -> None:
    aws.stub.add_client_error(
        "describe_change_set",
        service_error_code="ChangeSetNotFound",
        service_message=f"ChangeSet [{name}] does not exist",
        http_status_code=404,
        expected_params={"ChangeSetName": name, "StackName": STACK},
    )


def expect_create(
    aws: Aws, kind: str, *, name: str = NAME, params: dict[str, str] | None = None, template: str = TEMPLATE
) -> None:
    aws.stub.add_response(
        "create_change_set",
        {"Id": CS_ID, "StackId": STACK_ID},
        {
            "StackName": STACK,
            "ChangeSetName": name,
            "ChangeSetType": kind,
            "TemplateBody": template,
            "Parameters": [
                {"ParameterKey": k, "ParameterValue": v} for k, v in sorted((params or {}).items())
            ],
            "Capabilities": CAPABILITIES,
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(TAGS.items())],
        },
    )


def change(
    action: str,
    logical_id: str,
    resource_type: str,
    replacement: str | None = None,
    scope: list[str] | None = None,
    physical_id: str | None = None,
) -> dict[str, Any]:
    rc: dict[str, Any] = {"Action": action, "LogicalResourceId": logical_id, "ResourceType": resource_type}
    if replacement is not None:
        rc["Replacement"] = replacement
    if scope is not None:
        rc["Scope"] = scope
    if physical_id is not None:
        rc["PhysicalResourceId"] = physical_id
    return {"Type": "Resource", "ResourceChange": rc}


def change_set_page(
    status: str,
    changes: list[dict[str, Any]] | None = None,
    *,
    name: str = NAME,
    reason: str | None = None,
    execution: str = "AVAILABLE",
    next_token: str | None = None,
) -> dict[str, Any]:
    page: dict[str, Any] = {
        "ChangeSetName": name,
        "ChangeSetId": CS_ID,
        "StackId": STACK_ID,
        "StackName": STACK,
        "Status": status,
        "ExecutionStatus": execution,
        "Changes": changes or [],
    }
    if reason:
        page["StatusReason"] = reason
    if next_token:
        page["NextToken"] = next_token
    return page


def expect_describe(aws: Aws, page: dict[str, Any], token: str | None = None) -> None:
    params = {"ChangeSetName": page["ChangeSetName"], "StackName": STACK}
    if token:
        params["NextToken"] = token
    aws.stub.add_response("describe_change_set", page, params)


def event(
    n: int, logical_id: str, resource_type: str, status: str, reason: str | None = None
) -> dict[str, Any]:
    got: dict[str, Any] = {
        "StackId": STACK_ID,
        "EventId": f"event-{n}",
        "StackName": STACK,
        "LogicalResourceId": logical_id,
        "ResourceType": resource_type,
        "Timestamp": T0,
        "ResourceStatus": status,
    }
    if reason:
        got["ResourceStatusReason"] = reason
    return got


def ready_change_set(kind: ChangeSetType = "UPDATE") -> ChangeSet:
    return ChangeSet(STACK, NAME, CS_ID, kind, empty=False)


# -- create ---------------------------------------------------------------------------------------


def test_create_on_a_new_stack_polls_until_complete_and_parses_the_changes(aws: Aws) -> None:
    expect_no_stack(aws)  # no stack: no change set to look for either
    expect_create(aws, "CREATE", params=PARAMS)
    expect_describe(aws, change_set_page("CREATE_PENDING", execution="UNAVAILABLE"))
    expect_describe(
        aws,
        change_set_page(
            "CREATE_COMPLETE",
            [
                change("Add", "Orders", "AWS::DynamoDB::Table"),
                change(
                    "Modify",
                    "Api",
                    "AWS::Lambda::Function",
                    replacement="Conditional",
                    scope=["Properties"],
                    physical_id="mangaassist-dev-api",
                ),
            ],
        ),
    )
    heard: list[str] = []

    got = aws.applier.create(STACK, TEMPLATE, tags=TAGS, parameters=PARAMS, progress=heard.append)

    assert got.type == "CREATE"
    assert got.name == NAME
    assert got.id == CS_ID
    assert got.stack_name == STACK
    assert not got.empty
    assert got.changes == [
        ResourceChange("Add", "Orders", "AWS::DynamoDB::Table"),
        ResourceChange(
            "Modify", "Api", "AWS::Lambda::Function", "Conditional", ["Properties"], "mangaassist-dev-api"
        ),
    ]
    assert aws.fake.slept == [5.0]
    assert heard == [
        f"change set {NAME} of stack {STACK}: {s}" for s in ("CREATE_PENDING", "CREATE_COMPLETE")
    ]


def test_a_stack_in_review_is_created_not_updated(aws: Aws) -> None:
    name = change_set_name(TEMPLATE, None, TAGS)
    expect_stack(aws, "REVIEW_IN_PROGRESS")
    expect_no_change_set(aws, name)
    expect_create(aws, "CREATE", name=name)
    expect_describe(
        aws, change_set_page("CREATE_COMPLETE", [change("Add", "Orders", "AWS::DynamoDB::Table")], name=name)
    )

    got = aws.applier.create(STACK, TEMPLATE, tags=TAGS)

    assert got.type == "CREATE"
    assert got.name == name
    assert aws.fake.slept == []


def test_an_update_replacing_a_table_is_destructive_a_lambda_modify_is_not(aws: Aws) -> None:
    expect_stack(aws, "UPDATE_COMPLETE")
    expect_no_change_set(aws)
    expect_create(aws, "UPDATE", params=PARAMS)
    expect_describe(
        aws,
        change_set_page(
            "CREATE_COMPLETE",
            [
                change("Modify", "Orders", "AWS::DynamoDB::Table", replacement="True", scope=["Properties"]),
                change("Modify", "Api", "AWS::Lambda::Function", replacement="False", scope=["Properties"]),
            ],
            next_token="page-2",
        ),
    )
    expect_describe(
        aws,
        change_set_page(
            "CREATE_COMPLETE",
            [
                change("Modify", "Sessions", "AWS::DynamoDB::Table", replacement="False", scope=["Tags"]),
                change("Remove", "Logs", "AWS::Logs::LogGroup"),
                change("Modify", "Search", "AWS::OpenSearchService::Domain", replacement="Conditional"),
                change("Remove", "OldFunction", "AWS::Lambda::Function"),
            ],
        ),
        token="page-2",
    )

    got = aws.applier.create(STACK, TEMPLATE, tags=TAGS, parameters=PARAMS)

    assert got.type == "UPDATE"
    assert [c.logical_id for c in got.changes] == [
        "Orders",
        "Api",
        "Sessions",
        "Logs",
        "Search",
        "OldFunction",
    ]
    assert [c.logical_id for c in got.destructive(STATEFUL_TYPES)] == ["Orders", "Logs", "Search"]
    assert [c.logical_id for c in got.destructive(frozenset({"AWS::DynamoDB::Table"}))] == ["Orders"]
    api = next(c for c in got.changes if c.logical_id == "Api")
    assert api not in got.destructive(STATEFUL_TYPES | {"AWS::Lambda::Function"})
    assert got.changes[0].describe() == "Modify Orders (AWS::DynamoDB::Table) replacement=True"


@pytest.mark.parametrize("reason", [EMPTY_REASON, "No updates are to be performed."])
def test_an_empty_change_set_is_deleted_and_not_executed(aws: Aws, reason: str) -> None:
    expect_stack(aws, "UPDATE_COMPLETE")
    expect_no_change_set(aws)
    expect_create(aws, "UPDATE", params=PARAMS)
    expect_describe(aws, change_set_page("FAILED", reason=reason, execution="UNAVAILABLE"))
    aws.stub.add_response("delete_change_set", {}, {"ChangeSetName": NAME, "StackName": STACK})

    got = aws.applier.create(STACK, TEMPLATE, tags=TAGS, parameters=PARAMS)

    assert got.empty
    assert got.changes == []
    assert got.destructive() == []

    expect_stack(aws, "UPDATE_COMPLETE", outputs={"TableName": "mangaassist-dev-orders"})
    result = aws.applier.execute(got)  # no execute_change_set queued: calling it would fail here
    assert not result.executed
    assert result.status == "UPDATE_COMPLETE"
    assert result.outputs == {"TableName": "mangaassist-dev-orders"}


def test_a_failed_change_set_raises_with_its_reason(aws: Aws) -> None:
    expect_stack(aws, "UPDATE_COMPLETE")
    expect_no_change_set(aws)
    expect_create(aws, "UPDATE", params=PARAMS)
    reason = "Template format error: Unresolved resource dependencies [Missing] in the Resources block"
    expect_describe(aws, change_set_page("FAILED", reason=reason, execution="UNAVAILABLE"))

    with pytest.raises(ChangeSetFailedError, match=r"Unresolved resource dependencies \[Missing\]") as info:
        aws.applier.create(STACK, TEMPLATE, tags=TAGS, parameters=PARAMS)
    assert isinstance(info.value, MangaAssistError)
    assert "30" not in str(info.value).replace(NAME, "")  # no parameter values in messages


def test_the_same_template_gives_the_same_name_and_reuses_the_change_set(aws: Aws) -> None:
    assert change_set_name(TEMPLATE, PARAMS, TAGS) == NAME
    assert change_set_name(TEMPLATE, dict(reversed(PARAMS.items())), TAGS) == NAME
    assert change_set_name(TEMPLATE, {**PARAMS, "Retention": "90"}, TAGS) != NAME
    assert change_set_name(TEMPLATE + " ", PARAMS, TAGS) != NAME
    assert change_set_name(TEMPLATE, PARAMS, {**TAGS, "owner": "search"}) != NAME
    assert NAME.startswith("mangaassist-")
    assert len(NAME) == len("mangaassist-") + 12

    changes = [change("Modify", "Api", "AWS::Lambda::Function", replacement="False")]
    # first run: made
    expect_stack(aws, "UPDATE_COMPLETE")
    expect_no_change_set(aws)
    expect_create(aws, "UPDATE", params=PARAMS)
    expect_describe(aws, change_set_page("CREATE_COMPLETE", changes))
    first = aws.applier.create(STACK, TEMPLATE, tags=TAGS, parameters=PARAMS)
    # retried step: found, described once, no second create_change_set
    expect_stack(aws, "UPDATE_COMPLETE")
    expect_describe(aws, change_set_page("CREATE_COMPLETE", changes))
    second = aws.applier.create(STACK, TEMPLATE, tags=TAGS, parameters=PARAMS)

    assert second == first


def test_a_reused_change_set_still_being_made_is_waited_for(aws: Aws) -> None:
    expect_stack(aws, "UPDATE_COMPLETE")
    expect_describe(aws, change_set_page("CREATE_IN_PROGRESS", execution="UNAVAILABLE"))
    expect_describe(aws, change_set_page("CREATE_COMPLETE", [change("Add", "Queue", "AWS::SQS::Queue")]))

    got = aws.applier.create(STACK, TEMPLATE, tags=TAGS, parameters=PARAMS)

    assert [c.logical_id for c in got.changes] == ["Queue"]
    assert aws.fake.slept == [5.0]


@pytest.mark.parametrize(
    ("status", "execution", "reason"),
    [
        ("CREATE_COMPLETE", "OBSOLETE", None),
        ("CREATE_COMPLETE", "EXECUTE_FAILED", None),
        ("FAILED", "UNAVAILABLE", "Parameter validation failed"),
    ],
)
def test_a_stale_change_set_is_deleted_and_made_again(
    aws: Aws, status: str, execution: str, reason: str | None
) -> None:
    expect_stack(aws, "UPDATE_COMPLETE")
    expect_describe(aws, change_set_page(status, execution=execution, reason=reason))
    aws.stub.add_response("delete_change_set", {}, {"ChangeSetName": NAME, "StackName": STACK})
    expect_create(aws, "UPDATE", params=PARAMS)
    expect_describe(aws, change_set_page("CREATE_COMPLETE", [change("Add", "Queue", "AWS::SQS::Queue")]))

    got = aws.applier.create(STACK, TEMPLATE, tags=TAGS, parameters=PARAMS)

    assert got.execution_status == "AVAILABLE"
    assert len(got.changes) == 1


def test_a_stack_that_must_be_deleted_first_is_an_error_before_any_change_set(aws: Aws) -> None:
    expect_stack(aws, "ROLLBACK_COMPLETE")

    with pytest.raises(CloudFormationError, match=rf"stack {STACK} is ROLLBACK_COMPLETE: .*delete the stack"):
        aws.applier.create(STACK, TEMPLATE, tags=TAGS)


def test_other_api_errors_name_the_operation_and_code(aws: Aws) -> None:
    aws.stub.add_client_error(
        "describe_stacks",
        service_error_code="AccessDenied",
        service_message="User is not authorized to perform cloudformation:DescribeStacks",
        http_status_code=403,
        expected_params={"StackName": STACK},
    )

    with pytest.raises(CloudFormationError, match="describe_stacks failed: AccessDenied") as info:
        aws.applier.create(STACK, TEMPLATE, tags=TAGS)
    assert info.value.code == "AccessDenied"


@pytest.mark.parametrize("name", ["", "1stack", "my_stack", "stack.name", "a" * 129, "stäck"])
def test_a_bad_stack_name_fails_before_any_call(aws: Aws, name: str) -> None:
    # nothing is queued: any request would raise the Stubber's UnStubbedResponseError instead
    with pytest.raises(ConfigError, match="not valid for CloudFormation"):
        aws.applier.create(name, TEMPLATE, tags=TAGS)
    with pytest.raises(ConfigError, match="not valid for CloudFormation"):
        aws.applier.detect_drift(name)


@pytest.mark.parametrize("template", ["", "   \n"])
def test_an_empty_template_fails_before_any_call(aws: Aws, template: str) -> None:
    with pytest.raises(ConfigError, match="template is empty"):
        aws.applier.create(STACK, template, tags=TAGS)


def test_a_template_too_big_without_a_template_bucket_fails_before_any_call(aws: Aws) -> None:
    with pytest.raises(ConfigError, match="over the 51200"):
        aws.applier.create(STACK, "{" + " " * 51_200 + "}", tags=TAGS)


def test_a_longest_valid_stack_name_is_accepted(aws: Aws) -> None:
    name = "a" + "-b" * 63 + "c"
    assert len(name) == 128
    aws.stub.add_response("detect_stack_drift", {"StackDriftDetectionId": "d-1"}, {"StackName": name})
    aws.stub.add_response(
        "describe_stack_drift_detection_status",
        {
            "StackId": STACK_ID,
            "StackDriftDetectionId": "d-1",
            "StackDriftStatus": "IN_SYNC",
            "DetectionStatus": "DETECTION_COMPLETE",
            "Timestamp": T0,
        },
        {"StackDriftDetectionId": "d-1"},
    )
    assert aws.applier.detect_drift(name).status == "IN_SYNC"


# -- execute --------------------------------------------------------------------------------------


def test_execute_waits_for_update_complete_and_reports_progress(aws: Aws) -> None:
    aws.stub.add_response("execute_change_set", {}, {"ChangeSetName": NAME, "StackName": STACK})
    for status in ("UPDATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"):
        expect_stack(aws, status)
    expect_stack(aws, "UPDATE_COMPLETE", outputs={"ApiUrl": "https://api.example.test"})
    heard: list[str] = []

    got = aws.applier.execute(ready_change_set(), progress=heard.append)

    assert got.executed
    assert got.status == "UPDATE_COMPLETE"
    assert got.stack_name == STACK
    assert got.stack_id == STACK_ID
    assert got.outputs == {"ApiUrl": "https://api.example.test"}
    assert heard == [
        f"stack {STACK}: UPDATE_IN_PROGRESS",
        f"stack {STACK}: UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        f"stack {STACK}: UPDATE_COMPLETE",
    ]
    assert aws.fake.slept == [5.0, 5.0, 5.0]


def test_execute_of_a_create_goes_through_review_to_create_complete(aws: Aws) -> None:
    aws.stub.add_response("execute_change_set", {}, {"ChangeSetName": NAME, "StackName": STACK})
    expect_stack(aws, "REVIEW_IN_PROGRESS")
    expect_stack(aws, "CREATE_IN_PROGRESS")
    expect_stack(aws, "CREATE_COMPLETE")

    assert aws.applier.execute(ready_change_set("CREATE")).status == "CREATE_COMPLETE"


def test_a_change_set_already_executing_is_only_waited_for(aws: Aws) -> None:
    running = ChangeSet(STACK, NAME, CS_ID, "UPDATE", empty=False, execution_status="EXECUTE_IN_PROGRESS")
    expect_stack(aws, "UPDATE_COMPLETE")  # no execute_change_set queued

    assert aws.applier.execute(running).status == "UPDATE_COMPLETE"


def test_execute_failure_names_the_failed_resource_from_the_stack_events(aws: Aws) -> None:
    aws.stub.add_response("execute_change_set", {}, {"ChangeSetName": NAME, "StackName": STACK})
    expect_stack(aws, "UPDATE_IN_PROGRESS")
    expect_stack(
        aws, "UPDATE_ROLLBACK_COMPLETE", reason="The following resource(s) failed to update: [Orders]."
    )
    table_reason = (
        "Resource handler returned message: \"Cannot update GSI's properties other than Provisioned "
        'Throughput and Contributor Insights Specification" (HandlerErrorCode: InvalidRequest)'
    )
    aws.stub.add_response(
        "describe_stack_events",
        {
            "StackEvents": [  # newest first
                event(9, STACK, "AWS::CloudFormation::Stack", "UPDATE_ROLLBACK_COMPLETE"),
                event(8, "Api", "AWS::Lambda::Function", "UPDATE_COMPLETE"),
                event(
                    7, STACK, "AWS::CloudFormation::Stack", "UPDATE_ROLLBACK_IN_PROGRESS", "failed: [Orders]"
                ),
                event(6, "Api", "AWS::Lambda::Function", "UPDATE_FAILED", "Resource update cancelled"),
                event(5, "Orders", "AWS::DynamoDB::Table", "UPDATE_FAILED", table_reason),
                event(4, "Orders", "AWS::DynamoDB::Table", "UPDATE_IN_PROGRESS"),
            ],
            "NextToken": "older",
        },
        {"StackName": STACK},
    )
    aws.stub.add_response(
        "describe_stack_events",
        {
            "StackEvents": [
                event(3, STACK, "AWS::CloudFormation::Stack", "UPDATE_IN_PROGRESS", "User Initiated"),
                event(2, "Legacy", "AWS::SQS::Queue", "CREATE_FAILED", "an older operation's failure"),
            ],
            "NextToken": "even-older",  # not read: the operation started above
        },
        {"StackName": STACK, "NextToken": "older"},
    )
    heard: list[str] = []

    with pytest.raises(StackFailedError) as info:
        aws.applier.execute(ready_change_set(), progress=heard.append)

    message = str(info.value)
    assert f"stack {STACK} ended UPDATE_ROLLBACK_COMPLETE" in message
    assert "failed to update: [Orders]" in message
    assert f"Orders (AWS::DynamoDB::Table) UPDATE_FAILED: {table_reason}" in message
    assert "older operation" not in message
    assert "cancelled" not in message
    assert info.value.status == "UPDATE_ROLLBACK_COMPLETE"
    assert info.value.reasons == [f"Orders (AWS::DynamoDB::Table) UPDATE_FAILED: {table_reason}"]
    assert heard[-1] == f"stack {STACK}: UPDATE_ROLLBACK_COMPLETE"


def test_a_failed_create_says_to_delete_the_stack(aws: Aws) -> None:
    aws.stub.add_response("execute_change_set", {}, {"ChangeSetName": NAME, "StackName": STACK})
    expect_stack(aws, "ROLLBACK_COMPLETE")
    aws.stub.add_response(
        "describe_stack_events",
        {
            "StackEvents": [
                event(3, STACK, "AWS::CloudFormation::Stack", "ROLLBACK_COMPLETE"),
                event(2, "Orders", "AWS::DynamoDB::Table", "CREATE_FAILED", "Resource update cancelled"),
                event(1, STACK, "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated"),
            ]
        },
        {"StackName": STACK},
    )

    with pytest.raises(StackFailedError, match="delete the stack") as info:
        aws.applier.execute(ready_change_set("CREATE"))
    # only cancelled failures: they are what there is to say
    assert info.value.reasons == ["Orders (AWS::DynamoDB::Table) CREATE_FAILED: Resource update cancelled"]


def test_execute_times_out_naming_the_stack_and_its_last_status(aws: Aws) -> None:
    applier = ChangeSetApplier(aws.applier.cf, sleep=aws.fake.sleep, poll_s=1.0, timeout_s=3.0)
    aws.stub.add_response("execute_change_set", {}, {"ChangeSetName": NAME, "StackName": STACK})
    for _ in range(4):  # waited 0, 1, 2, 3 s by the sleeps asked for
        expect_stack(aws, "UPDATE_IN_PROGRESS")

    with pytest.raises(StackTimeoutError, match=rf"stack {STACK}: still UPDATE_IN_PROGRESS after 3s"):
        applier.execute(ready_change_set())
    assert aws.fake.slept == [1.0, 1.0, 1.0]


def test_a_change_set_that_never_completes_times_out(aws: Aws) -> None:
    applier = ChangeSetApplier(aws.applier.cf, sleep=aws.fake.sleep, poll_s=2.0, timeout_s=3.0)
    expect_no_stack(aws)
    expect_create(aws, "CREATE", params=PARAMS)
    for _ in range(3):  # 0, 2, 4 s
        expect_describe(aws, change_set_page("CREATE_IN_PROGRESS", execution="UNAVAILABLE"))

    with pytest.raises(
        StackTimeoutError, match=rf"change set {NAME} of stack {STACK}: still CREATE_IN_PROGRESS"
    ):
        applier.create(STACK, TEMPLATE, tags=TAGS, parameters=PARAMS)


def test_applier_rejects_non_positive_waits() -> None:
    with pytest.raises(ConfigError):
        ChangeSetApplier(_client(), poll_s=0)
    with pytest.raises(ConfigError):
        ChangeSetApplier(_client(), timeout_s=-1)


# -- drift ----------------------------------------------------------------------------------------


def expect_detection(aws: Aws, *states: tuple[str, str | None]) -> None:
    aws.stub.add_response("detect_stack_drift", {"StackDriftDetectionId": "det-1"}, {"StackName": STACK})
    for detection, drift in states:
        got: dict[str, Any] = {
            "StackId": STACK_ID,
            "StackDriftDetectionId": "det-1",
            "DetectionStatus": detection,
            "Timestamp": T0,
        }
        if drift:
            got["StackDriftStatus"] = drift
        aws.stub.add_response(
            "describe_stack_drift_detection_status", got, {"StackDriftDetectionId": "det-1"}
        )


def drift(
    logical_id: str, resource_type: str, status: str, diffs: list[tuple[str, str, str, str]]
) -> dict[str, Any]:
    return {
        "StackId": STACK_ID,
        "LogicalResourceId": logical_id,
        "PhysicalResourceId": f"mangaassist-dev-{logical_id.lower()}",
        "ResourceType": resource_type,
        "StackResourceDriftStatus": status,
        "Timestamp": T0,
        "PropertyDifferences": [
            {"PropertyPath": p, "ExpectedValue": e, "ActualValue": a, "DifferenceType": t}
            for p, e, a, t in diffs
        ],
    }


def test_drift_reports_a_modified_resource_without_its_values(aws: Aws) -> None:
    expect_detection(aws, ("DETECTION_IN_PROGRESS", None), ("DETECTION_COMPLETE", "DRIFTED"))
    filters = {"StackName": STACK, "StackResourceDriftStatusFilters": ["MODIFIED", "DELETED"]}
    aws.stub.add_response(
        "describe_stack_resource_drifts",
        {
            "StackResourceDrifts": [
                drift(
                    "Api",
                    "AWS::Lambda::Function",
                    "MODIFIED",
                    [
                        ("/Environment/Variables/API_KEY", "expected-secret", "hunter2", "NOT_EQUAL"),
                        ("/Timeout", "30", "60", "NOT_EQUAL"),
                    ],
                )
            ],
            "NextToken": "p2",
        },
        filters,
    )
    aws.stub.add_response(
        "describe_stack_resource_drifts", {"StackResourceDrifts": []}, {**filters, "NextToken": "p2"}
    )
    heard: list[str] = []

    got = aws.applier.detect_drift(STACK, progress=heard.append)

    assert got.stack_name == STACK
    assert got.status == "DRIFTED"
    assert len(got.drifted) == 1
    api = got.drifted[0]
    assert (api.logical_id, api.resource_type, api.status) == ("Api", "AWS::Lambda::Function", "MODIFIED")
    assert api.differences == ["/Environment/Variables/API_KEY NOT_EQUAL", "/Timeout NOT_EQUAL"]
    assert api.physical_id == "mangaassist-dev-api"
    assert "hunter2" not in repr(got)
    assert aws.fake.slept == [5.0]
    assert heard == [
        f"stack {STACK}: drift DETECTION_IN_PROGRESS",
        f"stack {STACK}: drift DETECTION_COMPLETE",
    ]


def test_drift_in_sync_reads_no_resource_drifts(aws: Aws) -> None:
    expect_detection(aws, ("DETECTION_COMPLETE", "IN_SYNC"))  # no describe_stack_resource_drifts queued

    got = aws.applier.detect_drift(STACK)

    assert got.status == "IN_SYNC"
    assert got.drifted == []


def test_a_failed_detection_is_unknown_with_whatever_drift_was_found(aws: Aws) -> None:
    aws.stub.add_response("detect_stack_drift", {"StackDriftDetectionId": "det-1"}, {"StackName": STACK})
    aws.stub.add_response(
        "describe_stack_drift_detection_status",
        {
            "StackId": STACK_ID,
            "StackDriftDetectionId": "det-1",
            "StackDriftStatus": "IN_SYNC",
            "DetectionStatus": "DETECTION_FAILED",
            "DetectionStatusReason": "Failed to detect drift on resource Search",
            "Timestamp": T0,
        },
        {"StackDriftDetectionId": "det-1"},
    )
    aws.stub.add_response(
        "describe_stack_resource_drifts",
        {"StackResourceDrifts": [drift("Logs", "AWS::Logs::LogGroup", "DELETED", [])]},
        {"StackName": STACK, "StackResourceDriftStatusFilters": ["MODIFIED", "DELETED"]},
    )

    got = aws.applier.detect_drift(STACK)

    assert got.status == "UNKNOWN"
    assert got.reason == "Failed to detect drift on resource Search"
    assert [(d.logical_id, d.status, d.differences) for d in got.drifted] == [("Logs", "DELETED", [])]


def test_a_template_too_big_for_template_body_is_uploaded_and_read_by_url() -> None:
    """Over 51,200 bytes (CD-02's monitoring stack with CD-08's SLO alarms is ~67 KB) the template
    goes to the template bucket and the change set reads it by ``TemplateURL``."""
    from mangaassist.platform.aws.cloudformation import change_set_name

    cf, fake = _client(), Fake()
    s3: Any = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    big = '{"Resources": {"X": {"Type": "AWS::SNS::Topic", "Metadata": "' + "x" * 60_000 + '"}}}'
    name = change_set_name(big, None, TAGS)
    key = f"cloudformation/{STACK}/{name}.json"
    applier = ChangeSetApplier(
        cf, sleep=fake.sleep, clock=fake.clock, poll_s=5.0, timeout_s=60.0, s3=s3, template_bucket="artifacts"
    )
    with Stubber(cf) as cf_stub, Stubber(s3) as s3_stub:
        cf_stub.add_client_error(
            "describe_stacks",
            service_error_code="ValidationError",
            service_message=f"Stack with id {STACK} does not exist",
            http_status_code=400,
            expected_params={"StackName": STACK},
        )
        s3_stub.add_response(
            "put_object",
            {},
            {
                "Bucket": "artifacts",
                "Key": key,
                "Body": big.encode(),
                "ContentType": "application/json",
                "ServerSideEncryption": "aws:kms",
            },
        )
        cf_stub.add_response(
            "create_change_set",
            {"Id": CS_ID, "StackId": STACK_ID},
            {
                "StackName": STACK,
                "ChangeSetName": name,
                "ChangeSetType": "CREATE",
                "TemplateURL": f"https://artifacts.s3.amazonaws.com/{key}",
                "Parameters": [],
                "Capabilities": CAPABILITIES,
                "Tags": [{"Key": k, "Value": v} for k, v in sorted(TAGS.items())],
            },
        )
        cf_stub.add_response(
            "describe_change_set",
            {
                "ChangeSetName": name,
                "ChangeSetId": CS_ID,
                "StackId": STACK_ID,
                "StackName": STACK,
                "Status": "CREATE_COMPLETE",
                "ExecutionStatus": "AVAILABLE",
                "Changes": [],
            },
            {"ChangeSetName": name, "StackName": STACK},
        )
        got = applier.create(STACK, big, tags=TAGS)
        cf_stub.assert_no_pending_responses()
        s3_stub.assert_no_pending_responses()
    assert got.name == name and got.type == "CREATE"
