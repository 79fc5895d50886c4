"""Content-addressed artifacts: a path and the sha256 digest of what it holds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """Something a pipeline ships, named by its content.

    ``digest`` is the hex sha256 of the bytes at ``path`` when the artifact was recorded;
    two artifacts with the same digest are the same release.
    """

    path: Path
    digest: str

    @classmethod
    def of(cls, path: Path) -> Artifact:
        return cls(path=path, digest=sha256_file(path))

    @property
    def short(self) -> str:
        return self.digest[:12]
