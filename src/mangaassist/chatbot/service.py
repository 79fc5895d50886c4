"""The chat pipeline: input guardrails -> intent -> handler -> generator -> output guardrails.

``Runtime.load`` builds everything a worker needs (embedder, intent model, catalog and knowledge
embeddings, config, tables); ``ChatService.chat`` answers one message. The query is embedded once
and the vector is shared by the intent model, catalog search and retrieval, unless the live
knowledge-base version was embedded by another model (a new embedding model being released): then
the query is embedded a second time, by that version's own embedder, for its search only. Which
embedder that is comes with the version the request pinned (``LiveKnowledge.pinned``), so a query
is never searched against vectors of another model; the answer reports it (``embedder``).

The intent model runs in process unless ``MANGAASSIST_INTENT_URL`` names a model endpoint; then
``HttpIntentClient`` asks it (sticky by session id) and keeps the in-process model as the champion it
falls back to. The in-process model is the package ``MANGAASSIST_MODEL_PACKAGE`` names (the model
pipeline points it at the registry's champion), else the default one (``load_or_train``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from opentelemetry.trace import Tracer

from mangaassist.chatbot.catalog import Catalog, find_format, find_volume
from mangaassist.chatbot.config import ChatbotConfig, load_config
from mangaassist.chatbot.config_client import ActiveConfig, ConfigClient
from mangaassist.chatbot.embeddings import (
    BatchingEmbedder,
    Embedder,
    EmbeddingCache,
    Vector,
    make_embedder,
    model_id,
)
from mangaassist.chatbot.entities import (
    find_order_id,
    find_order_ids,
    may_follow_up_on_order,
    resolve_follow_up,
)
from mangaassist.chatbot.generators import GenerationRequest, GeneratorError, LocalComposer, make_generator
from mangaassist.chatbot.generators.base import ResponseGenerator
from mangaassist.chatbot.guardrails import check_input, check_output
from mangaassist.chatbot.handlers import HANDLERS, Context, Draft, Source, fact_question, sign_in_hint
from mangaassist.chatbot.intent import IntentClient, load_or_train, load_package
from mangaassist.chatbot.intent_remote import HttpIntentClient
from mangaassist.chatbot.knowledge import KnowledgeIndex, LiveKnowledge, QueryBound, Retriever, load_documents
from mangaassist.chatbot.settings import Settings
from mangaassist.chatbot.store import SESSIONS, ChatStore
from mangaassist.core.errors import ConfigError
from mangaassist.core.intents import Intent
from mangaassist.core.kb import chunk_all, series_document
from mangaassist.core.migrations import Rules
from mangaassist.platform.embedding_cache import ChunkEmbeddingCache
from mangaassist.platform.embeddings import embedder_kind
from mangaassist.platform.factory import Platform, workload_platform
from mangaassist.platform.tables import ShapedTables
from mangaassist.platform.tracing import get_tracer
from mangaassist.platform.vector import LIVE_ALIAS

log = logging.getLogger("mangaassist.chatbot")

STAGES = ("guardrails", "intent", "retrieval", "generation")
_NOT_ABOUT_A_SERIES = frozenset({Intent.OUT_OF_SCOPE, Intent.CHITCHAT})


@dataclass
class ChatResult:
    answer: str
    intent: str
    confidence: float
    sources: list[Source]
    fallback: bool
    guardrail_reasons: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)
    index: str = ""
    """The knowledge-base version this answer searched (pinned when the request started)."""
    """The config profile versions this answer was made with (CD-06)."""
    model: str = ""
    """The intent model version that classified this message (the endpoint's, or the fallback's)."""
    embedder: str = ""
    """The embedding model that embedded the query this answer searched the knowledge base with
    (always the model of the ``index`` version's rows)."""

    @property
    def guardrail(self) -> bool:
        return bool(self.guardrail_reasons)


@dataclass
class Runtime:
    """Everything loaded once per worker process."""

    settings: Settings
    config: ChatbotConfig
    embedder: Embedder
    intents: IntentClient
    catalog: Catalog
    knowledge: LiveKnowledge
    store: ChatStore
    generator: ResponseGenerator
    configs: ConfigClient | None = None
    """Follows the config server (CD-06); None: config/chatbot.yaml only."""

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        started = time.perf_counter()
        platform = workload_platform(settings.home, settings.root)
        config = load_config(settings.config_path)
        embedder = make_embedder(settings.embedder)
        cache = EmbeddingCache(settings.cache_dir)
        catalog = Catalog.load(settings.catalog_path)
        catalog.matrix = cache.embed(embedder, [s.search_text for s in catalog.series])
        knowledge = _knowledge(settings, platform, config, embedder, catalog)
        package = os.environ.get("MANGAASSIST_MODEL_PACKAGE")
        if package:
            champion = load_package(Path(package), embedder, catalog)
        else:
            champion = load_or_train(
                settings.intents_dir / "train.jsonl", embedder, settings.home / "models", catalog
            )
        intents: IntentClient = champion
        if settings.intent_url:
            intents = HttpIntentClient(settings.intent_url, champion, timeout_s=settings.intent_timeout_s)
        configs = _config_client(settings, config)
        rules = configs.schema_rules if configs is not None else Rules
        store = ChatStore(ShapedTables(platform.tables(settings.tables_path), rules), rules)
        store.seed_orders(settings.orders_path)
        log.info(
            "runtime loaded in %.1fs: %d series, model %s%s, index %s, %s",
            time.perf_counter() - started,
            len(catalog.series),
            intents.version,
            f" (asking {settings.intent_url} first)" if settings.intent_url else "",
            knowledge.version,
            config.version,
        )
        return cls(
            settings,
            config,
            embedder,
            intents,
            catalog,
            knowledge,
            store,
            make_generator(config.generator),
            configs,
        )

    def active_config(self, session_id: str) -> ActiveConfig:
        """The config versions this session gets (its rollout bucket decides; CD-06)."""
        if self.configs is None:
            return ActiveConfig(self.config, {"runtime": self.config.version})
        return self.configs.active(session_id)

    @property
    def versions(self) -> dict[str, str]:
        return {
            "revision": self.settings.revision,
            "model": self.intents.version,
            "config": self.config.version,
            "index": self.knowledge.version,
        }


def _config_client(settings: Settings, config: ChatbotConfig) -> ConfigClient | None:
    """``MANGAASSIST_CONFIG_URL``: follow that config server; ``MANGAASSIST_CONFIG_DIR``: use the
    profiles in that folder (the config pipeline's evaluation gate); neither: None."""
    url = os.environ.get("MANGAASSIST_CONFIG_URL") or None
    folder = os.environ.get("MANGAASSIST_CONFIG_DIR")
    if url is None and not folder:
        return None
    interval = float(os.environ.get("MANGAASSIST_CONFIG_POLL", "2.0"))
    client = ConfigClient(
        url,
        settings.home / "config-cache" / settings.revision,
        config,
        config_dir=Path(folder) if folder else settings.root / "config",
        interval=interval,
    )
    return client.start()


def _knowledge(
    settings: Settings, platform: Platform, config: ChatbotConfig, embedder: Embedder, catalog: Catalog
) -> LiveKnowledge:
    """The live index version; until one we can use exists, a build of our own from the same sources.

    Our build uses the knowledge-base pipeline's embedding cache (same model id, same chunk hashes),
    so whichever of the two runs first embeds for both.
    """
    model = model_id(embedder)
    refresh = float(os.environ.get("MANGAASSIST_KB_REFRESH_SECONDS", "1.0"))
    live = LiveKnowledge(platform.vector_index(), model, None, LIVE_ALIAS, refresh, _embedder_of(platform))
    if live.version == "none":
        chunks = chunk_all(
            [*load_documents(settings.knowledge_dir), *(series_document(asdict(s)) for s in catalog.series)],
            config.retrieval.chunk_words,
            config.retrieval.chunk_overlap,
        )
        cache = ChunkEmbeddingCache(settings.home / "kb" / "embeddings.sqlite3")
        vectors = cache.get_many(model, (c.content_hash for c in chunks))
        missing = list({c.content_hash: c for c in chunks if c.content_hash not in vectors}.values())
        for start in range(0, len(missing), 64):
            batch = missing[start : start + 64]
            matrix = embedder.embed([c.embed_text for c in batch])
            fresh = {c.content_hash: matrix[i] for i, c in enumerate(batch)}
            cache.put_many(model, fresh)
            vectors.update(fresh)
        live.fallback = KnowledgeIndex(chunks, np.stack([vectors[c.content_hash] for c in chunks]))
    return live.start()


def _embedder_of(platform: Platform) -> Callable[[str], Embedder]:
    """Model id -> an embedder of that model, for index versions another model embedded: the
    environment's own embedder when it is that model (Bedrock Titan on aws), else the in-process
    embedder of that kind (``platform.embeddings.embedder_kind``); anything else is refused."""

    def make(model: str) -> Embedder:
        kind = embedder_kind(model)
        if kind is None:
            own = platform.embedder()
            if model_id(own) == model:
                return own
            raise ConfigError(f"no embedder for the index's model {model!r}")
        return make_embedder(kind)

    return make


def order_of_last_turn(store: ChatStore, session_id: str) -> str | None:
    """The order the session's previous turn was about (an order-status turn naming exactly one
    order, in the message or else the answer), or None. One read: the newest turn."""
    turns = store.tables.query(SESSIONS, session_id, sk_prefix="turn#", limit=1, descending=True)
    if not turns or turns[0].get("intent") != Intent.ORDER_STATUS:
        return None
    named = find_order_id(str(turns[0].get("message", "")))
    if named is not None:
        return named
    in_answer = set(find_order_ids(str(turns[0].get("answer", ""))))
    return in_answer.pop() if len(in_answer) == 1 else None


def decided_intent(
    predicted: str, query: str, message: str, last_order: str | None, catalog: Catalog
) -> str | None:
    """The intent the conversation or the catalog settles regardless of the model, or None.

    - A follow-up about the conversation's order ("can I add vol 3 to it?") is about that order.
    - A question about a catalog fact of a named series ("who wrote fruits basket", "Berserk is by
      which mangaka?") is a product question, whatever the model made of its wording.
    - A follow-up about the conversation's series with a volume or a format in it ("what about the
      box set?") is too.
    """
    if predicted == Intent.HUMAN_HANDOFF:
        return None
    if last_order is not None and query.startswith(f"Order {last_order}:"):
        return Intent.ORDER_STATUS if predicted != Intent.ORDER_STATUS else None
    if predicted in (Intent.ORDER_STATUS, Intent.PRODUCT_SEARCH):
        return None
    if fact_question(query, catalog):
        return Intent.PRODUCT_SEARCH
    volume_or_format = find_volume(query) is not None or find_format(query) is not None
    if query != message and predicted in _NOT_ABOUT_A_SERIES and volume_or_format:
        return Intent.PRODUCT_SEARCH
    return None


_INJECTION_REPLY = (
    "I can't follow instructions that change how I work. I'm happy to help you find "
    "manga, check an order or answer a store question."
)
_UNSURE_REPLY = (
    "Sorry, I'm not sure what you mean. Could you rephrase? I can find manga, recommend "
    "series, check your orders and answer questions about our store."
)


class ChatService:
    def __init__(self, runtime: Runtime, on_embed_batch: Callable[[int, float], None] | None = None) -> None:
        """``on_embed_batch(size, seconds)``: called once per forward pass of the query embedder
        (the app records it on ``/metrics``)."""
        self.rt = runtime
        self.batcher = BatchingEmbedder(runtime.embedder, on_batch=on_embed_batch)
        self.model = model_id(runtime.embedder)
        self._batchers: dict[str, BatchingEmbedder] = {}
        """One per embedding model of a knowledge-base version other than ours (``_for_index``)."""
        self.composer = LocalComposer()
        self._tracer: Tracer | None = None  # on first use: after the app set up tracing
        identity = runtime.settings.identity
        self.signin = sign_in_hint(identity.signin_url, identity.dev_signin)

    @contextmanager
    def _stage(self, name: str, timings: dict[str, float]) -> Iterator[None]:
        """One stage of an answer: its time in ``timings`` (milliseconds) and a child span
        ``chat NAME`` of the request's span, so a trace shows where an answer's time went (the
        intent stage's call to the model endpoint nests under ``chat intent``)."""
        if self._tracer is None:
            self._tracer = get_tracer("mangaassist.chatbot")
        started = time.perf_counter()
        with self._tracer.start_as_current_span(f"chat {name}", attributes={"mangaassist.stage": name}):
            try:
                yield
            finally:
                timings[name] = (time.perf_counter() - started) * 1000

    async def chat(
        self,
        session_id: str,
        message: str,
        customer_id: str | None,
        shadow: bool = False,
        active: ActiveConfig | None = None,
    ) -> ChatResult:
        """Answer one message. ``customer_id``: the customer of the request's verified token (None:
        anonymous), never a value the caller merely claimed. ``shadow``: a mirrored request; answer
        the same, store nothing. ``active``: the config to answer with (default: what the session's
        rollout bucket gets)."""
        rt = self.rt
        active = active or rt.active_config(session_id)
        config = active.runtime
        knowledge = rt.knowledge.pinned()  # one version for the whole answer, and the one it reports
        timings: dict[str, float] = {}
        with self._stage("guardrails", timings):
            screened, blocked_topic = active.screen(message)
            checked = check_input(screened)
            reasons = checked.reasons
            if blocked_topic:
                reasons.append(f"blocked_topic:{blocked_topic}")

        session = (
            rt.store.peek_session(session_id) if shadow else rt.store.open_session(session_id, customer_id)
        )
        # orders are looked up with the customer id of this request only, never one remembered
        # on the session: knowing someone's session id must not reveal their orders
        customer = customer_id
        with self._stage("intent", timings):
            # a follow-up ("is volume 2 in stock?") is read in the light of the conversation; the
            # resulting query is the one embedded, once, and used by every stage below
            last_order = None
            if not session.created and may_follow_up_on_order(checked.masked):
                last_order = order_of_last_turn(rt.store, session_id)
            query = resolve_follow_up(checked.masked, session.last_series, rt.catalog, last_order)
            vector = await self.batcher.embed_one(query)
            knowledge, query_model = await self._for_index(knowledge, query, vector)
            prediction = await rt.intents.aclassify(query, vector, session_id=session_id)
            unsure = prediction.confidence < config.intent.min_confidence
            decided = decided_intent(prediction.intent, query, checked.masked, last_order, rt.catalog)
            if decided is not None:
                prediction, unsure = prediction.instead(decided), False

        with self._stage("retrieval", timings):
            if blocked_topic:
                draft = Draft(prediction.intent, active.blocked_reply)
            elif checked.injection and config.guardrails.block_prompt_injection:
                draft = Draft(prediction.intent, _INJECTION_REPLY)
            elif unsure:
                draft = Draft(prediction.intent, _UNSURE_REPLY, fallback=True)
            else:
                ctx = Context(
                    query,
                    vector,
                    customer,
                    session,
                    rt.catalog,
                    knowledge,
                    rt.store,
                    config,
                    shadow,
                    self.signin,
                )
                draft = HANDLERS[prediction.intent](ctx)

        with self._stage("generation", timings):
            request = GenerationRequest(
                intent=draft.intent,
                message=checked.masked,
                lead=draft.lead,
                facts=draft.facts,
                system_prompt=(active.prompts or {}).get("system") or config.system_prompt,
            )
            answer = await self._generate(request)
            if config.guardrails.check_output_claims:
                verdict = check_output(answer, [draft.lead, *draft.facts])
                if not verdict.ok:
                    reasons.append("unsupported_claim")
                    log.warning(
                        "output guardrail: unsupported prices %s stock %s",
                        verdict.unsupported_prices,
                        verdict.unsupported_stock,
                    )
                    answer = self.composer.compose(request)
            answer, fallback = active.finish(
                intent=draft.intent,
                answer=answer,
                sources=[s.title for s in draft.sources],
                lead=draft.lead,
                facts=draft.facts,
                message=checked.masked,
                fallback=draft.fallback,
                handoff=active.flags is not None and active.flag("handoff-offer", session_id, customer_id),
            )

        if not shadow:
            rt.store.record_turn(session, customer, checked.masked, draft.intent, answer, draft.last_series)
        return ChatResult(
            answer=answer,
            intent=draft.intent,
            confidence=prediction.confidence,
            sources=draft.sources,
            fallback=fallback,
            guardrail_reasons=reasons,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            configs=dict(active.versions),
            model=prediction.model or rt.intents.version,
            index=knowledge.version,
            embedder=query_model,
        )

    async def _for_index(self, knowledge: Retriever, query: str, vector: Vector) -> tuple[Retriever, str]:
        """The pinned version, searched with a vector of ``query`` from the model its rows came from,
        and that model: ``vector`` (ours) when it is our model, else the query embedded again by the
        version's own embedder (batched with the other requests on that version)."""
        own = getattr(knowledge, "embedder", None)
        if own is None:
            return knowledge, self.model
        model = model_id(own)
        batcher = self._batchers.get(model)
        if batcher is None or batcher.embedder is not own:
            batcher = self._batchers[model] = BatchingEmbedder(own)
        return QueryBound(knowledge, await batcher.embed_one(query), model), model

    async def _generate(self, request: GenerationRequest) -> str:
        try:
            return await self.rt.generator.generate(request)
        except GeneratorError as exc:
            # a generator outage must not become a customer-facing error: the grounded composition
            # says the same facts, only less fluently
            log.warning("generator %s failed, using the local composer: %s", self.rt.generator.name, exc)
            return self.composer.compose(request)

    async def aclose(self) -> None:
        if self.rt.configs is not None:
            self.rt.configs.close()
        self.rt.knowledge.close()
        if isinstance(self.rt.intents, HttpIntentClient):
            await self.rt.intents.aclose()
        await self.batcher.aclose()
        for batcher in self._batchers.values():
            await batcher.aclose()
