"""The local edge: the widget's releases (``LocalStaticSite``) and the chat API behind one origin,
as CloudFront serves them on AWS (CD-05).

Run it as its own process: ``python -m mangaassist.platform.local.edge --home DIR --site DIR
--env ENV [--api URL] [--port 8082]`` (``mangaassist up`` does, through ``ensure_edge``; ``down``
stops it with ``stop_edge``). It writes ``HOME/edge.json`` (``url``, ``pid``, ``api``,
``environment``) once it listens, logs to ``HOME/edge.log``, and listens on 127.0.0.1 unless told
otherwise. The standard library's threading HTTP server, as the config server's.

=================================  ==========================================================
``/``, ``/<entry file>``           the environment's channel: its live release's entry file
                                   (``/`` is ``index.html``), ``Cache-Control: no-cache``; the
                                   pointer is read on every request, so a move (a rollback) is
                                   visible on the next one
``/assets/...``                    a hashed asset of any stored release (skew protection),
                                   ``public, max-age=31536000, immutable``
``/previews/<branch>/...``         the same for channel ``preview/<branch>``
``/v1/...``                        proxied to the chat API (``--api``, default the chatbot's
                                   router on 8080): method, query, body and the headers
                                   ``FORWARDED_REQUEST_HEADERS``; the answer's status, body and
                                   headers come back (hop-by-hop ones aside)
``/healthz``                       200 (``pid``, ``environment``)
=================================  ==========================================================

Every file carries ``ETag`` (its sha256; ``If-None-Match`` gives 304), its ``Content-Type`` and
``X-MangaAssist-Release`` (the live release; for an asset, the newest release holding it). An
unknown path is a plain-text 404. Only ``GET`` and ``HEAD`` reach files (405 otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform import daemons
from mangaassist.platform.local.static_site import LocalStaticSite
from mangaassist.platform.static_site import (
    ASSET_CACHE_CONTROL,
    ENTRY_CACHE_CONTROL,
    RELEASE_HEADER,
    StaticSiteError,
    check_branch,
    check_path,
    content_type,
    is_asset,
    preview_channel,
)

NAME = "edge"
"""Its state file and log under the home: ``edge.json``, ``edge.log`` (``platform.daemons``)."""
MODULE = "mangaassist.platform.local.edge"
DEFAULT_PORT = 8082
DEFAULT_API = "http://127.0.0.1:8080"
FORWARDED_REQUEST_HEADERS = (
    "Content-Type",
    "Accept",
    "X-Session-Id",
    "Authorization",
    "traceparent",
    "tracestate",
)
"""What a ``/v1`` request passes to the chat API (CloudFront's API behaviour forwards a list too)."""
_NOT_RETURNED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "date", "server",
     "proxy-authenticate", "trailer", "upgrade"}
)  # fmt: skip
"""Upstream headers not passed back: hop-by-hop ones and those this server writes itself (the body
comes back decoded, with its own length)."""
MAX_BODY_BYTES = 10 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: EdgeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: browsers fetch many files
        return

    def _plain(
        self, status: int, message: str, headers: dict[str, str] | None = None, kind: str = "text/plain"
    ) -> None:
        data = (message + "\n").encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _route(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        if path == "/healthz":
            body = {"ok": True, "pid": os.getpid(), "environment": self.server.site.environment}
            return self._plain(200, json.dumps(body), kind="application/json")
        if path == "/v1" or path.startswith("/v1/"):
            return self._proxy()
        if self.command not in ("GET", "HEAD"):
            return self._plain(405, f"{self.command} is not allowed on {path}", {"Allow": "GET, HEAD"})
        channel, rest, prefix = self.server.site.environment, path[1:], "/"
        if path.startswith("/previews/"):
            branch, slash, rest = path[len("/previews/") :].partition("/")
            try:
                channel = preview_channel(check_branch(branch))
            except ConfigError:
                return self._plain(404, f"not found: {path} (no preview branch {branch!r})")
            if not slash:  # relative asset URLs need the trailing slash
                return self._plain(301, "moved", {"Location": f"/previews/{branch}/"})
            prefix = f"/previews/{branch}/"
        rest = rest or "index.html"
        try:
            check_path(rest)
        except ConfigError:
            return self._plain(404, f"not found: {path}")
        if is_asset(rest):
            return self._asset(rest, path)
        return self._entry(channel, rest, path, prefix)

    def _asset(self, rest: str, path: str) -> None:
        site = self.server.site
        for fresh in (False, True):  # a file collected by gc meanwhile: look again
            found = site.locate_asset(rest, fresh=fresh)
            if found is None:
                break
            with contextlib.suppress(FileNotFoundError):
                return self._file(found[0], rest, found[1], ASSET_CACHE_CONTROL)
        return self._plain(404, f"not found: {path} (no stored release holds {rest})")

    def _entry(self, channel: str, rest: str, path: str, prefix: str) -> None:
        try:
            live = self.server.site.entry(channel, rest)
        except NotFoundError as exc:  # the live release's manifest is gone (deleted by hand)
            return self._plain(503, str(exc))
        if live is None:
            return self._plain(404, f"not found: {path} (no release is live on channel {channel})")
        rid, found = live
        if found is None:
            return self._plain(404, f"not found: {path} (release {rid} has no {rest})", {RELEASE_HEADER: rid})
        try:
            return self._file(found.sha256, rest, rid, ENTRY_CACHE_CONTROL)
        except FileNotFoundError:
            return self._plain(503, f"release {rid}: {rest} is not stored", {RELEASE_HEADER: rid})

    def _file(self, sha: str, rest: str, rid: str, cache_control: str) -> None:
        etag = f'"{sha}"'
        headers = {"ETag": etag, "Cache-Control": cache_control, RELEASE_HEADER: rid}
        seen = self.headers.get("If-None-Match")
        if seen is not None:
            tags = {t.strip().removeprefix("W/") for t in seen.split(",")}
            if etag in tags or "*" in tags:
                self.send_response(304)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                return
        data = self.server.site.blob(sha).read_bytes()  # FileNotFoundError: the caller's to handle
        self.send_response(200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", content_type(rest))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _proxy(self) -> None:
        if self.headers.get("Transfer-Encoding"):
            return self._plain(411, "a request body needs a Content-Length")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return self._plain(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        body = self.rfile.read(length) if length else b""
        headers = {name: value for name in FORWARDED_REQUEST_HEADERS if (value := self.headers.get(name))}
        api = self.server.api
        try:
            answer = self.server.http.request(self.command, api + self.path, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return self._plain(504, f"the chat API at {api} did not answer in time: {exc!r}")
        except httpx.HTTPError as exc:
            return self._plain(502, f"the chat API at {api} cannot be reached: {exc!r}")
        data = answer.content
        self.send_response(answer.status_code, answer.reason_phrase or None)
        for name, value in answer.headers.multi_items():
            if name.lower() not in _NOT_RETURNED:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _route


class EdgeServer(ThreadingHTTPServer):
    """The edge's HTTP server: ``site`` for files, ``api`` (a base URL) for ``/v1``."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], site: LocalStaticSite, api: str, timeout_s: float = 60.0
    ) -> None:
        self.site = site
        self.api = api.rstrip("/")
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=False)
        super().__init__(address, _Handler)  # binds: a taken port raises here, with the rest set

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.http.close()
        self.site.close()


def serve(
    home: Path,
    site_root: Path,
    environment: str,
    *,
    api: str = DEFAULT_API,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
) -> None:
    """Listen until killed; announce the URL in ``HOME/edge.json``."""
    server = EdgeServer((host, port), LocalStaticSite(site_root, environment=environment), api)
    daemons.announce(home, NAME, server.url, api=server.api, environment=environment)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def running(home: Path) -> dict[str, Any] | None:
    """The edge announced under ``home`` (``url``, ``pid``, ``api``, ``environment``) if it answers
    as that process."""
    return daemons.running(home, NAME)


def running_url(home: Path) -> str | None:
    """The URL of the edge announced under ``home`` if it answers."""
    state = running(home)
    return None if state is None else str(state["url"])


def ensure_edge(
    home: Path,
    *,
    site_root: Path,
    environment: str,
    api: str = DEFAULT_API,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
) -> str:
    """The URL of the edge of ``home``, started in the background if none answers."""
    site_root.mkdir(parents=True, exist_ok=True)
    args = [
        "--home", str(home), "--site", str(site_root), "--env", environment, "--api", api,
        "--port", str(port), "--host", host,
    ]  # fmt: skip
    state = daemons.ensure(
        home, NAME, MODULE, args, timeout=timeout, error=StaticSiteError, detail=f" (port {port})"
    )
    return str(state["url"])


def stop_edge(home: Path, timeout: float = 10.0) -> bool:
    """Stop the edge announced under ``home`` (SIGTERM, then SIGKILL); False if none was running."""
    return daemons.stop(home, NAME, MODULE, timeout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MangaAssist local edge: the widget's releases and /v1")
    parser.add_argument("--home", type=Path, required=True, help="state directory (edge.json goes here)")
    parser.add_argument("--site", type=Path, required=True, help="the site's directory (LocalStaticSite)")
    parser.add_argument("--env", required=True, help="the environment: the channel served at /")
    parser.add_argument("--api", default=DEFAULT_API, help="the chat API /v1 is proxied to")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    args.home.mkdir(parents=True, exist_ok=True)
    serve(args.home.resolve(), args.site.resolve(), args.env, api=args.api, port=args.port, host=args.host)


if __name__ == "__main__":
    main()
