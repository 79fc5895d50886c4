"""The engine's CLI end to end: real `mangaassist` processes on a real SQLite state store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

MANGAASSIST = Path(sys.executable).with_name("mangaassist")
POLICY = """\
environments:
  dev: {}
  prod:
    approvals: 1
    self_approval: false
    approval_timeout: 1h
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)  # no weekend freeze: these tests must pass on any day
    return {
        **os.environ,
        "MANGAASSIST_HOME": str(tmp_path / "home"),
        "MANGAASSIST_POLICY": str(policy),
        "MANGAASSIST_POLL_SECONDS": "0.1",
        "MANGAASSIST_STATE_URL": "",
        "COLUMNS": "200",
    }


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MANGAASSIST), *args], env=env, capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def data(env: dict[str, str], *args: str) -> Any:
    done = cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for_state(env: dict[str, str], run_id: str | None, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = data(env, "runs", "list")
        match = [r for r in runs if (run_id is None or r["id"] == run_id) and r["state"] == state]
        if match:
            return dict(match[0])
        time.sleep(0.1)
    raise AssertionError(f"no run reached {state}: {runs}")


def test_every_engine_command_has_help() -> None:
    from typer.testing import CliRunner

    from mangaassist.cli.main import app

    runner = CliRunner()
    commands = (
        ["runs"],
        ["runs", "list"],
        ["runs", "show"],
        ["runs", "start"],
        ["runs", "resume"],
        ["runs", "abort"],
        ["approve"],
        ["reject"],
        ["audit"],
        ["audit", "verify"],
        ["release"],
    )
    for args in commands:
        done = runner.invoke(app, [*args, "--help"])
        assert done.exit_code == 0 and "Usage:" in done.output, args


def test_a_demo_run_is_listed_shown_and_audited(env: dict[str, str], tmp_path: Path) -> None:
    done = cli(env, "runs", "start", "demo", "--as", "ann", "--param", f"ledger={tmp_path / 'ledger'}")
    assert done.returncode == 0, done.stderr
    assert "verify: done PASS error_rate=0.0" in done.stdout  # plain progress lines off a terminal
    run = data(env, "runs", "list")[0]
    assert (run["state"], run["requester"], run["progress"]) == ("succeeded", "ann", "3/3")
    shown = data(env, "runs", "show", run["id"])
    assert [s["status"] for s in shown["timeline"]] == ["done", "done", "done"]
    assert shown["timeline"][2]["detail"] == {
        "verdict": "PASS",
        "numbers": {"error_rate": 0.0, "p95_ms": 42.0, "requests": 200.0},
    }
    entries = data(env, "audit", "--run", run["id"])
    assert entries[0]["kind"] == "run.started" and entries[-1]["kind"] == "run.finished"
    verified = cli(env, "audit", "verify")
    assert verified.returncode == 0 and "audit log intact: 10 entries" in verified.stdout


def test_prod_approval_lock_kill_and_resume(env: dict[str, str]) -> None:
    runner = subprocess.Popen(
        [
            str(MANGAASSIST),
            "runs",
            "start",
            "demo",
            "--env",
            "prod",
            "--target",
            "web",
            "--as",
            "ann",
            "--param",
            "approval=true",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run = wait_for_state(env, None, "waiting")
        second = cli(env, "runs", "start", "demo", "--env", "prod", "--target", "web", "--as", "bob")
        assert second.returncode == 1
        assert f"prod/web is locked by run {run['id']}, started by ann at " in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1

        self_approval = cli(env, "approve", run["id"], "--as", "ann")
        assert self_approval.returncode == 2 and "may not approve it in prod" in self_approval.stderr

        os.kill(runner.pid, signal.SIGKILL)  # the process dies while waiting for its approval
        runner.wait(timeout=10)
        wait_for_state(env, run["id"], "interrupted")
        approved = cli(env, "approve", run["id"], "--as", "bob", "--comment", "ship it")
        assert approved.returncode == 0, approved.stderr
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    resumed = cli(env, "runs", "resume", run["id"], "--as", "bob")
    assert resumed.returncode == 0, resumed.stderr
    shown = data(env, "runs", "show", run["id"])
    assert shown["state"] == "succeeded"
    assert [(a["actor"], a["comment"]) for a in shown["approvals"]] == [("bob", "ship it")]
    assert shown["timeline"][0]["attempts"] == 1  # prepare was not repeated by the resume
    again = cli(env, "approve", run["id"], "--as", "carol")
    assert again.returncode == 2 and "already succeeded" in again.stderr


def test_reject_needs_a_comment_and_stops_the_run(env: dict[str, str]) -> None:
    runner = subprocess.Popen(
        [
            str(MANGAASSIST),
            "runs",
            "start",
            "demo",
            "--env",
            "prod",
            "--as",
            "ann",
            "--param",
            "approval=true",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run = wait_for_state(env, None, "waiting")
        missing = cli(env, "reject", run["id"], "--as", "bob")
        assert missing.returncode == 2 and "--comment" in missing.stderr
        assert cli(env, "reject", run["id"], "--as", "bob", "--comment", "wrong build").returncode == 0
        assert runner.wait(timeout=30) == 1
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    shown = data(env, "runs", "show", run["id"])
    assert shown["state"] == "aborted" and "rejected by bob: wrong build" in shown["reason"]


def test_bad_input_is_one_clear_line_and_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    unknown = cli(env, "runs", "show", "run-nope")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        2,
        "error: no run with id 'run-nope' (see `mangaassist runs list`)",
    )
    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text("environments:\n  prod:\n    approvals: lots\n")
    done = cli(env, "runs", "start", "demo", "--env", "prod", "--policy", str(bad_policy))
    assert done.returncode == 2
    assert f"{bad_policy}:3: environments.prod.approvals: expected a whole number" in done.stderr
    unopenable = {**env, "MANGAASSIST_STATE_URL": "sqlite:////proc/no-such-dir/state.sqlite3"}
    done = cli(unopenable, "runs", "list")
    assert (
        done.returncode == 2 and "cannot open the state database sqlite:////proc/no-such-dir" in done.stderr
    )
    done = cli(env, "runs", "start", "demo", "--env", "qa")
    assert done.returncode == 2 and "environment 'qa' is not in" in done.stderr
    assert data(env, "runs", "list") == []  # nothing half-written by any of the above


def test_audit_verify_fails_on_a_tampered_log(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, "runs", "start", "demo").returncode == 0
    with sqlite3.connect(tmp_path / "home" / "state.sqlite3") as db:
        db.execute('UPDATE engine_audit SET detail = \'{"step":"verify","verdict":"PASS"}\' WHERE seq = 9')
    done = cli(env, "audit", "verify")
    assert done.returncode == 1
    assert "entry 9: content does not match its hash (edited)" in done.stderr


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_release_plans_from_git_and_stops_at_an_unbuilt_pipeline(env: dict[str, str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "README.md").write_text("x")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    for path in ("src/app.py", "migrations/0001.py", "frontend/index.html", "docs/a.md"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("x")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "change")

    plan = data(env, "release", "--plan", "--since", base, "--env", "prod", "--repo", str(repo))
    assert [p["id"] for p in plan["pipelines"]] == ["CD-07", "CD-01", "CD-05"]
    assert plan["not_built"] == ["CD-07", "CD-01", "CD-05"] and plan["unmapped"] == ["docs/a.md"]
    assert plan["pipelines"][1]["after"] == [
        "CD-07: the schema must be expanded before the code that uses it ships"
    ]

    done = cli(env, "release", "--env", "dev", "--repo", str(repo))
    assert done.returncode == 1
    # the first release of dev ships everything tracked; it stops at the first pipeline, not built yet
    assert "CD-07: not built yet" in done.stdout and "CD-01: not run" in done.stdout
    assert "release rel-" in done.stdout and "stopped" in done.stdout
    bad = cli(env, "release", "--plan", "--since", "no-such-ref", "--repo", str(repo))
    assert bad.returncode == 2 and "git rev-parse" in bad.stderr
