"""The ``Tables`` protocol: items keyed by partition and sort key (DynamoDB's model).

Implemented by ``platform.local.tables.SqliteTables`` (one SQLite file) and
``platform.aws.tables_dynamodb.DynamoTables`` (DynamoDB). The chatbot keeps sessions, orders and
hand-off tickets behind it; CD-07's migrations (``delivery.migrations``) reshape them through it.

What both providers guarantee:

* a write with a ``Condition`` checks the stored item and writes atomically (DynamoDB's condition
  expressions): the tool for never overwriting a newer write and never resurrecting a deleted item;
* ``update`` sets and removes attributes of one item, leaving the others as they are;
* ``scan_page`` reads one segment of a parallel scan a page at a time: a page's ``next`` key, given
  back as ``start``, continues after it, so a scan can be checkpointed after every page and resumed
  (DynamoDB's ``LastEvaluatedKey``);
* ``query_index`` reads a global secondary index that CD-02 provisioned (``infra/resources.toml``):
  sparse (items without the index's partition key attribute are not in it), ordered by its sort key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mangaassist.core.errors import MangaAssistError
from mangaassist.core.migrations import Rules

Item = dict[str, Any]
"""A JSON-serialisable mapping that holds at least the string keys ``pk`` and ``sk``."""


class ConditionFailed(MangaAssistError):
    """A conditional write found the item in a state other than the one required."""


@dataclass(frozen=True)
class Condition:
    """What must hold of the stored item for a write to go ahead.

    ``exists``: True (item must exist), False (must not exist), None (either).
    ``equals``: attribute values the stored item must have (implies it exists).
    ``absent``: attributes the stored item must not have (an absent item has none).
    """

    exists: bool | None = None
    equals: tuple[tuple[str, Any], ...] = ()
    absent: tuple[str, ...] = ()

    @classmethod
    def not_exists(cls) -> Condition:
        return cls(exists=False)

    @classmethod
    def attr_equals(cls, **values: Any) -> Condition:
        return cls(exists=True, equals=tuple(sorted(values.items())))

    @classmethod
    def unchanged(cls, item: Item, attributes: Sequence[str]) -> Condition:
        """The item still exists and each of ``attributes`` is as in ``item`` (present with the
        same value, or still absent): an optimistic-concurrency check on what a writer read."""
        equals = tuple(sorted((a, item[a]) for a in attributes if a in item))
        absent = tuple(sorted(a for a in attributes if a not in item))
        return cls(exists=True, equals=equals, absent=absent)

    def check(self, current: Item | None) -> None:
        """Raise ``ConditionFailed`` unless ``current`` (the stored item or None) satisfies this."""
        if self.exists is False and current is not None:
            raise ConditionFailed(f"item {current['pk']!r}/{current['sk']!r} already exists")
        if self.exists and current is None:
            raise ConditionFailed("item does not exist")
        for key, want in self.equals:
            got = current.get(key) if current is not None else None
            if current is None or key not in current or got != want:
                raise ConditionFailed(f"attribute {key!r} is {got!r}, expected {want!r}")
        for key in self.absent:
            if current is not None and key in current:
                raise ConditionFailed(f"attribute {key!r} is present ({current[key]!r}), expected absent")


Key = dict[str, str]
"""Where a scan page ended: ``{"pk": ..., "sk": ...}`` (JSON, so it can be checkpointed)."""


@dataclass(frozen=True)
class Page:
    """One page of a segment's scan: its items, and the key to start the next page from (None:
    the segment is done)."""

    items: list[Item] = field(default_factory=list)
    next: Key | None = None


@dataclass(frozen=True)
class IndexInfo:
    """A global secondary index as the provider has it."""

    name: str
    partition_key: str
    sort_key: str | None = None


@dataclass(frozen=True)
class Write:
    """One write of a transaction (``Tables.transact``): ``put`` an item, ``delete`` or ``check``
    the item at (pk, sk), each with an optional condition on the stored item."""

    kind: str
    table: str
    pk: str
    sk: str
    item: Item | None = None
    condition: Condition | None = None

    @classmethod
    def put(cls, table: str, item: Item, condition: Condition | None = None) -> Write:
        return cls("put", table, str(item["pk"]), str(item["sk"]), dict(item), condition)

    @classmethod
    def delete(cls, table: str, pk: str, sk: str, condition: Condition | None = None) -> Write:
        return cls("delete", table, pk, sk, None, condition)

    @classmethod
    def check(cls, table: str, pk: str, sk: str, condition: Condition) -> Write:
        return cls("check", table, pk, sk, None, condition)

    def label(self) -> str:
        return f"{self.kind} {self.table} {self.pk!r}/{self.sk!r}"


def check_transaction(writes: Sequence[Write]) -> None:
    """The rules DynamoDB sets on a transaction, for every provider: 1 to 100 writes, one per item,
    each a put, delete or check (a check with a condition)."""
    if not 1 <= len(writes) <= 100:
        raise ValueError(f"a transaction holds 1 to 100 writes, got {len(writes)}")
    seen: set[tuple[str, str, str]] = set()
    for w in writes:
        if w.kind not in ("put", "delete", "check") or (w.kind == "check" and w.condition is None):
            raise ValueError(f"{w.label()}: a write is a put, a delete, or a check with a condition")
        key = (w.table, w.pk, w.sk)
        if key in seen:
            raise ValueError(f"{w.label()}: a transaction writes each item once")
        seen.add(key)


def check_segment(segment: int, total_segments: int) -> None:
    """A segment of a parallel scan, checked the same way by every provider."""
    if total_segments < 1 or not 0 <= segment < total_segments:
        raise ValueError(f"segment {segment} is not within 0..{total_segments - 1}")


class ThrottledError(MangaAssistError):
    """The provider refused a request for capacity (DynamoDB's throughput or request-rate limits):
    back off and try again."""


class Tables(Protocol):
    """Items in named tables, each addressed by (pk, sk)."""

    def put(self, table: str, item: Item, *, condition: Condition | None = None) -> None:
        """Write ``item`` whole. With ``condition``, atomically check the stored item first."""

    def get(self, table: str, pk: str, sk: str) -> Item | None:
        """The item at (pk, sk), or None."""

    def delete(self, table: str, pk: str, sk: str, *, condition: Condition | None = None) -> None:
        """Remove the item at (pk, sk); no error if it is absent and there is no condition."""

    def query(
        self,
        table: str,
        pk: str,
        *,
        sk_prefix: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Item]:
        """Items of one partition ordered by sort key, optionally only those whose sk starts so."""

    def scan(self, table: str, *, segment: int = 0, total_segments: int = 1) -> Iterator[Item]:
        """Every item of ``table`` in segment ``segment`` of ``total_segments``.

        Segments split the table by partition key; scanning all segments (in parallel or not)
        yields each item exactly once.
        """

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
        """Set and remove attributes of the item at (pk, sk), keeping the others (an absent item is
        created, as DynamoDB's ``UpdateItem`` does, unless ``condition`` requires it to exist).
        The keys themselves cannot be set or removed."""

    def scan_page(
        self,
        table: str,
        *,
        segment: int = 0,
        total_segments: int = 1,
        start: Key | None = None,
        limit: int = 100,
    ) -> Page:
        """At most ``limit`` items of one segment, after ``start`` (the ``next`` of the page before)."""

    def query_index(
        self, table: str, index: str, value: Any, *, limit: int | None = None, descending: bool = False
    ) -> list[Item]:
        """Items whose ``index`` partition key attribute equals ``value``, by its sort key."""

    def indexes(self, table: str) -> list[IndexInfo]:
        """The global secondary indexes ``table`` has now (provisioned by CD-02)."""

    def transact(self, writes: Sequence[Write]) -> None:
        """All of ``writes`` or none (DynamoDB's ``TransactWriteItems``, at most 100, one per item):
        every condition is checked against the items as they were before; ``ConditionFailed``
        names the write whose condition failed, and nothing is written."""


class ShapedTables:
    """``Tables`` whose writes follow the live migration rules (``core.migrations.Rules``): every
    item written to a table is shaped by the rules of that table first, so the application writes
    both shapes while CD-07 migrates (the dual write). ``rules`` is asked at every write (the
    runtime config's ``schema`` profile, which CD-07 publishes). Reads pass through.

    ``update`` of an item some rule shapes reads the item, applies the change, shapes it and writes
    it back on the condition that what it read is unchanged (retried on a conflict): a derived
    value can only be computed from the whole item.

    A table with a ``change_key`` rule (``Rule.move``) is written with its copy in one transaction:
    the item (on the condition that it is as read), the copy under its new keys, and the delete of
    the copy under its old new keys when a write moves it. Once contracted, only the copy is
    written (the application then reads and writes the new table itself: ``Rules.moved_to``)."""

    ATTEMPTS = 20

    def __init__(self, inner: Tables, rules: Callable[[], Rules]) -> None:
        self.inner = inner
        self.rules = rules

    def put(self, table: str, item: Item, *, condition: Condition | None = None) -> None:
        rules = self.rules()
        if rules.moves(table):
            self._write_moved(
                rules, table, str(item["pk"]), str(item["sk"]), lambda _current: dict(item), condition
            )
            return
        self.inner.put(table, rules.shape(table, dict(item)), condition=condition)

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
        rules = self.rules()
        if not rules.of(table):
            self.inner.update(table, pk, sk, set=set, remove=remove, condition=condition)
            return

        def change(current: Item | None) -> Item:
            item = dict(current or {"pk": pk, "sk": sk})
            item.update(set or {})
            for name in remove:
                item.pop(name, None)
            return item

        if rules.moves(table):
            self._write_moved(rules, table, pk, sk, change, condition)
            return
        for _ in range(self.ATTEMPTS):
            current = self.inner.get(table, pk, sk)
            if condition is not None:
                condition.check(current)
            guard = Condition.not_exists() if current is None else Condition.unchanged(current, list(current))
            try:
                self.inner.put(table, rules.shape(table, change(current)), condition=guard)
                return
            except ConditionFailed:
                continue  # someone wrote it meanwhile: read again
        raise ConditionFailed(f"{table} {pk!r}/{sk!r}: still changing after {self.ATTEMPTS} attempts")

    def delete(self, table: str, pk: str, sk: str, *, condition: Condition | None = None) -> None:
        rules = self.rules()
        if rules.moves(table):
            self._write_moved(rules, table, pk, sk, lambda _current: None, condition)
            return
        self.inner.delete(table, pk, sk, condition=condition)

    def _write_moved(
        self,
        rules: Rules,
        table: str,
        pk: str,
        sk: str,
        change: Callable[[Item | None], Item | None],
        condition: Condition | None,
    ) -> None:
        """Write (``change`` gives the new item; None deletes it) the item and its copies at once."""
        moves = rules.moves(table)
        contracted = any(r.phase == "contracted" for r in moves)
        for _ in range(self.ATTEMPTS):
            current = self.inner.get(table, pk, sk)
            if condition is not None:
                condition.check(current)
            new = change(current)
            shaped = rules.shape(table, new) if new is not None else None
            guard = Condition.not_exists() if current is None else Condition.unchanged(current, list(current))
            writes: list[Write] = []
            if not contracted:
                if shaped is not None:
                    writes.append(Write.put(table, shaped, guard))
                elif current is not None:
                    writes.append(Write.delete(table, pk, sk, guard))
            for rule in moves:
                assert rule.move is not None
                before = rule.move.key(current) if current is not None else None
                after = rule.move.moved(shaped) if shaped is not None else None
                if before is not None and (after is None or (after["pk"], after["sk"]) != before):
                    writes.append(Write.delete(rule.move.table, *before))
                if after is not None:
                    writes.append(Write.put(rule.move.table, after))
            if not writes:
                return
            try:
                self.inner.transact(writes)
                return
            except ConditionFailed:
                continue  # the item changed since it was read: read it again
        raise ConditionFailed(f"{table} {pk!r}/{sk!r}: still changing after {self.ATTEMPTS} attempts")

    def get(self, table: str, pk: str, sk: str) -> Item | None:
        return self.inner.get(table, pk, sk)

    def query(
        self,
        table: str,
        pk: str,
        *,
        sk_prefix: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Item]:
        return self.inner.query(table, pk, sk_prefix=sk_prefix, limit=limit, descending=descending)

    def scan(self, table: str, *, segment: int = 0, total_segments: int = 1) -> Iterator[Item]:
        return self.inner.scan(table, segment=segment, total_segments=total_segments)

    def scan_page(
        self,
        table: str,
        *,
        segment: int = 0,
        total_segments: int = 1,
        start: Key | None = None,
        limit: int = 100,
    ) -> Page:
        return self.inner.scan_page(
            table, segment=segment, total_segments=total_segments, start=start, limit=limit
        )

    def query_index(
        self, table: str, index: str, value: Any, *, limit: int | None = None, descending: bool = False
    ) -> list[Item]:
        return self.inner.query_index(table, index, value, limit=limit, descending=descending)

    def indexes(self, table: str) -> list[IndexInfo]:
        return self.inner.indexes(table)

    def transact(self, writes: Sequence[Write]) -> None:
        """Passed through as they are: a transaction's writes are the caller's exact items."""
        self.inner.transact(writes)
