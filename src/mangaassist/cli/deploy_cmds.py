"""``mangaassist deploy app``, ``deploy model``, ``rollback app`` and ``traffic``: CD-01 and CD-03.

``deploy app`` starts a CD-01 run on the delivery engine (locked per environment, audited,
resumable with ``runs resume``) and prints what it did: the release's digest, the gates' numbers,
each phase's verdict and, when it rolled back, the judge's numbers. It releases one service: the
environment's deploy setting ``service`` (default ``chatbot``) or ``--service NAME``, one the
environment declares (``deploy services`` lists them). ``rollback app`` flips a live deploy of that
service back to its stable revision at once (then the run rolls back: the candidate is retired), or,
when no deploy is in flight, redeploys the release that the service's last promotion replaced. ``traffic``
is the bounded load generator (``delivery.rollout.load``). ``deploy model intent`` starts a CD-03
run (``delivery.pipelines.model``: gate, shadow, canary, approval by policy, promote the alias) and
prints the gate's table, the shadow's numbers and disagreements, each canary verdict and the alias
move. Registered by ``register(app)``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mangaassist.cli.engine_cmds import (
    DryRunOpt,
    JsonOpt,
    ProgressDisplay,
    _print_json,
    _state_text,
    _store,
    console,
    dry_run,
    fail,
    handled,
    say,
)
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.analysis.gates import scan_limits
from mangaassist.delivery.engine import audit
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.pipelines import app as cd01
from mangaassist.delivery.pipelines import model as cd03
from mangaassist.delivery.pipelines import registry
from mangaassist.delivery.rollout.load import run_load
from mangaassist.platform.factory import platform_for
from mangaassist.platform.settings import load_settings
from mangaassist.views.runs import engine_executor, resolve_actor, run_pipeline

deploy_app = typer.Typer(
    help="Deploy a service (CD-01: the application) or a model (CD-03).", no_args_is_help=True
)
rollback_app = typer.Typer(help="Roll a service back.", no_args_is_help=True)

EnvOpt = Annotated[str, typer.Option("--env", help="Target environment (mangaassist.toml, policy.yaml).")]
ServiceOpt = Annotated[
    str | None,
    typer.Option(
        "--service",
        help="The service, one the environment declares (its services tables in mangaassist.toml; "
        "`deploy services` lists them). Default: the environment's deploy setting `service`, chatbot.",
    ),
]


def _parse_env(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set-env {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _run(
    params: dict[str, Any],
    env: str,
    as_json: bool,
    pipeline: str = cd01.NAME,
    overrides: dict[str, str] | None = None,
) -> tuple[RunRecord, dict[str, StepRecord]]:
    return run_pipeline(
        ProgressDisplay(as_json), pipeline, params, environment=env, overrides=overrides, announce=True
    )


def _report(run: RunRecord, steps: dict[str, StepRecord], as_json: bool) -> None:
    build = steps["build"].output if "build" in steps else {}
    doc = {
        "run": run.id,
        "state": run.effective_state.value,
        "reason": run.reason,
        "digest": build.get("digest"),
        "wheel_digest": (build.get("release") or {}).get("wheel_digest"),
        "already_live": bool(build.get("already_live")),
        "candidate": build.get("candidate"),
        "stable": build.get("stable"),
        "steps": {
            name: {
                "status": s.status.value,
                "verdict": s.detail.get("verdict"),
                "numbers": s.detail.get("numbers", {}),
                "reason": s.reason,
            }
            for name, s in steps.items()
        },
        "release": steps["promote"].output if "promote" in steps else {},
    }
    if as_json:
        _print_json(doc)
    else:
        if doc["already_live"]:
            say(f"release {str(doc['digest'])[:12]} is already live as {doc['stable']}: nothing to do")
        else:
            say(f"release {str(doc['digest'])[:12]} as {doc['candidate']} (stable: {doc['stable']})")
        for name, s in steps.items():
            if s.status.value in ("pending", "skipped") or s.detail.get("skipped"):
                continue
            numbers = " ".join(f"{k}={_fmt(v)}" for k, v in (s.detail.get("numbers") or {}).items())
            verdict = s.detail.get("verdict") or ""
            say(f"  {name:<13} {s.status.value:<7} {verdict:<12} {numbers}".rstrip())
        console.print(f"run {run.id} {_state_text(run.effective_state)}", highlight=False)
        if run.reason:
            say(f"reason: {run.reason}")
    if run.effective_state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@deploy_app.command("app")
def deploy(
    env: EnvOpt = "dev",
    service: ServiceOpt = None,
    strategy: Annotated[
        str | None, typer.Option(help="canary, blue-green or all-at-once (default: the environment's).")
    ] = None,
    source: Annotated[
        Path | None, typer.Option(help="Project to build (pyproject.toml + src/); default: this checkout.")
    ] = None,
    artifact: Annotated[Path | None, typer.Option(help="A built .whl (or .tar) to deploy instead.")] = None,
    set_env: Annotated[
        list[str] | None, typer.Option("--set-env", help="KEY=VALUE for the new revision (repeatable).")
    ] = None,
    steps: Annotated[str | None, typer.Option(help="Canary weights in %, e.g. 5,25,50,100.")] = None,
    scan_limit: Annotated[
        list[str] | None,
        typer.Option(
            "--scan-limit",
            help="SEVERITY=N: the most findings of SEVERITY the image (ECS_IMAGE, aws) may have in this "
            "release, over the environment's scan_limits (repeatable; recorded in the run).",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    dry: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build, test, smoke, load-gate and roll out a service (the chatbot); roll back by itself on FAIL."""
    if source is not None and artifact is not None:
        raise fail("--source and --artifact exclude each other", 2, as_json=as_json)
    with handled(as_json):
        params: dict[str, Any] = {"environment": env}
        if service is not None:
            params["service"] = service
        if strategy:
            params["strategy"] = strategy
        if source is not None:
            params["source"] = str(source.resolve())
        if artifact is not None:
            params["artifact"] = str(artifact.resolve())
        if set_env:
            params["set_env"] = _parse_env(set_env)
        if steps:
            params["steps"] = steps
        if scan_limit:
            params["scan_limits"] = scan_limits(",".join(scan_limit), "--scan-limit")
        description = cd01.describe(params)  # validates service, strategy, steps and settings first
    if dry:
        return dry_run(cd01.NAME, params, env, as_json)
    if not yes:
        if not sys.stdin.isatty():
            raise fail("not a terminal: pass --yes to deploy without confirmation", 2, as_json=as_json)
        typer.confirm(f"{description}?", abort=True)
    with handled(as_json):
        run, records = _run(params, env, as_json)
    _report(run, records, as_json)


@deploy_app.command("model")
def deploy_model(
    name: Annotated[str, typer.Argument(help="The registered model (today: intent).")],
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Registry version (default: the 'candidate').")
    ] = None,
    env: EnvOpt = "dev",
    steps: Annotated[str | None, typer.Option(help="Canary weights in %, e.g. 5,25,50,100.")] = None,
    override_gate: Annotated[
        bool,
        typer.Option(
            "--override-gate",
            help="Go on past a failed offline gate (needs --reason; only where policy allows: dev).",
        ),
    ] = False,
    reason: Annotated[str, typer.Option(help="Why the override (audited).")] = "",
    config: Annotated[
        Path | None, typer.Option("--config", help="Model config (default: ml/intent.yaml).", dir_okay=False)
    ] = None,
    set_env: Annotated[
        list[str] | None,
        typer.Option("--set-env", help="KEY=VALUE for the candidate revision, e.g. a fault drill."),
    ] = None,
    shadow_min_requests: Annotated[
        int | None, typer.Option(help="Intent comparisons the shadow needs (default 100).")
    ] = None,
    shadow_min_agreement: Annotated[
        float | None, typer.Option(help="Agreement with the live model the shadow needs (default 0.85).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    dry: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Gate, shadow, canary, approve by policy and promote a registered model; roll back on FAIL.

    The alias moves only at the very end: a FAIL anywhere puts the weights back on the live
    revision and leaves 'champion' where it was."""
    if override_gate and not reason.strip():
        raise fail("--override-gate needs --reason TEXT (overrides are audited)", 2, as_json=as_json)
    with handled(as_json):
        params: dict[str, Any] = {"environment": env}
        if version:
            params["version"] = version
        if steps:
            params["steps"] = steps
        if config is not None:
            if not config.is_file():
                raise ConfigError(f"--config {config}: no such file")
            params["model_config"] = str(config.resolve())
        if set_env:
            params["set_env"] = _parse_env(set_env)
        if shadow_min_requests is not None:
            params["shadow_min_requests"] = shadow_min_requests
        if shadow_min_agreement is not None:
            params["shadow_min_agreement"] = shadow_min_agreement
        model_name = cd03.model_name(params)
        if name != model_name:
            raise ConfigError(f"model {name!r}: the model config deploys {model_name!r}")
        overrides: dict[str, str] = {}
        if override_gate:
            policy = load_policy(None).for_run(env, cd03.NAME)
            if policy.gates_rule not in policy.rules():
                raise ConfigError(
                    f"--override-gate: the policy of {env} does not let a failed gate pass "
                    f"(gate_overrides is not true for {env} in {policy.source})"
                )
            overrides[policy.gates_rule] = reason
        description = cd03.describe(params)  # validates the settings first
    if dry:
        return dry_run(cd03.NAME, params, env, as_json)
    if not yes:
        if not sys.stdin.isatty():
            raise fail("not a terminal: pass --yes to deploy without confirmation", 2, as_json=as_json)
        typer.confirm(f"{description}?", abort=True)
    with handled(as_json):
        run, records = _run(params, env, as_json, cd03.NAME, overrides)
    _model_report(run, records, as_json)


def _model_report(run: RunRecord, steps: dict[str, StepRecord], as_json: bool) -> None:
    resolve = steps["resolve"].output if "resolve" in steps else {}
    gate = steps["gate"].detail.get("gate", {}) if "gate" in steps else {}
    shadow = steps["shadow"].detail if "shadow" in steps else {}
    promotion = steps["promote"].output if "promote" in steps else {}
    canary = {
        n: {"verdict": s.detail.get("verdict"), "numbers": s.detail.get("numbers", {}), "reason": s.reason}
        for n, s in steps.items()
        if n.startswith("canary-") and s.status.value not in ("pending", "skipped")
    }
    disagreements: list[dict[str, Any]] = list((shadow.get("shadow") or {}).get("disagreements", []))
    doc: dict[str, Any] = {
        "run": run.id,
        "state": run.effective_state.value,
        "reason": run.reason,
        "model": resolve.get("model"),
        "version": resolve.get("version"),
        "candidate": resolve.get("candidate"),
        "stable": resolve.get("stable"),
        "champion_before": resolve.get("champion"),
        "champion_after": promotion.get("champion", resolve.get("champion")),
        "gate": {
            "verdict": gate.get("verdict"),
            "overridden": steps["gate"].detail.get("overridden") if "gate" in steps else None,
            "rows": gate.get("rows", []),
            "reasons": gate.get("reasons", []),
        },
        "shadow": {
            "verdict": shadow.get("verdict"),
            **(shadow.get("numbers") or {}),
            "reasons": shadow.get("reasons", []),
            "explained_by_offline": shadow.get("explained_by_offline"),
            "disagreements": disagreements,
            "disagreements_file": shadow.get("disagreements_file"),
        },
        "canary": canary,
        "steps": {n: {"status": s.status.value, "reason": s.reason} for n, s in steps.items()},
    }
    if as_json:
        _print_json(doc)
    else:
        say(
            f"model {doc['model']} version {doc['version']} as {doc['candidate']} "
            f"(live: {doc['stable']}, champion: {doc['champion_before'] or 'none'})"
        )
        for name, s in steps.items():
            if s.status.value in ("pending", "skipped"):
                continue
            numbers = " ".join(f"{k}={_fmt(v)}" for k, v in (s.detail.get("numbers") or {}).items())
            verdict = s.detail.get("verdict") or ""
            say(f"  {name:<11} {s.status.value:<7} {verdict:<12} {numbers}".rstrip())
        for d in disagreements[:5]:
            say(f"  disagreement: {d.get('text')!r}: live {d.get('primary')}, candidate {d.get('shadow')}")
        console.print(f"run {run.id} {_state_text(run.effective_state)}", highlight=False)
        say(f"champion: {doc['champion_before'] or 'none'} -> {doc['champion_after'] or 'none'}")
        if run.reason:
            say(f"reason: {run.reason}")
    if run.effective_state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


@deploy_app.command("services")
def services(env: EnvOpt = "dev", as_json: JsonOpt = False) -> None:
    """List the services `deploy app --service` can release here (mangaassist.toml); changes nothing.

    One name per line (`--json`: the environment, its default service and each service's compute)."""
    with handled(as_json):
        declared = cd01.declared_services(env)
        default = cd01.settings_for(env).service
    if as_json:
        _print_json(
            {
                "environment": env,
                "default": default,
                "services": [{"name": n, "compute": c} for n, c in sorted(declared.items())],
            }
        )
        return
    for name in sorted(declared):
        say(name)


def _live_run(env: str) -> RunRecord | None:
    store = _store()
    with store.transaction() as conn:
        candidates = store.runs(conn, _now(), limit=100, environment=env)
    for run in candidates:
        if run.pipeline == cd01.NAME and not run.effective_state.final:
            return run
    return None


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


@rollback_app.command("app")
def rollback(env: EnvOpt = "dev", service: ServiceOpt = None, as_json: JsonOpt = False) -> None:
    """All traffic back to the service's previous release now: flip its deploy in flight, or redeploy
    the release its last promotion replaced."""
    with handled(as_json):
        chosen = cd01.settings_for(env, service).service
        live = _live_run(env)
        if live is not None:
            running = cd01.run_service(live.params)
            if running != chosen:
                raise fail(
                    f"run {live.id} is releasing {running} in {env} (CD-01 runs one service at a time): "
                    f"nothing of {chosen} is in flight; to roll that run back: "
                    f"mangaassist rollback app --env {env} --service {running}",
                    1,
                    as_json=as_json,
                )
            _flip(live, env, running, as_json)
            return
        history = cd01.releases(load_settings(env), chosen)
        if not history:
            raise ConfigError(
                f"nothing to roll back of {chosen} in {env}: no deploy in flight and no promoted release"
            )
        last = history[-1]
        if not last.get("previous_artifact"):
            raise ConfigError(
                f"the last promoted release of {chosen} in {env} ({last['revision']}) was the service's "
                "first: there is no earlier release to roll back to (deploy a fixed one instead)"
            )
        status = platform_for(env).compute().status(chosen)
        live_names = [n for n, w in status.weights.items() if w > 0]
        if live_names != [last["revision"]]:
            raise ConfigError(
                f"the live revision of {chosen} is {live_names}, not {last['revision']} (the last promoted "
                "release); nothing safe to roll back to automatically"
            )
        params = {
            "environment": env,
            "service": chosen,
            "artifact": last["previous_artifact"],
            "set_env": last.get("previous_set_env") or {},
            "strategy": "blue-green",
            "rollback_window_s": 0,
            "skip_tests": True,
            "rollback_of": last["revision"],
        }
        run, records = _run(params, env, as_json)
    _report(run, records, as_json)


def _flip(run: RunRecord, env: str, service: str, as_json: bool) -> None:
    """The deploy in flight: stable gets all traffic at once here, then the run rolls back."""
    store = _store()
    with store.transaction() as conn:
        build = next((s for s in store.steps(conn, run.id) if s.name == "build"), None)
    stable = (build.output if build else {}).get("stable")
    flipped: dict[str, Any] = {}
    if stable:
        started = time.perf_counter()
        weights = platform_for(env).compute().set_weights(service, {stable: 100.0})
        flipped = {"weights": dict(weights), "took_ms": round((time.perf_counter() - started) * 1000, 3)}
        with store.transaction() as conn:
            audit.append(
                store,
                conn,
                at=_now(),
                kind="app.rollback",
                actor=resolve_actor(),
                run_id=run.id,
                detail={"service": service, "stable": stable, **flipped},
            )
    executor = engine_executor(store)
    pipeline = registry.build(run.pipeline, run.params)
    final = executor.abort(run.id, pipeline, actor=resolve_actor(), reason="mangaassist rollback app")
    deadline = time.monotonic() + 120
    while not final.effective_state.final and time.monotonic() < deadline:
        time.sleep(0.25)
        with store.transaction() as conn:
            final = store.run(conn, run.id, _now())
    doc = {
        "run": run.id,
        "state": final.effective_state.value,
        "service": service,
        "stable": stable,
        "flip": flipped,
    }
    if as_json:
        _print_json(doc)
    else:
        say(
            f"all traffic of {service} on {stable} ({flipped.get('took_ms', 0):.1f} ms); "
            f"run {run.id}: {doc['state']}"
        )
    if not final.effective_state.final:
        raise typer.Exit(1)


def traffic(
    rps: Annotated[float, typer.Option("--rps", help="Requests per second (at most 2000).")] = 10.0,
    duration: Annotated[float, typer.Option("--duration", help="Seconds of load.")] = 10.0,
    sessions: Annotated[int, typer.Option("--sessions", help="Conversations at a time.")] = 20,
    url: Annotated[
        str | None,
        typer.Option(
            help="Where to send it (default: the environment's own service URL, wherever it runs; "
            "a URL given here must be loopback)."
        ),
    ] = None,
    env: EnvOpt = "dev",
    service: ServiceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send realistic chat conversations through the router for a bounded time, then report."""
    with handled(as_json):
        own = url is None  # the environment's own service: its URL may be another host (aws)
        if url is None:  # the service first: an undeclared one is refused before the platform is asked
            chosen = cd01.settings_for(env, service).service
            target = platform_for(env).compute().url(chosen)
        else:
            target = url
        report = run_load(target, rps=rps, duration_s=duration, sessions=sessions, remote=own)
    doc = report.as_dict()
    if as_json:
        _print_json(doc)
        return
    say(
        f"{doc['requests']} requests in {doc['duration_s']}s ({doc['achieved_rps']} req/s) to {target}: "
        f"{doc['ok']} ok, {doc['failed']} failed; p50 {doc['p50_ms']} ms, p99 {doc['p99_ms']} ms"
    )
    say(f"by revision: {doc['by_revision']}; conversations {doc['conversations']}, "
        f"served by two revisions {doc['mixed_conversations']}")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")
    app.add_typer(rollback_app, name="rollback")
    app.command("traffic")(traffic)
