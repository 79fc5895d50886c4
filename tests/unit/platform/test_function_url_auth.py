"""A Lambda pin's signer (``compute_lambda.FunctionUrlAuth``): every request it sends carries a
valid SigV4 signature for ``lambda`` in the region (checked by recomputing it with botocore from
what a loopback server received, as a function URL with ``AWS_IAM`` would), covering the body and
the headers as sent; a customer's ``Authorization: Bearer`` moves to ``X-MangaAssist-Authorization``
first; bad input is a ``ConfigError`` naming the request, with nothing sent and no token quoted.
And every pipeline check that sends pinned requests sends them through the pin's ``auth``.
The chatbot answering such a request as the customer: tests/integration/test_customer_identity.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.credentials import Credentials

from mangaassist.chatbot.answer_quality import HttpTarget
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.pipelines.app import _smoke
from mangaassist.delivery.pipelines.model import _pinned_version
from mangaassist.delivery.rollout.load import run_load
from mangaassist.platform.aws.compute_lambda import FunctionUrlAuth
from mangaassist.platform.compute import CUSTOMER_TOKEN_HEADER, PIN_HEADER, Pin
from tests.sigv4_check import (
    KEY,
    SECRET,
    TOKEN,
    Recorder,
    Signer,
    expected_signature,
    recording,
    signature_of,
)

REGION = "eu-west-1"
LAMBDA = Signer("lambda", REGION)
CUSTOMER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjdXN0LTAwMDEifQ.c2lnbmVk"


def _answer(recorded: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """As the chatbot answers: a chat's intent from the smoke cases, ``/readyz`` a model version."""
    path = recorded["path"].split("?")[0]
    body: dict[str, Any] = {"status": "ok"}
    if path == "/v1/chat":
        message = json.loads(recorded["body"])["message"]
        body = {"answer": "...", "intent": "chitchat" if "hey" in message else "other", "sources": []}
    elif path == "/readyz":
        body = {"ready": True, "model_version": "7"}
    return (
        200,
        {"Content-Type": "application/json", "X-MangaAssist-Revision": "r1"},
        json.dumps(body).encode(),
    )


@pytest.fixture
def server() -> Iterator[Recorder]:
    with recording(_answer) as recorder:
        yield recorder


def _signer(token: str | None = TOKEN) -> FunctionUrlAuth:
    return FunctionUrlAuth(lambda: Credentials(KEY, SECRET, token), REGION)


def _headers(recorded: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in recorded["headers"].items()}


def assert_signed(base: str, recorded: dict[str, Any], signer: Signer = LAMBDA) -> list[str]:
    """``recorded`` carries a valid signature of ``signer``'s, made now; its signed headers."""
    headers = _headers(recorded)
    today = datetime.now(UTC)
    scope = f"Credential={signer.key}/{today:%Y%m%d}/{signer.region}/{signer.service}/aws4_request"
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 {scope}, SignedHeaders=")
    sent_at = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((today - sent_at).total_seconds()) < 300
    assert headers.get("x-amz-security-token") == signer.token
    assert signature_of(recorded) == expected_signature(base, recorded, signer)
    assert signature_of(recorded) != expected_signature(base, recorded, signer, secret="another-secret")
    return headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")


def test_a_signed_request_carries_a_valid_sigv4_signature_and_the_customer_token_moved(
    server: Recorder,
) -> None:
    with httpx.Client(auth=_signer()) as client:
        r = client.post(
            f"{server.url}/v1/chat?lang=en&q=a b",
            json={"session_id": "s1", "message": "hey there"},
            headers={PIN_HEADER: "r1", "X-Session-Id": "s1", "Authorization": f"Bearer {CUSTOMER_TOKEN}"},
        )
    assert r.status_code == 200
    [recorded] = server.requests
    signed = assert_signed(server.url, recorded)
    headers = _headers(recorded)
    assert headers[CUSTOMER_TOKEN_HEADER.lower()] == f"Bearer {CUSTOMER_TOKEN}"
    assert CUSTOMER_TOKEN not in headers["authorization"]
    # the signature covers the customer's token, the pin, the session, the body's type; not the
    # client's own headers, which a proxy may change
    for name in (
        "host",
        "content-type",
        "x-amz-date",
        "x-mangaassist-authorization",
        "x-mangaassist-revision",
    ):
        assert name in signed, signed
    assert "x-session-id" in signed and "user-agent" not in signed and "accept-encoding" not in signed
    # the body hash is in the signature: another body (or another token) would not verify
    for tampered in (
        {**recorded, "body": recorded["body"].replace(b"hey", b"hoy")},
        {**recorded, "headers": {**recorded["headers"], CUSTOMER_TOKEN_HEADER: "Bearer other.token.x"}},
    ):
        assert signature_of(recorded) != expected_signature(server.url, tampered, LAMBDA)


def test_without_a_session_token_no_security_token_and_without_a_customer_no_second_header(
    server: Recorder,
) -> None:
    with httpx.Client(auth=_signer(token=None)) as client:
        assert client.get(f"{server.url}/healthz", headers={PIN_HEADER: "r1"}).status_code == 200
    [recorded] = server.requests
    assert_signed(server.url, recorded, Signer("lambda", REGION, token=None))
    headers = _headers(recorded)
    assert "x-amz-security-token" not in headers and CUSTOMER_TOKEN_HEADER.lower() not in headers
    assert recorded["body"] == b""


def test_the_same_token_in_both_headers_is_sent_once_and_a_redirect_is_signed_again(server: Recorder) -> None:
    signer = _signer()
    request = httpx.Request(
        "POST",
        f"{server.url}/v1/chat",
        json={"message": "x"},
        headers={
            "Authorization": f"bearer {CUSTOMER_TOKEN}",
            CUSTOMER_TOKEN_HEADER: f"Bearer {CUSTOMER_TOKEN}",
        },
    )
    signer.sign(request)
    assert request.headers.get_list(CUSTOMER_TOKEN_HEADER) == [f"Bearer {CUSTOMER_TOKEN}"]
    first = request.headers["authorization"]
    assert first.startswith("AWS4-HMAC-SHA256 ")
    signer.sign(request)  # as httpx does for a redirect: our own signature is replaced, not refused
    assert request.headers.get_list("authorization") == [request.headers["authorization"]]
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        (
            {"Authorization": f"Bearer {CUSTOMER_TOKEN}", CUSTOMER_TOKEN_HEADER: "Bearer another.token.x"},
            "Authorization and X-MangaAssist-Authorization carry different customer tokens",
        ),
        (
            {"Authorization": "Basic dXNlcjpwdw=="},
            r"Authorization is not 'Bearer <token>' \(scheme 'Basic'\)",
        ),
        ({"Authorization": "Bearer"}, "Authorization is not 'Bearer <token>'"),
        (
            [("Authorization", f"Bearer {CUSTOMER_TOKEN}"), ("Authorization", "Bearer b")],
            "2 Authorization headers",
        ),
    ],
)
def test_what_the_signer_cannot_send_is_refused_naming_the_request_and_nothing_is_sent(
    server: Recorder, headers: Any, match: str
) -> None:
    with httpx.Client(auth=_signer()) as client, pytest.raises(ConfigError, match=match) as caught:
        client.post(f"{server.url}/v1/chat?x=1", json={"message": "x"}, headers=headers)
    assert f"POST {server.url}/v1/chat" in str(caught.value)
    assert CUSTOMER_TOKEN not in str(caught.value) and "dXNlcjpwdw" not in str(caught.value)
    assert server.requests == []


def test_without_credentials_or_region_the_error_names_what_is_missing(server: Recorder) -> None:
    with pytest.raises(ConfigError, match="no AWS credentials to sign requests for lambda in eu-west-1"):
        FunctionUrlAuth(lambda: None, REGION).frozen()
    with pytest.raises(ConfigError, match="Lambda region 'europe' is not an AWS region"):
        FunctionUrlAuth(lambda: Credentials(KEY, SECRET), "europe")
    keyless = FunctionUrlAuth(lambda: Credentials(KEY, ""), REGION)
    with httpx.Client(auth=keyless) as client, pytest.raises(ConfigError, match="without a secret key"):
        client.get(f"{server.url}/healthz")
    assert server.requests == []


class _PinnedCompute:
    """A ``Compute`` whose every pin is ``pin`` (what the pipeline checks ask for)."""

    def __init__(self, pin: Pin) -> None:
        self._pin = pin
        self.pinned: list[tuple[str, str]] = []

    def pin(self, service: str, revision: str) -> Pin:
        self.pinned.append((service, revision))
        return self._pin


def test_every_pipeline_check_sends_its_pinned_requests_through_the_pins_auth(
    server: Recorder, tmp_path: Path
) -> None:
    pin = Pin(server.url, {PIN_HEADER: "r1"}, _signer())
    compute: Any = _PinnedCompute(pin)
    # CD-01's smoke test (health and a chat), its golden set (a customer), its load (latency gate,
    # warm-ups), CD-03's readiness check
    failures, _ = _smoke(compute, "chatbot", "r1", [("chitchat", "hey there")])
    assert failures == []
    target = HttpTarget(pin.url, headers=pin.headers, auth=pin.auth, token_for=lambda c: CUSTOMER_TOKEN)
    try:
        assert target.ask("s-gold", "where is my order?", "cust-0001").intent == "other"
    finally:
        target.close()
    report = run_load(
        pin.url, rps=20, duration_s=0.25, sessions=2, headers=pin.headers, auth=pin.auth, seed=1
    )
    assert report.ok == report.requests > 0
    assert _pinned_version(compute, "r1") == "7"
    paths = [r["path"] for r in server.requests]
    assert paths[:3] == ["/healthz", "/v1/chat", "/v1/chat"] and paths[-1] == "/readyz"
    for recorded in server.requests:
        assert_signed(server.url, recorded)
        assert _headers(recorded)[PIN_HEADER.lower()] == "r1"
    gold = server.requests[2]
    assert _headers(gold)[CUSTOMER_TOKEN_HEADER.lower()] == f"Bearer {CUSTOMER_TOKEN}"
    assert compute.pinned == [("chatbot", "r1"), ("intent-model", "r1")]


def test_a_pins_auth_from_a_boto3_session_uses_its_credentials(server: Recorder) -> None:
    session = boto3.Session(
        aws_access_key_id=KEY, aws_secret_access_key=SECRET, aws_session_token=TOKEN, region_name=REGION
    )
    with httpx.Client(auth=FunctionUrlAuth(session.get_credentials, REGION)) as client:
        client.get(f"{server.url}/readyz")
    assert_signed(server.url, server.requests[0])
