"""``MlflowModelRegistry``: the ``ModelRegistry`` on MLflow's tracking server and model registry.

Where it keeps things: ``MLFLOW_TRACKING_URI`` when set (a tracking server shared by a team),
otherwise SQLite at ``HOME/mlflow/mlflow.db`` with artifacts under ``HOME/mlflow/artifacts/<model>``
(``from_home``). The registered model's name is the model's name (``intent``); each version's
source is the ``package/`` directory (``chatbot.intent.save_package``) in the artifacts of the
MLflow run that registered it, and its metrics and parameters are that run's. Aliases are MLflow
aliases (``set_registered_model_alias``).

Alias history: MLflow keeps no history of alias moves, so every move is also written as a tag on
the registered model, ``mangaassist.alias_move.NNNNNN`` = JSON ``{at, actor, alias, version,
previous, reason}``, numbered in order. Tags live in the same store as the aliases (SQLite or the
tracking server), so the history travels with the registry; a side table would not exist on a
shared server. Two processes moving aliases of the same model at the same instant could pick the
same number (the later write wins); the delivery engine's lock per target prevents that.

Training runs (``run``, ``log_model``, ``log_dict``, ``log_artifact``, ``set_tags``) go through
the registry's own ``MlflowClient`` only, never MLflow's fluent API: ``mlflow.set_tracking_uri``
and ``mlflow.start_run`` change process-wide state (``MLFLOW_TRACKING_URI`` in ``os.environ``, the
active run), which every other registry, test or thread in the process would see.

MLflow is made quiet and offline before it is imported: no usage telemetry
(``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``), no progress bars, its INFO logs (database
migrations) hidden.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.model_registry import ALIASES, ModelVersion

if TYPE_CHECKING:
    from mlflow import MlflowClient

HISTORY_TAG = "mangaassist.alias_move."
_QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


def quiet_mlflow() -> None:
    """Telemetry off, progress bars off, INFO logs off. Call before ``import mlflow`` (MLflow sets
    its loggers' level from ``MLFLOW_LOGGING_LEVEL`` when it is imported)."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for logger in ("mlflow", "alembic"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    # the sklearn flavour warns on every save that pickles can run code; ours are our own files
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)


def tracking_uri_for(home: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite store under ``home``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(home / 'mlflow' / 'mlflow.db').resolve()}"


class MlflowModelRegistry:
    """Versions, aliases and alias history of models in one MLflow tracking store."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        quiet_mlflow()
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def from_home(cls, home: Path) -> MlflowModelRegistry:
        """The registry of a state directory (``MANGAASSIST_HOME``), or the tracking server if
        ``MLFLOW_TRACKING_URI`` is set (the server then decides where artifacts go; for a
        ``sqlite:///`` URI they go to ``artifacts/`` next to the database, not the working directory)."""
        uri = tracking_uri_for(home)
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return cls.at(uri)
        return cls(uri, (home / "mlflow" / "artifacts").resolve())

    @classmethod
    def at(cls, uri: str) -> MlflowModelRegistry:
        """The registry of a tracking URI: a server decides where artifacts go; a ``sqlite:///``
        store keeps them in ``artifacts/`` next to its database (not the working directory)."""
        if uri.startswith("sqlite:///"):
            return cls(uri, Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts")
        return cls(uri)

    # -- tracking ----------------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        """The experiment that holds the runs of model ``name`` (created on first use)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = (self.artifact_root / name).as_uri() if self.artifact_root else None
        return str(self.client.create_experiment(name, artifact_location=location))

    @contextlib.contextmanager
    def run(self, name: str, run_name: str | None = None) -> Iterator[str]:
        """A new run in model ``name``'s experiment, created and ended through this registry's
        client; yields its id. Ended ``FINISHED``, or ``FAILED`` when the block raises.

        Log to it with ``log_model``, ``log_dict``, ``log_artifact`` and ``set_tags``, and register
        the trained package with ``register(..., run_id=...)`` so the version and the run are one
        record. Nothing here touches MLflow's process-wide state (the fluent API's active run and
        tracking URI, ``MLFLOW_TRACKING_URI``): registries of different stores can run side by side.
        """
        from mlflow.tracking.context.registry import resolve_tags

        experiment = self.experiment_id(name)
        # resolve_tags: the user, source and git commit tags a fluent start_run would have added
        created = self.client.create_run(experiment, tags=resolve_tags(), run_name=run_name)
        run_id = str(created.info.run_id)
        status = "FAILED"
        try:
            yield run_id
            status = "FINISHED"
        finally:
            self.client.set_terminated(run_id, status)

    def log_model(
        self,
        run_id: str,
        model: Any,
        *,
        signature: Any,
        pip_requirements: Sequence[str],
        artifact_path: str = "classifier",
    ) -> None:
        """The scikit-learn ``model`` as an MLflow model (``mlflow.sklearn`` flavour, skops
        serialisation) with its ``signature`` (``mlflow.models.infer_signature``) and exactly
        ``pip_requirements``, in the run's artifacts under ``artifact_path``
        (``runs:/<run_id>/<artifact_path>``).

        Saved locally with ``mlflow.sklearn.save_model`` (which needs no active run) and uploaded
        with this registry's client; the serialisation format is given, since MLflow's default
        would look at the process-wide tracking URI.
        """
        import mlflow.sklearn

        with tempfile.TemporaryDirectory(prefix="mangaassist-mlflow-model-") as scratch:
            local = Path(scratch) / "model"
            mlflow.sklearn.save_model(
                model,
                str(local),
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                signature=signature,
                pip_requirements=list(pip_requirements),
            )
            self.client.log_artifacts(run_id, str(local), artifact_path)

    def log_dict(self, run_id: str, data: Mapping[str, Any], path: str) -> None:
        """``data`` as the run's artifact ``path`` (JSON, or YAML for ``.yaml``/``.yml``)."""
        self.client.log_dict(run_id, dict(data), path)

    def log_artifact(self, run_id: str, local_path: Path | str, artifact_path: str | None = None) -> None:
        """The file (or directory) ``local_path`` into the run's artifacts, under ``artifact_path``."""
        self.client.log_artifact(run_id, str(local_path), artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tags on the run (values as strings), in one call."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())])

    # -- the ModelRegistry protocol ------------------------------------------------------------

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
        """Log the package, metrics and params to a run (``run_id``, or a new one) and register
        the run's ``package/`` as the next version of ``name``."""
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        if not package.is_dir():
            raise ConfigError(f"{package}: not a model package directory")
        owns_run = run_id is None
        if run_id is None:
            run_id = str(
                self.client.create_run(self.experiment_id(name), run_name=f"register {name}").info.run_id
            )
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())],
            params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
        )
        self.client.log_artifacts(run_id, str(package), "package")
        if owns_run:
            self.client.set_terminated(run_id)
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description=f"MangaAssist model {name}")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/package"
        created = self.client.create_model_version(name, source=source, run_id=run_id, tags=tags or {})
        return self.get(name, str(created.version))

    def get(self, name: str, version: str) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version(name, str(version))
        except MlflowException:
            raise NotFoundError(f"model {name} has no version {version}") from None
        return self._to_version(found)

    def versions(self, name: str) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name = '{_quoted(name)}'")
        # search results carry no aliases: take them from the registered model
        aliases = self._aliases(name)
        versions = [self._to_version(v, aliases) for v in found]
        return sorted(versions, key=lambda v: int(v.version))

    def alias(self, name: str, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        _check_alias(alias)
        try:
            found = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None
        return self._to_version(found)

    def set_alias(self, name: str, alias: str, version: str, *, actor: str, reason: str = "") -> None:
        _check_alias(alias)
        self.get(name, version)  # NotFoundError before anything moves
        current = self.alias(name, alias)
        self.client.set_registered_model_alias(name, alias, str(version))
        self._record(name, alias, str(version), current.version if current else None, actor, reason)

    def delete_alias(self, name: str, alias: str, *, actor: str, reason: str = "") -> None:
        _check_alias(alias)
        current = self.alias(name, alias)
        if current is None:
            return
        self.client.delete_registered_model_alias(name, alias)
        self._record(name, alias, None, current.version, actor, reason)

    def download(self, name: str, version: str, dest: Path) -> Path:
        """The package of ``version`` at ``dest/<name>-v<version>``; versions never change, so an
        existing download is reused. Written to a temporary directory and renamed."""
        import mlflow.artifacts

        found = self.get(name, version)
        target = dest / f"{name}-v{found.version}"
        if target.is_dir():
            return target
        dest.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=dest))
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=found.source, dst_path=str(scratch), tracking_uri=self.tracking_uri
                )
            )
            try:
                local.replace(target)
            except OSError:
                if not target.is_dir():  # not a concurrent download of the same version
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    def history(self, name: str) -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(name).tags
        except MlflowException:
            return []
        return [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(HISTORY_TAG))]

    # -- helpers -------------------------------------------------------------------------------

    def _aliases(self, name: str) -> dict[str, list[str]]:
        from mlflow.exceptions import MlflowException

        try:
            aliases = self.client.get_registered_model(name).aliases
        except MlflowException:
            return {}
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        return by_version

    def _to_version(self, found: Any, aliases: dict[str, list[str]] | None = None) -> ModelVersion:
        metrics: dict[str, float] = {}
        params: dict[str, str] = {}
        if found.run_id:
            data = self.client.get_run(found.run_id).data
            metrics = {k: float(v) for k, v in data.metrics.items()}
            params = {k: str(v) for k, v in data.params.items()}
        version = str(found.version)
        names = aliases.get(version, []) if aliases is not None else list(found.aliases or [])
        return ModelVersion(
            name=str(found.name),
            version=version,
            source=str(found.source),
            created_at=_iso(int(found.creation_timestamp)),
            metrics=metrics,
            params=params,
            tags={str(k): str(v) for k, v in (found.tags or {}).items()},
            aliases=tuple(sorted(names, key=_alias_order)),
        )

    def _record(
        self, name: str, alias: str, version: str | None, previous: str | None, actor: str, reason: str
    ) -> None:
        number = len(self.history(name)) + 1
        move = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "actor": actor,
            "alias": alias,
            "version": version,
            "previous": previous,
            "reason": reason[:1000],
        }
        self.client.set_registered_model_tag(name, f"{HISTORY_TAG}{number:06d}", json.dumps(move))


def _check_alias(alias: str) -> None:
    if alias not in ALIASES:
        raise ConfigError(f"alias {alias!r}: expected one of {', '.join(ALIASES)}")


def _alias_order(alias: str) -> int:
    return ALIASES.index(alias) if alias in ALIASES else len(ALIASES)


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")
