"""The demo's runs on the delivery engine, with their progress on the demo's console.

``ProgressDisplay(console)`` shows an engine run's events as ``mangaassist`` commands show them
(Rich spinners and bars in a terminal, one plain line per event elsewhere), and ``run_pipeline``
starts and drives one run as ``mangaassist deploy app`` / ``deploy model`` do (the same state store,
policy, lease and poll settings, requester). The demo keeps its own copy so that it never imports
``mangaassist.cli`` (the layer above it).
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from mangaassist.delivery.engine.errors import BadRequest
from mangaassist.delivery.engine.model import RunRecord, StepRecord
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Executor, ProgressEvent
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import app as cd01
from mangaassist.delivery.pipelines import model as cd03
from mangaassist.delivery.pipelines import registry

DEMO_ENVIRONMENT = "dev"
"""The environment every segment of the demo runs in (``mangaassist.toml``: the local platform)."""


def say(console: Console, text: str) -> None:
    """Print plain text (no markup, no highlighting, no wrapping at the terminal's width)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


class ProgressDisplay:
    """An engine reporter: Rich spinners and bars in a terminal; plain lines elsewhere."""

    def __init__(self, console: Console) -> None:
        self.stream = console
        self.rich = console.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[tuple[str, str], TaskID] = {}

    def __enter__(self) -> ProgressDisplay:
        if self.rich:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=self.stream,
            )
            self.progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if self.progress is None:
            self._plain(event)
            return
        key = (event.run_id, event.step or "")
        step, message = escape(event.step or ""), escape(event.message)
        if event.kind in ("step.started", "rollback.started"):
            self.tasks[key] = self.progress.add_task(f"{step}: {message}", total=None)
            return
        if event.kind == "step.blocked":
            self.progress.console.print(f"[yellow]{step}[/]: {message}", highlight=False, soft_wrap=True)
            return
        task = self.tasks.get(key)
        if task is None:
            if event.kind == "run.finished":
                say(self.progress.console, f"run {event.run_id}: {event.message}")
            return
        if event.kind == "step.progress":
            total = 1.0 if event.fraction is not None else None
            self.progress.update(
                task, description=f"{step}: {message}", completed=event.fraction or 0, total=total
            )
        elif event.kind == "step.waiting":
            self.progress.update(task, description=f"[yellow]waiting[/] {step}: {message}")
        elif event.kind in ("step.done", "rollback.done"):
            self.progress.update(task, description=f"[green]done[/] {step} {message}", completed=1, total=1)
        elif event.kind == "step.failed":
            self.progress.update(task, description=f"[red]failed[/] {step}: {message}", completed=1, total=1)

    def _plain(self, event: ProgressEvent) -> None:
        fraction = event.fraction
        # in logs, one progress line per tenth is enough
        if event.kind == "step.progress" and fraction is not None and round(fraction * 10) != fraction * 10:
            return
        step = f" {event.step}" if event.step else ""
        verb = event.kind.split(".")[-1]
        said = event.message if event.message.startswith(verb) else f"{verb} {event.message}"
        say(self.stream, f"{event.run_id}{step}: {said}".rstrip())


def _seconds_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise BadRequest(f"{name}={raw!r}: expected a positive number of seconds")
    return value


def requester() -> str:
    """Who starts the demo's runs: ``MANGAASSIST_ACTOR``, else the OS user (as the CLI's ``--as``)."""
    chosen = os.environ.get("MANGAASSIST_ACTOR", "").strip()
    if chosen:
        return chosen
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def run_pipeline(
    console: Console,
    params: dict[str, Any],
    environment: str,
    pipeline: str = cd01.NAME,
    overrides: dict[str, str] | None = None,
) -> tuple[RunRecord, dict[str, StepRecord]]:
    """Start and drive one run of ``pipeline`` (CD-01 or CD-03) to its end: (run, steps by name)."""
    built = registry.build(pipeline, params)
    policy = load_policy(None).for_run(environment, pipeline)
    describe = cd03.describe if pipeline == cd03.NAME else cd01.describe
    store = StateStore()
    with ProgressDisplay(console) as display:
        executor = Executor(
            store,
            lease_seconds=_seconds_env("MANGAASSIST_LEASE_SECONDS", 30.0),
            poll_seconds=_seconds_env("MANGAASSIST_POLL_SECONDS", 1.0),
            reporter=display,
        )
        record = executor.start(
            built,
            environment=environment,
            target=pipeline,
            requester=requester(),
            policy=policy,
            overrides=dict(overrides or {}),
        )
        say(display.stream, f"run {record.id} started: {describe(params)}")
        final = executor.drive(record.id, built)
    with store.transaction() as conn:
        steps = {s.name: s for s in store.steps(conn, final.id)}
    return final, steps
