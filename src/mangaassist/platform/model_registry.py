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

``TrackingRegistry`` is the training side on top (``chatbot.intent_training``): a tracked run per
training, what the run logs (the model, reports, config files, tags) and registration of the
trained package from that run. Implemented by the MLflow provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
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


class TrackingRegistry(ModelRegistry, Protocol):
    """A ``ModelRegistry`` that also tracks the runs that train its versions.

    One training is one run: open it with ``run``, log what the training produced with the
    ``log_*`` methods and ``set_tags``, and register the package with ``register(...,
    run_id=...)`` inside the block, so the version and the run are one record. Implementations keep
    the tracking store to themselves (no process-wide state such as an environment variable), so
    registries of different stores can be used side by side.
    """

    @property
    def tracking_uri(self) -> str:
        """Where the runs and versions are kept (for people: ``model list``, ``model train --json``)."""
        ...

    def run(self, name: str, run_name: str | None = None) -> AbstractContextManager[str]:
        """A new run for model ``name`` (``run_name`` for people); the context yields the run id.
        The run ends when the block does: finished, or failed if the block raises."""
        ...

    def log_model(
        self,
        run_id: str,
        model: Any,
        *,
        signature: Any,
        pip_requirements: Sequence[str],
        artifact_path: str = "classifier",
    ) -> None:
        """The fitted ``model`` in the provider's loadable model format, with its input/output
        ``signature`` (the provider's; MLflow: ``mlflow.models.infer_signature``) and exactly
        ``pip_requirements`` to load it, as the run's artifact directory ``artifact_path``."""
        ...

    def log_dict(self, run_id: str, data: Mapping[str, Any], path: str) -> None:
        """``data`` serialised (JSON; YAML for ``.yaml``) as the run's artifact file ``path``."""
        ...

    def log_artifact(self, run_id: str, local_path: Path | str, artifact_path: str | None = None) -> None:
        """A local file (or directory) into the run's artifacts, under ``artifact_path`` (default:
        the top level), keeping its name."""
        ...

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set tags on the run (existing keys are overwritten)."""
        ...

    def register(
        self,
        name: str,
        package: Path,
        *,
        metrics: dict[str, float],
        params: dict[str, str],
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> ModelVersion:
        """Store ``package`` as the next version of ``name``, with the metrics and params logged to
        run ``run_id`` (or to a new run of its own when None) and the version linked to it;
        ``tags`` go on the version."""
        ...
