"""Shared fixtures: a real chatbot process on a loopback port, with its own state directory.

The state directory is shared by every server a test session starts, so the intent model and the
corpus embeddings are computed once per session and reused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mangaassist.chatbot.launcher import ChatbotProcess

ROOT = Path(__file__).parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mangaassist-home")


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        "MANGAASSIST_ROOT": str(ROOT),
        "MANGAASSIST_HOME": str(home),
        "MANGAASSIST_REVISION": "r-test",
        "MANGAASSIST_FAULT": "",
        "MANGAASSIST_DEV_SIGNIN": "0",  # as in production; tests that sign in turn it on
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def chatbot(state_home: Path) -> Iterator[ChatbotProcess]:
    """The chatbot as ``mangaassist serve`` runs it, ready to answer."""
    with ChatbotProcess(env=server_env(state_home), log_path=state_home / "chatbot.log") as server:
        yield server
