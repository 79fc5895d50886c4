"""Engine runs started from a terminal: who asks, the executor's settings, ``run_pipeline``.

``run_pipeline(display, pipeline, params, environment=...)`` builds the named pipeline, starts a run
of it (policy checks, the (environment, target) lock, the audit log) and drives it to its end under
a ``ProgressDisplay``: what ``mangaassist deploy``, ``rollback app``, ``kb`` and ``config`` do, and
what the demo does for each of its releases. Returns the final run and its steps by name.

Environment: ``MANGAASSIST_ACTOR`` (who asks; default: the OS user), ``MANGAASSIST_LEASE_SECONDS``
(default 30) and ``MANGAASSIST_POLL_SECONDS`` (default 1).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Sequence
from typing import Any

from mangaassist.delivery.engine.errors import BadRequest
from mangaassist.delivery.engine.model import RunRecord, StepRecord
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Executor, Reporter
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import app as cd01
from mangaassist.delivery.pipelines import kb, registry
from mangaassist.delivery.pipelines import migration as cd07
from mangaassist.delivery.pipelines import model as cd03
from mangaassist.delivery.pipelines import monitoring as cd08
from mangaassist.views.progress import ProgressDisplay, say

DESCRIBE: dict[str, Callable[[dict[str, Any]], str]] = {cd01.NAME: cd01.describe, cd03.NAME: cd03.describe}
"""The pipelines whose run is announced with a description of what it deploys."""

RUNS_AS: dict[str, str] = {
    kb.PROMOTE: kb.NAME,
    cd08.ROLLBACK: cd08.NAME,
    cd07.CONTRACT: cd07.NAME,
    cd07.ROLLBACK: cd07.NAME,
}
"""Pipelines that run under another one's lock and policy: moving ``kb-live`` by hand (``kb promote``,
``kb rollback``) waits for a knowledge-base build, and a build for it; so does a monitoring rollback
for a monitoring deploy, and a migration's contract or rollback for a migration."""


def resolve_actor(name: str | None = None) -> str:
    """Who asks: ``name``, else ``MANGAASSIST_ACTOR``, else the OS user (``unknown`` if there is none)."""
    chosen = (name or os.environ.get("MANGAASSIST_ACTOR") or "").strip()
    if chosen:
        return chosen
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def seconds_env(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name`` (``default`` if unset)."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise BadRequest(f"{name}={raw!r}: expected a positive number of seconds")
    return value


def engine_executor(
    store: StateStore, reporter: Reporter | None = None, *, poll_seconds: float | None = None
) -> Executor:
    """An executor on ``store`` with the lease and poll settings of the environment (``poll_seconds``
    instead of ``MANGAASSIST_POLL_SECONDS`` if given)."""
    return Executor(
        store,
        lease_seconds=seconds_env("MANGAASSIST_LEASE_SECONDS", 30.0),
        poll_seconds=seconds_env("MANGAASSIST_POLL_SECONDS", 1.0) if poll_seconds is None else poll_seconds,
        reporter=reporter,
    )


def run_pipeline(
    display: ProgressDisplay,
    pipeline: str,
    params: dict[str, Any],
    *,
    environment: str,
    target: str | None = None,
    requester: str | None = None,
    overrides: dict[str, str] | None = None,
    store: StateStore | None = None,
    poll_seconds: float | None = None,
    announce: bool = False,
    also_lock: Sequence[str] = (),
) -> tuple[RunRecord, dict[str, StepRecord]]:
    """Start a run of ``pipeline`` built from ``params`` and drive it to its end: (run, steps by name).

    ``display`` (not entered yet) shows the run's progress; with ``announce``, it says ``run ID
    started`` once the run is recorded (with what it deploys, for CD-01 and CD-03). The run takes
    the lock of (environment, ``target``) (default: the pipeline's name) under the rules that
    ``policy.yaml`` sets for the pipeline; a pipeline of ``RUNS_AS`` runs under the lock and rules
    of the one it names. Defaults: ``resolve_actor()`` as the requester, no overrides, the default
    state store, the environment's executor settings. ``also_lock``: more targets the run holds.
    """
    built = registry.build(pipeline, params)
    runs_as = RUNS_AS.get(pipeline, pipeline)
    policy = load_policy(None).for_run(environment, runs_as)
    if store is None:
        store = StateStore()
    with display:
        executor = engine_executor(store, display, poll_seconds=poll_seconds)
        record = executor.start(
            built,
            environment=environment,
            target=target or runs_as,
            requester=requester or resolve_actor(),
            policy=policy,
            overrides=dict(overrides or {}),
            also_lock=also_lock,
        )
        if announce:
            describe = DESCRIBE.get(pipeline)
            say(display.stream, f"run {record.id} started" + (f": {describe(params)}" if describe else ""))
        final = executor.drive(record.id, built)
    with store.transaction() as conn:
        steps = {s.name: s for s in store.steps(conn, final.id)}
    return final, steps
