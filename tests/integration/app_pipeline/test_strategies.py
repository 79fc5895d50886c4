"""CD-01 on a real local platform (test workload): each strategy with real traffic through the router.

What each test proves is in its docstring; all of them check where the traffic ends up (the router's
weights) and which revisions still run, not only the run's state.
"""

from __future__ import annotations

import json

import pytest

from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.pipelines.image_scan import NO_IMAGE_LOCAL
from mangaassist.delivery.rollout.load import BackgroundLoad
from tests.integration.app_pipeline.conftest import Plane

pytestmark = pytest.mark.slow


def _audit_kinds(plane: Plane, run_id: str) -> list[dict[str, object]]:
    from mangaassist.delivery.engine import audit

    with plane.store.transaction() as conn:
        return [{"kind": e.kind, "detail": e.detail} for e in audit.entries(conn, run_id=run_id)]


def test_good_canary_is_promoted_through_every_step(plane: Plane) -> None:
    """A healthy candidate passes smoke, the latency gate and 25/50/100 with the judge's PASS, the old
    revision is retired after its drain, and no conversation is served by two revisions."""
    load = BackgroundLoad(plane.url, rps=60, sessions=8, seed=1).start()
    run, steps = plane.deploy(strategy="canary", steps="25,50,100", set_env={"RELEASE": "2"})
    report = load.stop()
    assert run.effective_state is RunState.SUCCEEDED, run.reason
    candidate = steps["build"].output["candidate"]
    assert plane.live() == {candidate: 100.0}
    assert plane.revisions()["r1"] == "retired"
    # the image gate runs on aws only: here it is done and says why it did not scan
    assert list(steps)[:4] == ["build", "test", "scan", "candidate"]
    assert steps["scan"].status.value == "done" and steps["scan"].detail["skipped"] == NO_IMAGE_LOCAL
    for name in ("canary-25", "canary-50", "canary-100"):
        assert steps[name].detail["verdict"] == "PASS", steps[name].detail
        assert steps[name].detail["numbers"]["candidate_requests"] >= 20
    assert report.failed == 0
    assert report.mixed_conversations == 0, report.as_dict()
    # the candidate was judged against a fresh copy of r1 carrying the same share, retired at the end
    baseline = steps["baseline"].output["baseline"]
    assert baseline == f"{candidate}-base"
    assert report.by_revision[baseline] > 0 and plane.revisions()[baseline] == "retired"
    # nothing was retired under a live conversation (the drain waited for it)
    counters = plane.compute.stats("chatbot", 1 << 62)["revisions"]
    assert {name: c["sessions_moved_out"] for name, c in counters.items()} == {
        "r1": 0,
        candidate: 0,
        baseline: 0,
    }
    release = steps["promote"].output
    assert release["revision"] == candidate and release["previous_revision"] == "r1"
    assert release["verdicts"] == {"canary-25": "PASS", "canary-50": "PASS", "canary-100": "PASS"}


def test_slow_candidate_fails_the_judge_and_is_rolled_back(plane: Plane) -> None:
    """A candidate 60 ms slower than stable (inside the 300 ms latency budget, so the gate lets it
    through) is failed by the judge at the first step: all traffic back on r1 at once, the candidate
    retired, the run ROLLED_BACK with the verdict's numbers in the step and the audit."""
    load = BackgroundLoad(plane.url, rps=60, sessions=8, seed=2).start()
    # the pinned latency gate must let the 60 ms candidate through even when the machine is loaded
    # (its p99 went past 300 ms once in CI, and the judge never saw the candidate): this test is
    # about the judge
    run, steps = plane.deploy(
        strategy="canary", steps="25,50,100", set_env={"TESTAPP_DELAY_MS": "60"}, latency_budget_ms=2000
    )
    load.stop()
    assert run.effective_state is RunState.ROLLED_BACK, run.reason
    statuses = {name: step.status.value for name, step in steps.items()}
    assert statuses["latency-gate"] == "done" and statuses["canary-25"] == "failed", (statuses, run.reason)
    assert "latency" in (run.reason or "")
    assert plane.live() == {"r1": 100.0}
    candidate = steps["build"].output["candidate"]
    assert plane.revisions()[candidate] == "retired"
    assert plane.revisions()[f"{candidate}-base"] == "retired"  # the rollback retires the baseline too
    failed = steps["canary-25"]
    assert failed.detail["verdict"] == "FAIL"
    numbers = failed.detail["numbers"]
    assert numbers["e_latency"] >= numbers["threshold"]
    assert steps["canary-50"].status.value == "skipped"
    entries = _audit_kinds(plane, run.id)
    failed_entry = next(e for e in entries if e["kind"] == "step.failed")
    assert json.dumps(failed_entry["detail"]).count("e_latency") >= 1
    assert any(e["kind"] == "rollback.done" for e in entries)


def test_already_live_release_does_nothing(plane: Plane) -> None:
    """Deploying the tree r1 was built from: the wheel's runnable tar has r1's digest, the run says
    so and deploys, shifts and retires nothing."""
    run, steps = plane.deploy(strategy="canary")
    assert run.effective_state is RunState.SUCCEEDED
    assert steps["build"].output["already_live"] is True
    assert steps["promote"].output["already_live"] is True
    assert set(plane.revisions()) == {"r1"} and plane.live() == {"r1": 100.0}


def test_gates_stop_a_bad_candidate_before_any_traffic(plane: Plane) -> None:
    """The test gate failing deploys nothing; a candidate whose chats all fail never passes smoke;
    one slower than the latency budget fails the pinned load gate. In each case r1 keeps 100%."""
    run, steps = plane.deploy(test_command="false", set_env={"RELEASE": "3"})
    assert run.effective_state is RunState.ROLLED_BACK and steps["test"].status.value == "failed"
    assert set(plane.revisions()) == {"r1"}

    run, steps = plane.deploy(set_env={"TESTAPP_STATUS": "500"})
    assert run.effective_state is RunState.ROLLED_BACK
    assert "smoke test failed" in (steps["candidate"].reason or "")
    assert plane.live() == {"r1": 100.0}
    assert plane.revisions()[steps["build"].output["candidate"]] == "retired"

    run, steps = plane.deploy(set_env={"TESTAPP_DELAY_MS": "400"})
    assert run.effective_state is RunState.ROLLED_BACK
    gate = steps["latency-gate"]
    assert gate.detail["verdict"] == "FAIL" and gate.detail["numbers"]["p99_ms"] > 300
    assert plane.live() == {"r1": 100.0}

    # one chat in four fails: smoke passes (a 5xx is retried there), the pinned load's error gate
    # does not, so no user request ever reaches it
    load = BackgroundLoad(plane.url, rps=30, sessions=8, seed=5).start()
    run, steps = plane.deploy(set_env={"TESTAPP_FAIL_EVERY": "4"})
    report = load.stop()
    assert run.effective_state is RunState.ROLLED_BACK, run.reason
    assert steps["candidate"].status.value == "done"
    gate = steps["latency-gate"]
    assert gate.detail["verdict"] == "FAIL", gate.detail
    assert gate.detail["numbers"]["failed"] > gate.detail["numbers"]["failed_allowed"]
    assert "pinned requests failed" in (gate.reason or "")
    candidate = steps["build"].output["candidate"]
    assert report.by_revision.get(candidate, 0) == 0 and report.failed == 0
    assert plane.live() == {"r1": 100.0}


def test_blue_green_keeps_the_old_revision_warm_for_the_window(plane: Plane) -> None:
    """Blue-green: one atomic switch to 100%; r1 still runs (warm) during the rollback window while
    the judge compares with the pre-switch baseline, and is retired after it."""
    load = BackgroundLoad(plane.url, rps=60, sessions=8, seed=3).start()
    executor, run, pipeline = plane.start(strategy="blue-green", set_env={"RELEASE": "4"})
    import threading

    seen: list[dict[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            weights = plane.live()
            if len(weights) == 1 and "r1" not in weights:
                seen.append(plane.revisions())
            done.wait(0.3)

    watcher = threading.Thread(target=watch)
    watcher.start()
    final = executor.drive(run.id, pipeline)
    done.set()
    watcher.join()
    report = load.stop()
    assert final.effective_state is RunState.SUCCEEDED, final.reason
    assert any(r.get("r1") == "healthy" for r in seen), "r1 was not kept warm after the switch"
    assert plane.revisions()["r1"] == "retired"
    with plane.store.transaction() as conn:
        steps = {s.name: s for s in plane.store.steps(conn, run.id)}
    assert steps["switch"].detail["verdict"] == "PASS"
    assert steps["switch"].detail["numbers"]["elapsed_s"] >= 3
    assert report.failed == 0


def test_all_at_once_switches_in_dev(plane: Plane) -> None:
    """All-at-once (allowed in dev): 100% at once, judged against the pre-switch baseline, promoted."""
    load = BackgroundLoad(plane.url, rps=60, sessions=8, seed=4).start()
    run, steps = plane.deploy(strategy="all-at-once", set_env={"RELEASE": "5"})
    load.stop()
    assert run.effective_state is RunState.SUCCEEDED, run.reason
    assert plane.live() == {steps["build"].output["candidate"]: 100.0}
    assert plane.revisions()["r1"] == "retired"
