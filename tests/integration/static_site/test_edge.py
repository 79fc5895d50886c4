"""The local edge as its own process over real HTTP on a free loopback port: cache headers, the
release header, ETags and 304, skew protection across 21 deploys and gc, pointer moves seen on the
next request, previews, ``/v1`` proxied to a real upstream server, and its start and stop."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from mangaassist.platform.factory import platform_for
from mangaassist.platform.local.edge import ensure_edge, running, running_url, stop_edge
from mangaassist.platform.local.static_site import LocalStaticSite
from mangaassist.platform.static_site import RETAINED_RELEASES, StaticSiteError, file_digest
from tests.integration.static_site.conftest import ENV, release


class _Upstream(BaseHTTPRequestHandler):
    """A chat API stand-in: answers every request with what it received."""

    server: _UpstreamServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = {
            "method": self.command,
            "path": self.path,
            "body": body.decode(),
            "headers": dict(self.headers),
        }
        self.server.seen.append(seen)
        data = json.dumps(seen).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-MangaAssist-Revision", "r7")
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer


class _UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Upstream)
        self.seen: list[dict[str, Any]] = []


@dataclass
class Edge:
    url: str
    home: Path
    site: LocalStaticSite
    upstream: _UpstreamServer
    http: httpx.Client

    def publish(self, n: int, channel: str = ENV, **kwargs: Any) -> str:
        rid = self.site.upload(release(n, **kwargs)).release_id
        self.site.point(channel, rid, reason=f"deploy {n}")
        return rid


@pytest.fixture
def upstream() -> Iterator[_UpstreamServer]:
    server = _UpstreamServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def edge(tmp_path: Path, upstream: _UpstreamServer) -> Iterator[Edge]:
    home, root = tmp_path / "home", tmp_path / "home" / "sites" / "widget"
    api = f"http://127.0.0.1:{upstream.server_address[1]}"
    url = ensure_edge(home, site_root=root, environment=ENV, api=api, port=0)
    site = LocalStaticSite(root, environment=ENV)
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            yield Edge(url, home, site, upstream, http)
    finally:
        site.close()
        stop_edge(home)


def test_entry_files_are_no_cache_assets_immutable_with_release_header_etag_and_304(edge: Edge) -> None:
    rid = edge.publish(1, extra={"assets/logo-9c1d.svg": b"<svg/>", "assets/cover-11aa.png": b"\x89PNG"})
    index = edge.http.get("/")
    assert index.status_code == 200 and index.content == release(1)["index.html"]
    assert index.headers["Cache-Control"] == "no-cache"
    assert index.headers["X-MangaAssist-Release"] == rid
    assert index.headers["Content-Type"].startswith("text/html")
    assert index.headers["ETag"] == f'"{file_digest(release(1)["index.html"])}"'
    assert edge.http.get("/index.html").content == index.content
    loader = edge.http.get("/loader.js")
    assert (
        loader.headers["Content-Type"] == "application/javascript"
        and loader.headers["Cache-Control"] == "no-cache"
    )
    assert edge.http.get("/manifest.json").headers["Content-Type"] == "application/json"

    asset = edge.http.get("/assets/app-0001.js")
    assert asset.status_code == 200 and asset.content == b"export const release = 1;"
    assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert asset.headers["X-MangaAssist-Release"] == rid
    assert asset.headers["Content-Type"] == "application/javascript"
    assert edge.http.get("/assets/logo-9c1d.svg").headers["Content-Type"] == "image/svg+xml"
    assert edge.http.get("/assets/cover-11aa.png").headers["Content-Type"] == "image/png"

    again = edge.http.get("/assets/app-0001.js", headers={"If-None-Match": asset.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == asset.headers["ETag"] and again.headers["X-MangaAssist-Release"] == rid
    assert edge.http.get("/", headers={"If-None-Match": index.headers["ETag"]}).status_code == 304
    assert edge.http.get("/", headers={"If-None-Match": '"stale"'}).status_code == 200

    head = edge.http.head("/loader.js")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(release(1)["loader.js"]))

    for path in ("/nope.js", "/assets/app-9999.js", "/assets/%2e%2e/index.html", "/previews/"):
        missing = edge.http.get(path)
        assert missing.status_code == 404, path
        assert missing.headers["Content-Type"].startswith("text/plain") and "not found" in missing.text
    assert edge.http.post("/index.html").status_code == 405
    assert edge.http.get("/healthz").status_code == 200


def test_a_channel_with_no_release_is_404(edge: Edge) -> None:
    answer = edge.http.get("/")
    assert answer.status_code == 404 and "no release is live on channel dev" in answer.text


def test_a_pointer_move_is_visible_on_the_next_request(edge: Edge) -> None:
    r1, r2 = edge.publish(1), edge.publish(2)
    assert edge.http.get("/").headers["X-MangaAssist-Release"] == r2
    moved = time.monotonic()
    edge.site.point(ENV, r1, reason="rollback")
    after = edge.http.get("/")
    assert time.monotonic() - moved < 1.0
    assert after.headers["X-MangaAssist-Release"] == r1 and after.content == release(1)["index.html"]
    assert edge.http.get("/loader.js").content == release(1)["loader.js"]
    # release 2's chunk is still served to the tabs that loaded release 2
    assert edge.http.get("/assets/app-0002.js").headers["X-MangaAssist-Release"] == r2


def test_an_old_releases_assets_are_served_after_21_deploys_and_gc(edge: Edge) -> None:
    ids = [edge.publish(n) for n in range(1, RETAINED_RELEASES + 2)]  # releases 1..21
    assert edge.http.get("/assets/app-0001.js").status_code == 200  # before gc everything is there
    collected = edge.site.gc()
    assert collected.releases == (ids[0],)
    kept = edge.http.get("/assets/app-0002.js")  # a tab opened on release 2, 19 deploys ago
    assert kept.status_code == 200 and kept.content == b"export const release = 2;"
    assert kept.headers["X-MangaAssist-Release"] == ids[1]
    assert kept.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert edge.http.get("/assets/app-0001.js").status_code == 404  # beyond the last 20
    shared = edge.http.get("/assets/vendor-7f3a.js")
    assert shared.status_code == 200 and shared.headers["X-MangaAssist-Release"] == ids[-1]  # newest first
    assert edge.http.get("/").headers["X-MangaAssist-Release"] == ids[-1]


def test_previews_are_served_under_their_branch(edge: Edge) -> None:
    r1 = edge.publish(1)
    r2 = edge.publish(2, channel="preview/feat-login")
    preview = edge.http.get("/previews/feat-login/")
    assert preview.status_code == 200 and preview.content == release(2)["index.html"]
    assert preview.headers["X-MangaAssist-Release"] == r2 and preview.headers["Cache-Control"] == "no-cache"
    assert edge.http.get("/previews/feat-login/loader.js").content == release(2)["loader.js"]
    chunk = edge.http.get("/previews/feat-login/assets/app-0002.js")
    assert chunk.status_code == 200 and chunk.headers["Cache-Control"].endswith("immutable")
    assert edge.http.get("/").headers["X-MangaAssist-Release"] == r1
    bare = edge.http.get("/previews/feat-login")
    assert bare.status_code == 301 and bare.headers["Location"] == "/previews/feat-login/"
    assert edge.http.get("/previews/other/").status_code == 404
    assert edge.http.get("/previews/a..b/").status_code == 404
    edge.site.delete_preview("feat-login")
    assert edge.http.get("/previews/feat-login/").status_code == 404


def test_v1_is_proxied_to_the_chat_api(edge: Edge) -> None:
    sent = {
        "Content-Type": "application/json",
        "X-Session-Id": "s-42",
        "Authorization": "Bearer t0k",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Not-Forwarded": "no",
    }
    answer = edge.http.post("/v1/chat?lang=ja", content=b'{"message": "Frieren 5?"}', headers=sent)
    assert answer.status_code == 201
    seen = answer.json()
    assert seen["method"] == "POST" and seen["path"] == "/v1/chat?lang=ja"
    assert seen["body"] == '{"message": "Frieren 5?"}'
    got = {k.lower(): v for k, v in seen["headers"].items()}
    for name, value in sent.items():
        if name != "X-Not-Forwarded":
            assert got[name.lower()] == value
    assert "x-not-forwarded" not in got
    assert answer.headers["X-MangaAssist-Revision"] == "r7"
    assert answer.headers.get_list("Set-Cookie") == ["a=1", "b=2"]
    assert edge.http.delete("/v1/sessions/s-42").json()["method"] == "DELETE"
    assert [s["path"] for s in edge.upstream.seen] == ["/v1/chat?lang=ja", "/v1/sessions/s-42"]


def test_v1_answers_502_when_the_chat_api_is_down(edge: Edge) -> None:
    edge.upstream.shutdown()
    edge.upstream.server_close()
    answer = edge.http.post("/v1/chat", json={"message": "hi"})
    assert answer.status_code == 502 and "cannot be reached" in answer.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_edge_process_starts_once_stops_and_reports_a_taken_port(tmp_path: Path) -> None:
    home, root = tmp_path / "home", tmp_path / "site"
    url = ensure_edge(home, site_root=root, environment=ENV, port=0)
    assert url.startswith("http://127.0.0.1:")
    state = running(home)
    assert state is not None and state["environment"] == ENV and state["api"] == "http://127.0.0.1:8080"
    assert ensure_edge(home, site_root=root, environment=ENV, port=0) == url  # reused, not a second one
    assert httpx.get(f"{url}/healthz").json()["pid"] == state["pid"]
    assert stop_edge(home) is True
    assert running_url(home) is None and not (home / "edge.json").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")
    assert stop_edge(home) is False

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", _free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StaticSiteError, match=f"the edge exited with status 1 \\(port {port}\\)"):
            ensure_edge(home, site_root=root, environment=ENV, port=port)
    assert running_url(home) is None


def test_the_factory_gives_the_local_site_under_the_state_directory(tmp_path: Path) -> None:
    config = tmp_path / "mangaassist.toml"
    config.write_text('[environments.dev]\nprovider = "local"\nhome = "state"\nedge_port = 0\n')
    with platform_for("dev", config=config) as platform:
        assert platform.settings.edge_port == 0
        site = platform.static_site()
        assert isinstance(site, LocalStaticSite) and site.root == tmp_path / "state" / "sites" / "widget"
        assert platform.static_site() is site
        rid = site.upload(release(1)).release_id
        site.point(ENV, rid, reason="deploy")
        url = ensure_edge(platform.home, site_root=site.root, environment=ENV, port=0)
        try:
            assert site.url(ENV) == f"{url}/"  # the running edge's URL
            assert httpx.get(site.url(ENV)).headers["X-MangaAssist-Release"] == rid
        finally:
            stop_edge(platform.home)
