"""A real process that drives the engine, for the crash and race tests (run as a script).

python engine_child.py crash URL LEDGER POINT [PARAMS_JSON]
    start a demo run; at observer point POINT print "AT <POINT> <run id>" and block forever
    (the test kills it with SIGKILL there). Without reaching POINT it finishes and prints "END".
python engine_child.py race URL ENV TARGET NAME
    wait for a line on stdin ("go"), then try to start a demo run; print "WON <run id>" and block,
    or "LOCKED <message>" and exit 3.
python engine_child.py hold URL ENV TARGET NAME LEASE
    start a demo run with a LEASE-second lease, print "HOLD <run id>" at its first step, block.
"""

from __future__ import annotations

import json
import sys
import threading

from mangaassist.delivery.engine.errors import LockHeld
from mangaassist.delivery.engine.policy import default_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import demo


def block() -> None:
    threading.Event().wait()


def main(argv: list[str]) -> int:
    mode, url = argv[0], argv[1]
    store = StateStore(url)
    if mode == "crash":
        ledger, point = argv[2], argv[3]
        params = {"ledger": ledger, **(json.loads(argv[4]) if len(argv) > 4 else {})}
        run_ids: list[str] = []

        def observer(at: str) -> None:
            if at == point and at != "run:created":  # handled after start() returns its id
                print(f"AT {at} {run_ids[0] if run_ids else ''}", flush=True)
                block()

        executor = Executor(store, observer=observer, poll_seconds=0.05)
        pipeline = demo.build(params)
        policy = default_policy().for_run("dev", pipeline.name)
        record = executor.start(
            pipeline, environment="dev", target="demo", requester="crash-test", policy=policy
        )
        run_ids.append(record.id)
        if point == "run:created":
            print(f"AT run:created {record.id}", flush=True)
            block()
        final = executor.drive(record.id, pipeline)
        print(f"END {final.id} {final.state.value}", flush=True)
        return 0
    env, target, name = argv[2], argv[3], argv[4]
    lease = float(argv[5]) if len(argv) > 5 else 30.0
    if mode == "race":
        sys.stdin.readline()
    executor = Executor(store, lease_seconds=lease, heartbeat=False)
    pipeline = demo.build({})
    try:
        record = executor.start(
            pipeline,
            environment=env,
            target=target,
            requester=name,
            policy=default_policy().for_run("dev", "demo"),
        )
    except LockHeld as exc:
        print(f"LOCKED {exc}", flush=True)
        return 3
    print(f"{'WON' if mode == 'race' else 'HOLD'} {record.id}", flush=True)
    block()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
