"""What a judge sees of one revision: request counts, quality-flag counts and a latency histogram.

The histogram has fixed log-spaced buckets (0.1 ms to 60 s, about 3.5% wide), so a sample's memory
does not grow with traffic and two samples are compared bucket by bucket. Judges compare the
candidate with the stable revision on what both served over the same period.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

LATENCY_MIN_MS = 0.1
LATENCY_MAX_MS = 60_000.0
BUCKETS = 400
_LOG_MIN = math.log(LATENCY_MIN_MS)
_LOG_STEP = (math.log(LATENCY_MAX_MS) - _LOG_MIN) / BUCKETS
LOG_STEP = _LOG_STEP
"""Width of a bucket in log(ms): a latency multiplied by ``s`` moves ``log(s) / LOG_STEP`` buckets up."""
EDGES_MS: npt.NDArray[np.float64] = np.exp(_LOG_MIN + _LOG_STEP * np.arange(BUCKETS + 1))
"""Bucket ``i`` holds latencies in ``[EDGES_MS[i], EDGES_MS[i + 1])``; the ends are clamped."""


def bucket_of(latency_ms: float) -> int:
    if latency_ms <= LATENCY_MIN_MS:
        return 0
    return min(BUCKETS - 1, int((math.log(latency_ms) - _LOG_MIN) / _LOG_STEP))


def buckets_of(latencies_ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
    values = np.maximum(np.asarray(latencies_ms, dtype=np.float64), LATENCY_MIN_MS)
    idx = ((np.log(values) - _LOG_MIN) / _LOG_STEP).astype(np.int64)
    return np.clip(idx, 0, BUCKETS - 1)


@dataclass(frozen=True)
class Observation:
    """One request as the router recorded it."""

    status: int
    """HTTP status; 0 for a transport error (no response)."""
    latency_ms: float
    fallback: bool = False
    guardrail: bool = False

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 500


@dataclass
class ArmSample:
    """Everything a judge needs about one revision over one period. Counts only grow."""

    requests: int = 0
    errors: int = 0
    """Responses with status >= 500 and transport errors."""
    fallbacks: int = 0
    guardrails: int = 0
    feedback: int = 0
    thumbs_down: int = 0
    latency: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(BUCKETS, dtype=np.int64))
    """Requests per latency bucket (``EDGES_MS``)."""

    def add(self, obs: Observation) -> None:
        self.requests += 1
        self.errors += obs.failed
        self.fallbacks += obs.fallback
        self.guardrails += obs.guardrail
        self.latency[bucket_of(obs.latency_ms)] += 1

    def add_feedback(self, rating: str) -> None:
        self.feedback += 1
        self.thumbs_down += rating == "down"

    @classmethod
    def of(cls, observations: Iterable[Observation]) -> ArmSample:
        sample = cls()
        for obs in observations:
            sample.add(obs)
        return sample

    def merged(self, other: ArmSample) -> ArmSample:
        return ArmSample(
            self.requests + other.requests,
            self.errors + other.errors,
            self.fallbacks + other.fallbacks,
            self.guardrails + other.guardrails,
            self.feedback + other.feedback,
            self.thumbs_down + other.thumbs_down,
            self.latency + other.latency,
        )

    def minus(self, other: ArmSample) -> ArmSample:
        """What this sample holds beyond ``other`` (an earlier state of the same counts)."""
        return ArmSample(
            self.requests - other.requests,
            self.errors - other.errors,
            self.fallbacks - other.fallbacks,
            self.guardrails - other.guardrails,
            self.feedback - other.feedback,
            self.thumbs_down - other.thumbs_down,
            self.latency - other.latency,
        )

    def quantile_ms(self, q: float) -> float:
        """The latency below which a share ``q`` of requests fell (bucket upper edge); NaN if empty."""
        total = int(self.latency.sum())
        if total == 0:
            return float("nan")
        rank = q * total
        index = int(np.searchsorted(np.cumsum(self.latency), rank, side="left"))
        return float(EDGES_MS[min(index, BUCKETS - 1) + 1])

    def slower_than(self, bucket: int) -> int:
        """Requests in buckets above ``bucket``."""
        return int(self.latency[bucket + 1 :].sum())
