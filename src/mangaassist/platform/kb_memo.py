"""Each knowledge-base source file's chunks, on disk, for the next build in another process.

One SQLite file beside the embedding cache (``<home>/kb/memo.sqlite3``). An entry is keyed by (the
chunking code's identity, the file's role, the sha256 of its bytes, the chunk settings): a file's
chunks are a function of exactly those, so a daily incremental build in a new process parses and
chunks only the files that changed instead of every file again. The code identity is a digest of
the source files that chunk (``code_identity``), so a new release of that code never reuses what
an older one computed. Values are JSON the caller makes and reads. Losing the file loses nothing
but time: a missing or unreadable entry is computed again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mangaassist.platform.embedding_cache import connect_wal

SourceKey = tuple[str, str, int, int]
"""(role, sha256 of the file's bytes, chunk words, overlap)."""


def code_identity(*modules: Any) -> str:
    """A digest of the source files of ``modules`` (module objects or file paths)."""
    h = hashlib.sha256()
    for module in modules:
        path = Path(module if isinstance(module, str | Path) else module.__file__)
        h.update(path.name.encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


class ChunkMemo:
    """Chunks per source file, on disk (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS source_chunks (code TEXT NOT NULL, role TEXT NOT NULL, "
                "sha TEXT NOT NULL, words INTEGER NOT NULL, overlap INTEGER NOT NULL, "
                "value TEXT NOT NULL, PRIMARY KEY (code, role, sha, words, overlap)) WITHOUT ROWID"
            )

    def _conn(self) -> sqlite3.Connection:
        return connect_wal(self.path)

    def keys(self, code: str) -> set[SourceKey]:
        """The files remembered for ``code``."""
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT role, sha, words, overlap FROM source_chunks WHERE code = ?", (code,)
            ).fetchall()
        finally:
            conn.close()
        return {(role, sha, int(words), int(overlap)) for role, sha, words, overlap in rows}

    def sources(self, code: str, keys: Iterable[SourceKey]) -> dict[SourceKey, Any]:
        """The remembered values of ``keys`` (JSON-decoded); missing or unreadable ones are left out."""
        wanted = set(keys)
        found: dict[SourceKey, Any] = {}
        if not wanted:
            return found
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT role, sha, words, overlap, value FROM source_chunks WHERE code = ?", (code,)
            ).fetchall()
        finally:
            conn.close()
        for role, sha, words, overlap, value in rows:
            key = (role, sha, int(words), int(overlap))
            if key in wanted:
                try:
                    found[key] = json.loads(value)
                except ValueError:
                    continue  # computed again by the caller
        return found

    def update(self, code: str, put: Mapping[SourceKey, Any], drop: Iterable[SourceKey]) -> None:
        """Remember ``put``, forget ``drop`` and every entry of other code, in one transaction: the
        caller keeps the files of its last chunking only, so the memo does not grow with every
        edit."""
        conn = self._conn()
        try:
            with conn:
                conn.execute("DELETE FROM source_chunks WHERE code != ?", (code,))
                conn.executemany(
                    "DELETE FROM source_chunks WHERE code = ? AND role = ? AND sha = ? AND words = ? "
                    "AND overlap = ?",
                    [(code, *key) for key in drop],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO source_chunks (code, role, sha, words, overlap, value) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(code, *key, json.dumps(value, separators=(",", ":"))) for key, value in put.items()],
                )
        finally:
            conn.close()
