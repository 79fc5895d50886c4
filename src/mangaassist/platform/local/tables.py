"""``Tables`` on SQLite (WAL): one file, safe for several threads and processes.

Conditional writes run inside ``BEGIN IMMEDIATE`` so the check and the write are atomic even when
several worker processes share the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from mangaassist.core.errors import ConfigError
from mangaassist.platform.tables import Condition, Item

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

_SEGMENT_SPACE = 1 << 16


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
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if condition is not None:
                    condition.check(self._current(table, pk, sk))
                self._conn.execute(
                    "INSERT OR REPLACE INTO items (tbl, pk, sk, seg, body) VALUES (?, ?, ?, ?, ?)",
                    (table, pk, sk, _segment_of(pk), body),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def get(self, table: str, pk: str, sk: str) -> Item | None:
        with self._lock:
            return self._current(table, pk, sk)

    def delete(self, table: str, pk: str, sk: str, *, condition: Condition | None = None) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if condition is not None:
                    condition.check(self._current(table, pk, sk))
                self._conn.execute("DELETE FROM items WHERE tbl=? AND pk=? AND sk=?", (table, pk, sk))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

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
        if total_segments < 1 or not 0 <= segment < total_segments:
            raise ValueError(f"segment {segment} is not within 0..{total_segments - 1}")
        with self._lock:
            rows = self._conn.execute(
                "SELECT body FROM items WHERE tbl=? AND seg % ? = ? ORDER BY pk, sk",
                (table, total_segments, segment),
            ).fetchall()
        for (body,) in rows:
            yield dict(json.loads(body))
