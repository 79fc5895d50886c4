"""One active run per (environment, target): a lock row owned by the run, and a lease owned by its process.

The lock (``engine_locks``) belongs to a run from its start to its final state. The lease
(``engine_runs.owner`` + ``lease_expires_at``) says which process drives the run; the process renews
it at every transition and from a ``Heartbeat`` thread while a step is long or waiting.

- A second run for the same (environment, target) fails at once with ``LockHeld``, which names the
  holding run, who started it and when.
- When the holder's lease has expired (its process died and nobody resumed it), a new run takes the
  lock over: the old run is marked ABORTED ("superseded") and that is audited.
- ``runs resume`` takes over the lease of an interrupted run (expired, or its PID gone on this host).

Fencing: each time a process takes the lease (``start``, ``take``) the run gets a new
``lease_token``. ``renew`` succeeds only for the same owner *and* token, inside the caller's
transaction, so a process whose lease was taken over (superseded by a new run, resumed or aborted by
another process, even another executor in the same process) gets ``LeaseLost`` at its next write and
before its next effect is applied (``Executor`` renews in the transaction that reads the marker).

Called by ``runs`` (the executor) only.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mangaassist.delivery.engine import audit
from mangaassist.delivery.engine.clock import Clock, iso, parse_iso
from mangaassist.delivery.engine.errors import LeaseLost, LockHeld, LockHolder
from mangaassist.delivery.engine.model import RunState, StepStatus
from mangaassist.delivery.engine.state import StateStore, locks, runs, steps, this_host


@dataclass(frozen=True)
class Owner:
    """The process driving a run: what ``runs list`` shows and what a lease names."""

    pid: int
    host: str

    @classmethod
    def me(cls) -> Owner:
        return cls(pid=os.getpid(), host=this_host())

    @property
    def label(self) -> str:
        return f"{self.pid}@{self.host}"


def holder(store: StateStore, conn: Connection, environment: str, target: str) -> LockHolder | None:
    query = (
        sa.select(
            locks.c.run_id, locks.c.requester, locks.c.acquired_at, runs.c.lease_expires_at, runs.c.state
        )
        .select_from(locks.join(runs, runs.c.id == locks.c.run_id))
        .where(locks.c.environment == environment, locks.c.target == target)
    )
    if not store.is_sqlite:
        query = query.with_for_update(of=locks)
    row = conn.execute(query).first()
    if row is None:
        return None
    return LockHolder(environment, target, row.run_id, row.requester, row.acquired_at, row.lease_expires_at)


def acquire(
    store: StateStore,
    conn: Connection,
    *,
    environment: str,
    target: str,
    run_id: str,
    requester: str,
    now: datetime,
) -> None:
    """Take the lock for ``run_id`` inside the caller's transaction, or raise ``LockHeld``."""
    current = holder(store, conn, environment, target)
    if current is not None:
        state = conn.execute(sa.select(runs.c.state).where(runs.c.id == current.run_id)).scalar_one()
        expired = current.lease_expires_at is None or parse_iso(current.lease_expires_at) <= now
        if not RunState(state).final and not expired:
            raise LockHeld(current)
        if not RunState(state).final:
            _supersede(store, conn, current, run_id, now)
        conn.execute(locks.delete().where(locks.c.environment == environment, locks.c.target == target))
    try:
        with conn.begin_nested():
            conn.execute(
                locks.insert().values(
                    environment=environment,
                    target=target,
                    run_id=run_id,
                    requester=requester,
                    acquired_at=iso(now),
                )
            )
    except sa.exc.IntegrityError:
        # Another process inserted the lock between our read and our insert (PostgreSQL only;
        # SQLite's BEGIN IMMEDIATE already serialised us). Report who won.
        winner = holder(store, conn, environment, target)
        if winner is None:
            raise
        raise LockHeld(winner) from None


def _supersede(store: StateStore, conn: Connection, old: LockHolder, new_run: str, now: datetime) -> None:
    reason = f"superseded by run {new_run}: its lease expired at {old.lease_expires_at} and nobody resumed it"
    conn.execute(
        runs.update()
        .where(runs.c.id == old.run_id)
        .values(
            state=RunState.ABORTED.value,
            reason=reason,
            finished_at=iso(now),
            updated_at=iso(now),
            owner=None,
            owner_pid=None,
            owner_host=None,
            lease_expires_at=None,
            lease_token=None,
        )
    )
    conn.execute(
        steps.update()
        .where(steps.c.run_id == old.run_id, steps.c.status.in_([StepStatus.PENDING.value]))
        .values(status=StepStatus.SKIPPED.value)
    )
    audit.append(
        store,
        conn,
        at=now,
        kind="lock.taken_over",
        actor="engine",
        run_id=old.run_id,
        detail={"environment": old.environment, "target": old.target, "by_run": new_run, "reason": reason},
    )


def release(conn: Connection, environment: str, target: str, run_id: str) -> None:
    """Release every lock ``run_id`` holds in ``environment`` (its target and any ``also_lock``)."""
    conn.execute(locks.delete().where(locks.c.environment == environment, locks.c.run_id == run_id))


def new_token() -> str:
    return uuid.uuid4().hex


def renew(
    conn: Connection, run_id: str, owner: Owner, now: datetime, ttl: float, token: str | None = None
) -> None:
    """Push the lease forward, inside the caller's transaction; ``LeaseLost`` if we no longer own it.

    With ``token`` (the fencing token this process got when it took the lease), the lease must
    still carry that token: a later ``take`` by anyone, even with the same ``pid@host``, fences us out.
    """
    condition = (runs.c.id == run_id) & (runs.c.owner == owner.label)
    if token is not None:
        condition = condition & (runs.c.lease_token == token)
    result = conn.execute(
        runs.update().where(condition).values(lease_expires_at=iso(now + timedelta(seconds=ttl)))
    )
    if result.rowcount != 1:
        raise LeaseLost(f"run {run_id} is no longer driven by this process ({owner.label})")


def current_token(conn: Connection, run_id: str, owner: Owner) -> str | None:
    """The fencing token of the lease ``owner`` holds on ``run_id`` now, if it holds it."""
    row = conn.execute(sa.select(runs.c.owner, runs.c.lease_token).where(runs.c.id == run_id)).first()
    if row is None or row.owner != owner.label:
        return None
    return str(row.lease_token) if row.lease_token is not None else None


def take(conn: Connection, run_id: str, owner: Owner, now: datetime, ttl: float) -> str:
    """Give the lease to ``owner`` with a new fencing token, which is returned."""
    token = new_token()
    conn.execute(
        runs.update()
        .where(runs.c.id == run_id)
        .values(
            owner=owner.label,
            owner_pid=owner.pid,
            owner_host=owner.host,
            lease_expires_at=iso(now + timedelta(seconds=ttl)),
            lease_token=token,
        )
    )
    return token


def give_up(conn: Connection, run_id: str, owner: Owner) -> None:
    conn.execute(
        runs.update()
        .where(runs.c.id == run_id, runs.c.owner == owner.label)
        .values(owner=None, owner_pid=None, owner_host=None, lease_expires_at=None, lease_token=None)
    )


class Heartbeat:
    """Renews a run's lease every ``ttl / 3`` seconds of real time until stopped or the lease is lost."""

    def __init__(
        self,
        store: StateStore,
        run_id: str,
        owner: Owner,
        ttl: float,
        clock: Clock,
        token: str | None = None,
    ) -> None:
        self.store, self.run_id, self.owner, self.ttl, self.clock = store, run_id, owner, ttl, clock
        self.token = token
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                with self.store.transaction() as conn:
                    renew(conn, self.run_id, self.owner, self.clock.now(), self.ttl, self.token)
            except LeaseLost:
                self.lost.set()
                return
            except Exception:  # noqa: S112 - a missed beat is retried; the lease has slack for it
                continue
