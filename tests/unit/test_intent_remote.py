"""``HttpIntentClient``'s decisions: when it trusts the endpoint, when it falls back and why.

Pure unit tests: the endpoint is an ``httpx.MockTransport`` (the test double httpx ships), the
fallback a real ``LocalIntentClient`` trained on a few examples with the hashing embedder.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.entities import EntitySignals
from mangaassist.chatbot.intent import Example, LocalIntentClient, train
from mangaassist.chatbot.intent_remote import (
    Breaker,
    FallbackReason,
    HttpIntentClient,
    judge_response,
    reason_for,
)
from mangaassist.chatbot.settings import _intent_timeout
from mangaassist.core.errors import ConfigError
from mangaassist.platform.embeddings import HashingEmbedder

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [
    Example("where is my order", "order_status"),
    Example("track my package please", "order_status"),
    Example("I want to talk to a human", "human_handoff"),
    Example("connect me with an agent", "human_handoff"),
]
GOOD = {"intent": "chitchat", "confidence": 0.9, "scores": {"chitchat": 0.9}, "model_version": "intent-v2"}


@pytest.fixture(scope="module")
def champion() -> LocalIntentClient:
    emb = HashingEmbedder()
    catalog = Catalog.load(ROOT / "data" / "catalog.jsonl")
    return LocalIntentClient(
        train(EXAMPLES, emb, EntitySignals(catalog)), emb, "intent-v1", EntitySignals(catalog)
    )


def _client(
    champion: LocalIntentClient, handler: Any, breaker: Breaker | None = None
) -> tuple[HttpIntentClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        result: httpx.Response = handler(request)
        return result

    async def arecord(request: httpx.Request) -> httpx.Response:
        return record(request)

    client = HttpIntentClient(
        "http://model.test",
        champion,
        timeout_s=0.2,
        breaker=breaker,
        transport=httpx.MockTransport(arecord),
        sync_transport=httpx.MockTransport(record),
    )
    return client, seen


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, {"error": "x"}, FallbackReason.SERVER_ERROR),
        (503, None, FallbackReason.SERVER_ERROR),
        (422, {"error": "embedding"}, FallbackReason.REJECTED),
        (200, None, FallbackReason.BAD_BODY),
        (200, [1, 2], FallbackReason.BAD_BODY),
        (200, {**GOOD, "intent": "weather"}, FallbackReason.BAD_BODY),
        (200, {**GOOD, "confidence": 1.5}, FallbackReason.BAD_BODY),
        (200, {**GOOD, "confidence": "high"}, FallbackReason.BAD_BODY),
        (200, {**GOOD, "confidence": True}, FallbackReason.BAD_BODY),
        (200, {**GOOD, "model_version": ""}, FallbackReason.BAD_BODY),
        (200, {**GOOD, "scores": {"chitchat": "a lot"}}, FallbackReason.BAD_BODY),
    ],
)
def test_unusable_answers_are_named(status: int, body: Any, expected: FallbackReason) -> None:
    assert judge_response(status, body) is expected


def test_a_good_answer_is_the_prediction_with_its_model_version() -> None:
    prediction = judge_response(200, GOOD)
    assert not isinstance(prediction, FallbackReason)
    assert (prediction.intent, prediction.confidence, prediction.model) == ("chitchat", 0.9, "intent-v2")


def test_transport_errors_map_to_timeout_or_connect() -> None:
    request = httpx.Request("POST", "http://x")
    assert reason_for(httpx.ReadTimeout("slow", request=request)) is FallbackReason.TIMEOUT
    assert reason_for(TimeoutError()) is FallbackReason.TIMEOUT
    assert reason_for(httpx.ConnectError("refused", request=request)) is FallbackReason.CONNECT
    assert reason_for(httpx.RemoteProtocolError("reset", request=request)) is FallbackReason.CONNECT


def test_remote_answer_is_used_and_carries_text_embedding_and_sticky_session(
    champion: LocalIntentClient,
) -> None:
    client, seen = _client(champion, lambda r: httpx.Response(200, json=GOOD))
    vector = HashingEmbedder().embed(["hi there"])[0]
    prediction = asyncio.run(client.aclassify("hi there", vector, session_id="conv-7"))
    assert prediction.intent == "chitchat" and prediction.model == "intent-v2"
    assert client.version == "intent-v2" and client.fallbacks == {}
    sent = json.loads(seen[0].content)
    assert sent["text"] == "hi there" and sent["embedder"] == "hashing-v1"
    assert np.allclose(sent["embedding"], vector)
    assert seen[0].headers["x-session-id"] == "conv-7"
    assert seen[0].url.path == "/v1/intent"


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (lambda r: httpx.Response(500, json={"error": "boom"}), "server_error"),
        (lambda r: httpx.Response(200, content=b"not json"), "bad_body"),
        (lambda r: httpx.Response(422, json={"error": "embedding"}), "rejected"),
    ],
)
def test_failures_answer_with_the_champion_and_are_counted(
    champion: LocalIntentClient, handler: Any, reason: str
) -> None:
    client, _ = _client(champion, handler)
    counted: list[str] = []
    client.on_fallback = lambda r: counted.append(r.value)
    prediction = asyncio.run(client.aclassify("where is my order", session_id="s"))
    assert prediction.intent == "order_status" and prediction.model == "intent-v1"
    assert client.version == "intent-v1"
    assert client.fallbacks == {reason: 1} and counted == [reason]


def test_connection_refused_falls_back(champion: LocalIntentClient) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _ = _client(champion, refuse)
    assert asyncio.run(client.aclassify("I want to talk to a human")).intent == "human_handoff"
    assert client.classify("I want to talk to a human").intent == "human_handoff"
    assert client.fallbacks == {"connect": 2}


def test_a_hanging_endpoint_costs_at_most_the_deadline(champion: LocalIntentClient) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=GOOD)

    client = HttpIntentClient(
        "http://model.test", champion, timeout_s=0.1, transport=httpx.MockTransport(hang)
    )

    async def run() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await client.aclassify("track my package please")
        return loop.time() - t0

    elapsed = asyncio.run(run())
    assert elapsed < 1.0
    assert client.fallbacks == {"timeout": 1}


def test_breaker_skips_the_endpoint_after_repeated_failures_then_probes_again(
    champion: LocalIntentClient,
) -> None:
    status = {"code": 500}
    breaker = Breaker(open_after=3, cooldown_s=60.0)
    client, seen = _client(champion, lambda r: httpx.Response(status["code"], json=GOOD), breaker)
    for _ in range(5):
        asyncio.run(client.aclassify("where is my order"))
    assert len(seen) == 3  # the 4th and 5th never reached the endpoint
    assert client.fallbacks == {"server_error": 3, "circuit_open": 2}
    breaker.open_until = 0.0  # the cool-down is over
    status["code"] = 200
    assert asyncio.run(client.aclassify("where is my order")).model == "intent-v2"
    assert breaker.failures == 0 and len(seen) == 4


def test_bad_settings_are_refused_with_the_variable_named(champion: LocalIntentClient) -> None:
    with pytest.raises(ConfigError, match="MANGAASSIST_INTENT_URL"):
        HttpIntentClient("model:8081", champion)
    with pytest.raises(ConfigError, match="MANGAASSIST_INTENT_TIMEOUT_MS"):
        _intent_timeout("fast")
    with pytest.raises(ConfigError, match=r"1\.\.60000"):
        _intent_timeout("0")
    assert _intent_timeout(None) == 0.3 and _intent_timeout("150") == 0.15
