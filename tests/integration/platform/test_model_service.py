"""The intent model endpoint as a service of the real local platform (control plane, router, workers).

Two model revisions behind one router: weights split new conversations, a conversation stays on one
model revision, a header pins a request; then shadow revisions that fail (500s) or hang never change
what a user gets: the chatbot (a real process asking the model through the router) answers exactly
as it did without a shadow, and never falls back, while the router records the shadow's failures.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mangaassist.core.artifact import Artifact
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import PIN_HEADER, Revision
from mangaassist.platform.local.client import LocalCompute, start_control_plane, stop_control_plane
from mangaassist.platform.settings import PlatformSettings, load_settings
from tests.integration.test_model_endpoint import make_package

ROOT = Path(__file__).parents[3]
APP = "mangaassist.chatbot.model_server:create_app"
MESSAGES = (
    "where is my order MA-100001?",
    "I loved Berserk, recommend something similar",
    "how long does shipping take?",
    "hello there!",
    "I want to talk to a human",
    "do you have Frieren volume 5?",
)


@dataclass
class ModelPlane:
    settings: PlatformSettings
    compute: LocalCompute
    artifact: Artifact
    packages: dict[str, Path]
    url: str

    def revision(self, name: str, package: str, **env: str) -> Revision:
        return Revision(
            name,
            self.artifact,
            APP,
            {
                "MANGAASSIST_ROOT": str(ROOT),
                "MANGAASSIST_EMBEDDER": "hashing",
                "MANGAASSIST_MODEL_PACKAGE": str(self.packages[package]),
                **env,
            },
            1,
        )


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelPlane]:
    directory = tmp_path_factory.mktemp("model-platform")
    config = directory / "mangaassist.toml"
    config.write_text(
        "[environments.test]\nprovider = 'local'\nhome = 'home'\ncontrol_port = 0\n"
        "[environments.test.services.intent-model]\n"
        f"app = '{APP}'\nrouter_port = 0\nready_timeout_s = 60\nshadow_timeout_s = 1\n"
    )
    settings = load_settings("test", config)
    packages = {
        "v1": make_package(directory / "packages", "intent-v1"),
        "v2": make_package(directory / "packages", "intent-v2", share=0.6),
    }
    start_control_plane(settings, config, wait_s=30)
    compute = LocalCompute(settings.run_dir)
    try:
        artifact = pack_source(ROOT / "src", settings.home / "artifacts")
        yield ModelPlane(settings, compute, artifact, packages, compute.url("intent-model"))
    finally:
        compute.close()
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left after stop: {report.left}"


def _ask(client: httpx.Client, text: str, session: str | None = None, **headers: str) -> httpx.Response:
    if session:
        headers["X-Session-Id"] = session
    return client.post("/v1/intent", json={"text": text}, headers=headers)


def test_two_model_revisions_split_stick_and_pin(plane: ModelPlane) -> None:
    for name, package in (("r1", "v1"), ("r2", "v2")):
        status = plane.compute.deploy("intent-model", plane.revision(name, package), timeout_s=60)
        assert status.health.value == "healthy", status.reason
    plane.compute.set_weights("intent-model", {"r1": 50, "r2": 50})
    with httpx.Client(base_url=plane.url, timeout=10) as client:
        seen = {}
        for i in range(40):
            r = _ask(client, MESSAGES[i % len(MESSAGES)], session=f"conv-{i}")
            assert r.status_code == 200, r.text
            seen[f"conv-{i}"] = (r.headers["x-mangaassist-revision"], r.json()["model_version"])
        assert {v for v in seen.values()} == {("r1", "intent-v1"), ("r2", "intent-v2")}
        for session in ("conv-3", "conv-4", "conv-5"):  # a conversation stays on its model revision
            for text in MESSAGES:
                r = _ask(client, text, session=session)
                assert (r.headers["x-mangaassist-revision"], r.json()["model_version"]) == seen[session]
        pin = plane.compute.pin("intent-model", "r2")
        assert pin.url == plane.url
        pinned = _ask(client, "hello", **pin.headers)
        assert pinned.json()["model_version"] == "intent-v2"
        assert pinned.headers["x-mangaassist-revision"] == "r2"
    stats = plane.compute.stats("intent-model")["revisions"]
    assert stats["r1"]["requests"] > 0 and stats["r2"]["requests"] > 0
    assert stats["r1"]["failed"] == 0 and stats["r2"]["failed"] == 0
    assert PIN_HEADER.lower() == "x-mangaassist-revision"


def _chat_all(client: httpx.Client, tag: str) -> list[tuple[int, str, str, float, str]]:
    """(status, answer, intent, confidence, model) per message; hand-off ticket numbers masked."""
    out = []
    for i, text in enumerate(MESSAGES * 2):
        r = client.post("/v1/chat", json={"session_id": f"{tag}-{i}-{uuid.uuid4().hex[:4]}", "message": text})
        body: dict[str, Any] = r.json()
        answer = re.sub(r"HT-[0-9A-F]+", "HT-?", body.get("answer", ""))
        out.append((r.status_code, answer, body["intent"], body["confidence"], body["versions"]["model"]))
    return out


def _fallbacks(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mangaassist_intent_fallback_total{")
    )


def test_a_failing_or_hanging_shadow_never_changes_the_users_answer(
    plane: ModelPlane, tmp_path: Path
) -> None:
    from mangaassist.chatbot.launcher import ChatbotProcess

    compute = plane.compute
    if "r1" not in {r.name for r in compute.status("intent-model").revisions}:
        compute.deploy("intent-model", plane.revision("r1", "v1"), timeout_s=60)
    compute.set_weights("intent-model", {"r1": 100})
    for name, fault in (("s500", "error_rate=1"), ("shang", "latency_ms=30000")):
        status = compute.deploy(
            "intent-model", plane.revision(name, "v2", MANGAASSIST_FAULT=fault), timeout_s=60
        )
        assert status.health.value == "healthy", status.reason
    env = {
        "MANGAASSIST_ROOT": str(ROOT),
        "MANGAASSIST_HOME": str(tmp_path),
        "MANGAASSIST_EMBEDDER": "hashing",
        "MANGAASSIST_REVISION": "chat",
        "MANGAASSIST_FAULT": "",
        "MANGAASSIST_INTENT_URL": plane.url,
        "MANGAASSIST_INTENT_TIMEOUT_MS": "500",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    }
    with (
        ChatbotProcess(env=env, log_path=tmp_path / "chatbot.log", ready_timeout_s=120) as chatbot,
        httpx.Client(base_url=chatbot.url, timeout=10) as client,
    ):
        baseline = _chat_all(client, "base")
        assert all(status == 200 and model == "intent-v1" for status, *_, model in baseline)
        fallbacks = _fallbacks(chatbot.url)
        for shadow in ("s500", "shang"):
            compute.set_shadow("intent-model", shadow, 1.0)
            started = time.monotonic()
            shadowed = _chat_all(client, shadow)
            elapsed = time.monotonic() - started
            compute.clear_shadow("intent-model")
            assert shadowed == baseline, f"shadow {shadow} changed the answers"
            assert elapsed < 10, f"shadow {shadow} slowed the users down: {elapsed:.1f}s"
        assert _fallbacks(chatbot.url) == fallbacks  # the primary always answered in time
    deadline = time.monotonic() + 5  # the hanging mirrors time out after shadow_timeout_s (1 s)
    while time.monotonic() < deadline:
        shadow_stats = compute.stats("intent-model")["shadow"]
        if shadow_stats.get("shang", {}).get("errors", {}).get("timeout", 0) > 0:
            break
        time.sleep(0.2)
    failing = shadow_stats["s500"]
    assert failing["statuses"].get("500", 0) >= len(MESSAGES)
    assert shadow_stats["shang"]["errors"].get("timeout", 0) >= 1
