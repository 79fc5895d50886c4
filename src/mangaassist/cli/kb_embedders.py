"""``mangaassist kb compare-embedders``: a candidate embedding model against the live one, on
retrieval over the golden questions, before the full re-embedding that releases it
(``delivery.embedding_release``; docs/pipelines/cd-04-knowledge-base.md, "Releasing a new
embedding model"). Exit 0 PASS, 1 FAIL, 2 bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mangaassist.cli.engine_cmds import JsonOpt, console, fail
from mangaassist.core.errors import MangaAssistError
from mangaassist.platform.embeddings import KINDS, embedder_kind
from mangaassist.platform.vector import LIVE_ALIAS


def compare_embedders(
    candidate: Annotated[str, typer.Option("--candidate", help=f"The candidate: {', '.join(KINDS)}.")],
    live: Annotated[
        str | None,
        typer.Option(
            "--live", help=f"The model to beat (default: the one that built {LIVE_ALIAS}'s version)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Limits and golden questions (default ml/embeddings.yaml)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval (recall@1, recall@5, MRR, nDCG@10) of a candidate embedder against the live one."""
    from mangaassist.chatbot import answer_quality as aq
    from mangaassist.delivery import embedding_release as er
    from mangaassist.delivery.pipelines import kb

    for option, kind in (("--candidate", candidate), ("--live", live)):
        if kind is not None and kind not in KINDS:
            raise fail(f"{option} {kind}: expected one of {', '.join(KINDS)}", 2, as_json=as_json)
    try:
        root = kb.find_root()
        home = kb.state_home({}, root)
        release = er.ReleaseConfig.load(config or root / er.CONFIG, root)
        live_model = None
        if live is None:
            index = kb.open_index(home)
            name = index.resolve(LIVE_ALIAS)
            info = index.version(name) if name else None
            live_model = info.model if info else None
            live = embedder_kind(live_model) if live_model else "minilm"
            if live is None:
                raise fail(
                    f"{LIVE_ALIAS} -> {name} was embedded by {live_model}: name --live", 2, as_json=as_json
                )
        if live == candidate:
            raise fail(f"--candidate {candidate} is the live model: nothing to compare", 2, as_json=as_json)
        reports: dict[str, Any] = {}
        for side, kind in (("live", live), ("candidate", candidate)):
            started = time.perf_counter()
            reports[side] = aq.retrieval_eval(root, release.golden, kind, home)
            reports[side]["seconds"] = round(time.perf_counter() - started, 2)
            reports[side].pop("misses_at_1", None)
        result = er.compare(reports["live"], reports["candidate"], release)
    except MangaAssistError as exc:
        raise fail(str(exc), 2, as_json=as_json) from None
    if as_json:
        print(json.dumps({"verdict": result.verdict.value, **reports, "gate": result.as_dict()}, indent=2))
    else:
        questions = reports["live"]["fused"]["questions"]
        console.print(f"{release.golden}: {questions:.0f} questions", highlight=False)
        for side in ("live", "candidate"):
            r = reports[side]
            console.print(f"{side}: {r['embedder']} ({r['seconds']:.1f} s)", highlight=False)
        table = Table("metric", "live", "candidate", "limit", "ok")
        for row in result.report["rows"]:
            table.add_row(
                row["metric"],
                f"{row['champion']:.4f}" if row["champion"] is not None else "-",
                f"{row['candidate']:.4f}" if row["candidate"] is not None else "-",
                escape(row["limit"]),
                "[green]ok[/]" if row["ok"] else "[red]FAIL[/]",
            )
        console.print(table)
        for reason in result.reasons:
            console.print(f"  {escape(reason)}", highlight=False)
        console.print(f"verdict: {result.verdict.value}", highlight=False)
    if not result.passed:
        raise typer.Exit(1)
