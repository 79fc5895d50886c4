"""A real control plane running the platform's test workload as the ``chatbot`` service, for CD-01
(``two_services``: also as ``chatbot-burst``, a second service CD-01 releases on its own).

The test workload (``platform.local.testing_app``) starts in a fraction of a second and emulates the
faults the judge must catch: ``TESTAPP_STATUS=500`` (every chat fails) and ``TESTAPP_DELAY_MS``.
Each test gets its own state directory and platform (``plane``), so runs, locks and router counters
never leak between tests. Runs are driven in-process by a real ``Executor`` on real SQLite.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mangaassist.delivery.engine import Executor, StateStore, load_policy
from mangaassist.delivery.engine.model import RunRecord, StepRecord
from mangaassist.delivery.pipelines import app as cd01
from mangaassist.delivery.pipelines import registry
from mangaassist.platform.local.client import LocalCompute, read_pid, start_control_plane, stop_control_plane
from mangaassist.platform.settings import PlatformSettings, load_settings

ROOT = Path(__file__).parents[3]
TEST_APP = "mangaassist.platform.local.testing_app:create_app"
SMOKE = [["product_search", "Do you have Frieren volume 5?"]]


def write_config(
    directory: Path,
    deploy: dict[str, Any],
    first_revision: str | None = "r1",
    services: tuple[str, ...] = ("chatbot",),
) -> Path:
    """``first_revision``: what ``up`` starts each service with (None: nothing, an empty service);
    ``services``: each runs the test workload."""
    lines = [
        "[environments.dev]",
        'provider = "local"',
        'home = "home"',
        "control_port = 0",
    ]
    for service in services:
        lines += [
            f"[environments.dev.services.{service}]",
            f'app = "{TEST_APP}"',
            # without a source, ``up`` starts the service with no revision
            *(
                [f'source = "{ROOT / "src"}"', f'first_revision = "{first_revision}"']
                if first_revision
                else []
            ),
            "router_port = 0",
            "ready_timeout_s = 20",
        ]
    lines.append("[environments.dev.deploy]")
    for key, value in deploy.items():
        lines.append(f"{key} = {value!r}".replace("'", '"') if isinstance(value, str) else f"{key} = {value}")
    path = directory / "mangaassist.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


DEPLOY = {
    "test_command": "true",
    "load_rps": 20,
    "load_s": 1.5,
    "min_requests": 60,  # the median-latency evidence per request is capped: 20 cannot separate 60 ms
    "judge_min_requests": 10,
    "max_step_s": 40,
    "on_inconclusive": "rollback",
    "drain_idle_s": 0.5,
    "drain_max_s": 10,
    "rollback_window_s": 3,
}


@dataclass
class Plane:
    settings: PlatformSettings
    compute: LocalCompute
    store: StateStore

    def start(self, **params: Any) -> tuple[Executor, RunRecord, Any]:
        params = {"environment": "dev", "source": str(ROOT / "src"), "smoke": SMOKE, **params}
        pipeline = registry.build(cd01.NAME, params)
        executor = Executor(self.store, poll_seconds=0.2, lease_seconds=10)
        policy = load_policy(None).for_run("dev", cd01.NAME)
        run = executor.start(
            pipeline, environment="dev", target=cd01.NAME, requester="tester", policy=policy, overrides={}
        )
        return executor, run, pipeline

    def deploy(self, **params: Any) -> tuple[RunRecord, dict[str, StepRecord]]:
        executor, run, pipeline = self.start(**params)
        final = executor.drive(run.id, pipeline)
        with self.store.transaction() as conn:
            steps = {s.name: s for s in self.store.steps(conn, run.id)}
        return final, steps

    def live(self, service: str = "chatbot") -> dict[str, float]:
        return dict(self.compute.status(service).weights)

    def revisions(self, service: str = "chatbot") -> dict[str, str]:
        return {r.name: r.health.value for r in self.compute.status(service).revisions}

    @property
    def url(self) -> str:
        return self.compute.url("chatbot")


@pytest.fixture
def plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plane]:
    yield from _plane(tmp_path, monkeypatch, "r1")


@pytest.fixture
def empty_plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plane]:
    """The same platform with a ``chatbot`` service that runs no revision (no ``first_revision``):
    what CD-02 leaves for CD-01's first release."""
    yield from _plane(tmp_path, monkeypatch, None)


@pytest.fixture
def two_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plane]:
    """The same platform with a second service, ``chatbot-burst`` (the burst path's name), also
    running the test workload from ``r1``."""
    yield from _plane(tmp_path, monkeypatch, "r1", ("chatbot", "chatbot-burst"))


def _plane(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first_revision: str | None,
    services: tuple[str, ...] = ("chatbot",),
) -> Iterator[Plane]:
    config = write_config(tmp_path, DEPLOY, first_revision, services)
    home = tmp_path / "home"
    monkeypatch.setenv("MANGAASSIST_PLATFORM_CONFIG", str(config))
    monkeypatch.setenv("MANGAASSIST_HOME", str(home))
    monkeypatch.setenv("MANGAASSIST_ROOT", str(ROOT))
    monkeypatch.delenv("MANGAASSIST_STATE_URL", raising=False)
    monkeypatch.delenv("MANGAASSIST_POLICY", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings("dev", config)
    start_control_plane(settings, config, wait_s=30, extra_env={"MANGAASSIST_HOME": str(home)})
    compute = LocalCompute(settings.run_dir)
    try:
        yield Plane(settings, compute, StateStore())
    finally:
        compute.close()
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left: {report.left}"
        assert read_pid(settings.run_dir) is None
        os.environ.pop("MANGAASSIST_TESTS_UNUSED", None)
