"""``mangaassist model``: train, gate, promote, roll back and list the intent model (CD-03).

``model train`` trains from ``ml/intent.yaml``, logs the run to MLflow, registers the version and
points ``candidate`` at it. ``model gate`` compares a version (default: ``candidate``) with the
``champion`` under the config's gate and exits 1 on FAIL. ``model promote`` gates first (refused
on FAIL unless ``--force --reason``), then moves ``champion`` (and ``previous``); ``model
rollback`` moves ``champion`` back. ``model list`` and ``model history`` show the registry
(``model list --json``: ``views.inventory.model_listing``, what the dashboard shows too).

The registry is MLflow's: SQLite under ``MANGAASSIST_HOME/mlflow`` unless ``MLFLOW_TRACKING_URI``
is set. ``MANGAASSIST_EMBEDDER`` chooses the embedder (``minilm``, or ``hashing`` for tests).
Registered onto the existing ``model`` group by ``register(model_app)``; ``model eval`` stays in
``cli/main.py``. Errors: exit 2 for bad input (config, unknown version), 1 for a failed gate or
refused move.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from mangaassist.cli.engine_cmds import AsOpt, JsonOpt, _print_json, _table, console, fail, handled
from mangaassist.core.errors import ConfigError
from mangaassist.views import inventory
from mangaassist.views.runs import resolve_actor

if TYPE_CHECKING:
    from mangaassist.chatbot.intent_training import TrainingConfig
    from mangaassist.chatbot.settings import Settings
    from mangaassist.delivery.analysis.gates import GateResult
    from mangaassist.delivery.model_gate import GateConfig
    from mangaassist.platform.model_registry import TrackingRegistry

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="Model config (default: ml/intent.yaml in the repository).", dir_okay=False
    ),
]
VersionOpt = Annotated[
    str | None, typer.Option("--version", "-v", help="Registry version number (default: the 'candidate').")
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why; recorded with the alias move.")]

SUMMARY = ("macro_f1", "recall_human_handoff", "ece", "p99_latency_ms", "size_mb")


def register(model_app: typer.Typer) -> None:
    """Add train, gate, promote, rollback, list and history to the ``model`` group."""
    model_app.command("train")(model_train)
    model_app.command("gate")(model_gate)
    model_app.command("promote")(model_promote)
    model_app.command("rollback")(model_rollback)
    model_app.command("list")(model_list)
    model_app.command("history")(model_history)


# -- commands ------------------------------------------------------------------------------------


def model_train(
    config_path: ConfigOpt = None,
    train: Annotated[
        Path | None,
        typer.Option("--train", help="Train on this JSONL file instead of the config's.", dir_okay=False),
    ] = None,
    train_fraction: Annotated[
        float | None,
        typer.Option(
            "--train-fraction",
            help="Train on a stratified share (0-1] of the training file, e.g. 0.7 for a demo champion.",
        ),
    ] = None,
    shuffle_labels: Annotated[
        bool,
        typer.Option("--shuffle-labels", help="Drill: permute the labels, so the model learns nothing."),
    ] = False,
    reason: ReasonOpt = "",
    actor: AsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the intent model, log it to MLflow, register it and point 'candidate' at it."""
    from mangaassist.chatbot.catalog import Catalog
    from mangaassist.chatbot.embeddings import make_embedder
    from mangaassist.chatbot.intent_training import train_candidate

    with handled(as_json):
        settings, config, _ = _configs(config_path)  # the gate is validated too, before training
        if train is not None and not train.is_file():
            raise ConfigError(f"--train {train}: no such file")
        config = config.with_overrides(
            train_path=train.resolve() if train else None,
            train_fraction=train_fraction,
            shuffle_labels=shuffle_labels or None,
        )
        registry = _registry(settings)
        embedder = make_embedder(settings.embedder)
        result = train_candidate(
            config,
            registry,
            embedder,
            Catalog.load(settings.catalog_path),
            actor=resolve_actor(actor),
            reason=reason,
        )
    if as_json:
        _print_json(
            {
                "model": config.model_name,
                "version": result.version.version,
                "package_version": result.package_version,
                "run_id": result.run_id,
                "aliases": list(result.version.aliases),
                "tracking_uri": registry.tracking_uri,
                "metrics": result.metrics,
            }
        )
        return
    v = result.version
    console.print(
        f"trained {escape(config.model_name)} version [bold]{v.version}[/] "
        f"({escape(result.package_version)}), run {result.run_id}; aliases: {', '.join(v.aliases) or '-'}",
        highlight=False,
        soft_wrap=True,
    )
    _table(None, ["metric", "value"], [[k, _fmt(result.metrics.get(k))] for k in (*SUMMARY, "train_seconds")])
    console.print(f"next: mangaassist model gate --version {v.version}", highlight=False, markup=False)


def model_gate(
    version: VersionOpt = None,
    config_path: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a version with the champion under the config's gate; exit 1 on FAIL."""
    from mangaassist.delivery.model_gate import gate_version

    with handled(as_json):
        settings, config, gate_config = _configs(config_path)
        report = gate_version(_registry(settings), config.model_name, gate_config, version)
    if as_json:
        _print_json(report.as_dict())
    else:
        _print_gate(report)
    if not report.passed:
        raise typer.Exit(1)


def model_promote(
    version: VersionOpt = None,
    config_path: ConfigOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if the gate fails (needs --reason).")
    ] = False,
    reason: ReasonOpt = "",
    actor: AsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point 'champion' at a version (default: the candidate) and 'previous' at the old champion.

    The gate runs first; a FAIL refuses the promotion unless --force is given with a --reason."""
    from mangaassist.delivery.model_gate import gate_version
    from mangaassist.delivery.model_promotion import promote

    if force and not reason.strip():
        raise fail("--force needs a --reason (it is recorded with the alias move)", 2, as_json=as_json)
    with handled(as_json):
        settings, config, gate_config = _configs(config_path)
        registry = _registry(settings)
        report = gate_version(registry, config.model_name, gate_config, version)
        if not report.passed and not force:
            if not as_json:
                _print_gate(report)
            raise fail(
                f"version {report.candidate_version} failed the gate: {'; '.join(report.reasons)} "
                "(promote anyway with --force --reason TEXT)",
                1,
                as_json=as_json,
            )
        target = report.candidate_version
        assert target is not None
        why = reason or f"gate {report.verdict.value}"
        if force and not report.passed:
            why = f"FORCED past a failed gate: {reason}"
        change = promote(registry, config.model_name, target, actor=resolve_actor(actor), reason=why)
    if as_json:
        _print_json({**change.as_dict(), "gate": report.as_dict()})
        return
    before = change.champion_before or "none"
    console.print(
        f"{escape(change.name)}: champion {before} -> [bold]{change.champion}[/]"
        f"{f'; previous = {change.previous}' if change.previous else ' (first champion)'}",
        highlight=False,
        soft_wrap=True,
    )


def model_rollback(
    config_path: ConfigOpt = None,
    reason: ReasonOpt = "",
    actor: AsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point 'champion' back at 'previous' (and remove 'previous')."""
    from mangaassist.delivery.model_promotion import rollback

    with handled(as_json):
        settings, config, _ = _configs(config_path)
        change = rollback(_registry(settings), config.model_name, actor=resolve_actor(actor), reason=reason)
    if as_json:
        _print_json(change.as_dict())
        return
    console.print(
        f"{escape(change.name)}: champion {change.champion_before or 'none'} -> [bold]{change.champion}[/] "
        "(rolled back; 'previous' cleared)",
        highlight=False,
        soft_wrap=True,
    )


def model_list(config_path: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Registered versions, oldest first, with their aliases and key metrics."""
    with handled(as_json):
        settings, config, _ = _configs(config_path)
        registry = _registry(settings)
        listing = inventory.model_listing(registry, config.model_name)
    if as_json:
        _print_json(listing)
        return
    versions = listing["versions"]
    if not versions:
        console.print(
            f"no versions of {escape(config.model_name)} yet: mangaassist model train", highlight=False
        )
        return
    rows: list[list[str | Text]] = [_version_row(v) for v in versions]
    _table(
        f"{config.model_name} in {registry.tracking_uri}",
        ["version", "aliases", "created", "package", *SUMMARY, "train"],
        rows,
    )


def model_history(config_path: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Every alias move (who, when, from which version to which, why), oldest first."""
    with handled(as_json):
        settings, config, _ = _configs(config_path)
        moves = _registry(settings).history(config.model_name)
    if as_json:
        _print_json({"model": config.model_name, "moves": moves})
        return
    _table(
        f"alias moves of {config.model_name}",
        ["at", "alias", "from", "to", "actor", "reason"],
        [
            [
                m["at"],
                m["alias"],
                str(m["previous"] or "-"),
                str(m["version"] or "(removed)"),
                m["actor"],
                m["reason"],
            ]
            for m in moves
        ],
    )


# -- helpers -------------------------------------------------------------------------------------


def _configs(path: Path | None) -> tuple[Settings, TrainingConfig, GateConfig]:
    """Settings, the training config and its validated gate (errors name the field)."""
    from mangaassist.chatbot.intent_training import TrainingConfig
    from mangaassist.chatbot.settings import Settings
    from mangaassist.delivery.model_gate import GateConfig

    settings = Settings.from_env()
    config_path = path or settings.root / "ml" / "intent.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: no such model config")
    config = TrainingConfig.load(config_path, settings.root)
    gate = GateConfig.from_mapping(config.gate, f"{config_path}: gate")
    return settings, config, gate


def _registry(settings: Settings) -> TrackingRegistry:
    """The environment's model registry (``platform.factory``), under the chatbot's state directory."""
    from mangaassist.platform.factory import platform_for

    return platform_for(home=settings.home).tracking_registry()


def _print_gate(result: GateResult) -> None:
    """The model gate's side-by-side table (its report's ``rows``), the verdict and the reasons."""
    rows: list[list[str | Text]] = [
        [
            r["metric"],
            _fmt(r["champion"]),
            _fmt(r["candidate"]),
            r["limit"],
            Text("ok", style="green") if r["ok"] else Text("FAIL", style="bold red"),
            r["note"],
        ]
        for r in result.report.get("rows", [])
    ]
    champion = f"v{result.baseline_version}" if result.baseline_version else "none (absolute limits only)"
    console.print(Text(f"gate: candidate v{result.candidate_version} vs champion {champion}"))
    _table(None, ["metric", "champion", "candidate", "limit", "ok", "note"], rows)
    style = "bold green" if result.passed else "bold red"
    console.print(Text(f"verdict: {result.verdict.value}", style=style))
    for reason in result.reasons:
        console.print(Text(f"  - {reason}"))


def _version_row(v: dict[str, Any]) -> list[str | Text]:
    """One row of ``model list``: a version as ``inventory.model_listing`` gives it."""
    return [
        v["version"],
        ", ".join(v["aliases"]) or "-",
        v["created_at"],
        v["tags"].get("package_version", "-"),
        *(_fmt(v["metrics"].get(k)) for k in SUMMARY),
        _train_note(v["params"]),
    ]


def _train_note(params: dict[str, Any]) -> str:
    notes = []
    if params.get("train_fraction") not in (None, "1.0"):
        notes.append(f"fraction {params['train_fraction']}")
    if params.get("shuffle_labels") == "true":
        notes.append("shuffled labels")
    return ", ".join(notes) or "full"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
