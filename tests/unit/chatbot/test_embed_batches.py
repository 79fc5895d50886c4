"""BatchingEmbedder reports the batches it forms (``on_batch``), and the chatbot's ``/metrics``
histograms record them (issue 21: the chat benchmark replays those sizes on the raw model)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
from prometheus_client import generate_latest

from mangaassist.chatbot.app import Metrics
from mangaassist.chatbot.embeddings import BatchingEmbedder, Matrix


class SlowEmbedder:
    """A stand-in model: each call takes ``delay`` seconds, so callers queue up behind it."""

    name = "slow-fake"
    dim = 4

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Matrix:
        with self._lock:
            self.calls.append(len(texts))
        time.sleep(self.delay)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = [len(t) for t in texts]
        return out


def test_batching_embedder_reports_every_batch_it_forms() -> None:
    fake = SlowEmbedder(delay=0.02)
    seen: list[tuple[int, float]] = []
    batcher = BatchingEmbedder(fake, max_batch=8, on_batch=lambda size, s: seen.append((size, s)))
    texts = [f"query {'x' * n}" for n in range(30)]

    async def run() -> list[np.ndarray]:
        try:
            return list(await asyncio.gather(*(batcher.embed_one(t) for t in texts)))
        finally:
            await batcher.aclose()

    vectors = asyncio.run(run())
    sizes = [size for size, _ in seen]
    assert sizes == fake.calls  # one report per forward pass, with that pass's size
    assert sum(sizes) == len(texts)
    assert max(sizes) > 1 and max(sizes) <= 8
    assert all(s >= 0.02 for _, s in seen)  # the model's own time for the batch
    assert [float(v[0]) for v in vectors] == [float(len(t)) for t in texts]  # each caller its row


def test_a_failing_recorder_does_not_stop_batching() -> None:
    def broken(size: int, seconds: float) -> None:
        raise RuntimeError("metric backend down")

    batcher = BatchingEmbedder(SlowEmbedder(delay=0.0), on_batch=broken)

    async def run() -> list[np.ndarray]:
        try:
            first = await batcher.embed_one("one")
            return [first, await batcher.embed_one("second")]
        finally:
            await batcher.aclose()

    assert [float(v[0]) for v in asyncio.run(run())] == [3.0, 6.0]


def test_metrics_expose_batch_sizes_and_forward_time() -> None:
    metrics = Metrics()
    for size, seconds in [(1, 0.004), (3, 0.012), (20, 0.045)]:
        metrics.observe_embed_batch(size, seconds)
    text = generate_latest(metrics.registry).decode()
    assert 'mangaassist_embed_batch_size_bucket{le="1.0"} 1.0' in text
    assert 'mangaassist_embed_batch_size_bucket{le="4.0"} 2.0' in text
    assert 'mangaassist_embed_batch_size_bucket{le="16.0"} 2.0' in text
    assert 'mangaassist_embed_batch_size_bucket{le="20.0"} 3.0' in text
    assert "mangaassist_embed_batch_size_sum 24.0" in text
    assert "mangaassist_embed_forward_seconds_count 3.0" in text
