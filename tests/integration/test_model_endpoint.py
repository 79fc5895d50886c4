"""The intent model endpoint (``chatbot.model_server``) as a real uvicorn process on a loopback port,
and the chatbot asking it through ``HttpIntentClient``: answers, readiness, metrics, validation, and
a killed endpoint that the chatbot survives on its in-process champion (counted in its /metrics).

A small package is trained here with the hashing embedder (both processes use it, for speed).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.entities import EntitySignals
from mangaassist.chatbot.intent import load_examples, save_package, train
from mangaassist.chatbot.launcher import ChatbotProcess, ModelEndpointProcess
from mangaassist.platform.embeddings import HashingEmbedder

ROOT = Path(__file__).parents[2]
VERSION = "intent-endpoint-test"


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def make_package(directory: Path, version: str, share: float = 1.0) -> Path:
    """A model package trained on (a share of) the real training set with the hashing embedder."""
    emb = HashingEmbedder()
    examples = load_examples(ROOT / "ml" / "intents" / "train.jsonl")
    examples = examples[: max(20, int(len(examples) * share))] if share < 1 else examples
    model = train(examples, emb, EntitySignals(Catalog.load(ROOT / "data" / "catalog.jsonl")))
    return save_package(model, directory / version, {"version": version, "embedder": emb.name})


def endpoint_env(home: Path, package: Path, revision: str = "m1", **extra: str) -> dict[str, str]:
    return {
        "MANGAASSIST_ROOT": str(ROOT),
        "MANGAASSIST_HOME": str(home),
        "MANGAASSIST_EMBEDDER": "hashing",
        "MANGAASSIST_MODEL_PACKAGE": str(package),
        "MANGAASSIST_REVISION": revision,
        "MANGAASSIST_FAULT": "",
        **extra,
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-endpoint")


@pytest.fixture(scope="module")
def package(home: Path) -> Path:
    return make_package(home / "packages", VERSION)


@pytest.fixture(scope="module")
def endpoint(home: Path, package: Path) -> Iterator[ModelEndpointProcess]:
    with ModelEndpointProcess(
        env=endpoint_env(home, package), log_path=home / "endpoint.log", ready_timeout_s=60
    ) as server:
        yield server


def test_readyz_reports_the_package_it_serves(endpoint: ModelEndpointProcess, package: Path) -> None:
    ready = endpoint.readiness
    assert ready["ready"] is True and ready["model_version"] == VERSION
    assert ready["source"] == str(package.resolve()) and ready["embedder"] == "hashing-v1"
    assert ready["dim"] == 256 and ready["low_confidence_threshold"] == 0.3
    assert httpx.get(f"{endpoint.url}/healthz").json() == {"status": "ok", "revision": "m1"}


def test_intent_answers_with_version_headers_and_the_same_with_an_embedding(
    endpoint: ModelEndpointProcess,
) -> None:
    text = "where is my order MA-100001?"
    r = httpx.post(f"{endpoint.url}/v1/intent", json={"text": text})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["intent"] == "order_status" and body["model_version"] == VERSION
    assert 0 < body["confidence"] <= 1 and set(body["scores"]) >= {"order_status", "chitchat"}
    assert r.headers["x-model-version"] == VERSION
    assert r.headers["x-mangaassist-revision"] == "m1"
    assert r.headers["x-mangaassist-intent"] == "order_status"
    vector = HashingEmbedder().embed([text])[0]
    with_vec = httpx.post(
        f"{endpoint.url}/v1/intent",
        json={"text": text, "embedding": vector.tolist(), "embedder": "hashing-v1"},
    ).json()
    assert with_vec["intent"] == body["intent"]
    assert with_vec["confidence"] == pytest.approx(body["confidence"], abs=1e-3)


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"text": "hi", "embedding": [0.1] * 12}, "embedding", "expected 256 numbers"),
        ({"text": "hi", "embedder": "all-MiniLM-L6-v2"}, "embedder", "needs embeddings from 'hashing-v1'"),
        ({"text": "   "}, "text", "at least 1 character"),
        ({"embedding": [0.0] * 256}, "text", "Field required"),
        ({"text": "hi", "embedding": ["x"] * 256}, "embedding.0", "valid number"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    endpoint: ModelEndpointProcess, payload: dict[str, object], field: str, message: str
) -> None:
    r = httpx.post(f"{endpoint.url}/v1/intent", json=payload)
    assert r.status_code == 422, r.text
    body = r.json()
    assert field in [f["field"] for f in body["fields"]]
    assert message in body["error"] and body["error"].startswith("invalid request: ")


def test_malformed_json_is_400(endpoint: ModelEndpointProcess) -> None:
    r = httpx.post(
        f"{endpoint.url}/v1/intent", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json() == {"error": "malformed JSON body"}


def test_metrics_count_requests_latency_and_low_confidence_by_model_version(
    endpoint: ModelEndpointProcess,
) -> None:
    before = _metrics(endpoint.url)
    key = ("mangaassist_model_requests_total", (("model_version", VERSION), ("status", "200")))
    for text in ("hello there", "do you have Berserk volume 2?", "qwzx plmk"):
        assert httpx.post(f"{endpoint.url}/v1/intent", json={"text": text}).status_code == 200
    after = _metrics(endpoint.url)
    assert after[key] - before.get(key, 0) == 3
    hist = ("mangaassist_model_latency_seconds_count", (("model_version", VERSION),))
    assert after[hist] - before.get(hist, 0) == 3
    assert after[("mangaassist_model_low_confidence_threshold", ())] == 0.3
    info = (("embedder", "hashing-v1"), ("model_version", VERSION), ("revision", "m1"))
    assert after[("mangaassist_model_info", info)] == 1
    assert after[("mangaassist_model_ready", ())] == 1
    assert after[("mangaassist_requests_total", (("endpoint", "/v1/intent"), ("status", "200")))] >= 3


def test_low_confidence_uses_the_config_threshold_and_is_flagged_for_the_router(
    home: Path, package: Path, endpoint: ModelEndpointProcess
) -> None:
    config = home / "strict.yaml"
    text = (ROOT / "config" / "chatbot.yaml").read_text()
    assert "min_confidence: 0.3" in text
    config.write_text(text.replace("min_confidence: 0.3", "min_confidence: 0.999"))
    env = endpoint_env(home, package, revision="strict", MANGAASSIST_CONFIG=str(config))
    with ModelEndpointProcess(env=env, ready_timeout_s=60) as strict:
        assert strict.readiness["low_confidence_threshold"] == 0.999
        r = httpx.post(f"{strict.url}/v1/intent", json={"text": "is it"})
        assert r.json()["low_confidence"] is True and r.headers["x-mangaassist-fallback"] == "1"
        low = _metrics(strict.url)[("mangaassist_model_low_confidence_total", (("model_version", VERSION),))]
        assert low == 1
    sure = httpx.post(f"{endpoint.url}/v1/intent", json={"text": "where is my order MA-100001?"})
    assert sure.json()["low_confidence"] is False and "x-mangaassist-fallback" not in sure.headers


def test_a_fault_revision_fails_as_configured(home: Path, package: Path) -> None:
    env = endpoint_env(home, package, revision="bad", MANGAASSIST_FAULT="error_rate=1")
    with ModelEndpointProcess(env=env, ready_timeout_s=60) as bad:
        r = httpx.post(f"{bad.url}/v1/intent", json={"text": "hello"})
        assert r.status_code == 500 and r.headers["x-model-version"] == VERSION
        assert r.headers["x-mangaassist-revision"] == "bad"
        errors = _metrics(bad.url)[
            ("mangaassist_model_errors_total", (("kind", "fault"), ("model_version", VERSION)))
        ]
        assert errors == 1
        assert httpx.get(f"{bad.url}/readyz").json()["fault"] == "error_rate=1"


def test_a_bad_package_keeps_the_endpoint_unready_with_the_reason(home: Path) -> None:
    env = endpoint_env(home, home / "no-such-package")
    server = ModelEndpointProcess(env=env, ready_timeout_s=60)
    with pytest.raises(Exception, match="not a model package"), server:
        pass
    assert server.proc is not None and server.proc.poll() is not None


def test_the_chatbot_uses_the_endpoint_and_survives_its_death_on_the_champion(
    home: Path, package: Path
) -> None:
    champion = make_package(home / "packages", "intent-champion", share=0.8)
    with ModelEndpointProcess(env=endpoint_env(home, package, revision="m2"), ready_timeout_s=60) as model:
        chat_env = {
            "MANGAASSIST_MODEL_PACKAGE": str(champion),  # the fallback
            "MANGAASSIST_ROOT": str(ROOT),
            "MANGAASSIST_HOME": str(home),
            "MANGAASSIST_EMBEDDER": "hashing",
            "MANGAASSIST_REVISION": "c1",
            "MANGAASSIST_FAULT": "",
            "MANGAASSIST_INTENT_URL": model.url,
            "MANGAASSIST_INTENT_TIMEOUT_MS": "300",
        }
        with ChatbotProcess(env=chat_env, log_path=home / "chatbot.log", ready_timeout_s=120) as chatbot:
            client = httpx.Client(base_url=chatbot.url, timeout=10)
            first = client.post(
                "/v1/chat", json={"session_id": "s-1", "message": "where is my order MA-100001?"}
            )
            assert first.status_code == 200, first.text
            assert first.json()["versions"]["model"] == VERSION  # the endpoint answered
            base = _metrics(chatbot.url)
            remote_before = _metrics(model.url)[
                ("mangaassist_model_requests_total", (("model_version", VERSION), ("status", "200")))
            ]
            assert remote_before >= 1

            model.proc.kill()  # type: ignore[union-attr]
            model.proc.wait()  # type: ignore[union-attr]
            statuses, models = [], set()
            for i in range(12):
                r = client.post(
                    "/v1/chat",
                    json={"session_id": f"s-{uuid.uuid4().hex[:6]}", "message": f"hello there {i}"},
                )
                statuses.append(r.status_code)
                models.add(r.json()["versions"]["model"])
            assert statuses == [200] * 12  # not one failed chat
            assert models == {"intent-champion"}  # what answered: the in-process champion
            after = _metrics(chatbot.url)
            fallbacks = {
                dict(labels)["reason"]: value - base.get((name, labels), 0)
                for (name, labels), value in after.items()
                if name == "mangaassist_intent_fallback_total"
            }
            assert sum(fallbacks.values()) == 12
            assert fallbacks["connect"] >= 1  # then the breaker stops trying for a while
            assert set(k for k, v in fallbacks.items() if v) <= {"connect", "circuit_open"}
            client.close()
