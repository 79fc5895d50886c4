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


ROOT = Path(__file__).parents[3]


def aws_free_env(tmp_path: Path, config: str) -> dict[str, str]:
    """The environment of a CLI child with ``config`` as its ``mangaassist.toml``, its home under
    ``tmp_path`` and no AWS credentials anywhere boto3 looks (variables, files, profiles, instance
    metadata), nor a shared state database."""
    path = tmp_path / "mangaassist.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MANGAASSIST_STATE_URL"}
    return env | {
        "MANGAASSIST_PLATFORM_CONFIG": str(path),
        "MANGAASSIST_HOME": str(tmp_path / "home"),
        "MANGAASSIST_ROOT": str(ROOT),
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "MANGAASSIST_ACTOR": "ann",
    }
