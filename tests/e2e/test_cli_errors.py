"""CLI errors are one line that keeps the text as written: Rich markup in a message (a TOML table
name like ``[environments.qa]``) is printed, not swallowed as a style tag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_bracketed_name_in_an_error_is_printed_as_it_is(tmp_path: Path) -> None:
    config = tmp_path / "mangaassist.toml"
    config.write_text('[environments.dev]\nprovider = "local"\n')
    env = {**os.environ, "MANGAASSIST_PLATFORM_CONFIG": str(config), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "mangaassist.cli.main", "status", "--env", "qa"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "no [environments.qa] (have: dev)" in done.stderr
    assert "Traceback" not in done.stderr
