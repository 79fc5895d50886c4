"""Source artifacts: a working tree packed into a reproducible tar, named by its sha256.

``pack_source`` is called by ``mangaassist up`` (revision ``r1`` from the working tree) and by
pipelines; ``unpack`` by the supervisor before a revision's workers start, after checking the
digest, so a revision runs exactly the bytes it was deployed with even if the tree changes later.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from mangaassist.core.artifact import Artifact, sha256_bytes, sha256_file
from mangaassist.core.errors import ConfigError

_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
REVISION_DATA = "revision-data"
"""The folder of an artifact holding the project's ``data/`` as the revision was built with it (the
catalog and the seed orders): a worker of the revision reads its data there
(``MANGAASSIST_DATA_DIR``, set by the supervisor), as the container image reads the ``data/`` it
copied, so a catalog change ships as a new revision through the canary and a rollback restores the
old catalog. Not a Python identifier, so nothing imports it."""
_SKIP_SUFFIXES = (".pyc", ".pyo")


def _files(source: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.endswith(_SKIP_SUFFIXES))
    return out


def pack_source(source: Path, store: Path) -> Artifact:
    """Pack ``source`` (e.g. ``src/``) into ``store/<sha256>.tar``; same tree, same digest."""
    if not source.is_dir():
        raise ConfigError(f"source tree {source} does not exist")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _files(source):
            info = tarfile.TarInfo(str(path.relative_to(source)))
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    digest = sha256_bytes(blob)
    store.mkdir(parents=True, exist_ok=True)
    target = store / f"{digest}.tar"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=store, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, target)
    return Artifact(path=target, digest=digest)


def unpack(artifact: Artifact, dest_root: Path) -> Path:
    """Check the artifact's digest and unpack it once to ``dest_root/<digest>``; return that dir."""
    dest = dest_root / artifact.digest
    if (dest / ".complete").exists():
        return dest
    if not artifact.path.is_file():
        raise ConfigError(f"artifact {artifact.path} does not exist")
    actual = sha256_file(artifact.path)
    if actual != artifact.digest:
        raise ConfigError(
            f"artifact {artifact.path} has digest {actual[:12]}, expected {artifact.digest[:12]}"
        )
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest_root, prefix=".unpack-"))
    with tarfile.open(artifact.path) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / ".complete").write_text(artifact.digest)
    try:
        os.replace(tmp, dest)
    except OSError:  # another deploy unpacked the same digest first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
