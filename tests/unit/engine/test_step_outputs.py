"""Typed step outputs: what a step passes on, read back by later steps (and after a resume)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from mangaassist.delivery.engine.outputs import StepOutput
from mangaassist.delivery.pipelines.app import Built
from mangaassist.delivery.pipelines.model import Resolved


@dataclass(frozen=True)
class _Out(StepOutput):
    name: str
    count: int
    note: str | None = None


def test_an_output_survives_its_json_round_trip() -> None:
    out = _Out("a", 3)
    again = _Out.from_output(json.loads(json.dumps(out.as_output())), "step")
    assert again == out and again.note is None


def test_a_missing_field_names_the_step_and_the_field() -> None:
    with pytest.raises(ValueError, match=r"step build: its output has no 'count' \(has: name\)"):
        _Out.from_output({"name": "a"}, "build")


def test_fields_a_newer_version_dropped_are_ignored_when_an_old_run_is_resumed() -> None:
    assert _Out.from_output({"name": "a", "count": 1, "gone": True}) == _Out("a", 1)


def test_the_pipelines_outputs_keep_the_keys_runs_in_flight_recorded() -> None:
    # runs started before the outputs were typed recorded these keys: a resume must read them
    built = {
        "release": {"path": "/a.tar", "digest": "d"}, "release_id": "r", "digest": "d", "set_env": {},
        "stable": "r1", "stable_digest": "s", "stable_replicas": 1, "candidate": "rel-r",
        "baseline_cursor": 5, "already_live": False,
    }  # fmt: skip
    assert Built.from_output(built).baseline_name == "rel-r-base"
    resolved = {
        "model": "intent", "version": "2", "package_version": "p", "package": "/p", "package_digest": "x",
        "champion": "1", "candidate_accuracy": 0.9, "champion_accuracy": None, "stable": "r1",
        "stable_digest": "s", "stable_artifact": "/s.tar", "stable_replicas": 1, "candidate": "m2-x",
        "set_env": {}, "baseline_cursor": 0,
    }  # fmt: skip
    assert Resolved.from_output(resolved).as_output() == resolved
