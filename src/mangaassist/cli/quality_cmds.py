"""``mangaassist quality``: the chatbot's answer quality on the golden set (``ml/answers/``).

* ``quality run [--url URL] [--sample N] [--json]``: send the set (or a stratified sample) to a
  running chatbot over HTTP (``--url``; customers signed with the state home's development key) or
  to one loaded in this process (the default); print intent accuracy, correctness, fabrications,
  per-intent rates and the failures. ``--check`` exits 1 below the recorded baseline.
* ``quality baseline``: run the whole set in process and record ``baseline.json``.
* ``quality retrieval [--json]``: recall@1, recall@5 and MRR of the expected knowledge page on
  ``knowledge/evals/golden.jsonl``, for the plain hybrid ranking and the fused one.

A golden file with a problem stops before anything is sent, naming file, line and field (exit 2).
Registered on the main app by ``register(app)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mangaassist.cli.engine_cmds import console as out
from mangaassist.cli.engine_cmds import fail
from mangaassist.core.errors import MangaAssistError

quality_app = typer.Typer(
    help="Answer quality on the golden set (ml/answers): run, baseline, retrieval.", no_args_is_help=True
)


def _print_report(doc: dict[str, Any], failures: int) -> None:
    out.print(
        f"{doc['target']}: {doc['cases']} cases, {doc['turns']} turns in {doc['seconds']:.1f}s; "
        f"intent accuracy [bold]{doc['intent_accuracy']:.3f}[/], "
        f"correctness [bold]{doc['correctness']:.3f}[/], "
        f"fabrications [bold]{doc['fabrications']}[/], errors {doc['errors']}",
        highlight=False,
    )
    table = Table("intent", "turns", "intent acc.", "correct", "fabrications")
    for intent, row in doc["per_intent"].items():
        table.add_row(
            intent,
            f"{row['turns']:.0f}",
            f"{row['intent_accuracy']:.3f}",
            f"{row['correctness']:.3f}",
            f"{row['fabrications']:.0f}",
        )
    out.print(table)
    shown = doc["failures"][:failures]
    if shown:
        out.print(f"failures ({len(shown)} of {doc['failures_total']}):")
    for f in shown:
        why = []
        if not f["intent_ok"]:
            why.append(f"intent {f['intent'] or '-'} (expected {f['expected_intent']})")
        if f["missing_facts"]:
            why.append(f"missing {f['missing_facts']}")
        if not f["source_ok"]:
            why.append(f"sources {list(f['sources'])}")
        if f["forbidden"]:
            why.append(f"says {f['forbidden']}")
        if f["fabrications"]:
            why.append(f"fabricated {f['fabrications']}")
        if f["error"]:
            why.append(f["error"])
        out.print(
            f"  {f['case']}#{f['turn']} {f['message']!r}: " + "; ".join(why), highlight=False, soft_wrap=True
        )


@quality_app.command("run")
def run_cmd(
    url: Annotated[
        str | None,
        typer.Option("--url", help="A running chatbot (e.g. http://127.0.0.1:8000); default: in process."),
    ] = None,
    golden: Annotated[
        Path | None, typer.Option("--golden", help="Golden set folder (default ROOT/ml/answers).")
    ] = None,
    sample_n: Annotated[
        int, typer.Option("--sample", help="Questions to send, spread over the intents (0: all).", min=0)
    ] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample.")] = 0,
    home: Annotated[
        Path | None, typer.Option("--home", help="State home whose key signs customer tokens (with --url).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Concurrent cases (with --url).", min=1)] = 4,
    failures: Annotated[int, typer.Option("--failures", help="Failures to list.", min=0)] = 30,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit 1 if the run falls below the recorded baseline (same items)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Send the golden set to the chatbot and score its answers."""
    from mangaassist.chatbot import answer_quality as aq
    from mangaassist.platform.settings import find_root

    try:
        root = find_root()
        directory = golden or aq.default_dir(root)
        cases = aq.sample(aq.load_golden(directory), sample_n or None, seed)
        grounding = aq.Grounding.load(root)
        target: Any = (
            aq.HttpTarget(url, home=home.resolve() if home else None) if url else aq.InProcessTarget.load()
        )
    except MangaAssistError as exc:
        raise fail(str(exc), 2) from None
    try:
        report = aq.run(
            cases, target, grounding, workers=workers if url else 1, golden=aq.golden_digest(directory)
        )
    finally:
        target.close()
    doc = report.as_dict()
    verdict = None
    if check:
        baseline = aq.Baseline.load(directory / aq.BASELINE_FILE)
        reference = baseline.on(c.id for c in cases) if baseline is not None else None
        if reference is None:
            raise fail(
                f"{directory / aq.BASELINE_FILE}: no baseline for these items (record one: quality baseline)",
                2,
            )
        from mangaassist.delivery.pipelines.answers import answer_gate

        verdict = answer_gate(report, None, reference)
        doc["gate"] = verdict.as_dict() | {"candidate": None}
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        _print_report(doc, failures)
        if verdict is not None:
            out.print(f"gate: {verdict.verdict.value}" + "".join(f"\n  {r}" for r in verdict.reasons))
    if verdict is not None and not verdict.passed:
        raise typer.Exit(1)


@quality_app.command("baseline")
def baseline_cmd(
    golden: Annotated[
        Path | None, typer.Option("--golden", help="Golden set folder (default ROOT/ml/answers).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the recorded summary as JSON.")] = False,
) -> None:
    """Run the whole set in process and record its per-item results as baseline.json."""
    import os

    from mangaassist.chatbot import answer_quality as aq
    from mangaassist.platform.settings import find_root

    try:
        root = find_root()
        directory = golden or aq.default_dir(root)
        cases = aq.load_golden(directory)
        grounding = aq.Grounding.load(root)
        target = aq.InProcessTarget.load()
    except MangaAssistError as exc:
        raise fail(str(exc), 2) from None
    try:
        report = aq.run(cases, target, grounding, golden=aq.golden_digest(directory))
    finally:
        target.close()
    recorded = aq.Baseline.of(report, os.environ.get("MANGAASSIST_EMBEDDER", "minilm"))
    recorded.write(directory / aq.BASELINE_FILE)
    if as_json:
        print(json.dumps(recorded.summary, indent=2))
    else:
        out.print(f"recorded {directory / aq.BASELINE_FILE}: {recorded.summary}", highlight=False)


@quality_app.command("retrieval")
def retrieval_cmd(
    golden: Annotated[
        Path | None, typer.Option("--golden", help="Questions (default ROOT/knowledge/evals/golden.jsonl).")
    ] = None,
    misses: Annotated[int, typer.Option("--misses", help="Questions missed at rank 1 to list.", min=0)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """recall@1, recall@5 and MRR of the expected page: hybrid ranking against the fused one."""
    import os

    from mangaassist.chatbot import answer_quality as aq
    from mangaassist.platform.settings import find_root

    try:
        root = find_root()
        result = aq.retrieval_eval(
            root,
            golden or root / "knowledge" / "evals" / "golden.jsonl",
            os.environ.get("MANGAASSIST_EMBEDDER", "minilm"),
        )
    except MangaAssistError as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("ranking", "recall@1", "recall@5", "MRR", "ms/query")
    for name in ("hybrid", "fused"):
        m = result[name]
        table.add_row(
            name,
            f"{m['recall_at_1']:.3f}",
            f"{m['recall_at_5']:.3f}",
            f"{m['mrr']:.3f}",
            f"{m['ms_per_query']:.2f}",
        )
    out.print(f"{result['golden']}: {result['fused']['questions']:.0f} questions, {result['embedder']}")
    out.print(table)
    for m in result["misses_at_1"][:misses]:
        out.print(
            f"  {m['question']!r}: expected {m['relevant']}, got {m['got']}", highlight=False, soft_wrap=True
        )


def register(app: typer.Typer) -> None:
    app.add_typer(quality_app, name="quality")
