"""CD-07's drill end to end, small: ``benchmarks/migration_drill.py`` on the local provider with
2000 items, 2 writers and 1 SIGKILL of ``migrate apply`` during the backfill (then ``migrate
resume``), and the refusal scenario (a writer without the rule: verify must refuse the cutover).
Every target of its report must pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


def test_the_drill_loses_nothing_redoes_at_most_a_page_and_refuses_a_bad_cutover(tmp_path: Path) -> None:
    out = tmp_path / "drill.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "migration_drill.py"),
            *("--items", "2000", "--writers", "2", "--kills", "1", "--seed", "3"),
            *("--rate", "500", "--page", "25", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
    )
    assert out.exists(), done.stdout + done.stderr
    report = json.loads(out.read_text())
    failed = {name: t for name, t in report["targets"].items() if not t["pass"]}
    assert not failed, (failed, done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = report["run"]
    assert run["state"] == "succeeded" and run["kills_done"] == 1
    assert run["kills"][0]["step"] == "backfill" and run["kills"][0]["max_pages_redone"] <= 1
    assert report["truth"]["lost"] == report["truth"]["resurrected"] == 0
    assert report["truth"]["stale_overwrites"] == 0 and report["verify"]["differences"] == 0
    assert report["writers"]["total"] > 100  # the writers did write during the run
    refusal = report["refusal"]
    assert refusal["cutover_refused"] and refusal["verify_differences"] > 0
    assert refusal["state"] in ("rolled_back", "failed") and refusal["cutover_status"] != "done"
