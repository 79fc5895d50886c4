"""``mangaassist migrate`` end to end on the local provider, as a user runs it: real CLI processes,
the real config server, SQLite tables provisioned by CD-02, the engine's state."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from mangaassist.chatbot.store import ORDERS, ChatStore
from mangaassist.core.migrations import Rules
from mangaassist.delivery.engine.policy import EnvironmentPolicy
from mangaassist.delivery.engine.runs import Executor, Outcome, Pipeline, Step
from mangaassist.delivery.engine.state import StateStore
from mangaassist.platform.local.tables import SqliteTables

from .conftest import CLI, REPO, Project


def _seeded(project: Project) -> SqliteTables:
    tables = SqliteTables(project.home / "tables.sqlite3")
    assert ChatStore(tables).seed_orders(REPO / "data" / "orders.jsonl") == 40
    project.cli("deploy", "infra", "--yes")  # the index of 0002 is declared: CD-02 creates it
    return tables


def test_apply_list_read_through_the_index_then_roll_back(project: Project) -> None:
    tables = _seeded(project)
    listed = project.json("migrate", "list")
    assert [(m["id"][:4], m["state"]) for m in listed] == [
        ("0001", "pending"),
        ("0002", "pending"),
        ("0003", "pending"),
    ]
    refused = project.cli("migrate", "apply", "2", "--bake", "0", check=False)
    assert (
        refused.returncode == 1
        and "apply the earlier migrations of orders first: 0001" in refused.stdout + refused.stderr
    )

    first = project.json("migrate", "apply", "1", "--bake", "0")
    assert first["state"] == "succeeded", first
    backfill = first["steps"]["backfill"]["output"]
    assert backfill["written"] == 40 and backfill["done"] is True
    assert first["steps"]["verify"]["output"]["differences"] == 0
    second = project.json("migrate", "apply", "0002", "--bake", "0", "--rate", "500", "--segments", "2")
    assert second["state"] == "succeeded", second
    assert len(second["steps"]["backfill"]["output"]["segments"]) == 2

    states = {m["id"][:4]: m["state"] for m in project.json("migrate", "list")}
    assert states == {"0001": "cutover", "0002": "cutover", "0003": "pending"}
    rules = Rules.from_content(_live_schema(project))
    store = ChatStore(tables, lambda: rules)
    shipped, how = store.orders_with_status("cust-0002", "shipped")
    assert how == "index" and [o["order_id"] for o in shipped] == ["MA-100002"]
    assert all(o["customer_status"] == "cust-0002#shipped" for o in shipped)
    assert project.json("migrate", "verify", "2")["differences"] == 0

    back = project.json("migrate", "rollback", "2")
    assert back["state"] == "succeeded", back
    assert back["steps"]["withdraw"]["output"]["items_stripped"] == 40
    assert all("customer_status" not in o for o in tables.scan(ORDERS))
    after = Rules.from_content(_live_schema(project))
    assert after.get("0002_orders_by_customer_status") is None and after.get("0001_orders_status_updated_at")
    assert ChatStore(tables, lambda: after).orders_with_status("cust-0002", "shipped")[1] == "partition"

    contracted = project.json("migrate", "contract", "1")  # nothing retired, window 0 in dev
    assert contracted["state"] == "succeeded", contracted
    assert {m["id"][:4]: m["state"] for m in project.json("migrate", "list")}["0001"] == "contracted"
    refused = project.cli("migrate", "rollback", "1", check=False)
    assert refused.returncode == 1 and "contracted" in refused.stdout + refused.stderr


def _live_schema(project: Project) -> dict[str, object]:
    server = json.loads((project.home / "config-server.json").read_text())["url"]
    import httpx

    doc = httpx.get(f"{server}/v1/profiles/schema", timeout=5).json()
    content: dict[str, object] = doc["stable"]["content"]
    return content


def test_a_bad_file_is_refused_with_its_line_and_nothing_runs(project: Project) -> None:
    path = project.root / "migrations" / "0004_bad.yaml"
    path.write_text("description: d\ntable: orders\nkind: add_attribute\nadd:\n  x: {fn: nope, from: y}\n")
    done = project.cli("migrate", "plan", "4", check=False)
    assert done.returncode == 2
    assert f"{path}:5: add.x.fn: unknown transform 'nope'" in done.stderr
    assert f"{path}:1: backfill: a backfill needs a throttle" in done.stderr
    listed = project.cli("migrate", "list", check=False)  # every command reads every file
    assert listed.returncode == 2 and f"{path}:5: add.x.fn" in listed.stderr
    assert not (project.home / "state.sqlite3").exists()  # no run was recorded


def test_apply_is_refused_while_an_app_deploy_holds_the_lock(project: Project) -> None:
    _seeded(project)
    store = StateStore(f"sqlite:///{project.home / 'state.sqlite3'}")
    deploy = Pipeline("demo", (Step("hold", lambda ctx: Outcome.done()),))
    Executor(store, heartbeat=False).start(
        deploy, environment="dev", target="CD-01", requester="alice", policy=EnvironmentPolicy("dev", "demo")
    )
    refused = project.cli("migrate", "apply", "1", "--bake", "0", check=False)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "CD-01" in said and "alice" in said, said
    assert project.json("migrate", "list")[0]["state"] == "pending"


def test_a_killed_apply_resumes_from_its_checkpoints_but_not_once_its_file_changed(project: Project) -> None:
    tables = _seeded(project)
    path = project.root / "migrations" / "0001_orders_status_updated_at.yaml"
    path.write_text(path.read_text().replace("page: 100", "page: 5"))  # this project's own copy
    apply = subprocess.Popen(
        [str(CLI), "migrate", "apply", "1", "--bake", "0", "--rate", "6", "--segments", "2"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    run_id, pages = None, 0
    while time.monotonic() < deadline:
        status = project.json("migrate", "status")
        running = [r for r in status["runs"] if r["state"] == "running" and r["step"] == "backfill"]
        if running:
            run_id = running[0]["run"]
            pages = _checkpointed_pages(project, run_id)
            if pages >= 1:
                break
        time.sleep(0.3)
    assert run_id is not None and pages >= 1, "the backfill never checkpointed a page"
    apply.send_signal(signal.SIGKILL)
    apply.wait()
    written_before = sum(1 for o in tables.scan(ORDERS) if "status_updated_at" in o)
    assert 0 < written_before < 40

    original = path.read_text()
    path.write_text(original.replace("rate: 200", "rate: 300"))
    refused = project.cli("migrate", "resume", run_id, check=False)
    assert refused.returncode == 2 and "the file changed since the run started" in refused.stderr
    path.write_text(original)

    resumed = project.json("migrate", "resume", run_id)
    assert resumed["state"] == "succeeded", resumed
    record = StateStore(f"sqlite:///{project.home / 'state.sqlite3'}")
    with record.transaction() as conn:
        steps = {s.name: s for s in record.steps(conn, run_id)}
    output = steps["backfill"].output
    assert output["resumed_segments"] >= 1
    # what the first attempt checkpointed was not scanned again: the two attempts together scanned
    # every item once, plus at most the one page in flight per segment when it was killed
    assert 40 <= output["scanned"] <= 40 + 2 * 5
    assert steps["verify"].output["differences"] == 0
    assert all("status_updated_at" in o for o in tables.scan(ORDERS))


def _checkpointed_pages(project: Project, run_id: str) -> int:
    import sqlite3

    conn = sqlite3.connect(project.home / "state.sqlite3", timeout=5)
    try:
        rows = conn.execute(
            "SELECT value FROM engine_checkpoints WHERE run_id = ? AND step = 'backfill'", (run_id,)
        ).fetchall()
    finally:
        conn.close()
    return sum(int(json.loads(v)["pages"]) for (v,) in rows)
