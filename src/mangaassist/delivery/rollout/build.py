"""Build the service's release artifact: a wheel from a source tree, stored and named by sha256.

``build_release(source, store)`` copies the project (``pyproject.toml`` and ``src/``) to a scratch
directory, builds a wheel there with ``pip wheel`` (no dependencies, no network, no build
isolation, ``SOURCE_DATE_EPOCH`` fixed so the same tree gives the same bytes), stores it as
``store/wheels/<sha256>.whl``, and turns its package files, plus the project's ``data/`` (the
catalog and seed orders the chatbot reads, in ``revision-data/``: ``platform.artifacts.REVISION_DATA``),
into the runnable artifact the platform deploys: a reproducible tar, ``store/<sha256>.tar``
(``platform.local.artifacts.pack_source``). So a change to ``data/`` alone is a new revision, as it
is a new image on AWS (the ``Dockerfile`` copies ``data/``). The revision's digest is the tar's; the
wheel's digest is recorded next to it. Releases are cached by the digest of the tree they were
built from (``pyproject.toml``, ``src/``, ``data/``), so rebuilding an unchanged tree costs a hash.

A ``source`` without ``pyproject.toml`` (a bare package tree, like ``src/``) is packed as it is;
``import_release(file, store)`` takes a built ``.whl`` or a ``.tar`` made by ``pack_source``.
Called by the CD-01 pipeline's build step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mangaassist.core.artifact import Artifact, sha256_file
from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.platform.artifacts import REVISION_DATA, pack_source

_SKIP = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist"}


@dataclass(frozen=True)
class Release:
    """What a deploy ships: the runnable artifact and where it came from."""

    artifact: Artifact
    kind: str
    """``wheel`` (built or given), ``tree`` (a package tree packed as is) or ``tar`` (given)."""
    source: str
    wheel: str | None = None
    wheel_digest: str | None = None
    cached: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "digest": self.artifact.digest,
            "path": str(self.artifact.path),
            "kind": self.kind,
            "source": self.source,
            "wheel": self.wheel,
            "wheel_digest": self.wheel_digest,
            "cached": self.cached,
        }


def tree_digest(root: Path, parts: tuple[str, ...]) -> str:
    """sha256 over the paths and bytes of every file under ``root/part`` (caches skipped)."""
    digest = hashlib.sha256()
    for part in parts:
        base = root / part
        files = [base] if base.is_file() else sorted(_walk(base))
        for path in files:
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _walk(base: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in _SKIP and not d.endswith(".egg-info")]
        out += [Path(dirpath) / f for f in filenames if not f.endswith((".pyc", ".pyo"))]
    return out


def build_release(source: Path, store: Path, python: str = sys.executable) -> Release:
    """Build (or reuse) the wheel of the project at ``source``; a bare tree is packed as is."""
    source = source.resolve()
    if not source.is_dir():
        raise ConfigError(f"source {source} is not a directory")
    if not (source / "pyproject.toml").is_file():
        return Release(pack_source(source, store), "tree", str(source))
    if not (source / "src").is_dir():
        raise ConfigError(f"{source}: has pyproject.toml but no src/ to build")
    data = source / "data" if (source / "data").is_dir() else None
    key = tree_digest(source, ("pyproject.toml", "src", *(("data",) if data else ())))
    index = store / "wheels" / "by-tree" / f"{key}.json"
    if index.is_file():
        known = json.loads(index.read_text())
        wheel = Path(known["wheel"])
        tar = store / f"{known['digest']}.tar"
        if wheel.is_file() and tar.is_file() and sha256_file(tar) == known["digest"]:
            return Release(
                Artifact(tar, known["digest"]), "wheel", str(source), str(wheel), known["wheel_digest"], True
            )
    wheel = _pip_wheel(source, store / "wheels", python)
    release = import_release(wheel, store, source=str(source), data=data)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(
        json.dumps(
            {"wheel": release.wheel, "wheel_digest": release.wheel_digest, "digest": release.artifact.digest}
        )
    )
    return release


def _pip_wheel(source: Path, wheels: Path, python: str) -> Path:
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mangaassist-build-") as scratch:
        work = Path(scratch) / "project"
        work.mkdir()
        shutil.copy2(source / "pyproject.toml", work / "pyproject.toml")
        for extra in ("README.md", "LICENSE"):
            if (source / extra).is_file():
                shutil.copy2(source / extra, work / extra)
        shutil.copytree(
            source / "src",
            work / "src",
            ignore=lambda _d, names: [n for n in names if n in _SKIP or n.endswith((".egg-info", ".pyc"))],
        )
        out = Path(scratch) / "out"
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_NO_INPUT": "1"}
        proc = subprocess.run(
            [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
             "-w", str(out), str(work)],
            capture_output=True, text=True, env=env, timeout=600, check=False,
        )  # fmt: skip
        built = sorted(out.glob("*.whl")) if out.is_dir() else []
        if proc.returncode != 0 or not built:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise MangaAssistError(f"wheel build of {source} failed: {' | '.join(tail)}")
        digest = sha256_file(built[0])
        target = wheels / f"{digest}.whl"
        if not target.exists():
            shutil.copy2(built[0], target)
        return target


def import_release(
    file: Path, store: Path, *, source: str | None = None, data: Path | None = None
) -> Release:
    """Store a given artifact by digest: a ``.whl`` becomes a runnable tar of its package files,
    with ``data`` (a directory) copied into its ``revision-data/``; a ``.tar`` is stored as given."""
    file = file.resolve()
    if not file.is_file():
        raise ConfigError(f"artifact {file} does not exist")
    if file.suffix == ".tar":
        artifact = Artifact.of(file)
        stored = store / f"{artifact.digest}.tar"
        if not stored.exists():
            store.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, stored)
        return Release(Artifact(stored, artifact.digest), "tar", source or str(file))
    if file.suffix != ".whl":
        raise ConfigError(f"artifact {file}: expected a .whl or a .tar made by `revisions deploy`")
    wheel_digest = sha256_file(file)
    with tempfile.TemporaryDirectory(prefix="mangaassist-wheel-") as scratch:
        tree = Path(scratch) / "tree"
        try:
            with zipfile.ZipFile(file) as zf:
                for name in zf.namelist():
                    top = name.split("/", 1)[0]
                    if top.endswith((".dist-info", ".data")) or name.endswith("/"):
                        continue
                    target = (tree / name).resolve()
                    if not target.is_relative_to(tree.resolve()):
                        raise ConfigError(f"artifact {file}: unsafe path {name!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
        except zipfile.BadZipFile as exc:
            raise ConfigError(f"artifact {file}: not a wheel ({exc})") from None
        if not tree.is_dir():
            raise ConfigError(f"artifact {file}: the wheel holds no package files")
        if (tree / REVISION_DATA).exists():
            raise ConfigError(f"artifact {file}: the wheel holds a top-level {REVISION_DATA}/")
        if data is not None:
            shutil.copytree(
                data,
                tree / REVISION_DATA,
                ignore=lambda _d, names: [n for n in names if n in _SKIP or n.startswith(".")],
            )
        artifact = pack_source(tree, store)
    return Release(artifact, "wheel", source or str(file), str(file), wheel_digest)
