"""``StaticSite`` on the local platform: content-addressed files and SQLite under the state directory.

Layout under the site's directory (``HOME/sites/widget``, the site ``infra/resources.toml``
declares and CD-02 provisions):

=========================  ===================================================================
``objects/<sha256>``       every stored file once, by content (an asset shared by releases is
                           one object)
``releases/<id>.json``     a release's manifest: path -> sha256 and size, when it was uploaded
``pointers.sqlite3``       one pointer per channel, every move of it, the invalidations (WAL)
``.lock``                  ``upload`` and ``point`` hold it shared, ``gc`` exclusive
=========================  ===================================================================

Nothing is lost on a crash: a file is written to a temporary name, fsynced and renamed (then its
directory fsynced), objects before the manifest that names them, so a manifest never names a
missing object; a pointer move is one SQLite transaction (the pointer and its history row
together). The edge (``platform/local/edge.py``) reads the pointer on every request for an entry
file and finds assets in any stored release (``locate_asset``), newest first.

Channels are the environment's own (served at ``/``) and ``preview/<branch>`` (served at
``/previews/<branch>/``). Invalidations are records only: the edge serves entry files
``no-cache``, so there is no cache to purge.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.local.sqlite_tx import immediate
from mangaassist.platform.static_site import (
    PREVIEW_PREFIX,
    RETAINED_RELEASES,
    Collected,
    Invalidation,
    PointerChange,
    ReleaseFile,
    ReleaseInfo,
    StaticSiteError,
    Upload,
    check_branch,
    check_channel,
    check_invalidation_paths,
    check_release,
    file_digest,
    is_asset,
    now_iso,
    preview_channel,
    release_id_of,
    retained_ids,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pointers (
  channel TEXT PRIMARY KEY, release TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS moves (
  channel TEXT NOT NULL, seq INTEGER NOT NULL, release TEXT NOT NULL, previous TEXT,
  at TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (channel, seq));
CREATE TABLE IF NOT EXISTS invalidations (
  n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, channel TEXT NOT NULL,
  paths TEXT NOT NULL, at TEXT NOT NULL);
"""


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one: a temporary
    file in the same folder, fsynced, renamed over ``path``, then the folder fsynced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStaticSite:
    """``StaticSite`` in a directory. ``base_url``: the edge's URL (or a callable giving it when
    asked), what ``url`` builds on. Safe to share between threads (the edge's handlers)."""

    def __init__(self, root: Path, *, environment: str, base_url: str | Callable[[], str] = "") -> None:
        self.root = root
        self.environment = check_channel(environment)
        self._base_url = base_url
        self.objects = root / "objects"
        self.releases_dir = root / "releases"
        for directory in (self.objects, self.releases_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            root / "pointers.sqlite3", check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._manifests: dict[str, tuple[int, ReleaseInfo]] = {}
        self._assets: dict[str, tuple[str, str]] = {}
        self._assets_stamp: int | None = None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- helpers ----------------------------------------------------------------------------------

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._conn, self._lock)

    @contextmanager
    def _site_lock(self, exclusive: bool) -> Iterator[None]:
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _channel(self, channel: str) -> str:
        check_channel(channel)
        if channel != self.environment and not channel.startswith(PREVIEW_PREFIX):
            raise ConfigError(
                f"channel {channel!r}: this site serves environment {self.environment} "
                f"(channels: {self.environment}, preview/<branch>)"
            )
        return channel

    def blob(self, sha256: str) -> Path:
        """Where the object of a file with this sha256 is stored."""
        return self.objects / sha256

    def _manifest_path(self, release_id: str) -> Path:
        if not release_id.startswith("r-") or not release_id[2:].isalnum():
            raise NotFoundError(f"no release {release_id!r}")
        return self.releases_dir / f"{release_id}.json"

    def _load(self, release_id: str) -> tuple[int, ReleaseInfo]:
        cached = self._manifests.get(release_id)
        if cached is not None:
            return cached
        try:
            raw = json.loads(self._manifest_path(release_id).read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no release {release_id!r} in {self.root}") from None
        files = tuple(
            ReleaseFile(path, str(meta["sha256"]), int(meta["size"]))
            for path, meta in sorted(raw["files"].items())
        )
        loaded = (int(raw["created_ns"]), ReleaseInfo(release_id, files, str(raw["created_at"])))
        self._manifests[release_id] = loaded  # manifests never change; gc may delete them
        return loaded

    def _stored(self) -> list[tuple[int, ReleaseInfo]]:
        """Every stored release, oldest upload first."""
        out = []
        for path in self.releases_dir.glob("r-*.json"):
            with contextlib.suppress(NotFoundError):  # deleted by gc meanwhile
                out.append(self._load(path.stem))
        return sorted(out, key=lambda pair: (pair[0], pair[1].release_id))

    # -- StaticSite -------------------------------------------------------------------------------

    def upload(self, files: Mapping[str, bytes]) -> Upload:
        check_release(files)
        digests = {path: file_digest(bytes(data)) for path, data in files.items()}
        rid = release_id_of(digests)
        with self._site_lock(exclusive=False):
            if self._manifest_path(rid).exists():
                return Upload(rid, (), tuple(sorted(files)))
            held = self._asset_index(force=True)
            for path, sha in digests.items():
                if is_asset(path) and path in held and held[path][0] != sha:
                    raise StaticSiteError(
                        f"asset {path} is stored with other content by release {held[path][1]}: "
                        "a hashed asset never changes (name it by its content)"
                    )
            uploaded: list[str] = []
            skipped: list[str] = []
            # assets first, then entry files, then the manifest naming them
            for path in sorted(files, key=lambda p: (not is_asset(p), p)):
                target = self.blob(digests[path])
                fresh = not target.exists()
                if fresh:
                    write_atomic(target, bytes(files[path]))
                (uploaded if fresh or not is_asset(path) else skipped).append(path)
            manifest = {
                "release": rid,
                "created_at": now_iso(),
                "created_ns": time.time_ns(),
                "files": {p: {"sha256": digests[p], "size": len(files[p])} for p in sorted(files)},
            }
            write_atomic(self._manifest_path(rid), json.dumps(manifest, indent=1).encode())
        return Upload(rid, tuple(sorted(uploaded)), tuple(sorted(skipped)))

    def point(self, channel: str, release_id: str, *, reason: str) -> PointerChange:
        self._channel(channel)
        with self._site_lock(exclusive=False):
            try:
                info = self.release(release_id)
            except NotFoundError:
                raise StaticSiteError(f"cannot point {channel} at {release_id}: it is not uploaded") from None
            missing = [f.path for f in info.files if not self.blob(f.sha256).exists()]
            if missing:
                raise StaticSiteError(f"release {release_id} lacks stored files: {', '.join(missing)}")
            with self._tx() as c:
                row = c.execute("SELECT release, seq FROM pointers WHERE channel=?", (channel,)).fetchone()
                if row is not None and row[0] == release_id:
                    return self._move(c, channel, int(row[1]))
                seq = (int(row[1]) if row else 0) + 1
                previous = row[0] if row else None
                c.execute(
                    "INSERT INTO pointers VALUES (?,?,?) ON CONFLICT(channel) DO UPDATE SET "
                    "release=excluded.release, seq=excluded.seq",
                    (channel, release_id, seq),
                )
                c.execute(
                    "INSERT INTO moves VALUES (?,?,?,?,?,?)",
                    (channel, seq, release_id, previous, now_iso(), reason),
                )
                return self._move(c, channel, seq)

    def _move(self, c: sqlite3.Connection, channel: str, seq: int) -> PointerChange:
        row = c.execute(
            "SELECT release, previous, at, reason FROM moves WHERE channel=? AND seq=?", (channel, seq)
        ).fetchone()
        return PointerChange(channel, row[0], row[1], row[2], row[3], seq)

    def current(self, channel: str) -> str | None:
        self._channel(channel)
        with self._lock:
            row = self._conn.execute("SELECT release FROM pointers WHERE channel=?", (channel,)).fetchone()
        return None if row is None else str(row[0])

    def history(self, channel: str) -> list[PointerChange]:
        self._channel(channel)
        with self._lock:
            rows = self._conn.execute(
                "SELECT release, previous, at, reason, seq FROM moves WHERE channel=? ORDER BY seq",
                (channel,),
            ).fetchall()
        return [PointerChange(channel, r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    def release(self, release_id: str) -> ReleaseInfo:
        return self._load(release_id)[1]

    def releases(self) -> list[ReleaseInfo]:
        return [info for _, info in self._stored()]

    def read(self, release_id: str, path: str) -> bytes:
        found = self.release(release_id).file(path)
        if found is None:
            raise NotFoundError(f"release {release_id} has no file {path}")
        try:
            return self.blob(found.sha256).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"release {release_id}: {path} is no longer stored") from None

    def invalidate(self, channel: str, paths: list[str]) -> Invalidation:
        self._channel(channel)
        given = check_invalidation_paths(paths)
        made = Invalidation("I" + secrets.token_hex(7).upper(), channel, given, now_iso())
        with self._tx() as c:
            c.execute(
                "INSERT INTO invalidations (id, channel, paths, at) VALUES (?,?,?,?)",
                (made.id, channel, json.dumps(list(given)), made.at),
            )
        return made

    def invalidations(self, channel: str) -> list[Invalidation]:
        self._channel(channel)
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, paths, at FROM invalidations WHERE channel=? ORDER BY n", (channel,)
            ).fetchall()
        return [Invalidation(r[0], channel, tuple(json.loads(r[1])), r[2]) for r in rows]

    def previews(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT channel FROM pointers WHERE channel LIKE 'preview/%' ORDER BY channel"
            ).fetchall()
        return [str(r[0])[len(PREVIEW_PREFIX) :] for r in rows]

    def delete_preview(self, branch: str) -> bool:
        channel = preview_channel(check_branch(branch))
        with self._tx() as c:
            existed = c.execute("DELETE FROM pointers WHERE channel=?", (channel,)).rowcount > 0
            c.execute("DELETE FROM moves WHERE channel=?", (channel,))
            c.execute("DELETE FROM invalidations WHERE channel=?", (channel,))
        return existed

    def _pointed(self) -> dict[str, list[str]]:
        with self._lock:
            rows = self._conn.execute("SELECT channel, release FROM moves ORDER BY channel, seq").fetchall()
        pointed: dict[str, list[str]] = {}
        for channel, rid in rows:
            pointed.setdefault(str(channel), []).append(str(rid))
        return pointed

    def retained(self, keep: int = RETAINED_RELEASES) -> set[str]:
        uploads = [info.release_id for _, info in reversed(self._stored())]
        return retained_ids(uploads, self._pointed(), keep) & set(uploads)

    def gc(self, keep: int = RETAINED_RELEASES) -> Collected:
        if keep < 1:
            raise ConfigError(f"gc keep={keep}: at least 1 (the live releases are always kept)")
        with self._site_lock(exclusive=True):
            stored = self._stored()
            kept = self.retained(keep)
            used = {f.sha256 for _, info in stored if info.release_id in kept for f in info.files}
            dropped = []
            for _, info in stored:
                if info.release_id not in kept:
                    self._manifest_path(info.release_id).unlink(missing_ok=True)
                    self._manifests.pop(info.release_id, None)
                    dropped.append(info.release_id)
            removed = 0
            for blob in self.objects.iterdir():
                if blob.name not in used and not blob.name.startswith("."):
                    blob.unlink(missing_ok=True)
                    removed += 1
        return Collected(tuple(dropped), removed)

    def url(self, channel: str) -> str:
        self._channel(channel)
        base = (self._base_url() if callable(self._base_url) else self._base_url).rstrip("/")
        if channel.startswith(PREVIEW_PREFIX):
            return f"{base}/previews/{channel[len(PREVIEW_PREFIX) :]}/"
        return f"{base}/"

    # -- what the edge reads ----------------------------------------------------------------------

    def _asset_index(self, force: bool = False) -> dict[str, tuple[str, str]]:
        """Asset path -> (sha256, newest stored release holding it), rebuilt when a release was
        added or deleted (the ``releases/`` folder's mtime moved)."""
        stamp = self.releases_dir.stat().st_mtime_ns
        with self._lock:
            if not force and stamp == self._assets_stamp:
                return self._assets
        index: dict[str, tuple[str, str]] = {}
        for _, info in self._stored():  # oldest first: newer releases overwrite
            for f in info.assets:
                index[f.path] = (f.sha256, info.release_id)
        with self._lock:
            self._assets, self._assets_stamp = index, stamp
        return index

    def locate_asset(self, path: str, *, fresh: bool = False) -> tuple[str, str] | None:
        """A hashed asset of any stored release: (sha256, the newest release holding it), or None.
        A miss (or ``fresh``) reads every manifest again: a release may have been stored or
        collected within one tick of the ``releases/`` folder's mtime."""
        return self._asset_index(force=fresh).get(path) or self._asset_index(force=True).get(path)

    def entry(self, channel: str, path: str) -> tuple[str, ReleaseFile | None] | None:
        """The channel's live release and its entry file at ``path`` (None if it has none); None if
        the channel has no live release."""
        rid = self.current(channel)
        if rid is None:
            return None
        found = self.release(rid).file(path)
        return rid, (found if found is not None and not is_asset(path) else None)

    def describe(self) -> dict[str, Any]:
        """Channels and their live releases, stored releases and objects (``status``)."""
        with self._lock:
            rows = self._conn.execute("SELECT channel, release FROM pointers ORDER BY channel").fetchall()
        return {
            "root": str(self.root),
            "channels": {str(c): str(r) for c, r in rows},
            "releases": len(list(self.releases_dir.glob("r-*.json"))),
        }
