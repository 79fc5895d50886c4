"""The local config server (``ConfigStore``, local provider): HTTP on loopback, SQLite underneath.

Run it as its own process: ``python -m mangaassist.platform.local.config_server --home DIR
[--port 0]`` (or ``mangaassist config serve``, or ``ensure_server(home)``, which starts one in the
background if none answers). It writes ``HOME/config-server.json`` (``url``, ``pid``) once it
listens. Versions, rollouts and history live in ``HOME/config.sqlite3``; observations reported by
workers are kept in memory (they are this run's metrics, not state).

API (JSON):

=========================================  =====================================================
``GET /v1/profiles/P``                     what workers serve: ``stable`` and ``candidate``
                                           (version and content) and ``percentage``. ``ETag``;
                                           ``If-None-Match`` gives 304; ``?wait=S`` holds a 304
                                           up to S seconds until something changes (long poll)
``GET|POST /v1/profiles/P/versions``       list / create (idempotent by content digest)
``GET /v1/profiles/P/versions/V``          one version
``PUT /v1/profiles/P/rollout``             ``{candidate, percentage, actor, reason}``
``POST /v1/profiles/P/promote``            ``{version, actor, reason}``
``GET /v1/profiles/P/history``             every change, oldest first
``POST /v1/observations``                  ``{profile: {version: counts}}`` from workers
``GET /v1/profiles/P/observations``        per version, what workers reported
=========================================  =====================================================

``HttpConfigStore`` is the ``ConfigStore`` client of this server.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from mangaassist.core.configspec import version_of
from mangaassist.platform import daemons
from mangaassist.platform.config_store import ConfigStoreError, ConfigVersion, Observations, Rollout
from mangaassist.platform.local.sqlite_tx import immediate

NAME = "config-server"
"""Its state file and log under the home: ``config-server.json``, ``config-server.log``."""
MODULE = "mangaassist.platform.local.config_server"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
  profile TEXT NOT NULL, version TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL,
  author TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (profile, version));
CREATE TABLE IF NOT EXISTS rollouts (
  profile TEXT PRIMARY KEY, stable TEXT, candidate TEXT, percentage REAL NOT NULL,
  revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS history (
  id INTEGER PRIMARY KEY AUTOINCREMENT, profile TEXT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, version TEXT, percentage REAL, reason TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ConfigDatabase:
    """The server's state; every method is one transaction. Shared by the handler threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.changed = threading.Condition()
        self.observed: dict[str, dict[str, Observations]] = {}

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._conn, self._lock)

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def create_version(self, profile: str, content: Any, author: str, message: str) -> ConfigVersion:
        name = version_of(profile, content)
        with self._tx() as c:
            row = c.execute(
                "SELECT created_at, author, message FROM versions WHERE profile=? AND version=?",
                (profile, name),
            ).fetchone()
            if row is None:
                row = (_now(), author, message)
                c.execute(
                    "INSERT INTO versions VALUES (?,?,?,?,?,?)",
                    (profile, name, json.dumps(content), *row),
                )
                self._event(c, profile, author, "create", name, None, message)
        return ConfigVersion(profile, name, content, *row)

    def version(self, profile: str, version: str) -> ConfigVersion | None:
        with self._tx() as c:
            row = c.execute(
                "SELECT content, created_at, author, message FROM versions WHERE profile=? AND version=?",
                (profile, version),
            ).fetchone()
        return None if row is None else ConfigVersion(profile, version, json.loads(row[0]), *row[1:])

    def versions(self, profile: str) -> list[ConfigVersion]:
        with self._tx() as c:
            rows = c.execute(
                "SELECT version, content, created_at, author, message FROM versions WHERE profile=? "
                "ORDER BY created_at, rowid",
                (profile,),
            ).fetchall()
        return [ConfigVersion(profile, r[0], json.loads(r[1]), *r[2:]) for r in rows]

    def rollout(self, profile: str) -> Rollout:
        with self._tx() as c:
            return self._rollout(c, profile)

    def _rollout(self, c: sqlite3.Connection, profile: str) -> Rollout:
        row = c.execute(
            "SELECT stable, candidate, percentage, revision FROM rollouts WHERE profile=?", (profile,)
        ).fetchone()
        return Rollout(profile, *row) if row else Rollout(profile, None, None, 0.0, 0)

    def _exists(self, c: sqlite3.Connection, profile: str, version: str) -> None:
        if not c.execute(
            "SELECT 1 FROM versions WHERE profile=? AND version=?", (profile, version)
        ).fetchone():
            raise ConfigStoreError(f"profile {profile} has no version {version!r}")

    def set_rollout(
        self, profile: str, candidate: str | None, percentage: float, actor: str, reason: str
    ) -> Rollout:
        if not 0 <= percentage <= 100:
            raise ConfigStoreError(f"percentage {percentage} is outside 0..100")
        with self._tx() as c:
            current = self._rollout(c, profile)
            if candidate is not None:
                self._exists(c, profile, candidate)
                if current.stable is None:  # nothing to roll out against: the first version is stable
                    raise ConfigStoreError(f"profile {profile} has no stable version yet: promote one")
            else:
                percentage = 0.0
            new = Rollout(profile, current.stable, candidate, percentage, current.revision + 1)
            self._save(c, new)
            self._event(
                c, profile, actor, "abort" if candidate is None else "rollout", candidate, percentage, reason
            )
        self._notify()
        return new

    def promote(self, profile: str, version: str, actor: str, reason: str) -> Rollout:
        with self._tx() as c:
            self._exists(c, profile, version)
            current = self._rollout(c, profile)
            new = Rollout(profile, version, None, 0.0, current.revision + 1)
            self._save(c, new)
            self._event(c, profile, actor, "promote", version, 100.0, reason)
        self._notify()
        return new

    def history(self, profile: str) -> list[dict[str, Any]]:
        with self._tx() as c:
            rows = c.execute(
                "SELECT at, actor, action, version, percentage, reason FROM history "
                "WHERE profile=? ORDER BY id",
                (profile,),
            ).fetchall()
        keys = ("at", "actor", "action", "version", "percentage", "reason")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def _save(self, c: sqlite3.Connection, r: Rollout) -> None:
        c.execute(
            "INSERT INTO rollouts VALUES (?,?,?,?,?) ON CONFLICT(profile) DO UPDATE SET "
            "stable=excluded.stable, candidate=excluded.candidate, percentage=excluded.percentage, "
            "revision=excluded.revision",
            (r.profile, r.stable, r.candidate, r.percentage, r.revision),
        )

    def _event(
        self,
        c: sqlite3.Connection,
        profile: str,
        actor: str,
        action: str,
        version: str | None,
        percentage: float | None,
        reason: str,
    ) -> None:
        c.execute(
            "INSERT INTO history (profile, at, actor, action, version, percentage, reason) "
            "VALUES (?,?,?,?,?,?,?)",
            (profile, _now(), actor, action, version, percentage, reason),
        )

    def served(self, profile: str) -> dict[str, Any]:
        """What workers fetch: the rollout with the content of its versions."""
        with self._tx() as c:
            r = self._rollout(c, profile)
            out: dict[str, Any] = {"profile": profile, "percentage": r.percentage, "revision": r.revision}
            for role in ("stable", "candidate"):
                name = getattr(r, role)
                row = (
                    c.execute(
                        "SELECT content FROM versions WHERE profile=? AND version=?", (profile, name)
                    ).fetchone()
                    if name
                    else None
                )
                out[role] = {"version": name, "content": json.loads(row[0])} if row else None
        return out

    def observe(self, report: dict[str, dict[str, dict[str, Any]]]) -> None:
        with self._lock:
            for profile, per_version in report.items():
                target = self.observed.setdefault(profile, {})
                for version, counts in per_version.items():
                    target.setdefault(version, Observations()).add(Observations.from_dict(counts))


def _etag(profile: str, revision: int) -> str:
    return f'"{profile}-r{revision}"'


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: workers poll constantly
        return

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.server.requests.labels(code=str(status)).inc()
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        db = self.server.db
        try:
            if parts == ["healthz"]:
                return self._send(200, {"ok": True, "pid": os.getpid()})
            if parts == ["metrics"] and method == "GET":  # Prometheus (CD-08's config availability SLO)
                return self._metrics()
            if parts == ["v1", "observations"] and method == "POST":
                db.observe(self._body())
                return self._send(200, {"ok": True})
            if len(parts) < 3 or parts[:2] != ["v1", "profiles"]:
                return self._send(404, {"error": f"no route {url.path}"})
            profile, rest = parts[2], parts[3:]
            if not rest and method == "GET":
                return self._served(profile, parse_qs(url.query))
            if rest == ["versions"] and method == "GET":
                return self._send(200, [v.as_dict() for v in db.versions(profile)])
            if rest == ["versions"] and method == "POST":
                b = self._body()
                v = db.create_version(profile, b["content"], b.get("author", "unknown"), b.get("message", ""))
                return self._send(201, v.as_dict())
            if len(rest) == 2 and rest[0] == "versions" and method == "GET":
                found = db.version(profile, rest[1])
                if found is None:
                    return self._send(404, {"error": f"profile {profile} has no version {rest[1]!r}"})
                return self._send(200, found.as_dict())
            if rest == ["rollout"] and method == "GET":
                return self._send(200, db.rollout(profile).as_dict())
            if rest == ["rollout"] and method == "PUT":
                b = self._body()
                r = db.set_rollout(
                    profile,
                    b.get("candidate"),
                    float(b.get("percentage", 0)),
                    b.get("actor", "unknown"),
                    b.get("reason", ""),
                )
                return self._send(200, r.as_dict())
            if rest == ["promote"] and method == "POST":
                b = self._body()
                r = db.promote(profile, b["version"], b.get("actor", "unknown"), b.get("reason", ""))
                return self._send(200, r.as_dict())
            if rest == ["history"] and method == "GET":
                return self._send(200, db.history(profile))
            if rest == ["observations"] and method == "GET":
                with db._lock:
                    seen = {k: v.as_dict() for k, v in db.observed.get(profile, {}).items()}
                return self._send(200, seen)
            return self._send(404, {"error": f"no route {method} {url.path}"})
        except ConfigStoreError as exc:
            return self._send(409, {"error": str(exc)})
        except (KeyError, ValueError, TypeError) as exc:
            return self._send(400, {"error": f"bad request: {exc}"})

    def _metrics(self) -> None:
        data = generate_latest(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _served(self, profile: str, query: dict[str, list[str]]) -> None:
        db = self.server.db
        wait = min(float(query.get("wait", ["0"])[0]), 30.0)
        deadline = time.monotonic() + wait
        seen = self.headers.get("If-None-Match")
        while True:
            revision = db.rollout(profile).revision
            if seen != _etag(profile, revision) or time.monotonic() >= deadline:
                break
            with db.changed:
                db.changed.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        etag = _etag(profile, revision)
        if seen == etag:
            return self._send(304, None, {"ETag": etag})
        body = db.served(profile)
        return self._send(200, body, {"ETag": _etag(profile, body["revision"])})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], db: ConfigDatabase) -> None:
        super().__init__(address, _Handler)
        self.db = db
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mangaassist_config_requests",
            "Config server requests by status",
            ["code"],
            registry=self.registry,
        )


def serve(home: Path, port: int = 0, host: str = "127.0.0.1") -> None:
    """Listen until killed; announce the URL in ``HOME/config-server.json``."""
    server = _Server((host, port), ConfigDatabase(home / "config.sqlite3"))
    daemons.announce(home, NAME, f"http://{host}:{server.server_address[1]}")
    server.serve_forever(poll_interval=0.2)


def running_url(home: Path) -> str | None:
    """The URL of the server announced under ``home`` if it answers."""
    state = daemons.running(home, NAME)
    return None if state is None else str(state["url"])


def ensure_server(home: Path, timeout: float = 15.0) -> str:
    """The URL of the config server of ``home``, started in the background if none answers."""
    state = daemons.ensure(home, NAME, MODULE, ["--home", str(home)], timeout=timeout, error=ConfigStoreError)
    return str(state["url"])


def stop_server(home: Path, timeout: float = 10.0) -> bool:
    """Stop the server announced under ``home`` (SIGTERM, then SIGKILL); False if none was running."""
    return daemons.stop(home, NAME, MODULE, timeout)


class HttpConfigStore:
    """``ConfigStore`` over the local config server's HTTP API."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ConfigStoreError(f"cannot reach the config server at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise ConfigStoreError(response.json().get("error", response.text))
        return response.json()

    def create_version(self, profile: str, content: Any, *, author: str, message: str = "") -> ConfigVersion:
        raw = self._call(
            "POST",
            f"/v1/profiles/{profile}/versions",
            {"content": content, "author": author, "message": message},
        )
        return ConfigVersion(**raw)

    def version(self, profile: str, version: str) -> ConfigVersion:
        return ConfigVersion(**self._call("GET", f"/v1/profiles/{profile}/versions/{version}"))

    def versions(self, profile: str) -> list[ConfigVersion]:
        return [ConfigVersion(**v) for v in self._call("GET", f"/v1/profiles/{profile}/versions")]

    def rollout(self, profile: str) -> Rollout:
        return Rollout(**self._call("GET", f"/v1/profiles/{profile}/rollout"))

    def set_rollout(
        self, profile: str, *, candidate: str | None, percentage: float, actor: str, reason: str = ""
    ) -> Rollout:
        body = {"candidate": candidate, "percentage": percentage, "actor": actor, "reason": reason}
        return Rollout(**self._call("PUT", f"/v1/profiles/{profile}/rollout", body))

    def promote(self, profile: str, version: str, *, actor: str, reason: str = "") -> Rollout:
        body = {"version": version, "actor": actor, "reason": reason}
        return Rollout(**self._call("POST", f"/v1/profiles/{profile}/promote", body))

    def history(self, profile: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"/v1/profiles/{profile}/history")
        return result

    def observations(self, profile: str) -> dict[str, Observations]:
        raw = self._call("GET", f"/v1/profiles/{profile}/observations")
        return {k: Observations.from_dict(v) for k, v in raw.items()}

    def close(self) -> None:
        self._http.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MangaAssist local config server")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    args.home.mkdir(parents=True, exist_ok=True)
    serve(args.home.resolve(), args.port)


if __name__ == "__main__":
    main()
