"""Training, tracking and the gate end to end on a real MLflow store (hashing embedder):
the gate blocks a model trained on shuffled labels and a worse one, and passes a better one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.intent import load_package
from mangaassist.chatbot.intent_training import Candidate, TrainingConfig, train_candidate
from mangaassist.core.intents import INTENTS
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.gates import model_metrics_gate
from mangaassist.delivery.model_gate import GateConfig, gate_version
from mangaassist.delivery.model_promotion import promote
from mangaassist.platform.embeddings import HashingEmbedder
from mangaassist.platform.local.model_registry_mlflow import MlflowModelRegistry
from mangaassist.platform.model_registry import ModelVersion

# A share of the training data small enough that the hashing embedder's model is clearly worse
# than the full one (at 70% of today's 1,000 lines it scores as well as the full model).
SUBSET = 0.4


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
    config: TrainingConfig,
    embedder: HashingEmbedder,
    catalog: Catalog,
) -> tuple[MlflowModelRegistry, dict[str, Candidate]]:
    """Three versions: 40% of the data (v1), all of it (v2), shuffled labels (v3).

    Trained with MLflow's fluent setters made to fail and with what the process-wide tracking
    state was at every registration (inside the run) recorded in ``registry.seen``."""
    import mlflow

    registry = _Watched.from_home(tmp_path_factory.mktemp("home"))
    assert isinstance(registry, _Watched)
    variants = {
        "subset": config.with_overrides(train_fraction=SUBSET),
        "full": config,
        "shuffled": config.with_overrides(shuffle_labels=True),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        before = mlflow.get_tracking_uri()
        for name in ("set_tracking_uri", "start_run", "set_experiment"):
            patch.setattr(mlflow, name, _refuse)
        results = {
            name: train_candidate(variant, registry, embedder, catalog, actor="ci", reason=name)
            for name, variant in variants.items()
        }
        registry.seen.append(("after", os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()))
    registry.seen.insert(0, ("before", None, before))
    return registry, results


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("MLflow's process-wide tracking state was used")


class _Watched(MlflowModelRegistry):
    """Records ``(when, MLFLOW_TRACKING_URI, mlflow.get_tracking_uri())`` at each registration."""

    seen: list[tuple[str, str | None, str]]

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        super().__init__(tracking_uri, artifact_root)
        self.seen = []

    def register(self, name: str, package: Path, **kwargs: Any) -> ModelVersion:
        import mlflow

        assert mlflow.active_run() is None
        self.seen.append(("in run", os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()))
        return super().register(name, package, **kwargs)


def test_training_never_touches_the_process_wide_tracking_uri(
    trained: tuple[MlflowModelRegistry, dict[str, Candidate]],
) -> None:
    registry, _ = trained
    assert isinstance(registry, _Watched)
    assert [when for when, _, _ in registry.seen] == ["before", "in run", "in run", "in run", "after"]
    before = registry.seen[0][2]
    for when, env, uri in registry.seen:
        assert env is None, when
        assert uri == before != registry.tracking_uri, when


def test_training_registers_a_tracked_candidate(
    trained: tuple[MlflowModelRegistry, dict[str, Candidate]],
    tmp_path: Path,
    catalog: Catalog,
    config: TrainingConfig,
) -> None:
    registry, results = trained
    full = results["full"]
    assert full.version.version == "2"
    assert full.version.aliases == ("candidate",)  # when it was trained
    assert registry.get("intent", "2").aliases == ()  # the shuffled model trained after it took the alias
    candidate = registry.alias("intent", "candidate")
    assert candidate is not None and candidate.version == "3"
    metrics = full.metrics
    for name in (
        "macro_f1",
        "accuracy",
        "ece",
        "p50_latency_ms",
        "p99_latency_ms",
        "size_mb",
        "train_seconds",
    ):
        assert name in metrics, name
    assert all(f"recall_{intent}" in metrics for intent in INTENTS)
    n_train = sum(1 for line in config.train_path.read_text().splitlines() if line.strip())
    assert 0 <= metrics["ece"] <= 1 and 0 < metrics["size_mb"] < 1 and metrics["n_train"] == n_train
    assert results["subset"].metrics["n_train"] == pytest.approx(SUBSET * n_train, abs=4)
    # the registry holds what training measured, and the params that say how it was trained
    stored = registry.get("intent", "2")
    assert stored.metrics["macro_f1"] == metrics["macro_f1"]
    assert stored.params["shuffle_labels"] == "false" and stored.params["C"] == "8.0"
    assert registry.get("intent", "3").params["shuffle_labels"] == "true"
    assert registry.get("intent", "1").params["train_fraction"] == str(SUBSET)
    assert stored.tags["package_version"] == full.package_version and stored.tags["actor"] == "ci"

    # one MLflow run per training: params, metrics, the package, the report, the signed model
    run = registry.client.get_run(full.run_id)
    assert run.data.params["package_version"] == full.package_version
    assert run.data.metrics["macro_f1"] == metrics["macro_f1"]
    artifacts = {a.path for a in registry.client.list_artifacts(full.run_id)}
    assert {"package", "eval", "config"} <= artifacts, artifacts
    assert run.info.status == "FINISHED" and run.data.tags["mangaassist.reason"] == "full"
    assert "classifier" in artifacts  # runs:/<run_id>/classifier
    model_dir = Path(registry.client.download_artifacts(full.run_id, "package", str(tmp_path)))
    assert load_package(model_dir, HashingEmbedder(), catalog).version == full.package_version
    from mlflow.models import Model

    model_path = Path(registry.client.download_artifacts(full.run_id, "classifier", str(tmp_path)))
    mlmodel = Model.load(str(model_path / "MLmodel"))
    assert mlmodel.signature is not None
    assert mlmodel.signature.inputs.to_dict()[0]["tensor-spec"]["shape"][-1] > HashingEmbedder().dim
    requirements = (model_path / "requirements.txt").read_text()
    assert "scikit-learn==" in requirements and "numpy==" in requirements


def test_the_gate_blocks_shuffled_labels_and_passes_more_data(
    trained: tuple[MlflowModelRegistry, dict[str, Candidate]], gate_config: GateConfig
) -> None:
    registry, results = trained
    promote(registry, "intent", "1", actor="ci", reason="first champion: 70% of the data")

    better = gate_version(registry, "intent", gate_config, "2")
    assert better.verdict is Verdict.PASS, better.reasons
    assert better.baseline_version == "1" and better.as_dict()["champion_version"] == "1"
    f1 = next(r for r in better.report["rows"] if r["metric"] == "macro_f1")
    assert f1["candidate"] is not None and f1["champion"] is not None and f1["candidate"] > f1["champion"]

    shuffled = gate_version(registry, "intent", gate_config)  # default: the candidate alias, v3
    assert shuffled.candidate_version == "3" and shuffled.verdict is Verdict.FAIL
    assert any("macro_f1" in r and "below the minimum" in r for r in shuffled.reasons)
    assert any("below the champion's" in r for r in shuffled.reasons)
    assert results["shuffled"].metrics["macro_f1"] < 0.3


def test_a_worse_model_fails_on_the_tolerance_alone(
    trained: tuple[MlflowModelRegistry, dict[str, Candidate]], gate_config: GateConfig
) -> None:
    _, results = trained
    subset, full = results["subset"].metrics, results["full"].metrics
    report = model_metrics_gate(subset, full, gate_config.limits)
    assert model_metrics_gate(subset, None, gate_config.limits).passed  # above every floor on its own
    assert report.verdict is Verdict.FAIL
    assert any("below the champion's" in r for r in report.reasons)


def test_the_gate_config_of_the_repository_blocks_the_shuffled_model(
    trained: tuple[MlflowModelRegistry, dict[str, Candidate]],
) -> None:
    _, results = trained
    shipped = GateConfig.load(Path(__file__).resolve().parents[3] / "ml" / "intent.yaml")
    report = model_metrics_gate(results["shuffled"].metrics, None, shipped.limits)
    assert not report.passed and len(report.reasons) >= 3
    assert yaml.safe_load((Path(__file__).resolve().parents[3] / "ml" / "intent.yaml").read_text())["gate"]
