"""Backends for the engine suite: every test that takes ``state_url`` runs on SQLite and PostgreSQL.

PostgreSQL runs use ``MANGAASSIST_TEST_PG_URL`` (``scripts/ci-postgres.sh`` prints one) with a fresh
schema per test; without it those cases are skipped and say why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mangaassist.delivery.engine.state import StateStore

PG_URL = os.environ.get("MANGAASSIST_TEST_PG_URL", "")
PG_SKIP = (
    "PostgreSQL not configured: set MANGAASSIST_TEST_PG_URL "
    "(e.g. `export MANGAASSIST_TEST_PG_URL=$(scripts/ci-postgres.sh)`)"
)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason=PG_SKIP))]
)
def state_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.sqlite3'}"
        return
    import psycopg

    # the audit key and anchor of a PostgreSQL store live under MANGAASSIST_HOME: the test's own
    monkeypatch.setenv("MANGAASSIST_HOME", str(tmp_path / "home"))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def store(state_url: str) -> Iterator[StateStore]:
    opened = StateStore(state_url)
    yield opened
    opened.close()
