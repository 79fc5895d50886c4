"""``StaticSite``: releases of the chat widget behind a CDN (CD-05).

A **release** is a set of files (path -> bytes) named by the content hash of the whole set
(``release_id``: sha256 over the sorted ``(path, sha256 of the file)`` pairs, the first 12 hex
digits prefixed ``r-``), so the same files are always the same release. Its files are of two kinds:

- **hashed assets**, under ``assets/`` (the bundler's chunks, named by their content): stored once
  and never changed or deleted on deploy, served ``immutable`` for a year, and served from *any*
  retained release, so a tab opened on an old release still gets its chunks after many deploys
  (skew protection);
- **entry files**, everything else (``index.html``, ``loader.js``, ``manifest.json``): what a
  channel's URL answers with, served ``no-cache`` from the release the channel points at.
  ``index.html`` and ``loader.js`` are required.

``upload`` stores a release's files (an asset already stored is not stored again: the result says
which paths were uploaded and which skipped) and never deletes anything. A **channel** (an
environment's name, or ``preview/<branch>``) has a **pointer** naming its live release; ``point``
moves it in one atomic step once every file of the release is stored, and keeps the pointer's
history (a rollback is pointing back). ``invalidate`` asks the CDN to forget a channel's entry
paths; ``gc`` deletes what retention no longer keeps: the last ``RETAINED_RELEASES`` releases ever
pointed at on each channel and the ``RETAINED_RELEASES`` newest uploads stay.

Providers: ``platform/local/static_site.py`` (content-addressed files and SQLite under the state
directory, served by the local edge ``platform/local/edge.py``) and
``platform/aws/static_site_s3.py`` (an S3 bucket behind a CloudFront distribution).
Callers: the frontend pipeline (CD-05) and the CLI, through ``platform.factory``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from mangaassist.core.errors import ConfigError, MangaAssistError

ASSET_PREFIX = "assets/"
"""Hashed assets live under this folder of a release; everything else is an entry file."""
REQUIRED_ENTRY_FILES = ("index.html", "loader.js")
ENTRY_FILES = (*REQUIRED_ENTRY_FILES, "manifest.json")
"""The entry files a widget release has (``manifest.json`` is optional)."""
RESERVED_TOP_LEVEL = ("releases", "channels", "previews")
"""First path segments the site's own layout uses (a release may not hold files there)."""
RETAINED_RELEASES = 20
"""How many releases pointed at per channel (and newest uploads) keep their assets served."""
PREVIEW_PREFIX = "preview/"
"""A preview channel is ``preview/<branch>``; it is served under ``/previews/<branch>/``."""
BRANCH_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAX_PATH_LENGTH = 512

ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
ENTRY_CACHE_CONTROL = "no-cache"
RELEASE_HEADER = "X-MangaAssist-Release"

_CONTENT_TYPES = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
_SEGMENT = re.compile(r"^[A-Za-z0-9._@~+-]+$")


class StaticSiteError(MangaAssistError):
    """The site refused a request: a release that is not stored, an asset path stored with other
    bytes, a channel changed by someone else meanwhile, a CDN call that failed."""


def now_iso() -> str:
    """The time as the site's records write it (UTC, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def file_digest(data: bytes) -> str:
    """The sha256 of one file (hex): how assets are stored and what ``ETag`` says."""
    return hashlib.sha256(data).hexdigest()


def release_id_of(digests: Mapping[str, str]) -> str:
    """The release id of files given as path -> sha256: ``r-`` and 12 hex digits of the sha256 over
    the sorted ``path NUL sha256 LF`` lines."""
    whole = hashlib.sha256()
    for path in sorted(digests):
        whole.update(f"{path}\0{digests[path]}\n".encode())
    return "r-" + whole.hexdigest()[:12]


def release_id(files: Mapping[str, bytes]) -> str:
    """The release id of a set of files (see ``release_id_of``)."""
    return release_id_of({path: file_digest(data) for path, data in files.items()})


def is_asset(path: str) -> bool:
    """Whether a release path is a hashed asset (under ``assets/``) rather than an entry file."""
    return path.startswith(ASSET_PREFIX)


def content_type(path: str) -> str:
    """The ``Content-Type`` a file of the site is served with."""
    suffix = posixpath.splitext(path)[1].lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def check_path(path: str) -> str:
    """A release path: relative, normalised, no ``..`` or ``.`` segment, plain characters, not
    under a reserved folder (``releases/``, ``channels/``, ``previews/``). ``ConfigError`` otherwise."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"release path {path!r}: empty")
    if len(path) > MAX_PATH_LENGTH:
        raise ConfigError(f"release path {path[:40]!r}...: longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/") or "\\" in path:
        raise ConfigError(f"release path {path!r}: must be relative, with / between folders")
    segments = path.split("/")
    if ".." in segments:
        raise ConfigError(f"release path {path!r}: '..' is not allowed")
    if posixpath.normpath(path) != path or "." in segments or "" in segments:
        raise ConfigError(f"release path {path!r}: not normalised (empty or '.' segment, trailing /)")
    bad = [s for s in segments if not _SEGMENT.match(s)]
    if bad:
        raise ConfigError(
            f"release path {path!r}: segment {bad[0]!r} has characters outside A-Z a-z 0-9 ._@~+-"
        )
    if segments[0] in RESERVED_TOP_LEVEL:
        raise ConfigError(
            f"release path {path!r}: {segments[0]}/ is reserved by the site's layout "
            f"(reserved: {', '.join(RESERVED_TOP_LEVEL)})"
        )
    return path


def check_release(files: Mapping[str, bytes]) -> None:
    """Refuse a release with a bad path or without its required entry files (``ConfigError``)."""
    for path, data in files.items():
        check_path(path)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ConfigError(f"release path {path!r}: content must be bytes, not {type(data).__name__}")
    missing = [name for name in REQUIRED_ENTRY_FILES if name not in files]
    if missing:
        raise ConfigError(
            f"the release lacks its entry file(s) {', '.join(missing)} "
            f"(a release needs {', '.join(REQUIRED_ENTRY_FILES)})"
        )


def check_branch(branch: str) -> str:
    """A preview's branch name: ``^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`` and no ``..`` (so no ``/``)."""
    if not isinstance(branch, str) or not BRANCH_PATTERN.match(branch) or ".." in branch:
        raise ConfigError(
            f"branch {branch!r}: a preview's branch must match {BRANCH_PATTERN.pattern} without '..' "
            "(no '/' or other path characters: name the branch's slug)"
        )
    return branch


def preview_channel(branch: str) -> str:
    """The channel of a branch's preview: ``preview/<branch>``."""
    return PREVIEW_PREFIX + check_branch(branch)


def check_channel(channel: str) -> str:
    """A channel: an environment's name or ``preview/<branch>`` (both with a branch's characters)."""
    if isinstance(channel, str) and channel.startswith(PREVIEW_PREFIX):
        check_branch(channel[len(PREVIEW_PREFIX) :])
        return channel
    if not isinstance(channel, str) or not BRANCH_PATTERN.match(channel) or ".." in channel:
        raise ConfigError(
            f"channel {channel!r}: expected an environment's name ({BRANCH_PATTERN.pattern}) "
            "or preview/<branch>"
        )
    return channel


def check_invalidation_paths(paths: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """URL paths of a channel to invalidate: at least one, each starting with ``/``."""
    if not paths:
        raise ConfigError("an invalidation needs at least one path")
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
            raise ConfigError(f"invalidation path {path!r}: expected a URL path such as /index.html")
    return tuple(paths)


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release as stored."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ReleaseInfo:
    """A stored release: its files (sorted by path) and when it was first uploaded."""

    release_id: str
    files: tuple[ReleaseFile, ...]
    created_at: str

    def file(self, path: str) -> ReleaseFile | None:
        return next((f for f in self.files if f.path == path), None)

    @property
    def assets(self) -> tuple[ReleaseFile, ...]:
        return tuple(f for f in self.files if is_asset(f.path))

    @property
    def entry_files(self) -> tuple[ReleaseFile, ...]:
        return tuple(f for f in self.files if not is_asset(f.path))


@dataclass(frozen=True)
class Upload:
    """What ``upload`` did: the release's id, the paths it stored and the paths already stored
    (assets of earlier releases; every path when the same release was uploaded before)."""

    release_id: str
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class PointerChange:
    """One move of a channel's pointer (``seq`` counts a channel's moves from 1)."""

    channel: str
    release_id: str
    previous: str | None
    at: str
    reason: str
    seq: int


@dataclass(frozen=True)
class Invalidation:
    """A request to the CDN to forget a channel's paths (``paths`` as given)."""

    id: str
    channel: str
    paths: tuple[str, ...]
    at: str


@dataclass(frozen=True)
class Collected:
    """What ``gc`` deleted: releases no longer kept and stored files no kept release references."""

    releases: tuple[str, ...]
    files: int


def retained_ids(
    uploads_newest_first: list[str], pointed: Mapping[str, list[str]], keep: int = RETAINED_RELEASES
) -> set[str]:
    """The releases retention keeps: the ``keep`` newest uploads, and on each channel the last
    ``keep`` distinct releases its pointer named (``pointed``: channel -> release ids, oldest
    first, repeats allowed)."""
    kept = set(uploads_newest_first[:keep])
    for moves in pointed.values():
        recent: list[str] = []
        for rid in reversed(moves):
            if rid not in recent:
                recent.append(rid)
            if len(recent) == keep:
                break
        kept.update(recent)
    return kept


class StaticSite(Protocol):
    """Releases of the widget, one pointer per channel, the CDN's invalidations."""

    def upload(self, files: Mapping[str, bytes]) -> Upload:
        """Store a release's files: assets by content (an asset stored before is skipped; the same
        path with other bytes is a ``StaticSiteError``), then its entry files and manifest. Never
        deletes. ``ConfigError`` for a bad path or a missing entry file, before anything is stored."""
        ...

    def point(self, channel: str, release_id: str, *, reason: str) -> PointerChange:
        """Make ``release_id`` the channel's live release in one step, once all its files are
        stored; recorded in the channel's history. Pointing at the live release again changes
        nothing and returns the last move. An unknown release is a ``StaticSiteError``."""
        ...

    def current(self, channel: str) -> str | None:
        """The channel's live release, None if it never had one."""
        ...

    def history(self, channel: str) -> list[PointerChange]:
        """Every move of the channel's pointer, oldest first."""
        ...

    def release(self, release_id: str) -> ReleaseInfo:
        """One stored release (``NotFoundError`` if it is not stored)."""
        ...

    def releases(self) -> list[ReleaseInfo]:
        """Every stored release, oldest upload first."""
        ...

    def read(self, release_id: str, path: str) -> bytes:
        """A file of a stored release (``NotFoundError`` if the release or its file is gone)."""
        ...

    def invalidate(self, channel: str, paths: list[str]) -> Invalidation:
        """Ask the CDN to forget these URL paths of the channel (``/index.html``, ``/loader.js``);
        recorded with an id and the time."""
        ...

    def invalidations(self, channel: str) -> list[Invalidation]:
        """The channel's invalidations, oldest first."""
        ...

    def previews(self) -> list[str]:
        """The branches that have a preview channel, sorted."""
        ...

    def delete_preview(self, branch: str) -> bool:
        """Remove a branch's preview channel (pointer, history, served entry files); False if it had
        none. Its releases stay until ``gc``."""
        ...

    def retained(self) -> set[str]:
        """The releases retention keeps (see ``retained_ids``)."""
        ...

    def gc(self, keep: int = RETAINED_RELEASES) -> Collected:
        """Delete the releases retention does not keep and the stored files no kept release uses."""
        ...

    def url(self, channel: str) -> str:
        """Where the channel is served (the edge's or the CDN's URL, ending in ``/``)."""
        ...
