"""The audit log: append-only and hash-chained, so any edited, deleted or reordered entry shows.

Each entry stores the hash of the one before it (``prev_hash``) and its own hash, the sha256 of its
sequence number, time, run, actor, kind and detail chained to ``prev_hash``. A one-row head table
holds the last sequence number and hash, so deleting the newest entries shows too.

Entries are appended inside the same transaction as the change they describe (a step result, a
verdict with its numbers, an approval, an override, a rollback), by ``runs``, ``locks`` and
``approvals``. ``mangaassist audit`` lists them; ``mangaassist audit verify`` calls ``verify``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mangaassist.delivery.engine.clock import iso
from mangaassist.delivery.engine.state import StateStore, audit_head, audit_log, dumps, loads

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    run_id: str | None
    actor: str
    kind: str
    """What happened, dotted: ``run.started``, ``step.done``, ``approval.granted``, ``policy.override``..."""
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "run_id": self.run_id,
            "actor": self.actor,
            "kind": self.kind,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class Problem:
    """One way the stored log differs from what was appended."""

    seq: int | None
    message: str


def entry_hash(
    prev_hash: str, seq: int, at: str, run_id: str | None, actor: str, kind: str, detail: str
) -> str:
    body = dumps({"seq": seq, "at": at, "run": run_id, "actor": actor, "kind": kind, "detail": detail})
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def append(
    store: StateStore,
    conn: Connection,
    *,
    at: datetime,
    kind: str,
    actor: str,
    run_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry inside the caller's transaction (it commits with the change it records)."""
    head_q = sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
    if not store.is_sqlite:
        head_q = head_q.with_for_update()  # one appender at a time keeps the chain linear
    head = conn.execute(head_q).one()
    seq = int(head.seq) + 1
    when = iso(at)
    body = dumps(detail or {})
    digest = entry_hash(head.hash, seq, when, run_id, actor, kind, body)
    conn.execute(
        audit_log.insert().values(
            seq=seq,
            at=when,
            run_id=run_id,
            actor=actor,
            kind=kind,
            detail=body,
            prev_hash=head.hash,
            hash=digest,
        )
    )
    conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=seq, hash=digest))
    return AuditEntry(seq, when, run_id, actor, kind, detail or {}, head.hash, digest)


@dataclass(frozen=True)
class Head:
    """The one-row head: the sequence number and hash of the last entry appended."""

    seq: int
    hash: str


def head(conn: Connection) -> Head:
    row = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
    return Head(int(row.seq), str(row.hash))


def entries(conn: Connection, run_id: str | None = None) -> list[AuditEntry]:
    query = sa.select(audit_log).order_by(audit_log.c.seq)
    if run_id is not None:
        query = query.where(audit_log.c.run_id == run_id)
    return [
        AuditEntry(
            seq=row["seq"],
            at=row["at"],
            run_id=row["run_id"],
            actor=row["actor"],
            kind=row["kind"],
            detail=loads(row["detail"]),
            prev_hash=row["prev_hash"],
            hash=row["hash"],
        )
        for row in conn.execute(query).mappings()
    ]


def verify(conn: Connection) -> tuple[int, list[Problem]]:
    """Walk the whole chain; return how many entries were checked and every problem found."""
    problems: list[Problem] = []
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for row in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).mappings():
        count += 1
        seq = int(row["seq"])
        if seq != expected_seq:
            problems.append(Problem(seq, f"entries {expected_seq}..{seq - 1} are missing (deleted)"))
        if row["prev_hash"] != prev_hash:
            problems.append(
                Problem(seq, "does not chain to the entry before it (deleted or reordered entries)")
            )
        recomputed = entry_hash(
            row["prev_hash"], seq, row["at"], row["run_id"], row["actor"], row["kind"], row["detail"]
        )
        if recomputed != row["hash"]:
            problems.append(Problem(seq, "content does not match its hash (edited)"))
        prev_hash, expected_seq = row["hash"], seq + 1
    head = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
    if int(head.seq) != expected_seq - 1 or head.hash != prev_hash:
        problems.append(
            Problem(
                None,
                f"the log ends at entry {expected_seq - 1} but {head.seq} were appended "
                "(newest entries deleted, or the head was edited)",
            )
        )
    return count, problems
