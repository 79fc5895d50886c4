"""The engine's state store: runs, steps, effects, locks, approvals, audit and releases.

SQLAlchemy Core over SQLite (WAL, one file under ``MANGAASSIST_HOME``) by default, or PostgreSQL when
``MANGAASSIST_STATE_URL=postgresql://...`` is set (driver: psycopg 3), so several CI runners can share
one engine. Every change happens inside ``StateStore.transaction()``: on SQLite that is
``BEGIN IMMEDIATE`` (writers queue instead of failing on a lock upgrade); on PostgreSQL the rows that
serialise writers are taken ``FOR UPDATE``.

Called by every other engine module; nothing outside ``delivery`` touches these tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from mangaassist.delivery.engine import anchor
from mangaassist.delivery.engine.anchor import AuditAnchor, FileAnchor
from mangaassist.delivery.engine.anchor import write_anchor as write_anchor  # where it was before
from mangaassist.delivery.engine.clock import parse_iso
from mangaassist.delivery.engine.errors import RunNotFound, StateStoreError
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord, StepStatus
from mangaassist.platform.daemons import alive as pid_alive

metadata = sa.MetaData()

runs = sa.Table(
    "engine_runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("pipeline", sa.String(80), nullable=False),
    sa.Column("environment", sa.String(40), nullable=False),
    sa.Column("target", sa.String(120), nullable=False),
    sa.Column("requester", sa.String(120), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("step_names", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("owner", sa.String(200)),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("owner_host", sa.String(200)),
    sa.Column("lease_expires_at", sa.String(40)),
    sa.Column("lease_token", sa.String(40)),
    # The fencing token: a new one each time a process takes the lease (start, resume, abort). Every
    # write of the driving process, and every effect before it is applied, checks it is still there.
    sa.Column("reason", sa.Text),
    sa.Column("overrides", sa.Text, nullable=False),
    sa.Column("stopping", sa.Text),
    sa.Column("policy", sa.Text, nullable=False),
    sa.Index("engine_runs_created", "created_at"),
)

steps = sa.Table(
    "engine_steps",
    metadata,
    sa.Column("run_id", sa.String(40), sa.ForeignKey("engine_runs.id"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("started_at", sa.String(40)),
    sa.Column("waiting_since", sa.String(40)),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("duration_s", sa.Float),
    sa.Column("reason", sa.Text),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("output", sa.Text, nullable=False),
)

effects = sa.Table(
    "engine_effects",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("step", sa.String(80), primary_key=True),
    sa.Column("name", sa.String(120), primary_key=True),
    sa.Column("idempotency_key", sa.String(300), nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("applied_at", sa.String(40), nullable=False),
)

checkpoints = sa.Table(
    "engine_checkpoints",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("step", sa.String(80), primary_key=True),
    sa.Column("name", sa.String(120), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("saved_at", sa.String(40), nullable=False),
)
"""Where a long step is inside its work (``StepContext.save_checkpoint``): a backfill's scan key per
segment. Overwritten as the step goes on; read back when the step runs again after a crash."""

locks = sa.Table(
    "engine_locks",
    metadata,
    sa.Column("environment", sa.String(40), primary_key=True),
    sa.Column("target", sa.String(120), primary_key=True),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("requester", sa.String(120), nullable=False),
    sa.Column("acquired_at", sa.String(40), nullable=False),
)

approvals = sa.Table(
    "engine_approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), nullable=False, index=True),
    sa.Column("step", sa.String(80), nullable=False),
    sa.Column("decision", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(120), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
)

audit_log = sa.Table(
    "engine_audit",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("run_id", sa.String(40), index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(60), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

audit_head = sa.Table(
    "engine_audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

releases = sa.Table(
    "engine_releases",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("environment", sa.String(40), nullable=False),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("summary", sa.Text, nullable=False),
)

_PG_SCHEMA_LOCK = 7_414_400_401  # any constant: serialises concurrent first-time schema creation


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def loads(text: str | None) -> Any:
    return json.loads(text) if text else {}


def this_host() -> str:
    return socket.gethostname()


def default_url() -> str:
    """``MANGAASSIST_STATE_URL``, else SQLite under ``MANGAASSIST_HOME`` (default ``./.mangaassist``)."""
    url = os.environ.get("MANGAASSIST_STATE_URL", "").strip()
    if url:
        return url
    home = Path(os.environ.get("MANGAASSIST_HOME") or ".mangaassist")
    return f"sqlite:///{(home / 'state.sqlite3').resolve()}"


def _driver_url(url: str) -> sa.URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StateStoreError(f"MANGAASSIST_STATE_URL {url!r} is not a database URL: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed
    raise StateStoreError(
        f"state database {parsed.render_as_string(hide_password=True)}: "
        "only sqlite:///PATH and postgresql://... are supported"
    )


AUDIT_HEAD_INFO = "mangaassist.audit_head"
"""Key of ``Connection.info`` under which ``audit.append`` leaves the head it wrote (seq, hash, at)."""


class StateStore:
    """One connection pool to the state database, with the schema created on first use."""

    def __init__(self, url: str | None = None) -> None:
        self.url = _driver_url(url or default_url())
        self.display_url = self.url.render_as_string(hide_password=True)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._s3_anchor: tuple[str, AuditAnchor] | None = None
        self.engine = self._create_engine()
        try:
            with self.transaction() as conn:
                if not self.is_sqlite:
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
                metadata.create_all(conn)
                _upgrade(conn)
                if conn.execute(sa.select(audit_head.c.id)).first() is None:
                    conn.execute(audit_head.insert().values(id=1, seq=0, hash="0" * 64))
        except StateStoreError as exc:
            self.engine.dispose()
            cause = exc.__cause__
            detail = _cause(cause) if isinstance(cause, SQLAlchemyError) else str(exc)
            raise StateStoreError(f"cannot open the state database {self.display_url}: {detail}") from None

    def _create_engine(self) -> Engine:
        if not self.is_sqlite:
            return sa.create_engine(self.url, pool_pre_ping=True, pool_size=2, max_overflow=4)
        database = self.url.database
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                # runs, approvals and the audit log: readable by their owner only (0600), made so
                # before SQLite opens it (its -wal and -shm files take the same mode)
                Path(database).touch(mode=0o600, exist_ok=True)
            except OSError as exc:
                raise StateStoreError(f"cannot open the state database {self.display_url}: {exc}") from None
        engine = sa.create_engine(self.url, connect_args={"timeout": 30.0})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock up front: a read-then-write transaction can then never
            # fail half-way with "database is locked" when another process wrote in between.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """All or nothing: commits when the block ends, rolls back if it raises.

        When the block appended to the audit log (``audit.append`` notes the new head on the
        connection), the head is written to the anchor (``audit_anchor``) once the commit
        succeeded: never a head that was rolled back. A write that fails raises here, after the
        commit (the anchor misses that head)."""
        appended: Any = None
        try:
            with self.engine.begin() as conn:
                try:
                    yield conn
                finally:
                    appended = conn.info.pop(AUDIT_HEAD_INFO, None)
        except SQLAlchemyError as exc:
            raise StateStoreError(f"state database {self.display_url}: {_cause(exc)}") from exc
        if appended is not None:
            self.audit_anchor.append(appended)

    @property
    def secrets_dir(self) -> Path:
        """Where the engine's keys live, outside the database: beside a SQLite file, else under
        ``MANGAASSIST_HOME`` (``MANGAASSIST_AUDIT_KEY_FILE`` names the audit key's file itself)."""
        database = self.url.database
        if self.is_sqlite and database and database != ":memory:":
            return Path(database).resolve().parent / "secrets"
        # one directory per database (a URL names its schema too): two databases never share a key
        # or an anchor
        which = hashlib.sha256(self.display_url.encode()).hexdigest()[:12]
        home = Path(os.environ.get("MANGAASSIST_HOME") or ".mangaassist").resolve()
        return home / "secrets" / f"{self.url.get_backend_name()}-{which}"

    @property
    def anchor_file(self) -> Path:
        """The audit log's anchor file: every committed head, appended (``MANGAASSIST_AUDIT_ANCHOR``
        when it is a path). An ``s3://`` anchor has no file: ``audit_anchor``."""
        env = anchor.setting()
        if anchor.is_s3(env):
            raise StateStoreError(f"{anchor.ANCHOR_ENV}={env} is an S3 anchor, not a file")
        return Path(env) if env else self.secrets_dir / "audit-anchor.jsonl"

    @property
    def audit_anchor(self) -> AuditAnchor:
        """Where committed heads go (``delivery.engine.anchor``): the anchor file, or with
        ``MANGAASSIST_AUDIT_ANCHOR=s3://BUCKET/PREFIX`` S3 under Object Lock (made by
        ``platform.factory``, its bucket checked once per store; kept while the setting holds)."""
        env = anchor.setting()
        if not anchor.is_s3(env):
            return FileAnchor(self.anchor_file)
        if self._s3_anchor is not None and self._s3_anchor[0] == env:
            return self._s3_anchor[1]
        try:
            days = anchor.retention_days()
        except ValueError as exc:
            raise StateStoreError(str(exc)) from None
        from mangaassist.platform import factory  # boto3 only when an S3 anchor is configured

        made = factory.audit_anchor(env, retention_days=days)
        self._s3_anchor = (env, made)
        return made

    def close(self) -> None:
        self.engine.dispose()
        if self._s3_anchor is not None:
            close = getattr(self._s3_anchor[1], "close", None)
            self._s3_anchor = None
            if callable(close):
                close()

    # -- reading ---------------------------------------------------------------------------------

    def run(self, conn: Connection, run_id: str, now: datetime, *, for_update: bool = False) -> RunRecord:
        query = sa.select(runs).where(runs.c.id == run_id)
        if for_update and not self.is_sqlite:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise RunNotFound(run_id)
        return run_record(row, now)

    def runs(
        self,
        conn: Connection,
        now: datetime,
        *,
        limit: int = 50,
        environment: str | None = None,
        pipeline: str | None = None,
    ) -> list[RunRecord]:
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        if environment:
            query = query.where(runs.c.environment == environment)
        if pipeline:
            query = query.where(runs.c.pipeline == pipeline)
        return [run_record(row, now) for row in conn.execute(query).mappings()]

    def last_output(
        self, conn: Connection, now: datetime, pipeline: str, environment: str, step: str, *, scan: int = 200
    ) -> tuple[str, dict[str, Any]] | None:
        """The output of ``step`` in the newest succeeded run of ``pipeline`` in ``environment``
        (among the environment's newest ``scan`` runs), with that run's id; None if there is none."""
        for run in self.runs(conn, now, limit=scan, environment=environment):
            if run.pipeline != pipeline or run.state is not RunState.SUCCEEDED:
                continue
            for record in self.steps(conn, run.id):
                if record.name == step and record.output:
                    return run.id, dict(record.output)
        return None

    def steps(self, conn: Connection, run_id: str) -> list[StepRecord]:
        rows = conn.execute(sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.idx)).mappings()
        return [
            StepRecord(
                run_id=row["run_id"],
                index=row["idx"],
                name=row["name"],
                status=StepStatus(row["status"]),
                attempts=row["attempts"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                duration_s=row["duration_s"],
                reason=row["reason"],
                detail=loads(row["detail"]),
                output=loads(row["output"]),
            )
            for row in rows
        ]


_ADDED_COLUMNS: dict[str, list[sa.Column[Any]]] = {"engine_runs": [runs.c.lease_token]}
"""Columns added after the first release of the schema; ``_upgrade`` adds them to older databases."""


def _upgrade(conn: Connection) -> None:
    inspector = sa.inspect(conn)
    for table, columns in _ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))


def owner_gone(row: Any, now: datetime) -> bool:
    """Whether the process that drives a run is gone: its lease expired, or its PID died on this host."""
    expires = row["lease_expires_at"]
    if expires is None or parse_iso(expires) <= now:
        return True
    pid, host = row["owner_pid"], row["owner_host"]
    return bool(pid is not None and host == this_host() and not pid_alive(pid))


def run_record(row: Any, now: datetime) -> RunRecord:
    state = RunState(row["state"])
    effective = state
    if not state.final and owner_gone(row, now):
        effective = RunState.INTERRUPTED
    return RunRecord(
        id=row["id"],
        pipeline=row["pipeline"],
        environment=row["environment"],
        target=row["target"],
        requester=row["requester"],
        state=state,
        params=loads(row["params"]),
        step_names=list(loads(row["step_names"]) or []),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        owner=row["owner"],
        owner_pid=row["owner_pid"],
        owner_host=row["owner_host"],
        lease_expires_at=row["lease_expires_at"],
        reason=row["reason"],
        overrides=dict(loads(row["overrides"])),
        stopping=loads(row["stopping"]) or None,
        policy=dict(loads(row["policy"])),
        effective_state=effective,
    )


def _cause(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]
