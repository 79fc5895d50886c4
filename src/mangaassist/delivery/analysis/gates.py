"""Absolute gates on a candidate's own traffic, before any user reaches it.

The pinned load before a canary (``delivery.pipelines.app``) sends synthetic conversations to the
candidate alone. A gross error rate is caught there, with no user exposed, by a one-sided exact
binomial test: the candidate FAILs when its failed requests are too many to come from an
acceptable error rate ``rate`` with probability ``alpha`` or more. With 30 pinned requests,
``rate`` 1% and ``alpha`` 0.001, four failures fail the gate: a revision failing 20% of its
requests is stopped there 88% of the time, a healthy one (0.1% errors) less than once in 10^5.
What slips through meets the canary judge at the first step.
"""

from __future__ import annotations

import math


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def too_many_errors(failed: int, requests: int, rate: float, alpha: float) -> bool:
    """Whether ``failed`` of ``requests`` is significantly above the acceptable ``rate``."""
    if not 0 <= rate < 1 or not 0 < alpha < 1:
        raise ValueError(f"rate must be within [0, 1) and alpha within (0, 1), got {rate}, {alpha}")
    if requests <= 0 or failed <= 0:
        return False
    return binomial_tail(failed, requests, rate) < alpha


def errors_allowed(requests: int, rate: float, alpha: float) -> int:
    """The most failures of ``requests`` that still pass (for reports)."""
    k = 0
    while k < requests and not too_many_errors(k + 1, requests, rate, alpha):
        k += 1
    return k
