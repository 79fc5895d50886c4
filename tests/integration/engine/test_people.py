"""Identities that mean something (issue 22): where approvals are required, a requester or approver
identified only by a typed name is refused; signed identity tokens, the AWS caller identity (moto's
real server) and GitHub Actions OIDC tokens (RS256 from a JWKS on loopback) are accepted, and the
CLI will not let one person act under another's name."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mangaassist.dashboard import auth
from mangaassist.delivery.engine import approvals, audit, people
from mangaassist.delivery.engine.errors import ApprovalDenied, PolicyError
from mangaassist.delivery.engine.policy import load_policy, parse_policy
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import demo
from tests.integration.engine.test_engine_suite import WEDNESDAY, PollingClock, executor, prod, signed
from tests.moto_server import client, moto_server
from tests.unit.test_identity import Jwks

CLI = (sys.executable, "-m", "mangaassist.cli.main")


def _runs(store: StateStore) -> int:
    with store.transaction() as conn:
        return len(store.runs(conn, PollingClock(WEDNESDAY).now(), limit=1000))


def test_prod_refuses_a_typed_name_as_requester_and_changes_nothing(store: StateStore) -> None:
    ex = executor(store, PollingClock(WEDNESDAY))
    with pytest.raises(
        people.IdentityRefused, match="prod accepts a requester identified by token, aws, github"
    ):
        ex.start(demo.build({}), environment="prod", target="web", requester="ann", policy=prod())
    assert _runs(store) == 0
    run = ex.start(demo.build({}), environment="prod", target="web", requester=signed("ann"), policy=prod())
    with store.transaction() as conn:
        started = next(e for e in audit.entries(conn, run.id) if e.kind == "run.started")
    assert started.detail["identity"] == {"source": "token", "evidence": "test"}


def test_prod_refuses_a_typed_name_as_approver(store: StateStore) -> None:
    clock = PollingClock()
    pipeline = demo.build({"approval": True})
    ex = executor(store, clock)
    run = ex.start(pipeline, environment="prod", target="web", requester=signed("ann"), policy=prod())
    refused: list[str] = []

    def typed_then_signed() -> None:
        with store.transaction() as conn:
            waiting = store.run(conn, run.id, clock.now())
            try:
                approvals.decide(
                    store,
                    conn,
                    waiting,
                    decision=approvals.Decision.APPROVED,
                    actor="bob",
                    comment="",
                    now=clock.now(),
                )
            except people.IdentityRefused as exc:
                refused.append(str(exc))
        with store.transaction() as conn:
            waiting = store.run(conn, run.id, clock.now())
            approvals.decide(
                store,
                conn,
                waiting,
                decision=approvals.Decision.APPROVED,
                actor=signed("bob"),
                comment="",
                now=clock.now(),
            )

    clock.on_sleep.append(typed_then_signed)
    final = ex.drive(run.id, pipeline)
    assert final.state.value == "succeeded"
    assert len(refused) == 1 and "approver identified by token, aws, github, not by flag" in refused[0]
    with store.transaction() as conn:
        decisions = approvals.records(conn, run.id)
    assert [d.actor for d in decisions] == ["bob"]  # the refused attempt left nothing


def test_dev_accepts_typed_names_and_a_policy_may_say_otherwise(tmp_path: Path) -> None:
    policy = load_policy(None)
    assert policy.for_run("dev", "demo").accepted_identities == people.SOURCES
    assert policy.for_run("prod", "demo").accepted_identities == people.VERIFIED
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nenvironments:\n  prod: {approvals: 1, identities: [github]}\n")
    assert load_policy(path).for_run("prod", "demo").accepted_identities == ("github",)
    for bad in ("[]", "[magic]", "token"):
        path.write_text(f"version: 1\nenvironments:\n  prod: {{approvals: 1, identities: {bad}}}\n")
        with pytest.raises(PolicyError, match=r"environments\.prod\.identities"):
            load_policy(path)


def test_an_identity_token_names_one_person_until_it_expires() -> None:
    key = os.urandom(32)
    verified = people.verify_token(key, people.issue_token(key, "bob", 60))
    assert verified.actor.name == "bob" and verified.actor.source == "token"
    expired = people.issue_token(key, "bob", 10, now=time.time() - 3600)
    with pytest.raises(people.IdentityRefused, match="expired"):
        people.verify_token(key, expired)
    with pytest.raises(people.IdentityRefused, match="not valid"):
        people.verify_token(os.urandom(32), people.issue_token(key, "bob", 60))


def test_the_aws_caller_identity_names_the_person() -> None:
    with moto_server() as endpoint:
        actor = people.aws_actor(client(endpoint, "sts"))
    assert actor.source == "aws" and actor.evidence.startswith("arn:aws:")
    assert actor.name == actor.evidence.rsplit("/", 1)[-1]


@pytest.fixture
def github_jwks() -> Iterator[tuple[Jwks, rsa.RSAPrivateKey]]:
    served = Jwks()
    served.thread.start()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    served.publish(key.public_key(), "gh1", "RS256")
    try:
        yield served, key
    finally:
        served.server.shutdown()
        served.server.server_close()


def _github_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": people.GITHUB_ISSUER,
        "aud": people.GITHUB_AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "actor": "octocat",
        "repository": "mangaassist/mangaassist",
        "run_id": "42",
        **claims,
    }
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "gh1"})


def test_a_github_oidc_token_names_its_actor(github_jwks: tuple[Jwks, rsa.RSAPrivateKey]) -> None:
    served, key = github_jwks
    actor = people.github_actor(_github_token(key), jwks_url=served.url)
    assert actor == people.Actor("octocat", "github", "mangaassist/mangaassist run 42")
    for wrong in (
        {"aud": "sts.amazonaws.com"},
        {"iss": "https://evil.example"},
        {"exp": int(time.time()) - 600},
    ):
        with pytest.raises(people.IdentityRefused, match="not valid"):
            people.github_actor(_github_token(key, **wrong), jwks_url=served.url)
    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(people.IdentityRefused, match="not valid"):
        people.github_actor(_github_token(forged), jwks_url=served.url)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_approves_only_as_the_person_its_token_names(tmp_path: Path) -> None:
    """alice requests with her token; a typed --as bob is refused; bob's token approves; alice's
    token claiming to be bob is refused."""
    home = tmp_path / "home"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nenvironments:\n  prod: {approvals: 1, self_approval: false, approval_timeout: 1h}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANGAASSIST_", "ACTIONS_"))}
    env |= {"MANGAASSIST_HOME": str(home), "MANGAASSIST_POLL_SECONDS": "0.2"}

    def token(name: str) -> str:
        issued = _cli(env, "identity", "token", "--as", name, "--home", str(home), "--json")
        assert issued.returncode == 0, issued.stderr
        return str(json.loads(issued.stdout)["token"])

    alice, bob = token("alice"), token("bob")
    typed = _cli(env, "runs", "start", "demo", "--env", "prod", "--as", "alice", "--policy", str(policy))
    assert typed.returncode == 2 and "not by flag" in typed.stderr
    runner = subprocess.Popen(
        [*CLI, "runs", "start", "demo", "--env", "prod", "--param", "approval=true", "--policy", str(policy)],
        env=env | {"MANGAASSIST_IDENTITY_TOKEN": alice},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        run_id = ""
        while not run_id:
            assert time.monotonic() < deadline, "no run waiting for approval"
            listed = json.loads(_cli(env, "runs", "list", "--json").stdout or "[]")
            run_id = next((r["id"] for r in listed if r["awaiting_approval"]), "")
            time.sleep(0.3)
        refused = [
            _cli(env, "approve", run_id, "--as", "bob"),  # typed: anyone could type bob
            _cli(env | {"MANGAASSIST_IDENTITY_TOKEN": alice}, "approve", run_id, "--as", "bob"),
            _cli(env | {"MANGAASSIST_IDENTITY_TOKEN": alice}, "approve", run_id),  # her own run
        ]
        assert [r.returncode for r in refused] == [2, 2, 2], [r.stderr for r in refused]
        assert "not by flag" in refused[0].stderr and "one cannot act as someone else" in refused[1].stderr
        assert "may not approve" in refused[2].stderr
        approved = _cli(
            env | {"MANGAASSIST_IDENTITY_TOKEN": bob}, "approve", run_id, "--comment", "ok", "--json"
        )
        assert approved.returncode == 0, approved.stderr
        assert json.loads(approved.stdout)["actor"] == "bob"
    finally:
        runner.wait(60)
    assert runner.returncode == 0
    entries = json.loads(_cli(env, "audit", "--run", run_id, "--json").stdout)
    approval = next(e for e in entries if e["kind"] == "approval.approved")
    assert approval["actor"] == "bob" and approval["detail"]["identity"]["source"] == "token"
    assert next(e for e in entries if e["kind"] == "run.started")["actor"] == "alice"


def test_a_token_and_its_dashboard_session_are_the_same_person(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        key = people.load_key(store.secrets_dir)
        assert key == auth.load_key(store)  # the dashboard signs people in with the same key
    finally:
        store.close()
    assert dataclasses.asdict(people.Actor("bob", "token")) == {
        "name": "bob",
        "source": "token",
        "evidence": "",
    }
    assert approvals.identity(" BOB ") == "bob"


def test_an_approvals_override_is_itself_an_approval_by_another_person(store: StateStore) -> None:
    """Where the policy allows overriding prod's two approvals, the override replaces them by one
    confirmation, and the requester cannot give it."""
    text = (
        "environments:\n  prod:\n    approvals: 2\n    self_approval: false\n    approval_overrides: true\n"
    )
    policy = parse_policy(text, "p.yaml").for_run("prod", "demo")
    clock = PollingClock()
    pipeline = demo.build({"approval": True})
    ex = executor(store, clock)
    run = ex.start(
        pipeline,
        environment="prod",
        target="web",
        requester=signed("ann"),
        policy=policy,
        overrides={"prod.approvals": "the second approver is on leave"},
    )
    denied: list[str] = []

    def confirm() -> None:
        for who in ("ann", "bob"):
            with store.transaction() as conn:
                waiting = store.run(conn, run.id, clock.now())
                if waiting.state.final or approvals.waiting_step(conn, run.id) is None:
                    return
                try:
                    approvals.decide(
                        store,
                        conn,
                        waiting,
                        decision=approvals.Decision.APPROVED,
                        actor=signed(who),
                        comment="",
                        now=clock.now(),
                    )
                except ApprovalDenied as exc:
                    denied.append(str(exc))

    clock.on_sleep.append(confirm)
    final = ex.drive(run.id, pipeline)
    assert final.state.value == "succeeded"
    assert denied and "ann started run" in denied[0]
    with store.transaction() as conn:
        gate = next(s for s in store.steps(conn, run.id) if s.name == "approval")
    assert gate.detail["approved_by"] == ["bob"] and gate.detail["overridden"] == "prod.approvals"
