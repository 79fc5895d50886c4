"""``mangaassist``: the one command-line tool. Every subcommand has ``--help``.

Data commands take ``--json`` and then print one JSON document on stdout.
Errors print one line that says what is wrong and exit with status 2 (bad input) or 1.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mangaassist.core.errors import MangaAssistError
from mangaassist.views.answers import answer_flags, render_answer

if TYPE_CHECKING:
    from mangaassist.chatbot.embeddings import Embedder
    from mangaassist.chatbot.intent import LocalIntentClient
    from mangaassist.chatbot.settings import Settings

app = typer.Typer(
    name="mangaassist",
    help="MangaAssist: the manga shopping assistant and its delivery system.",
    no_args_is_help=True,
    add_completion=False,
)
model_app = typer.Typer(
    help="The intent model (CD-03): eval, train, gate, promote, rollback, list, history.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")

console = Console()
err = Console(stderr=True)

DEFAULT_URL = os.environ.get("MANGAASSIST_URL", "http://127.0.0.1:8080")


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind; loopback by default.")] = "127.0.0.1",
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the chatbot in the foreground (Ctrl-C stops it)."""
    from mangaassist.chatbot.serve import load_app
    from mangaassist.chatbot.serve import serve as run

    try:
        application = load_app()
    except MangaAssistError as exc:
        raise fail(str(exc), 2) from None
    run(application, host=host, port=port, log_level=log_level)


@app.command()
def chat(
    message: Annotated[str, typer.Argument(help="What to ask MangaAssist.")],
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Conversation id; new if omitted.")
    ] = None,
    customer: Annotated[
        str | None,
        typer.Option(
            "--customer",
            "-c",
            help="Ask as this customer: signs a development token (`mangaassist token issue`) and sends it.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Ask with this customer token (env MANGAASSIST_CUSTOMER_TOKEN)."),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="State directory whose development key signs --customer's token."),
    ] = None,
    url: Annotated[str, typer.Option(help="Chatbot or router URL (env MANGAASSIST_URL).")] = DEFAULT_URL,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the response as JSON, plus the fallback and guardrail flags from its headers.",
        ),
    ] = False,
) -> None:
    """Ask the chatbot one question and print the answer, intent and sources.

    Without --customer or --token the question is anonymous (order questions get "please sign in").
    """
    from mangaassist.cli.token_cmds import resolve_home

    session_id = session or f"cli-{uuid.uuid4().hex[:12]}"
    token = token or os.environ.get("MANGAASSIST_CUSTOMER_TOKEN") or None
    if customer is not None and token is not None:
        raise fail("give --customer or --token, not both", 2)
    headers = {"X-Session-Id": session_id}
    if customer is not None:
        from mangaassist.chatbot.identity import issue_dev_token

        try:
            token = issue_dev_token(customer, resolve_home(home), ttl_s=300).token
        except MangaAssistError as exc:
            raise fail(str(exc), 2) from None
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/v1/chat",
            timeout=30.0,
            json={"session_id": session_id, "message": message},
            headers=headers,
        )
    except httpx.HTTPError as exc:
        raise fail(
            f"cannot reach the chatbot at {url}: {exc}. Start the platform (`mangaassist up`, router on "
            "8080) or a single chatbot (`mangaassist serve`, then --url http://127.0.0.1:8000)."
        ) from None
    if response.status_code != 200:
        raise fail(f"the chatbot answered {response.status_code}: {response.text}")
    body = response.json()
    if as_json:
        print(json.dumps({**body, "flags": answer_flags(response.headers)}, indent=2))
        return
    render_answer(console, message, body, response.headers)


def _intent_client() -> tuple[Settings, Embedder, LocalIntentClient]:
    """The intent model for the data in this checkout (trained first if not cached)."""
    from mangaassist.chatbot.catalog import Catalog
    from mangaassist.chatbot.embeddings import make_embedder
    from mangaassist.chatbot.intent import load_or_train
    from mangaassist.chatbot.settings import Settings

    settings = Settings.from_env()
    embedder = make_embedder(settings.embedder)
    client = load_or_train(
        settings.intents_dir / "train.jsonl",
        embedder,
        settings.home / "models",
        Catalog.load(settings.catalog_path),
    )
    return settings, embedder, client


@model_app.command("eval")
def model_eval(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    show_errors: Annotated[int, typer.Option(help="How many misclassified examples to list.")] = 10,
) -> None:
    """Macro-F1 and per-intent precision and recall on ml/intents/eval.jsonl."""
    from mangaassist.chatbot.intent import evaluate, load_examples

    try:
        settings, embedder, client = _intent_client()
        report = evaluate(client, load_examples(settings.intents_dir / "eval.jsonl"), embedder)
    except MangaAssistError as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        print(json.dumps({"model": client.version, **report.as_dict()}, indent=2))
        return
    table = Table(title=f"{client.version} on eval.jsonl ({report.n} examples)")
    for col in ("intent", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "intent" else "right")
    for intent, row in report.per_intent.items():
        table.add_row(
            intent,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(int(row["support"])),
        )
    console.print(table)
    console.print(f"macro-F1 [bold]{report.macro_f1:.4f}[/]  accuracy {report.accuracy:.4f}")
    for miss in report.confusions[:show_errors]:
        console.print(f"  [dim]{miss['expected']} -> {miss['predicted']}: {miss['text']}[/]", highlight=False)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port for the demo chatbot; 0 picks a free one.")] = 0,
    releases: Annotated[
        bool,
        typer.Option(
            "--releases/--no-releases",
            help="Also release the application (CD-01) and the intent model (CD-03) on the local platform.",
        ),
    ] = True,
) -> None:
    """Start the chatbot, ask one question per intent, print the answers, stop it cleanly."""
    from mangaassist.demo import run_demo

    try:
        sys.exit(run_demo(console, port, releases))
    except MangaAssistError as exc:
        raise fail(str(exc)) from None


from mangaassist.cli import engine_cmds, kb_cmds, platform_cmds  # noqa: E402 - registers onto `app`, defined above

engine_cmds.register(app)
kb_cmds.register(app)  # the knowledge base (CD-04): build, promote, rollback, list
platform_cmds.register(app)  # the local platform: up, down, status, revisions
from mangaassist.cli import deploy_cmds  # noqa: E402 - CD-01: deploy app, rollback app, traffic

deploy_cmds.register(app)
from mangaassist.cli import infra_cmds  # noqa: E402 - CD-02: infra synth, plan, diff; deploy infra

infra_cmds.register(app)
from mangaassist.cli import monitoring_cmds  # noqa: E402 - CD-08: deploy monitoring, rollback monitoring

monitoring_cmds.register(app)
from mangaassist.cli import monitor_cmds  # noqa: E402 - CD-08: monitor build, monitor test

monitor_cmds.register(app)
from mangaassist.cli import migrate_cmds  # noqa: E402 - CD-07: migrate list, plan, apply, status, resume...

migrate_cmds.register(app)
from mangaassist.cli import config_cmds  # noqa: E402 - CD-06: config validate, deploy, rollback, history

config_cmds.register(app)
from mangaassist.cli import model_cmds  # noqa: E402 - CD-03: model train, gate, promote, rollback, list

model_cmds.register(model_app)
from mangaassist.cli import frontend_cmds  # noqa: E402 - CD-05: deploy frontend, rollback frontend, previews

frontend_cmds.register(app)

from mangaassist.cli import token_cmds  # noqa: E402 - customer identity: token issue (development tokens)

token_cmds.register(app)

from mangaassist.cli import report_cmds  # noqa: E402 - report delivery: the DORA measures from the run history

report_cmds.register(app)

from mangaassist.cli import dashboard_cmds  # noqa: E402 - dashboard link, identity token

dashboard_cmds.register(app)

from mangaassist.cli import quality_cmds  # noqa: E402 - answer quality: the golden set, retrieval metrics

quality_cmds.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
