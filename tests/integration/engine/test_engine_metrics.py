"""The engine's Prometheus metrics (``delivery.engine.metrics``), read from a real state store
(SQLite and PostgreSQL): runs by state, finished runs and rollbacks, step durations, approvals
waiting and for how long."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from mangaassist.delivery.engine import approvals
from mangaassist.delivery.engine.metrics import EngineCollector
from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import demo
from tests.integration.engine.test_engine_suite import PollingClock, decide, dev, executor, prod, signed


def _registry(store: StateStore, clock: PollingClock) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(EngineCollector(store, clock.now))
    return registry


def test_engine_metrics_count_runs_rollbacks_steps_and_waiting_approvals(store: StateStore) -> None:
    clock = PollingClock()
    registry = _registry(store, clock)
    value = registry.get_sample_value
    assert (
        value("mangaassist_engine_runs", {"pipeline": "demo", "environment": "dev", "state": "succeeded"})
        is None
    )

    ex = executor(store, clock)
    ok = ex.run(
        demo.build({"work_seconds": 2}), environment="dev", target="a", requester=signed("ann"), policy=dev()
    )
    bad = ex.run(
        demo.build({"fail_at": "verify"}),
        environment="dev",
        target="b",
        requester=signed("ann"),
        policy=dev(),
    )
    assert ok.state is RunState.SUCCEEDED and bad.state is RunState.ROLLED_BACK

    pipeline = demo.build({"approval": True})
    waiting = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod())
    seen: dict[str, float | None] = {}

    def scrape_then_approve() -> None:
        seen["live"] = value(
            "mangaassist_engine_runs", {"pipeline": "demo", "environment": "prod", "state": "waiting"}
        )
        clock.advance(90)  # the approval has waited since the step started
        seen["waiting"] = value(
            "mangaassist_engine_approvals_waiting", {"pipeline": "demo", "environment": "prod"}
        )
        seen["oldest"] = value(
            "mangaassist_engine_oldest_approval_wait_seconds", {"pipeline": "demo", "environment": "prod"}
        )
        decide(store, clock, waiting.id, "bob", approvals.Decision.APPROVED, "ok")

    clock.on_sleep.append(scrape_then_approve)
    assert ex.drive(waiting.id, pipeline).state is RunState.SUCCEEDED
    assert seen["waiting"] == 1 and seen["live"] == 1
    assert seen["oldest"] is not None and seen["oldest"] >= 90

    assert (
        value("mangaassist_engine_runs", {"pipeline": "demo", "environment": "dev", "state": "succeeded"})
        == 1
    )
    assert (
        value("mangaassist_engine_runs", {"pipeline": "demo", "environment": "prod", "state": "succeeded"})
        == 1
    )
    assert value("mangaassist_engine_rollbacks_total", {"pipeline": "demo", "environment": "dev"}) == 1
    assert (
        value(
            "mangaassist_engine_runs_finished_total",
            {"pipeline": "demo", "environment": "dev", "state": "rolled_back"},
        )
        == 1
    )
    assert value("mangaassist_engine_approvals_waiting", {"pipeline": "demo", "environment": "prod"}) is None
    # every finished step, timed: apply worked 2 s (fake clock) in the first run
    assert value("mangaassist_engine_step_duration_seconds_count", {"pipeline": "demo", "step": "apply"}) == 3
    assert (
        value(
            "mangaassist_engine_step_duration_seconds_bucket",
            {"pipeline": "demo", "step": "apply", "le": "1.0"},
        )
        == 2
    )
    assert (
        value(
            "mangaassist_engine_step_duration_seconds_bucket",
            {"pipeline": "demo", "step": "apply", "le": "5.0"},
        )
        == 3
    )
    assert value("mangaassist_engine_scrape_errors_total", {}) == 0
    assert b"mangaassist_engine_runs{" in generate_latest(registry)


def test_a_scrape_of_an_unreadable_state_store_is_counted_not_raised(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        registry = _registry(store, PollingClock())
        assert registry.get_sample_value("mangaassist_engine_scrape_errors_total", {}) == 0
        with store.engine.begin() as conn:  # the database loses a table under the engine
            conn.exec_driver_sql("DROP TABLE engine_steps")
        assert registry.get_sample_value("mangaassist_engine_runs", {"pipeline": "x"}) is None
        assert registry.get_sample_value("mangaassist_engine_scrape_errors_total", {}) == 2
    finally:
        store.close()
