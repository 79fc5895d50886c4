"""CD-01, application deployment: a service (the chatbot) from a source tree to 100% of its traffic.

The runbook, one engine step each (``build``):

1. ``build``: a wheel of the service from the source tree (or the given artifact), stored by sha256;
   if that release (digest and ``--set-env``) is already live, say so and do nothing else.
2. ``test``: the environment's test command in the source tree. A failure stops the run with
   nothing deployed.
   ``scan``: on aws, the release's container images (``ECS_IMAGE``, ``LAMBDA_IMAGE``) judged on
   their vulnerability findings against ``scan_limits`` before anything is deployed
   (``pipelines/image_scan.py``);
   elsewhere done, saying why it did not scan.
3. ``candidate``: the new revision at 0%, at the stable revision's size; smoke tests through the
   router with the revision-pin header (health, one chat per intent with the expected intent).
4. ``latency-gate``: bounded load pinned to the candidate; its p99 must be within the budget, and
   its failures few enough for an acceptable error rate (``delivery.analysis.gates``): a grossly
   broken candidate stops here, before any user reaches it.
   ``answers``: a sample of the golden set (``ml/answers``, ``answers_sample`` questions, default
   30) over HTTP pinned to the candidate and to the stable revision
   (``pipelines/answers.py``); intent accuracy or correctness more than ``answers_tolerance``
   below stable's (and significant by a sign test on the paired turns), or more fabricated
   prices, stock or dates, stop the run here.
5. one step per rollout phase (``rollout.strategies``), run by ``rollout.phases`` (shared with
   CD-03's model canary): shift the weight, then let the executor (``rollout.executor``) read
   what both revisions served since the shift and consult the anytime-valid ``SequentialJudge``.
   PASS at the minimum sample moves on, INCONCLUSIVE extends the phase, FAIL at any moment puts
   all traffic back on the stable revision at once and fails the step with the verdict's numbers;
   the engine then runs ``_rollback`` (retire the candidate) and the run ends ROLLED_BACK.
6. ``promote``: once the old revision has drained (no request for ``drain_idle_s``), retire it;
   the output records the release: digests, revisions, who, when and every verdict.

Every change to the platform goes through ``ctx.effect`` (deploy, shift, restore, retire), so a run
killed at any point and resumed with ``mangaassist runs resume`` never applies one twice; a phase
resumed after a kill keeps judging from the cursor its shift recorded. Started by
``mangaassist deploy app`` and ``mangaassist rollback app`` (``cli/deploy_cmds.py``); rebuilt from
its params by ``runs resume``.

One run releases one service of the environment: the deploy setting ``service`` (the file's, default
``chatbot``, or the run's ``service`` param, ``deploy app --service``). A ``service`` param the
environment does not declare (``[environments.ENV.services.NAME]``) is refused when the run is built,
before anything is recorded (``check_service``). Each service keeps its own ledger under
``$MANGAASSIST_HOME/releases/ENV/SERVICE/``: what each revision runs (``REVISION.json``, for a later
rollback or baseline) and its promoted releases (``history.jsonl``, what ``rollback app --service``
goes back from). The environment's default service also reads the ledger kept before ledgers were
per service (``releases/ENV/``), and writes only its own. Every CD-01 run of an environment takes
the one (environment, CD-01) lock, whatever its service: a run started while another service's run
holds it fails at once naming the holder (``LockHeld``), so services are released one at a time.

Params: ``environment``, ``service``, ``strategy``, ``source`` (a project with ``pyproject.toml``,
or a package tree) or ``artifact`` (a ``.whl`` or ``.tar``), ``set_env`` (dict), ``skip_tests`` (a
rollback to a release that passed them), ``smoke`` (``[[intent, message], ...]``; default one per intent),
``note``, the ``answers_*`` params of ``pipelines/answers.py``, and any deploy setting
(``rollout.settings``) to override the file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mangaassist.core.artifact import Artifact
from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.gates import pinned_load_gate
from mangaassist.delivery.engine.outputs import StepOutput
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext
from mangaassist.delivery.pipelines.answers import GateSettings, http_gate
from mangaassist.delivery.pipelines.gating import gate_outcome
from mangaassist.delivery.pipelines.image_scan import scan_release
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.delivery.rollout.build import build_release, import_release
from mangaassist.delivery.rollout.load import CONVERSATIONS, SMOKE_CASES, run_load
from mangaassist.delivery.rollout.phases import (
    Canary,
    alerts_block,
    deploy_ready,
    phase_steps,
    restore_and_retire,
    retire,
    retire_after_drain,
    run_phase,
    split_traffic,
    stable_of,
)
from mangaassist.delivery.rollout.settings import DeploySettings, run_settings
from mangaassist.delivery.rollout.strategies import Phase, RolloutPlan, Strategy
from mangaassist.platform.compute import Compute, Pin, Revision, RevisionHealth, ServiceStatus
from mangaassist.platform.settings import PlatformSettings, load_settings

NAME = "CD-01"


@dataclass(frozen=True)
class Built(StepOutput):
    """What ``build`` hands the later steps: the release and the stable revision it replaces."""

    release: dict[str, Any]
    """``rollout.build.Release.as_dict()``: kind, path and digest of the artifact (and the wheel's)."""
    release_id: str
    """The release is its code and its ``--set-env``: the candidate is named after this."""
    digest: str
    set_env: dict[str, str]
    stable: str
    """The revision that takes all new conversations now ("" on a first release)."""
    stable_digest: str
    stable_replicas: int
    """The stable revision's size, which the candidate gets (a first release: the service's
    ``replicas``)."""
    candidate: str
    baseline_cursor: int
    """The stats cursor before the rollout: where the first pre-switch baseline starts."""
    already_live: bool
    """The release already runs as the stable revision: every later step does nothing."""
    first: bool = False
    """The service had no revision (an environment CD-02 has just made): the candidate becomes its
    only revision and takes all of its traffic once ready (the service answered 503 before); the
    pinned gates decide whether it stays, and a failure retires it as the last revision, leaving
    the service empty again. Nothing is compared or shifted: there is no stable revision."""

    @property
    def baseline_name(self) -> str:
        """The fresh copy of the stable release a canary is judged against."""
        return f"{self.candidate}-base"


PINNED_ERROR_ALPHA = 0.001
"""False-failure probability of the pinned load's error gate (``delivery.analysis.gates``)."""


# -- the runbook ---------------------------------------------------------------------------------


def build(params: dict[str, Any]) -> Pipeline:
    """The CD-01 pipeline for these params (deterministic: ``runs resume`` rebuilds it)."""
    settings = _settings(params)
    if params.get("service") is not None:  # a service the environment does not declare: refused here
        check_service(settings.environment, settings.service)
    plan = _plan(params, settings)
    GateSettings.from_params(params)  # bad answers_* params fail before the run starts
    scope = RunScope(settings.environment)
    steps = [
        Step("build", scope.bind(_build), "build the wheel and store it by digest", changes=False),
        Step("test", scope.bind(_test), "run the test gate", changes=False),
        Step("scan", scope.bind(_scan), "the images' vulnerability findings (aws)", changes=False),
        Step("candidate", scope.bind(_candidate), "start the candidate at 0% and smoke-test it"),
        Step("latency-gate", scope.bind(_latency_gate), "pinned load test: latency budget and error rate"),
        Step("answers", scope.bind(_answers), "golden-set answer quality: candidate against stable"),
        *(
            [
                Step(
                    "baseline",
                    scope.bind(_baseline),
                    "start a fresh copy of the stable release to judge against",
                )
            ]
            if _uses_baseline(plan, settings)
            else []
        ),
        *phase_steps(plan, lambda phase: scope.bind(_run_phase, phase, plan)),
        Step("promote", scope.bind(_promote), "retire the old revision after its drain"),
    ]
    return Pipeline(
        NAME,
        tuple(steps),
        rollback=scope.bind(_rollback),
        description=f"deploy the app ({plan.describe()})",
        params=params,
        close=scope.close,
        inline_approval=True,  # the rollout phases ask before the traffic passes the policy's limit
    )


def _build(scope: RunScope, ctx: StepContext) -> Outcome:
    p = scope.settings
    compute = scope.compute()
    settings = _settings(ctx.params)
    store = p.home / "artifacts"
    if ctx.params.get("artifact"):
        release = import_release(Path(ctx.params["artifact"]), store)
    else:
        release = build_release(Path(ctx.params.get("source") or p.root), store)
    set_env = {str(k): str(v) for k, v in (ctx.params.get("set_env") or {}).items()}
    release_id = _release_id(release.artifact.digest, set_env)
    status = _service_status(compute, settings.service)
    if not _has_revisions(status):
        ctx.progress(
            f"first release of {settings.service}: it has no revision yet, so the candidate takes all of "
            "its traffic once ready; the pinned gates decide whether it stays"
        )
        built = Built(
            release=release.as_dict(),
            release_id=release_id,
            digest=release.artifact.digest,
            set_env=set_env,
            stable="",
            stable_digest="",
            stable_replicas=p.services[settings.service].replicas,
            candidate=f"rel-{release_id[:10]}",
            baseline_cursor=scope.metrics().cursor(settings.service),
            already_live=False,
            first=True,
        )
        detail = {"digest": release.artifact.digest, "kind": release.kind, "first_release": True}
        return Outcome.done(built.as_output(), detail=detail)
    assert status is not None  # _has_revisions
    stable_status = stable_of(status)
    if stable_status is None:
        return split_traffic(compute, settings.service, " (`mangaassist rollback app`)")
    stable = stable_status.name
    built = Built(
        release=release.as_dict(),
        release_id=release_id,
        digest=release.artifact.digest,
        set_env=set_env,
        stable=stable,
        stable_digest=stable_status.digest,
        stable_replicas=stable_status.replicas,
        candidate=f"rel-{release_id[:10]}",
        baseline_cursor=scope.metrics().cursor(settings.service),
        already_live=_is_live(release_id, stable, stable_status.digest),
    )
    if built.already_live:
        ctx.progress(f"release {release.artifact.short} is already live as {stable}: nothing to do")
        detail = {"already_live": True, "digest": release.artifact.digest}
        return Outcome.done(built.as_output(), detail=detail)
    return Outcome.done(built.as_output(), detail={"digest": release.artifact.digest, "kind": release.kind})


def _service_status(compute: Compute, service: str) -> ServiceStatus | None:
    """The service's status; None for a service the provider does not know (an account where CD-02
    made the service's place and nothing runs yet)."""
    try:
        return compute.status(service)
    except NotFoundError:
        return None


def _has_revisions(status: ServiceStatus | None) -> bool:
    """Whether the service has a revision that is neither retired nor draining."""
    if status is None:
        return False
    # a revision being retired (draining) is on its way out: a first release's deploy says so
    return any(r.health not in (RevisionHealth.RETIRED, RevisionHealth.DRAINING) for r in status.revisions)


def _first(ctx: StepContext) -> bool:
    return "build" in ctx.outputs and Built.of(ctx, "build").first


FIRST_RELEASE = "first release: the service had no revision, so there is no stable revision to {what}"


def _test(scope: RunScope, ctx: StepContext) -> Outcome:
    if _skip(ctx):
        return Outcome.done(detail={"skipped": "already live"})
    if ctx.params.get("skip_tests"):
        return Outcome.done(detail={"skipped": "a rollback to a release that passed its tests"})
    settings = _settings(ctx.params)
    p = scope.settings
    source = Path(ctx.params.get("source") or p.root)
    cwd = source if (source / "pyproject.toml").is_file() else p.root
    argv = settings.test_argv(sys.executable)
    started = time.monotonic()
    ctx.progress(f"running {' '.join(argv)} in {cwd}")
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Outcome.failed(f"test gate could not run {argv[0]}: {exc}")
    took = time.monotonic() - started
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    numbers = {"exit_code": float(proc.returncode), "seconds": round(took, 2)}
    if proc.returncode != 0:
        return Outcome.failed(
            f"tests failed (exit {proc.returncode}): {' | '.join(tail)}",
            verdict=Verdict.FAIL,
            numbers=numbers,
            detail={"command": argv},
        )
    return Outcome.done(verdict=Verdict.PASS, numbers=numbers, detail={"command": argv, "tail": tail})


def _scan(scope: RunScope, ctx: StepContext) -> Outcome:
    if _skip(ctx):
        return Outcome.done(detail={"skipped": "already live"})
    b = Built.of(ctx, "build")
    return scan_release(scope, ctx, b.set_env, b.candidate)


def _candidate(scope: RunScope, ctx: StepContext) -> Outcome:
    if _skip(ctx):
        return Outcome.done(detail={"skipped": "already live"})
    p = scope.settings
    settings = _settings(ctx.params)
    blocked = alerts_block(ctx, scope.metrics(), settings.service)
    if blocked is not None:
        return blocked
    b = Built.of(ctx, "build")
    compute = scope.compute()
    release = b.release
    revision = Revision(
        b.candidate, _artifact(release), p.services[settings.service].app, dict(b.set_env), b.stable_replicas
    )
    _note_revision(
        p,
        settings.service,
        revision.name,
        {
            "revision": revision.name,
            "digest": release["digest"],
            "artifact": release["path"],
            "set_env": b.set_env,
        },
    )
    # the revision is named after the release, so a repeated deploy is the same revision
    timeout_s = p.services[settings.service].ready_timeout_s
    failed = deploy_ready(ctx, compute, settings.service, revision, timeout_s, effect="deploy")
    if failed is not None:
        return failed
    where = "its only revision, with all of its traffic" if b.first else "ready at 0%"
    ctx.progress(f"{revision.name} {where}; smoke tests through the router")
    failures, checks = _smoke(compute, settings.service, revision.name, ctx.params.get("smoke"))
    numbers = {"checks": float(len(checks)), "failed": float(len(failures))}
    if failures:
        return Outcome.failed(
            "smoke test failed: " + "; ".join(failures),
            verdict=Verdict.FAIL,
            numbers=numbers,
            detail={"checks": checks},
        )
    return Outcome.done(
        {"candidate": revision.name}, verdict=Verdict.PASS, numbers=numbers, detail={"checks": checks}
    )


def _latency_gate(scope: RunScope, ctx: StepContext) -> Outcome:
    if _skip(ctx):
        return Outcome.done(detail={"skipped": "already live"})
    settings = _settings(ctx.params)
    compute = scope.compute()
    candidate = Built.of(ctx, "build").candidate
    ctx.progress(f"{settings.load_rps:g} req/s for {settings.load_s:g}s pinned to {candidate}")
    pin = compute.pin(settings.service, candidate)
    _warm(pin, settings)  # a fresh process's first requests pay for lazy initialisation: not counted
    report = run_load(
        pin.url,
        rps=settings.load_rps,
        duration_s=settings.load_s,
        sessions=5,
        headers=pin.headers,
        auth=pin.auth,
        feedback_share=0.0,
        remote=True,  # the environment's own pin: on aws, the ALB or the revision's function URL
    )
    result = pinned_load_gate(
        requests=report.requests,
        succeeded=report.ok,
        failed=report.failed,
        p99_ms=_num(report.quantile(0.99)),
        budget_ms=settings.latency_budget_ms,
        error_rate=settings.pinned_error_rate,
        alpha=PINNED_ERROR_ALPHA,
        candidate_version=candidate,
    ).with_numbers(p50_ms=_num(report.quantile(0.5)), p95_ms=_num(report.quantile(0.95)))
    return gate_outcome(
        result,
        output=result.numbers(),
        failure="; ".join(result.reasons) + f"; no user reached {candidate}",
    )


def _answers(scope: RunScope, ctx: StepContext) -> Outcome:
    """A sample of the golden set (``ml/answers``) over HTTP, pinned to the candidate and to the
    stable revision: worse intents or correctness than stable's (beyond ``answers_tolerance``), or
    more fabricated prices, stock or dates, stop the release before any user reaches it."""
    if _skip(ctx):
        return Outcome.done(detail={"skipped": "already live"})
    answers = GateSettings.from_params(ctx.params)
    if _first(ctx):
        return Outcome.done(detail={"skipped": FIRST_RELEASE.format(what="compare the answers with")})
    if answers.sample == 0:
        return Outcome.done(detail={"skipped": "answers_sample=0"})
    settings = _settings(ctx.params)
    compute = scope.compute()
    b = Built.of(ctx, "build")
    ctx.progress(f"golden-set sample of {answers.sample} on {b.candidate} and {b.stable}")
    result = http_gate(
        answers,
        compute.pin(settings.service, b.candidate),
        compute.pin(settings.service, b.stable),
        scope.settings.home,
        candidate=b.candidate,
        live=b.stable,
    )
    return gate_outcome(
        result,
        output=result.numbers(),
        failure="answer quality: " + "; ".join(result.reasons) + f"; no user reached {b.candidate}",
    )


def _uses_baseline(plan: RolloutPlan, settings: DeploySettings) -> bool:
    """A canary judged below 100% gets a baseline revision (``canary_baseline``, on by default)."""
    return settings.canary_baseline and plan.strategy is Strategy.CANARY


def _baseline(scope: RunScope, ctx: StepContext) -> Outcome:
    """A fresh copy of the stable release (its artifact and env), warm and healthy at 0%.

    In every canary phase below 100% it gets the candidate's share and the candidate is judged
    against it: two revisions with the same load (``rollout.phases.Canary.baseline``)."""
    if _skip(ctx):
        return Outcome.done({"baseline": None}, detail={"skipped": "already live"})
    if _first(ctx):
        return Outcome.done({"baseline": None}, detail={"skipped": FIRST_RELEASE.format(what="copy")})
    p = scope.settings
    settings = _settings(ctx.params)
    b = Built.of(ctx, "build")
    compute = scope.compute()
    path = p.home / "artifacts" / f"{b.stable_digest}.tar"
    if not path.is_file():
        why = f"no artifact of {b.stable} at {path}: the candidate is judged against {b.stable}"
        ctx.progress(why)
        return Outcome.done({"baseline": None}, detail={"skipped": why})
    revision = Revision(
        b.baseline_name,
        Artifact(path, b.stable_digest),
        p.services[settings.service].app,
        dict((revision_record(p, settings.service, b.stable) or {}).get("set_env", {})),
        b.stable_replicas,
    )
    timeout_s = p.services[settings.service].ready_timeout_s
    failed = deploy_ready(ctx, compute, settings.service, revision, timeout_s, effect="deploy-baseline")
    if failed is not None:
        return failed
    if settings.warmup_s > 0:  # the same lazy initialisation the candidate paid in the latency gate
        _warm(compute.pin(settings.service, revision.name), settings)
    return Outcome.done({"baseline": revision.name}, detail={"baseline": revision.name})


def _promote(scope: RunScope, ctx: StepContext) -> Outcome:
    b = Built.of(ctx, "build")
    if b.already_live:
        return Outcome.done(
            {"already_live": True, "revision": b.stable, "digest": b.digest},
            detail={"already_live": True},
        )
    p = scope.settings
    settings = _settings(ctx.params)
    plan = _plan(ctx.params, settings)
    stable, candidate = b.stable, b.candidate
    waited = 0.0
    if not b.first:  # a first release has nothing to drain or retire
        last = ctx.outputs[plan.phases[-1].name]
        canary = _canary(scope, ctx)
        waiting, waited = retire_after_drain(ctx, canary, last, settings.drain_idle_s, settings.drain_max_s)
        if waiting is not None:
            return waiting
    verdicts = {p.name: ctx.outputs[p.name].get("verdict") for p in plan.phases}
    record = {
        "service": settings.service,
        "digest": b.digest,
        "wheel_digest": b.release.get("wheel_digest"),
        "revision": candidate,
        "set_env": b.set_env,
        "artifact": b.release["path"],
        # a first release has no previous one: None (``rollback app`` then refuses, saying so)
        "previous_revision": stable or None,
        "previous_digest": b.stable_digest or None,
        "previous_artifact": str(p.home / "artifacts" / f"{b.stable_digest}.tar") if stable else None,
        "previous_set_env": (revision_record(p, settings.service, stable) or {}).get("set_env", {})
        if stable
        else {},
        "first_release": b.first,
        "requester": ctx.run.requester,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "strategy": plan.strategy.value,
        "verdicts": verdicts,
        "drained_after_s": round(waited, 3),
    }
    ctx.effect("record", lambda key: _append_history(p, settings.service, record, key))
    return Outcome.done(record, detail={"release": record}, verdict=Verdict.PASS)


def _rollback(scope: RunScope, ctx: StepContext) -> Outcome:
    """All traffic to the stable revision (if it is not there yet), then retire the candidate."""
    if "build" not in ctx.outputs or Built.of(ctx, "build").already_live:
        return Outcome.done(detail={"nothing": "no candidate was deployed"})
    b = Built.of(ctx, "build")
    settings = _settings(ctx.params)
    if b.first:  # nothing to go back to: the service is left with no revision, as it was
        compute = scope.compute()
        if not _has_revisions(_service_status(compute, settings.service)):
            return Outcome.done(detail={"nothing": "no candidate was deployed", "first_release": True})
        try:
            retired = ctx.effect(
                "retire-last", lambda _k: retire(compute, settings.service, b.candidate, last=True)
            )
        except ConfigError as exc:  # NotSupportedError: a provider that cannot leave it empty
            return Outcome.failed(f"the first release's candidate {b.candidate} stays: {exc}")
        return Outcome.done(detail={"retired": b.candidate, "first_release": True, "status": retired})
    # the baseline's name is the candidate's plus "-base": retired if it lives, even when its step
    # died after the deploy and before recording it
    return restore_and_retire(ctx, scope.compute(), settings.service, b.stable, b.candidate, b.baseline_name)


# -- a rollout phase -------------------------------------------------------------------------------


def _run_phase(scope: RunScope, ctx: StepContext, phase: Phase, plan: RolloutPlan) -> Outcome:
    if _skip(ctx):
        return Outcome.done(detail={"skipped": "already live"})
    if _first(ctx):
        what = "shift traffic from or judge against: the candidate has taken all of it since it was ready"
        return Outcome.done(detail={"skipped": FIRST_RELEASE.format(what=what)})
    rollback_of = ctx.params.get("rollback_of")  # going back to a release that was live: no judging
    canary = _canary(scope, ctx, f"rollback of {rollback_of}" if rollback_of else None)
    return run_phase(ctx, phase, plan, canary, scope.phases)


def _canary(scope: RunScope, ctx: StepContext, not_judged: str | None = None) -> Canary:
    b = Built.of(ctx, "build")
    settings = _settings(ctx.params)
    return Canary(
        scope.compute(),
        scope.metrics(),
        settings.service,
        b.stable,
        b.candidate,
        settings.alpha,
        settings.judge_min_requests,
        b.baseline_cursor,
        not_judged,
        (ctx.outputs.get("baseline") or {}).get("baseline"),
    )


# -- helpers ---------------------------------------------------------------------------------------


def _settings(params: dict[str, Any]) -> DeploySettings:
    return run_settings(params)


def settings_for(environment: str, service: str | None = None) -> DeploySettings:
    """The deploy settings of ``environment`` (``mangaassist.toml``), for the CLI; ``service`` (a
    ``--service`` option) over the file's, refused unless the environment declares it."""
    if service is None:
        return _settings({"environment": environment})
    settings = _settings({"environment": environment, "service": service})
    check_service(environment, settings.service)
    return settings


def run_service(params: dict[str, Any]) -> str:
    """The service a CD-01 run with these params releases (its ``service`` param, else the file's)."""
    return _settings(params).service


def declared_services(environment: str) -> dict[str, str | None]:
    """The services ``environment`` declares (``[environments.ENV.services.NAME]``), each with its
    ``compute`` kind (None: the provider's default): what CD-01 can release there."""
    return {name: s.compute for name, s in load_settings(environment).services.items()}


def check_service(environment: str, service: str) -> None:
    """``ConfigError`` naming ``service`` and ``environment`` unless the environment declares it."""
    declared = declared_services(environment)
    if service not in declared:
        raise ConfigError(
            f"service {service!r} is not declared in environment {environment} "
            f"(declared: {', '.join(sorted(declared)) or 'none'}; a service CD-01 releases is a "
            f"[environments.{environment}.services.{service}] table in mangaassist.toml; a run that "
            "releases a service can be resumed or aborted only while the service is declared, since "
            "where it runs, and so how to roll it back, comes from that table)"
        )


def _plan(params: dict[str, Any], settings: DeploySettings) -> RolloutPlan:
    return settings.plan(params.get("strategy"))


def _skip(ctx: StepContext) -> bool:
    return "build" in ctx.outputs and Built.of(ctx, "build").already_live


def _release_id(digest: str, set_env: dict[str, str]) -> str:
    """A release is its code and the environment it runs with: the same digest with another
    ``--set-env`` (a fault drill, a flag) is another release."""
    return hashlib.sha256(json.dumps([digest, sorted(set_env.items())]).encode()).hexdigest()


def _is_live(release_id: str, stable: str, stable_digest: str) -> bool:
    """Whether the stable revision runs this release: ours are named after their release id; any
    other (``r1`` from ``mangaassist up``) runs its artifact with no extra environment."""
    if stable.startswith("rel-"):
        return release_id.startswith(stable[len("rel-") :])
    return release_id == _release_id(stable_digest, {})


def _ledger(p: PlatformSettings, service: str) -> Path:
    """The service's ledger: ``releases/ENV/SERVICE/`` under the platform's home."""
    if not service or "/" in service or service in (".", ".."):
        raise ConfigError(f"service {service!r}: not a name a ledger can be kept under")
    return p.home / "releases" / p.environment / service


def _ledgers(p: PlatformSettings, service: str) -> list[Path]:
    """Where the service's records are read from, oldest first: the environment's ledger from before
    ledgers were per service (``releases/ENV/``), for the environment's default service only (the
    file's deploy setting ``service``: the one every CD-01 run released then), then its own."""
    try:
        default = settings_for(p.environment).service
    except ConfigError:  # no readable deploy settings: the default's default
        default = DeploySettings.service
    own = _ledger(p, service)
    return [own.parent, own] if service == default else [own]


def _note_revision(p: PlatformSettings, service: str, revision: str, record: dict[str, Any]) -> None:
    """What a revision runs (artifact, env), so a later rollback can start it again."""
    path = _ledger(p, service) / f"{revision}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))


def revision_record(p: PlatformSettings, service: str, revision: str) -> dict[str, Any] | None:
    """What ``revision`` of ``service`` runs (``_note_revision``), or None if it was never noted."""
    for ledger in reversed(_ledgers(p, service)):  # the service's own first
        try:
            data: dict[str, Any] = json.loads((ledger / f"{revision}.json").read_text())
        except (OSError, ValueError):
            continue
        return data
    return None


def releases(p: PlatformSettings, service: str) -> list[dict[str, Any]]:
    """Promoted releases of ``service`` in the environment, oldest first (``history.jsonl``; the
    default service's from before ledgers were per service first)."""
    out: list[dict[str, Any]] = []
    for ledger in _ledgers(p, service):
        try:
            lines = (ledger / "history.jsonl").read_text().splitlines()
        except OSError:
            continue
        out.extend(json.loads(line) for line in lines if line.strip())
    return out


def _append_history(p: PlatformSettings, service: str, record: dict[str, Any], key: str) -> None:
    if any(r.get("key") == key for r in releases(p, service)):
        return  # the effect's idempotency key: a resumed promote does not record twice
    path = _ledger(p, service) / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({**record, "key": key}) + "\n")


def _artifact(release: dict[str, Any]) -> Artifact:
    return Artifact(Path(release["path"]), str(release["digest"]))


def _smoke(
    compute: Compute, service: str, revision: str, cases: Any, retries: int = 2
) -> tuple[list[str], list[dict[str, Any]]]:
    """Health and one chat per intent, pinned to ``revision``. A 5xx is retried ``retries`` times:
    the smoke test asks whether the revision works at all; error *rates* are the judge's job."""
    place = compute.pin(service, revision)
    url, pin = place.url.rstrip("/"), dict(place.headers)
    smoke = [(str(i), str(m)) for i, m in cases] if cases else list(SMOKE_CASES)
    failures: list[str] = []
    checks: list[dict[str, Any]] = []
    with httpx.Client(timeout=30.0, auth=place.auth) as client:
        try:
            health = client.get(f"{url}/healthz", headers=pin)
            ok = health.status_code == 200
        except httpx.HTTPError as exc:
            ok, health = False, None
            failures.append(f"healthz: {exc}")
        checks.append({"check": "healthz", "ok": ok, "status": health.status_code if health else 0})
        if health is not None and not ok:
            failures.append(f"healthz answered {health.status_code}")
        for intent, message in smoke:
            session = f"smoke-{revision}-{intent}"
            got, status, attempts = None, 0, 0
            for attempts in range(1, retries + 2):  # noqa: B007 - the count is reported
                try:
                    r = client.post(
                        f"{url}/v1/chat",
                        json={"session_id": session, "message": message},
                        headers={**pin, "X-Session-Id": session},
                    )
                except httpx.HTTPError:
                    status = 0
                    continue
                status = r.status_code
                if status < 500:
                    got = r.json().get("intent") if status == 200 else None
                    break
            ok = status == 200 and got == intent
            checks.append(
                {"check": f"chat:{intent}", "ok": ok, "status": status, "intent": got, "attempts": attempts}
            )
            if not ok:
                failures.append(f"{intent}: status {status}, intent {got!r}")
    return failures, checks


def _warm(pin: Pin, settings: DeploySettings) -> None:
    """``warmup_s`` of the load at ``load_rps``, pinned (through the pin's ``auth``), not counted."""
    if settings.warmup_s > 0:
        run_load(
            pin.url,
            rps=settings.load_rps,
            duration_s=settings.warmup_s,
            headers=pin.headers,
            auth=pin.auth,
            remote=True,
        )


def _warm_up(url: str, pin: dict[str, str]) -> None:
    """Every message of the load's conversations once, pinned, so caches are as warm as the stable's
    before the gate measures and before the judge compares the two revisions."""
    messages = sorted({m for script in CONVERSATIONS for m in script})
    with httpx.Client(timeout=30.0) as client:
        for i, message in enumerate(messages):
            session = f"warmup-{i}"
            try:
                client.post(
                    f"{url.rstrip('/')}/v1/chat",
                    json={"session_id": session, "message": message},
                    headers={**pin, "X-Session-Id": session},
                )
            except httpx.HTTPError:
                continue


def _num(value: float) -> float:
    return -1.0 if value != value else round(value, 3)


def describe(params: dict[str, Any]) -> str:
    """One line on what a run with these params will do (the CLI's confirmation)."""
    settings = _settings(params)
    if params.get("service") is not None:
        check_service(settings.environment, settings.service)
    plan = _plan(params, settings)
    what = params.get("artifact") or params.get("source") or "the working tree"
    extra = f" with {params['set_env']}" if params.get("set_env") else ""
    return f"deploy {what}{extra} to {settings.environment}/{settings.service} by {plan.describe()}"
