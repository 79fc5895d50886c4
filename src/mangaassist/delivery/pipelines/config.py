"""CD-06, configuration and prompts: validate -> evaluate -> version -> staged rollout -> promote.

The runbook (``build``), one engine step each:

1. ``validate``: the profile's JSON Schema and semantic checks (``delivery/config_profiles.py``);
   any problem (file, line, field) aborts. Invalid content is never deployed.
2. ``evaluate``: the prompt regression suites (``config/evals/*.yaml``) run on the chatbot twice,
   with the candidate profile and with the live one (a separate process:
   ``python -m mangaassist.cli.config_eval``; the delivery layer never imports the chatbot). A
   check that passes on live and fails on the candidate is a regression and aborts the deploy.
3. ``version``: store the content as an immutable version named by its digest. Content equal to
   the live version ends the run there (nothing to deploy). A profile without any live version
   gets this one as its first stable version.
4. ``rollout``: raise the candidate's share of session buckets step by step (``linear``: +step;
   ``exponential``: step, 2*step, 4*step...; ``all-at-once``). At each step the CD-01 judge
   (``SequentialJudge``) compares the requests of sessions on the new version with those on the
   old one over the same period (errors, latency, fallback and guardrail flags, thumbs-down, as
   the workers report them to the config server). FAIL sets the percentage to 0 at once and the
   run fails; PASS after ``step_seconds`` moves on; INCONCLUSIVE extends the step up to
   ``step_max_seconds``, then fails safe (percentage 0). At 100% the ``bake`` watches the same
   alarms, the new version against the old one's figures from the rollout.
5. ``promote``: the new version becomes stable for every session.

The rollback (a failed step, an abort) sets the candidate's percentage to 0: one pointer move,
in force on every worker within one poll interval.

Params: ``profile`` (required), ``config_dir`` (default ``ROOT/config``), ``strategy``
(linear | exponential | all-at-once), ``step`` (percent, 20), ``step_seconds`` (10),
``step_max_seconds`` (60), ``bake_seconds`` (60), ``url`` (config server; default
``MANGAASSIST_CONFIG_URL`` or the server of ``home``, started if needed), ``home``, ``evaluate``
(true), ``embedder`` (for the evaluation), ``actor``, ``judge`` (``JudgeSettings`` fields).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mangaassist.core.configspec import PROFILES
from mangaassist.core.errors import ConfigError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis import ArmSample, JudgeSettings, SequentialJudge
from mangaassist.delivery.analysis.samples import BUCKETS, buckets_of
from mangaassist.delivery.config_profiles import load_eval_suites, read_profile, validate_profile
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext
from mangaassist.platform.config_store import ConfigStore, ConfigStoreError, Observations
from mangaassist.platform.local.config_server import HttpConfigStore, ensure_server

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
    plan_percentages(strategy, float(params.get("step", 20)))
    JudgeSettings(**params.get("judge", {}))
    return Pipeline(
        NAME,
        (
            Step("validate", _validate, f"schema and semantic checks of {profile}"),
            Step("evaluate", _evaluate, "prompt regression suites: candidate against live"),
            Step("version", _version, "store an immutable, content-hashed version"),
            Step("rollout", _rollout, "staged rollout by session bucket, judged at every step; bake"),
            Step("promote", _promote, "the new version becomes stable for every session"),
        ),
        rollback=_rollback,
        description="configuration and prompts: validated, eval-gated, sticky staged rollout",
        params=params,
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
    )


def previous_stable(store: ConfigStore, profile: str) -> str | None:
    """The stable version before the current one (from the history of promotions)."""
    current = store.rollout(profile).stable
    promoted = [e["version"] for e in store.history(profile) if e["action"] == "promote"]
    earlier = [v for v in promoted if v != current]
    return earlier[-1] if earlier else None


def _move_pointer(ctx: StepContext) -> Outcome:
    store = open_store(ctx.params)
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
    store = open_store(ctx.params)
    profile = ctx.params["profile"]
    live = live_contents(store, folder)
    candidate = {**live, profile: read_profile(folder, profile)}
    report = run_evaluation(live, candidate, suites, ctx.params.get("embedder"))
    regressions = [r for r in report["rows"] if r["status"] == "regression"]
    numbers = {"checks": float(len(report["rows"])), "regressions": float(len(regressions))}
    detail = {"rows": report["rows"]}
    if regressions:
        names = ", ".join(f"{r['case']}/{r['check']}" for r in regressions)
        return Outcome.failed(f"evaluation regression: {names}", abort=True, detail=detail)
    return Outcome.done({"checks": len(report["rows"])}, verdict=Verdict.PASS, numbers=numbers, detail=detail)


def _version(ctx: StepContext) -> Outcome:
    store = open_store(ctx.params)
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
    return Outcome.done({"version": created, "previous": rollout.stable})


def _rollout(ctx: StepContext) -> Outcome:
    made = ctx.outputs["version"]
    if made.get("first") or made.get("unchanged"):
        return Outcome.done({"skipped": True})
    p = ctx.params
    store = open_store(p)
    profile, version, previous = p["profile"], made["version"], made["previous"]
    judge = SequentialJudge(JudgeSettings(**p.get("judge", {})))
    step_s, step_max = float(p.get("step_seconds", 10)), float(p.get("step_max_seconds", 60))
    actor = str(p.get("actor") or ctx.run.requester)
    baseline_total = ArmSample()
    steps: list[dict[str, Any]] = []
    for pct in plan_percentages(p.get("strategy", "linear"), float(p.get("step", 20))):
        ctx.effect(f"set-{pct:g}", _setter(store, profile, version, pct, actor, f"step {pct:g}%"))
        ctx.progress(f"{version} on {pct:g}% of sessions", pct / 100)
        start = _snapshot(store, profile)
        started = time.monotonic()
        while True:
            ctx.sleep(min(1.0, step_s))
            now = _snapshot(store, profile)
            cand = _sample(now, start, version)
            base = _sample(now, start, previous)
            if pct >= 100:  # nobody is on the old version: compare with its figures from the rollout
                base = _rates_only(baseline_total, cand)
            verdict = judge.judge(cand, base)
            elapsed = time.monotonic() - started
            if verdict.verdict is Verdict.FAIL:
                break
            if verdict.verdict is Verdict.PASS and elapsed >= step_s:
                break
            if elapsed >= step_max:
                break
        if pct < 100:
            baseline_total = baseline_total.merged(base)
        steps.append(
            {
                "percentage": pct,
                "verdict": verdict.verdict.value,
                "candidate_requests": cand.requests,
                "baseline_requests": base.requests,
                "candidate_fallbacks": cand.fallbacks,
                "baseline_fallbacks": base.fallbacks,
                "seconds": round(elapsed, 1),
                "judgement": verdict.as_dict(),
            }
        )
        if verdict.verdict is not Verdict.PASS:
            ctx.effect(f"abort-at-{pct:g}", _setter(store, profile, None, 0.0, actor, verdict.summary()))
            why = (
                verdict.summary()
                if verdict.verdict is Verdict.FAIL
                else f"still inconclusive after {step_max:g}s at {pct:g}% (too little traffic): rolled back"
            )
            return Outcome.failed(f"{pct:g}%: {why}", detail={"steps": steps})
        if pct >= 100:
            bake = float(p.get("bake_seconds", 60))
            bake_ok = _bake(ctx, store, judge, profile, version, baseline_total, bake)
            steps.append(bake_ok)
            if bake_ok["verdict"] == Verdict.FAIL.value:
                ctx.effect(
                    "abort-in-bake",
                    lambda _: store.set_rollout(
                        profile, candidate=None, percentage=0, actor=actor, reason="bake alarm"
                    ),
                )
                return Outcome.failed("bake: " + bake_ok["summary"], detail={"steps": steps})
    return Outcome.done(
        {"version": version, "steps": len(steps)},
        verdict=Verdict.PASS,
        numbers={"steps": float(len(steps))},
        detail={"steps": steps},
    )


def _bake(
    ctx: StepContext,
    store: ConfigStore,
    judge: SequentialJudge,
    profile: str,
    version: str,
    baseline: ArmSample,
    seconds: float,
) -> dict[str, Any]:
    start = _snapshot(store, profile)
    deadline = time.monotonic() + seconds
    cand = ArmSample()
    verdict = judge.judge(cand, baseline)
    while time.monotonic() < deadline:
        ctx.sleep(min(1.0, seconds))
        cand = _sample(_snapshot(store, profile), start, version)
        verdict = judge.judge(cand, _rates_only(baseline, cand))
        if verdict.verdict is Verdict.FAIL:
            break
    return {
        "percentage": 100.0,
        "bake_seconds": seconds,
        "verdict": verdict.verdict.value,
        "candidate_requests": cand.requests,
        "summary": verdict.summary(),
    }


def _promote(ctx: StepContext) -> Outcome:
    made = ctx.outputs["version"]
    if made.get("first") or made.get("unchanged"):
        return Outcome.done({"live": made["version"], "previous": made["previous"], "moved": False})
    store = open_store(ctx.params)
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
    store = open_store(ctx.params)
    profile = ctx.params["profile"]
    if store.rollout(profile).candidate is not None:
        store.set_rollout(
            profile, candidate=None, percentage=0, actor="rollback", reason=ctx.run.reason or ""
        )
    return Outcome.done({"percentage": 0})


# -- helpers ---------------------------------------------------------------------------------------


def _setter(
    store: ConfigStore, profile: str, version: str | None, pct: float, actor: str, reason: str
) -> Callable[[str], Any]:
    def apply(_: str) -> Any:
        return store.set_rollout(
            profile, candidate=version, percentage=pct, actor=actor, reason=reason
        ).as_dict()

    return apply


def config_dir(params: dict[str, Any]) -> Path:
    if params.get("config_dir"):
        return Path(params["config_dir"])
    from mangaassist.delivery.pipelines.kb import find_root

    return find_root() / "config"


def state_home(params: dict[str, Any]) -> Path:
    if params.get("home"):
        return Path(params["home"])
    env = os.environ.get("MANGAASSIST_HOME")
    if env:
        return Path(env)
    return config_dir(params).parent / ".mangaassist"


def open_store(params: dict[str, Any]) -> ConfigStore:
    url = params.get("url") or os.environ.get("MANGAASSIST_CONFIG_URL") or ensure_server(state_home(params))
    return HttpConfigStore(str(url))


def live_contents(store: ConfigStore, folder: Path) -> dict[str, Any]:
    """What sessions get today, per profile: the stable version, or the files if none is stored."""
    out = {}
    for name in PROFILES:
        stable = store.rollout(name).stable
        out[name] = store.version(name, stable).content if stable else read_profile(folder, name)
    return out


def _rates_only(baseline: ArmSample, candidate: ArmSample) -> ArmSample:
    """The baseline with the candidate's latency shape: once no session is on the old version, its
    latencies come from another period (another load), so only the rates are compared."""
    scale = baseline.requests / candidate.requests if candidate.requests else 0.0
    latency = np.round(candidate.latency * scale).astype(np.int64)
    return replace(baseline, latency=latency)


def _snapshot(store: ConfigStore, profile: str) -> dict[str, Observations]:
    return store.observations(profile)


def _sample(now: dict[str, Observations], start: dict[str, Observations], version: str) -> ArmSample:
    a, b = now.get(version, Observations()), start.get(version, Observations())
    latencies = a.latencies_ms[len(b.latencies_ms) :]
    hist = np.bincount(buckets_of(latencies), minlength=BUCKETS) if latencies else np.zeros(BUCKETS, np.int64)
    return ArmSample(
        a.requests - b.requests,
        a.errors - b.errors,
        a.fallbacks - b.fallbacks,
        a.guardrails - b.guardrails,
        a.feedback - b.feedback,
        a.thumbs_down - b.thumbs_down,
        hist.astype(np.int64),
    )


def run_evaluation(
    live: dict[str, Any], candidate: dict[str, Any], suites: list[dict[str, Any]], embedder: str | None
) -> dict[str, Any]:
    """Run the suites on the chatbot with both configs (a separate process) and compare."""
    with tempfile.TemporaryDirectory(prefix="mangaassist-eval-") as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps({"live": live, "candidate": candidate, "suites": suites}))
        env = dict(os.environ)
        if embedder:
            env["MANGAASSIST_EMBEDDER"] = embedder
        for var in ("MANGAASSIST_CONFIG_URL", "MANGAASSIST_CONFIG_DIR"):
            env.pop(var, None)
        done = subprocess.run(
            [sys.executable, "-m", "mangaassist.cli.config_eval", str(request)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
    if done.returncode != 0:
        raise ConfigError(f"the evaluation run failed: {done.stderr.strip()[-800:]}")
    results: dict[str, Any] = json.loads(done.stdout)
    rows = []
    for suite in suites:
        for case in suite["cases"]:
            for i, check in enumerate(case["checks"]):
                key = f"{case['id']}#{i}"
                live_rate = results["live"][key]
                cand_rate = results["candidate"][key]
                threshold = float(check["threshold"])
                live_ok, cand_ok = live_rate >= threshold, cand_rate >= threshold
                status = "ok" if cand_ok else ("regression" if live_ok else "failing on both")
                rows.append(
                    {
                        "suite": suite["name"],
                        "case": case["id"],
                        "check": check["type"] + (f" {check['value']}" if "value" in check else ""),
                        "threshold": threshold,
                        "live": live_rate,
                        "candidate": cand_rate,
                        "status": status,
                    }
                )
    return {"rows": rows}
