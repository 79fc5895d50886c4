"""The delivery-performance report's pure core (``delivery.report.compute``) on constructed runs:
every measure, empty history, the window (``since`` and an earlier ``now``), grouping of rollback
and companion pipelines, bad input, and the JSON shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mangaassist.delivery.engine.clock import iso
from mangaassist.delivery.engine.errors import BadRequest
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord, StepStatus
from mangaassist.delivery.pipelines import registry
from mangaassist.delivery.report import (
    NOT_RECORDED,
    RunKind,
    compute,
    family,
    kind_of,
    parse_since,
)
from mangaassist.views.runs import RUNS_AS

D0 = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return D0 + timedelta(days=day, hours=hour, minutes=minute)


def run(
    run_id: str,
    pipeline: str,
    created: datetime,
    finished: datetime | None,
    state: RunState,
    *,
    env: str = "prod",
    params: dict[str, Any] | None = None,
) -> RunRecord:
    return RunRecord(
        id=run_id,
        pipeline=pipeline,
        environment=env,
        target=pipeline,
        requester="ann",
        state=state,
        params=params or {},
        step_names=[],
        created_at=iso(created),
        updated_at=iso(finished or created),
        finished_at=iso(finished) if finished else None,
        owner=None,
        owner_pid=None,
        owner_host=None,
        lease_expires_at=None,
        reason=None,
        overrides={},
        stopping=None,
        policy={},
        effective_state=state,
    )


def steps(run_id: str, *statuses: tuple[str, StepStatus]) -> list[StepRecord]:
    return [
        StepRecord(run_id, i, name, status, 1, None, None, None, None)
        for i, (name, status) in enumerate(statuses)
    ]


S, F, RB, AB = RunState.SUCCEEDED, RunState.FAILED, RunState.ROLLED_BACK, RunState.ABORTED
NOW = at(5, 10)

HISTORY = [
    run("r01", "CD-05", at(0, 10), at(0, 10, 10), S),  # lead 600 s
    run("r02", "CD-05", at(1, 9), at(1, 9, 30), RB),  # incident 1 starts 09:30
    run("r03", "CD-05", at(1, 11), at(1, 11, 30), S),  # lead 1800 s; restores incident 1 after 7200 s
    run("r04", "CD-05", at(2, 11), at(2, 12), F),  # incident 2 starts 12:00
    run("r05", "CD-05", at(2, 12, 30), at(2, 13), F),  # joins incident 2
    run("r06", "CD-05-rollback", at(2, 14, 50), at(2, 15), S),  # restores incident 2 after 10800 s
    run("r07", "CD-05", at(3, 7), at(3, 7, 5), AB),  # aborted: in neither side of the rate
    run("r08", "CD-05", at(3, 7, 30), at(3, 7, 40), S, params={"preview": "feat"}),  # a preview: other
    run("r09", "CD-05", at(3, 8), at(3, 9), S),  # lead 3600 s
    run("r10", "CD-05", at(4, 10), at(4, 10, 20), F),  # incident 3, still open at NOW
    run("r11", "CD-05", at(5, 9), None, RunState.RUNNING),  # unfinished
    run("c01", "CD-06", at(1, 0), at(1, 0, 10), S, env="dev"),  # lead 600 s
]
STEPS = {
    "r02": steps("r02", ("build", StepStatus.DONE), ("browser-check", StepStatus.FAILED)),
    "r04": steps(
        "r04", ("build", StepStatus.DONE), ("gate", StepStatus.FAILED), ("publish", StepStatus.SKIPPED)
    ),
    "r05": steps("r05", ("build", StepStatus.DONE), ("gate", StepStatus.FAILED)),
    # r10's steps are not given: counted as "(not recorded)"
}


def test_every_measure_of_one_pipeline_and_environment() -> None:
    report = compute(HISTORY, STEPS, NOW)
    assert [(g.pipeline, g.environment) for g in report.groups] == [("CD-05", "prod"), ("CD-06", "dev")]
    cd05 = report.groups[0]
    assert cd05.members == ("CD-05", "CD-05-rollback")
    m = cd05.measures
    assert report.window_start == at(0, 10) and report.window_days == 5.0
    assert (m.deployments.count, m.deployments.per_day) == (3, 0.6)
    assert (m.lead_time.count, m.lead_time.median_s, m.lead_time.p90_s) == (3, 1800.0, 3240.0)
    cfr = m.change_failure_rate
    assert (cfr.failed, cfr.rolled_back, cfr.finished, cfr.aborted) == (3, 1, 7, 1)
    assert cfr.rate == round(4 / 7, 4)
    ttr = m.time_to_restore
    assert (ttr.incidents, ttr.restored, ttr.open) == (3, 2, 1)
    assert (ttr.median_s, ttr.p90_s) == (9000.0, 10440.0)
    assert ttr.open_since == at(4, 10, 20)
    assert m.stopped_at == {"gate": 2, NOT_RECORDED: 1, "browser-check": 1}
    assert list(m.stopped_at) == ["gate", NOT_RECORDED, "browser-check"]  # the most frequent first
    assert m.runs == {"deploy": 8, "rollback": 1, "other": 1, "unfinished": 1}


def test_totals_add_up_the_groups() -> None:
    totals = compute(HISTORY, STEPS, NOW).totals
    assert (totals.deployments.count, totals.deployments.per_day) == (4, 0.8)
    assert (totals.lead_time.count, totals.lead_time.median_s, totals.lead_time.p90_s) == (4, 1200.0, 3060.0)
    assert (totals.change_failure_rate.finished, totals.change_failure_rate.rate) == (8, 0.5)
    assert totals.time_to_restore.incidents == 3 and totals.time_to_restore.median_s == 9000.0
    assert totals.runs == {"deploy": 9, "rollback": 1, "other": 1, "unfinished": 1}


def test_empty_history_has_no_figures_rather_than_zeros() -> None:
    report = compute([], {}, NOW)
    assert report.groups == () and report.window_start is None and report.window_days is None
    t = report.totals
    assert t.deployments.count == 0 and t.deployments.per_day is None
    assert t.lead_time.median_s is None and t.lead_time.p90_s is None
    assert t.change_failure_rate.rate is None and t.time_to_restore.median_s is None
    assert t.time_to_restore.open_since is None and t.stopped_at == {}
    # a window without deployments: zero per day is a figure
    windowed = compute([], {}, NOW, NOW - timedelta(days=7))
    assert windowed.window_days == 7.0 and windowed.totals.deployments.per_day == 0.0
    assert windowed.totals.change_failure_rate.rate is None


def test_since_keeps_the_runs_that_finished_from_then_on() -> None:
    report = compute(HISTORY, STEPS, NOW, at(2, 0))
    assert [g.pipeline for g in report.groups] == ["CD-05"]  # CD-06's only run finished before
    m = report.groups[0].measures
    assert report.window_days == pytest.approx(3 + 10 / 24)
    assert (m.deployments.count, m.deployments.per_day) == (1, round(1 / (3 + 10 / 24), 4))
    assert (m.lead_time.count, m.lead_time.median_s) == (1, 3600.0)
    cfr = m.change_failure_rate
    assert (cfr.failed, cfr.rolled_back, cfr.finished, cfr.aborted, cfr.rate) == (3, 0, 4, 1, 0.75)
    assert (m.time_to_restore.restored, m.time_to_restore.open, m.time_to_restore.median_s) == (1, 1, 10800.0)
    assert m.stopped_at == {"gate": 2, NOT_RECORDED: 1}
    assert m.runs == {"deploy": 5, "rollback": 1, "other": 1, "unfinished": 1}
    assert report.totals.as_dict() == m.as_dict()


def test_an_incident_that_began_before_the_window_is_timed_from_its_start() -> None:
    m = compute(HISTORY, STEPS, NOW, at(1, 10)).groups[0].measures
    assert m.change_failure_rate.rolled_back == 0  # r02 finished before the window
    assert m.time_to_restore.restored == 2 and m.time_to_restore.median_s == 9000.0  # 7200 and 10800


def test_an_earlier_now_reads_the_history_as_it_was() -> None:
    report = compute(HISTORY, STEPS, at(2, 12, 45))
    m = report.groups[0].measures
    assert report.window_days == pytest.approx(2 + 2.75 / 24)
    assert m.deployments.count == 2 and m.runs["unfinished"] == 1  # r05 ends at 13:00
    assert (m.time_to_restore.open, m.time_to_restore.open_since) == (1, at(2, 12))
    assert (m.change_failure_rate.finished, m.change_failure_rate.rate) == (4, 0.5)
    assert m.stopped_at == {"browser-check": 1, "gate": 1}


def test_rollback_and_companion_pipelines_are_grouped_under_their_pipeline() -> None:
    history = [
        run("m1", "CD-07", at(1, 9), at(1, 10), RB),
        run("m2", "CD-07-contract", at(1, 10), at(1, 11), S),  # not a restore, not a deployment
        run("m3", "CD-07-rollback", at(1, 11), at(1, 12), S),  # restores m1 after 2 h
        run("k1", "CD-04", at(1, 9), at(1, 10), RB),
        run("k2", "CD-04-promote", at(1, 10), at(1, 11), S),  # forward or back: not recorded
        run("a1", "CD-01", at(1, 9), at(1, 10), F),
        run("a2", "CD-01", at(1, 10), at(1, 10, 30), S, params={"rollback_of": "r-7"}),  # rollback app
        run("d1", "demo", at(1, 9), at(1, 10), F),
        run("d2", "demo-rollback", at(1, 10), at(1, 10, 15), S),
    ]
    report = compute(history, {}, NOW)
    groups = {g.pipeline: g for g in report.groups}
    assert sorted(groups) == ["CD-01", "CD-04", "CD-07", "demo"]
    cd07 = groups["CD-07"]
    assert cd07.members == ("CD-07", "CD-07-contract", "CD-07-rollback")
    assert cd07.measures.runs == {"deploy": 1, "rollback": 1, "other": 1, "unfinished": 0}
    assert cd07.measures.deployments.count == 0
    assert (cd07.measures.time_to_restore.restored, cd07.measures.time_to_restore.median_s) == (1, 7200.0)
    cd04 = groups["CD-04"].measures
    assert (cd04.time_to_restore.restored, cd04.time_to_restore.open) == (0, 1)
    cd01 = groups["CD-01"].measures
    assert cd01.deployments.count == 0 and cd01.change_failure_rate.rate == 1.0
    assert (cd01.runs["rollback"], cd01.time_to_restore.median_s) == (1, 1800.0)
    assert groups["demo"].measures.time_to_restore.median_s == 900.0


def test_every_registered_pipeline_has_a_family_and_it_agrees_with_runs_as() -> None:
    for name in registry.PIPELINES:
        assert family(name) in registry.PIPELINES, name
    for companion, owner in RUNS_AS.items():
        assert family(companion) == owner
    assert {n: family(n) for n in registry.PIPELINES if family(n) != n} == {
        "CD-04-promote": "CD-04",
        "CD-05-preview-delete": "CD-05",
        "CD-05-rollback": "CD-05",
        "CD-06-rollback": "CD-06",
        "CD-07-contract": "CD-07",
        "CD-07-rollback": "CD-07",
        "CD-08-rollback": "CD-08",
    }
    kinds = {n: kind_of(run("x", n, D0, D0, S)) for n in registry.PIPELINES}
    assert {n for n, k in kinds.items() if k is RunKind.ROLLBACK} == {
        "CD-05-rollback",
        "CD-06-rollback",
        "CD-07-rollback",
        "CD-08-rollback",
    }
    assert {n for n, k in kinds.items() if k is RunKind.OTHER} == {
        "CD-04-promote",
        "CD-05-preview-delete",
        "CD-07-contract",
    }


def test_a_window_that_is_not_in_the_past_is_refused() -> None:
    with pytest.raises(BadRequest, match="is in the future"):
        compute(HISTORY, STEPS, NOW, NOW + timedelta(seconds=1))
    with pytest.raises(BadRequest, match="is now"):
        compute(HISTORY, STEPS, NOW, NOW)


def test_naive_times_are_read_as_utc() -> None:
    naive = compute(HISTORY, STEPS, NOW.replace(tzinfo=None), at(2, 0).replace(tzinfo=None))
    assert naive.as_dict() == compute(HISTORY, STEPS, NOW, at(2, 0)).as_dict()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        (" 12h ", NOW - timedelta(hours=12)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2025-01-02", datetime(2025, 1, 2, tzinfo=UTC)),
        ("2025-01-02T09:00+09:00", datetime(2025, 1, 2, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_or_a_date(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7", "7y", "", "-3d"])
def test_a_since_that_is_neither_is_refused_naming_it(text: str) -> None:
    with pytest.raises(BadRequest, match=f"since {text!r}: expected a duration"):
        parse_since(text, NOW)


def test_the_json_shape_is_stable() -> None:
    doc = compute(HISTORY, STEPS, NOW, at(0, 0), environment="prod").as_dict()
    assert list(doc) == ["generated_at", "environment", "window", "lead_time_basis", "groups", "totals"]
    assert doc["environment"] == "prod" and doc["lead_time_basis"] == "run requested"
    assert doc["window"] == {
        "since": "2025-01-06T00:00:00.000000+00:00",
        "start": "2025-01-06T00:00:00.000000+00:00",
        "end": "2025-01-11T10:00:00.000000+00:00",
        "days": round(5 + 10 / 24, 6),
    }
    (group,) = doc["groups"]  # CD-06 ran in dev
    measures = ["deployments", "lead_time", "change_failure_rate", "time_to_restore", "stopped_at", "runs"]
    assert list(group) == ["pipeline", "environment", "members", *measures]
    assert list(doc["totals"]) == measures
    assert list(group["deployments"]) == ["count", "per_day"]
    assert list(group["lead_time"]) == ["count", "median_s", "p90_s"]
    assert list(group["change_failure_rate"]) == ["rate", "failed", "rolled_back", "finished", "aborted"]
    assert group["time_to_restore"] == {
        "incidents": 3,
        "restored": 2,
        "open": 1,
        "median_s": 9000.0,
        "p90_s": 10440.0,
        "open_since": "2025-01-10T10:20:00.000000+00:00",
    }
    assert list(group["runs"]) == ["deploy", "rollback", "other", "unfinished"]
