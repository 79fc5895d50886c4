"""Who a person is, and how sure the engine is of it: the requester of a run and each approver.

An ``Actor`` is a name and the ``source`` that vouched for it:

- ``flag``: free text (``--as NAME``, ``MANGAASSIST_ACTOR``, the OS user): anyone can type any name;
- ``token``: a signed identity token (JWT, HS256 with the key ``identity.key`` in the state store's
  secrets directory, ``HOME/secrets`` for SQLite, 0600, made on first use; audience
  ``mangaassist-people``), issued by whoever holds the key
  (``mangaassist identity token --as NAME``) and carried by ``MANGAASSIST_IDENTITY_TOKEN`` or the
  dashboard's session cookie;
- ``aws``: the AWS caller identity (``sts get-caller-identity``): an assumed role's session name,
  or an IAM user's name, the ARN kept as evidence;
- ``github``: the ``actor`` claim of a GitHub Actions OIDC token, verified against GitHub's JWKS
  (signature, issuer, audience, expiry).

The policy names, per environment, which sources it accepts (``identities``); an environment that
requires approvals accepts only the verified ones (``token``, ``aws``, ``github``) unless the policy
says otherwise, so four-eyes cannot be met by typing two names. The engine checks the requester when
a run starts and every approver when they decide (``check_source``); the CLI and the dashboard only
establish who is there.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.exceptions import InvalidTokenError, PyJWKClientError

from mangaassist.chatbot.identity import load_or_create_key
from mangaassist.delivery.engine.errors import BadRequest

SOURCES = ("flag", "token", "aws", "github")
VERIFIED = ("token", "aws", "github")
AUDIENCE = "mangaassist-people"
ISSUER = "mangaassist"
ALGORITHM = "HS256"
TOKEN_TTL_S = 12 * 3600.0
MAX_TTL_S = 7 * 24 * 3600.0
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_JWKS_URL = f"{GITHUB_ISSUER}/.well-known/jwks"
GITHUB_AUDIENCE = "mangaassist"


class IdentityRefused(BadRequest):
    """Who asks could not be established the way the policy requires. Nothing changed."""


@dataclass(frozen=True)
class Actor:
    name: str
    source: str = "flag"
    evidence: str = ""
    """What vouched for it (a token's id, an ARN, a repository and run), for the audit log."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"identity source {self.source!r}: expected one of {', '.join(SOURCES)}")

    def __str__(self) -> str:
        return self.name

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "source": self.source, "evidence": self.evidence}


def as_actor(value: str | Actor) -> Actor:
    """A plain name is free text (``flag``)."""
    return value if isinstance(value, Actor) else Actor(value, "flag")


def accepted(policy: Mapping[str, Any]) -> tuple[str, ...]:
    """The identity sources a run's policy (its snapshot) accepts; a snapshot written before
    ``identities`` existed accepts every source (its run started under those rules)."""
    named = policy.get("identities")
    if named is None:
        return SOURCES
    return tuple(str(s) for s in named)


def check_source(actor: Actor, policy: Mapping[str, Any], role: str) -> None:
    """Refuse ``actor`` as ``role`` (requester, approver) when the policy does not accept its source."""
    allowed = accepted(policy)
    if actor.source in allowed:
        return
    env = policy.get("environment", "this environment")
    how = {
        "token": "MANGAASSIST_IDENTITY_TOKEN from `mangaassist identity token --as NAME` (or the dashboard)",
        "aws": "MANGAASSIST_IDENTITY=aws with AWS credentials (sts get-caller-identity)",
        "github": "a GitHub Actions job with `permissions: id-token: write`",
        "flag": "--as NAME",
    }
    ways = "; ".join(how[s] for s in allowed if s in how)
    raise IdentityRefused(
        f"{env} accepts a {role} identified by {', '.join(allowed)}, not by {actor.source} "
        f"({actor.name!r} is {'free text' if actor.source == 'flag' else actor.source}); use {ways}"
    )


# -- signed identity tokens ----------------------------------------------------------------------


def key_path(secrets_dir: Path) -> Path:
    """The identity key of a state store (``StateStore.secrets_dir``): one realm of people per
    state database, kept outside it."""
    return secrets_dir / "identity.key"


def load_key(secrets_dir: Path) -> bytes:
    return load_or_create_key(key_path(secrets_dir), "the identity token key")


def valid_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 128 or not name.isprintable():
        raise BadRequest(f"{name!r}: a person's name is 1 to 128 printable characters")
    return name


def issue_token(key: bytes, name: str, ttl_s: float = TOKEN_TTL_S, now: float | None = None) -> str:
    """An identity token naming ``name``, valid ``ttl_s`` seconds (at most ``MAX_TTL_S``)."""
    name = valid_name(name)
    if not 0 < ttl_s <= MAX_TTL_S:
        raise BadRequest(f"ttl {ttl_s:g} s: expected more than 0 and at most {MAX_TTL_S:g} s (7 days)")
    issued = time.time() if now is None else now
    claims = {
        "sub": name,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


@dataclass(frozen=True)
class Verified:
    actor: Actor
    expires_at: float


def verify_token(key: bytes, token: str) -> Verified:
    """The person an identity token names, or ``IdentityRefused`` saying why not."""
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
        raise IdentityRefused(f"the identity token is not valid: {exc}") from None
    name = valid_name(str(claims["sub"]))
    return Verified(Actor(name, "token", f"token {claims.get('jti', '')}".strip()), float(claims["exp"]))


# -- AWS and GitHub ------------------------------------------------------------------------------


def aws_actor(sts: Any) -> Actor:
    """The caller of ``sts`` (a boto3 STS client): an assumed role's session name or a user's name."""
    try:
        arn = str(sts.get_caller_identity()["Arn"])
    except Exception as exc:  # botocore's errors: no credentials, expired, unreachable
        raise IdentityRefused(f"the AWS caller identity could not be read: {exc}") from None
    resource = arn.split(":", 5)[-1]  # user/NAME, assumed-role/ROLE/SESSION, root
    parts = resource.split("/")
    name = parts[-1] if len(parts) > 1 else resource
    return Actor(valid_name(name), "aws", arn)


def github_actor(
    token: str,
    *,
    jwks_url: str = GITHUB_JWKS_URL,
    audience: str = GITHUB_AUDIENCE,
    issuer: str = GITHUB_ISSUER,
) -> Actor:
    """The ``actor`` of a GitHub Actions OIDC token (RS256, GitHub's JWKS, issuer and audience)."""
    try:
        signing = jwt.PyJWKClient(jwks_url, cache_keys=True, timeout=10).get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            signing.key,
            algorithms=["RS256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iss", "aud"]},
            leeway=30,
        )
    except (InvalidTokenError, PyJWKClientError) as exc:
        raise IdentityRefused(f"the GitHub OIDC token is not valid: {exc}") from None
    actor = claims.get("actor")
    if not isinstance(actor, str):
        raise IdentityRefused("the GitHub OIDC token has no actor claim")
    evidence = f"{claims.get('repository', '?')} run {claims.get('run_id', '?')}"
    return Actor(valid_name(actor), "github", evidence)
