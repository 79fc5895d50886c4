"""``Tables`` on DynamoDB (production provider). The client is injected (a boto3 low-level client).

Where things are: the table ``sessions`` is the DynamoDB table ``{table_prefix}sessions``, made by
CD-02 from ``infra/resources.toml`` (``mangaassist deploy infra``) with the string key attributes
``pk`` (partition) and ``sk`` (sort); this provider never creates or changes tables.

Items: JSON-like dicts go through boto3's ``TypeSerializer``/``TypeDeserializer``. DynamoDB numbers
are decimals, so a float goes in as ``Decimal(repr(x))`` (exactly the float's shortest form) and a
number comes out as ``int`` when it is integral, else ``float``, at any depth: ``2.5`` reads back
``2.5`` and ``3`` reads back ``3``. What DynamoDB cannot store exactly is refused with ``ValueError``
before any call: a float that is not finite, a number beyond DynamoDB's 38 significant digits or
its exponent range, and an empty ``pk`` or ``sk`` (key attributes cannot be empty strings).

Requests:

* ``get`` and ``query`` read consistently (``ConsistentRead``), as ``scan_page`` does; a global
  secondary index cannot be read consistently, so ``query_index`` may miss a write of the last
  second or so on AWS (moto's are immediate).
* A ``Condition`` becomes a ``ConditionExpression``, every name and value a placeholder (names
  such as ``status``, ``name``, ``owner`` and ``rank`` are reserved words): ``exists`` is
  ``attribute_exists(pk)`` or ``attribute_not_exists(pk)``, each ``equals`` pair ``a = :v`` (None is
  DynamoDB's ``NULL``, present with a null value: ``attribute_exists(a) AND a = :v``, since moto's
  server takes a missing attribute for a ``NULL`` one), each ``absent`` name ``attribute_not_exists(a)``.
  The write asks for the stored item on failure (``ReturnValuesOnConditionCheckFailure=ALL_OLD``)
  so ``ConditionFailed`` says what was found, as the SQLite provider's does.
* ``update`` is one ``UpdateItem``: ``SET`` and ``REMOVE`` clauses (an attribute both set and
  removed ends removed, as with SQLite). With nothing to set or remove it is a ``ValueError``
  ("nothing to update"), where SQLite creates the bare item ``{pk, sk}`` if absent: DynamoDB would
  do the same with an ``UpdateItem`` that has no update expression, but moto's server fails on one
  (HTTP 500), so that path could not be tested; a caller with nothing to change skips the call.
* ``query`` and ``query_index`` follow ``LastEvaluatedKey`` until ``limit`` items or the end.
  ``scan_page`` is one ``Scan`` (``Segment``/``TotalSegments`` when there are several segments,
  ``Limit``, ``ExclusiveStartKey``), whose ``LastEvaluatedKey`` is the page's ``next``. DynamoDB may
  hand back a ``next`` after the last item; the page after it is then empty with no ``next``. A page
  can also hold fewer than ``limit`` items and still have a ``next`` (a ``Scan`` reads at most 1 MB).
  ``scan`` yields in DynamoDB's order (hashed partition keys), not ``(pk, sk)`` order.
* ``indexes`` is ``DescribeTable``'s ``GlobalSecondaryIndexes`` that can be queried (status
  ``ACTIVE`` or ``UPDATING``; one still ``CREATING``, backfilling, is not listed yet), sorted by
  name. ``query_index`` remembers them per table and asks again when an index is not known.

Errors: ``ConditionalCheckFailedException`` is ``ConditionFailed`` naming the table and key;
``ProvisionedThroughputExceededException``, ``ThrottlingException`` and ``RequestLimitExceeded`` are
``ThrottledError`` (the caller's token bucket backs off; botocore's own retries, its default
configuration, run first: the error is what is left when they give up); a missing table
(``ResourceNotFoundException``) or index is ``ConfigError``; any other ``ClientError`` or botocore
error is ``DynamoCallError`` naming the operation, the table and AWS's code.

Where DynamoDB differs from ``SqliteTables`` (beyond the above): an item is at most 400 KB; a
write whose value for a global secondary index's key attribute has the wrong type (``rank`` a
string where the index says N) is refused by AWS (``DynamoCallError``, ``ValidationException``;
moto and SQLite accept it); a float that is integral reads back as an ``int`` (``3.0`` as ``3``,
equal in Python); a number written by another tool with more digits than a float holds reads back
rounded, so a ``Condition`` built from that read no longer matches it.

Status: the provider contract suite (``tests/integration/tables``) runs against moto's server
process; it has not run against a real account yet.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError

from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.platform.tables import (
    Condition,
    ConditionFailed,
    IndexInfo,
    Item,
    Key,
    Page,
    ThrottledError,
    Write,
    check_segment,
    check_transaction,
)

THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
QUERYABLE_INDEX_STATES = frozenset({"ACTIVE", "UPDATING"})

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class DynamoCallError(MangaAssistError):
    """A DynamoDB call failed for a reason that has no error of its own; ``operation`` and ``code``
    (AWS's error code) say which and why."""

    def __init__(
        self, operation: str, table: str, code: str, message: str, response: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"DynamoDB {operation} on table {table!r} failed: {code}: {message}")
        self.operation = operation
        self.table = table
        self.code = code
        self.aws_message = message
        self.response: Mapping[str, Any] = response or {}


def to_dynamo(value: Any) -> Any:
    """``value`` with every float made a ``Decimal`` of its shortest form (``repr``), at any depth."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r}: DynamoDB stores finite numbers only")
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value: Any) -> Any:
    """``value`` as plain Python, at any depth: a ``Decimal`` is an ``int`` when integral, else a
    ``float``; a set (written by another tool) a sorted list."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(from_dynamo(v) for v in value)
    return value


def serialize(value: Any) -> dict[str, Any]:
    """One attribute value in DynamoDB's JSON (``{"S": ...}``, ``{"N": ...}``, ``{"M": ...}``...)."""
    try:
        out: dict[str, Any] = dict(_serializer.serialize(to_dynamo(value)))
    except (TypeError, decimal.DecimalException) as exc:
        raise ValueError(f"{value!r} cannot be stored in DynamoDB: {exc!r}") from exc
    return out


def serialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in item.items():
        try:
            out[name] = serialize(value)
        except ValueError as exc:
            raise ValueError(f"attribute {name!r}: {exc}") from exc
    return out


def deserialize_item(raw: Mapping[str, Any]) -> Item:
    return {name: from_dynamo(_deserializer.deserialize(value)) for name, value in raw.items()}


def _key(pk: Any, sk: Any) -> dict[str, Any]:
    if not isinstance(pk, str) or not isinstance(sk, str) or not pk or not sk:
        raise ValueError(
            f"an item needs non-empty string 'pk' and 'sk' (DynamoDB key attributes cannot be "
            f"empty), got {pk!r}, {sk!r}"
        )
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _plain_key(raw: Mapping[str, Any] | None) -> Key | None:
    if not raw:
        return None
    return {name: str(_deserializer.deserialize(raw[name])) for name in ("pk", "sk") if name in raw}


class _Expression:
    """Placeholders for one request: ``#nI`` for names, ``:vI`` for values."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, dict[str, Any]] = {}
        self._by_name: dict[str, str] = {}

    def name(self, attribute: str) -> str:
        if attribute not in self._by_name:
            placeholder = f"#n{len(self._by_name)}"
            self._by_name[attribute] = placeholder
            self.names[placeholder] = attribute
        return self._by_name[attribute]

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = serialize(value)
        return placeholder

    def condition(self, condition: Condition | None) -> str | None:
        if condition is None:
            return None
        parts: list[str] = []
        if condition.exists is True:
            parts.append(f"attribute_exists({self.name('pk')})")
        elif condition.exists is False:
            parts.append(f"attribute_not_exists({self.name('pk')})")
        for attribute, value in condition.equals:
            name = self.name(attribute)
            if value is None:  # DynamoDB: a missing attribute is no NULL; moto: it equals one
                parts.append(f"attribute_exists({name})")
            parts.append(f"{name} = {self.value(value)}")
        parts += [f"attribute_not_exists({self.name(a)})" for a in condition.absent]
        return " AND ".join(parts) or None

    def params(self, **expressions: str | None) -> dict[str, Any]:
        """The request parameters: the given expressions that are set, then the placeholders used."""
        out: dict[str, Any] = {k: v for k, v in expressions.items() if v}
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


class DynamoTables:
    """Implements ``platform.tables.Tables`` on DynamoDB. See the module docstring."""

    def __init__(
        self,
        client: Any = None,
        *,
        table_prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self._owned = client is None
        if client is None:
            import boto3

            try:
                client = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url)
            except BotoCoreError as exc:  # no region...
                raise ConfigError(f"cannot make a DynamoDB client: {exc}") from exc
        self.client: Any = client
        self.table_prefix = table_prefix
        self._indexes: dict[str, dict[str, IndexInfo]] = {}

    def close(self) -> None:
        """Close the client if this provider made it (an injected one belongs to the caller)."""
        if self._owned:
            self.client.close()

    def physical(self, table: str) -> str:
        """The DynamoDB table that stands for ``table``."""
        return self.table_prefix + table

    # -- calls -------------------------------------------------------------------------------------

    def _call(self, operation: str, table: str, **params: Any) -> dict[str, Any]:
        physical = self.physical(table)
        try:
            result: dict[str, Any] = getattr(self.client, xform_name(operation))(TableName=physical, **params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "Unknown")), str(error.get("Message", ""))
            if code == "ResourceNotFoundException":
                raise ConfigError(
                    f"DynamoDB table {physical!r} does not exist (tables come from "
                    "infra/resources.toml through 'mangaassist deploy infra')"
                ) from exc
            if code in THROTTLING_CODES:
                raise ThrottledError(
                    f"DynamoDB {operation} on table {physical!r} was throttled ({code}): back off and "
                    "try again"
                ) from exc
            raise DynamoCallError(operation, physical, code, message, exc.response) from exc
        except BotoCoreError as exc:  # no credentials, no endpoint, bad parameters
            raise DynamoCallError(operation, physical, type(exc).__name__, str(exc)) from exc
        return result

    def _write(
        self, operation: str, table: str, pk: str, sk: str, condition: Condition | None, **params: Any
    ) -> None:
        """A write that may carry a condition; its failure is ``ConditionFailed``."""
        if "ConditionExpression" in params:
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            self._call(operation, table, **params)
        except DynamoCallError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            raw = exc.response.get("Item")  # the stored item (ALL_OLD); absent when there is none
            found = deserialize_item(raw) if raw else None
            reason = "the stored item does not satisfy the condition"
            if condition is not None:
                try:
                    condition.check(found)
                except ConditionFailed as failed:
                    reason = str(failed)
            raise ConditionFailed(
                f"conditional {operation} on table {self.physical(table)!r} at {pk!r}/{sk!r} failed: {reason}"
            ) from exc

    def _pages(self, operation: str, table: str, limit: int | None, **params: Any) -> list[Item]:
        """``Query`` pages until ``limit`` items (None: all) or no ``LastEvaluatedKey``."""
        if limit is not None and limit < 1:
            return []
        items: list[Item] = []
        while True:
            if limit is not None:
                params["Limit"] = limit - len(items)
            page = self._call(operation, table, **params)
            items += [deserialize_item(raw) for raw in page.get("Items", [])]
            last = page.get("LastEvaluatedKey")
            if not last or (limit is not None and len(items) >= limit):
                return items if limit is None else items[:limit]
            params["ExclusiveStartKey"] = last

    # -- Tables ------------------------------------------------------------------------------------

    def put(self, table: str, item: Item, *, condition: Condition | None = None) -> None:
        key = _key(item.get("pk"), item.get("sk"))
        expr = _Expression()
        params = expr.params(ConditionExpression=expr.condition(condition))
        self._write(
            "PutItem", table, key["pk"]["S"], key["sk"]["S"], condition, Item=serialize_item(item), **params
        )

    def get(self, table: str, pk: str, sk: str) -> Item | None:
        found = self._call("GetItem", table, Key=_key(pk, sk), ConsistentRead=True).get("Item")
        return deserialize_item(found) if found else None

    def delete(self, table: str, pk: str, sk: str, *, condition: Condition | None = None) -> None:
        expr = _Expression()
        params = expr.params(ConditionExpression=expr.condition(condition))
        self._write("DeleteItem", table, pk, sk, condition, Key=_key(pk, sk), **params)

    def update(
        self,
        table: str,
        pk: str,
        sk: str,
        *,
        set: Mapping[str, Any] | None = None,
        remove: Sequence[str] = (),
        condition: Condition | None = None,
    ) -> None:
        removed = list(dict.fromkeys(remove))
        changes = {k: v for k, v in (set or {}).items() if k not in removed}  # set, then removed
        if {"pk", "sk"} & (changes.keys() | frozenset(removed) | (set or {}).keys()):
            raise ValueError("update cannot set or remove the keys 'pk' and 'sk'")
        if not changes and not removed:
            raise ValueError(
                f"nothing to update: no attribute to change or remove in table {table!r} at {pk!r}/{sk!r}"
            )
        expr = _Expression()
        clauses = []
        if changes:
            clauses.append(
                "SET " + ", ".join(f"{expr.name(k)} = {expr.value(v)}" for k, v in changes.items())
            )
        if removed:
            clauses.append("REMOVE " + ", ".join(expr.name(k) for k in removed))
        params = expr.params(
            UpdateExpression=" ".join(clauses), ConditionExpression=expr.condition(condition)
        )
        self._write("UpdateItem", table, pk, sk, condition, Key=_key(pk, sk), **params)

    def query(
        self,
        table: str,
        pk: str,
        *,
        sk_prefix: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Item]:
        expr = _Expression()
        key_condition = f"{expr.name('pk')} = {expr.value(pk)}"
        if sk_prefix:
            key_condition += f" AND begins_with({expr.name('sk')}, {expr.value(sk_prefix)})"
        return self._pages(
            "Query",
            table,
            limit,
            ConsistentRead=True,
            ScanIndexForward=not descending,
            **expr.params(KeyConditionExpression=key_condition),
        )

    def scan(self, table: str, *, segment: int = 0, total_segments: int = 1) -> Iterator[Item]:
        check_segment(segment, total_segments)
        start: Key | None = None
        while True:
            page = self._scan(table, segment, total_segments, start, None)
            yield from page.items
            if page.next is None:
                return
            start = page.next

    def scan_page(
        self,
        table: str,
        *,
        segment: int = 0,
        total_segments: int = 1,
        start: Key | None = None,
        limit: int = 100,
    ) -> Page:
        check_segment(segment, total_segments)
        if limit < 1:
            raise ValueError(f"limit {limit}: a page holds at least one item")
        return self._scan(table, segment, total_segments, start, limit)

    def _scan(
        self, table: str, segment: int, total_segments: int, start: Key | None, limit: int | None
    ) -> Page:
        params: dict[str, Any] = {"ConsistentRead": True}
        if total_segments > 1:
            params.update(Segment=segment, TotalSegments=total_segments)
        if limit is not None:
            params["Limit"] = limit
        if start is not None:
            params["ExclusiveStartKey"] = _key(str(start["pk"]), str(start["sk"]))
        page = self._call("Scan", table, **params)
        items = [deserialize_item(raw) for raw in page.get("Items", [])]
        return Page(items, _plain_key(page.get("LastEvaluatedKey")))

    def transact(self, writes: Sequence[Write]) -> None:
        check_transaction(writes)
        items: list[dict[str, Any]] = []
        for w in writes:
            expr = _Expression()
            body: dict[str, Any] = {"TableName": self.physical(w.table)}
            if w.kind == "put" and w.item is not None:
                body["Item"] = serialize_item(w.item)
            else:
                body["Key"] = _key(w.pk, w.sk)
            body.update(expr.params(ConditionExpression=expr.condition(w.condition)))
            items.append({{"put": "Put", "delete": "Delete", "check": "ConditionCheck"}[w.kind]: body})
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                for i, reason in enumerate(reasons):
                    if reason.get("Code") == "ConditionalCheckFailed":
                        raise ConditionFailed(
                            f"transaction write {i} ({writes[i].label()}): the stored item does not "
                            "satisfy the condition"
                        ) from exc
                if any(
                    r.get("Code") in THROTTLING_CODES or r.get("Code") == "TransactionConflict"
                    for r in reasons
                ):
                    raise ThrottledError(
                        f"DynamoDB transaction cancelled ({reasons}): back off and try again"
                    ) from exc
            if code in THROTTLING_CODES or code == "TransactionInProgressException":
                raise ThrottledError(f"DynamoDB TransactWriteItems was throttled ({code})") from exc
            tables = ", ".join(sorted({self.physical(w.table) for w in writes}))
            raise DynamoCallError(
                "TransactWriteItems", tables, code, str(error.get("Message", "")), exc.response
            ) from exc
        except BotoCoreError as exc:
            raise DynamoCallError("TransactWriteItems", "", type(exc).__name__, str(exc)) from exc

    def indexes(self, table: str) -> list[IndexInfo]:
        described = self._call("DescribeTable", table).get("Table", {})
        found: list[IndexInfo] = []
        for index in described.get("GlobalSecondaryIndexes", []):
            if index.get("IndexStatus", "ACTIVE") not in QUERYABLE_INDEX_STATES:
                continue
            keys = {k["KeyType"]: str(k["AttributeName"]) for k in index.get("KeySchema", [])}
            found.append(IndexInfo(str(index["IndexName"]), keys["HASH"], keys.get("RANGE")))
        found.sort(key=lambda i: i.name)
        self._indexes[table] = {i.name: i for i in found}
        return found

    def query_index(
        self, table: str, index: str, value: Any, *, limit: int | None = None, descending: bool = False
    ) -> list[Item]:
        found = self._indexes.get(table, {}).get(index) or self._index(table, index)
        expr = _Expression()
        key_condition = f"{expr.name(found.partition_key)} = {expr.value(value)}"
        try:
            return self._pages(
                "Query",
                table,
                limit,
                IndexName=index,
                ScanIndexForward=not descending,
                **expr.params(KeyConditionExpression=key_condition),
            )
        except (DynamoCallError, ConfigError) as exc:
            # a missing index is a ValidationException on AWS, a ResourceNotFoundException on moto
            if isinstance(exc, DynamoCallError) and (
                exc.code != "ValidationException" or "index" not in exc.aws_message.lower()
            ):
                raise
            self._indexes.pop(table, None)  # described before it was dropped?
            self._index(table, index)  # raises if the table or the index is gone
            raise

    def _index(self, table: str, index: str) -> IndexInfo:
        """``index`` of ``table`` as ``DescribeTable`` has it now; ``ConfigError`` if there is none."""
        known = self.indexes(table)
        for info in known:
            if info.name == index:
                return info
        raise ConfigError(
            f"table {table!r} has no index {index!r} (provisioned: "
            f"{', '.join(i.name for i in known) or 'none'}; indexes come from "
            "infra/resources.toml through 'mangaassist deploy infra')"
        )
