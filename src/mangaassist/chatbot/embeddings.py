"""The chatbot's side of embeddings: ``BatchingEmbedder`` lets concurrent requests share one
forward pass (on two cores a batch of 20 short queries costs about a quarter of 20 single passes,
which is what keeps chat p99 low). The models themselves live in ``platform/embeddings.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from mangaassist.platform.embeddings import (
    Embedder,
    EmbeddingCache,
    HashingEmbedder,
    Matrix,
    MiniLMEmbedder,
    Vector,
    make_embedder,
    model_id,
)

log = logging.getLogger(__name__)

__all__ = [
    "BatchingEmbedder",
    "Embedder",
    "EmbeddingCache",
    "HashingEmbedder",
    "Matrix",
    "MiniLMEmbedder",
    "Vector",
    "make_embedder",
    "model_id",
]


class BatchingEmbedder:
    """Embeds single queries for concurrent async callers, batching whatever is queued.

    No timer: a batch is simply everything that arrived while the previous one ran, so a lone
    request pays no extra wait and a burst shares forward passes.

    ``on_batch(size, seconds)`` is called once per batch the model embedded: how many queries it
    held and the model's own time for it (measured in the worker thread, so without the hop to and
    from it). The chatbot records both on ``/metrics`` (``mangaassist_embed_batch_size``,
    ``mangaassist_embed_forward_seconds``); ``benchmarks/chat_latency.py`` replays those sizes.
    """

    def __init__(
        self,
        embedder: Embedder,
        max_batch: int = 32,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[Vector]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def embed_one(self, text: str) -> Vector:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue))
        future: asyncio.Future[Vector] = asyncio.get_running_loop().create_future()
        await self._queue.put((text, future))
        return await future

    async def _run(self, queue: asyncio.Queue[tuple[str, asyncio.Future[Vector]]]) -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < self.max_batch:
                batch.append(queue.get_nowait())
            try:
                matrix, seconds = await asyncio.to_thread(self._embed, [t for t, _ in batch])
            except Exception as exc:  # every waiter learns of the failure
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for row, (_, fut) in enumerate(batch):
                if not fut.done():
                    fut.set_result(matrix[row])
            if self.on_batch is not None:
                try:
                    self.on_batch(len(batch), seconds)
                except Exception:  # a broken metric must not stop the batching loop
                    log.exception("recording an embedding batch failed")

    def _embed(self, texts: Sequence[str]) -> tuple[Matrix, float]:
        started = time.perf_counter()
        matrix = self.embedder.embed(texts)
        return matrix, time.perf_counter() - started

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
            self._queue = None
