"""Dry runs of a pipeline in an aws environment: ``--dry-run`` on every command that deploys.

``dry_run_pipeline`` runs the pipeline's own steps, in order, with every AWS client recording the
calls that may change something instead of making them (``platform.factory.dry_run``;
``platform.aws.dryrun`` says what counts as a change and how such a call is answered). Nothing of
the dry run is kept: it runs on a throwaway engine state (a SQLite file, its audit key and anchor in
a temporary directory, so no run, lock, approval or audit entry reaches the shared database) and a
temporary ``MANGAASSIST_HOME`` (caches, wheels, release history), all deleted at its end.

What a dry run assumes, so that the whole sequence of calls shows: the approvals the policy asks for
are given, every wait ends (a bake time, an approval, a canary judge that wants more data: the step
is recorded as "would wait" and the next one runs), and the pipeline's rollback does not run. A step
that only looks at what the steps before it changed (``Step.observes``: a verification through the
served site, a load test of the new revision) is not run; steps that do both ask
``Platform.dry_run`` and skip their looking. It
ends early at a step that fails. ``result`` says how:

- ``failed`` (exit 1): the step failed before it would change anything, or on a parameter AWS would
  refuse: a missing setting, a gate that fails on what it read; the deploy would fail the same way.
- ``ends at a wait`` (exit 0): the step polls AWS for a change the dry run did not make
  (``DryRunWait``); what follows depends on AWS acting on the calls above.
- ``ends after changes`` (exit 0): the step failed after calls that would change something, most
  often reading back what one of them would have created (a config version, a stack's change set),
  which a dry run cannot; the reason is shown as it was raised.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.engine.model import StepOutcome, StepStatus
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import registry
from mangaassist.platform import factory
from mangaassist.platform.factory import settings_for
from mangaassist.views.progress import ProgressDisplay
from mangaassist.views.runs import RUNS_AS, engine_executor, resolve_identity

_SCRATCH_ENV = (
    "MANGAASSIST_HOME",
    "MANGAASSIST_STATE_URL",
    "MANGAASSIST_AUDIT_KEY",
    "MANGAASSIST_AUDIT_KEY_FILE",
    "MANGAASSIST_AUDIT_ANCHOR",
)
WAIT_STOP = "DryRunWait"
INVALID = "ParamValidationError"


@contextmanager
def _scratch(directory: Path) -> Iterator[None]:
    """The engine's state, keys, anchor and home in ``directory`` for the dry run's duration."""
    saved = {name: os.environ.get(name) for name in _SCRATCH_ENV}
    os.environ["MANGAASSIST_HOME"] = str(directory / "home")
    os.environ["MANGAASSIST_STATE_URL"] = f"sqlite:///{directory / 'state.sqlite3'}"
    os.environ["MANGAASSIST_AUDIT_KEY_FILE"] = str(directory / "audit.key")
    for name in ("MANGAASSIST_AUDIT_KEY", "MANGAASSIST_AUDIT_ANCHOR"):
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _dry_step(step: Step, record: Any) -> Step:
    def run(ctx: StepContext) -> Outcome:
        record.step = step.name
        if step.observes:
            return Outcome.done(detail={"dry_run": "not run: it looks at what the steps before changed"})
        outcome = step.run(ctx)
        if outcome.kind is not StepOutcome.WAITING:
            return outcome
        waits_for = outcome.wait_for.value if outcome.wait_for is not None else "time"
        return Outcome.done(detail={"dry_run": f"would wait ({waits_for}): {outcome.reason}"})

    return replace(step, run=run)


def dry_run_pipeline(
    pipeline: str, params: dict[str, Any], *, environment: str, display: ProgressDisplay | None = None
) -> dict[str, Any]:
    """Dry-run ``pipeline`` built from ``params`` in the aws ``environment`` (module docstring): the
    plan as a JSON-ready document (``steps``, ``calls`` in order, ``result``)."""
    settings = settings_for(environment)
    problems = [p for p in factory.aws_preflight(settings) if "credentials" not in p]
    if settings.provider != "aws":
        problems.append(
            f"environment {environment} runs on provider {settings.provider!r}: --dry-run shows the AWS "
            "calls of an aws environment (staging, prod); a local run shows its steps as it goes"
        )
    if problems:
        raise ConfigError(f"environment {environment}: cannot dry-run: " + "; ".join(problems))
    runs_as = RUNS_AS.get(pipeline, pipeline)
    policy = load_policy(None).for_run(environment, runs_as)
    assumed = replace(policy, approvals=0, windows=(), freezes=(), max_canary_weight_before_approval=100)
    with (
        tempfile.TemporaryDirectory(prefix="mangaassist-dry-run-") as tmp,
        _scratch(Path(tmp)),
        factory.dry_run(settings) as record,
    ):
        built = registry.build(pipeline, params)
        dry = Pipeline(
            name=built.name,
            steps=tuple(_dry_step(s, record) for s in built.steps),
            rollback=None,
            description=built.description,
            params=built.params,
            inline_approval=built.inline_approval,
            restores=built.restores,
            close=built.close,
        )
        store = StateStore()
        try:
            executor = engine_executor(store, display, poll_seconds=0.01)
            started = executor.start(
                dry,
                environment=environment,
                target=runs_as,
                requester=resolve_identity(None, store),
                policy=assumed,
                overrides={},
            )
            final = executor.drive(started.id, dry)
            with store.transaction() as conn:
                steps = store.steps(conn, final.id)
        finally:
            store.engine.dispose()
    stopped = next((s for s in steps if s.status is StepStatus.FAILED), None)
    result = "complete"
    if stopped is not None:
        reason = stopped.reason or ""
        changed = any(c.step == stopped.name for c in record.changes)
        if reason.startswith(WAIT_STOP):
            result = "ends at a wait"
        elif changed and not reason.startswith(INVALID):
            result = "ends after changes"
        else:
            result = "failed"
    return {
        "dry_run": True,
        "pipeline": pipeline,
        "environment": environment,
        "params": params,
        "reads": "made"
        if record.reads_made
        else "not made (no AWS credentials): answered as an environment whose CD-02 resources hold "
        "nothing of the pipeline's yet",
        "approvals_required": policy.approvals,
        "result": result,
        "stopped_at": stopped.name if stopped is not None else None,
        "reason": (stopped.reason if stopped is not None else None),
        "steps": [
            {
                "name": s.name,
                "status": s.status.value,
                "note": s.detail.get("dry_run"),
                "reason": s.reason,
            }
            for s in steps
        ],
        "changes": len(record.changes),
        "calls": record.as_list(),
    }
