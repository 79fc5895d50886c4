"""CD-02 on the local platform, through the real CLI: ``deploy infra --env dev`` provisions the
declared resources (SQLite tables with their keys and GSI indexes, directories for the vector index,
site and bucket), a second run changes nothing and says so, and a table deleted by hand is drift."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[3]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MANGAASSIST_HOME": str(home),
        "MANGAASSIST_ROOT": str(ROOT),
        "MANGAASSIST_ACTOR": "tester",
    }
    env.pop("MANGAASSIST_STATE_URL", None)
    env.pop("MANGAASSIST_PLATFORM_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "mangaassist.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_provisioning_is_idempotent_and_a_table_deleted_by_hand_is_drift(home: Path) -> None:
    planned = as_json(cli(home, "infra", "plan", "--env", "dev", "--json"))
    creates = {(c["kind"], c["name"]) for c in planned["changes"] if c["action"] == "create"}
    assert {
        ("tables", "orders"),
        ("tables", "sessions"),
        ("tables", "tickets"),
        ("sites", "widget"),
    } <= creates

    first = as_json(cli(home, "deploy", "infra", "--env", "dev", "--json"))
    assert first["state"] == "succeeded"
    assert len(first["steps"]["apply"]["output"]["applied"]) == planned["to_change"]

    with sqlite3.connect(home / "tables.sqlite3") as conn:
        tables = dict(conn.execute("SELECT name, spec FROM declared_tables").fetchall())
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert json.loads(tables["orders"])["partition_key"] == "pk"
    assert "gsi__tickets__by-status" in indexes
    assert json.loads((home / "sites" / "widget" / ".declared.json").read_text()) == {
        "index_document": "index.html"
    }

    second = cli(home, "deploy", "infra", "--env", "dev")
    assert second.returncode == 0 and "no changes: everything is as declared" in second.stdout
    assert as_json(cli(home, "infra", "plan", "--env", "dev", "--json"))["to_change"] == 0

    with sqlite3.connect(home / "tables.sqlite3") as conn:
        conn.execute("DELETE FROM declared_tables WHERE name = 'orders'")
    drift = as_json(cli(home, "infra", "plan", "--env", "dev", "--json"))
    orders = next(c for c in drift["changes"] if c["name"] == "orders")
    assert orders["action"] == "create" and orders["drift"] == "provisioned by CD-02, deleted since"
    shown = cli(home, "infra", "plan", "--env", "dev")
    assert "drift: provisioned by CD-02, deleted since" in shown.stdout

    third = as_json(cli(home, "deploy", "infra", "--env", "dev", "--json"))
    assert [a["resource"] for a in third["steps"]["apply"]["output"]["applied"]] == ["tables/orders"]


def test_bad_input_is_named_and_changes_nothing(home: Path, tmp_path: Path) -> None:
    unknown = cli(home, "infra", "plan", "--env", "qa")
    assert unknown.returncode != 0 and "qa" in (unknown.stderr + unknown.stdout)
    bad = tmp_path / "resources.toml"
    bad.write_text(
        '[tables.orders]\ndescription = "x"\nattributes = { pk = "S" }\n'
        'partition_key = "pk"\nsort_key = "sk"\n'
    )
    env_file = ROOT / "infra" / "environments.toml"
    from mangaassist.core.errors import ConfigError
    from mangaassist.delivery.pipelines import infra as cd02

    with pytest.raises(ConfigError, match=r"tables\.orders\.sort_key: key attribute 'sk'"):
        cd02.build({"environment": "dev", "resources": str(bad), "environments": str(env_file)})
    assert not (home / "tables.sqlite3").exists()
