"""The release planner: golden cases (changed paths in, ordered pipelines out) and its executor."""

from __future__ import annotations

import pytest

from mangaassist.delivery import planner
from mangaassist.delivery.planner import ItemStatus, PlannedPipeline, plan_release


def nothing_built(_pipeline: str) -> bool:
    return False


def ids(paths: list[str]) -> list[str]:
    return [p.id for p in plan_release(paths, environment="prod", is_built=nothing_built).pipelines]


def test_the_full_order_follows_the_design_dependency_map() -> None:
    assert planner.ORDER == ["CD-02", "CD-04", "CD-06", "CD-07", "CD-08", "CD-03", "CD-01", "CD-05"]
    position = {p: i for i, p in enumerate(planner.ORDER)}
    for before, after in planner.DEPENDENCIES:
        assert position[before] < position[after], (before, after)


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (["src/mangaassist/chatbot/app.py"], ["CD-01"]),
        (["frontend/src/App.tsx", "src/mangaassist/cli/main.py"], ["CD-01", "CD-05"]),
        (["src/a.py", "migrations/0002_expand.py", "infra/app.py"], ["CD-02", "CD-07", "CD-01"]),
        (["ml/intents/train.jsonl", "monitoring/slo.yaml"], ["CD-08", "CD-03"]),
        (["config/prompts/answer.txt", "knowledge/faq/shipping.md", "src/x.py"], ["CD-04", "CD-06", "CD-01"]),
        (
            [
                "frontend/a",
                "src/b",
                "config/c",
                "migrations/d",
                "knowledge/e",
                "ml/f",
                "monitoring/g",
                "infra/h",
            ],
            ["CD-02", "CD-04", "CD-06", "CD-07", "CD-08", "CD-03", "CD-01", "CD-05"],
        ),
        (["docs/engine.md", "tests/unit/test_x.py", "README.md"], []),
        ([], []),
    ],
)
def test_golden_cases(changed: list[str], expected: list[str]) -> None:
    assert ids(changed) == expected


def test_each_pipeline_says_why_it_is_included_and_why_it_comes_where_it_does() -> None:
    plan = plan_release(
        ["ml/intents/train.jsonl", "ml/intents/eval.jsonl", "monitoring/slo.yaml", "docs/x.md"],
        environment="prod",
        is_built=lambda p: p == "CD-08",
        since="abc123",
    )
    cd08, cd03 = plan.pipelines
    assert cd03.reason == "2 changed path(s) under ml/: ml/intents/eval.jsonl, ml/intents/train.jsonl"
    assert cd03.after == ["CD-08: its alarms gate the model's rollout"]
    assert cd08.after == [] and cd08.built and not cd03.built
    assert plan.unmapped == ["docs/x.md"]
    assert plan.as_dict()["not_built"] == ["CD-03"]


def planned(pid: str, built: bool = True) -> PlannedPipeline:
    return PlannedPipeline(pid, planner.SPECS[pid].title, [f"{pid}/x"], [], built)


def test_release_runs_in_order_and_stops_at_the_first_failure() -> None:
    plan = planner.ReleasePlan("prod", None, None, [planned("CD-02"), planned("CD-07"), planned("CD-01")])
    ran: list[str] = []

    def runner(item: PlannedPipeline) -> tuple[bool, str | None, str]:
        ran.append(item.id)
        return item.id != "CD-07", f"run-{item.id}", "failed at migrate" if item.id == "CD-07" else "ok"

    summary = planner.execute(plan, runner)
    assert ran == ["CD-02", "CD-07"]
    assert [(r.id, r.status) for r in summary.results] == [
        ("CD-02", ItemStatus.SUCCEEDED),
        ("CD-07", ItemStatus.FAILED),
        ("CD-01", ItemStatus.NOT_RUN),
    ]
    assert not summary.succeeded


def test_an_unbuilt_pipeline_is_listed_and_stops_the_release_never_skipped() -> None:
    plan = planner.ReleasePlan("prod", None, None, [planned("CD-02", built=False), planned("CD-01")])
    ran: list[str] = []
    summary = planner.execute(plan, lambda item: (ran.append(item.id) or True, None, ""))
    assert ran == []
    assert [r.status for r in summary.results] == [ItemStatus.NOT_BUILT, ItemStatus.NOT_RUN]
    assert summary.results[0].detail == "infrastructure as code: pipeline not built yet"
