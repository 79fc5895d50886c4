"""``mangaassist identity token`` and ``mangaassist dashboard link``: who a person is, signed.

An identity token (``delivery.engine.people``) is a JWT signed with the state store's identity key
(``HOME/secrets/identity.key``, made on first use; only whoever can read that file can issue one)
naming one person. With ``MANGAASSIST_IDENTITY_TOKEN=TOKEN`` the CLI acts as that person
(``runs start``, ``deploy ...``, ``approve``, ``reject``): the identity source ``token``, which an
environment that requires approvals accepts where a bare ``--as NAME`` is refused.

``dashboard link`` prints ``URL/signin?token=...`` for the running dashboard (``mangaassist up``
starts it; 127.0.0.1:8090 in dev): opening it signs that person in, and the page can then approve or
reject runs as them. A token and a link are credentials: do not paste them into chats or logs.
Registered on the main app by ``register(app)``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mangaassist.cli.token_cmds import parse_ttl, resolve_home
from mangaassist.core.errors import MangaAssistError
from mangaassist.dashboard import NAME
from mangaassist.delivery.engine import people
from mangaassist.delivery.engine.state import StateStore
from mangaassist.platform import daemons
from mangaassist.views.runs import resolve_actor

err = Console(stderr=True)

dashboard_app = typer.Typer(help="The delivery dashboard: sign-in links.", no_args_is_help=True)
identity_app = typer.Typer(help="Signed identities for the engine: tokens.", no_args_is_help=True)

ActorOpt = Annotated[
    str | None, typer.Option("--as", help="Who (default: MANGAASSIST_ACTOR or the OS user).")
]
TtlOpt = Annotated[str, typer.Option("--ttl", help="How long it lasts: 30m, 8h (at most 24h).")]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="State directory (default MANGAASSIST_HOME or .mangaassist/)."),
]


def issue_for(actor: str | None, ttl: str, home: Path | None) -> tuple[Path, str, str, str]:
    """(state home, who, token, expiry) for ``actor``; errors exit 2 with one line."""
    seconds = parse_ttl(ttl)
    try:
        state = resolve_home(home)
        url = os.environ.get("MANGAASSIST_STATE_URL") or f"sqlite:///{state / 'state.sqlite3'}"
        store = StateStore(url)
        try:
            key = people.load_key(store.secrets_dir)
        finally:
            store.close()
        who = resolve_actor(actor)
        token = people.issue_token(key, who, seconds)
        expires = datetime.fromtimestamp(people.verify_token(key, token).expires_at, UTC)
    except MangaAssistError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    return state, who, token, expires.strftime("%Y-%m-%dT%H:%M:%SZ")


@identity_app.command("token")
def token(
    actor: ActorOpt = None,
    ttl: TtlOpt = "8h",
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print token, actor and expiry as JSON.")] = False,
) -> None:
    """Print an identity token: export it as MANGAASSIST_IDENTITY_TOKEN to act as that person."""
    _, who, issued, expiry = issue_for(actor, ttl, home)
    if as_json:
        print(json.dumps({"token": issued, "actor": who, "expires_at": expiry}, indent=2))
        return
    print(issued)
    err.print(
        f"identity token for {who}, valid until {expiry}; it is a credential, keep it private",
        highlight=False,
    )


@dashboard_app.command("link")
def link(
    actor: ActorOpt = None,
    ttl: TtlOpt = "12h",
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print url, actor and expiry as JSON.")] = False,
) -> None:
    """Print a sign-in link to the running dashboard (approve and reject from the page)."""
    state = resolve_home(home)
    running = daemons.running(state, NAME)
    if running is None:
        err.print(
            f"[bold red]error:[/] no dashboard runs for {escape(str(state))}: start the platform with "
            "`mangaassist up`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    _, who, issued, expiry = issue_for(actor, ttl, home)
    url = f"{running['url']}/signin?token={issued}"
    if as_json:
        print(
            json.dumps(
                {"url": url, "dashboard": running["url"], "actor": who, "expires_at": expiry}, indent=2
            )
        )
        return
    print(url)
    err.print(
        f"sign-in link for {who}, valid until {expiry}; it is a credential, keep it private", highlight=False
    )


def register(app: typer.Typer) -> None:
    app.add_typer(dashboard_app, name="dashboard")
    app.add_typer(identity_app, name="identity")
