"""``VectorIndex`` on this machine: one LanceDB table per index version, aliases in SQLite.

Layout under ``root`` (default ``$MANGAASSIST_HOME/kb/index``):

- ``<version>.lance/``: the LanceDB table of a version (Arrow columns: ids, text, kind, vector);
- ``catalog.sqlite3``: ``versions`` (state, model, dimension, rows, size, metadata), ``aliases``
  (one row per alias) and ``alias_moves`` (append-only history, what ``kb rollback`` reads).

LanceDB has no rename, so the alias is ours: moving it is one ``UPDATE`` inside ``BEGIN
IMMEDIATE`` that also checks where it pointed (compare-and-set), so concurrent movers queue and
the loser gets ``AliasConflict``. Readers resolve it with one indexed ``SELECT``.

Search runs in memory over the sealed version (``HybridScorer``): a version is immutable, so it
is read from LanceDB once and cached. We measured LanceDB's own vector and full-text queries at
p95 8 ms for 500 rows and 63 ms for 20,000 rows on this 2-core machine, against well under 1 ms
and about 12 ms in memory (ADR 0004); the chatbot asks on every policy question.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import warnings
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mangaassist.platform.vector import (
    AliasConflict,
    AliasMove,
    HybridScorer,
    IndexRecord,
    IndexVersion,
    SearchHit,
    Vector,
    VersionError,
    VersionState,
)

os.environ.setdefault("LANCE_LOG", "error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    dim INTEGER NOT NULL,
    state TEXT NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS aliases (
    alias TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alias_moves (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    previous TEXT,
    at TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
"""

_COLUMNS = ("chunk_id", "doc_id", "doc_title", "heading", "text", "content_hash", "kind")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class LanceVectorIndex:
    """The local ``VectorIndex``. Safe for several threads and processes."""

    def __init__(self, root: Path, cache_versions: int = 3) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._catalog = root / "catalog.sqlite3"
        self._lock = threading.Lock()
        self._db: Any = None
        self._cache: OrderedDict[str, HybridScorer] = OrderedDict()
        self._cache_size = cache_versions
        with self._conn() as conn:
            conn.executescript(_SCHEMA)

    # -- plumbing ----------------------------------------------------------------------------------

    @contextmanager
    def _conn(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self._catalog, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            if write:
                conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if write:
                    conn.execute("ROLLBACK")
                raise
            if write:
                conn.execute("COMMIT")
        finally:
            conn.close()

    def _lancedb(self) -> Any:
        with self._lock:
            if self._db is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    import lancedb

                self._db = lancedb.connect(str(self.root))
            return self._db

    def _table_path(self, name: str) -> Path:
        return self.root / f"{name}.lance"

    @staticmethod
    def _row(row: sqlite3.Row | tuple[Any, ...]) -> IndexVersion:
        name, model, dim, state, rows, size, created, meta = row
        return IndexVersion(name, model, dim, VersionState(state), rows, created, size, json.loads(meta))

    # -- versions ----------------------------------------------------------------------------------

    def versions(self) -> list[IndexVersion]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT name, model, dim, state, rows, size_bytes, created_at, meta FROM versions "
                "ORDER BY created_at, name"
            ).fetchall()
        return [self._row(r) for r in rows]

    def version(self, name: str) -> IndexVersion | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT name, model, dim, state, rows, size_bytes, created_at, meta FROM versions "
                "WHERE name = ?",
                (name,),
            ).fetchone()
        return self._row(row) if row else None

    def create_version(self, name: str, *, model: str, dim: int, meta: dict[str, Any]) -> IndexVersion:
        existing = self.version(name)
        if existing is not None and existing.state is VersionState.READY:
            raise VersionError(f"index version {name} already exists and is sealed")
        # a leftover of a killed build, or a table without its row: start this version afresh
        shutil.rmtree(self._table_path(name), ignore_errors=True)
        import pyarrow as pa

        schema = pa.schema(
            [pa.field(c, pa.string()) for c in _COLUMNS] + [pa.field("vector", pa.list_(pa.float32(), dim))]
        )
        self._lancedb().create_table(name, schema=schema, mode="create")
        with self._conn(write=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO versions (name, model, dim, state, rows, size_bytes, "
                "created_at, meta) VALUES (?, ?, ?, ?, 0, 0, ?, ?)",
                (name, model, dim, VersionState.BUILDING.value, _now(), json.dumps(meta)),
            )
        created = self.version(name)
        assert created is not None
        return created

    def add(self, name: str, records: Sequence[IndexRecord]) -> None:
        if not records:
            return
        info = self._require(name, VersionState.BUILDING)
        import pyarrow as pa

        matrix = np.stack([np.asarray(r.vector, dtype=np.float32) for r in records])
        if matrix.shape[1] != info.dim:
            raise VersionError(f"{name}: vectors of dimension {matrix.shape[1]}, the version has {info.dim}")
        columns: dict[str, Any] = {c: [getattr(r, c) for r in records] for c in _COLUMNS}
        columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), info.dim)
        self._lancedb().open_table(name).add(pa.table(columns))

    def seal(self, name: str, meta: dict[str, Any]) -> IndexVersion:
        info = self._require(name, VersionState.BUILDING)
        rows = int(self._lancedb().open_table(name).count_rows())
        with self._conn(write=True) as conn:
            conn.execute(
                "UPDATE versions SET state = ?, rows = ?, size_bytes = ?, meta = ? WHERE name = ?",
                (
                    VersionState.READY.value,
                    rows,
                    _dir_size(self._table_path(name)),
                    json.dumps({**info.meta, **meta}),
                    name,
                ),
            )
        sealed = self.version(name)
        assert sealed is not None
        return sealed

    def update_meta(self, name: str, meta: dict[str, Any]) -> None:
        with self._conn(write=True) as conn:
            row = conn.execute("SELECT meta FROM versions WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise VersionError(f"no index version named {name}")
            conn.execute(
                "UPDATE versions SET meta = ? WHERE name = ?",
                (json.dumps({**json.loads(row[0]), **meta}), name),
            )

    def drop(self, name: str) -> None:
        with self._conn(write=True) as conn:
            aliased = conn.execute("SELECT alias FROM aliases WHERE version = ?", (name,)).fetchone()
            if aliased:
                raise VersionError(f"{name} is the target of alias {aliased[0]}; move the alias first")
            conn.execute("DELETE FROM versions WHERE name = ?", (name,))
        with self._lock:
            self._cache.pop(name, None)
        shutil.rmtree(self._table_path(name), ignore_errors=True)

    def _require(self, name: str, state: VersionState) -> IndexVersion:
        info = self.version(name)
        if info is None:
            raise VersionError(f"no index version named {name}")
        if info.state is not state:
            raise VersionError(f"index version {name} is {info.state.value}, expected {state.value}")
        return info

    # -- reading -----------------------------------------------------------------------------------

    def records(self, name: str) -> list[IndexRecord]:
        if self.version(name) is None:
            raise VersionError(f"no index version named {name}")
        table = self._lancedb().open_table(name).to_arrow()
        if table.num_rows == 0:
            return []
        dim = table.schema.field("vector").type.list_size
        matrix = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        cols = {c: table.column(c).to_pylist() for c in _COLUMNS}
        return [
            IndexRecord(
                cols["chunk_id"][i],
                cols["doc_id"][i],
                cols["doc_title"][i],
                cols["heading"][i],
                cols["text"][i],
                cols["content_hash"][i],
                cols["kind"][i],
                matrix[i].astype(np.float32),
            )
            for i in range(table.num_rows)
        ]

    def scorer(self, name: str) -> HybridScorer:
        """The version in memory (cached: versions are immutable once sealed)."""
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None:
                self._cache.move_to_end(name)
                return cached
        self._require(name, VersionState.READY)
        return self._hold(name, self.records(name))

    def remember(
        self, name: str, rows: Sequence[IndexRecord], row_words: Sequence[Collection[str]] | None = None
    ) -> None:
        """Hold a ready version in memory from its rows as ``records(name)`` just returned them (the
        knowledge-base gate has read them for its own checks), instead of reading them again;
        ``row_words``: each row's ``row_keywords``, when the caller has them."""
        with self._lock:
            if name in self._cache:
                return
        self._require(name, VersionState.READY)
        self._hold(name, list(rows), row_words)

    def _hold(
        self, name: str, rows: list[IndexRecord], row_words: Sequence[Collection[str]] | None = None
    ) -> HybridScorer:
        dim = self.version(name).dim if rows == [] else len(rows[0].vector)  # type: ignore[union-attr]
        matrix = np.stack([r.vector for r in rows]) if rows else np.zeros((0, dim), dtype=np.float32)
        scorer = HybridScorer(rows, matrix, row_words)
        with self._lock:
            self._cache[name] = scorer
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return scorer

    def search(
        self, name: str, vector: Vector, text: str, k: int = 10, kind: str | None = None
    ) -> list[SearchHit]:
        return self.scorer(name).search(vector, text, k, kind)

    # -- aliases -----------------------------------------------------------------------------------

    def resolve(self, alias: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute("SELECT version FROM aliases WHERE alias = ?", (alias,)).fetchone()
        return str(row[0]) if row else None

    def move_alias(self, alias: str, version: str, *, expect: str | None, reason: str = "") -> AliasMove:
        at = _now()
        with self._conn(write=True) as conn:
            target = conn.execute("SELECT state FROM versions WHERE name = ?", (version,)).fetchone()
            if target is None:
                raise VersionError(f"no index version named {version}")
            if target[0] != VersionState.READY.value:
                raise VersionError(f"index version {version} is {target[0]}; only a ready version is aliased")
            row = conn.execute("SELECT version FROM aliases WHERE alias = ?", (alias,)).fetchone()
            current = str(row[0]) if row else None
            if current != expect:
                raise AliasConflict(f"alias {alias} points at {current}, not {expect}: someone moved it")
            conn.execute(
                "INSERT INTO aliases (alias, version, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(alias) DO UPDATE SET "
                "version = excluded.version, updated_at = excluded.updated_at",
                (alias, version, at),
            )
            conn.execute(
                "INSERT INTO alias_moves (alias, version, previous, at, reason) VALUES (?, ?, ?, ?, ?)",
                (alias, version, current, at, reason),
            )
        return AliasMove(alias, version, current, at, reason)

    def alias_history(self, alias: str) -> list[AliasMove]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT alias, version, previous, at, reason FROM alias_moves WHERE alias = ? ORDER BY seq",
                (alias,),
            ).fetchall()
        return [AliasMove(*r) for r in rows]


def local_vector_index(home: Path) -> LanceVectorIndex:
    """The local provider's index store under a state directory (``MANGAASSIST_HOME``)."""
    return LanceVectorIndex(home / "kb" / "index")
