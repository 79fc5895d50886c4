"""The widget segment of ``make demo`` (CD-05): the chat widget shipped to the edge, checked in a real
browser against the real chatbot, a broken bundle stopped before publish, a rollback.

Runs on the local platform of the release segments (the chatbot's router behind the edge that ``up``
started on 127.0.0.1:8082, ``/v1`` proxied to it):

1. **Two releases.** A copy of ``frontend/`` with one change (the widget exports a build label: a
   new widget chunk and ``loader.js``, React's chunk unchanged), then ``frontend/`` itself. Each is a
   CD-05 run: npm build (``node_modules`` cached by the lock's hash), typecheck, vitest, the size
   budget, headless Chromium on the candidate with ``/v1`` going to the real chatbot, upload (only
   new files), the pointer moved with two invalidated paths, Chromium again through the edge. The
   second run's screenshot (the widget answering the real chatbot, with its sources) is copied to
   ``HOME/demo-widget.png`` and its path printed.
2. **A broken bundle.** The widget's module throws when a browser loads it; it typechecks, its unit
   tests pass and it builds. The browser check stops it: nothing uploaded, the pointer unchanged.
3. **A rollback** (``CD-05-rollback``): back to the first release, visible through the edge within
   milliseconds.

Returns the number of failed checks.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord, StepStatus
from mangaassist.delivery.frontend.sources import broken_source, changed_source
from mangaassist.delivery.pipelines import frontend as cd05
from mangaassist.demo.engine import DEMO_ENVIRONMENT
from mangaassist.platform.factory import Platform
from mangaassist.views.progress import ProgressDisplay
from mangaassist.views.runs import run_pipeline

SCREENSHOT = "demo-widget.png"


def _deploy(console: Console, params: dict[str, Any], what: str) -> tuple[RunRecord, dict[str, StepRecord]]:
    began = time.monotonic()
    run, steps = run_pipeline(
        ProgressDisplay(console),
        cd05.NAME,
        {"environment": DEMO_ENVIRONMENT, **params},
        environment=DEMO_ENVIRONMENT,
        target=cd05.NAME,
    )
    console.print(
        f"{what}: run {run.id} [bold]{run.effective_state.value}[/] in {time.monotonic() - began:.0f}s",
        highlight=False,
    )
    return run, steps


def _out(steps: dict[str, StepRecord], step: str) -> dict[str, Any]:
    return steps[step].output if step in steps else {}


def _detail(steps: dict[str, StepRecord], step: str) -> dict[str, Any]:
    return steps[step].detail if step in steps else {}


def run_frontend_demo(console: Console, platform: Platform) -> int:
    """The CD-05 segment on the running local ``platform``; the number of failed checks."""
    console.rule("[bold]CD-05: the chat widget, checked in a real browser before and after publish")
    site = platform.static_site()
    root = platform.settings.root
    scratch = Path(tempfile.mkdtemp(prefix="mangaassist-frontend-"))
    failures = 0
    try:
        console.print(
            f"The edge serves the widget at {site.url(DEMO_ENVIRONMENT)} (live: "
            f"{site.current(DEMO_ENVIRONMENT) or 'nothing yet'}). [bold]1. Two releases[/]: a changed "
            "widget, then frontend/ itself."
        )
        changed = changed_source(root / "frontend", scratch / "changed", "demo")
        first, first_steps = _deploy(console, {"source": str(changed)}, "a changed widget")
        failures += 0 if first.effective_state is RunState.SUCCEEDED else 1
        second, steps = _deploy(console, {}, "frontend/")
        if second.effective_state is not RunState.SUCCEEDED:
            console.print(f"[red]the widget was not deployed[/]: {second.reason}", highlight=False)
            return failures + 1
        release = str(_out(steps, "build")["release_id"])
        upload, verify = _out(steps, "upload"), _out(steps, "verify")
        budget = _out(steps, "gates").get("budget") or {}
        console.print(
            f"release {release}: uploaded {len(upload['uploaded'])} file(s), skipped "
            f"{len(upload['skipped'])} already stored; loader.js {budget.get('loader_gzip_bytes')} B gzip, "
            f"all JS+CSS {budget.get('total_gzip_bytes')} B gzip; the checks' chat API: "
            f"{_detail(steps, 'browser-check').get('chat_api')}",
            highlight=False,
        )
        console.print(f"the widget through the edge answered: {verify.get('answer')!r}", highlight=False)
        console.print(f"  sources: {', '.join(map(str, verify.get('sources') or []))}", highlight=False)
        shot = verify.get("screenshot")
        if shot and Path(str(shot)).is_file():
            target = platform.home / SCREENSHOT
            shutil.copyfile(str(shot), target)
            console.print(f"screenshot of the widget answering: {target.resolve()}", highlight=False)
        else:
            console.print("[red]no screenshot was taken[/]")
            failures += 1
        if site.current(DEMO_ENVIRONMENT) != release:
            console.print(f"[red]the edge's channel is not on {release}[/]")
            failures += 1

        console.print("[bold]2. A broken bundle[/]: the widget's module throws when a browser loads it")
        broken = broken_source(root / "frontend", scratch / "broken")
        stopped, stopped_steps = _deploy(console, {"source": str(broken)}, "a broken bundle")
        console.print(f"reason: {stopped.reason}", markup=False, highlight=False)
        for problem in (_detail(stopped_steps, "browser-check").get("problems") or [])[:2]:
            console.print(f"  {problem}", markup=False, highlight=False)
        caught = stopped_steps["browser-check"].status is StepStatus.FAILED
        if (
            stopped.effective_state is RunState.SUCCEEDED
            or not caught
            or site.current(DEMO_ENVIRONMENT) != release
        ):
            console.print("[red]the broken bundle was not stopped by the browser check before publish[/]")
            failures += 1
        else:
            console.print(f"stopped before publish: the edge still serves {site.current(DEMO_ENVIRONMENT)}")

        console.print("[bold]3. A rollback[/] to the release before")
        began = time.monotonic()
        back, back_steps = run_pipeline(
            ProgressDisplay(console),
            cd05.ROLLBACK,
            {"environment": DEMO_ENVIRONMENT},
            environment=DEMO_ENVIRONMENT,
            target=cd05.NAME,
        )
        restored = _out(back_steps, "restore")
        visible = float(_out(back_steps, "verify").get("visible_s") or 0)
        console.print(
            f"rollback: run {back.id} [bold]{back.effective_state.value}[/] in "
            f"{time.monotonic() - began:.1f}s: {restored.get('from')} -> {restored.get('to')}, served by "
            f"the edge {visible * 1000:.0f} ms after the pointer moved",
            highlight=False,
        )
        first_release = _out(first_steps, "build").get("release_id")
        if back.effective_state is not RunState.SUCCEEDED or site.current(DEMO_ENVIRONMENT) != first_release:
            console.print(f"[red]the rollback did not bring back {first_release}[/]: {back.reason}")
            failures += 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return failures
