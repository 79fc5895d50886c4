"""The local platform's commands: ``up``, ``down``, ``status`` and ``revisions ...``.

``up`` starts the control plane of the ``dev`` environment (``mangaassist.toml``) in the
background and returns once the chatbot runs as revision ``r1`` (packed from the working tree)
at 100% behind its router; running it again is harmless. ``down`` stops it and every worker and
checks each PID. ``status`` lists services, revisions, processes, health, weights, shadow, URLs.
``revisions deploy|weights|shadow|retire|stats`` drive ``Compute`` by hand (pipelines do the same
through ``platform.factory``). Registered on the main app by ``register(app)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import Compute, NotRunning, Revision
from mangaassist.platform.factory import Platform, platform_for
from mangaassist.platform.metrics import Metrics

console = Console()
err = Console(stderr=True)

revisions_app = typer.Typer(
    help="Revisions of a service: deploy, weights, shadow, retire, stats.", no_args_is_help=True
)

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="State directory (default MANGAASSIST_HOME or .mangaassist/).")
]
EnvOpt = Annotated[str, typer.Option("--env", help="Environment in mangaassist.toml.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ServiceOpt = Annotated[str, typer.Option("--service", help="Service name.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _platform(env: str, home: Path | None) -> Platform:
    """The environment's platform (``platform.factory``); these commands run local environments."""
    try:
        platform = platform_for(env, home=home.resolve() if home else None)
    except MangaAssistError as exc:
        raise _fail(str(exc), 2) from None
    if platform.provider != "local":
        raise _fail(
            f"environment {env} runs on provider {platform.provider!r}; `up` runs local environments", 2
        )
    return platform


def _compute(env: str, home: Path | None) -> Compute:
    try:
        return _platform(env, home).compute()
    except NotRunning as exc:
        raise _fail(str(exc)) from None


def _metrics(env: str, home: Path | None) -> Metrics:
    try:
        return _platform(env, home).metrics()
    except NotRunning as exc:
        raise _fail(str(exc)) from None


def up(env: EnvOpt = "dev", home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Start the local platform in the background; return once every service is ready."""
    platform = _platform(env, home)
    if not as_json:
        err.print(f"starting the {env} platform (state in {platform.home}) ...", highlight=False)
    try:
        started = platform.up()
    except MangaAssistError as exc:
        raise _fail(str(exc)) from None
    report, config_url = started.report, started.config_url
    if as_json:
        doc = {
            "already_running": report.already_running,
            **report.status,
            "config_server": config_url,
            "edge": started.edge_url,
            "dashboard": started.dashboard_url,
        }
        print(json.dumps(doc, indent=2))
        return
    verb = "already running" if report.already_running else "started"
    console.print(
        f"control plane {verb} (PID {report.pid}), control API {report.control_url}", highlight=False
    )
    for name, url in report.services.items():
        console.print(f"  {name}: {url}", highlight=False)
    if config_url:
        console.print(f"  config server: {config_url}", highlight=False)
    if started.edge_url:
        console.print(f"  edge (widget and /v1): {started.edge_url}", highlight=False)
    if started.dashboard_url:
        console.print(
            f"  dashboard (runs, approvals, delivery; engine metrics at /metrics): {started.dashboard_url}",
            highlight=False,
        )
        from mangaassist.cli.dashboard_cmds import issue_for

        _, who, token, expiry = issue_for(None, "12h", platform.home)
        console.print(
            f"  sign in as {who} to approve from it (until {expiry}; a credential, keep it private; "
            f"others: `mangaassist dashboard link --as NAME`): {started.dashboard_url}/signin?token={token}",
            highlight=False,
            soft_wrap=True,
        )


def down(env: EnvOpt = "dev", home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Stop the local platform and every process it started (checked by PID)."""
    platform = _platform(env, home)
    stopped = platform.down()
    report, config_stopped = stopped.report, stopped.config_server_stopped
    if as_json:
        doc = {
            **report.__dict__,
            "config_server_stopped": config_stopped,
            "edge_stopped": stopped.edge_stopped,
            "dashboard_stopped": stopped.dashboard_stopped,
        }
        print(json.dumps(doc, indent=2))
    elif not report.was_running:
        console.print(f"nothing runs for {platform.home}")
    else:
        console.print(
            f"stopped {len(report.pids)} processes ({', '.join(map(str, report.pids))})"
            + (f"; killed {report.killed}" if report.killed else ""),
            highlight=False,
        )
    if config_stopped and not as_json:
        console.print(f"stopped the config server of {platform.home}")
    if stopped.edge_stopped and not as_json:
        console.print(f"stopped the edge of {platform.home}")
    if stopped.dashboard_stopped and not as_json:
        console.print(f"stopped the dashboard of {platform.home}")
    if report.left:
        raise _fail(f"still running: {report.left}")


def status(env: EnvOpt = "dev", home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Services, revisions, processes, health, traffic weights, shadow settings and URLs."""
    platform = _platform(env, home)
    try:
        data = platform.describe()
    except NotRunning as exc:
        if as_json:
            print(json.dumps({"running": False, "home": str(platform.home)}))
            raise typer.Exit(1) from None
        raise _fail(str(exc)) from None
    if as_json:
        print(json.dumps({"running": True, **data}, indent=2))
        return
    console.print(
        f"[bold]{data['environment']}[/]: control plane PID {data['pid']}, "
        f"control API {data['control_url']}, state {data['home']}",
        highlight=False,
    )
    routers = data.get("routers") or {}
    if routers.get("pid"):
        adopted = " (adopted after a control-plane crash)" if routers.get("adopted") else ""
        console.print(f"routers: PID {routers['pid']}{adopted}", highlight=False)
    edge = data.get("edge")
    if edge:
        console.print(
            f"edge: {edge['url']} (PID {edge['pid']}), serves {edge['environment']} and /previews/, "
            f"/v1 to {edge['api']}",
            highlight=False,
        )
    dashboard = data.get("dashboard")
    if dashboard:
        console.print(
            f"dashboard: {dashboard['url']} (PID {dashboard['pid']}), engine metrics at /metrics",
            highlight=False,
        )
    monitoring = data.get("monitoring")
    if monitoring:
        running = ", ".join(f"{k} {'up' if v else 'down'}" for k, v in monitoring["running"].items())
        console.print(
            f"monitoring: Prometheus {monitoring['prometheus'] or '-'}, Alertmanager "
            f"{monitoring['alertmanager'] or '-'} ({running or 'not started'}), "
            f"{monitoring['firing']} alert(s) firing",
            highlight=False,
        )
        for problem in monitoring["problems"]:
            console.print(f"  [yellow]{problem}[/]", highlight=False)
    for name, svc in data["services"].items():
        shadow = svc["shadow"]
        table = Table(
            title=f"{name}  {svc['url']}"
            + (f"  shadow {shadow['revision']} {shadow['share'] * 100:g}%" if shadow else "  no shadow")
        )
        for col in ("revision", "digest", "weight", "health", "workers (pid:port state restarts)", "reason"):
            table.add_column(col)
        for rev in svc["revisions"]:
            workers = ", ".join(
                f"{w['pid'] or '-'}:{w['port']} {w['state']} {w['restarts']}" for w in rev["workers"]
            )
            table.add_row(
                rev["name"],
                rev["digest"][:12],
                f"{rev['weight']:g}%",
                rev["health"],
                workers,
                rev["reason"] or "",
            )
        console.print(table)


def _parse_pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _fail(f"{what} {item!r}: expected NAME=VALUE", 2)
        out[key] = value
    return out


@revisions_app.command("deploy")
def deploy(
    name: Annotated[str, typer.Argument(help="Revision name, e.g. r2.")],
    service: ServiceOpt = "chatbot",
    source: Annotated[Path | None, typer.Option(help="Source tree to pack (default: the service's).")] = None,
    app: Annotated[
        str | None, typer.Option(help="ASGI factory module:callable (default: the service's).")
    ] = None,
    env_var: Annotated[
        list[str] | None, typer.Option("--set-env", help="NAME=VALUE for the workers.")
    ] = None,
    replicas: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    env: EnvOpt = "dev",
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pack a source tree into a revision, start its workers, wait until ready (weight 0)."""
    platform = _platform(env, home)
    settings = platform.settings
    svc = settings.services.get(service)
    if svc is None:
        raise _fail(f"no service {service!r} in environment {env}", 2)
    tree = source or svc.source
    if tree is None:
        raise _fail("--source is required for this service", 2)
    compute = _compute(env, home)
    try:
        artifact = pack_source(tree.resolve(), settings.home / "artifacts")
        revision = Revision(
            name, artifact, app or svc.app, _parse_pairs(env_var or [], "--set-env"), replicas or svc.replicas
        )
        result = compute.deploy(service, revision, timeout_s=svc.ready_timeout_s)
    except MangaAssistError as exc:
        raise _fail(str(exc), 2 if isinstance(exc, ConfigError | NotFoundError) else 1) from None
    if as_json:
        print(json.dumps(_revision_json(result), indent=2))
        return
    console.print(
        f"{service}/{name} ({artifact.short}): {result.health.value}"
        + (f" - {result.reason}" if result.reason else ""),
        highlight=False,
    )
    if result.health.value == "unhealthy":
        raise typer.Exit(1)


def _revision_json(result: Any) -> dict[str, Any]:
    return {
        "name": result.name,
        "digest": result.digest,
        "health": result.health.value,
        "reason": result.reason,
        "weight": result.weight,
        "workers": [
            {"pid": w.pid, "port": w.port, "state": w.state.value, "restarts": w.restarts}
            for w in result.workers
        ],
    }


@revisions_app.command("weights")
def weights(
    split: Annotated[list[str], typer.Argument(help="REVISION=PERCENT ..., e.g. r1=95 r2=5.")],
    service: ServiceOpt = "chatbot",
    env: EnvOpt = "dev",
    home: HomeOpt = None,
) -> None:
    """Set the split of new conversations, atomically (revisions left out get 0%)."""
    pairs = _parse_pairs(split, "weight")
    try:
        parsed = {k: float(v) for k, v in pairs.items()}
        result = _compute(env, home).set_weights(service, parsed)
    except ValueError:
        raise _fail("weights must be numbers", 2) from None
    except MangaAssistError as exc:
        raise _fail(str(exc), 2) from None
    console.print("weights: " + ", ".join(f"{k} {v:g}%" for k, v in result.items()), highlight=False)


@revisions_app.command("shadow")
def shadow(
    revision: Annotated[str | None, typer.Argument(help="Shadow revision (omit with --clear).")] = None,
    share: Annotated[float, typer.Option(help="Share of requests mirrored, 0..1.")] = 1.0,
    clear: Annotated[bool, typer.Option("--clear", help="Stop mirroring.")] = False,
    service: ServiceOpt = "chatbot",
    env: EnvOpt = "dev",
    home: HomeOpt = None,
) -> None:
    """Mirror a share of requests to a shadow revision (users only see the primary's answers)."""
    compute = _compute(env, home)
    try:
        if clear or revision is None:
            compute.clear_shadow(service)
            console.print("shadow cleared")
            return
        compute.set_shadow(service, revision, share)
    except MangaAssistError as exc:
        raise _fail(str(exc), 2) from None
    console.print(f"shadow: {revision} gets {share * 100:g}% of requests, mirrored", highlight=False)


@revisions_app.command("retire")
def retire(
    revision: Annotated[str, typer.Argument(help="Revision to drain and stop (weight must be 0).")],
    service: ServiceOpt = "chatbot",
    drain_timeout: Annotated[float, typer.Option(help="Seconds to wait for in-flight requests.")] = 30.0,
    last: Annotated[
        bool,
        typer.Option(
            "--last",
            help="It may be the service's only revision, whatever its weight: the service is then left "
            "with none and answers 503 until the next deploy.",
        ),
    ] = False,
    env: EnvOpt = "dev",
    home: HomeOpt = None,
) -> None:
    """Drain a revision (no new requests, in-flight ones finish), then stop its workers."""
    try:
        result = _compute(env, home).retire(service, revision, drain_timeout_s=drain_timeout, last=last)
    except MangaAssistError as exc:
        raise _fail(str(exc), 2) from None
    console.print(f"{service}/{revision}: {result.health.value}", highlight=False)


@revisions_app.command("stats")
def stats(
    service: ServiceOpt = "chatbot",
    cursor: Annotated[int | None, typer.Option(help="Also list raw observations after this cursor.")] = None,
    env: EnvOpt = "dev",
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per-revision outcomes the router recorded (requests, errors, latency, flags, feedback)."""
    data = _metrics(env, home).snapshot(service, cursor or 0)
    if cursor is None:
        data.pop("observations", None)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title=f"{service}: router stats (cursor {data['cursor']})")
    for col in (
        "revision",
        "requests",
        "failed",
        "p50 ms",
        "p99 ms",
        "fallback",
        "guardrail",
        "feedback",
        "moved",
    ):
        table.add_column(col)
    for name, c in data["revisions"].items():
        table.add_row(
            name, str(c["requests"]), str(c["failed"]), str(c["p50_ms"]), str(c["p99_ms"]),
            str(c["fallback"]), str(c["guardrail"]), json.dumps(c["feedback"]), str(c["sessions_moved_out"]),
        )  # fmt: skip
    console.print(table)
    for name, sc in data["shadow"].items():
        console.print(
            f"shadow {name}: {json.dumps({k: v for k, v in sc.items() if k != 'latency'})}", highlight=False
        )


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.add_typer(revisions_app, name="revisions")
