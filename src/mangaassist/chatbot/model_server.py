"""The intent model endpoint: one model package served over HTTP. ``create_app`` is the uvicorn factory.

On the local platform it runs as the service ``intent-model`` (``mangaassist.toml``), on the same
``Compute`` and router as the chatbot, so a model revision gets weights, header pins, sticky
conversations and shadow traffic; the chatbot asks it through ``HttpIntentClient``.

The model: ``MANGAASSIST_MODEL_PACKAGE`` (a package directory written by ``intent.save_package``,
checked against this worker's embedder), else the in-process default the chatbot uses without an
endpoint (``intent.load_or_train``, cached under ``HOME/models``), so ``mangaassist up`` works with
no registry. Other settings are the chatbot's (``chatbot.settings``): ``MANGAASSIST_EMBEDDER``,
``MANGAASSIST_REVISION``, ``MANGAASSIST_FAULT`` (errors and latency on ``/v1/intent`` only, for
drills of a bad model revision), and the low-confidence threshold is ``intent.min_confidence`` of
the chatbot config (below it the chatbot gives its "not sure" reply).

Endpoints:

* ``POST /v1/intent`` ``{"text", "embedding"?, "embedder"?}`` ->
  ``{"intent", "confidence", "scores", "model_version", "low_confidence"}``. ``embedding`` (the
  caller's vector of the text; the chatbot has it already) skips re-embedding; its length must be the
  embedder's dimension, and ``embedder``, when given, must name this worker's embedding model (vectors
  of another model would be classified as nonsense, silently). Bad input: 422 naming the field (400
  for a body that is not JSON), like the chatbot.
* ``GET /healthz`` (the process is up), ``GET /readyz`` (the model is loaded and warmed up),
  ``GET /metrics`` (Prometheus, per model version: requests by status, errors by kind, latency
  histogram, low-confidence answers, and the threshold as a gauge).

Response headers: ``X-Model-Version``, ``X-MangaAssist-Revision`` (the chatbot's ``RevisionHeader``
middleware), ``X-MangaAssist-Intent`` (the router compares a shadow's intent with the primary's), and
``X-MangaAssist-Fallback: 1`` on a low-confidence answer: that is the answer on which the chatbot
falls back to "not sure", so the router's per-revision ``fallback`` count *is* the model's
low-confidence rate that a model canary is judged on.

Traces: like the chatbot (``chatbot.app``), service ``mangaassist-intent-model``: a server span per
request under the caller's ``traceparent`` (the chatbot's client span, through the router), with the
model version, the intent and the low-confidence flag; ``X-MangaAssist-Trace-Id`` on the answer;
``trace_id`` in every log record.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mangaassist.chatbot.app import (
    MAX_MESSAGE,
    NO_NATIVE_TELEMETRY,
    RevisionHeader,
    invalid_request,
    not_ready_response,
)
from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.config import load_config
from mangaassist.chatbot.embeddings import BatchingEmbedder, make_embedder
from mangaassist.chatbot.emf import EmfWriter
from mangaassist.chatbot.faults import FaultPlan
from mangaassist.chatbot.intent import LocalIntentClient, load_or_train, load_package
from mangaassist.chatbot.settings import Settings
from mangaassist.chatbot.warmup import MESSAGES
from mangaassist.platform.tracing import TraceMiddleware, setup_tracing, trace_logging

log = logging.getLogger("mangaassist.model_server")

PACKAGE_ENV = "MANGAASSIST_MODEL_PACKAGE"
SERVICE_NAME = "mangaassist-intent-model"
"""The endpoint's ``service.name`` in traces."""
KNOWN_PATHS: frozenset[str] = frozenset({"/v1/intent", "/healthz", "/readyz", "/metrics"})
MAX_DIM = 4096

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_MESSAGE)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class IntentRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: Text
    embedding: list[Number] | None = Field(default=None, min_length=1, max_length=MAX_DIM)
    embedder: str | None = None
    """The embedding model ``embedding`` came from; checked against ours when given."""


class IntentResponse(BaseModel):
    intent: str
    confidence: float
    scores: dict[str, float]
    model_version: str
    low_confidence: bool


class ModelMetrics:
    """The endpoint's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(  # by RevisionHeader: every HTTP request, by endpoint
            "mangaassist_requests_total", "HTTP requests", ["endpoint", "status"], registry=r
        )
        self.predictions = Counter(
            "mangaassist_model_requests_total",
            "Classification requests by model version and status",
            ["model_version", "status"],
            registry=r,
        )
        self.errors = Counter(
            "mangaassist_model_errors_total",
            "Failed classification requests (invalid input, injected fault, internal)",
            ["model_version", "kind"],
            registry=r,
        )
        buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
        self.latency = Histogram(
            "mangaassist_model_latency_seconds",
            "Classification latency in the endpoint",
            ["model_version"],
            buckets=buckets,
            registry=r,
        )
        self.low_confidence = Counter(
            "mangaassist_model_low_confidence_total",
            "Answers below the chatbot's intent.min_confidence",
            ["model_version"],
            registry=r,
        )
        self.intents = Counter(
            "mangaassist_model_intent_total", "Answers by intent", ["model_version", "intent"], registry=r
        )
        self.threshold = Gauge(
            "mangaassist_model_low_confidence_threshold", "The low-confidence threshold in use", registry=r
        )
        self.ready = Gauge("mangaassist_model_ready", "1 when the model is loaded and warmed up", registry=r)
        self.info = Gauge(
            "mangaassist_model_info", "Model served", ["revision", "model_version", "embedder"], registry=r
        )


@dataclass
class LoadedModel:
    client: LocalIntentClient
    threshold: float
    source: str
    """Where the model came from: the package directory, or ``default`` (``load_or_train``)."""


def load_model(settings: Settings) -> LoadedModel:
    """The package named by ``MANGAASSIST_MODEL_PACKAGE``, else the chatbot's default model."""
    embedder = make_embedder(settings.embedder)
    catalog = Catalog.load(settings.catalog_path)
    threshold = load_config(settings.config_path).intent.min_confidence
    package = os.environ.get(PACKAGE_ENV) or ""
    if package:
        client = load_package(Path(package), embedder, catalog)
        return LoadedModel(client, threshold, str(Path(package).resolve()))
    client = load_or_train(settings.intents_dir / "train.jsonl", embedder, settings.home / "models", catalog)
    return LoadedModel(client, threshold, "default")


def warm_up(client: LocalIntentClient, rounds: int = 3) -> float:
    """First calls pay one-time costs (torch shapes, sklearn); ready only after they are paid."""
    started = time.perf_counter()
    for _ in range(rounds):
        vectors = client.embedder.embed(list(MESSAGES))
        for text, vector in zip(MESSAGES, vectors, strict=True):
            client.embedder.embed([text])
            client.classify(text, vector)
    return time.perf_counter() - started


def _field_error(field: str, message: str, version: str) -> JSONResponse:
    return JSONResponse(
        {"error": f"invalid request: {field}: {message}", "fields": [{"field": field, "message": message}]},
        status_code=422,
        headers={"X-Model-Version": version},
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    fault = FaultPlan.parse(settings.fault)  # a bad spec stops start-up with a clear error
    setup_tracing(SERVICE_NAME, settings.revision)
    trace_logging()
    metrics = ModelMetrics()
    rng = random.Random()
    state: dict[str, Any] = {"model": None, "error": None, "batcher": None}

    def load() -> None:
        try:
            model = load_model(settings)
            seconds = warm_up(model.client)
            gc.collect()
            gc.freeze()  # the model lives as long as the process: keep it out of the GC's generations
            metrics.threshold.set(model.threshold)
            metrics.info.labels(settings.revision, model.client.version, model.client.embedder.name).set(1)
            metrics.ready.set(1)
            state["model"] = model
            log.warning(
                "serving %s (%s) on embedder %s; warmed up in %.2fs",
                model.client.version,
                model.source,
                model.client.embedder.name,
                seconds,
            )
        except Exception as exc:  # reported by /readyz; the process stays up to say why
            log.exception("loading the intent model failed")
            state["error"] = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load, name="model-loader", daemon=True).start()
        yield
        batcher: BatchingEmbedder | None = state["batcher"]
        if batcher is not None:
            await batcher.aclose()

    app = FastAPI(title="MangaAssist intent model", version="1", lifespan=lifespan, **NO_NATIVE_TELEMETRY)
    app.state.metrics = metrics
    app.add_middleware(
        RevisionHeader,
        revision=settings.revision,
        metrics=metrics,
        known_paths=KNOWN_PATHS,
        emf=EmfWriter.from_env("intent-model", settings.revision, ("/v1/intent",)),
    )
    app.add_middleware(TraceMiddleware, scope_name="mangaassist.model_server", known_paths=KNOWN_PATHS)
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]

    def not_ready() -> JSONResponse:
        return not_ready_response(state["error"] or "loading the intent model")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "revision": settings.revision}

    @app.get("/readyz")
    async def readyz() -> Response:
        model: LoadedModel | None = state["model"]
        if model is None:
            return not_ready()
        return JSONResponse(
            {
                "ready": True,
                "revision": settings.revision,
                "model_version": model.client.version,
                "source": model.source,
                "embedder": model.client.embedder.name,
                "dim": model.client.embedder.dim,
                "low_confidence_threshold": model.threshold,
                "fault": settings.fault or None,
            }
        )

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/intent", response_model=IntentResponse)
    async def intent(body: IntentRequest, request: Request) -> Any:
        model: LoadedModel | None = state["model"]
        if model is None:
            return not_ready()
        started = time.perf_counter()
        version = model.client.version
        embedder = model.client.embedder
        if body.embedder is not None and body.embedder != embedder.name:
            metrics.errors.labels(version, "invalid").inc()
            metrics.predictions.labels(version, "422").inc()
            return _field_error(
                "embedder",
                f"this model needs embeddings from {embedder.name!r}, got {body.embedder!r}",
                version,
            )
        if body.embedding is not None and len(body.embedding) != embedder.dim:
            metrics.errors.labels(version, "invalid").inc()
            metrics.predictions.labels(version, "422").inc()
            return _field_error(
                "embedding",
                f"expected {embedder.dim} numbers (the {embedder.name} dimension), got {len(body.embedding)}",
                version,
            )
        faulty = fault.applies("x-mangaassist-revision" in request.headers)
        if faulty and fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if faulty and fault.should_fail(rng):
            metrics.errors.labels(version, "fault").inc()
            metrics.predictions.labels(version, "500").inc()
            metrics.latency.labels(version).observe(time.perf_counter() - started)
            return JSONResponse(
                {"error": "injected fault (MANGAASSIST_FAULT)"},
                status_code=500,
                headers={"X-Model-Version": version},
            )
        try:
            if body.embedding is not None:
                vector = np.asarray(body.embedding, dtype=np.float32)
            else:
                if state["batcher"] is None:  # concurrent requests without a vector share forward passes
                    state["batcher"] = BatchingEmbedder(embedder)
                vector = await state["batcher"].embed_one(body.text)
            prediction = model.client.classify(body.text, vector)
        except Exception:
            metrics.errors.labels(version, "internal").inc()
            metrics.predictions.labels(version, "500").inc()
            raise  # RevisionHeader answers this revision's 500
        low = prediction.confidence < model.threshold or not math.isfinite(prediction.confidence)
        metrics.latency.labels(version).observe(time.perf_counter() - started)
        metrics.predictions.labels(version, "200").inc()
        metrics.intents.labels(version, prediction.intent).inc()
        headers = {"X-Model-Version": version, "X-MangaAssist-Intent": prediction.intent}
        span = trace.get_current_span()  # TraceMiddleware's server span of this request
        if span.is_recording():
            span.set_attributes(
                {
                    "mangaassist.model": version,
                    "mangaassist.intent": prediction.intent,
                    "mangaassist.low_confidence": low,
                    "mangaassist.embedded_by_endpoint": body.embedding is None,
                }
            )
        if low:
            metrics.low_confidence.labels(version).inc()
            headers["X-MangaAssist-Fallback"] = "1"
        return JSONResponse(
            {
                "intent": prediction.intent,
                "confidence": prediction.confidence,
                "scores": prediction.scores,
                "model_version": version,
                "low_confidence": low,
            },
            headers=headers,
        )

    return app
