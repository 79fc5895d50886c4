"""CD-06 fixtures: the real config server as its own process, and a chatbot process following it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.platform.local.config_server import HttpConfigStore

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class ConfigServer:
    home: Path
    proc: subprocess.Popen[bytes]
    url: str

    @property
    def store(self) -> HttpConfigStore:
        return HttpConfigStore(self.url)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_config_server(home: Path, port: int = 0) -> ConfigServer:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config-server.json").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mangaassist.platform.local.config_server",
            "--home",
            str(home),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(home / "config-server.log").open("ab"),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            url = json.loads((home / "config-server.json").read_text())["url"]
            httpx.get(f"{url}/healthz", timeout=1).raise_for_status()
            return ConfigServer(home, proc, url)
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the config server did not start")


@pytest.fixture
def config_server(tmp_path: Path) -> Iterator[ConfigServer]:
    server = start_config_server(tmp_path / "config-home")
    yield server
    if server.proc.poll() is None:
        server.kill()


@pytest.fixture
def followed_chatbot(config_server: ConfigServer, state_home: Path) -> Iterator[ChatbotProcess]:
    """A chatbot worker following the config server (0.5 s poll), sharing the session's model cache."""
    env = {
        "MANGAASSIST_ROOT": str(ROOT),
        "MANGAASSIST_HOME": str(state_home),
        "MANGAASSIST_REVISION": f"r-cfg-{config_server.proc.pid}",
        "MANGAASSIST_FAULT": "",
        "MANGAASSIST_CONFIG_URL": config_server.url,
        "MANGAASSIST_CONFIG_POLL": "0.5",
    }
    with ChatbotProcess(env=env, log_path=state_home / "chatbot-config.log") as bot:
        yield bot
