"""``mangaassist dashboard link``: a sign-in link to the delivery dashboard.

The dashboard (``mangaassist up`` starts it; 127.0.0.1:8090 in dev) shows every run, approval,
service and version to anyone on the machine; approving or rejecting a run from it needs a session.
This prints ``URL/signin?token=...``: a token signed with the dashboard's key
(``HOME/secrets/dashboard.key``) naming the person (``--as``, else ``MANGAASSIST_ACTOR``, else the
OS user). Opening it sets the session cookie; the engine's policy still decides whether that
person may approve a given run. The link is a credential: do not paste it into chats or logs.
Registered on the main app by ``register(app)``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mangaassist.cli.token_cmds import parse_ttl, resolve_home
from mangaassist.core.errors import MangaAssistError
from mangaassist.dashboard import auth
from mangaassist.dashboard.server import NAME
from mangaassist.platform import daemons
from mangaassist.views.runs import resolve_actor

err = Console(stderr=True)

dashboard_app = typer.Typer(help="The delivery dashboard: sign-in links.", no_args_is_help=True)


@dashboard_app.command("link")
def link(
    actor: Annotated[
        str | None, typer.Option("--as", help="Who signs in (default: MANGAASSIST_ACTOR or the OS user).")
    ] = None,
    ttl: Annotated[
        str, typer.Option("--ttl", help="How long the session lasts: 30m, 8h (at most 24h).")
    ] = "12h",
    home: Annotated[
        Path | None,
        typer.Option(
            "--home", help="State directory of the platform (default MANGAASSIST_HOME or .mangaassist/)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print url, actor and expiry as JSON.")] = False,
) -> None:
    """Print a sign-in link to the running dashboard (approve and reject from the page)."""
    seconds = parse_ttl(ttl)
    try:
        state = resolve_home(home)
        running = daemons.running(state, NAME)
        if running is None:
            raise typer.BadParameter(
                f"no dashboard runs for {state}: start the platform with `mangaassist up`",
                param_hint="--home",
            )
        who = resolve_actor(actor)
        token = auth.issue(auth.load_key(state), who, seconds)
    except (MangaAssistError, ValueError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    url = f"{running['url']}/signin?token={token}"
    expires = datetime.fromtimestamp(auth.verify(auth.load_key(state), token).expires_at, UTC)
    expiry = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
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
