"""The audit log: append-only, chained with a keyed MAC, and anchored outside its database.

Each entry stores the hash of the one before it (``prev_hash``) and its own: an HMAC-SHA256, keyed
with a secret that is not in the database, of its sequence number, time, run, actor, kind and detail
chained to ``prev_hash`` (stored as ``k:`` and 62 hex digits). Whoever can write the database but not read the
key cannot edit an entry and re-chain the rest: the MACs would not match. A one-row head table holds
the last sequence number and hash, so deleting the newest entries shows too.

**The key** is 32 random bytes in ``secrets/audit.key`` beside the SQLite database (for PostgreSQL,
in a directory of its own per database under ``MANGAASSIST_HOME/secrets``), created 0600 on first
use, or the file ``MANGAASSIST_AUDIT_KEY_FILE`` names; or, with
``MANGAASSIST_AUDIT_KEY=secretsmanager:SECRET_ID`` (an ARN or a name), read from AWS Secrets Manager
once per process (``SecretBinary``: the 32 raw bytes; ``SecretString``: their base64). A missing
secret or one of another size is an error naming the secret, raised inside the transaction of the
first entry: nothing is written. **The anchor** (``anchor``): after every transaction that appended
entries commits, the new head (seq, hash, time) is appended to ``secrets/audit-anchor.jsonl`` (or
the file ``MANGAASSIST_AUDIT_ANCHOR`` names), or, with ``MANGAASSIST_AUDIT_ANCHOR=s3://BUCKET/PREFIX``,
written as an object under S3 Object Lock (COMPLIANCE) that nobody can delete or overwrite; a
bucket without Object Lock is refused before the first entry. Restoring an older copy of the
database (a truncated log) or re-chaining it leaves the anchor ahead of, or different from, the
log: ``verify`` reports it by entry.

Entries written before the log was keyed (plain sha256, ``<hex>``) still verify; an unkeyed entry
*after* a keyed one is reported (a log re-chained without the key). Approvals, rejections and
overrides are entries of the chain; ``verify`` also checks that every approval record of the
approvals table has its entry (one inserted behind the engine's back has none).

Entries are appended inside the same transaction as the change they describe (a step result, a
verdict with its numbers, an approval, an override, a rollback), by ``runs``, ``locks`` and
``approvals``. ``mangaassist audit`` lists them; ``mangaassist audit verify`` calls ``verify``.
Parameters that look like secrets (by name or by shape) are redacted in the entries
(``redact_params``); the run keeps them, the log does not.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mangaassist.delivery.engine.anchor import read_anchor as read_anchor  # where it was before
from mangaassist.delivery.engine.clock import iso
from mangaassist.delivery.engine.errors import StateStoreError
from mangaassist.delivery.engine.state import (
    AUDIT_HEAD_INFO,
    StateStore,
    approvals,
    audit_head,
    audit_log,
    dumps,
    loads,
)

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


KEYED = "k:"
"""The prefix of a keyed entry hash: ``k:`` and the first 62 hex digits (248 bits) of the
HMAC-SHA256, so that it fits the 64 characters of the hash columns like the unkeyed sha256."""
KEY_BYTES = 32


def entry_hash(
    prev_hash: str,
    seq: int,
    at: str,
    run_id: str | None,
    actor: str,
    kind: str,
    detail: str,
    key: bytes | None = None,
) -> str:
    """The entry's hash chained to ``prev_hash``: ``k:<hex>`` with ``key``, else the unkeyed sha256
    of entries written before the log was keyed."""
    body = dumps({"seq": seq, "at": at, "run": run_id, "actor": actor, "kind": kind, "detail": detail})
    message = f"{prev_hash}\n{body}".encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return KEYED + hmac.new(key, message, hashlib.sha256).hexdigest()[: 64 - len(KEYED)]


KEY_ENV = "MANGAASSIST_AUDIT_KEY"
SECRETS_MANAGER = "secretsmanager:"
_fetched: dict[str, bytes] = {}
_fetching = threading.Lock()


def key_file(store: StateStore) -> Path:
    env = os.environ.get("MANGAASSIST_AUDIT_KEY_FILE")
    return Path(env) if env else store.secrets_dir / "audit.key"


def key_secret() -> str | None:
    """The Secrets Manager secret ``MANGAASSIST_AUDIT_KEY=secretsmanager:SECRET_ID`` names; None when
    unset. Anything else is refused without echoing it (it could be a key pasted by mistake)."""
    value = os.environ.get(KEY_ENV, "").strip()
    if not value:
        return None
    if not value.startswith(SECRETS_MANAGER) or not value[len(SECRETS_MANAGER) :].strip():
        raise StateStoreError(
            f"{KEY_ENV} must be {SECRETS_MANAGER}SECRET_ID (an ARN or a name); "
            "for a key in a file use MANGAASSIST_AUDIT_KEY_FILE"
        )
    if os.environ.get("MANGAASSIST_AUDIT_KEY_FILE", "").strip():
        raise StateStoreError(f"{KEY_ENV} and MANGAASSIST_AUDIT_KEY_FILE are both set: set one")
    return value[len(SECRETS_MANAGER) :].strip()


def key_source(store: StateStore) -> str:
    """Where the audit key comes from, for messages: the secret, else the file."""
    secret = key_secret()
    return f"secret {secret}" if secret else str(key_file(store))


def secret_key(secret_id: str) -> bytes:
    """The key held by the Secrets Manager secret ``secret_id``, fetched once per process."""
    with _fetching:
        if secret_id not in _fetched:
            from mangaassist.platform import factory  # boto3 only when a secret is configured

            _fetched[secret_id] = factory.audit_key(secret_id)
        return _fetched[secret_id]


def forget_fetched_keys() -> None:
    """Forget the keys fetched from Secrets Manager (tests; a process that rotates its key)."""
    with _fetching:
        _fetched.clear()


def audit_key(store: StateStore, *, create: bool = True) -> bytes | None:
    """The audit key (module docstring), created 0600 on first use if ``create``; kept on the store."""
    cached: bytes | None = getattr(store, "_audit_key", None)
    if cached is not None:
        return cached
    secret = key_secret()
    if secret is not None:
        store._audit_key = secret_key(secret)  # type: ignore[attr-defined]
        return store._audit_key  # type: ignore[attr-defined, no-any-return]
    path = key_file(store)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            key = path.read_bytes()
        else:
            key = secrets.token_bytes(KEY_BYTES)
            try:
                os.write(fd, key)
            finally:
                os.close(fd)
    except OSError as exc:
        raise StateStoreError(f"cannot read the audit key {path}: {exc.strerror or exc}") from None
    if len(key) < 16:
        raise StateStoreError(f"the audit key {path} is {len(key)} bytes; expected at least 16")
    store._audit_key = key  # type: ignore[attr-defined]
    return key


_SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|credential|api[_-]?key|private[_-]?key|auth", re.I)
_SECRET_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,}|xox[baprs]-[A-Za-z0-9-]{10,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"
)
REDACTED = "[redacted]"


def redact_params(value: Any, name: str = "") -> Any:
    """``value`` with every entry whose name or text looks like a secret replaced by ``[redacted]``."""
    if isinstance(value, dict):
        return {k: redact_params(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_params(v, name) for v in value]
    if name and _SECRET_NAME.search(name) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str) and _SECRET_VALUE.search(value):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


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
    """Append one entry inside the caller's transaction (it commits with the change it records).

    The key and the anchor are resolved first: a missing secret or a bucket without Object Lock
    raises here, and the transaction writes nothing."""
    key = audit_key(store)
    store.audit_anchor  # noqa: B018 - made (and an S3 bucket checked) before anything is written
    head_q = sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
    if not store.is_sqlite:
        head_q = head_q.with_for_update()  # one appender at a time keeps the chain linear
    head = conn.execute(head_q).one()
    seq = int(head.seq) + 1
    when = iso(at)
    body = dumps(detail or {})
    digest = entry_hash(head.hash, seq, when, run_id, actor, kind, body, key)
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
    conn.info[AUDIT_HEAD_INFO] = (seq, digest, when)  # anchored once the transaction commits
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


def verify(conn: Connection, store: StateStore | None = None) -> tuple[int, list[Problem]]:
    """Walk the whole chain; return how many entries were checked and every problem found.

    With ``store``: keyed entries are checked with the audit key, the log against its anchor, and
    every approval record against its entry (module docstring)."""
    key = audit_key(store, create=False) if store is not None else None
    problems: list[Problem] = []
    prev_hash, expected_seq, count = GENESIS, 1, 0
    hashes: dict[int, str] = {}
    keyed_seen = False
    approval_entries: set[tuple[str | None, str, str, str]] = set()
    for row in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).mappings():
        count += 1
        seq = int(row["seq"])
        hashes[seq] = str(row["hash"])
        if seq != expected_seq:
            problems.append(Problem(seq, f"entries {expected_seq}..{seq - 1} are missing (deleted)"))
        if row["prev_hash"] != prev_hash:
            problems.append(
                Problem(seq, "does not chain to the entry before it (deleted or reordered entries)")
            )
        fields = (row["prev_hash"], seq, row["at"], row["run_id"], row["actor"], row["kind"], row["detail"])
        if str(row["hash"]).startswith(KEYED):
            keyed_seen = True
            if key is None and store is not None:
                problems.append(Problem(seq, f"keyed, but the audit key {key_source(store)} is missing"))
            elif key is not None and not hmac.compare_digest(entry_hash(*fields, key=key), row["hash"]):
                problems.append(Problem(seq, "content does not match its keyed hash (edited or re-chained)"))
        else:
            if keyed_seen:
                problems.append(
                    Problem(seq, "an unkeyed entry after keyed ones (re-chained without the key)")
                )
            if entry_hash(*fields) != row["hash"]:
                problems.append(Problem(seq, "content does not match its hash (edited)"))
        if str(row["kind"]).startswith("approval."):
            step = str((loads(row["detail"]) or {}).get("step", ""))
            approval_entries.add(
                (row["run_id"], str(row["actor"]), step, str(row["kind"])[len("approval.") :])
            )
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
    for record in conn.execute(sa.select(approvals)).mappings():
        if (
            record["run_id"],
            str(record["actor"]),
            str(record["step"]),
            str(record["decision"]),
        ) not in approval_entries:
            problems.append(
                Problem(
                    None,
                    f"approval record {record['id']} ({record['decision']} by {record['actor']} on run "
                    f"{record['run_id']}) has no entry in the log (written behind the engine's back)",
                )
            )
    if store is not None:
        problems += _against_anchor(store, hashes, expected_seq - 1, keyed_seen)
    return count, problems


def _against_anchor(store: StateStore, hashes: dict[int, str], last: int, keyed: bool) -> list[Problem]:
    kept = store.audit_anchor
    anchored, noted = kept.read()
    problems: list[Problem] = []
    if not anchored:
        if keyed:
            problems.append(
                Problem(None, f"the anchor {kept.where} is missing or empty, but the log is keyed")
            )
        return problems
    problems += [Problem(seq, message) for seq, message in noted]
    newest = max(anchored)
    if newest > last:
        _, at = anchored[newest]
        problems.append(
            Problem(
                None,
                f"the anchor saw entry {newest} (at {at}) but the log ends at entry {last}: "
                "the database was rolled back to an older copy",
            )
        )
    for seq, (digest, at) in sorted(anchored.items()):
        if seq in hashes and hashes[seq] != digest:
            problems.append(
                Problem(seq, f"differs from the hash anchored at {at} (rewritten and re-chained)")
            )
    return problems
