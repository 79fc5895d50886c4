"""``mangaassist kb``: the knowledge-base pipeline (CD-04) from the command line.

``kb build`` runs the pipeline on the delivery engine (locked per environment, audited, resumable
with ``runs resume``) and prints the gate report, new version against live. ``kb promote`` and
``kb rollback`` move the ``kb-live`` alias through the engine too. ``kb list`` shows the versions
(``--json``: ``views.inventory.kb_listing``, what the dashboard shows too).
Registered on the main app by ``register(app)``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import ProgressColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from mangaassist.cli.engine_cmds import (
    DryRunOpt,
    JsonOpt,
    ProgressDisplay,
    _print_json,
    _state_text,
    console,
    dry_run,
    fail,
    handled,
)
from mangaassist.cli.kb_embedders import compare_embedders
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.analysis.gates import RetrievalThresholds
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord
from mangaassist.delivery.engine.runs import ProgressEvent
from mangaassist.delivery.pipelines import kb
from mangaassist.platform import ray_embedding
from mangaassist.platform.embeddings import RUNTIMES
from mangaassist.platform.vector import LIVE_ALIAS
from mangaassist.views import inventory
from mangaassist.views.progress import say
from mangaassist.views.runs import run_pipeline
from mangaassist.views.tables import kb_gate_table

kb_app = typer.Typer(
    help="The RAG knowledge base (CD-04): build, promote, rollback, list, compare-embedders.",
    no_args_is_help=True,
)

EnvOpt = Annotated[str, typer.Option("--env", help="Target environment (as in policy.yaml).")]


class BuildProgress(ProgressDisplay):
    """``kb build``'s progress: in a terminal, a Rich bar per step with the time left (the embed
    step's line says chunks/s and time left too); elsewhere plain lines, the embed step's at each
    tenth of the work or every ``every_s`` seconds, whichever comes first."""

    def __init__(self, as_json: bool, every_s: float = 10.0, stream: Console | None = None) -> None:
        super().__init__(as_json)
        if stream is not None:
            self.stream = stream
            self.rich = not as_json and stream.is_terminal
        self.every_s = every_s
        self._last: dict[tuple[str, str], tuple[int, float]] = {}

    def columns(self) -> tuple[ProgressColumn, ...]:
        spinner, description, bar, elapsed = super().columns()
        left = TextColumn("left"), TimeRemainingColumn()
        return spinner, description, bar, TaskProgressColumn(), elapsed, *left

    def _plain(self, event: ProgressEvent) -> None:
        if event.kind != "step.progress" or event.fraction is None:
            super()._plain(event)
            return
        key = (event.run_id, event.step or "")
        tenth, at = self._last.get(key, (-1, 0.0))
        now = time.monotonic()
        if int(event.fraction * 10) == tenth and now - at < self.every_s:
            return
        self._last[key] = (int(event.fraction * 10), now)
        say(self.stream, f"{event.run_id} {event.step}: {event.message}")


def _run(
    pipeline_name: str, params: dict[str, Any], env: str, as_json: bool
) -> tuple[RunRecord, dict[str, StepRecord]]:
    """Start and drive one engine run (CD-04 or CD-04-promote): (run, steps by name)."""
    display = BuildProgress(as_json) if pipeline_name == kb.NAME else ProgressDisplay(as_json)
    return run_pipeline(display, pipeline_name, params, environment=env, announce=True)


def stage_times(steps: dict[str, StepRecord]) -> dict[str, Any]:
    """Seconds per step, and inside them: chunking (plan), cache reads, tokenization, forward
    passes, cache writes and padding share (embed), writing the version (build)."""
    plan, embed, built = steps["plan"].output, steps["embed"].output, steps["build"].output
    return {
        "steps_s": {name: s.duration_s for name, s in steps.items()},
        "chunking_s": plan.get("chunking_s"),
        "embed": embed.get("stages", {}),
        "write_s": built.get("write_s"),
    }


def _thresholds(items: list[str]) -> dict[str, float]:
    """``["mrr=0.8", ...]`` as the gate's thresholds; a malformed or unknown one exits 2 naming it."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise fail(f"--threshold {item}: expected NAME=NUMBER, e.g. mrr=0.8", 2) from None
    try:
        RetrievalThresholds.from_params(out)
    except ConfigError as exc:
        raise fail(f"--threshold: {exc}", 2) from None
    return out


@kb_app.command("build")
def kb_build(
    full: Annotated[
        bool, typer.Option("--full", help="Re-embed every chunk (forced on a model change).")
    ] = False,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Only the added, changed and deleted chunks (default).")
    ] = False,
    env: EnvOpt = "dev",
    embedder: Annotated[
        str, typer.Option(help="minilm (default), minilm-int8 (a new model: full build) or hashing (tests).")
    ] = "minilm",
    runtime: Annotated[
        str | None,
        typer.Option(help="torch or onnx (same vectors); default MANGAASSIST_EMBED_RUNTIME or torch."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Texts per forward pass (default 32).", min=1)
    ] = None,
    executor: Annotated[
        str,
        typer.Option(help="Where the embedding runs: inprocess (default) or ray (workers of a Ray cluster)."),
    ] = "inprocess",
    address: Annotated[
        str | None,
        typer.Option(
            help="With --executor ray: the cluster (auto, HOST:PORT, ray://HOST:PORT); default a local Ray."
        ),
    ] = None,
    root: Annotated[Path | None, typer.Option(help="Repository holding knowledge/ and data/.")] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold",
            help="Gate threshold NAME=VALUE (recall_at_5, mrr, ndcg_at_10, tolerance, p95_ms); repeatable.",
        ),
    ] = None,
    dry: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a new index version from knowledge/ and the catalog, gate it, and move kb-live to it."""
    if full and incremental:
        raise fail("--full and --incremental exclude each other", 2)
    if runtime is not None and runtime not in RUNTIMES:
        raise fail(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}", 2)
    params: dict[str, Any] = {"mode": "full" if full else "incremental" if incremental else "auto"}
    if embedder != "minilm":
        params["embedder"] = embedder
    if runtime is not None:
        params["runtime"] = runtime
    if batch_size is not None:
        params["batch_size"] = batch_size
    if executor != "inprocess" or address is not None:
        try:
            ray_embedding.check_settings(executor, address)
            if address is not None:
                ray_embedding.check_reachable(address)
        except ConfigError as exc:
            message = str(exc).replace("executor=", "--executor ").replace("ray_address=", "--address ")
            raise fail(message, 2) from None
        params["executor"] = executor
    if address is not None:
        params["ray_address"] = address
    if root is not None:
        params["root"] = str(root.resolve())
    if threshold:
        params["thresholds"] = _thresholds(threshold)
    if dry:
        return dry_run(kb.NAME, params, env, as_json)
    with handled():
        run, steps = _run(kb.NAME, params, env, as_json)
    plan = steps["plan"].output or steps["plan"].detail.get("plan", {})
    gate = steps["gate"].detail
    promote = steps["promote"].output
    if as_json:
        _print_json(
            {
                "run": run.id,
                "state": run.effective_state.value,
                "reason": run.reason,
                "plan": plan,
                "embed": steps["embed"].output,
                "gate": {
                    k: gate.get(k) for k in ("verdict", "checks", "new", "live", "live_figures", "failures")
                },
                "promote": promote,
                "stages": stage_times(steps),
            }
        )
    else:
        summary = steps["plan"].detail.get("summary", "")
        console.print(f"[bold]plan[/]: {escape(str(summary))}", highlight=False)
        if gate.get("checks"):
            console.print(kb_gate_table(gate))
        if gate.get("live_figures"):
            console.print(f"live version's figures: {escape(str(gate['live_figures']))}", highlight=False)
        if promote.get("moved"):
            console.print(
                f"[bold]{LIVE_ALIAS}[/] -> {promote['live']} (was {promote['previous']})", highlight=False
            )
            if promote.get("dropped"):
                console.print(f"garbage-collected: {escape(', '.join(promote['dropped']))}", highlight=False)
        console.print(f"run {run.id} {_state_text(run.effective_state)}", highlight=False)
        if run.reason:
            console.print(f"reason: {escape(run.reason)}", highlight=False)
    if run.effective_state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


EmbedderOpt = Annotated[
    str, typer.Option(help="The chatbot's embedder: minilm (default) or hashing (tests only).")
]


def _move(version: str, env: str, as_json: bool, why: str, embedder: str) -> None:
    params = {"version": version, "reason": why}
    if embedder != "minilm":
        params["embedder"] = embedder
    with handled():
        run, steps = _run(kb.PROMOTE, params, env, as_json)
    step = steps["move-alias"]
    if as_json:
        _print_json({"run": run.id, "state": run.effective_state.value, "reason": run.reason, **step.output})
    elif run.effective_state is RunState.SUCCEEDED:
        console.print(
            f"[bold]{LIVE_ALIAS}[/] -> {step.output['live']} (was {step.output['previous']})", highlight=False
        )
    else:
        console.print(
            f"run {run.id} {_state_text(run.effective_state)}: {escape(run.reason or '')}", highlight=False
        )
    if run.effective_state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


@kb_app.command("promote")
def kb_promote(
    version: Annotated[str, typer.Argument(help="A ready version (see `kb list`).")],
    env: EnvOpt = "dev",
    embedder: EmbedderOpt = "minilm",
    as_json: JsonOpt = False,
) -> None:
    """Point kb-live at VERSION (locked and audited; no gate: use it to override a gate on purpose)."""
    _move(version, env, as_json, "promote", embedder)


@kb_app.command("rollback")
def kb_rollback(env: EnvOpt = "dev", embedder: EmbedderOpt = "minilm", as_json: JsonOpt = False) -> None:
    """Point kb-live back at the version it pointed at before its last move."""
    with handled():
        history = kb.open_index(kb.state_home({}, kb.find_root()), env).alias_history(LIVE_ALIAS)
    if not history or history[-1].previous is None:
        raise fail(f"{LIVE_ALIAS} has no previous version to roll back to", 2)
    _move(history[-1].previous, env, as_json, "rollback", embedder)


@kb_app.command("list")
def kb_list(as_json: JsonOpt = False) -> None:
    """Index versions: model, rows, size, gate metrics, and which one is live."""
    with handled():
        root = kb.find_root()
        listing = inventory.kb_listing(kb.open_index(kb.state_home({}, root)))
    if as_json:
        _print_json(listing)
        return
    live, versions = listing["live"], listing["versions"]
    if not versions:
        console.print("no index versions yet (build one with `mangaassist kb build`)")
        return
    table = Table(title=f"index versions ({LIVE_ALIAS} -> {live})")
    for column in ("", "version", "state", "model", "rows", "size", "recall@5", "MRR", "nDCG@10", "created"):
        table.add_column(column)
    for v in reversed(versions):
        m = v["meta"].get("metrics") or {}
        table.add_row(
            "[green]live[/]" if v["live"] else "",
            v["name"],
            v["state"],
            v["model"],
            str(v["rows"]),
            f"{v['size_bytes'] / 1e6:.1f} MB",
            *(f"{m[k]:.3f}" if k in m else "-" for k in ("recall_at_5", "mrr", "ndcg_at_10")),
            v["created_at"][:19].replace("T", " "),
        )
    console.print(table)


kb_app.command("compare-embedders")(compare_embedders)


def register(app: typer.Typer) -> None:
    app.add_typer(kb_app, name="kb")
