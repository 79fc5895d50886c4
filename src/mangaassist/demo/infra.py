"""The infrastructure segment of ``make demo`` (CD-02): one declaration, provisioned and guarded.

1. ``deploy infra --env dev`` on the engine: the local provider creates the declared tables (with
   their GSI indexes), the vector index, the site and the bucket; a second run changes nothing and
   says so;
2. a table deleted by hand is reported as drift and re-created by the next run;
3. the CDK app synthesizes staging twice, the declaration as it is and with the orders table
   re-keyed, and a CD-02 run in staging diffs the second against the first: the key change is a
   replacement of a stateful resource, and the guard refuses it before any AWS call.

Called by ``mangaassist demo`` as ``run_infra_demo(console, home)``; returns the number of failed
checks.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import infra as cd02
from mangaassist.demo.engine import DEMO_ENVIRONMENT
from mangaassist.platform.factory import settings_for
from mangaassist.views.progress import ProgressDisplay
from mangaassist.views.runs import run_pipeline

GUARDED = "staging"
"""Where the destructive change is tried: an aws environment whose policy needs no approval, so the
run goes straight to the guard."""


def _run(
    console: Console, params: dict[str, Any], environment: str, store: StateStore
) -> tuple[RunRecord, dict[str, StepRecord]]:
    # the staging run is refused by the guard before any AWS call (that is what the demo shows), so
    # it needs neither AWS credentials nor the shared state database the aws preflight asks for
    return run_pipeline(
        ProgressDisplay(console),
        cd02.NAME,
        params,
        environment=environment,
        requester="demo",
        store=store,
        check_aws=environment != GUARDED,
    )


def _check(console: Console, ok: bool, what: str) -> int:
    console.print(f"  {'[green]ok[/]' if ok else '[red]FAILED[/]'} {what}", highlight=False)
    return 0 if ok else 1


def rekeyed(declaration: Path, into: Path) -> Path:
    """A copy of ``declaration`` in ``into`` whose orders table has another partition key (a change
    CD-02 must refuse: it replaces a table)."""
    text = declaration.read_text()
    at = text.index("[tables.orders]")
    head, tail = text[:at], text[at:]
    tail = tail.replace(
        'attributes = { pk = "S", sk = "S"', 'attributes = { pk = "S", sk = "S", customer = "S"', 1
    )
    tail = tail.replace('partition_key = "pk"', 'partition_key = "customer"', 1)
    path = into / "resources.toml"
    path.write_text(head + tail)
    return path


def run_infra_demo(console: Console, home: Path) -> int:
    console.rule("[bold]Infrastructure (CD-02): one declaration, provisioned and guarded")
    failures = 0
    store = StateStore(f"sqlite:///{home / 'state.sqlite3'}")
    params: dict[str, Any] = {"environment": DEMO_ENVIRONMENT}
    try:
        console.print(f"deploy infra --env {DEMO_ENVIRONMENT}: the declared resources on the local platform")
        run, steps = _run(console, params, DEMO_ENVIRONMENT, store)
        console.print(f"  {steps['apply'].detail.get('message')}", highlight=False)
        failures += _check(console, run.effective_state is RunState.SUCCEEDED, "provisioned")
        run, steps = _run(console, params, DEMO_ENVIRONMENT, store)
        message = str(steps["apply"].detail.get("message"))
        console.print(f"  again: {message}", highlight=False)
        failures += _check(console, message.startswith("no changes"), "a second run changes nothing")

        with sqlite3.connect(settings_for(DEMO_ENVIRONMENT).home / "tables.sqlite3") as conn:
            conn.execute("DELETE FROM declared_tables WHERE name = 'tickets'")
        console.print("the tickets table deleted by hand; deploy infra again:")
        run, steps = _run(console, params, DEMO_ENVIRONMENT, store)
        drifted = [c for c in steps["plan"].output["changes"] if c["drift"]]
        for c in drifted:
            console.print(f"  drift: {c['kind']}/{c['name']}: {c['drift']}", highlight=False)
        failures += _check(
            console,
            [c["name"] for c in drifted] == ["tickets"] and run.effective_state is RunState.SUCCEEDED,
            "drift reported and repaired",
        )

        with tempfile.TemporaryDirectory(prefix="demo-infra-") as tmp:
            before = Path(tmp) / "before"
            console.print(
                f"synthesizing {GUARDED} (CDK, cdk-nag inside) as it is, then with orders re-keyed ..."
            )
            cd02.synthesize({}, [GUARDED], before)
            resources = rekeyed(cd02.declaration_paths({})[0], Path(tmp))
            guarded = {"environment": GUARDED, "resources": str(resources), "against": str(before)}
            run, steps = _run(console, guarded, GUARDED, store)
            for line in steps["diff"].detail.get("diff", []):
                console.print(f"  {line}", highlight=False)
            console.print(f"  run {run.id} {run.effective_state.value}: {run.reason}", highlight=False)
            failures += _check(
                console,
                run.effective_state is not RunState.SUCCEEDED
                and steps["guard"].status.value == "failed"
                and steps["apply"].attempts == 0,
                "the destructive change refused before any AWS call",
            )
    finally:
        store.close()
    return failures
