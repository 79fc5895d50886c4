"""The open-loop schedule the latency benchmarks share: ``rate`` calls a second for ``seconds``,
each started on time whether or not the earlier ones have finished (a slow server shows up as
latency, not as less load)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable


async def open_loop(one: Callable[[int], Awaitable[None]], rate: float, seconds: float) -> tuple[int, float]:
    """Start ``one(i)`` for i in 0..n-1 at ``rate`` per second, wait for all; (n, elapsed seconds)."""
    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return n, time.perf_counter() - start


def latency_summary(n: int, errors: int, latencies: list[float]) -> dict[str, float | int]:
    """One run's figures: requests, errors, p50, p99 and max of ``latencies`` (ms, sorted in place)."""
    latencies.sort()
    return {
        "requests": n,
        "errors": errors,
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
        "max_ms": round(latencies[-1], 3),
    }
