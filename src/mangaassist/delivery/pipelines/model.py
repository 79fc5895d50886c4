"""CD-03, model deployment: a registered intent model from ``candidate`` to ``champion``.

The runbook, one engine step each (``build``):

1. ``resolve``: the version (param ``version``, default the ``candidate`` alias), the champion, the
   package downloaded to ``HOME/models/packages/<model>-v<N>`` (versions never change, so a resumed
   run reuses it), and the stable revision of the model service (``intent-model``): the one that
   takes all new conversations. A version that already is the champion stops here.
2. ``gate``: the offline gate (``delivery.model_gate``, limits from ``ml/intent.yaml``), one table
   row per metric in the step's detail. A FAIL stops the run before anything is deployed, unless
   the run was started with ``--override ENV.gates --reason TEXT``, a rule that only exists where
   the policy sets ``gate_overrides: true`` (``dev`` by default) and that the engine audits as
   ``policy.override``; the step then records FAIL with ``overridden`` and the run goes on, so the
   shadow still stands between that model and the users.
   ``answers``: a sample of the golden set (``ml/answers``, ``answers_sample`` questions, default
   30) answered by the chatbot in a child process with the champion's package and with the
   candidate's (``pipelines/answers.py``); intent accuracy or correctness more than
   ``answers_tolerance`` below the champion's (and significant by a sign test), or more
   fabricated prices, stock or dates, stop the run before anything is deployed (the
   ``--override ENV.gates`` of the offline gate covers this one too: the step then records FAIL
   with ``overridden``).
3. ``deploy``: a new revision ``m<N>-<digest8>`` (the version and the package's digest: a repeated
   deploy is the same revision) of the stable revision's code with
   ``MANGAASSIST_MODEL_PACKAGE=<package>`` at weight 0, ready, and its ``/readyz`` (pinned) must
   name the version's package.
4. ``shadow``: the router mirrors ``shadow_share`` of live requests to the candidate (its answers
   never reach anyone) until ``shadow_min_requests`` intent comparisons with the primary were made,
   for at most ``shadow_max_s``. Then ``shadow_decision`` (pure) judges the mirrored traffic:
   enough comparisons; agreement with the live model >= ``shadow_min_agreement`` **or** the
   disagreement explained by the offline evaluation (below); a mirrored error rate (5xx, timeouts,
   connection errors) at most ``shadow_max_error_rate`` (default 0: any error fails, at once);
   the mirrored p99 within ``shadow_p99_budget_ms``. The newest disagreements the router kept
   (request text truncated, both intents) go to the step detail and to
   ``HOME/models/shadow/<run>.jsonl`` for review. The shadow is cleared at the end of the step,
   pass or fail, and by the rollback.
5. one step per canary weight (``canary-5`` ... ``canary-100``; ``steps``), run by
   ``rollout.phases`` exactly as CD-01's: the anytime-valid judge compares the candidate with the
   stable revision on what both served since the shift: errors, latency and the fallback rate,
   which for the model endpoint is its low-confidence rate (``X-MangaAssist-Fallback``). FAIL puts
   all traffic back on the stable revision at once.
6. ``approve``: the run's policy (``prod``: one person who is not the requester; ``dev``/``staging``:
   nobody). A rejection rolls back.
7. ``promote``: the old revision drained and retired, then the alias moves
   (``model_promotion.promote``: ``previous`` <- the old champion, ``champion`` <- the version).

The rollback (a failed step, an abort, a rejection): shadow cleared, all traffic on the stable
revision, the candidate retired; the aliases are never touched, because the alias moves only in the
last effect of the last step.

**Disagreement explained by the offline evaluation.** If the champion is wrong on a share ``e1`` of
requests and the candidate on ``e2``, they can disagree only where at least one is wrong, so at most
on ``e1 + e2`` of them. With ``e = 1 - accuracy`` on the offline eval set, a candidate whose offline
accuracy is at least the champion's and whose live disagreement is at most ``e1 + e2`` changed its
answers where the evaluation says one of the two models errs: that is the offline gain showing, not
a broken model. Above that bound (or a candidate less accurate offline), only
``shadow_min_agreement`` lets it pass. Without a registered champion (the stable revision serves the
built-in model) only the agreement threshold applies.

**The chatbot's downstream fallback.** The chatbot falls back to its in-process model when the
endpoint times out, refuses the connection or answers 5xx or an invalid body
(``chatbot.intent_remote``). The first three reach the model's router as failed requests of the
revision that served them (a chatbot that gives up on a slow answer shows as ``client_gone``), so
the canary's error metric counts them per model revision. Not attributed: a 200 with a body the
chatbot rejects, and the answers given while the chatbot's circuit breaker is open (no request is
sent); the chatbot's own counter ``mangaassist_intent_fallback_total`` is per chatbot worker, not
per model revision.

Params: ``environment``, ``version``, ``model_config`` (default ``ml/intent.yaml``), ``set_env``
(extra variables of the candidate revision: drills such as ``MANGAASSIST_FAULT``), the shadow
settings (``ShadowSettings``), and the canary settings of ``rollout.settings`` (``steps``,
``min_requests``, ``judge_min_requests``, ``max_step_s``, ``on_inconclusive``, ``alpha``,
``drain_idle_s``, ``drain_max_s``) over ``[environments.ENV.model_deploy]`` of
``mangaassist.toml`` (the shadow's over ``[environments.ENV.model_shadow]``). Started by
``mangaassist deploy model`` (``cli/deploy_cmds.py``); rebuilt from its params by ``runs resume``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx

from mangaassist.chatbot.intent import PACKAGE_META
from mangaassist.chatbot.intent_training import TrainingConfig
from mangaassist.chatbot.settings import find_root
from mangaassist.core.artifact import Artifact
from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.engine.model import WaitFor
from mangaassist.delivery.engine.outputs import StepOutput
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext, approval_step
from mangaassist.delivery.model_gate import GateConfig, gate_version
from mangaassist.delivery.model_promotion import promote
from mangaassist.delivery.pipelines.answers import GateSettings, child_gate
from mangaassist.delivery.pipelines.gating import gate_outcome
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.delivery.rollout.phases import (
    SLICE_S,
    TICK_S,
    Canary,
    alerts_block,
    deploy_ready,
    phase_steps,
    restore_and_retire,
    retire_after_drain,
    run_phase,
    split_traffic,
    stable_revision,
)
from mangaassist.delivery.rollout.settings import DeploySettings, run_settings
from mangaassist.delivery.rollout.strategies import Phase, RolloutPlan, Strategy
from mangaassist.platform.compute import Compute, Revision
from mangaassist.platform.metrics import Metrics
from mangaassist.platform.model_registry import ModelRegistry
from mangaassist.platform.settings import find_config

NAME = "CD-03"
SERVICE = "intent-model"
PACKAGE_ENV = "MANGAASSIST_MODEL_PACKAGE"
"""The variable that tells a model server revision which package to serve (``chatbot.model_server``)."""


@dataclass(frozen=True)
class ShadowSettings:
    """The shadow gate's settings (run params of the same names)."""

    shadow_share: float = 1.0
    """Share (0..1] of live requests mirrored to the candidate."""
    shadow_min_requests: int = 100
    """Intent comparisons (mirrored request and live answer, both with an intent) needed to judge."""
    shadow_max_s: float = 300.0
    """How long the shadow may wait for them; fewer by then is INCONCLUSIVE and fails the step."""
    shadow_min_agreement: float = 0.85
    """Share of comparisons where the candidate gives the live model's intent."""
    shadow_max_error_rate: float = 0.0
    """Mirrored requests that got no answer or a 5xx, as a share of those answered or failed."""
    shadow_p99_budget_ms: float = 250.0
    """The mirrored requests' p99 latency (the router's histogram bucket bound)."""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ShadowSettings:
        """Defaults, then ``[environments.ENV.model_shadow]`` of ``mangaassist.toml``, then the params."""
        environment = str(params.get("environment") or "dev")
        where = f"mangaassist.toml: environments.{environment}.model_shadow"
        table = _file_table(environment, "model_shadow")
        known = {f.name for f in fields(cls)}
        for key in table:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown setting (known: {', '.join(sorted(known))})")
        merged = {**table, **{k: v for k, v in params.items() if k in known and v is not None}}
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = merged.get(f.name)
            if raw is None:
                continue
            try:
                value: float = int(raw) if f.name == "shadow_min_requests" else float(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"{f.name}: expected a number, got {raw!r}") from None
            ok = math.isfinite(value) and {
                "shadow_share": 0 < value <= 1,
                "shadow_min_requests": value >= 1,
                "shadow_min_agreement": 0 <= value <= 1,
                "shadow_max_error_rate": 0 <= value <= 1,
            }.get(f.name, value > 0)
            if not ok:
                raise ConfigError(f"{f.name}: {raw!r} is out of range")
            values[f.name] = value
        return cls(**values)


@dataclass(frozen=True)
class Resolved(StepOutput):
    """What ``resolve`` hands the later steps: the version, the champion, the package, the
    stable revision and the candidate revision's name."""

    model: str
    version: str
    package_version: str
    package: str
    """The version's package, downloaded under ``HOME/models/packages``."""
    package_digest: str
    champion: str | None
    candidate_accuracy: float | None
    champion_accuracy: float | None
    stable: str
    """The model service's revision that takes all new conversations now."""
    stable_digest: str
    stable_artifact: str
    """The stable revision's code: the candidate runs the same code with another package."""
    stable_replicas: int
    candidate: str
    set_env: dict[str, str]
    baseline_cursor: int
    """The stats cursor before the rollout: where the first pre-switch baseline starts."""


# -- the runbook ---------------------------------------------------------------------------------


def build(params: dict[str, Any]) -> Pipeline:
    """The CD-03 pipeline for these params (deterministic: ``runs resume`` rebuilds it)."""
    settings = _settings(params)
    ShadowSettings.from_params(params)  # bad params fail before the run starts
    GateSettings.from_params(params)
    plan = _plan(settings)
    scope = RunScope(settings.environment)
    steps = [
        Step("resolve", scope.bind(_resolve), "the version, the champion, the package, the stable revision"),
        Step("gate", scope.bind(_gate), "offline evaluation gate against the champion"),
        Step("answers", scope.bind(_answers), "golden-set answer quality: the chatbot with each model"),
        Step("deploy", scope.bind(_deploy), "the candidate revision at 0%, ready and answering"),
        Step("shadow", scope.bind(_shadow), "mirrored live traffic: agreement, errors, latency"),
        *phase_steps(plan, lambda phase: scope.bind(_run_phase, phase, plan)),
        approval_step("approve", "approval by policy before the alias moves"),
        Step("promote", scope.bind(_promote), "retire the old revision after its drain, then move the alias"),
    ]
    return Pipeline(
        NAME,
        tuple(steps),
        rollback=scope.bind(_rollback),
        description=f"deploy the intent model ({plan.describe()})",
        params=params,
        close=scope.close,
    )


def _candidate_name(version: str, digest: str, set_env: dict[str, str]) -> str:
    """``m<version>-<package digest>``, plus a digest of ``set_env`` when there is one: the platform
    treats a deploy of a live revision name as "already there", so one model version deployed with
    another environment (a drill's fault) must be another revision, never the old one."""
    name = f"m{version}-{digest[:8]}"
    if set_env:
        name += "-" + hashlib.sha256(json.dumps(set_env, sort_keys=True).encode()).hexdigest()[:6]
    return name


def _resolve(scope: RunScope, ctx: StepContext) -> Outcome:
    p = scope.settings
    config = _model_config(ctx.params)
    registry = _registry(scope, ctx)
    name = config.model_name
    if ctx.params.get("version"):
        version = registry.get(name, str(ctx.params["version"]))
    else:
        found = registry.alias(name, "candidate")
        if found is None:
            raise NotFoundError(f"model {name}: no version has the alias 'candidate'; train one first")
        version = found
    champion = registry.alias(name, "champion")
    if champion is not None and champion.version == version.version:
        return Outcome.failed(f"model {name}: version {version.version} is already the champion")
    package = registry.download(name, version.version, p.home / "models" / "packages")
    digest = _package_digest(package)
    compute = scope.compute()
    stable = stable_revision(compute, SERVICE)
    if stable is None:
        return split_traffic(compute, SERVICE)
    artifact = p.home / "artifacts" / f"{stable.digest}.tar"
    if not artifact.is_file():
        return Outcome.failed(f"the code of {stable.name} ({artifact}) is not in the artifact store")
    set_env = {str(k): str(v) for k, v in (ctx.params.get("set_env") or {}).items()}
    resolved = Resolved(
        model=name,
        version=version.version,
        package_version=version.tags.get("package_version", ""),
        package=str(package),
        package_digest=digest,
        champion=champion.version if champion else None,
        candidate_accuracy=version.metrics.get("accuracy"),
        champion_accuracy=champion.metrics.get("accuracy") if champion else None,
        stable=stable.name,
        stable_digest=stable.digest,
        stable_artifact=str(artifact),
        stable_replicas=stable.replicas,
        candidate=_candidate_name(version.version, digest, set_env),
        set_env=set_env,
        baseline_cursor=scope.metrics().cursor(SERVICE),
    )
    output = resolved.as_output()
    return Outcome.done(output, detail={k: output[k] for k in ("version", "champion", "stable", "candidate")})


def _gate(scope: RunScope, ctx: StepContext) -> Outcome:
    r = Resolved.of(ctx, "resolve")
    config = _model_config(ctx.params)
    gate_config = GateConfig.from_mapping(config.gate, f"{config.source}: gate")
    result = gate_version(_registry(scope, ctx), r.model, gate_config, r.version)
    detail = {"gate": result.as_dict()}
    rule = f"{ctx.run.environment}.gates"
    why = "; ".join(result.reasons)
    if not result.passed and rule in ctx.run.overrides:
        ctx.progress(f"gate FAIL overridden ({rule}: {ctx.run.overrides[rule]}): {why}")
        return Outcome.done(
            {"verdict": "FAIL", "overridden": rule},
            verdict=result.verdict,
            numbers=result.numbers(),
            detail={**detail, "overridden": rule, "override_reason": ctx.run.overrides[rule]},
        )
    return gate_outcome(
        result,
        output={"verdict": "PASS"},
        detail=detail,
        failure=f"version {r.version} failed the offline gate: {why}",
    )


def _answers(scope: RunScope, ctx: StepContext) -> Outcome:
    """A sample of the golden set (``ml/answers``) answered by the chatbot (a child process) once
    with the champion's package (the built-in model without one) and once with the candidate's:
    worse intents or correctness (beyond ``answers_tolerance``), or more fabricated prices, stock
    or dates, stop the run before anything is deployed."""
    answers = GateSettings.from_params(ctx.params)
    if answers.sample == 0:
        return Outcome.done(detail={"skipped": "answers_sample=0"})
    r = Resolved.of(ctx, "resolve")
    p = scope.settings
    live_package = None
    if r.champion is not None:
        live_package = str(
            _registry(scope, ctx).download(r.model, r.champion, p.home / "models" / "packages")
        )
    env = {
        **os.environ,
        "MANGAASSIST_HOME": str(p.home),
        "MANGAASSIST_EMBEDDER": _package_embedder(Path(r.package)),
    }
    against = f"v{r.champion}" if r.champion else "the built-in model"
    ctx.progress(f"golden-set sample of {answers.sample}: model v{r.version} against {against}")
    result = child_gate(
        answers,
        {"intent_packages": {"live": live_package, "candidate": r.package}},
        candidate=f"{r.model} v{r.version}",
        live=f"{r.model} v{r.champion}" if r.champion else "built-in model",
        env=env,
    )
    rule = f"{ctx.run.environment}.gates"
    if not result.passed and rule in ctx.run.overrides:  # the offline gate's override covers this gate
        ctx.progress(f"answer-quality FAIL overridden ({rule}: {ctx.run.overrides[rule]})")
        return Outcome.done(
            {"verdict": "FAIL", "overridden": rule},
            verdict=result.verdict,
            numbers=result.numbers(),
            detail={**result.as_dict(), "overridden": rule, "override_reason": ctx.run.overrides[rule]},
        )
    return gate_outcome(
        result,
        output=result.numbers(),
        failure=f"version {r.version} failed the answer-quality gate: " + "; ".join(result.reasons),
    )


def _package_embedder(package: Path) -> str:
    """The ``MANGAASSIST_EMBEDDER`` a chatbot needs to load ``package`` (the embedder it was
    trained on, from its metadata)."""
    try:
        meta = json.loads((package / PACKAGE_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return os.environ.get("MANGAASSIST_EMBEDDER", "minilm")
    return "hashing" if str(meta.get("embedder", "")).startswith("hashing") else "minilm"


def _deploy(scope: RunScope, ctx: StepContext) -> Outcome:
    r = Resolved.of(ctx, "resolve")
    p = scope.settings
    compute = scope.compute()
    revision = Revision(
        r.candidate,
        Artifact(Path(r.stable_artifact), r.stable_digest),
        p.services[SERVICE].app,
        {**r.set_env, PACKAGE_ENV: r.package},
        r.stable_replicas,
    )
    blocked = alerts_block(ctx, scope.metrics(), SERVICE)
    if blocked is not None:
        return blocked
    timeout_s = p.services[SERVICE].ready_timeout_s
    failed = deploy_ready(ctx, compute, SERVICE, revision, timeout_s, effect="deploy")
    if failed is not None:
        return failed
    served = _pinned_version(compute, revision.name)
    expected = r.package_version
    if expected and served != expected:
        return Outcome.failed(f"candidate {revision.name} answers as model {served!r}, expected {expected!r}")
    return Outcome.done({"candidate": revision.name}, detail={"candidate": revision.name, "serves": served})


def _shadow(scope: RunScope, ctx: StepContext) -> Outcome:
    r = Resolved.of(ctx, "resolve")
    settings = ShadowSettings.from_params(ctx.params)
    compute, metrics = scope.compute(), scope.metrics()
    candidate = r.candidate

    def start(_key: str) -> dict[str, Any]:
        compute.set_shadow(SERVICE, candidate, settings.shadow_share)
        return {"at": time.time(), "before": _shadow_counters(metrics, candidate)}

    started = ctx.effect("start-shadow", start)
    deadline = time.monotonic() + SLICE_S
    reading = ShadowReading()
    while True:
        reading = ShadowReading.since(started["before"], _shadow_counters(metrics, candidate))
        decision = shadow_decision(
            reading,
            settings,
            elapsed_s=time.time() - float(started["at"]),
            champion_accuracy=r.champion_accuracy,
            candidate_accuracy=r.candidate_accuracy,
        )
        if decision is not None:
            return _end_shadow(scope, ctx, reading, decision)
        if time.monotonic() >= deadline:
            break
        ctx.sleep(TICK_S)
    summary = (
        f"{reading.compared}/{settings.shadow_min_requests} comparisons, agreement {_pct(reading.agreement)}"
    )
    ctx.progress(f"shadow: {summary}")
    return Outcome.wait(f"shadow: {summary}", for_=WaitFor.DATA)


def _end_shadow(
    scope: RunScope, ctx: StepContext, reading: ShadowReading, decision: ShadowDecision
) -> Outcome:
    compute = scope.compute()
    ctx.effect("clear-shadow", lambda _k: _clear_shadow(compute))
    r = Resolved.of(ctx, "resolve")
    p = scope.settings
    review = p.home / "models" / "shadow" / f"{ctx.run.id}.jsonl"
    review.parent.mkdir(parents=True, exist_ok=True)
    with review.open("w", encoding="utf-8") as fh:  # rewritten whole: a resumed step writes the same file
        for d in reading.disagreements:
            fh.write(json.dumps({**d, "candidate": r.candidate, "stable": r.stable}) + "\n")
    numbers = reading.numbers()
    detail = {
        "shadow": reading.as_dict(),
        "reasons": list(decision.reasons),
        "explained_by_offline": decision.explained_by_offline,
        "disagreements_file": str(review),
    }
    if decision.verdict is Verdict.PASS:
        return Outcome.done(
            {"verdict": "PASS", "numbers": numbers}, verdict=Verdict.PASS, numbers=numbers, detail=detail
        )
    return Outcome.failed(
        f"shadow {decision.verdict.value}: {'; '.join(decision.reasons)}; "
        f"no user request reached {r.candidate}",
        verdict=decision.verdict,
        numbers=numbers,
        detail=detail,
    )


def _run_phase(scope: RunScope, ctx: StepContext, phase: Phase, plan: RolloutPlan) -> Outcome:
    return run_phase(ctx, phase, plan, _canary(scope, ctx), scope.phases)


def _promote(scope: RunScope, ctx: StepContext) -> Outcome:
    r = Resolved.of(ctx, "resolve")
    settings = _settings(ctx.params)
    plan = _plan(settings)
    last = ctx.outputs[plan.phases[-1].name]
    canary = _canary(scope, ctx)
    waiting, waited = retire_after_drain(ctx, canary, last, settings.drain_idle_s, settings.drain_max_s)
    if waiting is not None:
        return waiting
    registry = _registry(scope, ctx)

    def move(key: str) -> dict[str, Any]:
        champion = registry.alias(r.model, "champion")
        if champion is not None and champion.version == r.version:  # applied, then killed before the marker
            return {"champion_before": r.champion, "champion": r.version, "previous": r.champion}
        change = promote(registry, r.model, r.version, actor=ctx.run.requester, reason=f"{NAME} run {key}")
        return change.as_dict()

    change = ctx.effect("promote-alias", move)
    verdicts = {ph.name: ctx.outputs[ph.name].get("verdict") for ph in plan.phases}
    record = {
        "model": r.model,
        "version": r.version,
        "revision": r.candidate,
        "previous_revision": r.stable,
        "champion_before": change.get("champion_before"),
        "champion": change.get("champion"),
        "previous": change.get("previous"),
        "requester": ctx.run.requester,
        "verdicts": verdicts,
        "drained_after_s": round(waited, 3),
    }
    return Outcome.done(record, verdict=Verdict.PASS, detail={"promotion": record})


def _rollback(scope: RunScope, ctx: StepContext) -> Outcome:
    """Shadow cleared, all traffic to the stable revision, the candidate retired; aliases untouched."""
    if "resolve" not in ctx.outputs:
        return Outcome.done(detail={"nothing": "nothing was deployed"})
    r = Resolved.of(ctx, "resolve")
    compute = scope.compute()
    shadow = compute.status(SERVICE).shadow
    if shadow is not None and shadow.revision == r.candidate:
        ctx.effect("clear-shadow", lambda _k: _clear_shadow(compute))
    return restore_and_retire(ctx, compute, SERVICE, r.stable, r.candidate)


# -- the shadow gate (deciding only) --------------------------------------------------------------


@dataclass
class ShadowReading:
    """What the router counted for the candidate's mirrored requests since the shadow started."""

    requests: int = 0
    answered: int = 0
    failed: int = 0
    """5xx answers, timeouts and transport errors."""
    compared: int = 0
    agreed: int = 0
    p99_ms: float | None = None
    disagreements: tuple[dict[str, Any], ...] = ()

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def error_rate(self) -> float:
        done = self.answered + self.failed
        return self.failed / done if done else 0.0

    @classmethod
    def since(cls, before: dict[str, Any], now: dict[str, Any]) -> ShadowReading:
        """The difference of two snapshots of one shadow revision's router counters."""

        def delta(key: str) -> int:
            return int(now.get(key) or 0) - int(before.get(key) or 0)

        def total(data: dict[str, Any], five_only: bool) -> int:
            statuses = data.get("statuses") or {}
            return sum(int(n) for s, n in statuses.items() if not five_only or int(s) >= 500)

        failed = total(now, True) - total(before, True)
        failed += sum(int(n) for n in (now.get("errors") or {}).values())
        failed -= sum(int(n) for n in (before.get("errors") or {}).values())
        answered = total(now, False) - total(before, False) - (total(now, True) - total(before, True))
        started = float(before.get("now") or 0.0)
        return cls(
            requests=delta("requests"),
            answered=answered,
            failed=failed,
            compared=delta("intent_compared"),
            agreed=delta("intent_agreed"),
            p99_ms=_p99_between(before.get("latency") or {}, now.get("latency") or {}),
            disagreements=tuple(
                d for d in now.get("disagreements") or () if float(d.get("time", 0)) >= started
            ),
        )

    def numbers(self) -> dict[str, float]:
        return {
            "mirrored": float(self.requests),
            "compared": float(self.compared),
            "agreement": -1.0 if self.agreement is None else round(self.agreement, 4),
            "failed": float(self.failed),
            "error_rate": round(self.error_rate, 4),
            "p99_ms": -1.0 if self.p99_ms is None else (1e300 if math.isinf(self.p99_ms) else self.p99_ms),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agreement": self.agreement, "error_rate": self.error_rate}


@dataclass(frozen=True)
class ShadowDecision:
    verdict: Verdict
    reasons: tuple[str, ...]
    explained_by_offline: bool = False


def shadow_decision(
    reading: ShadowReading,
    settings: ShadowSettings,
    *,
    elapsed_s: float,
    champion_accuracy: float | None,
    candidate_accuracy: float | None,
) -> ShadowDecision | None:
    """PASS, FAIL or INCONCLUSIVE once there is enough to say (None: keep mirroring).

    Errors beyond the allowed rate fail at once, whatever the number of comparisons; otherwise the
    gate waits for ``shadow_min_requests`` comparisons (INCONCLUSIVE after ``shadow_max_s``)."""
    done = reading.answered + reading.failed
    too_many = reading.failed > settings.shadow_max_error_rate * done
    if too_many and (settings.shadow_max_error_rate == 0 or done >= settings.shadow_min_requests):
        return ShadowDecision(
            Verdict.FAIL,
            (
                f"{reading.failed} of {done} mirrored requests failed "
                f"(error rate {reading.error_rate:.1%}, at most {settings.shadow_max_error_rate:.1%})",
            ),
        )
    if reading.compared < settings.shadow_min_requests:
        if elapsed_s >= settings.shadow_max_s:
            return ShadowDecision(
                Verdict.INCONCLUSIVE,
                (
                    f"only {reading.compared} intent comparisons in {elapsed_s:.0f}s "
                    f"(need {settings.shadow_min_requests}; is there live traffic?)",
                ),
            )
        return None
    reasons: list[str] = []
    agreement = reading.agreement or 0.0
    bound = None
    explained = False
    if champion_accuracy is not None and candidate_accuracy is not None:
        bound = (1 - champion_accuracy) + (1 - candidate_accuracy)
        explained = candidate_accuracy >= champion_accuracy and 1 - agreement <= bound + 1e-9
    if agreement < settings.shadow_min_agreement and not explained:
        why = f"agreement with the live model {agreement:.1%} is below {settings.shadow_min_agreement:.1%}"
        if bound is not None:
            why += (
                f", and the offline evaluation does not explain it (disagreement {1 - agreement:.1%}; "
                f"offline accuracy {candidate_accuracy:.1%} vs the champion's {champion_accuracy:.1%}, "
                f"bound {bound:.1%})"
            )
        reasons.append(why)
    if too_many:
        reasons.append(
            f"mirrored error rate {reading.error_rate:.1%} over {settings.shadow_max_error_rate:.1%}"
        )
    if reading.p99_ms is None or reading.p99_ms > settings.shadow_p99_budget_ms:
        reasons.append(
            f"mirrored p99 {reading.p99_ms} ms over the budget of {settings.shadow_p99_budget_ms:g} ms"
        )
    return ShadowDecision(Verdict.FAIL if reasons else Verdict.PASS, tuple(reasons), explained)


def _p99_between(before: dict[str, Any], now: dict[str, Any]) -> float | None:
    """The p99 (bucket upper bound) of the latencies observed between two histogram snapshots."""
    bounds = now.get("buckets_ms") or []
    counts = [
        int(n) - int(b) for n, b in zip(now.get("counts") or [], before.get("counts") or [], strict=False)
    ]
    if not before.get("counts"):
        counts = [int(n) for n in now.get("counts") or []]
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for bound, n in zip(bounds, counts, strict=False):
        seen += n
        if n and seen >= 0.99 * total:
            return float("inf") if bound == "+Inf" else float(bound)
    return None


# -- helpers -------------------------------------------------------------------------------------


def _shadow_counters(metrics: Metrics, candidate: str) -> dict[str, Any]:
    return {**metrics.shadow(SERVICE, candidate).as_dict(), "now": time.time()}


def _clear_shadow(compute: Compute) -> dict[str, Any]:
    compute.clear_shadow(SERVICE)
    return {"cleared_at": time.time()}


def _pinned_version(compute: Compute, revision: str) -> str | None:
    """The model version ``revision`` says it serves (``/readyz`` through the router, pinned): the
    readiness answer, not a classification, so a drill's injected faults are left to the shadow."""
    pin = compute.pin(SERVICE, revision)
    try:
        r = httpx.get(f"{pin.url.rstrip('/')}/readyz", headers=dict(pin.headers), auth=pin.auth, timeout=30.0)
    except httpx.HTTPError as exc:
        return f"no answer ({exc})"
    if r.status_code != 200:
        return f"status {r.status_code}"
    version = r.json().get("model_version")
    return str(version) if version is not None else None


def _package_digest(package: Path) -> str:
    """sha256 over the package's files (relative path and bytes), in path order."""
    h = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(package)).encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _canary(scope: RunScope, ctx: StepContext) -> Canary:
    r = Resolved.of(ctx, "resolve")
    settings = _settings(ctx.params)
    return Canary(
        scope.compute(),
        scope.metrics(),
        SERVICE,
        r.stable,
        r.candidate,
        settings.alpha,
        settings.judge_min_requests,
        r.baseline_cursor,
    )


def _registry(scope: RunScope, ctx: StepContext) -> ModelRegistry:
    """The environment's model registry, or the MLflow store the ``tracking_uri`` param names."""
    return scope.platform.model_registry(ctx.params.get("tracking_uri"))


def _settings(params: dict[str, Any]) -> DeploySettings:
    return run_settings({**params, "service": SERVICE}, table_name="model_deploy")


def _file_table(environment: str, name: str) -> dict[str, Any]:
    try:
        path = find_config()
    except ConfigError:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return dict(data.get("environments", {}).get(environment, {}).get(name, {}))


def _plan(settings: DeploySettings) -> RolloutPlan:
    return settings.plan(Strategy.CANARY, only_allowed=False)


def _model_config(params: dict[str, Any]) -> TrainingConfig:
    path = Path(str(params.get("model_config") or find_root() / "ml" / "intent.yaml"))
    if not path.is_file():
        raise ConfigError(f"{path}: no such model config")
    return TrainingConfig.load(path, find_root())


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def model_name(params: dict[str, Any]) -> str:
    """The registered model a run with these params deploys (the model config's ``model``)."""
    return _model_config(params).model_name


def describe(params: dict[str, Any]) -> str:
    """One line on what a run with these params will do (the CLI's confirmation)."""
    settings = _settings(params)
    plan = _plan(settings)
    shadow = ShadowSettings.from_params(params)
    version = f"version {params['version']}" if params.get("version") else "the candidate"
    extra = f" with {params['set_env']}" if params.get("set_env") else ""
    return (
        f"deploy {version} of the intent model{extra} to {settings.environment}/{SERVICE}: shadow "
        f"({shadow.shadow_min_requests} comparisons, agreement >= {shadow.shadow_min_agreement:.0%}), "
        f"then {plan.describe()}, approval by policy, promote"
    )
