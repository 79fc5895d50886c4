"""``ConfigStore``: versioned config profiles and the rollout of a new version (CD-06).

A profile (``runtime``, ``prompts``, ``guardrails``, ``flags``) has immutable versions named by
their content digest (``core.configspec.version_of``). Its ``Rollout`` says what workers serve:
the ``stable`` version, and while a deploy is in progress a ``candidate`` served to the sessions
whose bucket (``core.flags.config_bucket``) is below ``percentage * 100``. Promoting makes the
candidate stable; aborting sets the percentage to 0 and drops the candidate. Every change is kept
in the profile's history with who and when.

Workers report per-version outcomes (``Observations``) so the config pipeline can judge sessions on
the new version against sessions on the old one.

Providers: ``platform/local/config_server.py`` (an HTTP server on loopback, SQLite, ETags, long
polling) and ``platform/aws/config_appconfig.py`` (AWS AppConfig).
Callers: the config pipeline and CLI (writes), the chatbot's ``config_client`` (reads).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mangaassist.core.errors import MangaAssistError


class ConfigStoreError(MangaAssistError):
    """The store refused a change or cannot be reached."""


@dataclass(frozen=True)
class ConfigVersion:
    profile: str
    version: str
    content: Any
    created_at: str
    author: str
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rollout:
    profile: str
    stable: str | None
    """What every session gets unless it is in the candidate's buckets."""
    candidate: str | None
    """The version being rolled out, or None."""
    percentage: float
    """0..100: the share of session buckets on the candidate."""
    revision: int = 0
    """Increases with every change; the ETag derives from it."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Observations:
    """What the workers served on one version: counts and latencies (ms)."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    guardrails: int = 0
    feedback: int = 0
    thumbs_down: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, other: Observations) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.fallbacks += other.fallbacks
        self.guardrails += other.guardrails
        self.feedback += other.feedback
        self.thumbs_down += other.thumbs_down
        self.latencies_ms.extend(other.latencies_ms)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Observations:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


class ConfigStore(Protocol):
    def create_version(self, profile: str, content: Any, *, author: str, message: str = "") -> ConfigVersion:
        """Store ``content`` as a version (idempotent: the same content is the same version)."""
        ...

    def version(self, profile: str, version: str) -> ConfigVersion: ...

    def versions(self, profile: str) -> list[ConfigVersion]:
        """Oldest first."""
        ...

    def rollout(self, profile: str) -> Rollout: ...

    def set_rollout(
        self, profile: str, *, candidate: str | None, percentage: float, actor: str, reason: str = ""
    ) -> Rollout:
        """Serve ``candidate`` to ``percentage`` of the session buckets (0 with None aborts)."""
        ...

    def promote(self, profile: str, version: str, *, actor: str, reason: str = "") -> Rollout:
        """Make ``version`` the stable one for every session (also how a rollback is done)."""
        ...

    def history(self, profile: str) -> list[dict[str, Any]]:
        """Every change: ``at``, ``actor``, ``action``, ``version``, ``percentage``, ``reason``."""
        ...

    def observations(self, profile: str) -> dict[str, Observations]:
        """Per version, everything the workers reported since the store started."""
        ...
