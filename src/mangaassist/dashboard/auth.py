"""Who is at the dashboard, and proof that a form was posted from the dashboard's own page.

A person signs in with the link ``mangaassist dashboard link --as NAME`` prints:
``/signin?token=...``, an identity token (``delivery.engine.people``: a JWT, HS256, signed with the
state store's identity key, ``HOME/secrets/identity.key``, 32 random bytes, mode 0600, made on
first use) naming the person for the audience ``mangaassist-people``, valid 12 hours by default:
the same token ``MANGAASSIST_IDENTITY_TOKEN`` carries for the CLI, so a person is the same person
(source ``token``) on both.
``/signin`` checks it and moves it into a cookie (``HttpOnly``, ``SameSite=Strict``), so the token
leaves the address bar and no other site's page can send it.

Reading is open on loopback; deciding is not. Approving or rejecting a run needs

* a valid session cookie: the approver is its ``sub``, never a form field;
* the form's ``csrf`` field: an HMAC of the session's token under the identity key, which only a
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
from dataclasses import dataclass
from urllib.parse import urlsplit

from mangaassist.delivery.engine import people
from mangaassist.delivery.engine.errors import BadRequest
from mangaassist.delivery.engine.state import StateStore

COOKIE = "ma_dashboard"
TOKEN_TTL_S = people.TOKEN_TTL_S


class NotSignedIn(Exception):
    """No session, or one whose token does not verify (the reason is in the message)."""


class ForgedRequest(Exception):
    """A state-changing request without the dashboard's own proof (CSRF token or origin)."""


@dataclass(frozen=True)
class Session:
    """A signed-in person: ``who`` (identified by ``token``), ``token`` is what the cookie holds."""

    who: people.Actor
    token: str
    expires_at: float

    @property
    def actor(self) -> str:
        return self.who.name


def load_key(store: StateStore) -> bytes:
    """The identity key of the state store the dashboard shows (``people.load_key``)."""
    return people.load_key(store.secrets_dir)


def issue(key: bytes, actor: str, ttl_s: float = TOKEN_TTL_S, now: float | None = None) -> str:
    """A sign-in token for ``actor`` (an identity token, ``people.issue_token``)."""
    try:
        return people.issue_token(key, actor, ttl_s, now)
    except BadRequest as exc:
        raise ValueError(str(exc)) from None


def verify(key: bytes, token: str) -> Session:
    """The session a token proves, or ``NotSignedIn`` naming why not."""
    try:
        verified = people.verify_token(key, token)
    except BadRequest as exc:
        raise NotSignedIn(str(exc).replace("identity token", "sign-in token")) from None
    return Session(verified.actor, token, verified.expires_at)


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
