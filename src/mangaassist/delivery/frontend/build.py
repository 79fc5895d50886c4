"""The widget's build: the source tree in, the files of one release out (CD-05's ``build`` step).

``build_frontend(source, workdir, cache)``:

1. copies ``source`` (``frontend/``) into ``workdir/src`` without ``node_modules`` and ``dist``;
2. links ``workdir/src/node_modules`` to ``cache/<key>/node_modules``, where ``key`` is the hash of
   ``package-lock.json``, ``package.json`` and node's version: ``npm ci`` runs there only when no
   such directory exists yet (installed beside it, then renamed, so a killed install leaves nothing
   half made), so a second build of the same dependencies installs nothing;
3. runs ``npm run build`` and reads ``dist/``: every file with its sha256 and size, the release id
   the site will give it (``platform.static_site.release_id_of``), the build's time.

The same source gives the same files: Vite names chunks by content and nothing of the build's
location ends up in them (the tests build twice and compare). A build without ``index.html`` or
``loader.js`` is a ``BuildError`` naming what is missing; nothing is published after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.platform.static_site import REQUIRED_ENTRY_FILES, file_digest, release_id_of

SKIPPED = frozenset({"node_modules", "dist", ".vite"})
"""Top-level folders of the source never copied: installed or built, never sources."""
NPM_TIMEOUT_S = 600.0
KEPT_RUN_DIRS = 20
"""Run directories (source copy, ``dist``, screenshots) kept under ``HOME/frontend/runs``."""

Progress = Callable[[str], None]


class BuildError(MangaAssistError):
    """The build (or an npm command) failed, or produced no release: the message says why."""


@dataclass(frozen=True)
class Built:
    """One build's result."""

    source: Path
    dist: Path
    files: dict[str, dict[str, Any]]
    """Release path -> ``{"sha256", "size"}``, sorted by path."""
    release_id: str
    build_s: float
    npm_ci_s: float
    node_modules: str
    """``installed`` (``npm ci`` ran) or ``cached`` (a node_modules of the same lock was reused)."""
    node_modules_key: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "dist": str(self.dist),
            "files": self.files,
            "release_id": self.release_id,
            "build_s": round(self.build_s, 3),
            "npm_ci_s": round(self.npm_ci_s, 3),
            "node_modules": self.node_modules,
            "node_modules_key": self.node_modules_key,
        }


def npm() -> str:
    """The ``npm`` executable (``ConfigError`` saying how to install it when there is none)."""
    found = shutil.which("npm")
    if found is None:
        raise ConfigError(
            "npm is not installed: the widget's build needs node >= 20.19 and npm "
            "(scripts/install-browser.sh installs Debian's nodejs and npm as root)"
        )
    return found


def run_npm(args: list[str], cwd: Path, *, timeout_s: float = NPM_TIMEOUT_S) -> str:
    """Run ``npm ARGS`` in ``cwd``; its output (stdout and stderr), or ``BuildError`` with its tail."""
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0", "CI": "1"}
    try:
        done = subprocess.run(
            [npm(), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"npm {' '.join(args)} did not finish within {timeout_s:.0f}s (in {cwd})") from None
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        raise BuildError(f"npm {' '.join(args)} failed (exit {done.returncode}): {tail(output)}")
    return output


def tail(text: str, lines: int = 15, chars: int = 3000) -> str:
    """The last lines of a command's output, on one line each, for an error message."""
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-chars:] or "no output"


def check_source(source: Path) -> Path:
    """A widget source directory: it has ``package.json`` and ``package-lock.json``."""
    source = source.resolve()
    missing = [name for name in ("package.json", "package-lock.json") if not (source / name).is_file()]
    if not source.is_dir() or missing:
        raise ConfigError(
            f"{source} is not a widget source directory"
            + (f" (it lacks {', '.join(missing)})" if source.is_dir() else " (no such directory)")
        )
    return source


def copy_source(source: Path, dest: Path) -> Path:
    """Copy the widget's source to ``dest`` (replaced), without ``node_modules``, ``dist``, ``.vite``."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(
        source,
        dest,
        symlinks=True,
        ignore=lambda directory, names: [n for n in names if Path(directory) == source and n in SKIPPED],
    )
    return dest


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        raise ConfigError("node is not installed (scripts/install-browser.sh installs Debian's nodejs)")
    done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip()


def dependencies_key(source: Path, node: str) -> str:
    """The cache key of a source's ``node_modules``: its lock file, its package.json and node's
    version (a native module built for one node may not load in another)."""
    digest = hashlib.sha256()
    for name in ("package-lock.json", "package.json"):
        digest.update(name.encode() + b"\0" + (source / name).read_bytes() + b"\0")
    digest.update(node.encode())
    return digest.hexdigest()[:16]


def ensure_node_modules(source: Path, cache: Path, progress: Progress) -> tuple[Path, str, float, str]:
    """``cache/<key>/node_modules`` for ``source``'s dependencies, installed with ``npm ci`` unless
    it exists: (its path, ``installed`` or ``cached``, seconds spent, key)."""
    key = dependencies_key(source, node_version())
    target = cache / key
    modules = target / "node_modules"
    if (target / ".complete").is_file() and modules.is_dir():
        progress(f"node_modules cached for package-lock {key}: npm ci skipped")
        return modules, "cached", 0.0, key
    progress(f"npm ci (no node_modules cached for package-lock {key} yet)")
    cache.mkdir(parents=True, exist_ok=True)
    scratch = cache / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(source / name, scratch / name)
    started = time.monotonic()
    try:
        run_npm(["ci", "--no-audit", "--no-fund"], scratch)
        (scratch / "node_modules").mkdir(exist_ok=True)  # none when there is nothing to install
        (scratch / ".complete").write_text(json.dumps({"key": key, "at": time.time()}))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return modules, "installed", time.monotonic() - started, key


def link_node_modules(src: Path, modules: Path) -> None:
    """``src/node_modules`` -> the cached ``modules`` (a symlink; the build resolves through it)."""
    link = src / "node_modules"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(modules, target_is_directory=True)


def read_dist(dist: Path) -> dict[str, bytes]:
    """Every file under ``dist`` by its release path (``/``-separated, relative)."""
    if not dist.is_dir():
        return {}
    return {
        path.relative_to(dist).as_posix(): path.read_bytes()
        for path in sorted(dist.rglob("*"))
        if path.is_file()
    }


def file_list(files: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    """Release path -> ``{"sha256", "size"}``, sorted by path: what the build step records."""
    return {
        path: {"sha256": file_digest(bytes(files[path])), "size": len(files[path])} for path in sorted(files)
    }


def release_of(listed: Mapping[str, Mapping[str, Any]]) -> str:
    """The release id a file list is uploaded as (``platform.static_site.release_id_of``)."""
    return release_id_of({path: str(meta["sha256"]) for path, meta in listed.items()})


def missing_entry_files(files: Mapping[str, object]) -> list[str]:
    """The entry files a release needs (``index.html``, ``loader.js``) that ``files`` lacks."""
    return [name for name in REQUIRED_ENTRY_FILES if name not in files]


def check_entry_files(files: Mapping[str, object], dist: Path) -> None:
    missing = missing_entry_files(files)
    if missing:
        raise BuildError(
            f"the build produced no {' and no '.join(missing)} in {dist} "
            f"(a release needs {', '.join(REQUIRED_ENTRY_FILES)}): nothing is published"
        )


def build_frontend(source: Path, workdir: Path, cache: Path, progress: Progress | None = None) -> Built:
    """Build ``source`` in ``workdir/src`` with ``node_modules`` from ``cache`` (see the module)."""
    say = progress or (lambda _message: None)
    source = check_source(source)
    src = workdir / "src"
    say(f"copying {source} (without node_modules, dist)")
    copy_source(source, src)
    modules, how, ci_s, key = ensure_node_modules(src, cache, say)
    link_node_modules(src, modules)
    say("npm run build")
    started = time.monotonic()
    run_npm(["run", "build"], src)
    build_s = time.monotonic() - started
    dist = src / "dist"
    files = read_dist(dist)
    check_entry_files(files, dist)
    listed = file_list(files)
    return Built(src, dist, listed, release_of(listed), build_s, ci_s, how, key)


def load_release(dist: Path, listed: Mapping[str, Mapping[str, Any]]) -> dict[str, bytes]:
    """The files of a recorded build, read again from ``dist`` and checked against the recorded
    sha256s (a run resumed in another process uploads exactly what it built and checked)."""
    files = read_dist(dist)
    if sorted(files) != sorted(listed):
        raise BuildError(
            f"{dist} no longer holds the files the build recorded "
            f"({len(files)} files, {len(listed)} recorded): build again (start a new run)"
        )
    for path, meta in listed.items():
        if file_digest(files[path]) != meta["sha256"]:
            raise BuildError(f"{dist}/{path} changed since the build recorded it: start a new run")
    return files


def prune_runs(runs: Path, keep: int = KEPT_RUN_DIRS, *, spare: str | None = None) -> list[str]:
    """Delete all but the ``keep`` newest run directories under ``runs`` (never ``spare``)."""
    if not runs.is_dir():
        return []
    dirs = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for old in dirs[keep:]:
        if old.name != spare:
            with contextlib.suppress(OSError):
                shutil.rmtree(old)
            removed.append(old.name)
    return removed
