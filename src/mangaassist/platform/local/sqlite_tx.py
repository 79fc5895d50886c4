"""One write transaction on a SQLite connection of the local providers.

``BEGIN IMMEDIATE`` takes the write lock up front, so a read-then-write (a conditional put, a pointer
move) can never fail half-way because another process wrote in between; ``COMMIT`` at the end,
``ROLLBACK`` on any exception. The connection is shared by a provider's threads: ``lock`` (held for
the whole transaction) keeps two of them from interleaving on it. Used by the tables, the config
server's database and the static site's pointers.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate(
    conn: sqlite3.Connection, lock: threading.Lock | threading.RLock
) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on ``conn`` with ``lock`` held; ``ROLLBACK`` if the block
    (or the commit) raises."""
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
