"""A worker's own request series, end to end on real processes: the chatbot app served by uvicorn
with ``MANGAASSIST_REQUEST_SERIES=1`` (what ``EcsServiceCompute`` sets when a collector remote-writes
to Amazon Managed Prometheus), a real Prometheus scraping its ``/metrics`` (Debian's ``prometheus``,
``scripts/install-monitoring.sh``; without it this test fails, it is never skipped), and
``PrometheusMetrics`` (the reader behind ``metrics = "amp"`` and ``judge_source = "prometheus"``)
giving back, for that revision, the requests, statuses and feedback that were sent.

The fault ``error_rate=1.0,scope=users`` makes every unpinned chat a 500 and every pinned one (header
``X-MangaAssist-Revision``) a normal answer, so the expected statuses are exact.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mangaassist.platform.local.metrics_prometheus import PrometheusMetrics
from mangaassist.platform.metrics import OutcomeKind, RequestOutcome
from tests.waiting import eventually

ROOT = Path(__file__).parents[3]
SERVICE = "chatbot"
REVISION = "r-cand"
PIN = {"X-MangaAssist-Revision": REVISION}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_env(home: Path, port_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANGAASSIST_", "OTEL_"))}
    return {
        **env,
        "MANGAASSIST_ROOT": str(ROOT),
        "MANGAASSIST_HOME": str(home),
        "MANGAASSIST_EMBEDDER": "hashing",
        "MANGAASSIST_REVISION": REVISION,
        "MANGAASSIST_SERVICE": SERVICE,
        "MANGAASSIST_FAULT": "error_rate=1.0,scope=users",
        **port_env,
    }


def _start(argv: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@dataclass
class Worker:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _serve(home: Path, extra: dict[str, str]) -> Worker:
    port = _free_port()
    home.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "uvicorn", "mangaassist.chatbot.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    log = home / "worker.log"
    proc = _start(argv, _worker_env(home, extra), log)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"the worker exited: {log.read_text()[-3000:]}"
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        eventually(ready, 120, "the worker is ready")
    except BaseException:
        _stop(proc)
        raise
    return Worker(url, proc, log)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = _serve(tmp_path_factory.mktemp("series-worker"), {"MANGAASSIST_REQUEST_SERIES": "1"})
    try:
        yield w
    finally:
        _stop(w.proc)


@pytest.fixture(scope="module")
def prometheus(worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not installed: apt-get install prometheus (Debian's package; make setup runs "
            "scripts/install-monitoring.sh as root). This test needs it and is not skipped.",
            pytrace=False,
        )
    directory = tmp_path_factory.mktemp("series-prometheus")
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "worker", "static_configs": [{"targets": [worker.url.removeprefix("http://")]}]}
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = _start(
        [
            binary,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        None,
        directory / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def scraping() -> bool:
            assert proc.poll() is None, (directory / "prometheus.log").read_text()[-3000:]
            try:
                active = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
            return any(t["health"] == "up" for t in active)

        eventually(scraping, 60, "Prometheus scrapes the worker")
        yield url
    finally:
        _stop(proc)


class _NoDelegate:
    """What ``PrometheusMetrics`` delegates (shadows, snapshot, alerts): not read here."""

    per_request = False

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the delegate's {name} was read")


def _tally(outcomes: tuple[RequestOutcome, ...]) -> tuple[Counter[int], Counter[str], set[str]]:
    statuses = Counter(o.status for o in outcomes if o.kind is OutcomeKind.REQUEST)
    ratings = Counter(str(o.rating) for o in outcomes if o.kind is OutcomeKind.FEEDBACK)
    return statuses, ratings, {o.revision for o in outcomes}


def test_prometheus_metrics_reads_what_the_worker_served_from_its_own_series(
    worker: Worker, prometheus: str
) -> None:
    fallbacks = 0
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        for i in range(6):  # unpinned: the fault answers 500
            answer = http.post("/v1/chat", json={"session_id": f"u-{i}", "message": "Frieren volume 5?"})
            assert answer.status_code == 500, answer.text
        for i in range(4):  # pinned (a gate's requests): answered, counted like the router counts them
            answer = http.post(
                "/v1/chat",
                json={"session_id": f"p-{i}", "message": "Is One Piece 105 in stock?"},
                headers=PIN,
            )
            assert answer.status_code == 200, answer.text
            fallbacks += answer.headers.get("X-MangaAssist-Fallback") == "1"
        for session, rating in (("p-0", "up"), ("p-1", "up"), ("p-2", "down")):
            answer = http.post("/v1/feedback", json={"session_id": session, "rating": rating})
            assert answer.status_code == 200, answer.text
        assert http.get("/nope").status_code == 404
        for probe in ("/healthz", "/readyz", "/metrics"):  # the ALB's and the collector's: not counted
            assert http.get(probe).status_code == 200
        text = http.get("/metrics").text
    for family in ("requests", "answers", "feedback", "latency_seconds", "transport_errors"):
        assert f"mangaassist_router_{family}" in text, family
    assert (
        f'mangaassist_router_requests_total{{revision="{REVISION}",service="{SERVICE}",status="500"}} 6.0'
        in text
    )

    metrics = PrometheusMetrics(prometheus, _NoDelegate())
    expected = Counter({500: 6, 200: 7, 404: 1})

    def first() -> Any:
        batch = metrics.outcomes(SERVICE, 0)
        return batch if _tally(batch.outcomes)[0] == expected else None

    batch = eventually(first, 60, "Prometheus has the worker's counts")
    statuses, ratings, revisions = _tally(batch.outcomes)
    assert statuses == expected and ratings == Counter({"up": 2, "down": 1}) and revisions == {REVISION}
    requests = [o for o in batch.outcomes if o.kind is OutcomeKind.REQUEST]
    assert sum(o.fallback for o in requests) == fallbacks
    assert all(o.error is None and o.latency_ms > 0 for o in requests)
    assert 0 < batch.cursor <= metrics.cursor(SERVICE)

    # the next window holds what came after the cursor only (the windows telescope)
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        for i in range(2):
            assert http.post("/v1/chat", json={"session_id": f"v-{i}", "message": "hi"}).status_code == 500
        assert http.post("/v1/feedback", json={"session_id": "p-3", "rating": "down"}).status_code == 200

    def second() -> Any:
        nxt = metrics.outcomes(SERVICE, batch.cursor)
        return nxt if _tally(nxt.outcomes)[0] == Counter({500: 2, 200: 1}) else None

    _, ratings, _ = _tally(eventually(second, 60, "the second window").outcomes)
    assert ratings == Counter({"down": 1})
    metrics.close()


def test_without_the_setting_the_worker_exports_no_router_series(tmp_path: Path) -> None:
    w = _serve(tmp_path / "plain", {})
    try:
        with httpx.Client(base_url=w.url, timeout=30) as http:
            assert http.post("/v1/chat", json={"session_id": "s", "message": "hi"}).status_code == 500
            text = http.get("/metrics").text
        assert "mangaassist_requests_total" in text  # the worker's own metrics are there
        assert "mangaassist_router_" not in text
    finally:
        _stop(w.proc)
