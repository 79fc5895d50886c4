"""``HttpIntentClient``: the chatbot's ``IntentClient`` when the intent model runs as its own service.

The chatbot sets it up when ``MANGAASSIST_INTENT_URL`` is set (``Runtime.load``); on the local
platform the control plane sets that variable to the ``intent-model`` service's router URL, so the
model gets weights, header pins and shadow traffic like any service. Each call posts the text and the
embedding the chatbot already computed to ``POST /v1/intent`` (``chatbot.model_server``), over one
keep-alive connection pool, with a short deadline (``MANGAASSIST_INTENT_TIMEOUT_MS``, 300 ms by
default). The conversation's session id goes in ``X-Session-Id``, the router's sticky key, so a
conversation stays on the model revision it started on. Each call is a client span
(``intent-model POST /v1/intent``, ``platform.tracing``) under the chat's server span, sent as the
request's ``traceparent`` so the model's router and server join the chat's trace; a fallback marks
the span as an error with its reason.

When the endpoint does not give a usable answer the client answers with the **champion loaded in
process at start** (a ``LocalIntentClient``): a customer never sees an error because the model
service is down, slow or deploying a bad revision. Every such answer is counted by reason
(``FallbackReason``; the chatbot exports ``mangaassist_intent_fallback_total{reason}``), which is
the "downstream fallback rate" a model canary is judged on. Deciding is kept apart from doing:
``judge_response`` and ``reason_for`` are pure and unit-tested; ``Breaker`` is the only state.

A simple circuit breaker keeps a dead or hanging endpoint from costing every chat its full
timeout: after ``open_after`` consecutive failures the client answers in process at once
(reason ``circuit_open``) for ``cooldown_s``, then lets calls through again to probe.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from mangaassist.chatbot.embeddings import Vector
from mangaassist.chatbot.intent import IntentPrediction, LocalIntentClient
from mangaassist.core.errors import ConfigError
from mangaassist.core.intents import INTENTS
from mangaassist.platform.tracing import get_tracer, inject

log = logging.getLogger("mangaassist.chatbot")

SESSION_HEADER = "X-Session-Id"
MODEL_HEADER = "X-Model-Version"
DEFAULT_TIMEOUT_S = 0.3


class FallbackReason(StrEnum):
    """Why an answer came from the in-process champion instead of the endpoint."""

    TIMEOUT = "timeout"
    """No complete answer within the deadline (a hanging or overloaded endpoint)."""
    CONNECT = "connect"
    """The connection failed or broke (endpoint or router down, connection reset)."""
    SERVER_ERROR = "server_error"
    """A 5xx: the model failed, or the router had no ready revision (503) or no worker (502)."""
    REJECTED = "rejected"
    """A 4xx: the endpoint refused our request (e.g. an embedding from another model); a bug here."""
    BAD_BODY = "bad_body"
    """A 200 whose body is not a prediction (not JSON, unknown intent, confidence out of 0..1)."""
    CIRCUIT_OPEN = "circuit_open"
    """Recent calls kept failing: not tried at all until the breaker's cool-down ends."""


def reason_for(exc: Exception) -> FallbackReason:
    """The fallback reason of a transport exception."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return FallbackReason.TIMEOUT
    return FallbackReason.CONNECT


def judge_response(status: int, body: Any) -> IntentPrediction | FallbackReason:
    """The endpoint's prediction, or why it cannot be used. ``body`` is the decoded JSON (or None)."""
    if status >= 500:
        return FallbackReason.SERVER_ERROR
    if status != 200:
        return FallbackReason.REJECTED
    if not isinstance(body, Mapping):
        return FallbackReason.BAD_BODY
    intent, confidence, version = body.get("intent"), body.get("confidence"), body.get("model_version")
    scores = body.get("scores", {})
    if intent not in INTENTS or not isinstance(version, str) or not version:
        return FallbackReason.BAD_BODY
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return FallbackReason.BAD_BODY
    if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0) or not isinstance(scores, Mapping):
        return FallbackReason.BAD_BODY
    try:
        clean = {str(k): float(v) for k, v in scores.items()}
    except (TypeError, ValueError):
        return FallbackReason.BAD_BODY
    return IntentPrediction(str(intent), float(confidence), clean, version)


@dataclass
class Breaker:
    """Consecutive failures open it for ``cooldown_s``; any success closes it."""

    open_after: int = 5
    cooldown_s: float = 2.0
    failures: int = 0
    open_until: float = 0.0

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.failures = 0
            self.open_until = 0.0
            return
        self.failures += 1
        if self.failures >= self.open_after:
            self.open_until = now + self.cooldown_s


class HttpIntentClient:
    """``IntentClient`` over HTTP with a deadline and an in-process fallback. See the module doc."""

    def __init__(
        self,
        url: str,
        fallback: LocalIntentClient,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        breaker: Breaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"MANGAASSIST_INTENT_URL={url!r}: expected an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.breaker = breaker or Breaker()
        self.on_fallback: Callable[[FallbackReason], None] | None = None
        """Called once per fallback answer (the chatbot counts them in its Prometheus metrics)."""
        self.fallbacks: Counter[str] = Counter()
        self.remote_answers = 0
        self._version = fallback.version
        self._embedder_name = fallback.embedder.name
        self._transport = transport
        self._aclient: httpx.AsyncClient | None = None  # made on first use, on the serving loop
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s, transport=sync_transport)
        self._logged: dict[str, float] = {}
        self._tracer: Tracer | None = None  # on first use: after the app set up tracing

    @property
    def version(self) -> str:
        return self._version

    def _payload(self, text: str, embedding: Vector | None) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text, "embedder": self._embedder_name}
        if embedding is not None:
            body["embedding"] = [float(x) for x in embedding]
        return body

    @staticmethod
    def _headers(session_id: str | None) -> dict[str, str]:
        """The session (the router's sticky key) and the current span as ``traceparent``."""
        headers = {SESSION_HEADER: session_id} if session_id else {}
        inject(headers)
        return headers

    def classify(self, text: str, embedding: Vector | None = None) -> IntentPrediction:
        """Blocking variant (warm-up, tools); same decisions as ``aclassify``."""
        now = time.monotonic()
        if not self.breaker.allows(now):
            return self._fall_back(FallbackReason.CIRCUIT_OPEN, text, embedding)
        try:
            r = self._client.post(
                "/v1/intent", json=self._payload(text, embedding), headers=self._headers(None)
            )
            outcome = judge_response(r.status_code, _json(r))
        except httpx.HTTPError as exc:
            outcome = reason_for(exc)
        return self._settle(outcome, text, embedding)

    async def aclassify(
        self, text: str, embedding: Vector | None = None, *, session_id: str | None = None
    ) -> IntentPrediction:
        now = time.monotonic()
        if not self.breaker.allows(now):
            return self._fall_back(FallbackReason.CIRCUIT_OPEN, text, embedding)
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(
                base_url=self.url,
                timeout=self.timeout_s,
                transport=self._transport,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
        if self._tracer is None:
            self._tracer = get_tracer("mangaassist.chatbot.intent_remote")
        with self._tracer.start_as_current_span(
            "intent-model POST /v1/intent",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": "POST", "url.full": f"{self.url}/v1/intent"},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                async with asyncio.timeout(self.timeout_s):  # a deadline for the whole call, not per read
                    r = await self._aclient.post(
                        "/v1/intent", json=self._payload(text, embedding), headers=self._headers(session_id)
                    )
                span.set_attribute("http.response.status_code", r.status_code)
                outcome = judge_response(r.status_code, _json(r))
            except (httpx.HTTPError, TimeoutError) as exc:
                outcome = reason_for(exc)
            if isinstance(outcome, FallbackReason):
                span.set_status(Status(StatusCode.ERROR, f"fallback: {outcome.value}"))
                span.set_attribute("mangaassist.fallback", outcome.value)
            else:
                span.set_attribute("mangaassist.model", outcome.model)
        return self._settle(outcome, text, embedding)

    def _settle(
        self, outcome: IntentPrediction | FallbackReason, text: str, embedding: Vector | None
    ) -> IntentPrediction:
        now = time.monotonic()
        if isinstance(outcome, FallbackReason):
            self.breaker.record(False, now)
            return self._fall_back(outcome, text, embedding)
        self.breaker.record(True, now)
        self.remote_answers += 1
        self._version = outcome.model
        return outcome

    def _fall_back(self, reason: FallbackReason, text: str, embedding: Vector | None) -> IntentPrediction:
        self.fallbacks[reason.value] += 1
        if self.on_fallback is not None:
            self.on_fallback(reason)
        now = time.monotonic()
        if now - self._logged.get(reason.value, -1e9) > 10.0:  # one line per reason per 10 s
            self._logged[reason.value] = now
            log.warning("intent endpoint %s: %s; answering with the in-process champion", self.url, reason)
        prediction = self.fallback.classify(text, embedding)
        self._version = prediction.model
        return prediction

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        self._client.close()
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
