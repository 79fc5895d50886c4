"""CD-02's pure decisions: template changes classified (add, modify, replace, delete; destructive
when a stateful resource is replaced or deleted), the template rules, the local plan."""

from __future__ import annotations

import copy
from typing import Any

from mangaassist.delivery.infra import (
    Action,
    ChangeKind,
    classify,
    plan,
    template_findings,
)
from mangaassist.delivery.pipelines.infra import destructive_refusal
from mangaassist.platform.infra import Present, ResourceSpec

TAGS = [
    {"Key": "environment", "Value": "prod"},
    {"Key": "owner", "Value": "t"},
    {"Key": "pipeline", "Value": "CD-02"},
]


def table(pk: str = "pk", name: str = "mangaassist-prod-orders", **extra: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "TableName": name,
            "KeySchema": [{"AttributeName": pk, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": pk, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "DeletionProtectionEnabled": True,
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "Tags": TAGS,
            **extra,
        },
    }


def function(code: str = "v1") -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {"Code": {"ZipFile": code}, "Runtime": "python3.12", "Tags": TAGS},
    }


def bucket() -> dict[str, Any]:
    return {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {"ServerSideEncryptionConfiguration": []},
            "Tags": TAGS,
        },
    }


def stacks(**resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"prod-data": {"Resources": resources}}


def by_id(changes: list[Any]) -> dict[str, Any]:
    return {c.logical_id: c for c in changes}


def test_a_partition_key_change_replaces_the_table_and_is_destructive() -> None:
    changes = classify(stacks(Orders=table("pk")), stacks(Orders=table("customer_id")))
    (change,) = changes
    assert change.kind is ChangeKind.REPLACE and change.destructive
    assert change.properties[0] == "KeySchema" and "AttributeDefinitions" in change.properties
    assert "DESTRUCTIVE" in change.line()


def test_a_table_rename_replaces_it_too_from_the_registry_schema() -> None:
    (change,) = classify(stacks(Orders=table(name="a-b-c")), stacks(Orders=table(name="a-b-d")))
    assert change.kind is ChangeKind.REPLACE and change.properties == ("TableName",)


def test_in_place_changes_adds_and_deletes() -> None:
    old = stacks(Orders=table(), Fn=function("v1"), Logs=bucket())
    new = stacks(
        Orders=table(StreamSpecification={"StreamViewType": "NEW_IMAGE"}), Fn=function("v2"), Extra=function()
    )
    changes = by_id(classify(old, new))
    assert changes["Orders"].kind is ChangeKind.MODIFY and not changes["Orders"].destructive
    assert changes["Orders"].properties == ("StreamSpecification",)
    assert changes["Fn"].kind is ChangeKind.MODIFY and not changes["Fn"].stateful
    assert changes["Extra"].kind is ChangeKind.ADD
    assert changes["Logs"].kind is ChangeKind.DELETE and changes["Logs"].destructive
    assert classify(old, old) == []


def test_a_removed_stack_deletes_its_resources_and_a_type_change_replaces() -> None:
    gone = classify(stacks(Orders=table()), {})
    assert [(c.kind, c.destructive) for c in gone] == [(ChangeKind.DELETE, True)]
    swapped = classify(stacks(X=function()), stacks(X=bucket()))
    assert swapped[0].kind is ChangeKind.REPLACE and swapped[0].properties == ("Type",)


def test_a_retention_policy_change_is_an_in_place_change_named() -> None:
    loose = table()
    loose["DeletionPolicy"] = "Delete"
    (change,) = classify(stacks(Orders=table()), stacks(Orders=loose))
    assert change.kind is ChangeKind.MODIFY and change.properties == ("DeletionPolicy",)


def test_destructive_changes_are_refused_without_the_override() -> None:
    changes = classify(stacks(Orders=table("pk")), stacks(Orders=table("customer_id")))
    refusal = destructive_refusal(changes, "prod", {})
    assert refusal and "--override prod.destructive" in refusal and "prod-data/Orders" in refusal
    assert destructive_refusal(changes, "prod", {"prod.destructive": "re-keying orders, backfilled"}) is None
    harmless = classify(stacks(Fn=function("v1")), stacks(Fn=function("v2")))
    assert destructive_refusal(harmless, "prod", {}) is None


def test_template_rules_catch_what_cdk_nag_does_not_ask() -> None:
    good = stacks(Orders=table(), Logs=bucket())
    assert template_findings(good) == []
    bad_table = table()
    bad_table["Properties"]["DeletionProtectionEnabled"] = False
    del bad_table["Properties"]["PointInTimeRecoverySpecification"]
    bad_table["DeletionPolicy"] = "Delete"
    bad_bucket = bucket()
    bad_bucket["Properties"]["Tags"] = TAGS[:1]
    del bad_bucket["Properties"]["VersioningConfiguration"]
    rules = {(f.logical_id, f.rule) for f in template_findings(stacks(Orders=bad_table, Logs=bad_bucket))}
    assert rules == {
        ("Orders", "retain"),
        ("Orders", "deletion-protection"),
        ("Orders", "pitr"),
        ("Logs", "versioning"),
        ("Logs", "tags"),
    }


def test_wildcard_iam_actions_need_an_acknowledgment() -> None:
    policy = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}]}
        },
    }
    narrow = copy.deepcopy(policy)
    narrow["Properties"]["PolicyDocument"]["Statement"][0]["Action"] = ["s3:GetObject"]
    templates = stacks(P=policy, N=narrow)
    assert [(f.logical_id, f.rule) for f in template_findings(templates)] == [("P", "iam-wildcard")]
    assert template_findings(templates, frozenset({"prod-data/P"})) == []


def test_the_local_plan_reports_drift_only_for_what_it_provisioned() -> None:
    wanted = [ResourceSpec("tables", "orders", {"pk": 1}), ResourceSpec("sites", "widget", {"x": 1})]
    fresh = plan(wanted, {})
    assert [(c.action, c.drift) for c in fresh] == [(Action.CREATE, None), (Action.CREATE, None)]
    gone = plan(wanted, {"tables/orders": Present(None, True), "sites/widget": Present({"x": 2}, True)})
    assert gone[0].action is Action.CREATE and gone[0].drift == "provisioned by CD-02, deleted since"
    assert (
        gone[1].action is Action.UPDATE
        and gone[1].changed == ("x",)
        and "changed outside" in (gone[1].drift or "")
    )
    same = plan(wanted, {"tables/orders": Present({"pk": 1}, True), "sites/widget": Present({"x": 1}, False)})
    assert [c.action for c in same] == [Action.UNCHANGED, Action.UNCHANGED]
