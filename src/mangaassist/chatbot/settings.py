"""Settings of one chatbot process, read from the environment once at start-up.

Every variable is optional; defaults suit ``mangaassist serve`` from a checkout.

==========================  ===================================================================
``MANGAASSIST_ROOT``        repository root holding ``data/``, ``knowledge/``, ``ml/``, ``config/``
``MANGAASSIST_DATA_DIR``    the catalog and seed orders; default ``ROOT/data`` (a local revision
                            reads the ``data/`` it was built with: ``platform.artifacts``)
``MANGAASSIST_HOME``        state directory (tables, caches, models); default ``ROOT/.mangaassist``
``MANGAASSIST_REVISION``    the revision name this process reports; default ``dev``
``MANGAASSIST_CONFIG``      chatbot config file; default ``ROOT/config/chatbot.yaml``
``MANGAASSIST_EMBEDDER``    ``minilm`` (default) or ``hashing`` (fast, for unit tests only)
``MANGAASSIST_FAULT``       fault injection for drills, e.g. ``error_rate=0.3,latency_ms=400``
``MANGAASSIST_TABLES``      SQLite file of the tables; default ``HOME/tables.sqlite3``
``MANGAASSIST_EMF``         ``1``: write CloudWatch embedded-metric-format lines to standard
                            output (``chatbot.emf``; set on AWS); ``MANGAASSIST_SERVICE`` and
                            ``MANGAASSIST_METRICS_NAMESPACE`` name the service and namespace
``MANGAASSIST_INTENT_URL``  the intent model endpoint (``chatbot.model_server``, usually its
                            router); unset or empty: the model runs in process
==========================  ===================================================================

Customer identity (``chatbot/identity.py``; docs/chatbot.md, "Customer identity"): the customer is
the ``sub`` of a signed token in ``Authorization: Bearer``, never a field of the request body.

========================================  ==========================================================
``MANGAASSIST_CUSTOMER_JWKS_URL``         verify RS256/ES256 tokens with the keys of this JWKS
                                          (https; http only to loopback), e.g. Amazon Cognito's
                                          ``https://cognito-idp.REGION.amazonaws.com/POOL/.well-known/jwks.json``;
                                          unset: HS256 with the local development key
                                          ``HOME/secrets/customer-token.key`` (made 0600 on first use)
``MANGAASSIST_CUSTOMER_TOKEN_AUDIENCE``   the ``aud`` a token must carry; default ``mangaassist-chat``
                                          (with Cognito: the app client id; send the ID token)
``MANGAASSIST_CUSTOMER_TOKEN_ISSUER``     the ``iss`` a token must carry; default ``mangaassist-dev``
                                          with the local key; required with a JWKS
``MANGAASSIST_DEV_SIGNIN``                ``1``: ``POST /v1/signin`` issues tokens signed with the
                                          local key (development only; refused with a JWKS)
``MANGAASSIST_SIGNIN_URL``                where the "please sign in" answer sends a customer
========================================  ==========================================================

``MANGAASSIST_INTENT_TIMEOUT_MS`` is the deadline of one call to that endpoint (default 300), after
which the chatbot answers with its in-process model. ``MANGAASSIST_MODEL_PACKAGE`` names the model
package (``intent.save_package``) to load as that in-process model (default: the model trained from
``ml/intents`` and cached under ``HOME/models``); the model endpoint reads the same settings and serves
that package.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mangaassist.core.errors import ConfigError
from mangaassist.platform.settings import find_root, state_home

__all__ = ["IdentitySettings", "Settings", "find_root"]

DEFAULT_AUDIENCE = "mangaassist-chat"
DEV_ISSUER = "mangaassist-dev"
DEV_KEY_FILE = Path("secrets") / "customer-token.key"
"""The local development key, relative to the state home."""


@dataclass(frozen=True)
class IdentitySettings:
    """How the chatbot tells who the customer is (``chatbot.identity``)."""

    key_path: Path | None = None
    """The local development HMAC key (HS256); used when ``jwks_url`` is None."""
    jwks_url: str | None = None
    """Verify RS256/ES256 tokens with this JWKS's keys instead (Cognito in AWS)."""
    audience: str = DEFAULT_AUDIENCE
    issuer: str = DEV_ISSUER
    dev_signin: bool = False
    """``POST /v1/signin`` issues development tokens (``MANGAASSIST_DEV_SIGNIN=1``)."""
    signin_url: str | None = None
    """Where the "please sign in" answer sends a customer (``MANGAASSIST_SIGNIN_URL``)."""

    @classmethod
    def from_env(cls, home: Path) -> IdentitySettings:
        """Read the ``MANGAASSIST_CUSTOMER_*`` variables, ``MANGAASSIST_DEV_SIGNIN`` and
        ``MANGAASSIST_SIGNIN_URL``; the development key lives under ``home``."""
        jwks_url = os.environ.get("MANGAASSIST_CUSTOMER_JWKS_URL") or None
        if jwks_url is not None:
            _check_jwks_url(jwks_url)
        issuer = os.environ.get("MANGAASSIST_CUSTOMER_TOKEN_ISSUER") or None
        if jwks_url is not None and issuer is None:
            raise ConfigError(
                "MANGAASSIST_CUSTOMER_JWKS_URL is set but MANGAASSIST_CUSTOMER_TOKEN_ISSUER is not: "
                "name the issuer its tokens carry (Cognito: https://cognito-idp.REGION.amazonaws.com/POOL)"
            )
        raw_signin = os.environ.get("MANGAASSIST_DEV_SIGNIN", "")
        if raw_signin not in ("", "0", "1"):
            raise ConfigError(f"MANGAASSIST_DEV_SIGNIN={raw_signin!r}: expected 1 (on) or 0 (off)")
        dev_signin = raw_signin == "1"
        if dev_signin and jwks_url is not None:
            raise ConfigError(
                "MANGAASSIST_DEV_SIGNIN=1 signs tokens with the local development key, which a chatbot "
                "verifying tokens from MANGAASSIST_CUSTOMER_JWKS_URL does not accept: unset one of them"
            )
        return cls(
            key_path=home / DEV_KEY_FILE,
            jwks_url=jwks_url,
            audience=os.environ.get("MANGAASSIST_CUSTOMER_TOKEN_AUDIENCE") or DEFAULT_AUDIENCE,
            issuer=issuer or DEV_ISSUER,
            dev_signin=dev_signin,
            signin_url=os.environ.get("MANGAASSIST_SIGNIN_URL") or None,
        )


def _check_jwks_url(url: str) -> None:
    """https, or http to this machine only (a test's or a local identity provider's JWKS)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
    raise ConfigError(
        f"MANGAASSIST_CUSTOMER_JWKS_URL={url!r}: expected an https URL (plain http only to 127.0.0.1, ::1 "
        "or localhost)"
    )


@dataclass(frozen=True)
class Settings:
    root: Path
    home: Path
    revision: str
    config_path: Path
    embedder: str
    fault: str
    tables_path: Path
    intent_url: str | None = None
    """The model endpoint to ask (``MANGAASSIST_INTENT_URL``); None: classify in process."""
    intent_timeout_s: float = 0.3
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    """Who the customer is: the token settings (``chatbot.identity``)."""
    data_dir: Path | None = None
    """Where the catalog and seed orders are (``MANGAASSIST_DATA_DIR``); None: ``root/data``."""

    @property
    def catalog_path(self) -> Path:
        return (self.data_dir or self.root / "data") / "catalog.jsonl"

    @property
    def orders_path(self) -> Path:
        return (self.data_dir or self.root / "data") / "orders.jsonl"

    @property
    def knowledge_dir(self) -> Path:
        return self.root / "knowledge"

    @property
    def intents_dir(self) -> Path:
        return self.root / "ml" / "intents"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @classmethod
    def from_env(cls, root: Path | None = None) -> Settings:
        root = root or find_root()
        home = state_home(root)
        embedder = os.environ.get("MANGAASSIST_EMBEDDER", "minilm")
        if embedder not in ("minilm", "hashing"):
            raise ConfigError(f"MANGAASSIST_EMBEDDER={embedder!r}: expected 'minilm' or 'hashing'")
        return cls(
            root=root,
            home=home,
            revision=os.environ.get("MANGAASSIST_REVISION", "dev"),
            config_path=Path(os.environ.get("MANGAASSIST_CONFIG") or root / "config" / "chatbot.yaml"),
            embedder=embedder,
            fault=os.environ.get("MANGAASSIST_FAULT", ""),
            tables_path=Path(os.environ.get("MANGAASSIST_TABLES") or home / "tables.sqlite3"),
            intent_url=os.environ.get("MANGAASSIST_INTENT_URL") or None,
            intent_timeout_s=_intent_timeout(os.environ.get("MANGAASSIST_INTENT_TIMEOUT_MS")),
            identity=IdentitySettings.from_env(home),
            data_dir=Path(os.environ["MANGAASSIST_DATA_DIR"])
            if os.environ.get("MANGAASSIST_DATA_DIR")
            else None,
        )


def _intent_timeout(raw: str | None) -> float:
    """``MANGAASSIST_INTENT_TIMEOUT_MS`` in seconds (default 300 ms); a clear error when malformed."""
    if not raw:
        return 0.3
    try:
        ms = float(raw)
    except ValueError:
        raise ConfigError(f"MANGAASSIST_INTENT_TIMEOUT_MS={raw!r}: expected milliseconds, e.g. 300") from None
    if not 1 <= ms <= 60_000:
        raise ConfigError(f"MANGAASSIST_INTENT_TIMEOUT_MS={raw!r}: expected 1..60000 milliseconds")
    return ms / 1000
