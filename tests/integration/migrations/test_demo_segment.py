"""``make demo``'s CD-07 segment with the real chatbot: a worker that follows the config server's
``schema`` profile writes both shapes while the migrations run (items "already shaped" by the
chatbot), an apply SIGKILLed in its backfill resumes from its checkpoints, the order lookup reads
the new index, and no chat request fails."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.demo.migration import CLI, run_migration_demo
from mangaassist.platform.factory import platform_for


def test_the_migration_segment_passes_with_the_real_chatbot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("MANGAASSIST_HOME", str(home))
    config = platform_for("dev", home=home / "demo-config")
    url = config.config_server_url()
    out = io.StringIO()
    console = Console(file=out, width=120)
    try:
        deployed = subprocess.run(  # CD-02 provisions the tables and the orders index
            [str(CLI), "deploy", "infra", "--yes"], capture_output=True, text=True, timeout=300, check=False
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        server = ChatbotProcess(
            env={"MANGAASSIST_REVISION": "t", "MANGAASSIST_CONFIG_URL": url, "MANGAASSIST_CONFIG_POLL": "1"},
            port=0,
            log_path=home / "chat.log",
        )
        with server:
            failures = run_migration_demo(console, server.url, url, home)
    finally:
        config.stop_config_server()
        config.close()
    text = out.getvalue()
    assert failures == 0, text
    assert "resumed from their checkpoints" in text and "read through index" in text
    # session items the chatbot wrote under 0003's rule were in the new shape before the backfill
    already = re.search(
        r"migrate apply 3 \(sessions gain their TTL\): succeeded; \d+ written, (\d+) already", text
    )
    assert already and int(already.group(1)) > 0, text
