"""``compute_ecs.collector_config``: the ADOT collector's configuration parses and says what it
scrapes, how often, and where it writes (signed for ``aps`` in the region)."""

from __future__ import annotations

import pytest
import yaml

from mangaassist.core.errors import ConfigError
from mangaassist.platform.aws.compute_ecs import check_remote_write_url, collector_config

URL = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1234abcd/api/v1/remote_write"


def test_the_collector_scrapes_the_app_and_remote_writes_to_the_workspace() -> None:
    text = collector_config(URL, "eu-west-1", 8080, job="prod-chatbot", environment="prod")
    config = yaml.safe_load(text)
    (job,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert job["job_name"] == "prod-chatbot" and job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["localhost:8080"]}]
    assert job["scrape_interval"] == "15s"
    exporter = config["exporters"]["prometheusremotewrite"]
    assert exporter["endpoint"] == URL and "ws-1234abcd" in exporter["endpoint"]
    assert exporter["auth"] == {"authenticator": "sigv4auth"}
    assert exporter["resource_to_telemetry_conversion"] == {"enabled": True}  # a label set per task
    assert exporter["external_labels"] == {"mangaassist_env": "prod"}
    assert config["extensions"]["sigv4auth"] == {"region": "eu-west-1", "service": "aps"}
    assert "ecs" in config["processors"]["resourcedetection"]["detectors"]
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline == {
        "receivers": ["prometheus"],
        "processors": ["resourcedetection", "batch"],
        "exporters": ["prometheusremotewrite"],
    }
    assert config["service"]["extensions"] == ["sigv4auth"]
    assert "$" not in text  # the collector expands ${...}: nothing of ours may look like it
    assert (
        yaml.safe_load(collector_config(URL, "eu-west-1", 8000, scrape_interval_s=5))["receivers"][
            "prometheus"
        ]["config"]["global"]["scrape_interval"]
        == "5s"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write",
        "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1",
        "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/query",
    ],
)
def test_only_a_remote_write_url_is_taken(url: str) -> None:
    with pytest.raises(ConfigError, match="is not a remote-write URL"):
        check_remote_write_url(url)
    assert check_remote_write_url(URL) == URL
