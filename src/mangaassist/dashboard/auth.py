"""Who is at the dashboard, and proof that a form was posted from the dashboard's own page.

A person signs in with a link that ``mangaassist up`` (for whoever ran it) or ``mangaassist
dashboard link --as NAME`` prints: ``/signin?token=...``, a JWT (HS256) signed with the dashboard's
key, ``HOME/secrets/dashboard.key`` (32 random bytes, mode 0600, made on first use), naming the
person (``sub``) for the audience ``mangaassist-dashboard``, valid for ``TOKEN_TTL_S`` by default.
``/signin`` checks it and moves it into a cookie (``HttpOnly``, ``SameSite=Strict``), so the token
leaves the address bar and no other site's page can send it.

Reading is open on loopback; deciding is not. Approving or rejecting a run needs

* a valid session cookie: the approver is its ``sub``, never a form field;
* the form's ``csrf`` field: an HMAC of the session's token under the dashboard key, which only a
  page the dashboard rendered for that session carries (a cross-site form cannot know it);
* an ``Origin`` (or, without one, ``Referer``) naming the dashboard itself when the browser sends
  one.

Bound to anything but loopback (``--allow-remote``, never the default) every page needs a session.
The engine's policy still decides whether that person may approve (listed approvers, no approving
your own run where policy forbids it); a token proves only who clicked.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jwt
from jwt.exceptions import InvalidTokenError

from mangaassist.chatbot.identity import load_or_create_key

AUDIENCE = "mangaassist-dashboard"
ISSUER = "mangaassist-dashboard"
COOKIE = "ma_dashboard"
TOKEN_TTL_S = 12 * 3600.0
MAX_TTL_S = 7 * 24 * 3600.0
ALGORITHM = "HS256"


class NotSignedIn(Exception):
    """No session, or one whose token does not verify (the reason is in the message)."""


class ForgedRequest(Exception):
    """A state-changing request without the dashboard's own proof (CSRF token or origin)."""


@dataclass(frozen=True)
class Session:
    """A signed-in person: ``actor`` from the token's ``sub``; ``token`` is what the cookie holds."""

    actor: str
    token: str
    expires_at: float


def key_path(home: Path) -> Path:
    return home / "secrets" / "dashboard.key"


def load_key(home: Path) -> bytes:
    return load_or_create_key(key_path(home), "the dashboard's session key")


def issue(key: bytes, actor: str, ttl_s: float = TOKEN_TTL_S, now: float | None = None) -> str:
    """A sign-in token for ``actor``, valid ``ttl_s`` seconds (at most ``MAX_TTL_S``)."""
    actor = actor.strip()
    if not actor or len(actor) > 128 or not actor.isprintable():
        raise ValueError(f"{actor!r}: a person's name is 1 to 128 printable characters")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl {ttl_s:g} s: expected more than 0 and at most {MAX_TTL_S:g} s (7 days)")
    issued = time.time() if now is None else now
    claims = {
        "sub": actor,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(key: bytes, token: str) -> Session:
    """The session a token proves, or ``NotSignedIn`` naming why not."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "sub", "aud", "iss"]},
            leeway=30,
        )
    except InvalidTokenError as exc:
        raise NotSignedIn(f"the sign-in token is not valid: {exc}") from None
    return Session(str(claims["sub"]), token, float(claims["exp"]))


def csrf_token(key: bytes, session: Session) -> str:
    """The value a form of this session must carry (bound to the session's token)."""
    return hmac.new(key, b"csrf:" + session.token.encode(), hashlib.sha256).hexdigest()


def check_form(key: bytes, session: Session, submitted: str | None) -> None:
    if not submitted or not hmac.compare_digest(submitted, csrf_token(key, session)):
        raise ForgedRequest("the form's csrf token is missing or wrong: reload the page and try again")


def check_origin(origin: str | None, referer: str | None, host: str | None) -> None:
    """A browser's ``Origin`` (else ``Referer``) must name this dashboard (``host``: the request's
    ``Host`` header). Neither sent (a non-browser client holding the cookie): accepted."""
    claimed = origin if origin and origin != "null" else referer
    if origin == "null":
        raise ForgedRequest("a request from an opaque origin (Origin: null) cannot change anything")
    if not claimed:
        return
    if not host or urlsplit(claimed).netloc.lower() != host.lower():
        raise ForgedRequest(f"a request from {claimed!r} cannot change anything on this dashboard")
