"""The answer-quality gate step as CD-06 and CD-03 run it: a child process answers a golden-set
sample with the live and the candidate arm (hashing embedder: fast, and the same for both arms)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from mangaassist.core.configspec import PROFILES
from mangaassist.delivery.config_profiles import read_profile
from mangaassist.delivery.pipelines.answers import GateSettings, child_gate

ROOT = Path(__file__).parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MANGAASSIST_ROOT": str(ROOT),
        "MANGAASSIST_HOME": str(tmp_path / "home"),
        "MANGAASSIST_EMBEDDER": "hashing",
        "MANGAASSIST_FAULT": "",
    }


def _contents() -> dict[str, object]:
    return {name: read_profile(ROOT / "config", name) for name in PROFILES}


def test_a_config_that_leaves_answers_as_they_are_passes(env: dict[str, str]) -> None:
    live = _contents()
    result = child_gate(
        GateSettings(sample=14),
        {"live": live, "candidate": copy.deepcopy(live)},
        candidate="c",
        live="l",
        env=env,
    )
    assert result.passed, result.reasons
    assert result.report["live"] is not None and result.measured["turns"] >= 14
    assert result.measured["correctness"] == result.measured["live_correctness"]


def test_a_config_that_breaks_answers_is_stopped(env: dict[str, str]) -> None:
    live = _contents()
    candidate = copy.deepcopy(live)
    runtime = candidate["runtime"]
    assert isinstance(runtime, dict)
    runtime["intent"]["min_confidence"] = 0.99  # every answer: "not sure what you mean"
    result = child_gate(
        GateSettings(sample=21), {"live": live, "candidate": candidate}, candidate="c", live="l", env=env
    )
    assert not result.passed
    assert any("answers: correctness" in r and "sign test" in r for r in result.reasons), result.reasons
