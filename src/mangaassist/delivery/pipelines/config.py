"""CD-06, configuration and prompts: validate -> evaluate -> version -> staged rollout -> promote.

The runbook (``build``), one engine step each:

1. ``validate``: the profile's JSON Schema and semantic checks (``delivery/config_profiles.py``);
   any problem (file, line, field) aborts. Invalid content is never deployed.
2. ``evaluate``: the prompt regression suites (``config/evals/*.yaml``) run on the chatbot twice,
   with the candidate profile and with the live one (a separate process:
   ``python -m mangaassist.chatbot.evaluation``, so the deploy never loads the chatbot itself). A
   check that passes on live and fails on the candidate is a regression and aborts the deploy.
   ``answers``: a stratified sample of the golden set (``ml/answers``, ``answers_sample``
   questions, default 30) answered the same way, live and candidate
   (``chatbot.answer_quality.child_gate``); intent accuracy or correctness more than
   ``answers_tolerance`` below live's (and significant by a sign test), or more fabricated
   prices, stock or dates, aborts.
3. ``version``: store the content as an immutable version named by its digest. Content equal to
   the live version ends the run there (nothing to deploy). A profile without any live version
   gets this one as its first stable version.
4. ``rollout-P`` (one engine step per percentage) and ``bake``: the judged rollout phases CD-01
   and CD-03 use (``rollout.phases.run_phase``), over session buckets instead of revisions
   (``BucketSplit``): raise the candidate's share step by step (``linear``: +step;
   ``exponential``: step, 2*step, 4*step...; ``all-at-once``). At each step the anytime-valid
   judge compares the requests of sessions on the new version with those on the old one over the
   same period (errors, latency, fallback and guardrail flags, thumbs-down, as the workers report
   them to the config server). FAIL sets the percentage to 0 at once and the run fails; PASS
   after ``step_seconds`` moves on; INCONCLUSIVE extends the step up to ``step_max_seconds``, then
   fails safe (percentage 0). ``bake`` then watches the same alarms at 100% for ``bake_seconds``,
   rates against what the old version served in the last shared step; only a FAIL ends it early.
   Each step records its cursor (the per-version counts at its shift), so a run killed in the
   middle of a judgement and resumed (``mangaassist runs resume``) judges on from there.
5. ``promote``: the new version becomes stable for every session.

The rollback (a failed step, an abort) sets the candidate's percentage to 0: one pointer move,
in force on every worker within one poll interval.

Params: ``profile`` (required), ``config_dir`` (default ``ROOT/config``), ``strategy``
(linear | exponential | all-at-once), ``step`` (percent, 20), ``step_seconds`` (10),
``step_max_seconds`` (60), ``bake_seconds`` (60), ``url`` (config server; default
``MANGAASSIST_CONFIG_URL`` or the server of ``home``, started if needed), ``home``, ``evaluate``
(true: both evaluation steps), ``embedder`` (for the evaluation), ``answers_sample`` (30; 0
skips), ``answers_seed``, ``answers_tolerance`` (0.02), ``answers_alpha`` (0.05),
``answers_golden``, ``answers_baseline`` (false), ``actor``, ``judge`` (``JudgeSettings`` fields).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mangaassist.core.configspec import PROFILES
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.analysis import ArmSample, JudgeSettings
from mangaassist.delivery.analysis.gates import EvalScore, GateResult, evaluation_gate
from mangaassist.delivery.analysis.samples import BUCKETS, buckets_of
from mangaassist.delivery.config_profiles import load_eval_suites, read_profile, validate_profile
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext
from mangaassist.delivery.pipelines.answers import GateSettings, child_gate
from mangaassist.delivery.pipelines.gating import gate_outcome
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.delivery.rollout.phases import phase_steps, run_phase
from mangaassist.delivery.rollout.strategies import (
    Baseline,
    OnInconclusive,
    Phase,
    RolloutPlan,
    Strategy,
)
from mangaassist.platform.config_store import ConfigStore, ConfigStoreError, Observations
from mangaassist.platform.factory import platform_for
from mangaassist.platform.settings import find_root
from mangaassist.platform.settings import state_home as project_home

NAME = "CD-06"
ROLLBACK = "CD-06-rollback"
STRATEGIES = ("linear", "exponential", "all-at-once")


def target(profile: str) -> str:
    """The engine lock's target: one deploy at a time per (environment, profile)."""
    return f"{NAME}:{profile}"


def plan_percentages(strategy: str, step: float) -> list[float]:
    """The rollout's steps, ending at 100."""
    if strategy == "all-at-once":
        return [100.0]
    if not 0 < step <= 100:
        raise ConfigError(f"step {step}: expected a percentage in (0, 100]")
    out: list[float] = []
    value = step
    while value < 100:
        out.append(round(value, 2))
        value = value + step if strategy == "linear" else value * 2
    return [*out, 100.0]


# -- the runbook -----------------------------------------------------------------------------------


def build(params: dict[str, Any]) -> Pipeline:
    profile = params.get("profile")
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r}: expected one of {', '.join(PROFILES)}")
    strategy = params.get("strategy", "linear")
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    JudgeSettings(**params.get("judge", {}))
    GateSettings.from_params(params)  # bad answers_* params fail before the run starts
    plan = rollout_plan(params)
    scope = RunScope(params.get("environment"))
    return Pipeline(
        NAME,
        (
            Step("validate", _validate, f"schema and semantic checks of {profile}", changes=False),
            Step("evaluate", _evaluate, "prompt regression suites: candidate against live", changes=False),
            Step("answers", _answers, "golden-set answer quality: candidate against live", changes=False),
            Step("version", _version, "store an immutable, content-hashed version", changes=False),
            *phase_steps(plan, lambda phase: scope.bind(_rollout_phase, phase, plan)),
            Step("promote", _promote, "the new version becomes stable for every session"),
        ),
        rollback=_rollback,
        description="configuration and prompts: validated, eval-gated, sticky staged rollout",
        params=params,
        close=scope.close,
    )


def build_rollback(params: dict[str, Any]) -> Pipeline:
    """``config rollback``: one locked, audited step that moves the stable pointer back.

    It takes the same lock as a deploy of the profile (``target``), so it is refused while a
    deploy runs (abort that run instead: its rollback sets the candidate to 0%). ``to`` names the
    version; without it, the stable version before the current one.
    """
    if params.get("profile") not in PROFILES:
        raise ConfigError(f"profile {params.get('profile')!r}: expected one of {', '.join(PROFILES)}")
    to = params.get("to") or "the previous stable version"
    return Pipeline(
        ROLLBACK,
        (Step("move-pointer", _move_pointer, f"point {params['profile']} at {to}"),),
        description="configuration and prompts: point a profile back at an earlier version",
        params=params,
        restores=True,
    )


def previous_stable(store: ConfigStore, profile: str) -> str | None:
    """The stable version before the current one (from the history of promotions)."""
    current = store.rollout(profile).stable
    promoted = [e["version"] for e in store.history(profile) if e["action"] == "promote"]
    earlier = [v for v in promoted if v != current]
    return earlier[-1] if earlier else None


def _move_pointer(ctx: StepContext) -> Outcome:
    store = open_store(ctx.params, ctx.run.environment)
    profile = ctx.params["profile"]
    before = store.rollout(profile)
    to = ctx.params.get("to") or previous_stable(store, profile)
    if not to:
        return Outcome.failed(f"{profile} has no earlier version to roll back to", abort=True)
    try:
        store.version(profile, str(to))
    except ConfigStoreError as exc:
        return Outcome.failed(f"{profile} has no version {to}: {exc}", abort=True)
    actor = str(ctx.params.get("actor") or ctx.run.requester)
    reason = f"rollback from {before.stable} ({ctx.run.id})"
    ctx.effect("promote", lambda _: store.promote(profile, str(to), actor=actor, reason=reason).as_dict())
    out = {"profile": profile, "live": to, "previous": before.stable}
    return Outcome.done(out, detail=out)


def _validate(ctx: StepContext) -> Outcome:
    problems = validate_profile(config_dir(ctx.params), ctx.params["profile"])
    if problems:
        return Outcome.failed(
            f"{len(problems)} problem(s): " + "; ".join(map(str, problems[:5])),
            abort=True,
            detail={"problems": [p.as_dict() for p in problems]},
        )
    return Outcome.done({"valid": True})


def _evaluate(ctx: StepContext) -> Outcome:
    if not ctx.params.get("evaluate", True):
        return Outcome.done({"skipped": True}, detail={"summary": "evaluation skipped (evaluate=false)"})
    folder = config_dir(ctx.params)
    suites, problems = load_eval_suites(folder)
    if problems:
        return Outcome.failed("; ".join(map(str, problems[:5])), abort=True)
    store = open_store(ctx.params, ctx.run.environment)
    profile = ctx.params["profile"]
    live = live_contents(store, folder)
    candidate = {**live, profile: read_profile(folder, profile)}
    result = run_evaluation(live, candidate, suites, ctx.params.get("embedder"))
    return gate_outcome(
        result,
        output={"checks": len(result.checks)},
        failure="evaluation regression: " + ", ".join(c.name for c in result.failed),
        abort=True,
    )


def _answers(ctx: StepContext) -> Outcome:
    """The golden set's sample (``ml/answers``) answered with the live profiles and the candidate
    ones (a child process); worse intents, correctness or more fabrications abort the deploy."""
    settings = GateSettings.from_params(ctx.params)
    if not ctx.params.get("evaluate", True) or settings.sample == 0:
        why = "evaluate=false" if not ctx.params.get("evaluate", True) else "answers_sample=0"
        return Outcome.done({"skipped": True}, detail={"summary": f"answer quality skipped ({why})"})
    folder = config_dir(ctx.params)
    store = open_store(ctx.params, ctx.run.environment)
    profile = ctx.params["profile"]
    live = live_contents(store, folder)
    candidate = {**live, profile: read_profile(folder, profile)}
    env = dict(os.environ)
    if ctx.params.get("embedder"):
        env["MANGAASSIST_EMBEDDER"] = str(ctx.params["embedder"])
    ctx.progress(f"golden-set sample of {settings.sample} on live and candidate {profile}")
    result = child_gate(
        settings,
        {"live": live, "candidate": candidate},
        candidate=f"{profile} (candidate)",
        live=store.rollout(profile).stable,
        env=env,
    )
    return gate_outcome(
        result,
        output=result.numbers(),
        failure="answer quality regression: " + "; ".join(result.reasons),
        abort=True,
    )


def _version(ctx: StepContext) -> Outcome:
    store = open_store(ctx.params, ctx.run.environment)
    profile = ctx.params["profile"]
    content = read_profile(config_dir(ctx.params), profile)
    actor = str(ctx.params.get("actor") or ctx.run.requester)
    created = ctx.effect(
        "create-version",
        lambda key: store.create_version(profile, content, author=actor, message=key).version,
    )
    rollout = store.rollout(profile)
    if rollout.stable is None:
        ctx.effect(
            "first-version",
            lambda _: store.promote(profile, created, actor=actor, reason="first version").as_dict(),
        )
        return Outcome.done({"version": created, "previous": None, "first": True})
    if rollout.stable == created:
        return Outcome.done({"version": created, "previous": created, "unchanged": True})
    # where the first phase's pre-switch baseline starts (all-at-once: the old version's figures
    # from here to the switch)
    cursor = cursor_of(store.observations(profile))
    return Outcome.done({"version": created, "previous": rollout.stable, "cursor": cursor})


def rollout_plan(params: dict[str, Any]) -> RolloutPlan:
    """One phase per percentage of session buckets, then the bake (``rollout.strategies.Phase``)."""
    strategy = str(params.get("strategy", "linear"))
    step_s, step_max = float(params.get("step_seconds", 10)), float(params.get("step_max_seconds", 60))
    bake = float(params.get("bake_seconds", 60))
    if min(step_s, step_max, bake) < 0 or step_max < step_s:
        raise ConfigError(
            f"step_seconds {step_s:g}, step_max_seconds {step_max:g}, bake_seconds {bake:g}: expected "
            "non-negative seconds and step_max_seconds >= step_seconds"
        )
    phases = [
        Phase(
            f"rollout-{pct:g}",
            pct,
            Baseline.CONCURRENT if pct < 100 else Baseline.PRE_SWITCH,
            0,  # the judge's own min_requests says when there is enough data
            step_max,
            OnInconclusive.ROLLBACK,  # too little traffic fails safe: percentage 0
            hold_s=step_s,
        )
        for pct in plan_percentages(strategy, float(params.get("step", 20)))
    ]
    bake_phase = Phase("bake", 100.0, Baseline.PRE_SWITCH, 0, bake, OnInconclusive.PROCEED, hold_s=bake)
    kind = Strategy.ALL_AT_ONCE if strategy == "all-at-once" else Strategy.CANARY
    return RolloutPlan(kind, (*phases, bake_phase), keep_warm=True)


def _rollout_phase(scope: RunScope, ctx: StepContext, phase: Phase, plan: RolloutPlan) -> Outcome:
    made = ctx.outputs["version"]
    if made.get("first") or made.get("unchanged"):
        return Outcome.done({"skipped": True})
    p = ctx.params
    ctx.progress(f"{made['version']} on {phase.weight:g}% of sessions", phase.weight / 100)
    split = BucketSplit(
        scope.keep("config-store", lambda: open_store(p, ctx.run.environment)),
        p["profile"],
        made["version"],
        made["previous"],
        str(p.get("actor") or ctx.run.requester),
        JudgeSettings(**p.get("judge", {})),
        made.get("cursor") or {},
    )
    return run_phase(ctx, phase, plan, split, scope.phases)


@dataclass(frozen=True)
class BucketSplit:
    """The ``TrafficSplit`` of a config profile: the candidate version's share of session buckets,
    judged on what the workers report per version (``ConfigStore.observations``). Its cursor is the
    per-version counts at a moment (JSON), so a resumed phase judges from its shift on."""

    store: ConfigStore
    profile: str
    candidate: str
    stable: str
    actor: str
    judge: JudgeSettings
    first_cursor: dict[str, dict[str, int]]
    not_judged: str | None = None

    def shift(self, weight: float) -> dict[str, Any]:
        current = self.store.rollout(self.profile)
        if current.candidate == self.candidate and current.percentage == weight:  # the bake after 100%
            return {"cursor": cursor_of(self.store.observations(self.profile)), "at": time.time()}
        self.store.set_rollout(
            self.profile,
            candidate=self.candidate,
            percentage=weight,
            actor=self.actor,
            reason=f"step {weight:g}%",
        )
        return {"cursor": cursor_of(self.store.observations(self.profile)), "at": time.time()}

    def restore(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.store.set_rollout(
            self.profile, candidate=None, percentage=0, actor=self.actor, reason="the judge rolled it back"
        )
        return {"at": time.time(), "took_ms": (time.perf_counter() - started) * 1000}

    def window(self, cursor: Any, concurrent: bool) -> BucketWindow:
        return BucketWindow(self.store, self.profile, self.candidate, self.stable, dict(cursor))

    def pre_switch(self, start: Any, end: Any) -> ArmSample:
        now = self.store.observations(self.profile)
        return _sample(now, dict(start), self.stable, until=dict(end))

    def candidate_problem(self) -> str | None:
        return None  # a version is data: it cannot crash; what it does to answers is the judge's


@dataclass
class BucketWindow:
    """What sessions on each version were served since ``start`` (the ``JudgedWindow`` of CD-06)."""

    store: ConfigStore
    profile: str
    candidate: str
    stable: str
    start: dict[str, dict[str, int]]
    candidate_sample: ArmSample = field(default_factory=ArmSample)
    stable_sample: ArmSample = field(default_factory=ArmSample)
    baseline_sample: ArmSample = field(default_factory=ArmSample)
    baseline: str | None = None
    first_candidate_error_at: float | None = None
    cursor: dict[str, dict[str, int]] = field(default_factory=dict)

    def read(self) -> int:
        now = self.store.observations(self.profile)
        before = self.candidate_sample.requests + self.stable_sample.requests
        self.candidate_sample = _sample(now, self.start, self.candidate)
        self.stable_sample = _sample(now, self.start, self.stable)
        if self.candidate_sample.errors and self.first_candidate_error_at is None:
            self.first_candidate_error_at = time.time()
        self.cursor = cursor_of(now)
        return self.candidate_sample.requests + self.stable_sample.requests - before


def rollout_report(steps: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rollout's phases as rows (percentage, verdict, requests and fallbacks per side, seconds)
    from a run's step records (``StepRecord`` by name), for the CLI and the demo."""
    rows: list[dict[str, Any]] = []
    for name, record in steps.items():
        if not (name.startswith("rollout-") or name == "bake"):
            continue
        numbers = record.detail.get("numbers") or {}
        if not numbers or record.detail.get("verdict") is None:
            continue
        row = {
            "percentage": float(name.removeprefix("rollout-")) if name != "bake" else 100.0,
            "verdict": record.detail["verdict"],
            "candidate_requests": int(numbers.get("candidate_requests", 0)),
            "baseline_requests": int(numbers.get("stable_requests", 0)),
            "candidate_fallbacks": int(numbers.get("candidate_fallbacks", 0)),
            "baseline_fallbacks": int(numbers.get("stable_fallbacks", 0)),
            "seconds": round(float(numbers.get("elapsed_s", 0.0)), 1),
        }
        if name == "bake":
            row["bake_seconds"] = row["seconds"]
        rows.append(row)
    return rows


def _promote(ctx: StepContext) -> Outcome:
    made = ctx.outputs["version"]
    if made.get("first") or made.get("unchanged"):
        return Outcome.done({"live": made["version"], "previous": made["previous"], "moved": False})
    store = open_store(ctx.params, ctx.run.environment)
    actor = str(ctx.params.get("actor") or ctx.run.requester)
    ctx.effect(
        "promote",
        lambda _: store.promote(
            ctx.params["profile"], made["version"], actor=actor, reason="rollout passed"
        ).as_dict(),
    )
    return Outcome.done({"live": made["version"], "previous": made["previous"], "moved": True})


def _rollback(ctx: StepContext) -> Outcome:
    """Whatever step failed, no session stays on the candidate."""
    store = open_store(ctx.params, ctx.run.environment)
    profile = ctx.params["profile"]
    if store.rollout(profile).candidate is not None:
        store.set_rollout(
            profile, candidate=None, percentage=0, actor="rollback", reason=ctx.run.reason or ""
        )
    return Outcome.done({"percentage": 0})


# -- helpers ---------------------------------------------------------------------------------------


def config_dir(params: dict[str, Any]) -> Path:
    """The profiles' folder: the ``config_dir`` param, else ``ROOT/config``."""
    if params.get("config_dir"):
        return Path(params["config_dir"])
    return find_root(needs=("config",)) / "config"


def state_home(params: dict[str, Any]) -> Path:
    """The ``home`` param, else ``MANGAASSIST_HOME``, else ``.mangaassist`` beside the profiles' folder."""
    return project_home(config_dir(params).parent, params.get("home"))


def open_store(params: dict[str, Any], environment: str | None = None) -> ConfigStore:
    """The environment's config store (``platform.factory``): the ``url`` param, else the
    environment's own (locally the config server of the state directory, started if needed).
    ``environment``: the run's (default the ``environment`` param, then ``MANGAASSIST_ENV``)."""
    platform = platform_for(environment or params.get("environment"), home=state_home(params))
    return platform.config_store(params.get("url"))


def live_contents(store: ConfigStore, folder: Path) -> dict[str, Any]:
    """What sessions get today, per profile: the stable version, or the files if none is stored."""
    out = {}
    for name in PROFILES:
        stable = store.rollout(name).stable
        out[name] = store.version(name, stable).content if stable else read_profile(folder, name)
    return out


def cursor_of(observations: Mapping[str, Observations]) -> dict[str, dict[str, int]]:
    """The per-version counts at this moment: a CD-06 phase's cursor (JSON)."""
    return {
        version: {
            "requests": o.requests,
            "errors": o.errors,
            "fallbacks": o.fallbacks,
            "guardrails": o.guardrails,
            "feedback": o.feedback,
            "thumbs_down": o.thumbs_down,
            "latencies": len(o.latencies_ms),
        }
        for version, o in observations.items()
    }


_COUNTS = ("requests", "errors", "fallbacks", "guardrails", "feedback", "thumbs_down")


def _sample(
    now: Mapping[str, Observations],
    start: Mapping[str, Mapping[str, int]],
    version: str,
    until: Mapping[str, Mapping[str, int]] | None = None,
) -> ArmSample:
    """What sessions on ``version`` were served between the ``start`` cursor and ``until`` (a cursor,
    default now)."""
    current = now.get(version, Observations())
    a = dict((until or {}).get(version) or cursor_of({version: current})[version])
    b = start.get(version) or {}
    latencies = current.latencies_ms[int(b.get("latencies", 0)) : int(a["latencies"])]
    hist = np.bincount(buckets_of(latencies), minlength=BUCKETS) if latencies else np.zeros(BUCKETS, np.int64)
    requests, errors, fallbacks, guardrails, feedback, thumbs_down = (
        int(a[k]) - int(b.get(k, 0)) for k in _COUNTS
    )
    return ArmSample(requests, errors, fallbacks, guardrails, feedback, thumbs_down, hist.astype(np.int64))


def run_evaluation(
    live: dict[str, Any], candidate: dict[str, Any], suites: list[dict[str, Any]], embedder: str | None
) -> GateResult:
    """Run the suites on the chatbot with both configs (a separate process) and gate the candidate
    (``evaluation_gate``: a check that passes on live may not fail on the candidate)."""
    with tempfile.TemporaryDirectory(prefix="mangaassist-eval-") as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps({"live": live, "candidate": candidate, "suites": suites}))
        env = dict(os.environ)
        if embedder:
            env["MANGAASSIST_EMBEDDER"] = embedder
        for var in ("MANGAASSIST_CONFIG_URL", "MANGAASSIST_CONFIG_DIR"):
            env.pop(var, None)
        done = subprocess.run(
            [sys.executable, "-m", "mangaassist.chatbot.evaluation", str(request)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
    if done.returncode != 0:
        raise ConfigError(f"the evaluation run failed: {done.stderr.strip()[-800:]}")
    results: dict[str, Any] = json.loads(done.stdout)
    return evaluation_gate(
        EvalScore(
            suite=suite["name"],
            case=case["id"],
            check=check["type"] + (f" {check['value']}" if "value" in check else ""),
            threshold=float(check["threshold"]),
            live=results["live"][f"{case['id']}#{i}"],
            candidate=results["candidate"][f"{case['id']}#{i}"],
        )
        for suite in suites
        for case in suite["cases"]
        for i, check in enumerate(case["checks"])
    )
