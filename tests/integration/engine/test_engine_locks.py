"""Locks between real processes: two racing for one (environment, target); a dead holder's lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mangaassist.delivery.engine import audit
from mangaassist.delivery.engine.clock import SystemClock
from mangaassist.delivery.engine.errors import LockHeld
from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.engine.policy import default_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import demo

CHILD = Path(__file__).with_name("engine_child.py")


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_two_processes_racing_for_one_lock_one_wins_and_the_loser_names_it(state_url: str) -> None:
    StateStore(state_url).close()  # schema first, so the race is about the lock only
    for round_ in range(3):
        target = f"svc-{round_}"
        racers = [spawn("race", state_url, "prod", target, name) for name in ("alice", "bob")]
        try:
            for proc in racers:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            lines = {
                name: proc.stdout.readline().strip()
                for name, proc in zip(("alice", "bob"), racers, strict=True)
            }  # type: ignore[union-attr]
        finally:
            for proc in racers:
                stop(proc)
        winners = {n: line.split()[1] for n, line in lines.items() if line.startswith("WON ")}
        losers = {n: line for n, line in lines.items() if line.startswith("LOCKED ")}
        assert len(winners) == 1 and len(losers) == 1, lines
        (winner, run_id), message = next(iter(winners.items())), next(iter(losers.values()))
        assert f"prod/{target} is locked by run {run_id}, started by {winner} at 20" in message


def test_a_dead_holders_lock_is_taken_over_once_its_lease_expires(state_url: str) -> None:
    holder = spawn("hold", state_url, "staging", "web", "carol", "1.5")
    try:
        line = holder.stdout.readline().split()  # type: ignore[union-attr]
        assert line[0] == "HOLD", line
        old_run = line[1]
    finally:
        stop(holder)  # SIGKILL: the lease is never released, only expires
    store = StateStore(state_url)
    executor = Executor(store, heartbeat=False)
    start = dict(
        environment="staging", target="web", requester="dave", policy=default_policy().for_run("dev", "demo")
    )
    pipeline = demo.build({})
    with pytest.raises(LockHeld) as caught:  # the holder is dead but its lease has not expired yet
        executor.start(pipeline, **start)  # type: ignore[arg-type]
    assert caught.value.holder.run_id == old_run and caught.value.holder.requester == "carol"
    deadline = time.monotonic() + 15
    while True:  # poll until the lease has expired; never a fixed sleep
        try:
            new = executor.start(pipeline, **start)  # type: ignore[arg-type]
            break
        except LockHeld:
            assert time.monotonic() < deadline, "lease never expired"
            time.sleep(0.1)
    with store.transaction() as conn:
        old = store.run(conn, old_run, SystemClock().now())
        kinds = [e.kind for e in audit.entries(conn, old_run)]
    assert new.id != old_run
    assert old.state is RunState.ABORTED and f"superseded by run {new.id}" in (old.reason or "")
    assert "lock.taken_over" in kinds
