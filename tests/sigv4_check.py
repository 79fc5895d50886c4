"""SigV4 as AWS checks it, for tests: the signature recomputed with botocore from what a loopback
HTTP server received (``expected_signature``), that server (``Recorder``: records each request and
answers with its ``answer``), and a stand-in for a Lambda function URL with ``AuthType`` ``AWS_IAM``
(``function_url``: 403 unless the signature is valid, else the request forwarded to an upstream).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

KEY, SECRET, TOKEN = "AKIDEXAMPLETESTING", "testing-secret", "testing-session-token"
"""The test credentials (session credentials: with a token)."""

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, str], bytes]]
"""What the server answers to a recorded request: status, headers, body."""


@dataclass(frozen=True)
class Signer:
    """Who signs and for what: the credentials the server expects and the service and region."""

    service: str
    region: str
    key: str = KEY
    secret: str = SECRET
    token: str | None = TOKEN


def expected_signature(base: str, recorded: dict[str, Any], signer: Signer, secret: str | None = None) -> str:
    """The signature AWS computes for ``recorded`` (``method``, ``path``, ``headers``, ``body``): the
    canonical request rebuilt from what arrived (the query decoded and RFC 3986-encoded again,
    sorted; the signed headers as received; the body's hash), with ``secret`` (default the
    signer's)."""
    headers = {k.lower(): v for k, v in recorded["headers"].items()}
    signed = re.search(r"SignedHeaders=([^,]+)", headers["authorization"])
    assert signed, headers["authorization"]
    parts = urlsplit(recorded["path"])
    pairs = sorted(parse_qsl(parts.query, keep_blank_values=True))
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
    request = AWSRequest(
        method=recorded["method"],
        url=f"{base}{parts.path}" + (f"?{query}" if query else ""),
        headers={name: headers[name] for name in signed.group(1).split(";")},
        data=recorded.get("body", b""),
    )
    request.context["timestamp"] = headers["x-amz-date"]
    credentials = Credentials(signer.key, secret if secret is not None else signer.secret, signer.token)
    auth = SigV4Auth(credentials, signer.service, signer.region)
    canonical = auth.canonical_request(request)
    return str(auth.signature(auth.string_to_sign(request, canonical), request))


def signature_of(recorded: dict[str, Any]) -> str:
    authorization = {k.lower(): v for k, v in recorded["headers"].items()}.get("authorization", "")
    return authorization.rsplit("Signature=", 1)[1] if "Signature=" in authorization else ""


@dataclass
class Recorder:
    """A loopback HTTP server (``url``) recording every request in ``requests``."""

    answer: Answer
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            recorded = {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": self.rfile.read(length) if length else b"",
            }
            recorder.requests.append(recorded)
            status, headers, body = recorder.answer(recorded)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


@contextmanager
def recording(answer: Answer) -> Iterator[Recorder]:
    """A ``Recorder`` serving on a free loopback port until the block ends."""
    recorder = Recorder(answer)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


_HOP = {"host", "connection", "content-length", "transfer-encoding", "keep-alive"}


@contextmanager
def function_url(upstream: str, signer: Signer) -> Iterator[Recorder]:
    """A Lambda function URL with ``AWS_IAM`` in front of ``upstream`` (an ASGI app served over
    HTTP, as the Lambda Web Adapter serves it): 403 unless the request carries a valid signature
    of ``signer``'s, else the request forwarded with every header (``Authorization`` included, as
    the function's event has it)."""

    def answer(recorded: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if not signature_of(recorded) or signature_of(recorded) != expected_signature(
            proxy.url, recorded, signer
        ):
            return 403, {"Content-Type": "application/json"}, b'{"Message":"Forbidden"}'
        headers = {k: v for k, v in recorded["headers"].items() if k.lower() not in _HOP}
        r = httpx.request(
            recorded["method"],
            f"{upstream.rstrip('/')}{recorded['path']}",
            headers=headers,
            content=recorded["body"],
            timeout=30.0,
        )
        return r.status_code, {"Content-Type": r.headers.get("content-type", "")}, r.content

    with recording(answer) as proxy:
        yield proxy
