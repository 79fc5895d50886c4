"""Where the audit log's committed heads are anchored, outside its database (``audit`` module docstring).

``MANGAASSIST_AUDIT_ANCHOR`` chooses:

* unset, or a path: a file of JSON lines (``FileAnchor``), ``secrets/audit-anchor.jsonl`` by default;
* ``s3://BUCKET/PREFIX``: one S3 object per committed head, written under Object Lock retention in
  COMPLIANCE mode (``MANGAASSIST_AUDIT_ANCHOR_RETENTION_DAYS``, default 400), never overwritten. The
  AWS implementation is ``platform.aws.audit_s3.S3AuditAnchor``, made by ``platform.factory``; the
  engine only knows this module's ``AuditAnchor`` protocol. A bucket without Object Lock is refused.

Whatever the anchor, a head is written after its transaction committed, never before; a write
that fails raises to the caller (the commit stands: the anchor misses that head, which ``verify``
tolerates, but never holds a head that was rolled back).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ANCHOR_ENV = "MANGAASSIST_AUDIT_ANCHOR"
RETENTION_ENV = "MANGAASSIST_AUDIT_ANCHOR_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 400
MAX_RETENTION_DAYS = 36_500  # S3's limit: 100 years


Heads = dict[int, tuple[str, str]]
"""The anchored heads by sequence number: (hash, time)."""
Noted = list[tuple[int | None, str]]
"""What looked wrong while reading the anchor, ``(seq or None, message)``: unreadable lines or
objects, an overwritten or deleted object."""


class AuditAnchor(Protocol):
    """Somewhere the committed heads go that the database's writers cannot rewrite."""

    @property
    def where(self) -> str:
        """What the messages name: a path, ``s3://bucket/prefix``."""
        ...

    def append(self, head: tuple[int, str, str]) -> None:
        """Anchor one committed head (seq, hash, time)."""
        ...

    def read(self) -> tuple[Heads, Noted]:
        """Every head anchored so far, and what looked wrong while reading them."""
        ...


def write_anchor(path: Path, head: tuple[int, str, str]) -> None:
    """Append one committed head to the anchor file (created 0600; one JSON line per commit, written
    with ``O_APPEND`` so concurrent processes never overwrite each other's lines)."""
    seq, digest, at = head
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = json.dumps({"seq": seq, "hash": digest, "at": at}, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_anchor(path: Path) -> tuple[Heads, int]:
    """The anchored heads by sequence number ((hash, time)), and how many lines were unreadable."""
    anchored: Heads = {}
    bad = 0
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}, 0
    for line in text.splitlines():
        try:
            item = json.loads(line)
            anchored[int(item["seq"])] = (str(item["hash"]), str(item.get("at", "")))
        except (ValueError, KeyError, TypeError):
            bad += 1
    return anchored, bad


@dataclass(frozen=True)
class FileAnchor:
    """The anchor as a local file of JSON lines (``write_anchor``, ``read_anchor``)."""

    path: Path

    @property
    def where(self) -> str:
        return str(self.path)

    def append(self, head: tuple[int, str, str]) -> None:
        write_anchor(self.path, head)

    def read(self) -> tuple[Heads, Noted]:
        heads, bad = read_anchor(self.path)
        noted: Noted = [(None, f"the anchor {self.path} has {bad} unreadable line(s)")] if bad else []
        return heads, noted


def setting() -> str:
    """``MANGAASSIST_AUDIT_ANCHOR`` as set (stripped; empty when unset)."""
    return os.environ.get(ANCHOR_ENV, "").strip()


def is_s3(value: str) -> bool:
    return value.lower().startswith("s3://")


def retention_days() -> int:
    """``MANGAASSIST_AUDIT_ANCHOR_RETENTION_DAYS`` (default 400): how long each anchored head is
    locked; a whole number of days from 1 to 36500. Raises ``ValueError`` naming the variable."""
    raw = os.environ.get(RETENTION_ENV, "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise ValueError(
            f"{RETENTION_ENV}={raw!r}: expected a whole number of days from 1 to {MAX_RETENTION_DAYS}"
        )
    return days
