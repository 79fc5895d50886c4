"""``mangaassist token issue CUSTOMER_ID``: a development customer token.

The token is signed (HS256) with the local development key of the state home
(``HOME/secrets/customer-token.key``, made on first use), for the audience and issuer the chatbot
of that home expects (``MANGAASSIST_CUSTOMER_TOKEN_AUDIENCE``/``_ISSUER``). Send it as
``Authorization: Bearer TOKEN``. It is for tests, the demo and people trying the chatbot; a chatbot
verifying tokens from a JWKS (``MANGAASSIST_CUSTOMER_JWKS_URL``) refuses it. Registered on the main
app by ``register(app)``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mangaassist.core.errors import MangaAssistError

err = Console(stderr=True)

token_app = typer.Typer(help="Development customer tokens: issue.", no_args_is_help=True)

_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """``90s``, ``30m``, ``1h`` or plain seconds; 1 second to 24 hours."""
    found = _TTL.match(text.lower())
    if not found:
        raise typer.BadParameter(f"{text!r}: expected a duration such as 90s, 30m or 1h")
    seconds = float(found.group(1)) * _UNIT_S[found.group(2)]
    if not 1 <= seconds <= 24 * 3600:
        raise typer.BadParameter(f"{text!r}: expected 1 second to 24 hours")
    return seconds


def resolve_home(home: Path | None) -> Path:
    """``--home``, else the state home a chatbot of this checkout uses (``MANGAASSIST_HOME`` or
    ``ROOT/.mangaassist``: the ``dev`` environment's)."""
    from mangaassist.platform.settings import find_root, state_home

    return home.resolve() if home is not None else state_home(find_root())


@token_app.command("issue")
def issue(
    customer_id: Annotated[
        str, typer.Argument(help="The customer the token names (its sub), e.g. cust-0001.")
    ],
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 90s, 30m, 1h (at most 24h).")] = "1h",
    home: Annotated[
        Path | None,
        typer.Option(
            "--home", help="State directory whose key signs (default MANGAASSIST_HOME or .mangaassist/)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print token, customer, expiry, audience and issuer as JSON.")
    ] = False,
) -> None:
    """Sign a customer token with the local development key; print it (expiry on stderr).

    Send it as `Authorization: Bearer TOKEN`. The customer is not looked up (POST /v1/signin is).
    """
    from mangaassist.chatbot.identity import issue_dev_token
    from mangaassist.chatbot.settings import IdentitySettings

    seconds = parse_ttl(ttl)
    try:
        state = resolve_home(home)
        issued = issue_dev_token(customer_id, state, seconds)
        settings = IdentitySettings.from_env(state)
    except MangaAssistError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    expires = datetime.fromtimestamp(issued.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if as_json:
        doc = {
            "token": issued.token,
            "customer_id": issued.customer_id,
            "expires_at": expires,
            "audience": settings.audience,
            "issuer": settings.issuer,
            "key_file": str(settings.key_path),
        }
        print(json.dumps(doc, indent=2))
        return
    print(issued.token)
    err.print(f"token for {issued.customer_id}, expires {expires}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
