"""The pieces of the demo's CD-03 segment (``demo/model.py``) on a real MLflow SQLite store:
a fresh registry per demo (versions start at 1 again), the tracking URI set inside and restored
after, only the demo's own package downloads removed, the demo's variants trained as asked, the
gate table's failing rows and the users' answers counted per registry version.

The whole segment (platform, pipeline runs, users) runs in ``mangaassist demo`` (``make demo``);
``tests/integration/model_pipeline`` covers the pipeline itself on a real platform."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from mangaassist.chatbot.catalog import Catalog
from mangaassist.delivery.engine.model import StepRecord, StepStatus
from mangaassist.demo.model import DEMO_MODEL, Trainer, _by_version, _gate_table, demo_registry
from mangaassist.platform.embeddings import HashingEmbedder


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nowhere/else.db")  # a user's: never touched
    monkeypatch.setenv("MANGAASSIST_EMBEDDER", "hashing")
    home = tmp_path / "home"
    packages = home / "models" / "packages"
    for name in ("intent-v1", f"{DEMO_MODEL}-v1", f"{DEMO_MODEL}-v12"):
        (packages / name).mkdir(parents=True)
    return home


def test_each_demo_starts_a_fresh_registry_and_leaves_the_environment_as_it_was(
    home: Path, embedder: HashingEmbedder, catalog: Catalog
) -> None:
    with demo_registry(home) as (config_path, registry):
        store = Path(registry.tracking_uri.removeprefix("sqlite:///"))
        assert store.parent.parent == (home / "demo-model").resolve() and store.name == "mlflow.db"
        # the demo's deploys name the store with a run param: the environment is never written
        assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////nowhere/else.db"
        assert yaml.safe_load(config_path.read_text())["model"] == DEMO_MODEL
        packages = sorted(p.name for p in (home / "models" / "packages").iterdir())
        assert packages == ["intent-v1"]  # a real model's download stays; the demo's own are gone
        trainer = Trainer(config_path, registry, embedder, catalog)
        first, _ = trainer.train("70%", fraction=0.7)
        second, _ = trainer.train("shuffled", shuffled=True)
        assert (first, second) == ("1", "2")
        assert registry.get(DEMO_MODEL, first).params["train_fraction"] == "0.7"
        assert registry.get(DEMO_MODEL, second).params["shuffle_labels"] == "true"
        candidate = registry.alias(DEMO_MODEL, "candidate")
        assert candidate is not None and candidate.version == "2"
        package = registry.get(DEMO_MODEL, first).tags["package_version"]
        answers = [(200, "m1", package), (200, "m1", package), (200, "r1", "intent-builtin"), (0, "", "")]
        assert _by_version(registry, answers) == {"v1": 2, "intent-builtin": 1, "?": 1}
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////nowhere/else.db"
    with demo_registry(home) as (config_path, registry):
        assert not store.exists()  # the previous demo's registry is removed
        assert registry.versions(DEMO_MODEL) == []  # the next demo starts from version 1 again
        first, _ = Trainer(config_path, registry, embedder, catalog).train("again", fraction=0.7)
        assert first == "1"


def test_the_gate_table_shows_only_the_failing_rows_when_asked() -> None:
    rows = [
        {"metric": "macro_f1", "champion": 0.93, "candidate": 0.13, "limit": ">= 0.88", "ok": False},
        {"metric": "size_mb", "champion": 0.0125, "candidate": 0.0125, "limit": "<= 0.5", "ok": True},
    ]
    gate = StepRecord(
        run_id="run-x",
        index=1,
        name="gate",
        status=StepStatus.FAILED,
        attempts=1,
        started_at=None,
        finished_at=None,
        duration_s=None,
        reason="failed the offline gate",
        detail={"gate": {"verdict": "FAIL", "rows": rows}},
    )

    def rendered(failing_only: bool) -> str:
        out = io.StringIO()
        Console(file=out, width=120).print(_gate_table("the gate", {"gate": gate}, failing_only))
        return out.getvalue()

    assert "macro_f1" in rendered(True) and "size_mb" not in rendered(True) and "FAIL" in rendered(True)
    assert "size_mb" in rendered(False)
