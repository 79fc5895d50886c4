"""``AmpMetrics``'s SigV4: every query it sends carries a valid signature for ``aps`` in the
configured region, checked by recomputing it with botocore from what a loopback HTTP server
received (as AMP would), and without credentials nothing is sent. The Metrics contract on a real
Prometheus: tests/contract/test_metrics_contract.py (``amp``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.credentials import Credentials

from mangaassist.core.errors import ConfigError
from mangaassist.platform.aws.metrics_amp import AmpMetrics, workspace_url
from mangaassist.platform.factory import platform_for
from tests.sigv4_check import KEY, SECRET, TOKEN, Signer, expected_signature, recording

REGION = "eu-west-1"
AMP = Signer("aps", REGION)
NEWEST = 1_700_000_100.5


def _answer(recorded: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    query = dict(parse_qsl(urlsplit(recorded["path"]).query))["query"]
    # the newest scrape, then per family one series of revision r1 (AMP's answer shape)
    if query.startswith("max(timestamp("):
        result = [{"metric": {}, "value": [NEWEST, str(NEWEST)]}]
    elif "requests_total" in query:
        result = [{"metric": {"revision": "r1", "status": "200"}, "value": [NEWEST, "3"]}]
    else:
        result = []
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
    return 200, {"Content-Type": "application/json"}, body


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with recording(_answer) as server:
        yield server.url, server.requests


def _session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=KEY, aws_secret_access_key=SECRET, aws_session_token=TOKEN, region_name=REGION
    )


def test_every_query_carries_a_valid_sigv4_signature_for_aps_in_the_region(
    recorder: tuple[str, list[dict[str, Any]]],
) -> None:
    base, seen = recorder
    metrics = AmpMetrics(f"{base}/workspaces/ws-test-1234", REGION, session=_session())
    try:
        batch = metrics.outcomes("chat bot", 0)  # a label with a space and quotes-worthy PromQL
    finally:
        metrics.close()
    assert [o.status for o in batch.outcomes] == [200, 200, 200]  # the answers were read
    assert len(seen) == 6  # the newest scrape, then five families
    today = datetime.now(UTC)
    for recorded in seen:
        assert recorded["path"].startswith("/workspaces/ws-test-1234/api/v1/query?")
        assert "+" not in recorded["path"]  # spaces as %20: what SigV4 canonicalises
        headers = {k.lower(): v for k, v in recorded["headers"].items()}
        authorization = headers["authorization"]
        scope = f"Credential={KEY}/{today:%Y%m%d}/{REGION}/aps/aws4_request"
        assert authorization.startswith(f"AWS4-HMAC-SHA256 {scope}, SignedHeaders="), authorization
        assert "host" in authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
        assert headers["x-amz-security-token"] == TOKEN
        sent_at = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert abs((today - sent_at).total_seconds()) < 300
        signature = authorization.rsplit("Signature=", 1)[1]
        assert signature == expected_signature(base, recorded, AMP)
        assert signature != expected_signature(base, recorded, AMP, secret="another-secret")


def test_without_credentials_nothing_is_sent_and_the_error_names_what_is_missing(
    recorder: tuple[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, seen = recorder
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    with pytest.raises(
        ConfigError, match="no AWS credentials to sign requests for aps in eu-west-1"
    ) as caught:
        AmpMetrics(f"{base}/workspaces/ws-test-1234", REGION)  # boto3's own credential chain: empty
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in str(caught.value)
    assert seen == []

    class Vanishing:
        """Credentials that were there when the provider was made and are gone by the query."""

        def __init__(self) -> None:
            self.credentials: Any = Credentials(KEY, SECRET)

        def get_credentials(self) -> Any:
            return self.credentials

    session = Vanishing()
    metrics = AmpMetrics(f"{base}/workspaces/ws-test-1234", REGION, session=session)
    session.credentials = Credentials(KEY, "")
    with pytest.raises(ConfigError, match="AWS credentials without a secret key to sign requests for aps"):
        metrics.cursor("chatbot")
    assert seen == []
    metrics.close()


def test_workspace_settings_are_checked_with_errors_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert workspace_url("ws-1a2b3c4d-5e6f", "eu-west-1") == (
        "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1a2b3c4d-5e6f"
    )
    with pytest.raises(ConfigError, match="AMP workspace id 'prod' is not one"):
        workspace_url("prod", "eu-west-1")
    with pytest.raises(ConfigError, match="AMP region 'europe' is not an AWS region"):
        workspace_url("ws-1", "europe")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    path = tmp_path / "mangaassist.toml"
    env = (
        '[environments.{name}]\nprovider = "aws"\n[environments.{name}.aws]\nregion = "eu-west-1"\n{extra}\n'
    )
    path.write_text(
        env.format(name="amp", extra='metrics = "amp"\namp_workspace_id = "ws-1a2b3c4d"')
        + env.format(name="noworkspace", extra='metrics = "amp"')
        + env.format(name="badworkspace", extra='metrics = "amp"\namp_workspace_id = "prod"')
        + env.format(name="badsource", extra='metrics = "datadog"')
    )
    metrics = platform_for("amp", config=path).metrics()
    assert isinstance(metrics, AmpMetrics) and metrics.region == "eu-west-1"
    assert metrics.workspace_url == "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1a2b3c4d"
    metrics.close()
    with pytest.raises(
        ConfigError, match=r"\[environments.noworkspace.aws\] metrics = 'amp' needs amp_workspace_id"
    ):
        platform_for("noworkspace", config=path).metrics()
    with pytest.raises(ConfigError, match=r"\[environments.badworkspace.aws\]: AMP workspace id 'prod'"):
        platform_for("badworkspace", config=path).metrics()
    with pytest.raises(ConfigError, match="metrics = 'datadog': expected cloudwatch"):
        platform_for("badsource", config=path).metrics()
