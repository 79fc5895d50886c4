"""``Metrics`` on Amazon Managed Service for Prometheus (AMP): the router series in a workspace, read
with PromQL like the local Prometheus (issue 18).

AMP's query API is Prometheus's HTTP API at
``https://aps-workspaces.{region}.amazonaws.com/workspaces/{workspace_id}/api/v1/query``, every
request signed with AWS Signature Version 4 for the service ``aps`` in the workspace's region. So
this provider is the shared Prometheus reader (``platform.prometheus.PrometheusMetrics``: cursors,
windows, expansion of counter increases into observations; its docstring) with an ``httpx`` auth
that signs each request (``platform.aws.sigv4.SigV4HttpxAuth``: botocore's ``SigV4Auth`` on an
``AWSRequest``, the credentials from boto3's session, i.e. its credential chain: environment,
profile, SSO, the container's or instance's role; refreshed credentials are re-read on every
request). The query string is sent in the canonical form SigV4 signs (RFC 3986 encoding, sorted),
so what AMP recomputes is what was signed.

What it reads: the ``mangaassist_router_*`` series by ``service`` and ``revision``
(``platform.prometheus``). AMP holds what is remote-written to it; writing these series (an ADOT
collector scraping the workload, or Prometheus agent mode) is the deployment's part, not this
provider's. AMP answers queries for data it has ingested; as locally, both ends of a window are
scrape times it already had.

What it does not read from AMP: shadow counters (no AWS compute here mirrors: none), the firing
alerts (the SLO alarms' ``Metrics.alerts`` it is given, CloudWatch's on AWS, else none) and the
snapshot (the workspace, the newest scrape and the judges' source).

Errors: no credentials, no region or a malformed workspace is a ``ConfigError`` naming what is
missing, raised when the provider is made (before any request) and again by a request whose
credentials have gone; a query AMP refuses (403: the signature or the role's ``aps:QueryMetrics``)
is ``PrometheusError`` naming the query, the workspace and AMP's message.

Chosen by ``[environments.NAME.aws] metrics = "amp"`` with ``amp_workspace_id`` (or
``amp_workspace_url``) in ``platform.factory``.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from mangaassist.core.errors import ConfigError
from mangaassist.platform.aws.sigv4 import SigV4HttpxAuth, check_region
from mangaassist.platform.metrics import Alert, Metrics, OutcomeBatch, ShadowCounters
from mangaassist.platform.prometheus import PrometheusMetrics

SERVICE = "aps"
"""The SigV4 service name of Amazon Managed Service for Prometheus."""
_WORKSPACE = re.compile(r"^ws-[0-9a-zA-Z-]{1,64}$")


def workspace_url(workspace_id: str, region: str) -> str:
    """The query API's base of an AMP workspace (``.../api/v1/query`` is under it)."""
    if not _WORKSPACE.match(workspace_id):
        raise ConfigError(
            f"AMP workspace id {workspace_id!r} is not one (expected ws-..., e.g. ws-1234abcd-...)"
        )
    check_region(region, "AMP")
    return f"https://aps-workspaces.{region}.amazonaws.com/workspaces/{workspace_id}"


class _Around:
    """What AMP does not hold: no shadows, alerts from ``alerts`` (the SLO alarms) when given."""

    def __init__(self, owner: AmpMetrics, alerts: Metrics | None) -> None:
        self._owner = owner
        self._alerts = alerts

    per_request = False

    def cursor(self, service: str) -> int:
        return self._owner.cursor(service)

    def outcomes(self, service: str, cursor: int = 0) -> OutcomeBatch:
        return self._owner.outcomes(service, cursor)

    def shadow(self, service: str, revision: str) -> ShadowCounters:
        return ShadowCounters()

    def snapshot(self, service: str, cursor: int | None = None) -> dict[str, Any]:
        return {"workspace": self._owner.workspace_url, "newest_scrape_us": self._owner.cursor(service)}

    def alerts(self, service: str) -> list[Alert]:
        return self._alerts.alerts(service) if self._alerts is not None else []


class AmpMetrics(PrometheusMetrics):
    """The router series in an AMP workspace (``workspace_url``: its base, ``workspace_url()``),
    queried with SigV4 in ``region``; credentials from ``session`` (a boto3 ``Session``; default:
    a new one, boto3's credential chain). ``alerts``: where firing alerts come from (CloudWatch's
    SLO alarms on AWS)."""

    def __init__(
        self,
        workspace_url: str,
        region: str,
        *,
        session: Any = None,
        alerts: Metrics | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not workspace_url.startswith(("https://", "http://")):
            raise ConfigError(f"AMP workspace URL {workspace_url!r} is not an http(s) URL")
        if session is None:
            import boto3

            session = boto3.Session(region_name=region)
        auth = SigV4HttpxAuth(session.get_credentials, region, SERVICE, what="AMP")
        auth.frozen()  # no credentials: the error now, before any request
        self.workspace_url = workspace_url.rstrip("/")
        self.region = region
        self._client = httpx.Client(timeout=timeout_s, auth=auth)
        super().__init__(
            self.workspace_url,
            _Around(self, alerts),
            client=self._client,
            source="amp",
            missing=f"no AMP workspace URL (region {region})",
        )

    def close(self) -> None:
        self._client.close()
