"""The audit log's key in Secrets Manager and its anchor in S3 under Object Lock, on moto's server.

One ``moto_server`` process for the module (``tests/moto_server.py``); each test has its own bucket
and secret. The engine makes its own boto3 clients from the environment: the fixture ``aws`` points
them at the server (``MANGAASSIST_AWS_ENDPOINT_URL`` on loopback) with the fixed test credentials,
and shuts out any profile or real endpoint of the machine. The state store is SQLite; tampering is
simulated as in ``test_engine_suite.py``.

What moto's server enforces and these tests assert: ``If-None-Match: *`` on ``PutObject``, a locked
version's ``DeleteObject`` refused (even with the governance bypass), Object Lock headers refused
on a bucket without it. What it does not: shortening or lifting a COMPLIANCE retention
(``PutObjectRetention``) is accepted by moto, where S3 refuses it; not asserted here.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.engine import audit, people
from mangaassist.delivery.engine.clock import FakeClock
from mangaassist.delivery.engine.errors import StateStoreError
from mangaassist.delivery.engine.policy import default_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore, audit_head, audit_log, runs
from mangaassist.delivery.pipelines import demo
from mangaassist.platform.aws.audit import AnchorUnavailable, S3AuditAnchor
from tests.moto_server import CREDENTIALS, client, moto_server

PREFIX = "audit/prod"
ENTRIES_PER_RUN = 10  # the demo pipeline's run: as in test_engine_suite


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The engine's boto3 clients on the moto server, with the test credentials and nothing else."""
    assert endpoint.startswith("http://127.0.0.1:")
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("MANGAASSIST_AUDIT"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MANGAASSIST_AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", CREDENTIALS["region_name"])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    audit.forget_fetched_keys()
    yield endpoint
    audit.forget_fetched_keys()


@pytest.fixture
def s3(aws: str) -> Iterator[Any]:
    made = client(aws, "s3")
    yield made
    made.close()


@pytest.fixture
def secretsmanager(aws: str) -> Iterator[Any]:
    made = client(aws, "secretsmanager")
    yield made
    made.close()


def new_bucket(s3: Any, *, locked: bool = True) -> str:
    name = f"audit-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
    return name


@pytest.fixture
def bucket(s3: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A bucket with Object Lock, named by ``MANGAASSIST_AUDIT_ANCHOR`` (under ``PREFIX``)."""
    name = new_bucket(s3)
    monkeypatch.setenv("MANGAASSIST_AUDIT_ANCHOR", f"s3://{name}/{PREFIX}")
    monkeypatch.setenv("MANGAASSIST_AUDIT_ANCHOR_RETENTION_DAYS", "30")
    return name


@pytest.fixture
def secret(secretsmanager: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, bytes]:
    """A Secrets Manager secret holding 32 random bytes, named by ``MANGAASSIST_AUDIT_KEY`` (by ARN)."""
    key = os.urandom(32)
    made = secretsmanager.create_secret(Name=f"mangaassist/audit-{uuid.uuid4().hex[:8]}", SecretBinary=key)
    monkeypatch.setenv("MANGAASSIST_AUDIT_KEY", f"secretsmanager:{made['ARN']}")
    return str(made["ARN"]), key


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    yield opened
    opened.close()


def audited(store: StateStore) -> None:
    """One run of the demo pipeline (10 entries, each committed and anchored on its own)."""
    Executor(store, clock=FakeClock(), heartbeat=False, poll_seconds=5.0).run(
        demo.build({}),
        environment="dev",
        target="demo",
        requester=people.Actor("ann", "token", "test"),
        policy=default_policy().for_run("dev", "demo"),
    )


def problems(store: StateStore) -> list[str]:
    with store.transaction() as conn:
        return [p.message for p in audit.verify(conn, store)[1]]


def anchored_keys(s3: Any, bucket: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/")
    return [item["Key"] for item in listed.get("Contents", [])]


def nothing_written(store: StateStore, s3: Any, bucket: str) -> bool:
    with store.transaction() as conn:
        counted = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar()
        logged = conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar()
        head = conn.execute(sa.select(audit_head.c.seq)).scalar()
    return counted == 0 and logged == 0 and head == 0 and anchored_keys(s3, bucket) == []


# -- a run audited in AWS --------------------------------------------------------------------------


def test_a_run_is_keyed_by_the_secret_and_anchored_in_s3_under_compliance_retention(
    store: StateStore, s3: Any, bucket: str, secret: tuple[str, bytes]
) -> None:
    audited(store)
    with store.transaction() as conn:
        count, found = audit.verify(conn, store)
        entries = audit.entries(conn)
    assert count == ENTRIES_PER_RUN and found == []

    # keyed with the secret's bytes, nothing on the local disk
    first = entries[0]
    body = json.dumps(first.detail, sort_keys=True, separators=(",", ":"), default=str)
    args = (first.prev_hash, first.seq, first.at, first.run_id, first.actor, first.kind, body)
    assert audit.entry_hash(*args, key=secret[1]) == first.hash
    assert not (store.secrets_dir / "audit.key").exists()
    assert not (store.secrets_dir / "audit-anchor.jsonl").exists()

    # one object per committed head, keys sorting by seq, each locked in COMPLIANCE mode for 30 days
    keys = anchored_keys(s3, bucket)
    assert keys == [f"{PREFIX}/{seq:012d}.json" for seq in range(1, ENTRIES_PER_RUN + 1)]
    for entry, key in zip(entries, keys, strict=True):
        got = s3.get_object(Bucket=bucket, Key=key)
        assert json.loads(got["Body"].read()) == {"seq": entry.seq, "hash": entry.hash, "at": entry.at}
        assert got["ObjectLockMode"] == "COMPLIANCE"
        left = got["ObjectLockRetainUntilDate"] - datetime.now(UTC)
        assert timedelta(days=29) < left <= timedelta(days=30)


def test_audit_verify_in_a_new_process_reads_the_secret_and_the_s3_anchor(
    store: StateStore, bucket: str, secret: tuple[str, bytes], tmp_path: Path
) -> None:
    audited(store)
    env = {**os.environ, "MANGAASSIST_STATE_URL": str(store.url), "MANGAASSIST_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mangaassist")), "audit", "verify", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["intact"] is True and result["entries"] == ENTRIES_PER_RUN
    assert result["head"]["seq"] == ENTRIES_PER_RUN


# -- tampering reported against the S3 anchor ------------------------------------------------------


def _rechain(store: StateStore, key: bytes | None) -> None:
    """Edit entry 4 and recompute every hash after it and the head (with ``key``, as someone who can
    read the key would; without, as someone who cannot)."""
    with store.transaction() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)).mappings()]
        prev = rows[2]["hash"]
        for row in rows[3:]:
            actor = "mallory" if row["seq"] == 4 else row["actor"]
            digest = audit.entry_hash(
                prev, row["seq"], row["at"], row["run_id"], actor, row["kind"], row["detail"], key
            )
            conn.execute(
                audit_log.update()
                .where(audit_log.c.seq == row["seq"])
                .values(actor=actor, prev_hash=prev, hash=digest)
            )
            prev = digest
        conn.execute(audit_head.update().values(hash=prev))


def test_a_log_rechained_with_the_key_is_found_only_by_the_s3_anchor(
    store: StateStore, bucket: str, secret: tuple[str, bytes]
) -> None:
    """Whoever holds the key and the database makes a consistent keyed chain: only the anchor, which
    they cannot rewrite, still has the original heads."""
    audited(store)
    _rechain(store, secret[1])
    found = problems(store)
    assert len(found) == ENTRIES_PER_RUN - 3
    assert all(p.startswith("differs from the hash anchored at ") for p in found)


def test_a_log_rechained_without_the_key_is_found(
    store: StateStore, bucket: str, secret: tuple[str, bytes]
) -> None:
    audited(store)
    _rechain(store, None)
    found = problems(store)
    assert "an unkeyed entry after keyed ones (re-chained without the key)" in found
    assert any(p.startswith("differs from the hash anchored at ") for p in found)


def test_a_log_rolled_back_to_an_older_copy_is_found_by_the_s3_anchor(
    store: StateStore, bucket: str, secret: tuple[str, bytes]
) -> None:
    audited(store)
    with store.transaction() as conn:
        kept = [dict(r) for r in conn.execute(sa.select(audit_log)).mappings()]
        head = dict(conn.execute(sa.select(audit_head)).mappings().one())
    audited(store)
    with store.transaction() as conn:
        conn.execute(audit_log.delete())
        conn.execute(audit_log.insert(), kept)
        conn.execute(audit_head.update().values(seq=head["seq"], hash=head["hash"]))
    found = problems(store)
    assert len(found) == 1
    assert found[0].startswith(f"the anchor saw entry {2 * ENTRIES_PER_RUN} (at ")
    assert found[0].endswith(
        f"but the log ends at entry {ENTRIES_PER_RUN}: the database was rolled back to an older copy"
    )


def test_a_keyed_log_with_an_empty_s3_anchor_is_reported(
    store: StateStore, s3: Any, bucket: str, secret: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    audited(store)
    other = new_bucket(s3)
    monkeypatch.setenv("MANGAASSIST_AUDIT_ANCHOR", f"s3://{other}/{PREFIX}")
    assert problems(store) == [f"the anchor s3://{other}/{PREFIX}/ is missing or empty, but the log is keyed"]


# -- the anchor's objects ------------------------------------------------------------------------


def test_a_locked_anchor_object_cannot_be_deleted_and_overwriting_it_is_reported(
    store: StateStore, s3: Any, bucket: str, secret: tuple[str, bytes]
) -> None:
    audited(store)
    key = f"{PREFIX}/{4:012d}.json"
    version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    forged = json.dumps({"seq": 4, "hash": "k:" + "0" * 62, "at": "2025-01-01T00:00:00Z"}).encode()

    # S3 (moto) refuses: deleting the locked version, even with the governance bypass
    for bypass in (False, True):
        with pytest.raises(ClientError) as refused:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=bypass)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # ... and a conditional put over it, which is how the engine writes
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key=key, Body=forged, IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    # S3 lets a writer stack a new version on it, or hide it behind a delete marker: the locked
    # version stays, verify compares it and reports both
    s3.put_object(Bucket=bucket, Key=key, Body=forged)
    s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/{5:012d}.json")
    assert problems(store) == [
        f"anchor object {key} was overwritten (2 versions); the first is compared",
        f"anchor object {PREFIX}/{5:012d}.json was deleted (a delete marker hides it); "
        "the locked version is compared",
    ]


def test_the_engine_never_writes_over_an_anchored_head(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    anchor = S3AuditAnchor(s3, bucket=bucket, prefix="x/", retention_days=1)
    anchor.append((1, "k:aaa", "2025-01-08T12:00:00Z"))
    anchor.append((1, "k:aaa", "2025-01-08T12:00:00Z"))  # a retried write of the same head: accepted
    with pytest.raises(AnchorUnavailable, match=r"already holds x/000000000001\.json with another head"):
        anchor.append((1, "k:bbb", "2025-01-08T12:00:01Z"))
    assert anchor.read() == ({1: ("k:aaa", "2025-01-08T12:00:00Z")}, [])


def test_reading_the_anchor_follows_every_page(s3: Any, bucket: str) -> None:
    anchor = S3AuditAnchor(s3, bucket=bucket, prefix="p/", retention_days=1)
    anchor.page_size = 2
    for seq in range(1, 8):
        anchor.append((seq, f"k:{seq}", f"t{seq}"))
    s3.put_object(Bucket=bucket, Key="p/000000000003.json", Body=b"{}")  # a second version, unlocked
    s3.put_object(Bucket=bucket, Key="p/notes.txt", Body=b"?", ObjectLockMode="COMPLIANCE",
                  ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    heads, noted = anchor.read()
    assert heads == {seq: (f"k:{seq}", f"t{seq}") for seq in range(1, 8)}
    assert noted == [
        (3, "anchor object p/000000000003.json was overwritten (2 versions); the first is compared"),
        (None, "the anchor s3://" + bucket + "/p/ has 1 unreadable object(s)"),
    ]


def test_a_head_that_cannot_be_anchored_fails_after_its_commit_as_with_the_file(
    store: StateStore, bucket: str, secret: tuple[str, bytes]
) -> None:
    """As with the anchor file: the transaction committed, the error reaches the caller, and the
    anchor misses that head (verify tolerates a missing head, never a rolled-back one)."""
    audited(store)
    anchor = store.audit_anchor
    assert isinstance(anchor, S3AuditAnchor)

    class Failing:
        def __init__(self, real: Any) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def put_object(self, **_: Any) -> None:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}, "PutObject")

    anchor._s3 = Failing(anchor._s3)
    at = FakeClock().now()
    failed = rf"cannot write the head of entry {ENTRIES_PER_RUN + 1} "
    with pytest.raises(AnchorUnavailable, match=failed), store.transaction() as conn:
        audit.append(store, conn, at=at, kind="test.note", actor="ann")
    anchor._s3 = anchor._s3.real
    with store.transaction() as conn:
        assert audit.head(conn).seq == ENTRIES_PER_RUN + 1  # committed
    assert problems(store) == []


# -- refused before anything is written ---------------------------------------------------------


def test_a_bucket_without_object_lock_is_refused_naming_it(
    store: StateStore, s3: Any, secret: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = new_bucket(s3, locked=False)
    monkeypatch.setenv("MANGAASSIST_AUDIT_ANCHOR", f"s3://{plain}/{PREFIX}")
    with pytest.raises(ConfigError, match=rf"bucket {plain} does not have Object Lock enabled"):
        audited(store)
    assert nothing_written(store, s3, plain)
    with pytest.raises(ConfigError, match=rf"bucket {plain} does not have Object Lock enabled"):
        problems(store)


def test_a_missing_bucket_is_refused_naming_it(
    store: StateStore, s3: Any, secret: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANGAASSIST_AUDIT_ANCHOR", "s3://no-such-audit-bucket/x")
    with pytest.raises(ConfigError, match="the audit anchor bucket no-such-audit-bucket does not exist"):
        audited(store)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "does not exist in Secrets Manager"),
        (b"\x01" * 16, r"holds 16 bytes \(SecretBinary\); expected exactly 32"),
        (base64.b64encode(b"\x01" * 31).decode(), r"holds 31 bytes \(SecretString\); expected exactly 32"),
        ("not base64 at all!", ": its SecretString is not base64"),
    ],
    ids=["missing", "16-bytes", "31-bytes-base64", "not-base64"],
)
def test_a_missing_or_malformed_key_secret_is_refused_naming_it_and_nothing_is_written(
    store: StateStore,
    s3: Any,
    bucket: str,
    secretsmanager: Any,
    monkeypatch: pytest.MonkeyPatch,
    value: bytes | str | None,
    why: str,
) -> None:
    name = f"mangaassist/audit-{uuid.uuid4().hex[:8]}"
    if isinstance(value, bytes):
        secretsmanager.create_secret(Name=name, SecretBinary=value)
    elif isinstance(value, str):
        secretsmanager.create_secret(Name=name, SecretString=value)
    monkeypatch.setenv("MANGAASSIST_AUDIT_KEY", f"secretsmanager:{name}")
    with pytest.raises(ConfigError, match=rf"the audit key secret {name} ?{why}"):
        audited(store)
    assert nothing_written(store, s3, bucket)


def test_the_key_secret_is_read_once_per_process(
    store: StateStore, bucket: str, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = f"mangaassist/audit-{uuid.uuid4().hex[:8]}"
    secretsmanager.create_secret(Name=name, SecretString=base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("MANGAASSIST_AUDIT_KEY", f"secretsmanager:{name}")
    audited(store)
    secretsmanager.put_secret_value(SecretId=name, SecretString=base64.b64encode(os.urandom(32)).decode())
    again = StateStore(str(store.url))  # another store, same process: the key already fetched
    try:
        assert problems(again) == []
        audit.forget_fetched_keys()
        again._audit_key = None  # type: ignore[attr-defined]
        assert "content does not match its keyed hash (edited or re-chained)" in problems(again)
    finally:
        again.close()


def test_the_key_setting_is_refused_without_echoing_it(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pasted = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.delenv("MANGAASSIST_AUDIT_KEY_FILE", raising=False)
    monkeypatch.setenv("MANGAASSIST_AUDIT_KEY", pasted)
    with pytest.raises(
        StateStoreError, match="MANGAASSIST_AUDIT_KEY must be secretsmanager:SECRET_ID"
    ) as refused:
        audit.audit_key(store)
    assert pasted not in str(refused.value)
    monkeypatch.setenv("MANGAASSIST_AUDIT_KEY", "secretsmanager:x")
    monkeypatch.setenv("MANGAASSIST_AUDIT_KEY_FILE", "/tmp/audit.key")  # never read
    with pytest.raises(StateStoreError, match="both set"):
        audit.audit_key(store)


@pytest.mark.parametrize("days", ["0", "-3", "soon", "36501"])
def test_a_retention_that_is_not_a_number_of_days_is_refused(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, days: str
) -> None:
    monkeypatch.setenv("MANGAASSIST_AUDIT_ANCHOR", "s3://some-bucket/x")
    monkeypatch.setenv("MANGAASSIST_AUDIT_ANCHOR_RETENTION_DAYS", days)
    with pytest.raises(StateStoreError, match="MANGAASSIST_AUDIT_ANCHOR_RETENTION_DAYS"):
        store.audit_anchor  # noqa: B018
