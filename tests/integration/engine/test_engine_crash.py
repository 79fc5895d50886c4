"""Crash tests: a real process driving a run is killed with SIGKILL at every step boundary and inside
steps, then the run is resumed by another process. Completed steps are not repeated and no effect is
applied twice: the demo pipeline's ledger (one line per applied effect) and its attempts file prove it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mangaassist.delivery.engine import audit
from mangaassist.delivery.engine.clock import SystemClock
from mangaassist.delivery.engine.model import RunState, StepStatus
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import demo

CHILD = Path(__file__).with_name("engine_child.py")
STEPS = ["prepare", "apply", "verify"]
KEYS = ["prepare/stage", "apply/apply"]

# (kill point, steps that must have run exactly once before the kill, effect applied but not recorded)
POINTS = [
    ("run:created", [], None),
    ("step:prepare:started", [], None),
    ("step:prepare:effect:stage:applied", [], "prepare/stage"),
    ("step:prepare:done", ["prepare"], None),
    ("step:apply:started", ["prepare"], None),
    ("step:apply:before-effect", ["prepare"], None),
    ("step:apply:effect:apply:applied", ["prepare"], "apply/apply"),
    ("step:apply:after-effect", ["prepare"], None),
    ("step:apply:done", ["prepare", "apply"], None),
    ("step:verify:started", ["prepare", "apply"], None),
    ("step:verify:done", ["prepare", "apply", "verify"], None),
]


def kill_at(url: str, ledger: Path, point: str, params: dict[str, object] | None = None) -> str:
    """Start the child, wait until it reports ``point``, SIGKILL it; return the run id."""
    args = [sys.executable, str(CHILD), "crash", url, str(ledger), point]
    if params:
        args.append(json.dumps(params))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the child reaches the point (or dies)
    try:
        assert line.startswith(f"AT {point} "), (
            f"child did not reach {point}: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        )
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return line.split()[2]


def ledger_lines(ledger: Path, suffix: str = "") -> Counter[str]:
    path = ledger.with_name(ledger.name + suffix)
    if not path.exists():
        return Counter()
    return Counter("/".join(json.loads(line)["key"].split("/")[1:]) for line in path.read_text().splitlines())


@pytest.mark.parametrize(("point", "done_before", "window"), POINTS, ids=[p[0] for p in POINTS])
def test_killed_run_resumes_without_repeating_steps_or_effects(
    state_url: str, tmp_path: Path, point: str, done_before: list[str], window: str | None
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    run_id = kill_at(state_url, ledger, point)
    store = StateStore(state_url)
    clock = SystemClock()
    with store.transaction() as conn:
        killed = store.run(conn, run_id, clock.now())
        before = {s.name: s for s in store.steps(conn, run_id)}
    assert killed.effective_state is RunState.INTERRUPTED  # its PID is gone: shown as interrupted
    assert sorted(n for n, s in before.items() if s.status is StepStatus.DONE) == sorted(done_before)

    final = Executor(store, poll_seconds=0.05).resume(
        run_id, demo.build({"ledger": str(ledger)}), actor="tester"
    )

    assert final.state is RunState.SUCCEEDED
    with store.transaction() as conn:
        after = {s.name: s for s in store.steps(conn, run_id)}
        count, problems = audit.verify(conn, store)
        kinds = [e.kind for e in audit.entries(conn, run_id)]
    assert all(s.status is StepStatus.DONE for s in after.values())
    for name in done_before:  # completed steps are not repeated
        assert after[name].attempts == 1, name
        assert after[name].finished_at == before[name].finished_at
    assert ledger_lines(ledger) == Counter(KEYS)  # every effect applied exactly once
    attempts = ledger_lines(ledger, ".attempts")
    for key in KEYS:  # apply is called again only in the window the idempotency key closes
        assert attempts[key] == (2 if key == window else 1), (key, attempts)
    assert problems == [] and count > 0
    assert "run.resumed" in kinds and kinds[-1] == "run.finished"


@pytest.mark.parametrize("point", ["rollback:started", "step:rollback:effect:undo:applied"])
def test_killed_rollback_resumes_and_undoes_once(state_url: str, tmp_path: Path, point: str) -> None:
    ledger = tmp_path / "ledger.jsonl"
    run_id = kill_at(state_url, ledger, point, {"fail_at": "verify"})
    store = StateStore(state_url)
    params = {"ledger": str(ledger), "fail_at": "verify"}

    final = Executor(store, poll_seconds=0.05).resume(run_id, demo.build(params), actor="tester")

    assert final.state is RunState.ROLLED_BACK
    assert "step verify failed" in (final.reason or "")
    assert ledger_lines(ledger) == Counter([*KEYS, "rollback/undo"])
    with store.transaction() as conn:
        steps = {s.name: s for s in store.steps(conn, run_id)}
    assert steps["verify"].status is StepStatus.FAILED and steps["verify"].attempts == 1
    assert steps["verify"].detail["verdict"] == "FAIL"
