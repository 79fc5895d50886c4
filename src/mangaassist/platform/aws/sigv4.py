"""AWS Signature Version 4 for ``httpx`` requests: botocore's ``SigV4Auth`` on an ``AWSRequest``.

Two users: Amazon Managed Service for Prometheus's query API (``metrics_amp``, service ``aps``) and
the function URLs of Lambda revisions with ``AuthType`` ``AWS_IAM`` (``compute_lambda``'s pins,
service ``lambda``: ``FunctionUrlAuth``).

What is signed: the method, the path, the query string (sent in the canonical form SigV4 signs:
each name and value RFC 3986-encoded, sorted, so what AWS recomputes is what was signed), the
``Host`` header, ``Content-Type`` and every ``X-`` header the request carries (a pin's
``X-MangaAssist-Revision``, ``X-Session-Id``, the customer's ``X-MangaAssist-Authorization``), and
the SHA-256 of the body. The client's own headers (``User-Agent``, ``Accept``, ``Accept-Encoding``,
``Connection``, ``Content-Length``) are not: a proxy may change them, and the body hash covers the
body. The request gets ``Authorization: AWS4-HMAC-SHA256 ...``, ``X-Amz-Date`` and, with session
credentials (a role's), ``X-Amz-Security-Token``.

Credentials come from a callable (boto3's ``Session.get_credentials``: its chain of environment,
profile, SSO, the container's or instance's role), asked on every request, so refreshed credentials
are used. None, or credentials without a key, is a ``ConfigError`` naming what is missing, and
nothing is sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from typing import Any
from urllib.parse import quote

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from mangaassist.core.errors import ConfigError

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_SIGNED = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")
"""What ``SigV4Auth.add_auth`` sets on the request: copied onto the ``httpx`` request."""

Credentials = Any
"""botocore credentials (``access_key``, ``secret_key``, ``token``; ``get_frozen_credentials``)."""


def check_region(region: str | None, what: str) -> str:
    """``region`` when it looks like an AWS region, else ``ConfigError`` naming it and ``what`` it
    is for (``AMP``, ``Lambda``)."""
    if not region or not _REGION.match(region):
        raise ConfigError(
            f"{what} region {region!r} is not an AWS region (e.g. eu-west-1): "
            f"SigV4 signs for the region {what} runs in"
        )
    return region


def canonical_query(params: httpx.QueryParams) -> str:
    """The query string as SigV4 canonicalises it: each name and value RFC 3986-encoded, sorted."""
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params.multi_items())
    return "&".join(f"{k}={v}" for k, v in pairs)


def signs(header: str) -> bool:
    """Whether a request header is covered by the signature: ``Content-Type`` and ``X-`` headers
    (not ``X-Amz-*``, which signing sets, nor ``X-Amzn-Trace-Id``, which AWS's front may add)."""
    name = header.lower()
    if name == "content-type":
        return True
    return name.startswith("x-") and not name.startswith(("x-amz-", "x-amzn-"))


class SigV4HttpxAuth(httpx.Auth):
    """Signs each ``httpx`` request with SigV4 for ``service`` in ``region``.

    ``credentials``: a callable returning botocore credentials (boto3's ``Session.get_credentials``),
    asked on every request (refreshable credentials refresh there). None is a ``ConfigError``
    naming what is missing, and no request is sent. ``what``: the AWS service's name in errors
    (default ``service``). Subclasses change the request before it is signed in ``prepare`` (the
    signature covers the result)."""

    requires_request_body = True

    def __init__(
        self,
        credentials: Callable[[], Credentials | None],
        region: str,
        service: str,
        *,
        what: str | None = None,
    ) -> None:
        self._credentials = credentials
        self.region = check_region(region, what or service)
        self.service = service

    def frozen(self) -> Any:
        found = self._credentials()
        frozen = found.get_frozen_credentials() if found is not None else None
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            lacking = [
                n
                for n, v in (
                    ("an access key id", frozen and frozen.access_key),
                    ("a secret key", frozen and frozen.secret_key),
                )
                if not v
            ]
            what = (
                "no AWS credentials" if frozen is None else f"AWS credentials without {' or '.join(lacking)}"
            )
            raise ConfigError(
                f"{what} to sign requests for {self.service} in {self.region} (SigV4): "
                "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with a role "
                "(ECS task role, Lambda execution role, the deploy workflow's OIDC role)"
            )
        return frozen

    def prepare(self, request: httpx.Request) -> None:
        """Change ``request`` before it is signed (nothing here)."""

    def sign(self, request: httpx.Request) -> httpx.Request:
        """``request`` prepared, its query canonical, signed in place; returned."""
        frozen = self.frozen()
        self.prepare(request)
        request.url = request.url.copy_with(query=canonical_query(request.url.params).encode() or None)
        signed = AWSRequest(method=request.method, url=str(request.url), data=request.content)
        for name, value in request.headers.items():
            if signs(name):
                signed.headers[name] = value
        SigV4Auth(frozen, self.service, self.region).add_auth(signed)
        for name in _SIGNED:
            if name in signed.headers:
                request.headers[name] = str(signed.headers[name])
        return request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield self.sign(request)
