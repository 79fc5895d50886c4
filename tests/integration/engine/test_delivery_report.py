"""The delivery-performance report (``delivery.report``) on a real state store (SQLite and
PostgreSQL), from runs the executor made under a ``FakeClock``, and ``mangaassist report delivery
--json`` on the same store."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from mangaassist.cli.main import app
from mangaassist.delivery.engine.clock import FakeClock, iso
from mangaassist.delivery.engine.errors import UnknownEnvironment
from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.engine.policy import default_policy, parse_policy
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import demo
from mangaassist.delivery.report import delivery_report
from tests.integration.engine.test_engine_suite import WEDNESDAY, executor


def _work(clock: FakeClock, seconds: float, fail: bool = False) -> Callable[[StepContext], Outcome]:
    def step(_ctx: StepContext) -> Outcome:
        clock.advance(seconds)
        return Outcome.failed("candidate below the bar") if fail else Outcome.done()

    return step


def frontend(clock: FakeClock, work: float, *, fail_gate: bool = False) -> Pipeline:
    """A stand-in for CD-05: build, gate, publish; ``work`` seconds in all."""
    return Pipeline(
        "CD-05",
        (
            Step("build", _work(clock, work / 2), changes=False),
            Step("gate", _work(clock, work / 2, fail_gate), changes=False),
            Step("publish", _work(clock, 0)),
        ),
        rollback=_work(clock, 0),
    )


def frontend_rollback(clock: FakeClock) -> Pipeline:
    return Pipeline("CD-05-rollback", (Step("restore", _work(clock, 60)),), restores=True)


@pytest.fixture
def history(store: StateStore) -> FakeClock:
    """CD-05 in staging: a deploy, a rolled-back one, a rollback run 1860 s after it, another deploy;
    demo in dev: one failed run (manual rollback), still open."""
    clock = FakeClock(WEDNESDAY)
    ex = executor(store, clock)

    def staging(pipeline: Pipeline) -> RunState:
        policy = default_policy().for_run("staging", pipeline.name)
        return ex.run(pipeline, environment="staging", target="CD-05", requester="ann", policy=policy).state

    assert staging(frontend(clock, 600)) is RunState.SUCCEEDED  # lead time 600 s
    clock.advance(3600)
    assert staging(frontend(clock, 600, fail_gate=True)) is RunState.ROLLED_BACK
    clock.advance(1800)
    assert staging(frontend_rollback(clock)) is RunState.SUCCEEDED  # restored 1800 + 60 s later
    clock.advance(600)
    assert staging(frontend(clock, 1200)) is RunState.SUCCEEDED  # lead time 1200 s
    manual = parse_policy("environments:\n  dev:\n    rollback: manual\n", "p.yaml").for_run("dev", "demo")
    failed = ex.run(
        demo.build({"fail_at": "verify"}), environment="dev", target="demo", requester="ann", policy=manual
    )
    assert failed.state is RunState.FAILED
    clock.advance(60)
    return clock


def test_the_report_measures_the_runs_in_the_store(store: StateStore, history: FakeClock) -> None:
    report = delivery_report(store, history.now())
    assert [(g.pipeline, g.environment) for g in report.groups] == [("CD-05", "staging"), ("demo", "dev")]
    cd05, demo_dev = report.groups
    assert cd05.members == ("CD-05", "CD-05-rollback")
    m = cd05.measures
    assert m.deployments.count == 2
    assert (m.lead_time.median_s, m.lead_time.p90_s) == (900.0, 1140.0)
    cfr = m.change_failure_rate
    assert (cfr.rolled_back, cfr.failed, cfr.finished, cfr.rate) == (1, 0, 3, 0.3333)
    assert (m.time_to_restore.restored, m.time_to_restore.open, m.time_to_restore.median_s) == (1, 0, 1860.0)
    assert m.stopped_at == {"gate": 1}
    assert m.runs == {"deploy": 3, "rollback": 1, "other": 0, "unfinished": 0}
    d = demo_dev.measures
    assert (d.deployments.count, d.change_failure_rate.rate, d.stopped_at) == (0, 1.0, {"verify": 1})
    assert d.time_to_restore.open == 1 and d.time_to_restore.median_s is None
    assert report.window_start == WEDNESDAY
    assert report.totals.deployments.count == 2 and report.totals.change_failure_rate.rate == 0.5


def test_since_and_environment_narrow_the_report(store: StateStore, history: FakeClock) -> None:
    # from just after the rolled-back run: the rollback run still restores it
    since = WEDNESDAY + timedelta(seconds=600 + 3600 + 600 + 1)
    report = delivery_report(store, history.now(), since, "staging")
    (group,) = report.groups
    m = group.measures
    assert (m.deployments.count, m.lead_time.median_s) == (1, 1200.0)
    assert (m.change_failure_rate.finished, m.change_failure_rate.rate) == (1, 0.0)
    assert (m.time_to_restore.restored, m.time_to_restore.median_s) == (1, 1860.0)
    assert m.stopped_at == {}


def test_an_unknown_environment_is_named(store: StateStore, history: FakeClock) -> None:
    with pytest.raises(UnknownEnvironment, match=r"environment 'nope' .*known: .*dev.*staging"):
        delivery_report(store, history.now(), environment="nope")
    # an environment that exists but has no run yet has an empty report, not an error
    assert delivery_report(store, history.now(), environment="qa", environments=["qa"]).groups == ()


def test_the_cli_prints_the_same_report_as_json(
    state_url: str, store: StateStore, history: FakeClock
) -> None:
    env = {"MANGAASSIST_STATE_URL": state_url}
    done = CliRunner().invoke(
        app, ["report", "delivery", "--since", "2025-01-01", "--env", "staging", "--json"], env=env
    )
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["environment"] == "staging" and doc["lead_time_basis"] == "run requested"
    assert doc["window"]["since"] == "2025-01-01T00:00:00.000000+00:00"
    (group,) = doc["groups"]
    assert (group["pipeline"], group["members"]) == ("CD-05", ["CD-05", "CD-05-rollback"])
    assert group["deployments"]["count"] == 2
    assert group["lead_time"] == {"count": 2, "median_s": 900.0, "p90_s": 1140.0}
    assert group["change_failure_rate"] == {
        "rate": 0.3333,
        "failed": 0,
        "rolled_back": 1,
        "finished": 3,
        "aborted": 0,
    }
    assert group["time_to_restore"]["median_s"] == 1860.0 and group["stopped_at"] == {"gate": 1}
    refused = CliRunner().invoke(
        app, ["report", "delivery", "--since", iso(WEDNESDAY) + "x", "--json"], env=env
    )
    assert refused.exit_code == 2 and "expected a duration" in json.loads(refused.stdout)["error"]
