"""Customer identity over real HTTP: the customer comes from a signed token, never from the body.

The session's chatbot (``chatbot``: development sign-in off, as in production) and one with the
development sign-in on, both real processes sharing the session's state home (so its key).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from botocore.credentials import Credentials

from mangaassist.chatbot.identity import issue_dev_token, load_or_create_key
from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.chatbot.settings import DEFAULT_AUDIENCE, DEV_ISSUER, DEV_KEY_FILE
from mangaassist.platform.aws.compute_lambda import FunctionUrlAuth
from mangaassist.platform.compute import CUSTOMER_TOKEN_HEADER, PIN_HEADER, Pin
from tests.conftest import ROOT, server_env
from tests.sigv4_check import KEY, SECRET, TOKEN, Signer, function_url

pytestmark = pytest.mark.slow

ORDERS = [json.loads(line) for line in (ROOT / "data" / "orders.jsonl").open()]
A, B = "cust-0001", "cust-0002"  # two customers with several orders each
ORDERS_OF = {c: [o for o in ORDERS if o["customer_id"] == c] for c in (A, B)}


@pytest.fixture(scope="module")
def signin_chatbot(state_home: Path) -> Iterator[ChatbotProcess]:
    env = server_env(state_home, MANGAASSIST_DEV_SIGNIN="1", MANGAASSIST_REVISION="r-signin")
    with ChatbotProcess(env=env, log_path=state_home / "signin-chatbot.log") as server:
        yield server


def token_for(server: ChatbotProcess, customer: str) -> str:
    return issue_dev_token(customer, Path(server.env["MANGAASSIST_HOME"])).token


def chat(
    server: ChatbotProcess | str,
    message: str,
    token: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    auth: httpx.Auth | None = None,
    **body: Any,
) -> httpx.Response:
    """``POST /v1/chat`` to ``server`` (or a URL) with ``token`` as ``Authorization: Bearer``."""
    sent = {"Authorization": f"Bearer {token}"} if token is not None else {}
    payload = {"session_id": f"id-{uuid.uuid4().hex[:10]}", "message": message, **body}
    url = server if isinstance(server, str) else server.url
    return httpx.post(
        f"{url}/v1/chat", json=payload, headers={**sent, **(headers or {})}, auth=auth, timeout=30.0
    )


def order_ids(text: str) -> set[str]:
    return {o["order_id"] for o in ORDERS if o["order_id"] in text}


@pytest.mark.parametrize("claimed", ["cust-0001", None, 7])
def test_a_customer_id_in_the_body_is_400_naming_the_field_and_reads_nothing(
    chatbot: ChatbotProcess, claimed: object
) -> None:
    order = ORDERS_OF[A][0]["order_id"]
    for token in (None, token_for(chatbot, A)):  # refused even beside a valid token
        r = chat(chatbot, f"where is my order {order}?", token, customer_id=claimed)
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["field"] == "customer_id"
        assert "customer_id" in body["error"] and "Authorization: Bearer" in body["error"]
        assert order_ids(r.text) == set() and "answer" not in body


def _signed(key: bytes, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"sub": A, "aud": DEFAULT_AUDIENCE, "iss": DEV_ISSUER, "iat": now, "exp": now + 600}
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="HS256")


def test_invalid_tokens_are_401_and_read_nothing(chatbot: ChatbotProcess, state_home: Path) -> None:
    key = load_or_create_key(state_home / DEV_KEY_FILE)  # the chatbot's own key
    now = int(time.time())
    unsigned = jwt.encode(
        {"sub": A, "aud": DEFAULT_AUDIENCE, "iss": DEV_ISSUER, "exp": now + 600}, None, "none"
    )
    cases = {
        "bad_signature": _signed(b"f" * 32),
        "expired": _signed(key, iat=now - 7200, exp=now - 3600),
        "wrong_audience": _signed(key, aud="another-service"),
        "wrong_issuer": _signed(key, iss="someone-else"),
        "algorithm_not_allowed": unsigned,
        "malformed": "not.a.token",
    }
    order = ORDERS_OF[A][0]
    for reason, token in cases.items():
        r = chat(chatbot, f"what's the status of order {order['order_id']}?", token)
        assert r.status_code == 401, (reason, r.text)
        assert r.json()["reason"] == reason
        assert r.json()["error"].startswith("invalid customer token")
        assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert order_ids(r.text) == set() and order["status"] not in r.text
    basic = httpx.post(
        f"{chatbot.url}/v1/chat",
        json={"session_id": "s-basic", "message": "where is my order?"},
        headers={"Authorization": "Basic dXNlcjpwdw=="},
    )
    assert basic.status_code == 401 and basic.json()["reason"] == "not_bearer"
    # the control: the same question with a valid token reads the order
    good = chat(chatbot, f"what's the status of order {order['order_id']}?", token_for(chatbot, A))
    assert good.status_code == 200 and order["order_id"] in good.json()["answer"]
    metrics = httpx.get(f"{chatbot.url}/metrics").text
    assert 'mangaassist_customer_token_rejected_total{reason="expired"}' in metrics
    log = (state_home / "chatbot.log").read_text()
    assert all(token not in log for token in cases.values())


SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/eu-west-1/lambda/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)


def test_the_customer_token_may_come_in_the_second_header(chatbot: ChatbotProcess, state_home: Path) -> None:
    """``X-MangaAssist-Authorization: Bearer`` when something else owns ``Authorization``: the
    same customer, a non-Bearer ``Authorization`` beside it ignored, a different Bearer token 401."""
    mine, theirs = ORDERS_OF[A][0], ORDERS_OF[B][0]
    a, b = token_for(chatbot, A), token_for(chatbot, B)
    question = f"what's the status of order {mine['order_id']}?"
    for headers in (
        {CUSTOMER_TOKEN_HEADER: f"Bearer {a}"},
        {CUSTOMER_TOKEN_HEADER: f"Bearer {a}", "Authorization": SIGV4},
        {CUSTOMER_TOKEN_HEADER: f"Bearer {a}", "Authorization": "Basic dXNlcjpwdw=="},
        {CUSTOMER_TOKEN_HEADER: f"Bearer {a}", "Authorization": f"Bearer {a}"},
    ):
        r = chat(chatbot, question, headers=headers)
        assert r.status_code == 200, (sorted(headers), r.text)
        assert mine["order_id"] in r.json()["answer"] and mine["status"] in r.json()["answer"]
        other = chat(chatbot, f"what's the status of order {theirs['order_id']}?", headers=headers).json()
        assert "couldn't find" in other["answer"]  # as customer A: never B's order
    conflict = chat(chatbot, question, b, headers={CUSTOMER_TOKEN_HEADER: f"Bearer {a}"})
    assert conflict.status_code == 401 and conflict.json()["reason"] == "conflicting_tokens"
    assert "Authorization and X-MangaAssist-Authorization carry different tokens" in conflict.json()["error"]
    assert order_ids(conflict.text) == set()
    bad = chat(
        chatbot, question, headers={CUSTOMER_TOKEN_HEADER: "Basic dXNlcjpwdw==", "Authorization": SIGV4}
    )
    assert bad.status_code == 401 and bad.json()["reason"] == "not_bearer"
    assert "X-MangaAssist-Authorization header must be 'Bearer <token>'" in bad.json()["error"]
    # a SigV4 signature alone: no customer (anonymous, asked to sign in), not a 401
    anonymous = chat(chatbot, f"where is my order {mine['order_id']}?", headers={"Authorization": SIGV4})
    assert anonymous.status_code == 200 and "sign in" in anonymous.json()["answer"]
    assert mine["status"] not in anonymous.json()["answer"]
    metrics = httpx.get(f"{chatbot.url}/metrics").text
    assert 'mangaassist_customer_token_rejected_total{reason="conflicting_tokens"}' in metrics
    log = (state_home / "chatbot.log").read_text()
    assert a not in log and b not in log


def test_a_signed_pinned_request_reaches_the_chatbot_as_the_customer(chatbot: ChatbotProcess) -> None:
    """A Lambda pin with ``AWS_IAM`` end to end: a function URL stand-in that refuses (403) what is
    not validly signed for ``lambda`` and forwards the rest with every header, as Lambda's event
    has them, to the real chatbot. The pin's signer moves the customer's token to
    ``X-MangaAssist-Authorization``; the chatbot answers as that customer."""
    region = "eu-west-1"
    signer = FunctionUrlAuth(lambda: Credentials(KEY, SECRET, TOKEN), region)
    order, token = ORDERS_OF[A][0], token_for(chatbot, A)
    question = f"what's the status of order {order['order_id']}?"
    with function_url(chatbot.url, Signer("lambda", region)) as url:
        pin = Pin(url.url, {PIN_HEADER: "r-test"}, signer)
        unsigned = chat(pin.url, question, token, headers=dict(pin.headers))
        assert unsigned.status_code == 403 and order_ids(unsigned.text) == set()
        signed = chat(pin.url, question, token, headers=dict(pin.headers), auth=pin.auth)
        assert signed.status_code == 200, signed.text
        assert order["order_id"] in signed.json()["answer"] and order["status"] in signed.json()["answer"]
        # the smoke test's chats carry no customer: signed, they are answered anonymously
        smoke = chat(
            pin.url, f"where is my order {order['order_id']}?", headers=dict(pin.headers), auth=pin.auth
        )
        assert smoke.status_code == 200 and "sign in" in smoke.json()["answer"]
        assert order["status"] not in smoke.json()["answer"]
        received = [{k.lower(): v for k, v in r["headers"].items()} for r in url.requests]
    assert "authorization" in received[0] and "x-amz-date" not in received[0]  # the unsigned one: 403
    assert received[1]["authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert received[1][CUSTOMER_TOKEN_HEADER.lower()] == f"Bearer {token}"
    assert received[2]["authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert CUSTOMER_TOKEN_HEADER.lower() not in received[2]


def test_customer_a_never_reads_customer_b_orders(chatbot: ChatbotProcess) -> None:
    for me, other in ((A, B), (B, A)):
        token = token_for(chatbot, me)
        theirs = {o["order_id"] for o in ORDERS_OF[other]}
        for order in ORDERS_OF[other]:
            r = chat(chatbot, f"what's the status of order {order['order_id']}?", token)
            assert r.status_code == 200
            answer = r.json()["answer"]
            assert "couldn't find" in answer and r.headers.get("X-MangaAssist-Fallback") == "1"
            assert r.json()["sources"] == []
        listing = chat(chatbot, "where are my orders?", token).json()["answer"]
        assert order_ids(listing) and not order_ids(listing) & theirs
        own = ORDERS_OF[me][0]
        mine = chat(chatbot, f"what's the status of order {own['order_id']}?", token).json()
        assert own["order_id"] in mine["answer"] and own["status"] in mine["answer"]


def test_a_session_never_lends_its_customer_to_another_token(chatbot: ChatbotProcess) -> None:
    session = f"shared-{uuid.uuid4().hex[:6]}"
    order = ORDERS_OF[A][0]["order_id"]
    first = chat(chatbot, f"where is order {order}?", token_for(chatbot, A), session_id=session)
    assert order in first.json()["answer"]
    for token in (token_for(chatbot, B), None):
        later = chat(chatbot, f"where is order {order}?", token, session_id=session).json()
        assert order_ids(later["answer"]) <= {order} and ORDERS_OF[A][0]["status"] not in later["answer"]


def test_without_a_token_order_questions_ask_to_sign_in(
    chatbot: ChatbotProcess, signin_chatbot: ChatbotProcess
) -> None:
    order = ORDERS_OF[A][0]["order_id"]
    production = chat(chatbot, f"where is my order {order}?").json()
    assert production["intent"] == "order_status"
    assert "sign in" in production["answer"] and order_ids(production["answer"]) <= {order}
    assert "/v1/signin" not in production["answer"]  # no development sign-in to point at
    dev = chat(signin_chatbot, f"where is my order {order}?").json()
    assert "sign in" in dev["answer"] and "POST /v1/signin" in dev["answer"]


def test_the_dev_signin_issues_a_working_token(signin_chatbot: ChatbotProcess) -> None:
    r = httpx.post(f"{signin_chatbot.url}/v1/signin", json={"customer_id": B}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == B and 3590 <= claims["exp"] - time.time() <= 3601
    assert body["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
    order = ORDERS_OF[B][0]
    answer = chat(signin_chatbot, f"what's the status of order {order['order_id']}?", body["token"]).json()
    assert order["order_id"] in answer["answer"] and order["status"] in answer["answer"]
    unknown = httpx.post(f"{signin_chatbot.url}/v1/signin", json={"customer_id": "cust-9999"}, timeout=10)
    assert unknown.status_code == 404 and "token" not in unknown.json()
    bad = httpx.post(f"{signin_chatbot.url}/v1/signin", json={"customer_id": ""}, timeout=10)
    assert bad.status_code == 422


def test_the_dev_signin_is_404_when_disabled(chatbot: ChatbotProcess) -> None:
    r = httpx.post(f"{chatbot.url}/v1/signin", json={"customer_id": A}, timeout=10)
    assert r.status_code == 404
    assert "token" not in r.text


def test_the_cli_signs_tokens_the_chatbot_accepts(chatbot: ChatbotProcess, state_home: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "MANGAASSIST_ROOT": str(ROOT), "MANGAASSIST_DEV_SIGNIN": ""}
    cli = [sys.executable, "-m", "mangaassist.cli.main"]
    issued = subprocess.run(
        [*cli, "token", "issue", B, "--ttl", "5m", "--home", str(state_home), "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    doc = json.loads(issued.stdout)
    assert doc["customer_id"] == B and doc["audience"] == DEFAULT_AUDIENCE
    assert set(doc) == {"token", "customer_id", "expires_at", "audience", "issuer", "key_file"}
    assert doc["key_file"] == str(state_home / DEV_KEY_FILE)  # where the key is; never the key itself
    order = ORDERS_OF[B][0]["order_id"]
    assert order in chat(chatbot, f"where is order {order}?", doc["token"]).json()["answer"]
    asked = subprocess.run(
        [*cli, "chat", f"where is order {order}?", "--customer", B, "--home", str(state_home),
         "--url", chatbot.url, "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert order in json.loads(asked.stdout)["answer"]
    other = subprocess.run(
        [*cli, "chat", f"where is order {order}?", "--customer", A, "--home", str(state_home),
         "--url", chatbot.url, "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert other.returncode == 0 and "couldn't find" in json.loads(other.stdout)["answer"]
