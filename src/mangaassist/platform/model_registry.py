"""``ModelRegistry``: versions of a model and the aliases that say which one serves (CD-03).

A *model* (``intent``) has numbered *versions*, each a model package (a directory, see
``chatbot.intent.save_package``) with the metrics and parameters it was registered with. Aliases
name the versions that matter:

* ``candidate``: the version being evaluated and deployed,
* ``champion``: the version users are served,
* ``previous``: the champion before the last promotion (what a rollback returns to).

Promotion moves ``champion`` to the candidate and ``previous`` to the old champion; rollback moves
``champion`` back to ``previous``. Every alias move is recorded with who, when and why.

Providers: ``platform/local/model_registry_mlflow.py`` (MLflow's model registry on a SQLite
backend under ``MANGAASSIST_HOME``, or a tracking server when ``MLFLOW_TRACKING_URI`` is set) and
``platform/aws/model_registry_sagemaker.py`` (SageMaker Model Registry: model package groups and
approval status).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

ALIASES = ("candidate", "champion", "previous")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    """The registry's id of this version (MLflow: "1", "2", ...)."""
    source: str
    """Where the package is stored (a URI the provider understands)."""
    created_at: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelRegistry(Protocol):
    def register(
        self,
        name: str,
        package: Path,
        *,
        metrics: dict[str, float],
        params: dict[str, str],
        tags: dict[str, str] | None = None,
    ) -> ModelVersion:
        """Store ``package`` as the next version of ``name``."""
        ...

    def get(self, name: str, version: str) -> ModelVersion:
        """One version (``NotFoundError`` if absent)."""
        ...

    def versions(self, name: str) -> list[ModelVersion]:
        """Oldest first."""
        ...

    def alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` points at, or None."""
        ...

    def set_alias(self, name: str, alias: str, version: str, *, actor: str, reason: str = "") -> None: ...

    def delete_alias(self, name: str, alias: str, *, actor: str, reason: str = "") -> None: ...

    def download(self, name: str, version: str, dest: Path) -> Path:
        """The version's package as a local directory under ``dest`` (returned)."""
        ...

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every alias move: ``at``, ``actor``, ``alias``, ``version``, ``previous``, ``reason``."""
        ...
