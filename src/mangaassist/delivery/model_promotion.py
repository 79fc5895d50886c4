"""Promotion and rollback of a registered model: the alias moves of CD-03.

``promote`` points ``champion`` at a version and ``previous`` at the champion it replaces (the
first model ever becomes champion directly); ``rollback`` points ``champion`` back at
``previous`` and removes ``previous``, so a second rollback in a row is refused instead of
re-promoting the version just rolled back. Each move goes through ``ModelRegistry.set_alias``,
which records who, when and why. Callers: ``mangaassist model promote|rollback`` and the model
pipeline (which gates first with ``delivery.model_gate``).

Order matters if the process dies half-way: ``previous`` moves before ``champion``, so the worst
interrupted state is "``previous`` already equals the champion", from which promoting again is
correct and nothing serves a version that was not meant to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.model_registry import ModelRegistry


@dataclass(frozen=True)
class AliasChange:
    """What a promotion or rollback did: the champion before and after, and ``previous`` after."""

    name: str
    champion_before: str | None
    champion: str
    previous: str | None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def promote(registry: ModelRegistry, name: str, version: str, *, actor: str, reason: str = "") -> AliasChange:
    """``champion`` <- ``version``, ``previous`` <- the old champion."""
    target = registry.get(name, version)  # NotFoundError for an unknown version
    champion = registry.alias(name, "champion")
    if champion is not None and champion.version == target.version:
        raise ConfigError(f"model {name}: version {target.version} is already the champion")
    why = reason or f"promote version {target.version}"
    if champion is not None:
        registry.set_alias(name, "previous", champion.version, actor=actor, reason=why)
    registry.set_alias(name, "champion", target.version, actor=actor, reason=why)
    return AliasChange(
        name=name,
        champion_before=champion.version if champion else None,
        champion=target.version,
        previous=champion.version if champion else None,
    )


def rollback(registry: ModelRegistry, name: str, *, actor: str, reason: str = "") -> AliasChange:
    """``champion`` <- ``previous``; ``previous`` is removed."""
    previous = registry.alias(name, "previous")
    if previous is None:
        raise NotFoundError(
            f"model {name}: no 'previous' version to roll back to (nothing was promoted over another "
            "version, or the last rollback already used it)"
        )
    champion = registry.alias(name, "champion")
    why = reason or f"roll back to version {previous.version}"
    registry.set_alias(name, "champion", previous.version, actor=actor, reason=why)
    registry.delete_alias(name, "previous", actor=actor, reason=why)
    return AliasChange(
        name=name,
        champion_before=champion.version if champion else None,
        champion=previous.version,
        previous=None,
    )
