"""The engine's audit log in AWS: its anchor in S3 under Object Lock, its key in Secrets Manager.

Clients are injected (boto3); ``platform.factory`` makes them (``audit_anchor``, ``audit_key``) when
``MANGAASSIST_AUDIT_ANCHOR=s3://BUCKET/PREFIX`` or ``MANGAASSIST_AUDIT_KEY=secretsmanager:SECRET_ID``
is set. The engine only knows the protocol ``delivery.engine.anchor.AuditAnchor``, which
``S3AuditAnchor`` meets.

**The anchor** (``S3AuditAnchor``): every committed head (seq, hash, time) is one JSON object
``PREFIX/<seq, 12 digits>.json`` (the keys sort by seq), written with ``If-None-Match: *`` (never
over an existing key) and Object Lock retention in COMPLIANCE mode until now + the retention days:
nobody, the root account included, can delete that version or shorten its retention before then.
A bucket without Object Lock enabled is refused, naming it, before anything is written (a mutable
anchor is no anchor). S3 still lets a writer put a *new version* over a locked key (without the
condition) or hide it behind a delete marker; ``read`` lists every version (``ListObjectVersions``,
paginated), compares each key's first version, and reports a key with later versions (overwritten)
or a delete marker (deleted), and an object that is not under COMPLIANCE retention. A conditional
put refused because the key exists (a retried request whose answer was lost) is accepted when the
stored head is the same, and is an error otherwise.

**The key** (``secrets_manager_key``): the secret's ``SecretBinary`` is the 32 raw bytes, or its
``SecretString`` is their standard base64 (44 characters; surrounding whitespace ignored); anything
else, and a missing or unreadable secret, is a ``ConfigError`` naming the secret (never its value).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mangaassist.core.errors import ConfigError, MangaAssistError

KEY_BYTES = 32
SEQ_DIGITS = 12
LOCK_MODE = "COMPLIANCE"
READERS = 16
"""How many anchored heads ``read`` fetches at once."""

_HEAD_NAME = re.compile(rf"^(\d{{{SEQ_DIGITS}}})\.json$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class AnchorUnavailable(MangaAssistError):
    """The S3 anchor could not be written or read (the message names it and the cause)."""


def _error(exc: ClientError | BotoCoreError) -> tuple[str, str]:
    """(code, message) of a botocore error."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return str(error.get("Code", "")), str(error.get("Message", "") or exc)
    return type(exc).__name__, str(exc)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix ending in ``/``, or empty)."""
    if not url.lower().startswith("s3://"):
        raise ConfigError(f"MANGAASSIST_AUDIT_ANCHOR={url!r}: expected s3://BUCKET/PREFIX")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise ConfigError(f"MANGAASSIST_AUDIT_ANCHOR={url!r}: {bucket!r} is not an S3 bucket name")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3AuditAnchor:
    """The audit anchor in S3 under Object Lock (module docstring)."""

    def __init__(self, s3: Any, *, bucket: str, prefix: str, retention_days: int) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.retention_days = retention_days
        self.page_size = 1000
        """Versions per ``ListObjectVersions`` page (S3's maximum)."""
        self._checked = False

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def close(self) -> None:
        self._s3.close()

    def key(self, seq: int) -> str:
        return f"{self.prefix}{seq:0{SEQ_DIGITS}d}.json"

    def check(self) -> None:
        """Refuse a bucket without Object Lock enabled (or missing, or unreadable); once."""
        if self._checked:
            return
        refused = (
            f"the audit anchor bucket {self.bucket} does not have Object Lock enabled: a mutable "
            "anchor is no anchor (create the bucket with Object Lock: "
            "`aws s3api create-bucket --object-lock-enabled-for-bucket ...`)"
        )
        try:
            answer = self._s3.get_object_lock_configuration(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            code, message = _error(exc)
            if code == "ObjectLockConfigurationNotFoundError":
                raise ConfigError(refused) from None
            if code == "NoSuchBucket":
                raise ConfigError(f"the audit anchor bucket {self.bucket} does not exist") from None
            raise ConfigError(
                f"the audit anchor bucket {self.bucket}: cannot read its Object Lock configuration: "
                f"{code}: {message}"
            ) from None
        if answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise ConfigError(refused)
        self._checked = True

    def append(self, head: tuple[int, str, str]) -> None:
        """Write one committed head as a new object, locked; never over an existing one."""
        self.check()
        seq, digest, at = head
        key = self.key(seq)
        body = json.dumps({"seq": seq, "hash": digest, "at": at}, separators=(",", ":")).encode()
        until = datetime.now(UTC) + timedelta(days=self.retention_days)
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                IfNoneMatch="*",
                ObjectLockMode=LOCK_MODE,
                ObjectLockRetainUntilDate=until,
            )
        except (ClientError, BotoCoreError) as exc:
            code, message = _error(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                stored = self._stored_hash(key)
                if stored == digest:  # our own write, retried after its answer was lost
                    return
                raise AnchorUnavailable(
                    f"the audit anchor {self.where} already holds {key} with another head "
                    f"({stored or 'unreadable'}) than entry {seq}'s {digest}: two logs share one "
                    "anchor, or someone wrote ahead of the log"
                ) from None
            raise AnchorUnavailable(
                f"the audit anchor {self.where}: cannot write the head of entry {seq} ({key}): "
                f"{code}: {message}"
            ) from None

    def _stored_hash(self, key: str) -> str | None:
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=key)
            return str(json.loads(answer["Body"].read())["hash"])
        except (ClientError, BotoCoreError, ValueError, KeyError, TypeError):
            return None

    def read(self) -> tuple[dict[int, tuple[str, str]], list[tuple[int | None, str]]]:
        """Every anchored head ((hash, time) by seq) from each key's first version, and what looked
        wrong: later versions (overwritten), delete markers (deleted), unlocked or unreadable objects."""
        self.check()
        first: dict[str, str] = {}  # key -> its oldest version (listed newest first)
        versions: Counter[str] = Counter()
        deleted: set[str] = set()
        try:
            pages = self._s3.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                for version in page.get("Versions", []):
                    first[version["Key"]] = version["VersionId"]
                    versions[version["Key"]] += 1
                deleted.update(marker["Key"] for marker in page.get("DeleteMarkers", []))
        except (ClientError, BotoCoreError) as exc:
            code, message = _error(exc)
            raise AnchorUnavailable(
                f"the audit anchor {self.where}: cannot list it: {code}: {message}"
            ) from None
        named: dict[str, int] = {}
        bad = 0
        for key in first:
            match = _HEAD_NAME.match(key[len(self.prefix) :])
            if match:
                named[key] = int(match.group(1))
            else:
                bad += 1
        with ThreadPoolExecutor(max_workers=max(1, min(READERS, len(named)))) as pool:
            fetched = list(pool.map(lambda key: self._fetch(key, first[key]), sorted(named)))
        heads: dict[int, tuple[str, str]] = {}
        noted: list[tuple[int | None, str]] = []
        for key, (item, mode) in zip(sorted(named), fetched, strict=True):
            seq = named[key]
            if item is None or item.get("seq") != seq or not isinstance(item.get("hash"), str):
                bad += 1
                continue
            heads[seq] = (item["hash"], str(item.get("at", "")))
            if mode != LOCK_MODE:
                why = f"is not under {LOCK_MODE} retention (not written by the engine)"
                noted.append((seq, f"anchor object {key} {why}"))
            if versions[key] > 1:
                why = f"was overwritten ({versions[key]} versions); the first is compared"
                noted.append((seq, f"anchor object {key} {why}"))
            if key in deleted:
                why = "was deleted (a delete marker hides it); the locked version is compared"
                noted.append((seq, f"anchor object {key} {why}"))
        if bad:
            noted.append((None, f"the anchor {self.where} has {bad} unreadable object(s)"))
        return heads, noted

    def _fetch(self, key: str, version: str) -> tuple[dict[str, Any] | None, str | None]:
        """One anchored head (None if unreadable) and the Object Lock mode of its version."""
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=key, VersionId=version)
        except (ClientError, BotoCoreError) as exc:
            code, message = _error(exc)
            raise AnchorUnavailable(
                f"the audit anchor {self.where}: cannot read {key} (version {version}): {code}: {message}"
            ) from None
        mode = answer.get("ObjectLockMode")
        try:
            item = json.loads(answer["Body"].read())
        except ValueError:
            return None, mode
        return (item if isinstance(item, dict) else None), mode


def secret_region(secret_id: str) -> str | None:
    """The region of a secret's ARN (``arn:aws:secretsmanager:REGION:...``); None for a name."""
    parts = secret_id.split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[2] == "secretsmanager" and parts[3]:
        return parts[3]
    return None


def secrets_manager_key(client: Any, secret_id: str) -> bytes:
    """The audit key held by the secret ``secret_id`` (ARN or name; module docstring)."""
    try:
        answer = client.get_secret_value(SecretId=secret_id)
    except (ClientError, BotoCoreError) as exc:
        code, message = _error(exc)
        if code == "ResourceNotFoundException":
            raise ConfigError(
                f"the audit key secret {secret_id} does not exist in Secrets Manager (MANGAASSIST_AUDIT_KEY)"
            ) from None
        raise ConfigError(f"cannot read the audit key secret {secret_id}: {code}: {message}") from None
    binary, text = answer.get("SecretBinary"), answer.get("SecretString")
    if binary is not None:
        key, form = bytes(binary), "SecretBinary"
    elif text is not None:
        form = "SecretString"
        try:
            key = base64.b64decode(str(text).strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                f"the audit key secret {secret_id}: its SecretString is not base64 "
                f"(expected the base64 of {KEY_BYTES} random bytes)"
            ) from None
    else:
        raise ConfigError(f"the audit key secret {secret_id} has no value")
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"the audit key secret {secret_id} holds {len(key)} bytes ({form}); expected exactly "
            f"{KEY_BYTES} (SecretBinary: the raw bytes, SecretString: their base64)"
        )
    return key
