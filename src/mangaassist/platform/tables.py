"""The ``Tables`` protocol: items keyed by partition and sort key (DynamoDB's model).

Implemented by ``platform.local.tables.SqliteTables`` here, by DynamoDB in production.
The chatbot keeps sessions, orders and hand-off tickets behind it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from mangaassist.core.errors import MangaAssistError

Item = dict[str, Any]
"""A JSON-serialisable mapping that holds at least the string keys ``pk`` and ``sk``."""


class ConditionFailed(MangaAssistError):
    """A conditional write found the item in a state other than the one required."""


@dataclass(frozen=True)
class Condition:
    """What must hold of the stored item for a write to go ahead.

    ``exists``: True (item must exist), False (must not exist), None (either).
    ``equals``: attribute values the stored item must have (implies it exists).
    """

    exists: bool | None = None
    equals: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def not_exists(cls) -> Condition:
        return cls(exists=False)

    @classmethod
    def attr_equals(cls, **values: Any) -> Condition:
        return cls(exists=True, equals=tuple(sorted(values.items())))

    def check(self, current: Item | None) -> None:
        """Raise ``ConditionFailed`` unless ``current`` (the stored item or None) satisfies this."""
        if self.exists is False and current is not None:
            raise ConditionFailed(f"item {current['pk']!r}/{current['sk']!r} already exists")
        if self.exists and current is None:
            raise ConditionFailed("item does not exist")
        for key, want in self.equals:
            got = current.get(key) if current is not None else None
            if got != want:
                raise ConditionFailed(f"attribute {key!r} is {got!r}, expected {want!r}")


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
