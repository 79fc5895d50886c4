"""The dashboard's HTTP server (see the package docstring)."""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mangaassist.delivery.engine.metrics import EngineCollector
from mangaassist.delivery.engine.state import StateStore
from mangaassist.platform import daemons

NAME = "dashboard"
"""Its state file and log under the home: ``dashboard.json``, ``dashboard.log``."""
MODULE = "mangaassist.dashboard"
DEFAULT_PORT = 8090
RUNS_SHOWN = 50


def create_app(store: StateStore) -> FastAPI:
    """The dashboard's routes over one state store."""
    app = FastAPI(title="MangaAssist delivery dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    registry = CollectorRegistry()
    registry.register(EngineCollector(store, lambda: datetime.now(UTC)))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid()}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/runs")
    def runs(
        limit: int = Query(RUNS_SHOWN, ge=1, le=1000), environment: str | None = None
    ) -> list[dict[str, Any]]:
        return _runs(store, limit, environment)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(r.get(k) or ''))}</td>"
                for k in ("id", "pipeline", "environment", "state", "created_at", "reason")
            )
            + "</tr>"
            for r in _runs(store, RUNS_SHOWN, None)
        )
        return (
            "<!doctype html><html lang=en><meta charset=utf-8><title>MangaAssist delivery</title>"
            "<h1>MangaAssist delivery</h1><table><thead><tr><th>run<th>pipeline<th>environment"
            f"<th>state<th>created<th>reason</tr></thead><tbody>{rows}</tbody></table>"
            '<p><a href="/metrics">engine metrics</a> · <a href="/api/runs">runs as JSON</a></p></html>'
        )

    return app


def _runs(store: StateStore, limit: int, environment: str | None) -> list[dict[str, Any]]:
    with store.transaction() as conn:
        records = store.runs(conn, datetime.now(UTC), limit=limit, environment=environment)
    return [r.as_dict() for r in records]


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


def serve(home: Path, state_url: str | None, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> None:
    """Listen until killed: bind, announce ``HOME/dashboard.json`` and the scrape target, serve."""
    store = StateStore(state_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store), log_level="warning", access_log=False))
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
    parser.add_argument("--host", default="127.0.0.1", help="loopback unless you mean it")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    state_url = args.state_url or f"sqlite:///{home / 'state.sqlite3'}"
    serve(home, state_url, args.port, args.host)
