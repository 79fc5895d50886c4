"""Engine runs started from a terminal: who asks, the executor's settings, ``run_pipeline``.

``run_pipeline(display, pipeline, params, environment=...)`` builds the named pipeline, starts a run
of it (policy checks, the (environment, target) lock, the audit log) and drives it to its end under
a ``ProgressDisplay``: what ``mangaassist deploy``, ``rollback app``, ``kb`` and ``config`` do, and
what the demo does for each of its releases. Returns the final run and its steps by name.

Who asks (``resolve_identity``), first that applies: ``MANGAASSIST_IDENTITY_TOKEN`` (a signed
identity token, ``mangaassist identity token --as NAME``), a GitHub Actions job's OIDC token
(``ACTIONS_ID_TOKEN_REQUEST_URL``), ``MANGAASSIST_IDENTITY=aws`` (the AWS caller identity), else the
free-text name (``--as``, ``MANGAASSIST_ACTOR``, the OS user), which an environment that requires
approvals refuses (``delivery.engine.people``). Also ``MANGAASSIST_LEASE_SECONDS`` (default 30)
and ``MANGAASSIST_POLL_SECONDS`` (default 1).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Sequence
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.engine import approvals, people
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
from mangaassist.platform.factory import aws_preflight, settings_for
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


def resolve_identity(name: str | None = None, store: StateStore | None = None) -> people.Actor:
    """Who asks, and how that is known (module docstring). ``name`` (``--as``) must agree with a
    verified identity when one is present: a token for alice cannot act as bob."""
    token = os.environ.get("MANGAASSIST_IDENTITY_TOKEN", "").strip()
    found: people.Actor | None = None
    if token:
        secrets_dir = (store or StateStore()).secrets_dir
        found = people.verify_token(people.load_key(secrets_dir), token).actor
    elif os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL") and os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        found = people.github_actor(
            _github_oidc_token(),
            jwks_url=os.environ.get("MANGAASSIST_GITHUB_JWKS_URL") or people.GITHUB_JWKS_URL,
            issuer=os.environ.get("MANGAASSIST_GITHUB_ISSUER") or people.GITHUB_ISSUER,
        )
    elif os.environ.get("MANGAASSIST_IDENTITY", "").strip().lower() == "aws":
        from mangaassist.platform.factory import sts_client

        found = people.aws_actor(sts_client())
    if found is None:
        return people.Actor(resolve_actor(name), "flag")
    if name and name.strip() and approvals.identity(name) != approvals.identity(found.name):
        raise people.IdentityRefused(
            f"--as {name.strip()} but the {found.source} identity says {found.name}: "
            "one cannot act as someone else"
        )
    return found


def _github_oidc_token() -> str:
    """A GitHub Actions job's OIDC token for the audience ``mangaassist`` (the job needs
    ``permissions: id-token: write``)."""
    import httpx

    url = os.environ["ACTIONS_ID_TOKEN_REQUEST_URL"]
    try:
        answer = httpx.get(
            url,
            params={"audience": people.GITHUB_AUDIENCE},
            headers={"Authorization": f"bearer {os.environ['ACTIONS_ID_TOKEN_REQUEST_TOKEN']}"},
            timeout=10,
        )
        answer.raise_for_status()
        return str(answer.json()["value"])
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise people.IdentityRefused(f"the GitHub Actions OIDC token could not be requested: {exc}") from None


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


def preflight(environment: str, store: StateStore) -> None:
    """Refuse, before a run is recorded or anything changes, to start in an aws environment that
    lacks what its runs need: the region and AWS credentials (``platform.factory.aws_preflight``),
    and the shared state database, since runners that keep runs, locks, approvals and the audit log
    apart could deploy the same thing twice (docs/production.md). Raises ``ConfigError`` naming
    every missing piece and how to provide it."""
    try:
        settings = settings_for(environment)
    except ConfigError:
        return  # an environment without platform settings (a test or demo pipeline): nothing to check
    problems = aws_preflight(settings)
    if settings.provider == "aws" and store.is_sqlite:
        problems.append(
            f"the engine's state is the local {store.display_url}: runs in {environment} keep their "
            "state in the shared PostgreSQL database: set MANGAASSIST_STATE_URL=postgresql://... "
            "(docs/production.md)"
        )
    if problems:
        raise ConfigError(
            f"environment {environment} (aws) cannot start a run, nothing was changed: " + "; ".join(problems)
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
    check_aws: bool = True,
) -> tuple[RunRecord, dict[str, StepRecord]]:
    """Start a run of ``pipeline`` built from ``params`` and drive it to its end: (run, steps by name).

    ``display`` (not entered yet) shows the run's progress; with ``announce``, it says ``run ID
    started`` once the run is recorded (with what it deploys, for CD-01 and CD-03). The run takes
    the lock of (environment, ``target``) (default: the pipeline's name) under the rules that
    ``policy.yaml`` sets for the pipeline; a pipeline of ``RUNS_AS`` runs under the lock and rules
    of the one it names. Defaults: ``resolve_identity()`` as the requester, no overrides, the default
    state store, the environment's executor settings. ``also_lock``: more targets the run holds.
    ``check_aws=False`` skips ``preflight`` (region, credentials, shared state database): only for a
    run that stops before any AWS call by construction, as the demo's CD-02 guard run in staging.
    """
    built = registry.build(pipeline, params)
    runs_as = RUNS_AS.get(pipeline, pipeline)
    policy = load_policy(None).for_run(environment, runs_as)
    if store is None:
        store = StateStore()
    if check_aws:
        preflight(environment, store)
    with display:
        executor = engine_executor(store, display, poll_seconds=poll_seconds)
        record = executor.start(
            built,
            environment=environment,
            target=target or runs_as,
            requester=resolve_identity(requester, store),
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
