"""CD-04 end to end on the real local platform: MiniLM, LanceDB on disk, the engine on SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.pipelines import kb
from mangaassist.platform.embeddings import MiniLMEmbedder
from mangaassist.platform.vector import LIVE_ALIAS, VersionState
from tests.integration.kb.conftest import HASHING_FLOORS, KB

NEW_FACT = "You can return items within 90 days of delivery."


def edit_returns(env: KB) -> None:
    path = env.doc("returns-policy")
    text = path.read_text(encoding="utf-8")
    assert "30 days" in text
    path.write_text(text.replace("30 days", "90 days"), encoding="utf-8")


def test_first_build_is_full_and_a_rebuild_without_changes_makes_no_version(
    make_kb: Callable[[], KB],
) -> None:
    env = make_kb()
    first = env.build()
    assert first.state is RunState.SUCCEEDED, first.reason
    plan = env.step(first, "plan").output
    assert plan["mode"] == "full" and plan["why"] == "no live version yet"
    live = env.index.resolve(LIVE_ALIAS)
    assert live == plan["target"] and live.startswith("kb-all-minilm-l6-v2-")
    gate = env.step(first, "gate").detail
    assert gate["verdict"] == "PASS" and gate["new"]["recall_at_5"] >= 0.9
    assert env.step(first, "embed").output["embedded"] == 0  # every chunk came from the cache

    again = env.build()
    assert again.state is RunState.SUCCEEDED
    assert env.step(again, "plan").output["noop"] is True
    assert [v.name for v in env.index.versions()] == [live]
    assert env.index.resolve(LIVE_ALIAS) == live
    assert len(env.index.alias_history(LIVE_ALIAS)) == 1


def test_edit_and_deletion_propagate_incrementally(make_kb: Callable[[], KB]) -> None:
    env = make_kb()
    assert env.build().state is RunState.SUCCEEDED
    old = env.index.resolve(LIVE_ALIAS)
    assert old is not None
    gift_chunks = [r for r in env.index.records(old) if r.doc_id == "gift-cards"]
    assert gift_chunks
    edit_returns(env)
    env.doc("gift-cards").unlink()

    run = env.build()
    assert run.state is RunState.SUCCEEDED, run.reason
    plan = env.step(run, "plan").output
    assert plan["mode"] == "incremental"
    assert plan["deleted"] == len(gift_chunks) and plan["changed"] >= 1 and plan["added"] == 0
    embed = env.step(run, "embed").output
    assert embed["embedded"] + embed["cache_hits"] == plan["changed"]  # only what changed
    # the golden questions about gift cards only have no page left to find
    assert env.step(run, "gate").detail["new"]["questions_skipped"] == gift_card_questions(env.root)
    new = env.index.resolve(LIVE_ALIAS)
    assert new == plan["target"] != old
    rows = env.index.records(new)
    assert not [r for r in rows if r.doc_id == "gift-cards"]
    assert any("90 days" in r.text for r in rows if r.doc_id == "returns-policy")
    assert len(rows) == plan["chunks"]
    # the old version is untouched (blue/green) and still kept for rollback
    assert any(r.doc_id == "gift-cards" for r in env.index.records(old))
    # the edited fact is what retrieval now finds
    query = "What is the return window?"
    vector = MiniLMEmbedder().embed([query])[0]
    hits = env.index.search(new, vector, query, k=3, kind="policy")
    assert hits[0].doc_id == "returns-policy" and "90 days" in hits[0].text


def test_embedding_model_change_forces_a_full_build(make_kb: Callable[[], KB]) -> None:
    env = make_kb()
    assert env.build(embedder="hashing", thresholds=HASHING_FLOORS).state is RunState.SUCCEEDED
    hashing = env.index.version(env.index.resolve(LIVE_ALIAS) or "")
    assert hashing is not None and hashing.model == "hashing-v1@256" and hashing.dim == 256

    run = env.build(mode="incremental")  # asked for incremental: the model differs, so full
    assert run.state is RunState.SUCCEEDED, run.reason
    plan = env.step(run, "plan").output
    assert plan["mode"] == "full"
    assert plan["why"] == "embedding model changed: hashing-v1@256 -> all-MiniLM-L6-v2@0.1.0"
    live = env.index.version(env.index.resolve(LIVE_ALIAS) or "")
    assert live is not None and live.model.startswith("all-MiniLM-L6-v2@") and live.dim == 384
    rows = env.index.records(live.name)
    assert {len(r.vector) for r in rows} == {384}  # no row kept from the hashing version
    gate = env.step(run, "gate").detail
    assert gate["live"] is not None  # compared with the hashing version's recorded metrics


def test_failing_gate_leaves_the_alias_untouched(make_kb: Callable[[], KB]) -> None:
    env = make_kb()
    assert env.build().state is RunState.SUCCEEDED
    live = env.index.resolve(LIVE_ALIAS)
    edit_returns(env)
    run = env.build(thresholds={"recall_at_5": 1.01})
    assert run.state in (RunState.FAILED, RunState.ROLLED_BACK)
    assert "gate failed: recall_at_5" in (run.reason or "")
    gate = env.step(run, "gate").detail
    assert gate["verdict"] == "FAIL" and gate["live"] is not None
    assert env.index.resolve(LIVE_ALIAS) == live
    assert len(env.index.alias_history(LIVE_ALIAS)) == 1
    assert env.step(run, "promote").status.value == "skipped"  # never ran
    # a quality drop relative to live fails too, even above the absolute floor
    worse = env.build(embedder="hashing", thresholds={"recall_at_5": 0.5, "mrr": 0.5, "ndcg_at_10": 0.5})
    assert env.index.resolve(LIVE_ALIAS) == live
    assert worse.state is not RunState.SUCCEEDED


def test_build_killed_halfway_leaves_alias_untouched_and_resumes(make_kb: Callable[[], KB]) -> None:
    env = make_kb()
    assert env.build().state is RunState.SUCCEEDED
    live = env.index.resolve(LIVE_ALIAS)
    edit_returns(env)
    child = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("kb_child.py")), str(env.root), str(env.home)],
        env={**os.environ, "KB_KILL_AT": "step:build:rows-256"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    run_id = child.stdout.split()[0]
    half = [v for v in env.index.versions() if v.state is VersionState.BUILDING]
    assert len(half) == 1  # the version it was writing, never sealed
    assert env.index.resolve(LIVE_ALIAS) == live  # the alias never moved

    pipeline = kb.build(env.params(write_batch=256))
    final = Executor(env.store, heartbeat=False).resume(run_id, pipeline, actor="test")
    assert final.state is RunState.SUCCEEDED, final.reason
    new = env.index.resolve(LIVE_ALIAS)
    assert new == half[0].name
    info = env.index.version(new)
    assert info is not None and info.state is VersionState.READY
    rows = env.index.records(new)
    assert len(rows) == len({r.chunk_id for r in rows}) == info.rows  # rebuilt, not appended twice
    assert not [v for v in env.index.versions() if v.state is VersionState.BUILDING]


def test_rollback_and_promote_move_the_alias_and_gc_keeps_n(make_kb: Callable[[], KB]) -> None:
    env = make_kb()
    names = []
    for n in range(4):
        if n:
            path = env.doc("gift-cards")
            path.write_text(path.read_text(encoding="utf-8") + f"\nRevision note {n}.\n", encoding="utf-8")
        run = env.build(
            embedder="hashing", keep=2, thresholds={"recall_at_5": 0.5, "mrr": 0.5, "ndcg_at_10": 0.5}
        )
        assert run.state is RunState.SUCCEEDED, run.reason
        names.append(env.index.resolve(LIVE_ALIAS))
    kept = [v.name for v in env.index.versions()]
    assert kept == names[-2:]  # newest two; older ones garbage-collected
    promote = kb.build_promote(env.params(version=names[-2], embedder="hashing"))
    ex = Executor(env.store, heartbeat=False)
    policy = load_policy(None).for_run("dev", kb.NAME)
    run = ex.run(promote, environment="dev", target=kb.NAME, requester="test", policy=policy)
    assert run.state is RunState.SUCCEEDED and env.index.resolve(LIVE_ALIAS) == names[-2]
    bogus = kb.build_promote(env.params(version="kb-nope", embedder="hashing"))
    run = ex.run(bogus, environment="dev", target=kb.NAME, requester="test", policy=policy)
    assert run.state is not RunState.SUCCEEDED and env.index.resolve(LIVE_ALIAS) == names[-2]


def test_search_results_are_exact_cosine_plus_keyword_boost(make_kb: Callable[[], KB]) -> None:
    env = make_kb()
    assert env.build().state is RunState.SUCCEEDED
    live = env.index.resolve(LIVE_ALIAS) or ""
    rows = env.index.records(live)
    query = "Do gift cards expire?"
    vector = MiniLMEmbedder().embed([query])[0]
    hits = env.index.search(live, vector, query, k=1)
    best = next(r for r in rows if r.chunk_id == hits[0].chunk_id)
    assert np.isclose(hits[0].cosine, float(best.vector @ vector), atol=1e-5)
    assert hits[0].doc_id == "gift-cards" and hits[0].score > hits[0].cosine


def gift_card_questions(root: Path) -> int:
    lines = (root / "knowledge" / "evals" / "golden.jsonl").read_text().splitlines()
    return sum(1 for line in lines if line.strip() and json.loads(line)["relevant"] == ["gift-cards"])
