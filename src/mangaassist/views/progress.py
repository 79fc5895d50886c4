"""An engine run's progress in a terminal: ``ProgressDisplay`` and ``say``.

``ProgressDisplay(console)`` is an engine reporter: Rich spinners and bars when ``console`` is a
terminal, one plain line per event elsewhere (logs, pipes, ``--json`` runs on stderr). Text that
comes from data (steps, messages, run ids) is escaped before it goes through Rich markup, so
``[...]`` in it is printed as is.
"""

from __future__ import annotations

from typing import Self

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from mangaassist.delivery.engine.runs import ProgressEvent


def say(console: Console, text: str) -> None:
    """Print plain text (no markup, no highlighting, no wrapping at the terminal's width)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


class ProgressDisplay:
    """An engine reporter on ``stream``: Rich spinners and bars in a terminal; plain lines elsewhere
    (and always with ``rich=False``). Use it as a context manager around the run."""

    def __init__(self, stream: Console, *, rich: bool = True) -> None:
        self.stream = stream
        self.rich = rich and stream.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[tuple[str, str], TaskID] = {}

    def columns(self) -> tuple[ProgressColumn, ...]:
        """The Rich bar's columns (a reporter that knows the time left adds it)."""
        return SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()

    def __enter__(self) -> Self:
        if self.rich:
            self.progress = Progress(*self.columns(), console=self.stream)
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
