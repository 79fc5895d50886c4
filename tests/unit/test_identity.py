"""Customer tokens (``chatbot.identity``): what is accepted, and every reason a token is refused.

HS256 with the development key, and RS256/ES256 from a JWKS served by a small HTTP server on a
loopback port (keys made with ``cryptography``).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mangaassist.chatbot.identity import (
    CUSTOMER_TOKEN_HEADER,
    InvalidToken,
    KeysUnavailable,
    Reason,
    TokenVerifier,
    bearer_token,
    customer_token,
    issue_dev_token,
    issue_token,
    load_or_create_key,
)
from mangaassist.chatbot.settings import IdentitySettings
from mangaassist.core.errors import ConfigError

AUD = "mangaassist-chat"
ISS = "mangaassist-dev"
KEY = b"k" * 32


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "cust-0001", "aud": AUD, "iss": ISS, "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(key: bytes = KEY, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm="HS256")


def local() -> TokenVerifier:
    return TokenVerifier(AUD, ISS, key=KEY)


def refused(verifier: TokenVerifier, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    return info.value


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# the development key (HS256) -------------------------------------------------------------------
def test_a_valid_token_names_its_customer() -> None:
    customer = local().verify(hs256())
    assert customer.customer_id == "cust-0001"
    assert customer.expires_at > time.time()


def test_a_forged_signature_is_refused() -> None:
    assert refused(local(), hs256(key=b"x" * 32)).reason is Reason.BAD_SIGNATURE
    # someone else's customer id pasted into a genuine token: the signature no longer matches
    header, _, signature = hs256().split(".")
    tampered = f"{header}.{b64(claims(sub='cust-0002'))}.{signature}"
    assert refused(local(), tampered).reason is Reason.BAD_SIGNATURE


def test_expiry_is_required_and_checked_with_a_small_leeway() -> None:
    now = int(time.time())
    assert refused(local(), hs256(exp=now - 120)).reason is Reason.EXPIRED
    assert refused(local(), hs256(exp=now - 45)).reason is Reason.EXPIRED  # past the 30 s leeway
    assert local().verify(hs256(exp=now - 5)).customer_id == "cust-0001"  # clock skew
    missing = refused(local(), hs256(exp=None))
    assert missing.reason is Reason.MISSING_CLAIM and "exp" in str(missing)


def test_a_token_not_valid_yet_is_refused() -> None:
    now = int(time.time())
    assert refused(local(), hs256(nbf=now + 120)).reason is Reason.NOT_YET_VALID
    assert refused(local(), hs256(iat=now + 120)).reason is Reason.NOT_YET_VALID
    assert local().verify(hs256(nbf=now + 5)).customer_id == "cust-0001"


def test_audience_must_be_exactly_ours() -> None:
    assert refused(local(), hs256(aud="another-service")).reason is Reason.WRONG_AUDIENCE
    assert refused(local(), hs256(aud=[AUD, "another-service"])).reason is Reason.WRONG_AUDIENCE
    assert refused(local(), hs256(aud=None)).reason is Reason.MISSING_CLAIM


def test_issuer_must_be_ours() -> None:
    wrong = refused(local(), hs256(iss="https://evil.example"))
    assert wrong.reason is Reason.WRONG_ISSUER and "evil" not in str(wrong)  # nothing of the token echoed
    assert refused(local(), hs256(iss=None)).reason is Reason.MISSING_CLAIM


def test_alg_none_and_algorithms_off_the_allow_list_are_refused() -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    assert refused(local(), unsigned).reason is Reason.ALGORITHM
    assert refused(local(), f"{b64({'typ': 'JWT'})}.{b64(claims())}.").reason is Reason.ALGORITHM
    assert refused(local(), jwt.encode(claims(), KEY * 2, algorithm="HS512")).reason is Reason.ALGORITHM
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(local(), jwt.encode(claims(), rsa_key, algorithm="RS256")).reason is Reason.ALGORITHM


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "bm90IGpzb24.e30.c2ln", f"{b64({'alg': 'HS256'})}.not-base64!.sig", "x" * 5000],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert refused(local(), token).reason is Reason.MALFORMED


def test_a_payload_that_is_not_json_is_malformed() -> None:
    header = b64({"alg": "HS256", "typ": "JWT"})
    payload = base64.urlsafe_b64encode(b"not json").rstrip(b"=").decode()
    signing_input = f"{header}.{payload}".encode()
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(signing_input, KEY)
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert refused(local(), token).reason is Reason.MALFORMED


@pytest.mark.parametrize(
    ("sub", "reason"),
    [(None, Reason.MISSING_CLAIM), (7, Reason.BAD_SUBJECT), ("", Reason.BAD_SUBJECT),
     (" cust-0001", Reason.BAD_SUBJECT), ("cust\n0001", Reason.BAD_SUBJECT), ("c" * 129, Reason.BAD_SUBJECT)],
)  # fmt: skip
def test_the_subject_must_be_a_customer_id(sub: object, reason: Reason) -> None:
    token = jwt.encode({**claims(), "sub": sub} if sub is not None else claims(sub=None), KEY, "HS256")
    assert refused(local(), token).reason is reason


def test_bearer_header_parsing() -> None:
    assert bearer_token(None) is None
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc.def.ghi ") == "abc.def.ghi"
    for bad in ("Basic dXNlcjpwdw==", "Bearer", "Bearer ", "abc.def.ghi", "Bearer a b"):
        with pytest.raises(InvalidToken) as info:
            bearer_token(bad)
        assert info.value.reason is Reason.NOT_BEARER


SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/eu-west-1/lambda/aws4_request, "
    "SignedHeaders=host;x-amz-date;x-mangaassist-authorization, Signature=" + "0" * 64
)


def test_the_customer_token_comes_from_authorization_or_the_second_header() -> None:
    """The rules of ``customer_token`` (the chat API's; over HTTP: tests/integration/
    test_customer_identity.py)."""
    assert CUSTOMER_TOKEN_HEADER == "X-MangaAssist-Authorization"
    assert customer_token([], []) is None  # anonymous
    assert customer_token(["Bearer a.b.c"], []) == "a.b.c"  # as always
    assert customer_token([], ["Bearer a.b.c"]) == "a.b.c"  # only the second header
    assert customer_token(["Bearer a.b.c"], ["bearer  a.b.c "]) == "a.b.c"  # both, the same token
    # a signer's or a gateway's Authorization beside it: ignored for identity
    assert customer_token([SIGV4], ["Bearer a.b.c"]) == "a.b.c"
    assert customer_token(["Basic dXNlcjpwdw=="], ["Bearer a.b.c"]) == "a.b.c"
    # a SigV4 signature alone proves who called AWS, not who the customer is: anonymous
    assert customer_token([SIGV4], []) is None


def test_second_header_refusals_name_the_header_or_the_conflict() -> None:
    def refused(authorization: list[str], customer: list[str]) -> InvalidToken:
        with pytest.raises(InvalidToken) as info:
            customer_token(authorization, customer)
        assert "a.b.c" not in str(info.value) and "x.y.z" not in str(info.value)  # never quoted
        return info.value

    conflict = refused(["Bearer a.b.c"], ["Bearer x.y.z"])
    assert conflict.reason is Reason.CONFLICT
    assert str(conflict) == ("Authorization and X-MangaAssist-Authorization carry different tokens: send one")
    for bad in ("Basic dXNlcjpwdw==", "a.b.c", "Bearer", ""):
        error = refused([SIGV4], [bad])
        assert error.reason is Reason.NOT_BEARER
        assert str(error) == "the X-MangaAssist-Authorization header must be 'Bearer <token>'"
    twice = refused([], ["Bearer a.b.c", "Bearer a.b.c"])
    assert twice.reason is Reason.NOT_BEARER and "one X-MangaAssist-Authorization header only" in str(twice)
    # only Authorization, not Bearer and not a signature: as before, 401 not_bearer
    for bad in ("Basic dXNlcjpwdw==", "Bearer", "Digest x"):
        error = refused([bad], [])
        assert error.reason is Reason.NOT_BEARER
        assert str(error) == "the Authorization header must be 'Bearer <token>'"
    assert "one Authorization header only" in str(refused(["Bearer a.b.c", "Bearer a.b.c"], []))
    # a malformed Bearer Authorization beside a good second header is still refused
    assert refused(["Bearer a b"], ["Bearer a.b.c"]).reason is Reason.NOT_BEARER


def test_the_development_key_is_made_once_private_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "home" / "secrets" / "customer-token.key"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_or_create_key(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["customer-token.key"]  # no temporary left
    assert load_or_create_key(path) == keys[0]


def test_a_damaged_or_exposed_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "customer-token.key"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="32-byte"):
        load_or_create_key(path)
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(path)


def test_issue_token_round_trips_and_checks_its_input() -> None:
    issued = issue_token("cust-0007", KEY, ttl_s=120, audience=AUD, issuer=ISS)
    customer = local().verify(issued.token)
    assert customer.customer_id == "cust-0007" and customer.expires_at == issued.expires_at
    assert 110 <= issued.expires_at - time.time() <= 121
    other = TokenVerifier("another-audience", ISS, key=KEY)
    assert refused(other, issued.token).reason is Reason.WRONG_AUDIENCE
    with pytest.raises(ConfigError, match="customer id"):
        issue_token("", KEY)
    with pytest.raises(ConfigError, match="24 hours"):
        issue_token("cust-0001", KEY, ttl_s=2 * 86400)


def test_issue_dev_token_signs_with_the_home_key_the_chatbot_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MANGAASSIST_CUSTOMER_JWKS_URL", "MANGAASSIST_CUSTOMER_TOKEN_AUDIENCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MANGAASSIST_CUSTOMER_TOKEN_ISSUER", raising=False)
    issued = issue_dev_token("cust-0003", tmp_path)
    verifier = TokenVerifier.from_settings(IdentitySettings.from_env(tmp_path))
    assert verifier.verify(issued.token).customer_id == "cust-0003"
    other_home = TokenVerifier.from_settings(IdentitySettings.from_env(tmp_path / "other"))
    assert refused(other_home, issued.token).reason is Reason.BAD_SIGNATURE


# settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MANGAASSIST_CUSTOMER_JWKS_URL": "https://idp.example/jwks.json"},
         "MANGAASSIST_CUSTOMER_TOKEN_ISSUER"),
        ({"MANGAASSIST_CUSTOMER_JWKS_URL": "http://idp.example/jwks.json",
          "MANGAASSIST_CUSTOMER_TOKEN_ISSUER": "x"}, "https"),
        ({"MANGAASSIST_CUSTOMER_JWKS_URL": "https://idp.example/jwks.json",
          "MANGAASSIST_CUSTOMER_TOKEN_ISSUER": "x", "MANGAASSIST_DEV_SIGNIN": "1"}, "MANGAASSIST_DEV_SIGNIN"),
        ({"MANGAASSIST_DEV_SIGNIN": "yes"}, "MANGAASSIST_DEV_SIGNIN"),
    ],
)  # fmt: skip
def test_bad_identity_settings_are_named(
    env: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "MANGAASSIST_CUSTOMER_JWKS_URL",
        "MANGAASSIST_CUSTOMER_TOKEN_ISSUER",
        "MANGAASSIST_DEV_SIGNIN",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        IdentitySettings.from_env(tmp_path)


# a JWKS (RS256, ES256) --------------------------------------------------------------------------
class Jwks:
    """A JWKS document on a loopback port; counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, public_key: Any, kid: str, alg: str) -> None:
        to_jwk = RSAAlgorithm.to_jwk if alg == "RS256" else ECAlgorithm.to_jwk
        jwk: dict[str, Any] = to_jwk(public_key, as_dict=True)
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    served.thread.start()
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def remote(jwks: Jwks, cooldown_s: float = 30.0) -> TokenVerifier:
    client = jwt.PyJWKClient(
        jwks.url, cache_keys=False, lifespan=300, timeout=5, cooldown_duration=cooldown_s
    )
    return TokenVerifier(AUD, "https://idp.example", jwks=client)


def rs256(key: Any, kid: str, alg: str = "RS256", **overrides: Any) -> str:
    merged: dict[str, Any] = {"iss": "https://idp.example", **overrides}
    return jwt.encode(claims(**merged), key, algorithm=alg, headers={"kid": kid})


def test_from_settings_reads_keys_from_the_jwks_url(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks.publish(rsa_key.public_key(), "k1", "RS256")
    settings = IdentitySettings(jwks_url=jwks.url, audience=AUD, issuer="https://idp.example")
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.uses_network
    assert verifier.verify(rs256(rsa_key, "k1")).customer_id == "cust-0001"


def test_jwks_tokens_verify_and_the_key_set_is_cached(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks.publish(rsa_key.public_key(), "rsa-1", "RS256")
    jwks.publish(ec_key.public_key(), "ec-1", "ES256")
    verifier = remote(jwks)
    assert verifier.verify(rs256(rsa_key, "rsa-1")).customer_id == "cust-0001"
    assert verifier.verify(rs256(ec_key, "ec-1", alg="ES256", sub="cust-0002")).customer_id == "cust-0002"
    for _ in range(5):
        verifier.verify(rs256(rsa_key, "rsa-1"))
    assert jwks.fetches == 1


def test_jwks_refusals(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks.publish(rsa_key.public_key(), "rsa-1", "RS256")
    verifier = remote(jwks)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(verifier, rs256(other, "rsa-1")).reason is Reason.BAD_SIGNATURE
    assert refused(verifier, rs256(rsa_key, "rsa-unknown")).reason is Reason.UNKNOWN_KEY
    no_kid = jwt.encode(claims(iss="https://idp.example"), rsa_key, algorithm="RS256")
    assert refused(verifier, no_kid).reason is Reason.UNKNOWN_KEY
    assert refused(verifier, rs256(rsa_key, "rsa-1", aud="other")).reason is Reason.WRONG_AUDIENCE
    assert refused(verifier, rs256(rsa_key, "rsa-1", iss=ISS)).reason is Reason.WRONG_ISSUER
    assert refused(verifier, rs256(rsa_key, "rsa-1", exp=int(time.time()) - 300)).reason is Reason.EXPIRED
    # HS256 "signed" with the public key as the secret (algorithm confusion), or with the dev key
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = f"{b64({'alg': 'HS256', 'kid': 'rsa-1'})}.{b64(claims(iss='https://idp.example'))}."
    confused += (
        base64.urlsafe_b64encode(
            jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
                confused[:-1].encode(), pem
            )
        )
        .rstrip(b"=")
        .decode()
    )
    assert refused(verifier, confused).reason is Reason.ALGORITHM
    assert refused(verifier, hs256(iss="https://idp.example")).reason is Reason.ALGORITHM
    unsigned = f"{b64({'alg': 'none', 'kid': 'rsa-1'})}.{b64(claims(iss='https://idp.example'))}."
    assert refused(verifier, unsigned).reason is Reason.ALGORITHM
    assert jwks.fetches == 1  # refusals before the key lookup cost no fetch; the unknown kid was cooling down


def test_a_rotated_key_is_fetched_when_a_token_names_it(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks.publish(rsa_key.public_key(), "old", "RS256")
    verifier = remote(jwks, cooldown_s=0)
    assert verifier.verify(rs256(rsa_key, "old")).customer_id == "cust-0001"
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish(rotated.public_key(), "new", "RS256")
    assert verifier.verify(rs256(rotated, "new", sub="cust-0009")).customer_id == "cust-0009"
    assert jwks.fetches == 2


def test_an_unreachable_jwks_is_keys_unavailable_not_an_invalid_token(rsa_key: rsa.RSAPrivateKey) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there now
    client = jwt.PyJWKClient(f"http://127.0.0.1:{port}/jwks.json", timeout=2)
    verifier = TokenVerifier(AUD, "https://idp.example", jwks=client)
    with pytest.raises(KeysUnavailable, match="could not be read"):
        verifier.verify(rs256(rsa_key, "k1"))
