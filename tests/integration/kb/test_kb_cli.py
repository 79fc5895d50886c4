"""``mangaassist kb`` through the real binary: build (twice), list, rollback, promote, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from tests.integration.kb.conftest import HASHING_FLOORS, KB


def cli(env: KB, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MANGAASSIST_HOME": str(env.home), "MANGAASSIST_ROOT": str(env.root)}
    return subprocess.run(
        [sys.executable, "-m", "mangaassist.cli.main", "kb", *args],
        env=environ,
        cwd=env.root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_kb_commands_end_to_end(make_kb: Callable[[], KB]) -> None:
    env = make_kb()
    floors = [f"--threshold={name}={value}" for name, value in HASHING_FLOORS.items()]
    first = as_json(cli(env, "build", "--embedder", "hashing", *floors, "--json"))
    assert first["state"] == "succeeded" and first["plan"]["mode"] == "full"
    assert first["gate"]["verdict"] == "PASS" and first["promote"]["live"] == first["plan"]["target"]
    assert {c["check"] for c in first["gate"]["checks"]} >= {
        "chunk count",
        "embedding dimension",
        "recall_at_5",
    }

    path = env.doc("gift-cards")
    path.write_text(path.read_text(encoding="utf-8") + "\nGift cards now come in $15.\n", encoding="utf-8")
    second = as_json(cli(env, "build", "--incremental", "--embedder", "hashing", *floors, "--json"))
    assert second["plan"]["mode"] == "incremental" and second["plan"]["changed"] == 1
    assert second["gate"]["live"] is not None  # the report compares new with live
    # a new process: only the edited file is parsed again, and the live version is not searched
    # again (its figures were kept with it by the first build's gate)
    sources = second["plan"]["sources"]
    assert sources["parsed"] == 1 and sources["from_disk"] == sources["files"] - 1
    assert second["gate"]["live_figures"] == "kept with the version"

    listed = as_json(cli(env, "list", "--json"))
    assert listed["live"] == second["plan"]["target"]
    assert [v["live"] for v in listed["versions"]] == [False, True]
    assert listed["versions"][1]["meta"]["metrics"]["recall_at_5"] > 0.5

    back = as_json(cli(env, "rollback", "--embedder", "hashing", "--json"))
    assert back["live"] == first["plan"]["target"] and back["previous"] == second["plan"]["target"]
    forward = as_json(cli(env, "promote", second["plan"]["target"], "--embedder", "hashing", "--json"))
    assert forward["live"] == second["plan"]["target"]

    both = cli(env, "build", "--full", "--incremental")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    for bad, says in (
        ("mrr", "expected NAME=NUMBER"),
        ("mrr=high", "expected NAME=NUMBER"),
        ("speed=1", "speed"),
    ):
        refused = cli(env, "build", "--threshold", bad)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
    # a hashing version, promoted without --embedder: the chatbot embeds queries with the model of
    # the version it serves, so any model it has an embedder for may go live (issue 21)
    other_model = as_json(cli(env, "promote", first["plan"]["target"], "--json"))
    assert other_model["live"] == first["plan"]["target"]
    assert as_json(cli(env, "list", "--json"))["live"] == first["plan"]["target"]
    unknown = cli(env, "promote", "kb-nope")
    assert unknown.returncode == 1 and as_json(cli(env, "list", "--json"))["live"] == first["plan"]["target"]
