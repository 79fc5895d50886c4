"""In-process app fixture: the real FastAPI app and SQLite tables, the hashing embedder for speed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mangaassist.chatbot.app import create_app
from mangaassist.chatbot.settings import Settings

ROOT = Path(__file__).parents[2]


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app with its lifespan running (Starlette's TestClient), ready to answer."""
    monkeypatch.setenv("MANGAASSIST_ROOT", str(ROOT))
    monkeypatch.setenv("MANGAASSIST_HOME", str(tmp_path))
    monkeypatch.setenv("MANGAASSIST_EMBEDDER", "hashing")
    monkeypatch.setenv("MANGAASSIST_REVISION", "r-err")
    monkeypatch.delenv("MANGAASSIST_FAULT", raising=False)
    app = create_app(Settings.from_env())
    with TestClient(app, raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, c.get("/readyz").json()
            time.sleep(0.1)
        yield c
