"""The ``mangaassist`` command as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mangaassist.chatbot.launcher import ChatbotProcess
from tests.conftest import ROOT, server_env

pytestmark = pytest.mark.slow


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mangaassist.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["chat"], ["model"], ["model", "eval"], ["model", "train"], ["demo"], ["token", "issue"]],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_chat_prints_answer_intent_and_sources(chatbot: ChatbotProcess) -> None:
    result = run("chat", "Do you have Berserk in deluxe?", "--url", chatbot.url)
    assert result.returncode == 0, result.stderr
    assert "intent product_search" in result.stdout
    assert "Berserk [berserk]" in result.stdout  # the source id is shown, not eaten as markup


def test_chat_json_is_machine_readable(chatbot: ChatbotProcess) -> None:
    result = run("chat", "hello there", "--url", chatbot.url, "--json", "--session", "cli-json")
    body = json.loads(result.stdout)
    assert body["intent"] == "chitchat" and body["session_id"] == "cli-json"
    assert body["flags"] == {"fallback": False, "guardrail": False}


def test_chat_reports_an_unreachable_server() -> None:
    result = run("chat", "hi", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach the chatbot at http://127.0.0.1:9" in result.stderr
    assert "mangaassist up" in result.stderr


def test_model_eval_json(state_home: Path) -> None:
    result = run("model", "eval", "--json", env=server_env(state_home))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["macro_f1"] >= 0.85
    assert set(report["per_intent"]) >= {"product_search", "out_of_scope"}
    assert report["model"].startswith("intent-")


def test_demo_runs_start_to_finish(state_home: Path) -> None:
    # the application and model releases need the local platform: covered by
    # tests/integration/app_pipeline and model_pipeline (see test_deploy_cli.py), run by `make demo`
    result = run("demo", "--no-releases", env={**server_env(state_home), "COLUMNS": "240"})
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Intents right: 7/7" in out
    assert "Order MA-100001 was placed" in out  # the tour's customer signed in (POST /v1/signin)
    assert "Chatbot stopped (exit status 0)" in out
    assert "Knowledge-base release: ok" in out
    assert "Application releases: skipped" in out
    assert "Model releases: skipped" in out
    # the CD-07 segment, with the real chatbot following the config server's schema profile: an
    # apply SIGKILLed in its backfill resumed from its checkpoints, the order lookup reads the new
    # index, and session items the chatbot wrote under 0003's rule were in the new shape already
    assert "Database migrations (CD-07): ok" in out
    assert "resumed from their checkpoints" in out and "read through index" in out
    already = re.search(
        r"migrate apply 3 \(sessions gain their TTL\): succeeded; \d+ written, (\d+) already", out
    )
    assert already and int(already.group(1)) > 0, out
