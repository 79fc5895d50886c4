"""CD-01's first release: a service that runs no revision yet (what CD-02 leaves) gets one.

Before, ``deploy app`` refused an empty service and the first revision was made by hand, with no
gate at all. Now the candidate becomes the service's only revision (all of its traffic once ready;
the service answered 503 before), the pinned gates decide whether it stays, nothing is compared or
shifted, and a failed gate retires it as the last revision: the service is empty again and the
next release is a first release too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mangaassist.core.errors import MangaAssistError
from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.rollout.load import BackgroundLoad
from tests.integration.app_pipeline.conftest import Plane

pytestmark = pytest.mark.slow
MANGAASSIST = Path(sys.executable).with_name("mangaassist")


def _chat(plane: Plane) -> httpx.Response:
    return httpx.post(f"{plane.url}/v1/chat", json={"session_id": "s", "message": "hi"}, timeout=10)


def test_a_failed_first_release_leaves_the_service_empty_and_a_good_one_takes_it(empty_plane: Plane) -> None:
    plane = empty_plane
    assert plane.revisions() == {} and _chat(plane).status_code == 503  # nothing serves yet

    run, steps = plane.deploy(set_env={"TESTAPP_STATUS": "500"})
    assert run.effective_state is RunState.ROLLED_BACK, run.reason
    assert steps["build"].detail["first_release"] is True
    assert "smoke test failed" in (steps["candidate"].reason or "")
    bad = steps["build"].output["candidate"]
    assert plane.revisions() == {bad: "retired"} and plane.live() == {}
    assert _chat(plane).status_code == 503  # empty again, as before the release

    run, steps = plane.deploy(strategy="canary", steps="25,100", set_env={"RELEASE": "1"})
    assert run.effective_state is RunState.SUCCEEDED, run.reason
    good = steps["build"].output["candidate"]
    assert plane.live() == {good: 100.0}
    assert _chat(plane).headers["x-mangaassist-revision"] == good
    # the pinned gates ran; nothing was compared with or shifted from a stable revision
    assert steps["latency-gate"].detail["verdict"] == "PASS"
    for name in ("answers", "baseline", "canary-25", "canary-100"):
        assert "first release" in steps[name].detail["skipped"], (name, steps[name].detail)
    release = steps["promote"].output
    assert release["revision"] == good and release["first_release"] is True
    assert release["previous_revision"] is None and release["previous_artifact"] is None
    # `rollback app` has nothing to go back to, and says so without touching the service
    done = subprocess.run(
        [str(MANGAASSIST), "rollback", "app", "--env", "dev", "--json"],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "was the service's first: there is no earlier release" in done.stdout + done.stderr
    assert plane.live() == {good: 100.0}

    # the service runs a revision now: the next release is an ordinary canary, judged against it
    load = BackgroundLoad(plane.url, rps=60, sessions=8, seed=2).start()
    run, steps = plane.deploy(strategy="canary", steps="50,100", set_env={"RELEASE": "2"})
    load.stop()
    assert run.effective_state is RunState.SUCCEEDED, run.reason
    assert "first_release" not in steps["build"].detail
    assert steps["canary-50"].detail["verdict"] == "PASS"
    assert steps["promote"].output["previous_revision"] == good


def test_the_only_revision_is_retired_only_when_asked_as_the_last(empty_plane: Plane) -> None:
    """``Compute.retire`` refuses a weighted revision unless ``last`` says the service may be left
    empty, and then only for its only revision."""
    plane = empty_plane
    run, steps = plane.deploy(set_env={"RELEASE": "1"})
    assert run.effective_state is RunState.SUCCEEDED, run.reason
    only = steps["build"].output["candidate"]
    with pytest.raises(MangaAssistError, match="only revision"):
        plane.compute.retire("chatbot", only)
    assert plane.live() == {only: 100.0}
    # a person does the same with `revisions retire --last`
    argv = [str(MANGAASSIST), "revisions", "retire", only, "--drain-timeout", "2", "--env", "dev"]
    refused = subprocess.run(argv, capture_output=True, text=True, env=os.environ, timeout=120)
    assert refused.returncode == 2 and "only revision" in refused.stdout + refused.stderr
    assert plane.live() == {only: 100.0}
    done = subprocess.run([*argv, "--last"], capture_output=True, text=True, env=os.environ, timeout=120)
    assert done.returncode == 0 and f"chatbot/{only}: retired" in done.stdout, (done.stdout, done.stderr)
    assert plane.live() == {} and _chat(plane).status_code == 503
