"""The release segment of ``make demo``: a good release promoted by canary, a bad one rolled back.

``run_release_demo(console, platform)`` runs on ``platform`` (without one: starts the local
platform, or uses the one running), sends realistic chat traffic through the router, deploys a
changed copy of the source tree by canary (wheel built and stored by digest, test gate, smoke,
latency gate, 10/50/100 with the judge's PASS), then the same code with a subtle fault,
``MANGAASSIST_FAULT=latency_ms=60`` (every answer 60 ms slower: within the pinned load's latency
budget, and no answer is wrong, so the golden-set gate lets it through), which the judge FAILs on
live traffic at the first step: all traffic back on the stable revision at once, the candidate
retired. It prints the judge's numbers and stops the platform if it started it. About two minutes
once the model cache is warm.

``local_platform(console)`` is that start and stop as a context manager (``Platform.up`` and
``down`` of ``platform.factory``): ``mangaassist demo`` holds it around this segment and the model
segment (``demo.model``), so both run on one platform. The platform runs without the environment's
config server, as the demo always ran it: the chatbot's revisions read ``config/`` (the config
segment has a config server of its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord
from mangaassist.delivery.pipelines import app as cd01
from mangaassist.delivery.rollout.load import BackgroundLoad
from mangaassist.demo.engine import DEMO_ENVIRONMENT
from mangaassist.platform.factory import Platform, platform_for, settings_for
from mangaassist.views.progress import ProgressDisplay
from mangaassist.views.runs import run_pipeline

DEMO_SETTINGS: dict[str, Any] = {
    "test_command": "{python} -m pytest tests/unit/rollout -q -p no:cacheprovider",
    "steps": "10,50,100",
    "min_requests": 40,
    "max_step_s": 60,
    "on_inconclusive": "rollback",
    "load_rps": 5,
    "load_s": 2,
    # a 2-core laptop runs two chatbot revisions plus the traffic: the demo shows the flow, and
    # keeps the gate for real regressions (the 400 ms drill is tests/integration/app_pipeline)
    "latency_budget_ms": 2000,
    "drain_idle_s": 1,
}


SUBTLE_FAULT = "latency_ms=60"
"""The bad release: every answer 60 ms slower. The pinned load's latency budget (2 s in the demo) and
the golden-set gate (right answers, no errors) let it through; the judge compares its latency bands
with the baseline's on live traffic."""


def release(console: Console, params: dict[str, Any]) -> tuple[RunRecord, dict[str, StepRecord]]:
    """One CD-01 run in the demo's environment, as ``mangaassist deploy app`` runs it."""
    return run_pipeline(
        ProgressDisplay(console), cd01.NAME, params, environment=DEMO_ENVIRONMENT, announce=True
    )


def changed_project(root: Path, scratch: Path) -> Path:
    """A copy of the project's source tree under ``scratch`` with one line changed (a new build, a
    new digest), and what the CD-01 test gate of the demo runs."""
    project = scratch / "project"
    project.mkdir()
    shutil.copy2(root / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(root / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("tests/__init__.py", "tests/unit/__init__.py", "tests/unit/rollout"):  # the test gate's
        target = project / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if (root / part).is_dir():
            shutil.copytree(root / part, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(root / part, target)
    with (project / "src" / "mangaassist" / "__init__.py").open("a") as fh:
        fh.write(f"\n# demo release {time.time():.0f}\n")
    return project


def _judge_table(title: str, steps: dict[str, StepRecord]) -> Table:
    table = Table(title=title)
    columns = ("step", "verdict", "candidate", "stable", "err cand", "err stable", "p50 cand", "p50 stable")
    for column in (*columns, "e(errors)", "e(latency)", "fail at"):
        table.add_column(column)
    for name, step in steps.items():
        n = step.detail.get("numbers") or {}
        if "candidate_requests" not in n:
            continue
        table.add_row(
            name,
            str(step.detail.get("verdict")),
            f"{n['candidate_requests']:.0f}",
            f"{n['stable_requests']:.0f}",
            f"{n['candidate_error_rate']:.1%}",
            f"{n['stable_error_rate']:.1%}",
            f"{n['candidate_p50_ms']:.0f} ms",
            f"{n['stable_p50_ms']:.0f} ms",
            f"{n['e_error_rate']:.3g}",
            # a step judged against the pre-switch period (100%) compares rates only, not latency
            f"{n['e_latency']:.3g}" if "e_latency" in n else "-",
            f"{n.get('threshold', 0):.3g}",
        )
    return table


@contextlib.contextmanager
def local_platform(console: Console) -> Iterator[Platform]:
    """The local ``dev`` platform for the block: started if it is not running, then stopped."""
    settings = dataclasses.replace(settings_for(DEMO_ENVIRONMENT), config_server=False)
    platform = platform_for(settings)
    started_here = not platform.running()
    if started_here:
        console.print(
            "Starting the local platform (the chatbot and the intent model, each r1 behind its router) ..."
        )
    try:
        platform.up()
        yield platform
    finally:
        if started_here:
            down = platform.down().report
            console.print(f"platform stopped ({len(down.pids)} processes, {len(down.left)} left)")
        platform.close()


def run_release_demo(console: Console, platform: Platform | None = None) -> int:
    """The CD-01 segment on ``platform`` (default: the local platform, started for it if needed)."""
    console.rule("[bold]CD-01: releases judged by the canary")
    if platform is not None:
        return _releases(console, platform)
    with local_platform(console) as started:
        return _releases(console, started)


def _releases(console: Console, platform: Platform) -> int:
    settings = platform.settings
    compute = platform.compute()
    url = compute.url("chatbot")
    scratch = Path(tempfile.mkdtemp(prefix="mangaassist-release-"))
    load = BackgroundLoad(url, rps=12, sessions=8, seed=7).start()
    code = 0
    try:
        project = changed_project(settings.root, scratch)
        console.print(
            f"Traffic: 12 chats/s through {url}. [bold]1. A good release[/] (a changed source tree):"
        )
        base = {"environment": DEMO_ENVIRONMENT, **DEMO_SETTINGS}
        began = time.monotonic()
        run, steps = release(console, {**base, "source": str(project)})
        console.print(
            f"run {run.id}: [bold]{run.effective_state.value}[/] in {time.monotonic() - began:.0f}s; "
            f"live: {dict(compute.status('chatbot').weights)}"
        )
        console.print(_judge_table("the judge on the good release", steps))
        if run.effective_state is not RunState.SUCCEEDED:
            code = 1
        console.print(
            f"[bold]2. A subtly bad release[/]: the same code, every answer 60 ms slower "
            f"(MANGAASSIST_FAULT={SUBTLE_FAULT}): within the pinned load's latency budget and "
            "with every answer right, so users meet it and the judge must catch it"
        )
        began = time.monotonic()
        run, steps = release(
            console,
            {**base, "source": str(project), "set_env": {"MANGAASSIST_FAULT": SUBTLE_FAULT}},
        )
        console.print(
            f"run {run.id}: [bold]{run.effective_state.value}[/] in {time.monotonic() - began:.0f}s; "
            f"live: {dict(compute.status('chatbot').weights)}"
        )
        console.print(f"reason: {run.reason}", markup=False, highlight=False)
        console.print(_judge_table("the judge on the subtly bad release", steps))
        failed = next((s for s in steps.values() if s.detail.get("verdict") == "FAIL"), None)
        if failed is not None:
            n = failed.detail.get("numbers") or {}
            if "restore_ms" in n:
                first = n.get("first_error_to_restore_s")
                console.print(
                    f"{failed.name}: weights flipped back in {n['restore_ms']:.1f} ms"
                    + (f"; first failed answer to 100% stable: {first:.1f}s" if first is not None else "")
                )
            else:  # a gate before the canary: traffic never left the stable release
                console.print(f"stopped by {failed.name} before any user request reached the candidate")
        if run.effective_state is not RunState.ROLLED_BACK:
            code = 1
    finally:
        report = load.stop()
        console.print(
            f"traffic: {report.requests} chats, {report.failed} failed "
            f"({dict(report.failed_by_revision)}), "
            f"conversations on two revisions: {report.mixed_conversations}"
        )
        shutil.rmtree(scratch, ignore_errors=True)
    return code
