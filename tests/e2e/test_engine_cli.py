"""The engine's CLI end to end: real `mangaassist` processes on a real SQLite state store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mangaassist.delivery.pipelines import registry

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
    """The CLI as the person ``--as`` names, with their identity token (prod refuses typed names;
    that refusal is tested in tests/integration/engine/test_people.py)."""
    return subprocess.run(
        [str(MANGAASSIST), *args],
        env=signed_in(env, args),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def signed_in(env: dict[str, str], args: Sequence[str]) -> dict[str, str]:
    """``env`` with the identity token of the person ``--as`` names in ``args`` (if any)."""
    if "--as" not in args:
        return env
    name = args[list(args).index("--as") + 1]
    issued = subprocess.run(
        [str(MANGAASSIST), "identity", "token", "--as", name, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token: str = json.loads(issued.stdout)["token"]
    return env | {"MANGAASSIST_IDENTITY_TOKEN": token}


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
        env=signed_in(env, ["--as", "ann"]),
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
        env=signed_in(env, ["--as", "ann"]),
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
    assert "entry 9: content does not match its keyed hash (edited or re-chained)" in done.stderr


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_release_plans_from_git_and_stops_at_the_first_failure(env: dict[str, str], tmp_path: Path) -> None:
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
    planned = ["CD-07", "CD-01", "CD-05"]  # pipelines land over time: "not built" follows the registry
    assert plan["not_built"] == [p for p in planned if not registry.is_built(p)] and plan["unmapped"] == [
        "docs/a.md"
    ]
    assert plan["pipelines"][1]["after"] == [
        "CD-07: the schema must be expanded before the code that uses it ships"
    ]

    # a release of a frontend change only runs CD-05 (CD-07 and CD-01 would migrate and deploy for
    # real), which stops before publishing anything: this environment runs no edge to publish to
    change = git(repo, "rev-parse", "HEAD")
    (repo / "frontend" / "widget.js").write_text("x")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "widget")
    unasked = cli(env, "release", "--env", "dev", "--since", change, "--repo", str(repo))
    assert unasked.returncode == 2 and "pass --yes" in unasked.stderr, unasked.stderr
    assert "release rel-" not in unasked.stdout  # nothing ran
    done = cli(env, "release", "--env", "dev", "--since", change, "--repo", str(repo), "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CD-05" in done.stdout and "nothing was uploaded or published" in done.stdout
    assert "release rel-" in done.stdout and "stopped" in done.stdout
    bad = cli(env, "release", "--plan", "--since", "no-such-ref", "--repo", str(repo))
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown git ref 'no-such-ref' in ")
    bad = cli(env, "release", "--plan", "--since", "no-such-ref", "--repo", str(repo), "--json")
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"].startswith("unknown git ref 'no-such-ref'")


def test_release_plan_counts_a_file_moved_out_of_a_pipeline_folder(
    env: dict[str, str], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "knowledge").mkdir()
    (repo / "knowledge" / "f.md").write_text("a knowledge base document\n" * 10)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    git(repo, "mv", "knowledge/f.md", "archive-f.md")
    git(repo, "commit", "-qm", "move a document out")
    plan = data(env, "release", "--plan", "--since", "HEAD~1", "--repo", str(repo))
    # the chatbot's image copies knowledge/*.md too (planner.IMAGE_FILES): CD-01 ships it again
    assert [p["id"] for p in plan["pipelines"]] == ["CD-04", "CD-01"]
    assert [p["paths"] for p in plan["pipelines"]] == [["knowledge/f.md"], ["knowledge/f.md"]]
    shown = cli(env, "release", "--plan", "--since", "HEAD~1", "--repo", str(repo))
    assert "CD-04" in shown.stdout and "nothing to release" not in shown.stdout


def test_release_plan_of_a_catalog_commit_runs_the_knowledge_base_then_the_application(
    env: dict[str, str], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "data" / "catalog.jsonl").write_text('{"id": "berserk", "volumes": 41}\n')
    (repo / "data" / "orders.jsonl").write_text('{"id": "o-1"}\n')
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    (repo / "data" / "catalog.jsonl").write_text('{"id": "berserk", "volumes": 42}\n')
    git(repo, "commit", "-qam", "a catalog row changes")
    plan = data(env, "release", "--plan", "--since", "HEAD~1", "--repo", str(repo))
    assert [(p["id"], p["paths"]) for p in plan["pipelines"]] == [
        ("CD-04", ["data/catalog.jsonl"]),
        ("CD-01", ["data/catalog.jsonl"]),
    ]
    assert "it indexes the catalog's series descriptions" in plan["pipelines"][0]["reason"]
    assert "the chatbot's image copies data/" in plan["pipelines"][1]["reason"]
    assert plan["pipelines"][1]["after"] == [
        "CD-04: the knowledge index must be live before the code that reads it"
    ]
    assert plan["unmapped"] == []
    shown = cli(env, "release", "--plan", "--since", "HEAD~1", "--repo", str(repo)).stdout
    assert shown.index("1. CD-04") < shown.index("2. CD-01"), shown
    # the seed orders are no source of the knowledge base: a change of them alone ships the application
    (repo / "data" / "orders.jsonl").write_text('{"id": "o-2"}\n')
    git(repo, "commit", "-qam", "a seed order changes")
    plan = data(env, "release", "--plan", "--since", "HEAD~1", "--repo", str(repo))
    assert [(p["id"], p["paths"]) for p in plan["pipelines"]] == [("CD-01", ["data/orders.jsonl"])]


# -- output: escaping, off-terminal tables, JSON errors, the audit head ----------------------------

FOREVER = """\
environments:
  prod:
    approvals: 0
    freezes:
      - {name: forever, from: "2000-01-01 00:00", to: "2999-01-01 00:00"}
"""


@pytest.mark.parametrize("how", ["absolute --policy", "relative --policy", "absolute MANGAASSIST_POLICY"])
def test_a_policy_block_names_the_rule_and_the_policy_file(
    env: dict[str, str], tmp_path: Path, how: str
) -> None:
    (tmp_path / "w.yaml").write_text(FOREVER)
    args = ["runs", "start", "demo", "--env", "prod"]
    run_env, shown_path = dict(env), str(tmp_path / "w.yaml")
    if how == "absolute --policy":
        args += ["--policy", shown_path]
    elif how == "relative --policy":
        args += ["--policy", "w.yaml"]
        shown_path = "w.yaml"
    else:
        run_env["MANGAASSIST_POLICY"] = shown_path
    done = cli(run_env, *args, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(
        "error: blocked by policy rule prod.freeze.forever: no deploys from 2000-01-01"
    )
    assert f"[{shown_path}]" in done.stderr
    assert done.stderr.rstrip().endswith("(to proceed anyway: --override prod.freeze.forever --reason TEXT)")
    as_json = cli(run_env, *args, "--json", cwd=tmp_path)
    error = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and error["exit_code"] == 1
    assert (
        error["error"].startswith("blocked by policy rule prod.freeze.forever")
        and f"[{shown_path}]" in error["error"]
    )


def test_text_from_data_is_printed_as_it_is(env: dict[str, str]) -> None:
    name = "[bold]eve[/bold] [/tmp/x]"
    assert cli(env, "runs", "start", "demo", "--as", name).returncode == 0
    run = data(env, "runs", "list")[0]
    shown = cli(env, "runs", "show", run["id"])
    assert shown.returncode == 0, shown.stderr
    assert f"requested by {name} at" in shown.stdout
    listed = cli(env, "runs", "list")
    assert name in listed.stdout


def test_tables_off_a_terminal_are_plain_lines_never_truncated(env: dict[str, str]) -> None:
    narrow = {**env, "COLUMNS": "60"}
    assert cli(narrow, "runs", "start", "demo", "--as", "ann").returncode == 0
    run = data(narrow, "runs", "list")[0]
    listed = cli(narrow, "runs", "list")
    assert listed.returncode == 0 and "…" not in listed.stdout
    header, row = listed.stdout.splitlines()
    assert header.split("\t") == [
        "id",
        "pipeline",
        "env/target",
        "state",
        "steps",
        "requester",
        "started",
        "owner",
    ]
    assert row.split("\t")[:6] == [run["id"], "demo", "dev/demo", "succeeded", "3/3", "ann"]
    shown = cli(narrow, "runs", "show", run["id"])
    assert "…" not in shown.stdout
    assert (
        "3\tverify\tdone\t1\t" in shown.stdout
        and "PASS error_rate=0.0 p95_ms=42.0 requests=200.0" in shown.stdout
    )


def test_json_errors_are_one_object_on_stdout(env: dict[str, str]) -> None:
    for args in (["runs", "show", "nope"], ["runs", "resume", "nope"], ["approve", "nope", "--as", "bob"]):
        done = cli(env, *args, "--json")
        assert done.returncode == 2, args
        assert json.loads(done.stdout) == {
            "error": "no run with id 'nope' (see `mangaassist runs list`)",
            "exit_code": 2,
        }
        assert done.stderr == ""


def test_audit_verify_json_includes_the_head(env: dict[str, str]) -> None:
    assert cli(env, "runs", "start", "demo").returncode == 0
    verified = data(env, "audit", "verify")
    entries = data(env, "audit")
    assert verified["intact"] is True and verified["entries"] == len(entries) == 10
    assert verified["head"] == {"seq": entries[-1]["seq"], "hash": entries[-1]["hash"]}


def test_progress_in_a_terminal_prints_bracketed_text_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from mangaassist.cli import engine_cmds
    from mangaassist.delivery.engine.runs import ProgressEvent

    out = io.StringIO()
    monkeypatch.setattr(engine_cmds, "console", Console(file=out, force_terminal=True, width=200))
    reason = "blocked by policy rule prod.windows: Sat 10:00 UTC is outside [/abs/w.yaml]; waits until Mon"
    with engine_cmds.ProgressDisplay(False) as display:
        assert display.rich
        for event in (
            ProgressEvent("step.blocked", "run-1", "deploy", reason),
            ProgressEvent("step.started", "run-1", "deploy", "[bold]ship[/] it"),
            ProgressEvent("step.waiting", "run-1", "deploy", "waiting [/x]"),
            ProgressEvent("step.failed", "run-1", "deploy", "no [red]"),
            ProgressEvent("run.finished", "run-1", None, "failed: [/oops]"),
        ):
            display(event)
    text = out.getvalue()
    assert "outside [/abs/w.yaml]" in text and "failed: [/oops]" in text
