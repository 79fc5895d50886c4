"""Rich tables of the knowledge-base and config pipelines' reports: ``kb_gate_table`` (what
``mangaassist kb build`` prints), ``eval_table`` and ``rollout_table`` (what ``mangaassist config
deploy`` prints); the demo's knowledge-base and config segments print the same tables."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table


def kb_gate_table(gate: dict[str, Any]) -> Table:
    """The knowledge-base gate's report: each check, new against live."""
    table = Table(title=f"gate report: {gate.get('verdict', '?')}")
    for column in ("check", "new", "live", "limit", "ok"):
        table.add_column(column)
    for c in gate.get("checks", []):
        table.add_row(
            c["check"],
            str(c["new"]),
            "-" if c["live"] is None else str(c["live"]),
            c["limit"],
            "[green]pass[/]" if c["ok"] else "[red]FAIL[/]",
        )
    return table


def eval_table(rows: list[dict[str, Any]]) -> Table:
    """The config pipeline's evaluation gate: each check's pass rate, live against candidate."""
    table = Table(title="evaluation: live -> candidate")
    for column in ("case", "check", "threshold", "live", "candidate", "status"):
        table.add_column(column)
    for r in rows:
        color = {"ok": "green", "regression": "red"}.get(r["status"], "yellow")
        table.add_row(
            r["case"],
            escape(r["check"]),
            f"{r['threshold']:.2f}",
            f"{r['live']:.2f}",
            f"{r['candidate']:.2f}",
            f"[{color}]{r['status']}[/]",
        )
    return table


def rollout_table(steps: list[dict[str, Any]]) -> Table:
    """The config pipeline's staged rollout: each step's verdict and its numbers."""
    table = Table(title="rollout")
    for column in ("percent", "verdict", "requests new/old", "fallbacks new/old", "seconds"):
        table.add_column(column)
    for s in steps:
        table.add_row(
            f"{s['percentage']:g}%" + (" (bake)" if "bake_seconds" in s else ""),
            s["verdict"],
            f"{s.get('candidate_requests', 0)}/{s.get('baseline_requests', '-')}",
            f"{s.get('candidate_fallbacks', '-')}/{s.get('baseline_fallbacks', '-')}",
            str(s.get("seconds", s.get("bake_seconds", ""))),
        )
    return table
