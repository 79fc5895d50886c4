"""CD-05's commands: help on every one, and a bad preview branch refused before any run."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mangaassist.cli.main import app


@pytest.mark.parametrize(
    "command",
    [
        ["deploy", "frontend"],
        ["rollback", "frontend"],
        ["previews"],
        ["previews", "list"],
        ["previews", "delete"],
    ],
)
def test_every_frontend_command_has_help(command: list[str]) -> None:
    done = CliRunner().invoke(app, [*command, "--help"])
    assert done.exit_code == 0, done.output
    assert "Usage: mangaassist " + " ".join(command) in " ".join(done.output.split())


@pytest.mark.parametrize(
    "args",
    [
        ["deploy", "frontend", "--preview", "../x"],
        ["deploy", "frontend", "--preview", "a/b"],
        ["rollback", "frontend", "--preview", "a/b"],
        ["previews", "delete", "../x"],
    ],
)
def test_a_preview_branch_with_path_characters_is_a_clear_error(args: list[str]) -> None:
    done = CliRunner().invoke(app, [*args, "--json"])
    assert done.exit_code == 2, done.output
    assert "a preview's branch must match" in done.output and "no '/' or other path characters" in done.output
    assert "started" not in done.output  # no run was recorded


def test_a_missing_source_directory_is_a_clear_error() -> None:
    done = CliRunner().invoke(app, ["deploy", "frontend", "--source", "/nonexistent/widget"])
    assert done.exit_code == 2 and "--source /nonexistent/widget: no such directory" in done.output
