"""The dashboard's sessions and CSRF checks (pure), and what a non-loopback dashboard demands."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from mangaassist.dashboard import auth
from mangaassist.dashboard.server import create_app, is_loopback, serve
from mangaassist.delivery.engine import people
from mangaassist.delivery.engine.state import StateStore

KEY = b"k" * 32
EVERYWHERE = "0.0.0.0"  # noqa: S104 - only ever refused here


def test_a_token_names_its_person_and_nothing_else_verifies() -> None:
    token = auth.issue(KEY, " bob ", ttl_s=60)
    session = auth.verify(KEY, token)
    assert session.actor == "bob" and session.token == token and session.who.source == "token"
    with pytest.raises(auth.NotSignedIn, match="not valid"):
        auth.verify(b"x" * 32, token)  # another key
    other_audience = jwt.encode(
        {"sub": "bob", "aud": "mangaassist-chat", "iss": people.ISSUER, "exp": int(time.time()) + 60},
        KEY,
        "HS256",
    )
    with pytest.raises(auth.NotSignedIn):
        auth.verify(KEY, other_audience)
    unsigned = jwt.encode({"sub": "bob", "aud": people.AUDIENCE, "iss": people.ISSUER}, None, "none")
    with pytest.raises(auth.NotSignedIn):
        auth.verify(KEY, unsigned)


def test_an_expired_token_is_refused() -> None:
    token = auth.issue(KEY, "bob", ttl_s=10, now=time.time() - 3600)
    with pytest.raises(auth.NotSignedIn, match="expired"):
        auth.verify(KEY, token)


@pytest.mark.parametrize("actor", ["", "   ", "a" * 129, "bob\nadmin"])
def test_a_person_needs_a_plausible_name(actor: str) -> None:
    with pytest.raises(ValueError, match="1 to 128 printable"):
        auth.issue(KEY, actor)


@pytest.mark.parametrize("ttl", [0, -5, people.MAX_TTL_S + 1])
def test_a_token_lives_a_bounded_time(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        auth.issue(KEY, "bob", ttl_s=ttl)


def test_the_csrf_token_is_bound_to_the_session() -> None:
    first = auth.verify(KEY, auth.issue(KEY, "bob"))
    second = auth.verify(KEY, auth.issue(KEY, "bob"))
    auth.check_form(KEY, first, auth.csrf_token(KEY, first))
    for wrong in (None, "", auth.csrf_token(KEY, second), auth.csrf_token(b"x" * 32, first)):
        with pytest.raises(auth.ForgedRequest):
            auth.check_form(KEY, first, wrong)


def test_only_the_dashboard_itself_may_post() -> None:
    auth.check_origin("http://127.0.0.1:8090", None, "127.0.0.1:8090")
    auth.check_origin(None, "http://127.0.0.1:8090/runs/x", "127.0.0.1:8090")
    auth.check_origin(None, None, "127.0.0.1:8090")  # not a browser: the cookie and csrf still apply
    for origin, referer in (("http://evil.example", None), ("null", None), (None, "http://127.0.0.1:9999/")):
        with pytest.raises(auth.ForgedRequest):
            auth.check_origin(origin, referer, "127.0.0.1:8090")


def test_the_key_is_made_private_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        key = auth.load_key(store)
        path = people.key_path(store.secrets_dir)
        assert path == tmp_path / "secrets" / "identity.key"
        assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
        assert auth.load_key(store) == key
        path.chmod(0o644)
        with pytest.raises(Exception, match="identity token key is readable by others"):
            auth.load_key(store)
    finally:
        store.close()


def test_off_loopback_every_page_needs_a_session(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback(EVERYWHERE) and not is_loopback("192.168.1.5")
    with pytest.raises(SystemExit, match="--allow-remote"):
        serve(tmp_path, f"sqlite:///{tmp_path / 'state.sqlite3'}", 0, EVERYWHERE)
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        client = TestClient(create_app(store, KEY, open_reads=False))
        assert client.get("/runs").status_code == 401
        assert client.get("/api/runs").status_code == 401
        assert client.get("/metrics").status_code == 200  # Prometheus scrapes it
        client.cookies.set(auth.COOKIE, auth.issue(KEY, "bob"))
        assert client.get("/api/runs").json() == []
        assert "signed in as <strong>bob</strong>" in client.get("/runs").text
    finally:
        store.close()
