"""A project of its own for CD-07's command-line tests: a temporary root (the repository's files by
symlink, its own copy of ``migrations/``, so a test may change a migration file) and a temporary
state home (engine state, config server, tables). The CLI runs as real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mangaassist.platform.local.config_server import stop_server

REPO = Path(__file__).resolve().parents[3]
CLI = Path(sys.executable).with_name("mangaassist")
SKIP = {"migrations", ".mangaassist", ".git", ".venv", "node_modules"}


@dataclass
class Project:
    root: Path
    home: Path
    env: dict[str, str]

    def cli(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(CLI), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"mangaassist {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def json(self, *args: str, check: bool = True) -> Any:
        done = self.cli(*args, "--json", check=check)
        return json.loads(done.stdout)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "root"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in SKIP:
            (root / entry.name).symlink_to(entry)
    shutil.copytree(REPO / "migrations", root / "migrations")
    home = tmp_path / "home"
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")
    }
    env.update(
        MANGAASSIST_ROOT=str(root),
        MANGAASSIST_HOME=str(home),
        MANGAASSIST_ACTOR="tester",
        MANGAASSIST_CONFIG_POLL="0.5",
        MANGAASSIST_POLL_SECONDS="0.2",
        HF_HUB_OFFLINE="1",
    )
    yield Project(root, home, env)
    stop_server(home)
