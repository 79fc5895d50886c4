"""CD-08 end to end on the local platform: ``deploy monitoring`` compiles the real SLO specs for
``dev`` (short windows), tests them with promtool, installs them into the Prometheus the control
plane runs and verifies they loaded; a burst of 5xx answers on the ``chatbot`` service then fires the
real page alert (ChatbotAvailabilityBudgetBurn), which reaches the control plane through Alertmanager
and stops a canary of that service and a new deploy; ``rollback monitoring`` restores the previous set.

The service runs the platform's test workload under the name ``chatbot`` (its ``/fail`` answers 500),
so the SLOs' real queries see real series from the real router.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import monitoring as cd08
from mangaassist.delivery.rollout.phases import Canary, page_alerts
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import Revision
from mangaassist.platform.local.client import LocalCompute, start_control_plane, stop_control_plane
from mangaassist.platform.local.metrics import RouterMetrics
from mangaassist.platform.settings import load_settings

ROOT = Path(__file__).parents[3]
TEST_APP = "mangaassist.platform.local.testing_app:create_app"
ENV = "dev"  # the dev-short window set of monitoring/environments.yaml


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCompute, StateStore, Path]]:
    directory = tmp_path_factory.mktemp("cd08")
    config = directory / "mangaassist.toml"
    config.write_text(
        f"[environments.{ENV}]\nprovider = 'local'\nhome = 'home'\ncontrol_port = 0\n"
        f"[environments.{ENV}.monitoring]\nprometheus_port = 0\nalertmanager_port = 0\n"
        "scrape_interval_s = 1\n"
        f"[environments.{ENV}.services.chatbot]\napp = '{TEST_APP}'\nrouter_port = 0\nready_timeout_s = 20\n"
    )
    saved = {
        k: os.environ.get(k) for k in ("MANGAASSIST_PLATFORM_CONFIG", "MANGAASSIST_HOME", "MANGAASSIST_ROOT")
    }
    os.environ.update(
        {
            "MANGAASSIST_PLATFORM_CONFIG": str(config),
            "MANGAASSIST_HOME": str(directory / "home"),
            "MANGAASSIST_ROOT": str(ROOT),
        }
    )
    settings = load_settings(ENV, config)
    start_control_plane(settings, config, wait_s=60)
    compute = LocalCompute(settings.run_dir)
    artifact = pack_source(ROOT / "src", settings.home / "artifacts")
    compute.deploy("chatbot", Revision("r1", artifact, TEST_APP, {}, 1), timeout_s=20)
    compute.set_weights("chatbot", {"r1": 100.0})
    compute.deploy("chatbot", Revision("r2", artifact, TEST_APP, {}, 1), timeout_s=20)
    store = StateStore(f"sqlite:///{directory / 'engine.db'}")
    try:
        yield compute, store, directory
    finally:
        store.close()
        compute.close()
        report = stop_control_plane(settings)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        assert report.left == [], f"processes left after stop: {report.left}"


def _run(store: StateStore, name: str) -> tuple[RunRecord, dict[str, StepRecord]]:
    pipeline = (
        cd08.build({"environment": ENV}) if name == cd08.NAME else cd08.build_rollback({"environment": ENV})
    )
    run = Executor(store, poll_seconds=0.1).run(
        pipeline,
        environment=ENV,
        target=cd08.NAME,
        requester="tester",
        policy=load_policy(None).for_run(ENV, cd08.NAME),
    )
    with store.transaction() as conn:
        return run, {s.name: s for s in store.steps(conn, run.id)}


def test_deploy_monitoring_installs_verified_rules_and_a_burst_pages_and_blocks(
    plane: tuple[LocalCompute, StateStore, Path],
) -> None:
    compute, store, directory = plane
    run, steps = _run(store, cd08.NAME)
    assert run.effective_state is RunState.SUCCEEDED, run.reason
    verify = steps["verify"]
    assert verify.detail["verified"] is True and len(verify.output["groups"]) >= 6
    assert steps["check"].output == {"rule_files": 3, "test_files": 5}
    rules = directory / "home" / "monitoring" / "rules"
    assert {p.name for p in rules.glob("*.yml")} == {"chatbot.yml", "intent-model.yml", "config-server.yml"}
    assert len(list((directory / "home" / "monitoring" / "dashboards").glob("*.json"))) == 4

    metrics = RouterMetrics(compute)
    canary = Canary(compute, metrics, "chatbot", "r1", "r2", 0.01, 10, 0)
    assert page_alerts(metrics, "chatbot") == [] and canary.candidate_problem() is None
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=compute.url("chatbot"), timeout=5) as client:
        while not page_alerts(metrics, "chatbot"):
            assert time.monotonic() < deadline, (
                "the page alert did not fire within 90 s of a 100% error burst"
            )
            for _ in range(10):
                assert client.get("/fail").status_code == 500
            time.sleep(0.5)
    (page,) = [a for a in page_alerts(metrics, "chatbot") if a.name == "ChatbotAvailabilityBudgetBurn"]
    assert page.severity == "page"
    problem = canary.candidate_problem()
    assert problem and "page alert ChatbotAvailabilityBudgetBurn firing for chatbot" in problem

    again, _ = _run(store, cd08.NAME)  # nothing changed: installs the same set, keeps the previous
    assert again.effective_state is RunState.SUCCEEDED
    back, back_steps = _run(store, cd08.ROLLBACK)
    assert back.effective_state is RunState.SUCCEEDED, back.reason
    assert sorted(back_steps["restore"].output["restored"]) == [
        "chatbot.yml",
        "config-server.yml",
        "intent-model.yml",
    ]
