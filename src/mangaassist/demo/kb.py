"""The knowledge-base segment of ``make demo`` (CD-04): a policy changes, the chatbot follows.

With the chatbot already running at ``url`` on the state directory ``home``:

1. copy the sources (``knowledge/``, the catalog, the chatbot config) to a temporary folder, so the
   repository's ``knowledge/`` is never modified;
2. make sure ``kb-live`` serves those sources (a build; its embeddings come from the cache the
   chatbot filled when it started) and ask the return window: 30 days;
3. edit the copy of ``returns-policy.md`` (30 days -> 45 days), run the incremental build on the
   engine and print its gate report, new version against live; the alias swaps;
4. ask again: the chatbot answers 45 days and cites the new index version, without a restart;
5. roll the alias back, so the demo leaves the state directory as it found it.

The live version is read from the environment's index (``Platform.vector_index`` of
``platform.factory``). Called by ``mangaassist demo`` as ``run_kb_demo(console, server.url, home)``;
returns the number of failed checks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from mangaassist.delivery.engine.model import RunRecord, StepRecord
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import kb
from mangaassist.demo.engine import DEMO_ENVIRONMENT
from mangaassist.demo.tour import ask
from mangaassist.platform.factory import platform_for
from mangaassist.platform.settings import find_root
from mangaassist.platform.vector import LIVE_ALIAS, VectorIndex
from mangaassist.views.progress import ProgressDisplay
from mangaassist.views.runs import run_pipeline
from mangaassist.views.tables import kb_gate_table

QUESTION = "What is the return window?"


def _copy_sources(repo: Path, dest: Path) -> None:
    shutil.copytree(repo / "knowledge", dest / "knowledge")
    (dest / "data").mkdir()
    shutil.copy(repo / "data" / "catalog.jsonl", dest / "data" / "catalog.jsonl")
    (dest / "config").mkdir()
    shutil.copy(repo / "config" / "chatbot.yaml", dest / "config" / "chatbot.yaml")


def _run(
    console: Console, pipeline: str, params: dict[str, Any], store: StateStore
) -> tuple[RunRecord, dict[str, StepRecord]]:
    return run_pipeline(
        ProgressDisplay(console),
        pipeline,
        params,
        environment=DEMO_ENVIRONMENT,
        requester="demo",
        store=store,
    )


def _ask(client: httpx.Client, console: Console) -> dict[str, Any]:
    body = ask(console, client, QUESTION, "demo-kb")
    console.print(f"     [dim]index version {body['versions']['index']}[/]", highlight=False)
    return body


def _wait_for_index(client: httpx.Client, version: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").json().get("versions", {}).get("index") == version:
            return True
        time.sleep(0.2)
    return False


def run_kb_demo(console: Console, url: str, home: Path | None = None) -> int:
    repo = find_root()
    home = (home or Path(os.environ.get("MANGAASSIST_HOME") or repo / ".mangaassist")).resolve()
    with platform_for(DEMO_ENVIRONMENT, home=home) as platform:
        return _kb_segment(console, url, repo, home, platform.vector_index())


def _kb_segment(console: Console, url: str, repo: Path, home: Path, index: VectorIndex) -> int:
    store = StateStore(f"sqlite:///{home / 'state.sqlite3'}")
    failures = 0
    console.rule("[bold]Knowledge base (CD-04): a policy changes, the chatbot follows")
    with (
        tempfile.TemporaryDirectory(prefix="mangaassist-kb-demo-") as tmp,
        httpx.Client(base_url=url, timeout=30.0) as client,
    ):
        root = Path(tmp)
        _copy_sources(repo, root)
        params = {"root": str(root), "home": str(home)}
        run, steps = _run(console, kb.NAME, params, store)
        original = index.resolve(LIVE_ALIAS)
        console.print(
            f"live version: {original} ({steps['plan'].detail.get('summary', '')})", highlight=False
        )
        if original is None or not _wait_for_index(client, original):
            console.print("[red]the chatbot did not pick up the live version[/]")
            return 1
        before = _ask(client, console)
        failures += "30 days" not in before["answer"]

        path = root / "knowledge" / "returns-policy.md"
        path.write_text(path.read_text(encoding="utf-8").replace("30 days", "45 days"), encoding="utf-8")
        console.print(f"edited {path.name} (a copy): return window 30 days -> 45 days")
        run, steps = _run(console, kb.NAME, params, store)
        console.print(f"plan: {steps['plan'].detail.get('summary', '')}", highlight=False)
        console.print(kb_gate_table(steps["gate"].detail))
        new = index.resolve(LIVE_ALIAS)
        console.print(
            f"run {run.id} {run.state.value}; {LIVE_ALIAS} -> {new} (was {original})", highlight=False
        )
        if run.state.value != "succeeded" or new is None or not _wait_for_index(client, new):
            console.print("[red]the alias did not swap, or the chatbot did not follow it[/]")
            return failures + 1
        after = _ask(client, console)
        failures += "45 days" not in after["answer"] or after["versions"]["index"] != new

        run, _ = _run(console, kb.PROMOTE, {**params, "version": original}, store)
        _wait_for_index(client, original)
        console.print(f"rolled back: {LIVE_ALIAS} -> {original} ({run.state.value})", highlight=False)
        failures += run.state.value != "succeeded"
    return int(failures)
