"""``Tables`` on SQLite (WAL): one file, safe for several threads and processes.

Conditional writes run inside ``BEGIN IMMEDIATE`` so the check and the write are atomic even when
several worker processes share the file.

Global secondary indexes are what CD-02's ``LocalProvisioner`` made of ``infra/resources.toml``:
the table's row in ``declared_tables`` (its spec) and a partial SQLite index on the key attributes'
JSON values (``gsi__TABLE__INDEX``); ``query_index`` reads through it.

A segment's scan pages through the primary key (``(pk, sk) > start``), so a page costs about
``limit * total_segments`` rows read whatever its position: resuming from a checkpoint does not
re-read what came before.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.platform.local.sqlite_tx import immediate
from mangaassist.platform.tables import (
    Condition,
    ConditionFailed,
    IndexInfo,
    Item,
    Key,
    Page,
    Write,
    check_segment,
    check_transaction,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    seg INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tbl, pk, sk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_seg ON items (tbl, seg);
"""

CATALOG = "CREATE TABLE IF NOT EXISTS declared_tables (name TEXT PRIMARY KEY, spec TEXT NOT NULL)"
"""What CD-02 provisioned: one row per declared table, its spec (keys, indexes) as JSON."""

_SEGMENT_SPACE = 1 << 16


def index_name(table: str, index: str) -> str:
    """The SQLite index that stands for global secondary index ``index`` of ``table``."""
    return f"gsi__{table}__{index}"


def json_path(attribute: str) -> str:
    """The SQL expression of an item's attribute (names are letters, digits and underscores,
    checked by ``core.resources`` and ``delivery.migrations``)."""
    if not attribute.replace("_", "").isalnum():
        raise ValueError(f"attribute {attribute!r}: letters, digits and underscores only")
    return f"json_extract(body, '$.{attribute}')"


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _segment_of(pk: str) -> int:
    return zlib.crc32(pk.encode()) % _SEGMENT_SPACE


def _escape_like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SqliteTables:
    """Implements ``platform.tables.Tables`` on one SQLite file (``:memory:`` works for tests)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=10.0, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the tables database {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @staticmethod
    def _key(item: Item) -> tuple[str, str]:
        pk, sk = item.get("pk"), item.get("sk")
        if not isinstance(pk, str) or not isinstance(sk, str) or not pk:
            raise ValueError(f"an item needs non-empty string 'pk' and string 'sk', got {pk!r}, {sk!r}")
        return pk, sk

    def _current(self, table: str, pk: str, sk: str) -> Item | None:
        row = self._conn.execute(
            "SELECT body FROM items WHERE tbl=? AND pk=? AND sk=?", (table, pk, sk)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put(self, table: str, item: Item, *, condition: Condition | None = None) -> None:
        pk, sk = self._key(item)
        body = json.dumps(item, separators=(",", ":"), sort_keys=True)
        with immediate(self._conn, self._lock):
            if condition is not None:
                condition.check(self._current(table, pk, sk))
            self._conn.execute(
                "INSERT OR REPLACE INTO items (tbl, pk, sk, seg, body) VALUES (?, ?, ?, ?, ?)",
                (table, pk, sk, _segment_of(pk), body),
            )

    def get(self, table: str, pk: str, sk: str) -> Item | None:
        with self._lock:
            return self._current(table, pk, sk)

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
        changes = dict(set or {})
        if {"pk", "sk"} & (changes.keys() | frozenset(remove)):
            raise ValueError("update cannot set or remove the keys 'pk' and 'sk'")
        with immediate(self._conn, self._lock):
            current = self._current(table, pk, sk)
            if condition is not None:
                condition.check(current)
            item = dict(current or {"pk": pk, "sk": sk})
            item.update(changes)
            for name in remove:
                item.pop(name, None)
            self._conn.execute(
                "INSERT OR REPLACE INTO items (tbl, pk, sk, seg, body) VALUES (?, ?, ?, ?, ?)",
                (table, pk, sk, _segment_of(pk), json.dumps(item, separators=(",", ":"), sort_keys=True)),
            )

    def delete(self, table: str, pk: str, sk: str, *, condition: Condition | None = None) -> None:
        with immediate(self._conn, self._lock):
            if condition is not None:
                condition.check(self._current(table, pk, sk))
            self._conn.execute("DELETE FROM items WHERE tbl=? AND pk=? AND sk=?", (table, pk, sk))

    def query(
        self,
        table: str,
        pk: str,
        *,
        sk_prefix: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Item]:
        sql = "SELECT body FROM items WHERE tbl=? AND pk=?"
        args: list[object] = [table, pk]
        if sk_prefix:
            sql += " AND sk LIKE ? ESCAPE '\\'"
            args.append(_escape_like(sk_prefix) + "%")
        sql += " ORDER BY sk " + ("DESC" if descending else "ASC")
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [dict(json.loads(r[0])) for r in rows]

    def scan(self, table: str, *, segment: int = 0, total_segments: int = 1) -> Iterator[Item]:
        check_segment(segment, total_segments)
        with self._lock:
            rows = self._conn.execute(
                "SELECT body FROM items WHERE tbl=? AND seg % ? = ? ORDER BY pk, sk",
                (table, total_segments, segment),
            ).fetchall()
        for (body,) in rows:
            yield dict(json.loads(body))

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
        sql = "SELECT body FROM items WHERE tbl=? AND seg % ? = ?"
        args: list[object] = [table, total_segments, segment]
        if start is not None:
            sql += " AND (pk, sk) > (?, ?)"
            args += [str(start["pk"]), str(start["sk"])]
        sql += " ORDER BY pk, sk LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        items = [dict(json.loads(body)) for (body,) in rows]
        last = items[-1] if len(items) == limit else None
        return Page(items, {"pk": last["pk"], "sk": last["sk"]} if last else None)

    def transact(self, writes: Sequence[Write]) -> None:
        check_transaction(writes)
        with immediate(self._conn, self._lock):
            for i, w in enumerate(writes):
                if w.condition is not None:
                    try:
                        w.condition.check(self._current(w.table, w.pk, w.sk))
                    except ConditionFailed as failed:
                        raise ConditionFailed(f"transaction write {i} ({w.label()}): {failed}") from None
            for w in writes:
                if w.kind == "put" and w.item is not None:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO items (tbl, pk, sk, seg, body) VALUES (?, ?, ?, ?, ?)",
                        (
                            w.table,
                            w.pk,
                            w.sk,
                            _segment_of(w.pk),
                            json.dumps(w.item, separators=(",", ":"), sort_keys=True),
                        ),
                    )
                elif w.kind == "delete":
                    self._conn.execute(
                        "DELETE FROM items WHERE tbl=? AND pk=? AND sk=?", (w.table, w.pk, w.sk)
                    )

    def indexes(self, table: str) -> list[IndexInfo]:
        with self._lock:
            self._conn.execute(CATALOG)
            row = self._conn.execute("SELECT spec FROM declared_tables WHERE name = ?", (table,)).fetchone()
            present = {
                r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
        if row is None:
            return []
        spec = json.loads(row[0])
        return [
            IndexInfo(str(i["name"]), str(i["partition_key"]), i.get("sort_key"))
            for i in spec.get("indexes", [])
            if index_name(table, str(i["name"])) in present
        ]

    def query_index(
        self, table: str, index: str, value: Any, *, limit: int | None = None, descending: bool = False
    ) -> list[Item]:
        found = {i.name: i for i in self.indexes(table)}.get(index)
        if found is None:
            raise ConfigError(
                f"table {table!r} has no index {index!r} (provisioned: "
                f"{', '.join(sorted(i.name for i in self.indexes(table))) or 'none'}; "
                "indexes come from infra/resources.toml through 'mangaassist deploy infra')"
            )
        # the table's name is a literal so that SQLite can use the partial index (WHERE tbl = 'T')
        # (attribute names are checked by json_path, the table's name is quoted by sql_literal)
        key = json_path(found.partition_key)
        sql = f"SELECT body FROM items WHERE tbl = {sql_literal(table)} AND {key} = ?"  # noqa: S608
        if found.sort_key:
            sql += f" ORDER BY {json_path(found.sort_key)} " + ("DESC" if descending else "ASC")
        args: list[object] = [value]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [dict(json.loads(r[0])) for r in rows]
