"""The chatbot's side of embeddings: ``BatchingEmbedder`` lets concurrent requests share one
forward pass (on two cores a batch of 20 short queries costs about a quarter of 20 single passes,
which is what keeps chat p99 low). The models themselves live in ``platform/embeddings.py``.
"""

from __future__ import annotations

import asyncio
import contextlib

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
    """

    def __init__(self, embedder: Embedder, max_batch: int = 32) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
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
                matrix = await asyncio.to_thread(self.embedder.embed, [t for t, _ in batch])
            except Exception as exc:  # every waiter learns of the failure
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for row, (_, fut) in enumerate(batch):
                if not fut.done():
                    fut.set_result(matrix[row])

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
            self._queue = None
