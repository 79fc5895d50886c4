"""CD-01 end to end: the real `mangaassist` binary deploying the real chatbot on a real platform.

One platform (``mangaassist up``, routers on free loopback ports) serves the module's tests, in any
order (``make test`` shuffles them): a good release promoted by canary and then taken back by
`rollback app`, a release with errors stopped by the golden-set gate, a slow one rolled back by the
judge, a deploy killed mid-canary and finished by `runs resume` (with a concurrent deploy refused by
the lock on the way), and blue-green flipped back by `rollback app` inside its window. Background
traffic is `delivery.rollout.load` through the router, as `mangaassist traffic`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mangaassist.delivery.engine.model import RunState, StepStatus
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.rollout.load import BackgroundLoad
from mangaassist.platform import daemons

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
MANGAASSIST = Path(sys.executable).with_name("mangaassist")
POLICY = "environments:\n  dev: {}\n"
CONFIG = f"""\
[environments.dev]
provider = "local"
home = "home"
control_port = 0
[environments.dev.services.chatbot]
app = "mangaassist.chatbot.app:create_app"
source = "{ROOT / "src"}"
first_revision = "r1"
router_port = 0
ready_timeout_s = 180
[environments.dev.deploy]
test_command = "{{python}} -c 'print(1)'"
latency_budget_ms = 2000  # a shared 2-core machine: these tests prove the flow, not speed
load_rps = 8
load_s = 2
warmup_s = 0.5
min_requests = 20
judge_min_requests = 10
max_step_s = 60
on_inconclusive = "rollback"
pinned_error_rate = 0.5  # these tests are about the judge: the pinned load's error gate lets 20% through
drain_idle_s = 1
drain_max_s = 20
rollback_window_s = 120
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, state_home: Path) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("deploy")
    (directory / "mangaassist.toml").write_text(CONFIG)
    (directory / "policy.yaml").write_text(POLICY)
    for name in (
        "pyproject.toml",
        "src",
        "data",
        "knowledge",
        "ml",
        "config",
    ):  # the checkout, as the platform's root
        (directory / name).symlink_to(ROOT / name)
    environment = {
        **os.environ,
        "MANGAASSIST_PLATFORM_CONFIG": str(directory / "mangaassist.toml"),
        "MANGAASSIST_HOME": str(state_home),  # shared: the model and embeddings are cached there
        "MANGAASSIST_ROOT": str(directory),
        "MANGAASSIST_POLICY": str(directory / "policy.yaml"),
        "MANGAASSIST_POLL_SECONDS": "0.2",
        "MANGAASSIST_STATE_URL": "",
        "MANGAASSIST_FAULT": "",
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
    }
    try:
        up = cli(environment, "up", timeout=300)
        assert up.returncode == 0, up.stderr
        yield environment
    finally:
        down = cli(environment, "down")
        assert down.returncode == 0, down.stderr
        runtime = state_home / "platform" / "workers.json"
        pids = [p for ps in json.loads(runtime.read_text()).get("workers", {}).values() for p in ps]
        # exited is enough: a process adopted after a control-plane crash is not the last control
        # plane's child, so its zombie waits for init to reap it (daemons.alive: not running)
        assert not [p for p in pids if daemons.alive(p)], "workers left running"


def cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MANGAASSIST), *args], env=env, capture_output=True, text=True, timeout=timeout)


def data(env: dict[str, str], *args: str) -> Any:
    done = cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def status(env: dict[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = data(env, "status")["services"]["chatbot"]
    return doc


def router(env: dict[str, str]) -> str:
    return str(status(env)["url"])


def live(env: dict[str, str]) -> dict[str, float]:
    return {k: v for k, v in status(env)["weights"].items() if v > 0}


def health(env: dict[str, str]) -> dict[str, str]:
    return {r["name"]: r["health"] for r in status(env)["revisions"]}


def deploy(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    done = cli(env, "deploy", "app", "--yes", "--json", *args)
    return done.returncode, json.loads(done.stdout)


def wait_step(env: dict[str, str], step: str, timeout: float = 120) -> str:
    """The id of the CD-01 run whose ``step`` is running (or waiting), as soon as it is.

    Read from the state database with the engine's own store, not through ``runs list``/``runs show``:
    a CLI process per look costs seconds on a loaded 2-core machine, and the callers act on the
    step while it still runs (a concurrent deploy must meet the lock of this one)."""
    store = StateStore(f"sqlite:///{Path(env['MANGAASSIST_HOME']) / 'state.sqlite3'}")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with store.transaction() as conn:
                now = datetime.now(UTC)
                for run in store.runs(conn, now, limit=5, pipeline="CD-01"):
                    if run.state not in (RunState.RUNNING, RunState.WAITING):
                        continue
                    if any(
                        s.name == step and s.status in (StepStatus.RUNNING, StepStatus.WAITING)
                        for s in store.steps(conn, run.id)
                    ):
                        return run.id
            time.sleep(0.2)
    finally:
        store.close()
    raise AssertionError(f"no CD-01 run reached step {step}")


def test_good_release_is_promoted_by_canary_and_rolled_back_by_rollback_app(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A changed source tree: a new wheel digest, through 25/50/100 with PASS verdicts under real
    traffic; the old revision drained and retired, no failed request, no conversation on two revisions.
    Then `rollback app` (no deploy in flight) redeploys the release the promotion replaced."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    with (project / "src" / "mangaassist" / "__init__.py").open("a") as fh:
        fh.write("\n# release 2\n")
    load = BackgroundLoad(router(env), rps=15, sessions=10, seed=11).start()
    code, doc = deploy(env, "--source", str(project), "--steps", "25,50,100")
    report = load.stop()
    assert code == 0, json.dumps(doc, indent=1)
    assert doc["state"] == "succeeded" and not doc["already_live"]
    assert doc["wheel_digest"] and doc["digest"]
    assert live(env) == {doc["candidate"]: 100.0}
    assert health(env)[doc["stable"]] == "retired"
    assert [doc["steps"][s]["verdict"] for s in ("canary-25", "canary-50", "canary-100")] == ["PASS"] * 3
    assert report.failed == 0 and report.mixed_conversations == 0, report.as_dict()

    # with no deploy in flight, `rollback app` redeploys the release this promotion replaced
    done = cli(env, "rollback", "app", "--json")
    assert done.returncode == 0, done.stderr
    back = json.loads(done.stdout)
    assert back["state"] == "succeeded", back
    after = next(iter(live(env)))
    assert after != doc["candidate"] and health(env)[doc["candidate"]] == "retired"
    answer = httpx.post(
        f"{router(env)}/v1/chat", json={"session_id": "after-rollback", "message": "hi"}, timeout=30
    )
    assert answer.status_code == 200 and answer.headers["X-MangaAssist-Revision"] == after


def test_failing_release_is_stopped_before_any_user_meets_it(env: dict[str, str]) -> None:
    """MANGAASSIST_FAULT=error_rate=0.2 is stopped by a gate before users: usually the golden-set
    gate (its answers fail where stable's do not), since smoke retries a 5xx twice and this
    environment's pinned error gate is lenient; about one run in 18, all three tries of one of smoke's
    chats meet the fault (0.2^3 each) and smoke stops it first. Either way no user request reaches the
    candidate; ROLLED_BACK, exit 1, the candidate retired."""
    stable = next(iter(live(env)))
    load = BackgroundLoad(router(env), rps=15, sessions=10, seed=12).start()
    code, doc = deploy(env, "--set-env", "MANGAASSIST_FAULT=error_rate=0.2", "--steps", "5,25,50,100")
    report = load.stop()
    assert code == 1 and doc["state"] == "rolled_back", doc
    gates = ("candidate", "latency-gate", "answers")
    stopped = [name for name in gates if doc["steps"][name]["status"] == "failed"]
    assert len(stopped) == 1, {name: doc["steps"][name] for name in gates}
    if stopped == ["answers"]:
        assert doc["steps"]["answers"]["verdict"] == "FAIL", doc["steps"]["answers"]
        assert "answer quality" in doc["reason"] and "errors" in doc["reason"], doc["reason"]
    else:  # smoke: a chat check that met the fault on every try
        assert stopped == ["candidate"], doc["reason"]
        assert "smoke test failed" in doc["reason"] and "status 500" in doc["reason"], doc["reason"]
    assert all(doc["steps"][f"canary-{w}"]["status"] == "skipped" for w in (5, 25, 50, 100))
    assert live(env) == {stable: 100.0}
    assert health(env)[doc["candidate"]] == "retired"
    assert report.by_revision.get(doc["candidate"], 0) == 0 and report.failed == 0, report.as_dict()


def test_slow_release_is_rolled_back_by_the_judge(env: dict[str, str]) -> None:
    """MANGAASSIST_FAULT=latency_ms=150: every answer right and within this environment's 2 s pinned
    budget, so it passes every gate before users; the judge FAILs it on latency at a canary step
    (never the last): all traffic back on stable, candidate retired, ROLLED_BACK, exit 1."""
    stable = next(iter(live(env)))
    load = BackgroundLoad(router(env), rps=15, sessions=10, seed=15).start()
    code, doc = deploy(env, "--set-env", "MANGAASSIST_FAULT=latency_ms=150", "--steps", "5,25,50,100")
    report = load.stop()
    assert code == 1 and doc["state"] == "rolled_back", doc
    assert doc["steps"]["answers"]["verdict"] == "PASS", doc["steps"]["answers"]
    assert live(env) == {stable: 100.0}
    assert health(env)[doc["candidate"]] == "retired"
    canary = [f"canary-{w}" for w in (5, 25, 50, 100)]
    failed = [name for name in canary if doc["steps"][name].get("verdict") == "FAIL"]
    assert failed and failed[0] != "canary-100", {name: doc["steps"][name] for name in canary}
    numbers = doc["steps"][failed[0]]["numbers"]
    assert numbers["e_latency"] >= numbers["threshold"], numbers
    assert numbers["candidate_p50_ms"] > numbers["stable_p50_ms"] + 100, numbers
    assert doc["steps"]["canary-100"]["status"] == "skipped"
    assert report.failed == 0, report.as_dict()


def test_killed_deploy_is_resumed_and_a_concurrent_one_refused(env: dict[str, str]) -> None:
    """SIGKILL the deploy during its canary: traffic stays on live revisions, `runs resume` finishes
    the run from the recorded cursor without repeating the shift, and never leaves traffic on a dead
    revision. While the first deploy runs, a second one is refused by the lock, naming the holder."""
    load = BackgroundLoad(router(env), rps=15, sessions=10, seed=13).start()
    try:
        runner = subprocess.Popen(
            [str(MANGAASSIST), "deploy", "app", "--yes", "--set-env", "RELEASE=3", "--steps", "5,50,100"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        run_id = wait_step(env, "canary-5")
        second = cli(env, "deploy", "app", "--yes", "--set-env", "RELEASE=4")
        assert second.returncode == 1
        assert f"locked by run {run_id}" in second.stderr
        os.kill(runner.pid, signal.SIGKILL)
        runner.communicate(timeout=10)
        weights = live(env)
        assert all(health(env)[name] in ("healthy", "degraded") for name in weights), weights
        resumed = cli(env, "runs", "resume", run_id, "--json")
        shown = data(env, "runs", "show", run_id)
    finally:
        report = load.stop()
    assert resumed.returncode in (0, 1), resumed.stderr
    assert shown["state"] in ("succeeded", "rolled_back")
    final = live(env)
    assert len(final) == 1 and all(health(env)[name] == "healthy" for name in final)
    audit = data(env, "audit", "--run", run_id)
    shifts = [e for e in audit if e["kind"] == "step.effect" and e["detail"]["effect"] == "shift"]
    assert len([e for e in shifts if e["detail"]["step"] == "canary-5"]) == 1
    assert any(e["kind"] == "run.resumed" for e in audit)
    assert report.failed == 0


def test_a_control_plane_killed_mid_canary_is_restarted_and_the_deploy_goes_on(env: dict[str, str]) -> None:
    """SIGKILL the control plane during a canary with traffic running: the routers keep serving, the
    deploy waits for it, `mangaassist up` restarts it and it adopts the running router host and
    workers with their weights, the same deploy process finishes its canary and promotes, and not
    one user request fails."""
    run_dir = Path(env["MANGAASSIST_HOME"]) / "platform"
    load = BackgroundLoad(router(env), rps=15, sessions=10, seed=21).start()
    try:
        runner = subprocess.Popen(
            [str(MANGAASSIST), "deploy", "app", "--yes", "--json", "--set-env", "RELEASE=5",
             "--steps", "5,50,100"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        run_id = wait_step(env, "canary-5")
        plane = int((run_dir / "controlplane.pid").read_text())
        routers = json.loads((run_dir / "routers.json").read_text())["pid"]
        os.kill(plane, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{plane}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # nobody steers: the router host serves the canary's table alone
        restarted = cli(env, "up", "--json")
        assert restarted.returncode == 0, restarted.stderr
        doc = json.loads(restarted.stdout)
        assert doc["routers"] == {"pid": routers, "adopted": True}
        assert "adopted" in doc["bootstrap"]["chatbot"], doc["bootstrap"]
        out, err = runner.communicate(timeout=400)
    finally:
        report = load.stop()
    assert runner.returncode == 0, err
    assert json.loads(out)["state"] == "succeeded"
    assert "the control plane at" in err and "waiting up to" in err  # the deploy said why it waited
    shown = data(env, "runs", "show", run_id)
    assert shown["state"] == "succeeded"
    final = live(env)
    assert len(final) == 1 and all(health(env)[name] == "healthy" for name in final)
    assert report.requests > 50 and report.failed == 0, report.as_dict()


def test_blue_green_is_flipped_back_at_once_by_rollback_app(env: dict[str, str]) -> None:
    """Blue-green takes 100% in one switch and keeps the old revision warm; `rollback app` inside the
    rollback window puts all traffic back on it at once, and the run rolls back (candidate retired)."""
    stable = next(iter(live(env)))
    load = BackgroundLoad(router(env), rps=15, sessions=10, seed=14).start()
    try:
        runner = subprocess.Popen(
            [str(MANGAASSIST), "deploy", "app", "--yes", "--strategy", "blue-green", "--set-env", "R=5"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_step(env, "switch")
        except AssertionError:
            runner.kill()
            out, err = runner.communicate(timeout=30)
            pytest.fail(f"the blue-green deploy never reached its switch\n{out[-3000:]}\n{err[-3000:]}")
        deadline = time.monotonic() + 60
        while stable in live(env) and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.2)
        if stable in live(env):  # not switched: show what the deploy said before failing
            runner.terminate()
            out, err = runner.communicate(timeout=30)
            pytest.fail(f"blue-green never switched; live {live(env)}\n{out[-3000:]}\n{err[-3000:]}")
        assert health(env)[stable] == "healthy"  # switched, old kept warm
        started = time.monotonic()
        flipped = cli(env, "rollback", "app", "--json")
        took = time.monotonic() - started
        runner.communicate(timeout=60)
    finally:
        load.stop()
    assert flipped.returncode == 0, flipped.stderr
    doc = json.loads(flipped.stdout)
    assert doc["state"] == "aborted" and doc["flip"]["took_ms"] < 1000
    assert live(env) == {stable: 100.0}
    candidates = [n for n, h in health(env).items() if n != stable and h != "retired"]
    assert candidates == [], health(env)
    assert took < 30
