"""CD-06 against the real local platform: config server process, chatbot process, engine runs."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mangaassist.chatbot.config import ChatbotConfig
from mangaassist.chatbot.config_client import ConfigClient
from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.delivery.engine.errors import LockHeld
from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.runs import Executor
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import config as cd06
from tests.integration.config.conftest import ROOT, ConfigServer

pytestmark = pytest.mark.slow
QUESTIONS = [
    "What is the return window?",
    "How much does shipping cost?",
    "Which payment methods do you accept?",
]


def _seed(server: ConfigServer, folder: Path) -> dict[str, str]:
    """Every profile's content from ``folder`` as the stable version."""
    store = server.store
    out = {}
    for name in ("runtime", "prompts", "guardrails", "flags"):
        content = yaml.safe_load((folder / f"{name}.yaml").read_text())
        v = store.create_version(name, content, author="test").version
        store.promote(name, v, actor="test")
        out[name] = v
    return out


def _ask(bot: ChatbotProcess, message: str, session: str) -> httpx.Response:
    return httpx.post(f"{bot.url}/v1/chat", json={"session_id": session, "message": message}, timeout=30)


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _bad_prompts(tmp: Path) -> Path:
    """A copy of config/ whose policy answers stop naming their sources."""
    folder = tmp / "candidate"
    shutil.copytree(ROOT / "config", folder)
    text = (folder / "prompts.yaml").read_text()
    bad = text.replace(
        'policy_question:\n    text: "{answer}\\n\\nSources: {sources}"\n    variables: [answer, sources]',
        'policy_question:\n    text: "{answer}"\n    variables: [answer]',
    )
    assert bad != text
    (folder / "prompts.yaml").write_text(bad)
    return folder


class Traffic:
    """Policy questions from many sessions, until stopped (what the judge sees)."""

    def __init__(self, bot: ChatbotProcess) -> None:
        self.bot = bot
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                session = f"t-{uuid.uuid4().hex[:10]}"
                http.post(
                    f"{self.bot.url}/v1/chat",
                    json={"session_id": session, "message": QUESTIONS[self.sent % len(QUESTIONS)]},
                )
                self.sent += 1

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _run(params: dict[str, Any], state: StateStore) -> Any:
    executor = Executor(state, poll_seconds=0.2)
    built = cd06.build(params)
    return executor.run(
        built,
        environment="dev",
        target=cd06.target(params["profile"]),
        requester="test",
        policy=load_policy(None).for_run("dev", cd06.NAME),
    )


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'engine.sqlite3'}")


def test_outage_keeps_serving_last_known_good_from_memory_and_disk(
    config_server: ConfigServer, followed_chatbot: ChatbotProcess, state_home: Path, tmp_path: Path
) -> None:
    seeded = _seed(config_server, ROOT / "config")
    session = "outage-1"
    assert _wait_for(
        lambda: _ask(followed_chatbot, QUESTIONS[0], session).json()["versions"]["configs"] == seeded
    )
    before = _ask(followed_chatbot, QUESTIONS[0], session)
    assert before.headers["X-MangaAssist-Config"].count("=") == 4
    assert "Sources:" in before.json()["answer"]  # the served prompts profile is applied
    ready = httpx.get(f"{followed_chatbot.url}/readyz", timeout=5).json()
    assert ready["configs"]["prompts"] == {
        "source": "server",
        "stable": seeded["prompts"],
        "candidate": None,
        "percentage": 0.0,
    }

    config_server.kill()  # a real outage: the server process is gone
    for i in range(3):
        during = _ask(followed_chatbot, QUESTIONS[i % 3], f"outage-{i}")
        assert during.status_code == 200
        assert during.json()["versions"]["configs"] == seeded

    # a worker starting while the server is down serves the last-known-good version from disk
    # this chatbot's cache (the session's state directory holds other tests' chatbots' caches too)
    cache = state_home / "config-cache" / f"r-cfg-{config_server.proc.pid}"
    assert json.loads((cache / "prompts.json").read_text())["stable"]["version"] == seeded["prompts"]
    fresh = ConfigClient(config_server.url, cache, ChatbotConfig(), interval=0.2).start()
    try:
        assert fresh.active("anyone").versions == seeded
        assert fresh.status()["prompts"]["source"] == "disk"
    finally:
        fresh.close()


def test_bad_prompt_rolled_back_by_the_judge_then_a_good_change_promoted(
    config_server: ConfigServer, followed_chatbot: ChatbotProcess, state: StateStore, tmp_path: Path
) -> None:
    seeded = _seed(config_server, ROOT / "config")
    store = config_server.store
    params = {
        "profile": "prompts",
        "config_dir": str(_bad_prompts(tmp_path)),
        "url": config_server.url,
        "evaluate": False,
        "strategy": "linear",
        "step": 50,
        "step_seconds": 2,
        "step_max_seconds": 40,
        "bake_seconds": 2,
        "judge": {"min_requests": 20},
    }
    with Traffic(followed_chatbot) as traffic:
        bad = _run(params, state)
        assert bad.state is RunState.ROLLED_BACK, bad.reason
        assert "judge: FAIL on fallback_rate" in (bad.reason or "")
        rollout = store.rollout("prompts")
        assert (rollout.stable, rollout.candidate, rollout.percentage) == (seeded["prompts"], None, 0.0)
        actions = [e["action"] for e in store.history("prompts")]
        assert actions[-2:] == ["rollout", "abort"]

        good = tmp_path / "good"
        shutil.copytree(ROOT / "config", good)
        text = (
            (good / "prompts.yaml")
            .read_text()
            .replace("name the sources you used", "name every source you used")
        )
        (good / "prompts.yaml").write_text(text)
        ok = _run({**params, "config_dir": str(good)}, state)
        assert ok.state is RunState.SUCCEEDED, ok.reason
    assert traffic.sent > 40
    new = store.rollout("prompts").stable
    assert new != seeded["prompts"] and new is not None and new.startswith("prompts-")
    # within a poll interval every session answers with the promoted version
    assert _wait_for(
        lambda: _ask(followed_chatbot, QUESTIONS[0], "after").json()["versions"]["configs"]["prompts"] == new,
        5,
    )


def test_eval_regression_blocks_the_deploy(
    config_server: ConfigServer,
    state: StateStore,
    state_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANGAASSIST_HOME", str(state_home))
    monkeypatch.setenv("MANGAASSIST_ROOT", str(ROOT))
    seeded = _seed(config_server, ROOT / "config")
    run = _run(
        {"profile": "prompts", "config_dir": str(_bad_prompts(tmp_path)), "url": config_server.url}, state
    )
    assert run.state in (RunState.FAILED, RunState.ROLLED_BACK, RunState.ABORTED)
    assert "evaluation regression" in (run.reason or "")
    assert "cites_source" in (run.reason or "")
    with state.transaction() as conn:
        rows = {s.name: s for s in state.steps(conn, run.id)}["evaluate"].detail["rows"]
    returns = [r for r in rows if r["case"] == "returns-window" and r["check"] == "cites_source"]
    assert returns[0]["live"] == 1.0 and returns[0]["candidate"] == 0.0
    assert [v.version for v in config_server.store.versions("prompts")] == [seeded["prompts"]]  # nothing made


def test_two_deploys_of_one_profile_at_once_are_refused(
    config_server: ConfigServer, state: StateStore
) -> None:
    params = {"profile": "flags", "config_dir": str(ROOT / "config"), "url": config_server.url}
    executor = Executor(state)
    policy = load_policy(None).for_run("dev", cd06.NAME)
    first = executor.start(
        cd06.build(params), environment="dev", target=cd06.target("flags"), requester="ann", policy=policy
    )
    with pytest.raises(LockHeld, match=first.id):
        executor.start(
            cd06.build(params), environment="dev", target=cd06.target("flags"), requester="bob", policy=policy
        )
    # another profile is another target: not blocked
    executor.start(
        cd06.build({**params, "profile": "prompts"}),
        environment="dev",
        target=cd06.target("prompts"),
        requester="bob",
        policy=policy,
    )


def test_config_rollback_is_a_locked_audited_run(config_server: ConfigServer, state: StateStore) -> None:
    store = config_server.store
    seeded = _seed(config_server, ROOT / "config")
    content = yaml.safe_load((ROOT / "config" / "flags.yaml").read_text())
    changed = {**content, "version": 2} if "version" in content else {**content, "x_note": "second"}
    second = store.create_version("flags", changed, author="ann").version
    store.promote("flags", second, actor="ann")
    params = {"profile": "flags", "url": config_server.url}
    executor = Executor(state, poll_seconds=0.2)
    policy = load_policy(None).for_run("dev", cd06.ROLLBACK)

    # refused while a deploy of the profile holds the lock
    deploy = executor.start(
        cd06.build({**params, "config_dir": str(ROOT / "config")}),
        environment="dev",
        target=cd06.target("flags"),
        requester="ann",
        policy=load_policy(None).for_run("dev", cd06.NAME),
    )
    with pytest.raises(LockHeld, match=deploy.id):
        executor.start(
            cd06.build_rollback(params),
            environment="dev",
            target=cd06.target("flags"),
            requester="bob",
            policy=policy,
        )
    executor.abort(deploy.id, None, actor="ann", reason="make way for the rollback")

    # no --to: back to the stable version before the current one, recorded with who and which run
    run = executor.run(
        cd06.build_rollback(params),
        environment="dev",
        target=cd06.target("flags"),
        requester="bob",
        policy=policy,
    )
    assert run.effective_state is RunState.SUCCEEDED, run.reason
    assert store.rollout("flags").stable == seeded["flags"]
    last = store.history("flags")[-1]
    assert (last["actor"], last["action"], last["version"]) == ("bob", "promote", seeded["flags"])
    assert run.id in last["reason"]

    # an unknown version fails the run and moves nothing
    bad = executor.run(
        cd06.build_rollback({**params, "to": "nope"}),
        environment="dev",
        target=cd06.target("flags"),
        requester="bob",
        policy=policy,
    )
    assert bad.effective_state is RunState.ABORTED
    assert "no version nope" in (bad.reason or "")
    assert store.rollout("flags").stable == seeded["flags"]
