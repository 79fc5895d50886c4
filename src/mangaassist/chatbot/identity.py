"""Who the customer is: the ``sub`` of a signed JWT sent as ``Authorization: Bearer <token>``, or as
``X-MangaAssist-Authorization: Bearer <token>`` when something else owns ``Authorization``.

Which header (``customer_token``): a gateway or a signer may own ``Authorization`` (a pipeline's
pinned request to a Lambda function URL with ``AWS_IAM`` is signed with SigV4, whose signature is
``Authorization: AWS4-HMAC-SHA256 ...``), so the customer's token may come in
``X-MangaAssist-Authorization`` (``platform.compute.CUSTOMER_TOKEN_HEADER``) instead:

* with ``X-MangaAssist-Authorization``, its Bearer token is the customer's; an ``Authorization``
  beside it that is not Bearer (a signature, a gateway's credentials) is ignored, one that is
  Bearer must carry the same token, else ``InvalidToken`` (``Reason.CONFLICT``) names the conflict;
* without it, ``Authorization: Bearer`` is the customer's, as always, and another scheme is
  ``InvalidToken`` (``Reason.NOT_BEARER``), except a SigV4 signature (``AWS4-HMAC-SHA256``), which
  proves who sent the request to AWS, not who the customer is: the request is anonymous (a signed
  smoke test's chat, which carries no customer);
* each header at most once; an ``X-MangaAssist-Authorization`` that is not ``Bearer <token>`` is
  ``InvalidToken`` naming it.

The chat API never takes a customer id from the request body (customer ids are guessable); it asks
``TokenVerifier.verify`` for the customer of the request's token. A token is accepted only when

* its algorithm is on the allow-list, checked before anything else: ``HS256`` with the local
  development key, ``RS256``/``ES256`` with the keys of a JWKS; never ``none``;
* its signature verifies with the configured key (a JWKS key chosen by the token's ``kid``);
* it carries ``exp`` (not past), ``sub``, ``iss`` (the configured issuer) and ``aud`` (exactly the
  configured audience, e.g. ``mangaassist-chat``); ``nbf`` and ``iat``, when present, are not in the
  future. Clocks may differ by ``LEEWAY_S`` (30 s);
* its ``sub`` is a plausible customer id (1 to 128 printable characters).

Anything else raises ``InvalidToken`` with a ``Reason`` (the API answers 401 naming it); a JWKS that
cannot be read raises ``KeysUnavailable`` (503: the token may be fine). Neither the token nor its
claims are logged, nor quoted in an error.

Keys (``chatbot.settings.IdentitySettings``):

* locally, a development HMAC key, 32 random bytes in ``HOME/secrets/customer-token.key``, made
  0600 on first use (``load_or_create_key``); ``issue_token`` signs with it (the dev sign-in
  ``POST /v1/signin``, ``mangaassist token issue``, ``mangaassist chat --customer``, tests);
* in AWS, the JWKS of the identity provider (Amazon Cognito's user pool), read with
  ``jwt.PyJWKClient``: the key set is cached for ``JWKS_CACHE_S`` seconds, and a token naming an
  unknown ``kid`` refetches it at most once per ``JWKS_COOLDOWN_S`` (a key rotation is picked up, a
  flood of made-up ``kid`` values does not hammer the provider).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidSubjectError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWKClientConnectionError,
    PyJWKClientError,
    PyJWKError,
    PyJWKSetError,
)

from mangaassist.chatbot.settings import DEFAULT_AUDIENCE, DEV_ISSUER, IdentitySettings
from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.platform.compute import CUSTOMER_TOKEN_HEADER, parse_bearer

__all__ = [
    "CUSTOMER_TOKEN_HEADER",
    "DEFAULT_AUDIENCE",
    "DEV_ISSUER",
    "HMAC_ALGORITHMS",
    "JWKS_ALGORITHMS",
    "LEEWAY_S",
    "Customer",
    "InvalidToken",
    "IssuedToken",
    "KeysUnavailable",
    "Reason",
    "TokenVerifier",
    "bearer_token",
    "customer_token",
    "issue_dev_token",
    "issue_token",
    "load_or_create_key",
]

LEEWAY_S = 30
"""Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""
HMAC_ALGORITHMS: tuple[str, ...] = ("HS256",)
JWKS_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")
KEY_BYTES = 32
MAX_TOKEN_CHARS = 4096
MAX_SUBJECT_CHARS = 128
MAX_TTL_S = 24 * 3600
"""The longest a development token may live."""
JWKS_CACHE_S = 300.0
JWKS_COOLDOWN_S = 30.0
JWKS_TIMEOUT_S = 5.0
REQUIRED_CLAIMS = ("exp", "sub", "iss", "aud")
SIGNATURE_SCHEMES = ("aws4-hmac-sha256",)
"""``Authorization`` schemes that sign the request for AWS (SigV4): never a customer's token."""


class Reason(StrEnum):
    """Why a token was refused (the ``reason`` of a 401)."""

    NOT_BEARER = "not_bearer"
    CONFLICT = "conflicting_tokens"
    MALFORMED = "malformed"
    ALGORITHM = "algorithm_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    MISSING_CLAIM = "missing_claim"
    BAD_SUBJECT = "bad_subject"


_MESSAGES = {
    Reason.NOT_BEARER: "the {header} header must be 'Bearer <token>'",
    Reason.CONFLICT: f"Authorization and {CUSTOMER_TOKEN_HEADER} carry different tokens: send one",
    Reason.MALFORMED: "the token is not a well-formed JWT",
    Reason.ALGORITHM: "the token's algorithm is not accepted",
    Reason.UNKNOWN_KEY: "the token names no key this service trusts",
    Reason.BAD_SIGNATURE: "the token's signature does not verify",
    Reason.EXPIRED: "the token has expired",
    Reason.NOT_YET_VALID: "the token is not valid yet",
    Reason.WRONG_AUDIENCE: "the token was issued for another audience",
    Reason.WRONG_ISSUER: "the token was issued by another issuer",
    Reason.MISSING_CLAIM: "the token lacks a required claim",
    Reason.BAD_SUBJECT: "the token's subject is not a customer id",
}


class InvalidToken(MangaAssistError):
    """The token proves nothing: ``reason`` says why; the message is fit to show the caller (it
    quotes nothing from the token)."""

    def __init__(self, reason: Reason, detail: str = "", *, header: str = "Authorization") -> None:
        self.reason = reason
        message = _MESSAGES[reason].replace("{header}", header)
        super().__init__(message + (f" ({detail})" if detail else ""))


class KeysUnavailable(MangaAssistError):
    """The JWKS could not be read, so no token can be checked now (the token may be valid)."""


@dataclass(frozen=True)
class Customer:
    """The verified identity of one request."""

    customer_id: str
    expires_at: int
    """The token's ``exp`` (seconds since the epoch)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    customer_id: str
    expires_at: int
    """Seconds since the epoch."""


def bearer_token(authorization: str | None, header: str = "Authorization") -> str | None:
    """The token of an ``Authorization`` (or ``header``) value: None without one (an anonymous
    request); ``InvalidToken`` naming ``header`` for another scheme or an empty token."""
    if authorization is None:
        return None
    token = parse_bearer(authorization)
    if token is None:
        raise InvalidToken(Reason.NOT_BEARER, header=header)
    return token


def _scheme(value: str) -> str:
    return value.strip().partition(" ")[0].lower()


def customer_token(authorization: list[str], customer: list[str]) -> str | None:
    """The customer's token from a request's ``Authorization`` values and its
    ``X-MangaAssist-Authorization`` values (``customer``; each list empty when the header is
    absent): None for an anonymous request; ``InvalidToken`` naming the header and the rule
    broken. The rules are the module docstring's."""
    for name, values in (("Authorization", authorization), (CUSTOMER_TOKEN_HEADER, customer)):
        if len(values) > 1:
            raise InvalidToken(Reason.NOT_BEARER, f"one {name} header only", header=name)
    signer = authorization[0] if authorization else None
    if not customer:
        if signer is not None and _scheme(signer) in SIGNATURE_SCHEMES:
            return None  # a signature for AWS, no customer
        return bearer_token(signer)
    token = bearer_token(customer[0], CUSTOMER_TOKEN_HEADER)
    if signer is not None and _scheme(signer) == "bearer" and bearer_token(signer) != token:
        raise InvalidToken(Reason.CONFLICT)
    return token


# the development key ---------------------------------------------------------------------------
def load_or_create_key(path: Path, what: str = "the customer token key") -> bytes:
    """The development HMAC key at ``path``; made on first use (32 random bytes, mode 0600, its
    folder 0700). Processes racing to make it agree on one key (the first link wins). ``what``
    names the key in errors (the delivery dashboard keeps its session key the same way)."""
    try:
        return _read_key(path, what)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use that one
            os.link(tmp, path)  # atomic, and never replaces an existing key
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path, what)


def _read_key(path: Path, what: str) -> bytes:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError(
            f"{path}: {what} is readable by others (mode {mode & 0o777:o}); chmod 600 it"
        )
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{path}: expected a {KEY_BYTES}-byte key, found {len(key)} bytes; delete the file to make a "
            "new key (tokens signed with the old one stop working)"
        )
    return key


def valid_customer_id(value: object) -> bool:
    """1 to 128 printable characters, no surrounding blanks: what a ``sub`` must look like."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_SUBJECT_CHARS
        and value == value.strip()
        and value.isprintable()
    )


def issue_token(
    customer_id: str,
    key: bytes,
    ttl_s: float = 3600,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str = DEV_ISSUER,
) -> IssuedToken:
    """A development token (HS256) for ``customer_id``, valid for ``ttl_s`` seconds (1 s to 24 h)."""
    if not valid_customer_id(customer_id):
        raise ConfigError(f"customer id {customer_id!r}: expected 1 to 128 printable characters")
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise ConfigError(f"token lifetime {ttl_s:g}s: expected 1 second to 24 hours")
    now = int(time.time())
    expires_at = now + int(ttl_s)
    claims: dict[str, Any] = {
        "sub": customer_id,
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": expires_at,
        "jti": uuid.uuid4().hex,
    }
    return IssuedToken(jwt.encode(claims, key, algorithm="HS256"), customer_id, expires_at)


# verification ----------------------------------------------------------------------------------
class TokenVerifier:
    """Checks customer tokens against one key source: the development key (``key``, HS256) or a
    JWKS (``jwks``, RS256/ES256), never both, so a development token is never accepted where a
    JWKS is configured."""

    def __init__(
        self,
        audience: str,
        issuer: str,
        *,
        key: bytes | None = None,
        jwks: PyJWKClient | None = None,
        leeway_s: float = LEEWAY_S,
    ) -> None:
        if (key is None) == (jwks is None):
            raise ValueError("a TokenVerifier takes exactly one of key and jwks")
        self.audience = audience
        self.issuer = issuer
        self.key = key
        self.jwks = jwks
        self.leeway_s = leeway_s
        self.algorithms = JWKS_ALGORITHMS if jwks is not None else HMAC_ALGORITHMS

    @classmethod
    def from_settings(cls, settings: IdentitySettings) -> TokenVerifier:
        if settings.jwks_url is not None:
            client = PyJWKClient(
                settings.jwks_url,
                cache_keys=False,  # its per-key cache never expires: a revoked key would stay trusted
                cache_jwk_set=True,
                lifespan=JWKS_CACHE_S,
                timeout=JWKS_TIMEOUT_S,
                cooldown_duration=JWKS_COOLDOWN_S,
            )
            return cls(settings.audience, settings.issuer, jwks=client)
        if settings.key_path is None:
            raise ConfigError("customer tokens: neither a JWKS URL nor a development key file is set")
        return cls(settings.audience, settings.issuer, key=load_or_create_key(settings.key_path))

    @property
    def uses_network(self) -> bool:
        """True when ``verify`` may fetch a JWKS (call it off the event loop)."""
        return self.jwks is not None

    def verify(self, token: str) -> Customer:
        """The customer of ``token``, or ``InvalidToken`` / ``KeysUnavailable``."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken(Reason.MALFORMED, f"empty or over {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except DecodeError:
            raise InvalidToken(Reason.MALFORMED) from None
        if header.get("alg") not in self.algorithms:
            raise InvalidToken(Reason.ALGORITHM, "accepted: " + ", ".join(self.algorithms))
        key: bytes | PyJWK = self.key if self.key is not None else self._jwks_key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
            )
        except InvalidSignatureError:
            raise InvalidToken(Reason.BAD_SIGNATURE) from None
        except ExpiredSignatureError:
            raise InvalidToken(Reason.EXPIRED) from None
        except ImmatureSignatureError:
            raise InvalidToken(Reason.NOT_YET_VALID) from None
        except InvalidAudienceError:
            raise InvalidToken(Reason.WRONG_AUDIENCE, f"expected {self.audience}") from None
        except InvalidIssuerError:
            raise InvalidToken(Reason.WRONG_ISSUER, f"expected {self.issuer}") from None
        except MissingRequiredClaimError as exc:
            claim = exc.claim if exc.claim in REQUIRED_CLAIMS else "?"
            raise InvalidToken(Reason.MISSING_CLAIM, claim) from None
        except InvalidSubjectError:
            raise InvalidToken(Reason.BAD_SUBJECT) from None
        except InvalidAlgorithmError:
            raise InvalidToken(Reason.ALGORITHM, "accepted: " + ", ".join(self.algorithms)) from None
        except InvalidTokenError:  # a payload that is not JSON, a non-numeric exp or iat, ...
            raise InvalidToken(Reason.MALFORMED) from None
        subject = claims.get("sub")
        if not valid_customer_id(subject):
            raise InvalidToken(Reason.BAD_SUBJECT)
        assert isinstance(subject, str)
        return Customer(subject, int(claims["exp"]))

    def _jwks_key(self, kid: object) -> PyJWK:
        assert self.jwks is not None
        if not isinstance(kid, str) or not kid:
            raise InvalidToken(Reason.UNKNOWN_KEY, "no kid")
        try:
            key = self.jwks.match_kid(self.jwks.get_signing_keys(), kid)
        except (PyJWKClientError, PyJWKSetError, PyJWKError) as exc:
            raise KeysUnavailable(f"the JWKS at {self.jwks.uri} could not be read: {exc}") from None
        if key is not None:
            return key
        try:  # an unknown kid refetches the set (a rotated key), at most once per cool-down
            return self.jwks.get_signing_key(kid)
        except PyJWKClientConnectionError as exc:
            raise KeysUnavailable(f"the JWKS at {self.jwks.uri} could not be read: {exc}") from None
        except (PyJWKClientError, PyJWKSetError, PyJWKError):
            raise InvalidToken(Reason.UNKNOWN_KEY) from None


def issue_dev_token(customer_id: str, home: Path, ttl_s: float = 3600) -> IssuedToken:
    """A development token signed with ``home``'s key, for the audience and issuer the environment
    names (``MANGAASSIST_CUSTOMER_TOKEN_*``): what a chatbot with that state home accepts. Refused
    when ``MANGAASSIST_CUSTOMER_JWKS_URL`` is set (such a chatbot accepts no development token)."""
    settings = IdentitySettings.from_env(home)
    if settings.jwks_url is not None:
        raise ConfigError(
            "MANGAASSIST_CUSTOMER_JWKS_URL is set: a chatbot verifying tokens from that JWKS refuses "
            "development tokens; get a token from the identity provider instead"
        )
    assert settings.key_path is not None
    key = load_or_create_key(settings.key_path)
    return issue_token(customer_id, key, ttl_s, audience=settings.audience, issuer=settings.issuer)
