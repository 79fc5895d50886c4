"""The dashboard's HTTP server (see the package docstring): pages, their JSON, live events, approvals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from mangaassist.core.errors import MangaAssistError, NotFoundError
from mangaassist.dashboard import NAME, auth
from mangaassist.dashboard.charts import evidence_svg as charts_svg
from mangaassist.delivery import report
from mangaassist.delivery.engine import approvals
from mangaassist.delivery.engine.metrics import EngineCollector
from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.engine.state import StateStore
from mangaassist.platform import daemons
from mangaassist.platform.factory import Platform, platform_for
from mangaassist.views import history, inventory

MODULE = "mangaassist.dashboard"
DEFAULT_PORT = 8090
RUNS_SHOWN = 50
AUDIT_SHOWN = 200
LIVE_INTERVAL_S = 0.5
"""How often a live page's data is read (the browser gets an event only when it changed)."""
HEARTBEAT_S = 15.0
MAX_COMMENT = 2000
MAX_FORM_BYTES = 16_384
HERE = Path(__file__).parent

SECTIONS = ("config_profiles", "knowledge_bases", "models", "frontend", "monitoring")
"""The Versions page's sections (``views.inventory.versions``)."""

NAV = (
    ("/runs", "Runs"),
    ("/approvals", "Approvals"),
    ("/services", "Services"),
    ("/versions", "Versions"),
    ("/delivery", "Delivery"),
    ("/audit", "Audit"),
)


@dataclass
class Dashboard:
    """What the routes share: the state store, the session key, who may read."""

    store: StateStore
    key: bytes
    open_reads: bool = True
    """Loopback: reading needs no session. Bound elsewhere: every page needs one."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["step_detail"] = step_detail
    return env


def step_detail(step: dict[str, Any]) -> str:
    """One line of what a step found: verdict, numbers, approvals, override, reason."""
    detail = step.get("detail") or {}
    parts: list[str] = []
    if "verdict" in detail:
        parts.append(str(detail["verdict"]))
    numbers = detail.get("numbers") or {}
    parts += [f"{k}={_number(v)}" for k, v in numbers.items()]
    if detail.get("approved_by"):
        parts.append("approved by " + ", ".join(map(str, detail["approved_by"])))
    if detail.get("overridden"):
        parts.append(f"overridden ({detail['overridden']}: {detail.get('reason', '')})")
    if detail.get("wait_for") and step.get("status") == "waiting":
        parts.append(f"waiting for {detail['wait_for']}")
    if step.get("reason"):
        parts.append(str(step["reason"]))
    return " ".join(parts)


def _maybe_number(value: Any) -> str:
    """A measurement for a table cell: 4 significant digits, an en dash for none."""
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def create_app(
    store: StateStore,
    key: bytes,
    *,
    open_reads: bool = True,
    platform: Callable[[], Platform] | None = None,
) -> FastAPI:
    """The dashboard's routes over one state store; ``key`` signs sessions and CSRF tokens;
    ``platform`` opens the environment's platform for the Services and Versions pages (None: those
    pages say the dashboard was started without an environment)."""
    app = FastAPI(title="MangaAssist delivery dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    dash = Dashboard(store, key, open_reads)
    templates = _templates()
    registry = CollectorRegistry()
    registry.register(EngineCollector(store, lambda: datetime.now(UTC)))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def session_of(request: Request) -> auth.Session | None:
        token = request.cookies.get(auth.COOKIE)
        if not token:
            return None
        try:
            return auth.verify(key, token)
        except auth.NotSignedIn:
            return None

    def reader(request: Request) -> auth.Session | None:
        session = session_of(request)
        if session is None and not dash.open_reads:
            raise StarletteHTTPException(401, "sign in first: `mangaassist dashboard link --as NAME`")
        return session

    def page(request: Request, name: str, section: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = context.pop("session", None) or session_of(request)
        body = templates.get_template(name).render(
            nav=NAV,
            section=section,
            session=session,
            csrf=auth.csrf_token(key, session) if session else "",
            live=context.pop("live", None),
            **context,
        )
        return HTMLResponse(body, status_code=status)

    def fragment(name: str, **context: Any) -> str:
        return templates.get_template(name).render(step_detail=step_detail, **context)

    @app.exception_handler(MangaAssistError)
    async def engine_error(request: Request, exc: MangaAssistError) -> Response:
        status = 404 if isinstance(exc, NotFoundError) else 400
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=status)
        return page(
            request, "error.html", "", status, title="error", heading="Not possible", message=str(exc)
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/") or exc.status_code == 401:
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        return page(
            request,
            "error.html",
            "",
            exc.status_code,
            title="error",
            heading="Not possible",
            message=exc.detail,
        )

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid()}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # -- sign-in ---------------------------------------------------------------------------------

    @app.get("/signin")
    def signin(token: str = Query(..., max_length=4096)) -> Response:
        try:
            session = auth.verify(key, token)
        except auth.NotSignedIn as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        response = RedirectResponse("/runs", status_code=303)
        response.set_cookie(
            auth.COOKIE,
            session.token,
            max_age=max(1, int(session.expires_at - datetime.now(UTC).timestamp())),
            httponly=True,
            samesite="strict",
            path="/",
        )
        return response

    @app.post("/signout")
    async def signout(request: Request) -> Response:
        session = session_of(request)
        if session is not None:
            try:
                auth.check_form(key, session, (await _form(request)).get("csrf"))
            except auth.ForgedRequest as exc:
                return JSONResponse({"error": str(exc)}, status_code=403)
        response = RedirectResponse("/runs", status_code=303)
        response.delete_cookie(auth.COOKIE, path="/")
        return response

    # -- runs ------------------------------------------------------------------------------------

    def runs_filtered(pipeline: str, environment: str, state: str, limit: int) -> list[dict[str, Any]]:
        return history.list_runs(
            store, dash.now(), limit=limit, environment=environment, pipeline=pipeline, state=state
        )

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return RedirectResponse("/runs", status_code=307)

    @app.get("/api/runs")
    def api_runs(
        request: Request,
        limit: int = Query(RUNS_SHOWN, ge=1, le=history.MAX_LIMIT),
        environment: str = "",
        pipeline: str = "",
        state: str = "",
    ) -> list[dict[str, Any]]:
        reader(request)
        return runs_filtered(pipeline, environment, state, limit)

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page(request: Request, environment: str = "", pipeline: str = "", state: str = "") -> Response:
        session = reader(request)
        rows = runs_filtered(pipeline, environment, state, RUNS_SHOWN)
        # the filters' choices: the run records alone (list_runs would read every run's steps too)
        with store.transaction() as conn:
            known = [r.as_dict() for r in store.runs(conn, dash.now(), limit=history.MAX_LIMIT)]
        filters = {"pipeline": pipeline, "environment": environment, "state": state}
        query = urlencode({k: v for k, v in filters.items() if v})
        return page(
            request,
            "runs.html",
            "/runs",
            title="Runs",
            session=session,
            runs=rows,
            filters=filters,
            query=f"?{query}" if query else "",
            pipelines=sorted({r["pipeline"] for r in known} | ({pipeline} - {""})),
            environments=sorted({r["environment"] for r in known} | ({environment} - {""})),
            states=[s.value for s in RunState],
            live=f"/events/runs?{query}",
        )

    @app.get("/events/runs")
    async def runs_events(
        request: Request, environment: str = "", pipeline: str = "", state: str = ""
    ) -> StreamingResponse:
        reader(request)

        def slots() -> tuple[dict[str, str], bool]:
            rows = runs_filtered(pipeline, environment, state, RUNS_SHOWN)
            return {"runs": fragment("_runs_rows.html", runs=rows)}, False

        return _stream(request, slots)

    @app.get("/api/runs/{run_id}")
    def api_run(request: Request, run_id: str) -> dict[str, Any]:
        reader(request)
        return run_view(run_id)

    def run_view(run_id: str) -> dict[str, Any]:
        return history.show_run(store, run_id, dash.now())

    def run_context(run_id: str) -> dict[str, Any]:
        """The run page's context from one read of the run: the run and its evidence charts."""
        run, series = history.run_with_evidence(store, run_id, dash.now())
        charts = [{"svg": charts_svg(e), "caption": f"{e.step} · {e.metric}: {e.label()}"} for e in series]
        return {"run": run, "evidence": charts}

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str, message: str = "", kind: str = "notice") -> Response:
        session = reader(request)
        context = run_context(run_id)
        return page(
            request,
            "run.html",
            "/runs",
            title=f"run {run_id}",
            session=session,
            message=message[:300],
            message_class="error" if kind == "error" else "notice",
            live=f"/events/runs/{run_id}",
            **context,
        )

    @app.get("/events/runs/{run_id}")
    async def run_events(request: Request, run_id: str) -> StreamingResponse:
        reader(request)
        run_view(run_id)  # 404 before the stream starts
        session = session_of(request)

        def slots() -> tuple[dict[str, str], bool]:
            context = run_context(run_id)
            shown = {
                "timeline": fragment("_timeline.html", **context),
                "approval": fragment(
                    "_approval.html",
                    session=session,
                    csrf=auth.csrf_token(key, session) if session else "",
                    **context,
                ),
            }
            return shown, RunState(context["run"]["state"]).final

        return _stream(request, slots)

    # -- approvals -------------------------------------------------------------------------------

    def waiting_runs() -> list[dict[str, Any]]:
        rows = history.list_runs(store, dash.now(), limit=history.MAX_LIMIT, state=RunState.WAITING.value)
        return [r for r in rows if r["awaiting_approval"]]

    @app.get("/api/approvals")
    def api_approvals(request: Request) -> list[dict[str, Any]]:
        reader(request)
        return waiting_runs()

    @app.get("/approvals", response_class=HTMLResponse)
    def approvals_page(request: Request) -> Response:
        session = reader(request)
        return page(
            request,
            "approvals.html",
            "/approvals",
            title="Approvals",
            session=session,
            runs=waiting_runs(),
            live="/events/approvals",
        )

    @app.get("/events/approvals")
    async def approvals_events(request: Request) -> StreamingResponse:
        reader(request)

        def slots() -> tuple[dict[str, str], bool]:
            return {"approvals": fragment("_approvals_rows.html", runs=waiting_runs())}, False

        return _stream(request, slots)

    @app.post("/runs/{run_id}/decision")
    async def decide(request: Request, run_id: str) -> Response:
        form = await _form(request)
        decision, comment, csrf = form.get("decision", ""), form.get("comment", ""), form.get("csrf")
        if len(comment) > MAX_COMMENT:
            return _back(run_id, f"a comment is at most {MAX_COMMENT} characters", error=True)
        session = session_of(request)
        if session is None:
            return JSONResponse(
                {"error": "sign in first: `mangaassist dashboard link --as NAME` prints your link"},
                status_code=401,
            )
        try:
            auth.check_origin(
                request.headers.get("origin"), request.headers.get("referer"), request.headers.get("host")
            )
            auth.check_form(key, session, csrf)
        except auth.ForgedRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=403)
        try:
            chosen = approvals.Decision(decision)
        except ValueError:
            return JSONResponse({"error": f"decision {decision!r}: expected approved or rejected"}, 400)
        if chosen is approvals.Decision.REJECTED and not comment.strip():
            return _back(run_id, "a rejection needs a comment saying why", error=True)
        actor = session.who

        def record() -> None:
            now = dash.now()
            with store.transaction() as conn:
                run = store.run(conn, run_id, now, for_update=True)
                approvals.decide(
                    store, conn, run, decision=chosen, actor=actor, comment=comment.strip(), now=now
                )

        try:
            await asyncio.to_thread(record)
        except NotFoundError:
            raise
        except MangaAssistError as exc:
            return _back(run_id, str(exc), error=True)
        return _back(run_id, f"{chosen.value} by {actor.name}")

    # -- services and versions -------------------------------------------------------------------

    def with_platform(read: Callable[[Platform], dict[str, Any]]) -> dict[str, Any]:
        if platform is None:
            return inventory.unavailable(
                "the dashboard was started without --environment: it knows no platform to read"
            )
        opened = platform()
        try:
            return read(opened)
        finally:
            opened.close()

    def environment_name() -> str:
        return str(with_platform(lambda p: {"environment": p.environment}).get("environment", "?"))

    @app.get("/api/services")
    def api_services(request: Request) -> dict[str, Any]:
        reader(request)
        return with_platform(inventory.services)

    @app.get("/services", response_class=HTMLResponse)
    def services_page(request: Request) -> Response:
        session = reader(request)
        data = with_platform(inventory.services)
        return page(
            request,
            "services.html",
            "/services",
            title="Services",
            session=session,
            data=data,
            environment=data.get("environment") or environment_name(),
            num=_maybe_number,
            live="/events/services",
        )

    @app.get("/events/services")
    async def services_events(request: Request) -> StreamingResponse:
        reader(request)

        def slots() -> tuple[dict[str, str], bool]:
            data = with_platform(inventory.services)
            return {"services": fragment("_services.html", data=data, num=_maybe_number)}, False

        return _stream(request, slots)

    @app.get("/api/versions")
    def api_versions(request: Request) -> dict[str, Any]:
        reader(request)
        return with_platform(inventory.versions)

    @app.get("/versions", response_class=HTMLResponse)
    def versions_page(request: Request) -> Response:
        session = reader(request)
        data = with_platform(inventory.versions)
        if "environment" not in data:  # no platform: every section says why
            data = {"environment": "?", **{k: data for k in SECTIONS}}
        return page(
            request,
            "versions.html",
            "/versions",
            title="Versions",
            session=session,
            data=data,
            num=_maybe_number,
        )

    # -- delivery performance --------------------------------------------------------------------

    def delivery(since: str, environment: str) -> dict[str, Any]:
        now = dash.now()
        with store.transaction() as conn:
            known = sorted({r.environment for r in store.runs(conn, now, limit=history.SCAN_FOR_STATE)})
        start = report.parse_since(since, now)
        found = report.delivery_report(store, now, start, environment or None, environments=known)
        return {"report": found.as_dict(), "environments": known}

    @app.get("/api/delivery")
    def api_delivery(request: Request, since: str = "30d", environment: str = "") -> dict[str, Any]:
        reader(request)
        found: dict[str, Any] = delivery(since, environment)["report"]
        return found

    @app.get("/delivery", response_class=HTMLResponse)
    def delivery_page(request: Request, since: str = "30d", environment: str = "") -> Response:
        session = reader(request)
        found = delivery(since, environment)
        return page(
            request,
            "delivery.html",
            "/delivery",
            title="Delivery performance",
            session=session,
            since=since,
            environment=environment,
            duration=report.human_duration,
            **found,
        )

    # -- audit -----------------------------------------------------------------------------------

    @app.get("/api/audit")
    def api_audit(request: Request, run: str | None = None) -> dict[str, Any]:
        reader(request)
        return {"verify": history.audit_check(store), "entries": history.audit_log(store, run or None)}

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, run: str | None = None) -> Response:
        session = reader(request)
        entries = history.audit_log(store, run or None)
        newest = list(reversed(entries))[:AUDIT_SHOWN] if not run else entries
        return page(
            request,
            "audit.html",
            "/audit",
            title="Audit",
            session=session,
            check=history.audit_check(store),
            entries=newest,
            run_id=run or "",
        )

    return app


async def _form(request: Request) -> dict[str, str]:
    """A posted ``application/x-www-form-urlencoded`` body (at most ``MAX_FORM_BYTES``), first value
    of each field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise StarletteHTTPException(413, f"a form is at most {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StarletteHTTPException(400, f"the form could not be read: {exc}") from None
    return {k: v[0] for k, v in fields.items()}


def _back(run_id: str, message: str, *, error: bool = False) -> Response:
    """After a decision: back to the run's page (303), with what happened."""
    query = urlencode({"message": message, **({"kind": "error"} if error else {})})
    return RedirectResponse(f"/runs/{run_id}?{query}", status_code=303)


def _stream(request: Request, slots: Callable[[], tuple[dict[str, str], bool]]) -> StreamingResponse:
    """Server-sent events: ``swap`` with the page's slots that changed since the last event (a slot
    being edited, such as the approval form, is replaced only when its own content changed),
    ``done`` once the thing shown is final; a comment as heartbeat. ``slots`` runs in a thread (it
    reads the state store)."""

    async def events() -> AsyncIterator[str]:
        last: dict[str, str] = {}
        quiet = 0.0
        while not await request.is_disconnected():
            current, final = await asyncio.to_thread(slots)
            changed = {name: html for name, html in current.items() if last.get(name) != html}
            if changed:
                yield f"event: swap\ndata: {json.dumps(changed)}\n\n"
                last, quiet = current, 0.0
            if final:
                yield "event: done\ndata: {}\n\n"
                return
            await asyncio.sleep(LIVE_INTERVAL_S)
            quiet += LIVE_INTERVAL_S
            if quiet >= HEARTBEAT_S:
                yield ": heartbeat\n\n"
                quiet = 0.0

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def target_file(home: Path) -> Path:
    """Where the platform's Prometheus discovers this server (file-based service discovery)."""
    return home / "monitoring" / "targets" / f"{NAME}.json"


@contextlib.contextmanager
def _scraped(home: Path, address: str) -> Iterator[None]:
    path = target_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        json.dumps([{"targets": [address], "labels": {"component": "dashboard", "service": "engine"}}])
    )
    tmp.replace(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    home: Path,
    state_url: str | None,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    *,
    allow_remote: bool = False,
    environment: str | None = None,
    config: Path | None = None,
) -> None:
    """Listen until killed: bind, announce ``HOME/dashboard.json`` and the scrape target, serve.
    Anything but loopback needs ``allow_remote``, and then every page needs a session."""
    loopback = is_loopback(host)
    if not loopback and not allow_remote:
        raise SystemExit(
            f"dashboard: refusing to listen on {host}: it is not loopback; pass --allow-remote to mean it "
            "(every page then needs a sign-in link from `mangaassist dashboard link`)"
        )
    store = StateStore(state_url)
    key = auth.load_key(store)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    opener = None
    if environment is not None:
        name = environment

        def opener() -> Platform:
            return platform_for(name, home=home, config=config)

    app = create_app(store, key, open_reads=loopback, platform=opener)
    # live pages hold connections open: shut down without waiting for browsers to leave
    settings = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(settings)
    # uvicorn shuts down gracefully on SIGTERM, then raises it again with the handler it found:
    # this one, so the process exits through the ``finally`` blocks (the scrape target goes away)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with _scraped(home, f"{host}:{bound}"):
            daemons.announce(home, NAME, f"http://{host}:{bound}", state=store.display_url)
            server.run(sockets=[sock])
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mangaassist.dashboard",
        description="MangaAssist delivery dashboard and engine metrics",
    )
    parser.add_argument("--home", type=Path, required=True, help="state directory (dashboard.json goes here)")
    parser.add_argument("--state-url", default=None, help="the engine's state database (default: the home's)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1", help="loopback unless --allow-remote")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen on a non-loopback --host; every page then needs a session",
    )
    parser.add_argument(
        "--environment", default=None, help="the platform whose services and versions to show (e.g. dev)"
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="its mangaassist.toml (default: found as usual)"
    )
    args = parser.parse_args(argv)
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    state_url = args.state_url or f"sqlite:///{home / 'state.sqlite3'}"
    serve(
        home,
        state_url,
        args.port,
        args.host,
        allow_remote=args.allow_remote,
        environment=args.environment,
        config=args.config,
    )
