"""What ``DynamoTables`` does beyond the provider contract: exact round trips of numbers and nested
values, placeholders for any attribute name, error mapping, and the shape of its paginated requests
(botocore's ``Stubber`` where moto cannot help: throttling, index states)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mangaassist.core.errors import ConfigError
from mangaassist.platform.aws.tables_dynamodb import DynamoTables
from mangaassist.platform.tables import Condition, ConditionFailed, ThrottledError
from tests.moto_server import CREDENTIALS


@pytest.fixture
def stubbed() -> Iterator[tuple[DynamoTables, Stubber]]:
    """``DynamoTables`` (prefix ``p-``) on a real client whose responses are queued by hand."""
    make: Any = boto3.client
    db = make("dynamodb", **CREDENTIALS)
    with Stubber(db) as stubber:
        yield DynamoTables(db, table_prefix="p-"), stubber
        stubber.assert_no_pending_responses()


NESTED: dict[str, Any] = {
    "pk": "a",
    "sk": "1",
    "half": 2.5,
    "three": 3,
    "tenth": 0.1,
    "tiny": -1.5e-7,
    "precise": 0.30000000000000004,
    "big": 2**62,
    "negative": -17,
    "yes": True,
    "no": False,
    "nothing": None,
    "empty": "",
    "text": "ワンピース 第1巻",
    "list": [1, 2.5, None, True, "", [], {}, {"deep": [0.25, {"deeper": -3}]}],
    "map": {"price": 4.99, "count": 2, "tags": ["a", "b"], "none": None},
    "empty_list": [],
    "empty_map": {},
}


def _types(value: Any) -> Any:
    """``value`` with every leaf replaced by its type: ``==`` alone takes 3 == 3.0."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value)


def test_numbers_and_nested_values_round_trip_exactly(dynamo: DynamoTables) -> None:
    dynamo.put("t", NESTED)
    got = dynamo.get("t", "a", "1")
    assert got == NESTED
    assert _types(got) == _types(NESTED)
    assert _types(next(iter(dynamo.scan("t")))) == _types(NESTED)
    assert _types(dynamo.query("t", "a")[0]) == _types(NESTED)
    dynamo.update("t", "a", "1", set={"map": {"price": 5.25, "n": 7}, "half": 0.5})
    got = dynamo.get("t", "a", "1")
    assert got is not None and got["map"] == {"price": 5.25, "n": 7} and got["half"] == 0.5
    assert type(got["map"]["n"]) is int
    dynamo.put("ix", {"pk": "b", "sk": "1", "owner": "ann", "rank": 4, "score": 0.75})
    (indexed,) = dynamo.query_index("ix", "by-owner", "ann")
    assert type(indexed["rank"]) is int and indexed["score"] == 0.75


@pytest.mark.parametrize(
    "item",
    [
        {"pk": "a", "sk": "1", "x": float("nan")},
        {"pk": "a", "sk": "1", "x": [float("inf")]},
        {"pk": "a", "sk": "1", "x": {"y": 10**40}},
        {"pk": "a", "sk": ""},
        {"pk": "", "sk": "1"},
        {"pk": "a", "sk": 1},
    ],
)
def test_what_dynamodb_cannot_store_is_a_value_error_before_any_call(
    dynamo: DynamoTables, item: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=r"DynamoDB|non-empty"):
        dynamo.put("t", item)
    assert list(dynamo.scan("t")) == []


def test_attribute_names_that_are_reserved_words_or_look_like_paths(dynamo: DynamoTables) -> None:
    item = {"pk": "a", "sk": "1", "status": "new", "name": "n", "size": 1, "a.b": "dot", "x-y": None}
    dynamo.put("t", item, condition=Condition.not_exists())
    dynamo.update(
        "t",
        "a",
        "1",
        set={"status": "shipped", "comment": "ok", "a.b": "dot2"},
        remove=["name"],
        condition=Condition(
            exists=True, equals=(("status", "new"), ("a.b", "dot"), ("x-y", None)), absent=("owner",)
        ),
    )
    assert dynamo.get("t", "a", "1") == {
        "pk": "a",
        "sk": "1",
        "status": "shipped",
        "size": 1,
        "a.b": "dot2",
        "x-y": None,
        "comment": "ok",
    }
    with pytest.raises(ConditionFailed):
        dynamo.delete("t", "a", "1", condition=Condition.attr_equals(status="new"))
    dynamo.delete("t", "a", "1", condition=Condition.attr_equals(status="shipped"))
    assert dynamo.get("t", "a", "1") is None


def test_condition_failed_names_the_table_the_key_and_what_was_found(dynamo: DynamoTables) -> None:
    dynamo.put("t", {"pk": "a", "sk": "1", "v": 2})
    with pytest.raises(
        ConditionFailed, match=r"PutItem on table 't[0-9a-f]{8}-t' at 'a'/'1'.*already exists"
    ):
        dynamo.put("t", {"pk": "a", "sk": "1"}, condition=Condition.not_exists())
    with pytest.raises(
        ConditionFailed, match=r"UpdateItem .* at 'a'/'1' failed: attribute 'v' is 2, expected 1"
    ):
        dynamo.update("t", "a", "1", set={"w": 1}, condition=Condition.attr_equals(v=1))
    with pytest.raises(ConditionFailed, match=r"DeleteItem .* at 'b'/'1' failed: item does not exist"):
        dynamo.delete("t", "b", "1", condition=Condition(exists=True))
    with pytest.raises(ConditionFailed, match=r"'v' is present \(2\), expected absent"):
        dynamo.delete("t", "a", "1", condition=Condition(absent=("v",)))
    assert dynamo.get("t", "a", "1") == {"pk": "a", "sk": "1", "v": 2}
    # a condition on a nested value compares the whole value
    dynamo.update("t", "a", "1", set={"m": {"l": [1, 2.5]}})
    dynamo.update("t", "a", "1", set={"ok": True}, condition=Condition.attr_equals(m={"l": [1, 2.5]}))
    with pytest.raises(ConditionFailed):
        dynamo.update("t", "a", "1", set={"ok": False}, condition=Condition.attr_equals(m={"l": [1, 2.6]}))


def test_update_edge_cases(dynamo: DynamoTables) -> None:
    dynamo.put("t", {"pk": "a", "sk": "1", "x": 1, "y": 2})
    dynamo.update("t", "a", "1", set={"x": 5, "z": 3}, remove=["x", "y", "y"])  # set, then removed
    assert dynamo.get("t", "a", "1") == {"pk": "a", "sk": "1", "z": 3}
    dynamo.update("t", "a", "1", remove=["never-there"])
    assert dynamo.get("t", "a", "1") == {"pk": "a", "sk": "1", "z": 3}
    with pytest.raises(ValueError, match="nothing to update"):
        dynamo.update("t", "a", "1")
    with pytest.raises(ValueError, match="keys"):
        dynamo.update("t", "a", "1", remove=["sk"])
    with pytest.raises(ValueError, match="keys"):
        dynamo.update("t", "a", "1", set={"pk": "b"}, remove=["pk"])
    dynamo.update("t", "new", "1", remove=["x"])  # UpdateItem creates the absent item, even so
    assert dynamo.get("t", "new", "1") == {"pk": "new", "sk": "1"}


def test_query_by_sort_key_prefix_order_and_limit(dynamo: DynamoTables) -> None:
    for i in range(12):
        dynamo.put("t", {"pk": "p", "sk": f"order#{i:02d}", "i": i})
        dynamo.put("t", {"pk": "p", "sk": f"session#{i:02d}", "i": i})
    dynamo.put("t", {"pk": "q", "sk": "order#00"})
    assert [i["i"] for i in dynamo.query("t", "p", sk_prefix="order#")] == list(range(12))
    assert [i["i"] for i in dynamo.query("t", "p", sk_prefix="order#", limit=3, descending=True)] == [
        11,
        10,
        9,
    ]
    assert len(dynamo.query("t", "p")) == 24
    assert dynamo.query("t", "p", limit=0) == []
    assert dynamo.query("t", "nobody") == []


def test_segmented_scan_yields_each_item_once(dynamo: DynamoTables) -> None:
    keys = {(f"pk-{i}", f"sk-{j}") for i in range(40) for j in range(3)}
    for pk, sk in keys:
        dynamo.put("t", {"pk": pk, "sk": sk})
    seen = [
        (i["pk"], i["sk"])
        for segment in range(4)
        for i in dynamo.scan("t", segment=segment, total_segments=4)
    ]
    assert sorted(seen) == sorted(keys)
    with pytest.raises(ValueError, match="segment 4"):
        list(dynamo.scan("t", segment=4, total_segments=4))
    with pytest.raises(ValueError, match="limit"):
        dynamo.scan_page("t", limit=0)


def test_a_missing_table_or_index_is_a_config_error(dynamo: DynamoTables, dynamodb_client: Any) -> None:
    missing = DynamoTables(dynamodb_client, table_prefix="nothing-here-")
    with pytest.raises(
        ConfigError, match=r"DynamoDB table 'nothing-here-t' does not exist .*mangaassist deploy infra"
    ):
        missing.get("t", "a", "1")
    with pytest.raises(ConfigError, match="does not exist"):
        missing.scan_page("t")
    with pytest.raises(ConfigError, match=r"table 'ix' has no index 'by-nothing' \(provisioned: by-owner;"):
        dynamo.query_index("ix", "by-nothing", "x")
    # an index dropped after it was looked up
    dynamo.put("ix", {"pk": "a", "sk": "1", "owner": "ann", "rank": 1})
    assert len(dynamo.query_index("ix", "by-owner", "ann")) == 1
    dynamodb_client.update_table(
        TableName=dynamo.physical("ix"), GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "by-owner"}}]
    )
    with pytest.raises(ConfigError, match=r"no index 'by-owner' \(provisioned: none;"):
        dynamo.query_index("ix", "by-owner", "ann")


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"]
)
def test_throttling_is_a_throttled_error(stubbed: tuple[DynamoTables, Stubber], code: str) -> None:
    tables, stubber = stubbed
    stubber.add_client_error("put_item", service_error_code=code, http_status_code=400)
    stubber.add_client_error("query", service_error_code=code, http_status_code=400)
    with pytest.raises(ThrottledError, match=rf"PutItem on table 'p-t' was throttled \({code}\)"):
        tables.put("t", {"pk": "a", "sk": "1"})
    with pytest.raises(ThrottledError, match="back off"):
        tables.query("t", "a")


def test_other_errors_name_the_operation_table_and_code(stubbed: tuple[DynamoTables, Stubber]) -> None:
    tables, stubber = stubbed
    stubber.add_client_error("get_item", service_error_code="ValidationException", service_message="bad key")
    with pytest.raises(
        Exception, match="DynamoDB GetItem on table 'p-t' failed: ValidationException: bad key"
    ):
        tables.get("t", "a", "1")


def test_query_follows_last_evaluated_key_until_the_limit(stubbed: tuple[DynamoTables, Stubber]) -> None:
    tables, stubber = stubbed

    def item(i: int) -> dict[str, Any]:
        return {"pk": {"S": "p"}, "sk": {"S": f"o#{i}"}, "n": {"N": str(i)}}

    common = {
        "TableName": "p-t",
        "KeyConditionExpression": "#n0 = :v0 AND begins_with(#n1, :v1)",
        "ExpressionAttributeNames": {"#n0": "pk", "#n1": "sk"},
        "ExpressionAttributeValues": {":v0": {"S": "p"}, ":v1": {"S": "o#"}},
        "ConsistentRead": True,
        "ScanIndexForward": False,
    }
    last = {"pk": {"S": "p"}, "sk": {"S": "o#1"}}
    stubber.add_response(
        "query", {"Items": [item(0), item(1)], "LastEvaluatedKey": last}, {**common, "Limit": 5}
    )
    stubber.add_response(
        "query",
        {"Items": [item(2), item(3), item(4)], "LastEvaluatedKey": {"pk": {"S": "p"}, "sk": {"S": "o#4"}}},
        {**common, "Limit": 3, "ExclusiveStartKey": last},
    )
    got = tables.query("t", "p", sk_prefix="o#", limit=5, descending=True)
    assert [i["n"] for i in got] == [0, 1, 2, 3, 4]


def test_scan_page_request_and_next_key(stubbed: tuple[DynamoTables, Stubber]) -> None:
    tables, stubber = stubbed
    stubber.add_response(
        "scan",
        {
            "Items": [{"pk": {"S": "a"}, "sk": {"S": "1"}}],
            "LastEvaluatedKey": {"pk": {"S": "a"}, "sk": {"S": "1"}},
        },
        {
            "TableName": "p-t",
            "ConsistentRead": True,
            "Segment": 2,
            "TotalSegments": 3,
            "Limit": 1,
            "ExclusiveStartKey": {"pk": {"S": "0"}, "sk": {"S": "9"}},
        },
    )
    stubber.add_response("scan", {"Items": []}, {"TableName": "p-t", "ConsistentRead": True, "Limit": 10})
    page = tables.scan_page("t", segment=2, total_segments=3, start={"pk": "0", "sk": "9"}, limit=1)
    assert page.items == [{"pk": "a", "sk": "1"}]
    assert page.next == {"pk": "a", "sk": "1"}
    assert tables.scan_page("t", limit=10).next is None


def test_indexes_lists_the_queryable_ones_by_name(stubbed: tuple[DynamoTables, Stubber]) -> None:
    tables, stubber = stubbed

    def index(name: str, status: str, *keys: str) -> dict[str, Any]:
        schema = [{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ["HASH", "RANGE"], strict=False)]
        return {"IndexName": name, "KeySchema": schema, "IndexStatus": status}

    described = {
        "Table": {
            "TableName": "p-ix",
            "GlobalSecondaryIndexes": [
                index("c-new", "CREATING", "x"),
                index("b-upd", "UPDATING", "owner"),
                index("a-act", "ACTIVE", "owner", "rank"),
                index("d-old", "DELETING", "y"),
            ],
        }
    }
    stubber.add_response("describe_table", described, {"TableName": "p-ix"})
    assert [(i.name, i.partition_key, i.sort_key) for i in tables.indexes("ix")] == [
        ("a-act", "owner", "rank"),
        ("b-upd", "owner", None),
    ]


def test_a_client_it_made_is_its_own_to_close(moto_endpoint: str) -> None:
    tables = DynamoTables(region="eu-west-1", endpoint_url=moto_endpoint, table_prefix="x-")
    assert tables.client.meta.region_name == "eu-west-1"
    assert tables.client.meta.endpoint_url == moto_endpoint
    assert tables.physical("t") == "x-t"
    tables.close()
