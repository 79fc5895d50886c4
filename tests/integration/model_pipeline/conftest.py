"""CD-03 on a real local platform: a control plane with the ``intent-model`` service, a real MLflow
registry under the state directory, tiny models trained with the hashing embedder, live traffic.

``models`` (once per module) trains three versions into a template state directory: ``1`` on 70% of
the training set (made champion), ``2`` on all of it (a better model), ``3`` on shuffled labels (a
model that learnt nothing). ``model_plane`` copies that registry into a fresh state directory, starts
the platform and deploys revision ``r1`` serving the champion's package at 100%, as a live model
endpoint would. ``model_users`` is the users (the demo's ``ModelUsers``): conversations asking the
model's router, each answer recorded (status, the revision and model version that served it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.intent_training import TrainingConfig, train_candidate
from mangaassist.delivery.engine import Executor, StateStore, load_policy
from mangaassist.delivery.engine.model import RunRecord, StepRecord
from mangaassist.delivery.model_promotion import promote
from mangaassist.delivery.pipelines import model as cd03
from mangaassist.delivery.pipelines import registry as pipelines
from mangaassist.demo.model import ModelUsers
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import Revision
from mangaassist.platform.embeddings import HashingEmbedder
from mangaassist.platform.local.client import LocalCompute, start_control_plane, stop_control_plane
from mangaassist.platform.local.model_registry_mlflow import MlflowModelRegistry
from mangaassist.platform.settings import PlatformSettings, load_settings
from tests.integration.model.conftest import HASHING_GATE

ROOT = Path(__file__).parents[3]
APP = "mangaassist.chatbot.model_server:create_app"
MODEL_DEPLOY = {
    "steps": "50,100",
    "min_requests": 30,
    "judge_min_requests": 10,
    "max_step_s": 40,
    "on_inconclusive": "rollback",
    "drain_idle_s": 0.5,
    "drain_max_s": 10,
}
MODEL_SHADOW = {"shadow_min_requests": 60, "shadow_max_s": 40, "shadow_p99_budget_ms": 1000}


@dataclass(frozen=True)
class Models:
    home: Path
    config: Path
    """The model config (``ml/intent.yaml`` with limits that suit the hashing embedder)."""
    champion: str
    good: str
    shuffled: str


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """Three trained versions in a registry, made once; every platform copies the registry."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    directory = tmp_path_factory.mktemp("models")
    base = TrainingConfig.load(ROOT / "ml" / "intent.yaml", ROOT)
    raw = {
        "model": "intent",
        "data": {"train": str(base.train_path), "eval": str(base.eval_path)},
        "gate": HASHING_GATE,
    }
    config_path = directory / "intent.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = TrainingConfig.load(config_path, ROOT)
    home = directory / "home"
    registry = MlflowModelRegistry.from_home(home)
    embedder, catalog = HashingEmbedder(), Catalog.load(ROOT / "data" / "catalog.jsonl")
    versions = {}
    for name, variant in (
        ("champion", config.with_overrides(train_fraction=0.7)),
        ("good", config),
        ("shuffled", config.with_overrides(shuffle_labels=True)),
    ):
        versions[name] = train_candidate(
            variant, registry, embedder, catalog, actor="ci", reason=name
        ).version
    promote(registry, "intent", versions["champion"].version, actor="ci", reason="first champion")
    return Models(
        home,
        config_path,
        versions["champion"].version,
        versions["good"].version,
        versions["shuffled"].version,
    )


def write_config(directory: Path, environment: str, deploy: dict[str, Any] | None = None) -> Path:
    def table(name: str, values: dict[str, Any]) -> str:
        rows = [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
        return f"[environments.{environment}.{name}]\n" + "\n".join(rows) + "\n"

    path = directory / "mangaassist.toml"
    path.write_text(
        f"[environments.{environment}]\nprovider = 'local'\nhome = 'home'\ncontrol_port = 0\n"
        f"[environments.{environment}.services.intent-model]\n"
        f"app = '{APP}'\nrouter_port = 0\nready_timeout_s = 60\nshadow_timeout_s = 1\n"
        f"[environments.{environment}.services.intent-model.env]\n"
        f"MANGAASSIST_EMBEDDER = 'hashing'\nMANGAASSIST_ROOT = '{ROOT}'\nMANGAASSIST_FAULT = ''\n"
        + table("model_deploy", deploy or MODEL_DEPLOY)
        + table("model_shadow", MODEL_SHADOW)
    )
    return path


@dataclass
class ModelPlane:
    environment: str
    directory: Path
    config: Path
    settings: PlatformSettings
    compute: LocalCompute
    store: StateStore
    models: Models
    env: dict[str, str]

    @property
    def registry(self) -> MlflowModelRegistry:
        return MlflowModelRegistry.from_home(self.settings.home)

    def champion(self) -> str | None:
        found = self.registry.alias("intent", "champion")
        return found.version if found else None

    def live(self) -> dict[str, float]:
        return {k: v for k, v in self.compute.status(cd03.SERVICE).weights.items() if v > 0}

    def health(self) -> dict[str, str]:
        return {r.name: r.health.value for r in self.compute.status(cd03.SERVICE).revisions}

    def served(self, revision: str) -> tuple[int, int]:
        """(requests, pinned requests) the router sent to ``revision``."""
        c = self.compute.stats(cd03.SERVICE)["revisions"].get(revision, {})
        return int(c.get("requests", 0)), int(c.get("pinned", 0))

    def deploy(
        self, overrides: dict[str, str] | None = None, **params: Any
    ) -> tuple[RunRecord, dict[str, StepRecord]]:
        params = {"environment": self.environment, "model_config": str(self.models.config), **params}
        pipeline = pipelines.build(cd03.NAME, params)
        executor = Executor(self.store, poll_seconds=0.2, lease_seconds=10)
        policy = load_policy(None).for_run(self.environment, cd03.NAME)
        run = executor.start(
            pipeline,
            environment=self.environment,
            target=cd03.NAME,
            requester="tester",
            policy=policy,
            overrides=overrides or {},
        )
        final = executor.drive(run.id, pipeline)
        with self.store.transaction() as conn:
            steps = {s.name: s for s in self.store.steps(conn, run.id)}
        return final, steps


@pytest.fixture(scope="module")
def model_plane(
    models: Models, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ModelPlane]:
    environment = getattr(request.module, "ENVIRONMENT", "dev")
    directory = tmp_path_factory.mktemp(f"model-plane-{environment}")
    home = directory / "home"
    shutil.copytree(models.home, home)
    config = write_config(directory, environment, getattr(request.module, "MODEL_DEPLOY", None))
    for name in ("src", "data", "knowledge", "ml", "config"):  # the checkout, as the platform's root
        (directory / name).symlink_to(ROOT / name)
    saved = {
        k: os.environ.get(k) for k in ("MANGAASSIST_PLATFORM_CONFIG", "MANGAASSIST_HOME", "MANGAASSIST_ROOT")
    }
    os.environ.update(
        {
            "MANGAASSIST_PLATFORM_CONFIG": str(config),
            "MANGAASSIST_HOME": str(home),
            "MANGAASSIST_ROOT": str(ROOT),
        }
    )
    os.environ.pop("MANGAASSIST_STATE_URL", None)
    settings = load_settings(environment, config)
    start_control_plane(settings, config, wait_s=30, extra_env={"MANGAASSIST_HOME": str(home)})
    compute = LocalCompute(settings.run_dir)
    try:
        registry = MlflowModelRegistry.from_home(home)
        package = registry.download("intent", models.champion, home / "models" / "packages")
        artifact = pack_source(ROOT / "src", home / "artifacts")
        status = compute.deploy(
            cd03.SERVICE, Revision("r1", artifact, APP, {cd03.PACKAGE_ENV: str(package)}, 1), timeout_s=60
        )
        assert status.health.value == "healthy", status.reason
        compute.set_weights(cd03.SERVICE, {"r1": 100})
        env = {
            **os.environ,
            "MANGAASSIST_POLL_SECONDS": "0.2",
            "MANGAASSIST_STATE_URL": "",
            "HF_HUB_OFFLINE": "1",
        }
        yield ModelPlane(environment, directory, config, settings, compute, StateStore(), models, env)
    finally:
        compute.close()
        report = stop_control_plane(settings)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        assert report.left == [], f"processes left: {report.left}"


def model_users(url: str) -> ModelUsers:
    """Users of the model endpoint at ``url``: 60 intent requests a second, five per conversation,
    each answer recorded as (status, revision, model version) (the demo's ``ModelUsers``)."""
    return ModelUsers(url, rps=60.0)
