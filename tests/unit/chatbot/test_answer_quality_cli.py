"""``mangaassist quality``: help, and a bad golden file refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mangaassist.cli.main import app


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["quality", "--help"])
    assert result.exit_code == 0
    for command in ("run", "baseline", "retrieval"):
        assert command in result.output
    run_help = CliRunner().invoke(app, ["quality", "run", "--help"])
    assert run_help.exit_code == 0 and "--json" in run_help.output and "--sample" in run_help.output


def test_a_bad_golden_file_is_named_with_its_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "golden.jsonl").write_text(
        '{"id": "a", "message": "hi", "intent": "chitchat"}\n'
        '{"id": "b", "message": "x", "intent": "greeting"}\n'
    )
    loaded: list[str] = []
    from mangaassist.chatbot import answer_quality

    monkeypatch.setattr(answer_quality.InProcessTarget, "load", classmethod(lambda cls: loaded.append("x")))
    result = CliRunner().invoke(app, ["quality", "run", "--golden", str(tmp_path), "--json"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "golden.jsonl:2: field 'intent'" in text and "greeting" in text
    assert loaded == []  # nothing was started
