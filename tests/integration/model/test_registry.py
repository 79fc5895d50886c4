"""``MlflowModelRegistry`` on a real MLflow SQLite store: versions, aliases, history, downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.entities import EntitySignals
from mangaassist.chatbot.intent import Example, load_package, save_package
from mangaassist.chatbot.intent_training import TrainingConfig, fit
from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.delivery.model_promotion import promote, rollback
from mangaassist.platform.embeddings import HashingEmbedder
from mangaassist.platform.local.model_registry_mlflow import MlflowModelRegistry

EXAMPLES = [
    Example("where is my order", "order_status"),
    Example("track my package please", "order_status"),
    Example("I want to talk to a human", "human_handoff"),
    Example("connect me with an agent", "human_handoff"),
]


@pytest.fixture
def package(tmp_path: Path, embedder: HashingEmbedder, catalog: Catalog) -> Path:
    model = fit(EXAMPLES, embedder, EntitySignals(catalog), TrainingConfig(augment_copies=0))
    return save_package(model, tmp_path / "pkg", {"version": "intent-test", "embedder": embedder.name})


def _register(registry: MlflowModelRegistry, package: Path, f1: float) -> str:
    version = registry.register(
        "intent", package, metrics={"macro_f1": f1}, params={"C": "8.0"}, tags={"k": "v"}
    )
    return version.version


def test_register_numbers_versions_and_keeps_metrics_params_tags(
    registry: MlflowModelRegistry, package: Path, tmp_path: Path
) -> None:
    first = registry.register(
        "intent", package, metrics={"macro_f1": 0.9, "ece": 0.05}, params={"C": "8.0"}, tags={"k": "v"}
    )
    second = registry.register("intent", package, metrics={"macro_f1": 0.95}, params={"C": "4.0"})
    assert (first.version, second.version) == ("1", "2")
    assert first.metrics == {"macro_f1": 0.9, "ece": 0.05} and first.params == {"C": "8.0"}
    assert first.tags == {"k": "v"} and first.aliases == ()
    assert first.source.endswith("/package") and first.source.startswith("file://")
    # the store is where from_home says: SQLite and artifacts under the home
    assert (tmp_path / "home" / "mlflow" / "mlflow.db").is_file()
    assert str(tmp_path / "home" / "mlflow" / "artifacts" / "intent") in first.source
    assert [v.version for v in registry.versions("intent")] == ["1", "2"]
    assert registry.get("intent", "2").params == {"C": "4.0"}
    with pytest.raises(NotFoundError, match="no version 7"):
        registry.get("intent", "7")
    assert registry.versions("other") == []
    with pytest.raises(ConfigError, match="not a model package directory"):
        registry.register("intent", tmp_path / "missing", metrics={}, params={})


def test_download_round_trip_serves_the_same_model(
    registry: MlflowModelRegistry, package: Path, tmp_path: Path, embedder: HashingEmbedder, catalog: Catalog
) -> None:
    version = _register(registry, package, 0.9)
    local = registry.download("intent", version, tmp_path / "downloads")
    assert local == tmp_path / "downloads" / "intent-v1"
    assert (local / "model.joblib").read_bytes() == (package / "model.joblib").read_bytes()
    assert json.loads((local / "model.json").read_text())["version"] == "intent-test"
    client = load_package(local, embedder, catalog)
    assert client.classify("where is my parcel").intent == "order_status"
    assert registry.download("intent", version, tmp_path / "downloads") == local  # reused
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == ["intent-v1"]  # no scratch left


def test_aliases_promote_rollback_and_history(registry: MlflowModelRegistry, package: Path) -> None:
    v1, v2, v3 = (_register(registry, package, f) for f in (0.90, 0.92, 0.93))
    assert registry.alias("intent", "champion") is None

    first = promote(registry, "intent", v1, actor="alice", reason="first model")
    assert (first.champion_before, first.champion, first.previous) == (None, "1", None)
    assert registry.alias("intent", "previous") is None  # first model: champion directly

    promote(registry, "intent", v2, actor="bob")
    champion, previous = registry.alias("intent", "champion"), registry.alias("intent", "previous")
    assert champion is not None and champion.version == "2" and champion.metrics == {"macro_f1": 0.92}
    assert previous is not None and previous.version == "1"
    assert registry.get("intent", "2").aliases == ("champion",)
    assert {v.version: v.aliases for v in registry.versions("intent")} == {
        "1": ("previous",),
        "2": ("champion",),
        "3": (),
    }
    with pytest.raises(ConfigError, match="already the champion"):
        promote(registry, "intent", v2, actor="bob")

    back = rollback(registry, "intent", actor="carol", reason="bad answers")
    assert (back.champion_before, back.champion) == ("2", "1")
    champion = registry.alias("intent", "champion")
    assert champion is not None and champion.version == "1"
    assert registry.alias("intent", "previous") is None
    with pytest.raises(NotFoundError, match="no 'previous' version"):
        rollback(registry, "intent", actor="carol")

    moves = [(m["alias"], m["previous"], m["version"], m["actor"]) for m in registry.history("intent")]
    assert moves == [
        ("champion", None, "1", "alice"),
        ("previous", None, "1", "bob"),
        ("champion", "1", "2", "bob"),
        ("champion", "2", "1", "carol"),
        ("previous", "1", None, "carol"),
    ]
    assert registry.history("intent")[3]["reason"] == "bad answers"
    assert all(m["at"].endswith("+00:00") for m in registry.history("intent"))
    assert v3 == "3"


def test_alias_errors(registry: MlflowModelRegistry, package: Path) -> None:
    _register(registry, package, 0.9)
    with pytest.raises(ConfigError, match="alias 'live'"):
        registry.set_alias("intent", "live", "1", actor="a")
    with pytest.raises(NotFoundError, match="no version 9"):
        registry.set_alias("intent", "champion", "9", actor="a")
    with pytest.raises(NotFoundError):
        promote(registry, "intent", "9", actor="a")
    registry.delete_alias("intent", "candidate", actor="a")  # absent: nothing to do, nothing recorded
    assert registry.history("intent") == []


def test_a_second_registry_on_the_same_home_sees_everything(
    registry: MlflowModelRegistry, package: Path, tmp_path: Path
) -> None:
    version = _register(registry, package, 0.9)
    registry.set_alias("intent", "candidate", version, actor="a", reason="trained")
    other = MlflowModelRegistry.from_home(tmp_path / "home")
    found = other.alias("intent", "candidate")
    assert found is not None and found.version == version
    assert other.history("intent")[0]["reason"] == "trained"


def test_mlflow_tracking_uri_wins_over_the_home(
    tmp_path: Path, package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "team" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    registry = MlflowModelRegistry.from_home(tmp_path / "home")
    assert registry.tracking_uri == f"sqlite:///{elsewhere}"
    version = registry.register("intent", package, metrics={}, params={})
    assert elsewhere.is_file() and not (tmp_path / "home").exists()
    assert str(tmp_path / "team" / "artifacts") in version.source


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("MLflow's process-wide tracking state was used")


@pytest.fixture
def no_fluent_tracking(monkeypatch: pytest.MonkeyPatch) -> str:
    """No ``MLFLOW_TRACKING_URI``, and MLflow's fluent setters fail the test if called; returns
    MLflow's global tracking URI as it was before."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    for name in ("set_tracking_uri", "start_run", "set_experiment"):
        monkeypatch.setattr(mlflow, name, _refuse)
    return before


def test_a_tracked_run_logs_through_the_registrys_client_only(
    registry: MlflowModelRegistry,
    package: Path,
    embedder: HashingEmbedder,
    catalog: Catalog,
    tmp_path: Path,
    no_fluent_tracking: str,
) -> None:
    """The run, what it logs and the registration go to the registry's store through its own
    client: MLFLOW_TRACKING_URI is never written (not even during the run), MLflow's global
    tracking URI stays what it was and no fluent run is opened, so another registry, test or
    thread in the process is never pointed at this store."""
    import os

    import mlflow
    import mlflow.sklearn
    from mlflow.models import Model, infer_signature

    from mangaassist.chatbot.intent_training import classifier_input, pip_requirements

    signals = EntitySignals(catalog)
    fitted = fit(EXAMPLES, embedder, signals, TrainingConfig(augment_copies=0))
    model = fitted.classifier  # what MLflow logs; its input is the model's features
    texts = [e.text for e in EXAMPLES]
    sample = classifier_input(fitted, texts, embedder.embed(texts), signals)
    config_file = tmp_path / "intent.yaml"
    config_file.write_text("model: intent\n")
    with registry.run("intent", run_name="intent-test") as run_id:
        registry.log_model(
            run_id,
            model,
            signature=infer_signature(sample, model.predict_proba(sample)),
            pip_requirements=pip_requirements(),
        )
        registry.log_dict(run_id, {"per_intent": {"order_status": {"f1": 1.0}}}, "eval/report.json")
        registry.log_artifact(run_id, config_file, "config")
        registry.set_tags(run_id, {"mangaassist.actor": "ci", "mangaassist.reason": "test"})
        version = registry.register("intent", package, metrics={"macro_f1": 0.9}, params={}, run_id=run_id)
        assert "MLFLOW_TRACKING_URI" not in os.environ
        assert mlflow.get_tracking_uri() == no_fluent_tracking
        assert mlflow.active_run() is None
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == no_fluent_tracking
    assert mlflow.active_run() is None

    # everything is in the registry's store, in the run the version came from
    run = registry.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "intent-test"
    assert run.data.tags["mangaassist.actor"] == "ci" and run.data.tags["mangaassist.reason"] == "test"
    assert run.data.metrics == {"macro_f1": 0.9}
    assert version.version == "1" and registry.client.get_model_version("intent", "1").run_id == run_id
    store = tmp_path / "home" / "mlflow" / "artifacts" / "intent"
    assert run.info.artifact_uri.startswith(store.as_uri())
    listed = {a.path for a in registry.client.list_artifacts(run_id)}
    assert {"classifier", "eval", "config", "package"} <= listed, listed
    classifier = {a.path for a in registry.client.list_artifacts(run_id, "classifier")}
    assert {"classifier/MLmodel", "classifier/requirements.txt"} <= classifier, classifier
    downloaded = Path(registry.client.download_artifacts(run_id, "", str(tmp_path / "dl")))
    report = json.loads((downloaded / "eval" / "report.json").read_text())
    assert report["per_intent"]["order_status"]["f1"] == 1.0
    assert (downloaded / "config" / "intent.yaml").read_text() == "model: intent\n"
    # the classifier is a loadable MLflow model with its signature and pinned requirements
    mlmodel = Model.load(str(downloaded / "classifier" / "MLmodel"))
    assert mlmodel.signature is not None and "sklearn" in mlmodel.flavors
    requirements = (downloaded / "classifier" / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} >= {"scikit-learn", "numpy", "skops"}
    assert all("==" in r for r in requirements), requirements
    loaded = mlflow.sklearn.load_model(str(downloaded / "classifier"))
    assert list(loaded.predict(sample)) == list(model.predict(sample))
    # another home still gets its own store
    other = MlflowModelRegistry.from_home(tmp_path / "other-home")
    assert other.tracking_uri == f"sqlite:///{(tmp_path / 'other-home' / 'mlflow' / 'mlflow.db').resolve()}"


def test_a_run_that_raises_ends_failed(registry: MlflowModelRegistry, no_fluent_tracking: str) -> None:
    import os

    import mlflow

    with pytest.raises(RuntimeError, match="training broke"), registry.run("intent") as run_id:
        raise RuntimeError("training broke")
    assert registry.client.get_run(run_id).info.status == "FAILED"
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() == no_fluent_tracking


def test_two_registries_track_side_by_side(tmp_path: Path, no_fluent_tracking: str) -> None:
    """Runs of two stores open at the same time each land in their own store (the fluent API
    would have sent both to whichever tracking URI was set last)."""
    first = MlflowModelRegistry.from_home(tmp_path / "one")
    second = MlflowModelRegistry.from_home(tmp_path / "two")
    with first.run("intent") as run_one, second.run("intent") as run_two:
        first.set_tags(run_one, {"store": "one"})
        second.set_tags(run_two, {"store": "two"})
        first.log_dict(run_one, {"n": 1}, "eval/report.json")
        second.log_dict(run_two, {"n": 2}, "eval/report.json")
    assert first.client.get_run(run_one).data.tags["store"] == "one"
    assert second.client.get_run(run_two).data.tags["store"] == "two"
    assert str(tmp_path / "one") in first.client.get_run(run_one).info.artifact_uri
    assert str(tmp_path / "two") in second.client.get_run(run_two).info.artifact_uri
    for registry in (first, second):
        assert [r.info.run_id for r in registry.client.search_runs([registry.experiment_id("intent")])] == [
            run_one if registry is first else run_two
        ]
