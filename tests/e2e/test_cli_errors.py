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


def test_a_service_the_environment_does_not_declare_is_refused_before_any_run(tmp_path: Path) -> None:
    """``--service`` names one of ``[environments.ENV.services]``: any other is refused with the
    service and the environment named, exit 2, before a run is recorded or anything is touched."""
    expected = (
        "service 'chatbot-burst' is not declared in environment dev (declared: none; a service CD-01 "
        "releases is a [environments.dev.services.chatbot-burst] table in mangaassist.toml; a run "
        "that releases a service can be resumed or aborted only while the service is declared, since "
        "where it runs, and so how to roll it back, comes from that table)"
    )
    for args in (
        ("deploy", "app", "--service", "chatbot-burst", "--yes"),
        ("deploy", "app", "--service", "chatbot-burst", "--dry-run"),
        ("rollback", "app", "--service", "chatbot-burst"),
        ("traffic", "--service", "chatbot-burst", "--duration", "1"),
    ):
        done = cli(tmp_path, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in " ".join(done.stderr.split()), (args, done.stderr)
        assert "Traceback" not in done.stderr
    done = cli(tmp_path, "deploy", "app", "--service", "chatbot-burst", "--yes", "--json")
    assert (
        done.returncode == 2
        and '"exit_code": 2' in done.stdout
        and "not declared in environment dev" in done.stdout
    )
    assert not (tmp_path / "home" / "state.sqlite3").exists()  # no run was recorded


def test_deploy_services_lists_what_the_environment_declares(tmp_path: Path) -> None:
    done = cli(tmp_path, "deploy", "services", "--env", "dev")
    assert done.returncode == 0 and done.stdout == "", (done.stdout, done.stderr)  # none declared
    done = cli(tmp_path, "deploy", "services", "--env", "qa")
    assert done.returncode == 2 and "no [environments.qa] (have: dev)" in done.stderr
