"""Runs a CD-04 build in this process and SIGKILLs itself at the boundary named by KB_KILL_AT."""

from __future__ import annotations

import os
import signal
import sys

from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import kb

root, home = sys.argv[1], sys.argv[2]
kill_at = os.environ["KB_KILL_AT"]


def observe(boundary: str) -> None:
    if boundary == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


store = StateStore(f"sqlite:///{home}/state.sqlite3")
pipeline = kb.build({"root": root, "home": home, "write_batch": 256})  # killed after its first write
executor = Executor(store, heartbeat=False, observer=observe, lease_seconds=1.0)
record = executor.start(
    pipeline,
    environment="dev",
    target=kb.NAME,
    requester="test",
    policy=load_policy(None).for_run("dev", kb.NAME),
)
print(record.id, flush=True)
executor.drive(record.id, pipeline)
