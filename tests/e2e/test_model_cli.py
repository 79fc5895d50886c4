"""``mangaassist model`` (CD-03) as a user runs it: train, gate, promote, list, rollback, history.

Real subprocesses, a temporary MANGAASSIST_HOME (so a fresh MLflow SQLite registry), the hashing
embedder and a gate config with floors that suit it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

GATE = {
    "metrics": {
        "macro_f1": {"min": 0.5, "max_drop": 0.01},
        "recall_human_handoff": {"min": 0.6, "max_drop": 0.02},
        "ece": {"max": 0.2, "max_rise": 0.05},
        "p99_latency_ms": {"max": 250},
        "size_mb": {"max": 0.5},
    }
}


@pytest.fixture
def model_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        MANGAASSIST_ROOT=str(ROOT),
        MANGAASSIST_HOME=str(tmp_path / "home"),
        MANGAASSIST_EMBEDDER="hashing",
        MANGAASSIST_ACTOR="e2e",
        HF_HUB_OFFLINE="1",
    )
    return env


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "intent.yaml"
    shipped = yaml.safe_load((ROOT / "ml" / "intent.yaml").read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump({**shipped, "gate": GATE}, sort_keys=False), encoding="utf-8")
    return path


def model(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mangaassist.cli.main", "model", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_train_gate_promote_then_block_a_shuffled_model_and_roll_back(
    model_env: dict[str, str], config: Path
) -> None:
    cfg = ("--config", str(config))
    first = as_json(model(model_env, "train", *cfg, "--train-fraction", "0.7", "--json"))
    assert (first["version"], first["aliases"]) == ("1", ["candidate"])
    assert first["tracking_uri"].startswith("sqlite:///") and first["tracking_uri"].endswith("mlflow.db")
    assert first["metrics"]["macro_f1"] > 0.5 and "ece" in first["metrics"]

    gate = model(model_env, "gate", *cfg)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "verdict: PASS" in gate.stdout and "champion none" in gate.stdout
    promoted = model(model_env, "promote", *cfg)
    assert promoted.returncode == 0, promoted.stderr
    assert "champion none -> 1 (first champion)" in promoted.stdout

    second = as_json(model(model_env, "train", *cfg, "--json", "--reason", "more data"))
    assert second["version"] == "2" and second["metrics"]["macro_f1"] > first["metrics"]["macro_f1"]
    report = as_json(model(model_env, "gate", *cfg, "--json"))
    assert (report["verdict"], report["candidate_version"], report["champion_version"]) == ("PASS", "2", "1")
    assert [r["metric"] for r in report["rows"]][:2] == ["macro_f1", "recall_human_handoff"]
    change = as_json(model(model_env, "promote", *cfg, "--json"))
    assert (change["champion_before"], change["champion"], change["previous"]) == ("1", "2", "1")

    drill = as_json(model(model_env, "train", *cfg, "--shuffle-labels", "--json"))
    assert drill["version"] == "3"
    blocked = model(model_env, "gate", *cfg)
    assert blocked.returncode == 1
    assert "verdict: FAIL" in blocked.stdout and "below the minimum" in blocked.stdout
    refused = model(model_env, "promote", *cfg)
    assert refused.returncode == 1 and "failed the gate" in refused.stderr

    listed = as_json(model(model_env, "list", *cfg, "--json"))
    aliases = {v["version"]: v["aliases"] for v in listed["versions"]}
    assert aliases == {"1": ["previous"], "2": ["champion"], "3": ["candidate"]}
    assert listed["versions"][2]["params"]["shuffle_labels"] == "true"

    back = model(model_env, "rollback", *cfg, "--reason", "drill")
    assert back.returncode == 0 and "champion 2 -> 1" in back.stdout
    moves = as_json(model(model_env, "history", *cfg, "--json"))["moves"]
    assert [(m["alias"], m["version"]) for m in moves][-2:] == [("champion", "1"), ("previous", None)]
    assert moves[-1]["actor"] == "e2e" and moves[-1]["reason"] == "drill"


@pytest.mark.parametrize("command", ["train", "gate", "promote", "rollback", "list", "history"])
def test_every_model_command_has_help(model_env: dict[str, str], command: str) -> None:
    result = model(model_env, command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_bad_input_gets_a_clear_error(model_env: dict[str, str], config: Path, tmp_path: Path) -> None:
    missing = model(model_env, "list", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml: no such model config" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("gate: {metrics: {macro_f1: {min: high}}}\n", encoding="utf-8")
    invalid = model(model_env, "train", "--config", str(bad))
    assert invalid.returncode == 2 and "gate.metrics.macro_f1.min: expected a number" in invalid.stderr
    fraction = model(model_env, "train", "--config", str(config), "--train-fraction", "1.5", "--json")
    assert fraction.returncode == 2 and "train_fraction 1.5" in json.loads(fraction.stdout)["error"]
    unknown = model(model_env, "gate", "--config", str(config), "--version", "9")
    assert unknown.returncode == 1 and "model intent has no version 9" in unknown.stderr
    no_candidate = model(model_env, "gate", "--config", str(config))
    assert no_candidate.returncode == 1 and "no version has the alias 'candidate'" in no_candidate.stderr
    force = model(model_env, "promote", "--config", str(config), "--force")
    assert force.returncode == 2 and "--force needs a --reason" in force.stderr
