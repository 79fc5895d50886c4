"""A real MLflow registry (SQLite under tmp_path), the hashing embedder for speed, and a gate
config whose floors suit the hashing embedder (it scores macro-F1 about 0.70, MiniLM 0.93)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.intent_training import TrainingConfig
from mangaassist.delivery.model_gate import GateConfig
from mangaassist.platform.embeddings import HashingEmbedder
from mangaassist.platform.local.model_registry_mlflow import MlflowModelRegistry

ROOT = Path(__file__).resolve().parents[3]
HASHING_GATE = {
    "metrics": {
        "macro_f1": {"min": 0.5, "max_drop": 0.01},
        "recall_human_handoff": {"min": 0.6, "max_drop": 0.02},
        "ece": {"max": 0.2, "max_rise": 0.05},
        "p99_latency_ms": {"max": 250},
        "size_mb": {"max": 0.5},
    }
}


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowModelRegistry:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return MlflowModelRegistry.from_home(tmp_path / "home")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "data" / "catalog.jsonl")


@pytest.fixture(scope="module")
def embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture(scope="module")
def config() -> TrainingConfig:
    base = TrainingConfig.load(ROOT / "ml" / "intent.yaml", ROOT)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return TrainingConfig.from_mapping(
        {
            "model": "intent",
            "data": {"train": str(base.train_path), "eval": str(base.eval_path)},
            "gate": HASHING_GATE,
        },
        "hashing-test-config",
        ROOT,
    )


@pytest.fixture(scope="module")
def gate_config() -> GateConfig:
    return GateConfig.from_mapping(HASHING_GATE)
