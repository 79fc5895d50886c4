"""CD-08 on the local platform: the control plane runs a real Prometheus and Alertmanager.

One control plane with ``[environments.test.monitoring]`` (free ports, 1 s scrapes) and one service
of the test workload: Prometheus discovers the router and the worker from the file the control plane
writes and scrapes per-revision series; a page alert loaded from ``HOME/monitoring/rules`` reaches the
control plane through Alertmanager's webhook, is journaled, is what ``Metrics.alerts`` returns, and
makes a canary's candidate "not fit"; when the rule stops firing the alert is resolved. ``down``
leaves no process behind.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mangaassist.delivery.engine.policy import default_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import demo
from mangaassist.delivery.rollout.phases import Canary, page_alerts
from mangaassist.platform import daemons
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import Revision
from mangaassist.platform.local.client import (
    LocalCompute,
    _alive,
    read_pid,
    start_control_plane,
    stop_control_plane,
)
from mangaassist.platform.local.metrics import RouterMetrics
from mangaassist.platform.local.metrics_prometheus import PrometheusMetrics
from mangaassist.platform.settings import PlatformSettings, load_settings
from tests.waiting import eventually

ROOT = Path(__file__).parents[3]
TEST_APP = "mangaassist.platform.local.testing_app:create_app"
SERVICE = "svc"

PAGE_RULE = """
groups:
  - name: test-page
    rules:
      - alert: SvcErrorBudgetBurn
        expr: {expr}
        labels: {{sloth_service: svc, sloth_slo: availability, sloth_severity: page}}
        annotations: {{summary: "svc burns its error budget"}}
"""


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlatformSettings, LocalCompute]]:
    directory = tmp_path_factory.mktemp("monitored")
    config = directory / "mangaassist.toml"
    config.write_text(
        "[environments.test]\nprovider = 'local'\nhome = 'home'\ncontrol_port = 0\n"
        "[environments.test.monitoring]\nprometheus_port = 0\nalertmanager_port = 0\nscrape_interval_s = 1\n"
        f"[environments.test.services.{SERVICE}]\napp = '{TEST_APP}'\nrouter_port = 0\nready_timeout_s = 20\n"
    )
    settings = load_settings("test", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=60)
    compute = LocalCompute(settings.run_dir)
    artifact = pack_source(ROOT / "src", settings.home / "artifacts")
    compute.deploy(SERVICE, Revision("r1", artifact, TEST_APP, {}, 1), timeout_s=20)
    compute.set_weights(SERVICE, {"r1": 100.0})
    compute.deploy(SERVICE, Revision("r2", artifact, TEST_APP, {}, 1), timeout_s=20)
    try:
        yield settings, compute
    finally:
        compute.close()
        pid = read_pid(settings.run_dir)
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left after stop: {report.left}"
        assert pid is None or not _alive(pid)


def _status(compute: LocalCompute) -> dict[str, Any]:
    return dict(httpx.get(f"{compute.runtime['control_url']}/v1/status", timeout=5).json()["monitoring"])


def test_prometheus_scrapes_every_router_and_worker_by_revision(
    monitored: tuple[PlatformSettings, LocalCompute],
) -> None:
    _settings, compute = monitored
    status = _status(compute)
    assert status["problems"] == [] and all(status["running"].values()), status
    prometheus = status["prometheus"]
    assert prometheus.startswith("http://127.0.0.1:")

    def healthy_targets() -> list[dict[str, Any]]:
        active = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        up = [t for t in active if t["health"] == "up"]
        kinds = {(t["labels"].get("component"), t["labels"].get("revision")) for t in up}
        return up if {("router", None), ("worker", "r1"), ("worker", "r2")} <= kinds else []

    eventually(healthy_targets, what="router and both workers scraped")
    with httpx.Client(timeout=5) as client:
        for _ in range(10):
            assert client.get(f"{compute.url(SERVICE)}/echo").status_code == 200

    def served() -> float:
        query = f'sum(mangaassist_router_requests_total{{service="{SERVICE}",revision="r1"}})'
        result = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5).json()["data"][
            "result"
        ]
        return float(result[0]["value"][1]) if result else 0.0

    assert eventually(served, what="the router's per-revision requests in Prometheus") >= 10


def test_a_page_alert_reaches_the_control_plane_and_stops_a_canary(
    monitored: tuple[PlatformSettings, LocalCompute],
) -> None:
    settings, compute = monitored
    status = _status(compute)
    rules = Path(status["rules"])
    metrics = RouterMetrics(compute)
    canary = Canary(compute, metrics, SERVICE, "r1", "r2", 0.01, 10, 0)
    assert canary.candidate_problem() is None and metrics.alerts(SERVICE) == []

    (rules / "test.yml").write_text(PAGE_RULE.format(expr="vector(1)"))
    httpx.post(f"{status['prometheus']}/-/reload", timeout=10).raise_for_status()
    pages = eventually(lambda: page_alerts(metrics, SERVICE), what="the page alert at the control plane")
    assert pages[0].name == "SvcErrorBudgetBurn" and pages[0].summary == "svc burns its error budget"
    problem = canary.candidate_problem()
    assert problem and "page alert SvcErrorBudgetBurn firing for svc" in problem
    journal = [
        json.loads(line) for line in (settings.home / "monitoring" / "alerts.jsonl").read_text().splitlines()
    ]
    assert any(e["status"] == "firing" and e["labels"]["alertname"] == "SvcErrorBudgetBurn" for e in journal)
    assert metrics.alerts("another-service") == []

    (rules / "test.yml").write_text(PAGE_RULE.format(expr="vector(0) > 1"))
    httpx.post(f"{status['prometheus']}/-/reload", timeout=10).raise_for_status()
    eventually(lambda: not page_alerts(metrics, SERVICE), what="the alert resolved")
    assert canary.candidate_problem() is None


def test_judges_can_read_the_per_revision_series_from_prometheus(
    monitored: tuple[PlatformSettings, LocalCompute],
) -> None:
    """``PrometheusMetrics`` (``judge_source = "prometheus"``) gives a window the same requests per
    revision, status and fallback flag as the router's own records, latency at bucket resolution."""
    _settings, compute = monitored
    prometheus = _status(compute)["prometheus"]
    router = RouterMetrics(compute)
    scraped = PrometheusMetrics(prometheus, router)
    with httpx.Client(timeout=5) as client:
        client.post(f"{compute.url(SERVICE)}/v1/chat", json={"session_id": "warm", "message": "hi"})
        answered = time.time() * 1_000_000  # the cursor is a scrape time (us): wait for one after this
        eventually(lambda: scraped.cursor(SERVICE) > answered, what="a scrape after the warm-up request")
        start, start_router = scraped.cursor(SERVICE), router.cursor(SERVICE)
        compute.set_weights(SERVICE, {"r1": 50.0, "r2": 50.0})
        try:
            for i in range(30):
                headers = {
                    "X-Session-Id": f"prom-{i}",
                    **({"X-Test-Flags": "fallback"} if i % 3 == 0 else {}),
                }
                r = client.post(
                    f"{compute.url(SERVICE)}/v1/chat",
                    json={"session_id": f"prom-{i}", "message": "hi"},
                    headers=headers,
                )
                assert r.status_code == 200
        finally:
            compute.set_weights(SERVICE, {"r1": 100.0})

    def counted() -> Any:
        batch = scraped.outcomes(SERVICE, start)
        return batch if len([o for o in batch.outcomes if o.kind.value == "request"]) >= 30 else None

    batch = eventually(counted, what="30 requests counted from Prometheus")
    expected = [o for o in router.outcomes(SERVICE, start_router).outcomes if o.kind.value == "request"]
    got = [o for o in batch.outcomes if o.kind.value == "request"]
    assert scraped.per_request is False and len(expected) == len(got) == 30
    assert Counter((o.revision, o.status, o.fallback) for o in got) == Counter(
        (o.revision, o.status, o.fallback) for o in expected
    )
    assert {o.revision for o in got} == {"r1", "r2"}  # both revisions served the window
    assert all(start < o.seq <= batch.cursor for o in got)
    # latency at bucket resolution: never below what the router measured, at most one bucket above
    assert max(o.latency_ms for o in got) >= max(o.latency_ms for o in expected)
    assert sum(o.fallback for o in got) == 10
    # windows telescope: reading on from the cursor gives nothing until there is new traffic
    assert scraped.outcomes(SERVICE, batch.cursor).outcomes == ()


def test_prometheus_scrapes_the_engines_metrics_from_the_dashboard(
    monitored: tuple[PlatformSettings, LocalCompute],
) -> None:
    """The dashboard (``python -m mangaassist.dashboard``) serves the engine's metrics from the
    state database and drops a target file that the platform's Prometheus discovers."""
    settings, compute = monitored
    home = settings.home
    store = StateStore(f"sqlite:///{home / 'state.sqlite3'}")
    try:
        Executor(store, heartbeat=False).run(
            demo.build({"fail_at": "verify"}),
            environment="dev",
            target="demo",
            requester="ann",
            policy=default_policy().for_run("dev", "demo"),
        )
    finally:
        store.close()
    args = ["--home", str(home), "--port", "0"]
    dashboard = daemons.ensure(home, "dashboard", "mangaassist.dashboard", args)
    try:
        assert (
            "mangaassist_engine_rollbacks_total" in httpx.get(f"{dashboard['url']}/metrics", timeout=5).text
        )
        prometheus = _status(compute)["prometheus"]

        def rolled_back() -> float:
            query = 'sum(mangaassist_engine_rollbacks_total{pipeline="demo",environment="dev"})'
            result = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5).json()
            return float(result["data"]["result"][0]["value"][1]) if result["data"]["result"] else 0.0

        assert eventually(rolled_back, what="the engine's rollback count in Prometheus") == 1
        runs = httpx.get(f"{dashboard['url']}/api/runs", timeout=5).json()
        assert [(r["pipeline"], r["state"]) for r in runs] == [("demo", "rolled_back")]
        assert "rolled_back" in httpx.get(f"{dashboard['url']}/runs", timeout=5).text  # the runs page
    finally:
        assert daemons.stop(home, "dashboard", "mangaassist.dashboard") is True
    assert not (home / "monitoring" / "targets" / "dashboard.json").exists()
    assert daemons.running(home, "dashboard") is None
