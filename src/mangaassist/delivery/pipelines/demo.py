"""``demo``: a demonstration and test pipeline. It ships nothing.

It exercises every engine feature with effects anyone can inspect: each effect appends one JSON line
to a ledger file (``params["ledger"]``), deduplicated by the effect's idempotency key like a
conditional write, and every attempt to apply is also appended to ``<ledger>.attempts``. The crash
tests count both files to prove that no effect is applied twice.

Params: ``ledger`` (path; default: no file effects), ``approval`` (bool: add an approval step),
``work_seconds`` (how long ``apply`` works, in ticks with progress), ``fail_at`` (a step name that
fails), ``rollback_fails`` (bool).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext, approval_step

NAME = "demo"


def build(params: dict[str, Any]) -> Pipeline:
    steps = [Step("prepare", _prepare, "stage the demo release")]
    if params.get("approval"):
        steps.append(approval_step())
    steps += [
        Step("apply", _apply, "apply the demo release"),
        Step("verify", _verify, "judge the demo release"),
    ]
    return Pipeline(
        NAME,
        tuple(steps),
        rollback=_rollback,
        description="demonstration pipeline (ships nothing)",
        params=params,
    )


def _prepare(ctx: StepContext) -> Outcome:
    result = ctx.effect("stage", lambda key: _ledger(ctx, key, "stage"))
    if ctx.params.get("fail_at") == "prepare":
        return Outcome.failed("demo failure requested at prepare")
    return Outcome.done({"staged": result})


def _apply(ctx: StepContext) -> Outcome:
    ctx.checkpoint("before-effect")
    work = float(ctx.params.get("work_seconds", 0))
    ticks = max(1, int(work * 10)) if work > 0 else 0
    for tick in range(ticks):
        ctx.sleep(work / ticks)
        ctx.progress(f"applying {tick + 1}/{ticks}", (tick + 1) / ticks)
    result = ctx.effect("apply", lambda key: _ledger(ctx, key, "apply"))
    ctx.checkpoint("after-effect")
    if ctx.params.get("fail_at") == "apply":
        return Outcome.failed("demo failure requested at apply")
    return Outcome.done({"applied": result})


def _verify(ctx: StepContext) -> Outcome:
    if ctx.params.get("fail_at") == "verify":
        return Outcome.failed(
            "error rate above the limit", verdict=Verdict.FAIL, numbers={"error_rate": 0.31, "limit": 0.05}
        )
    return Outcome.done(verdict=Verdict.PASS, numbers={"error_rate": 0.0, "p95_ms": 42.0, "requests": 200.0})


def _rollback(ctx: StepContext) -> Outcome:
    ctx.effect("undo", lambda key: _ledger(ctx, key, "rollback"))
    if ctx.params.get("rollback_fails"):
        return Outcome.failed("demo rollback failure requested")
    return Outcome.done()


def _ledger(ctx: StepContext, key: str, what: str) -> str | None:
    path = ctx.params.get("ledger")
    if not path:
        return None
    return append_once(Path(path), key, what)


def append_once(path: Path, key: str, what: str) -> str:
    """Append ``{key, what}`` unless ``key`` is already there (a keyed, conditional write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"key": key, "what": what}) + "\n"
    with open(path.with_name(path.name + ".attempts"), "a", encoding="utf-8") as attempts:
        attempts.write(line)
        attempts.flush()
        os.fsync(attempts.fileno())
    with open(path, "a+", encoding="utf-8") as ledger:
        fcntl.flock(ledger, fcntl.LOCK_EX)
        ledger.seek(0)
        if any(json.loads(existing)["key"] == key for existing in ledger if existing.strip()):
            return key
        ledger.write(line)
        ledger.flush()
        os.fsync(ledger.fileno())
    return key
