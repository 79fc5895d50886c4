"""An incremental build (rows copied from the live version, only the changed chunks embedded, the
live version's gate figures remembered from the build that made it) gives exactly what a full
build of the same sources gives: the same version name, rows in the same order, the same vector
bytes and the same gate figures."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.pipelines import kb
from mangaassist.platform.vector import LIVE_ALIAS, IndexRecord
from tests.integration.kb.conftest import KB


def rows(records: list[IndexRecord]) -> list[tuple[Any, ...]]:
    return [
        (r.chunk_id, r.doc_id, r.doc_title, r.heading, r.text, r.content_hash, r.kind, r.vector.tobytes())
        for r in records
    ]


def figures(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "p95_ms"}  # the only timing among them


def test_an_incremental_build_equals_a_full_build_of_the_same_sources(
    make_kb: Callable[[], KB], tmp_path: Path
) -> None:
    env = make_kb()
    assert env.build().state is RunState.SUCCEEDED
    first = env.index.resolve(LIVE_ALIAS)
    returns = env.doc("returns-policy")
    returns.write_text(returns.read_text(encoding="utf-8").replace("30 days", "90 days"), encoding="utf-8")
    env.doc("gift-cards").unlink()
    (env.root / "knowledge" / "store-pickup.md").write_text(
        "---\nid: store-pickup\ntitle: Store pickup\ncategory: shipping\n---\n"
        "## Picking up\nOrders can be collected at the counter two days after they ship.\n",
        encoding="utf-8",
    )
    run = env.build(write_batch=100)  # several writes into the version, as with a large corpus
    assert run.state is RunState.SUCCEEDED, run.reason
    plan = env.step(run, "plan").output
    assert plan["mode"] == "incremental" and plan["added"] and plan["changed"] and plan["deleted"]
    assert 0 < env.step(run, "embed").output["embedded"] < plan["chunks"] // 10
    incremental = env.index.resolve(LIVE_ALIAS)
    assert incremental == plan["target"] != first
    gate = env.step(run, "gate").detail

    full = KB(env.root, tmp_path / "home-full")
    (full.home / "kb").mkdir(parents=True)
    shutil.copy(env.home / "kb" / "embeddings.sqlite3", full.home / "kb" / "embeddings.sqlite3")
    kb._EVALUATIONS.clear()  # nothing remembered: every figure measured by this run
    kb._READY_ROWS.clear()
    again = full.build()
    assert again.state is RunState.SUCCEEDED, again.reason
    assert full.step(again, "plan").output["mode"] == "full"
    assert full.index.resolve(LIVE_ALIAS) == incremental  # the same name
    assert rows(full.index.records(incremental)) == rows(env.index.records(incremental))
    assert figures(full.step(again, "gate").detail["new"]) == figures(gate["new"])

    # the live version's figures the incremental gate used (remembered from the build that made
    # it) are what evaluating it now gives
    ws = kb.Workspace.of(env.params(), "dev")
    docs = {c.doc_id for c in ws.chunks()}
    golden = [
        kb.Golden(g.question, g.relevant & docs) for g in kb.load_golden(ws.golden_path) if g.relevant & docs
    ]
    assert gate["live"] is not None and first is not None
    assert figures(ws.evaluate(first, golden)) == figures(gate["live"])
