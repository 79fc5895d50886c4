"""``kb build`` through the real binary: ``--json`` records the time of every stage, plain progress
lines (not a terminal) say chunks/s and time left, and bad runtime or batch settings exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.kb.conftest import copy_sources


def kb_cli(root: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MANGAASSIST_HOME": str(home), "MANGAASSIST_ROOT": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "mangaassist.cli.main", "kb", *args],
        env=environ,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_json_output_records_every_stage(tmp_path: Path) -> None:
    root, home = copy_sources(tmp_path / "repo"), tmp_path / "home"
    result = kb_cli(root, home, "build", "--embedder", "hashing", "--batch-size", "16", "--json")
    out = json.loads(result.stdout)  # printed whatever the gate decides
    stages = out["stages"]
    assert set(stages["steps_s"]) == {"plan", "embed", "build", "gate", "promote"}
    assert stages["chunking_s"] > 0 and stages["write_s"] > 0
    embed = stages["embed"]
    assert {"cache_read_s", "cache_write_s", "embed_s"} <= set(embed)
    assert 0 < embed["embed_s"] <= stages["steps_s"]["embed"]
    assert out["embed"]["batch_size"] == 16 and out["embed"]["embedded"] == out["plan"]["chunks"]
    # not a terminal: plain lines on stderr, with the rate and the time left
    progress = [line for line in result.stderr.splitlines() if " embed: embedded " in line]
    assert progress and all("chunks/s" in line and " left" in line for line in progress)
    assert len(progress) <= 12
    assert (
        progress[-1]
        .split(" embed: embedded ")[1]
        .startswith(f"{out['plan']['chunks']}/{out['plan']['chunks']}")
    )


def test_bad_runtime_and_batch_size_exit_2(tmp_path: Path) -> None:
    root, home = copy_sources(tmp_path / "repo"), tmp_path / "home"
    bad_runtime = kb_cli(root, home, "build", "--runtime", "tpu")
    assert bad_runtime.returncode == 2 and "expected one of torch, onnx" in bad_runtime.stderr
    bad_batch = kb_cli(root, home, "build", "--batch-size", "0")
    assert bad_batch.returncode == 2
    assert not (home / "kb" / "index").exists()  # nothing was built
