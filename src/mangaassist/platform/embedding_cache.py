"""Chunk embeddings on disk, keyed by (embedding model id, content hash), in SQLite.

An unchanged chunk is never embedded twice by the same model: the knowledge-base pipeline looks
here before it embeds, and writes each batch as soon as it is embedded, so a build killed halfway
keeps the work it finished (the next build resumes from the cache).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from mangaassist.platform.embeddings import Vector


def connect_wal(path: Path) -> sqlite3.Connection:
    """A connection to a cache file beside a build's other state: write-ahead log (readers never
    wait for a writer), 30 s for a writer to wait its turn."""
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


class ChunkEmbeddingCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, hash TEXT NOT NULL, "
                "dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, hash)) WITHOUT ROWID"
            )

    def _conn(self) -> sqlite3.Connection:
        return connect_wal(self.path)

    def get_many(self, model: str, hashes: Iterable[str]) -> dict[str, Vector]:
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, Vector] = {}
        conn = self._conn()
        try:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                for h, dim, blob in conn.execute(
                    f"SELECT hash, dim, vector FROM embeddings WHERE model = ? AND hash IN ({marks})",  # noqa: S608
                    (model, *part),
                ):
                    found[h] = np.frombuffer(blob, dtype=np.float32, count=dim).copy()
        finally:
            conn.close()
        return found

    def put_many(self, model: str, vectors: Mapping[str, Vector]) -> None:
        conn = self._conn()
        try:
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO embeddings (model, hash, dim, vector) VALUES (?, ?, ?, ?)",
                    [
                        (model, h, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes())
                        for h, v in vectors.items()
                    ],
                )
        finally:
            conn.close()

    def count(self, model: str | None = None) -> int:
        conn = self._conn()
        try:
            if model is None:
                return int(conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            return int(
                conn.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,)).fetchone()[0]
            )
        finally:
            conn.close()
