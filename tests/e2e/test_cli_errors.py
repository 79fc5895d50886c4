"""CLI errors are one line that keeps the text as written: Rich markup in a message (a TOML table
name like ``[environments.qa]``) is printed, not swallowed as a style tag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``mangaassist ARGS`` with a configuration holding only a local ``dev`` environment and its
    state under ``tmp_path/home``."""
    config = tmp_path / "mangaassist.toml"
    config.write_text('[environments.dev]\nprovider = "local"\n')
    env = {
        **os.environ,
        "MANGAASSIST_PLATFORM_CONFIG": str(config),
        "MANGAASSIST_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "mangaassist.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_a_bracketed_name_in_an_error_is_printed_as_it_is(tmp_path: Path) -> None:
    done = cli(tmp_path, "status", "--env", "qa")
    assert done.returncode == 2, done.stderr
    assert "no [environments.qa] (have: dev)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_scan_limit_of_an_unknown_severity_is_refused_before_any_run(tmp_path: Path) -> None:
    done = cli(tmp_path, "deploy", "app", "--scan-limit", "SEVERE=1", "--yes")
    assert done.returncode == 2, done.stderr
    assert "--scan-limit: unknown severity 'SEVERE' (known: CRITICAL, HIGH," in done.stderr
    assert not (tmp_path / "home" / "state.sqlite3").exists()  # no run was recorded
