"""Judges kept for comparison only; pipelines use ``SequentialJudge``.

``MannWhitneyJudge`` is a fixed-horizon test (Kayenta's) consulted repeatedly, as canary tools
use it: every look is another chance of a false failure, so its false-rollback rate grows with the
number of looks (``benchmarks/canary_judge.py`` measures it). ``ThresholdJudge`` compares the
candidate with absolute limits (Flagger's success rate and p99), ignoring the stable revision.

Both work from counts and latency histograms, so a look costs O(buckets), not O(requests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.judgement import Judgement, MetricVerdict
from mangaassist.delivery.analysis.samples import ArmSample


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def mann_whitney_greater(c_counts: np.ndarray, b_counts: np.ndarray) -> float:
    """One-sided p-value that candidate values tend to be larger, from per-value counts.

    ``c_counts[i]`` and ``b_counts[i]`` count observations equal to the i-th smallest value (a 0/1
    metric has two values; latency has one per histogram bucket). Normal approximation with the
    tie correction and a continuity correction, as scipy's ``mannwhitneyu`` does.
    """
    c = np.asarray(c_counts, dtype=np.float64)
    b = np.asarray(b_counts, dtype=np.float64)
    n_c, n_b = c.sum(), b.sum()
    if n_c == 0 or n_b == 0:
        return 1.0
    below = np.cumsum(b) - b  # baseline observations strictly smaller than each value
    u = float((c * (below + 0.5 * b)).sum())
    n = n_c + n_b
    ties = c + b
    tie_term = float((ties**3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    var = n_c * n_b / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        return 1.0
    z = (u - n_c * n_b / 2.0 - 0.5) / math.sqrt(var)
    return _normal_sf(z)


class MannWhitneyJudge:
    """Fixed-horizon Mann-Whitney U per metric at ``alpha`` split across metrics; peeking inflates it."""

    name = "mann-whitney"

    def __init__(self, alpha: float = 0.01, min_requests: int = 30) -> None:
        self.alpha = alpha
        self.min_requests = min_requests

    def judge(self, candidate: ArmSample, baseline: ArmSample) -> Judgement:
        pairs = {
            "error_rate": (candidate.errors, baseline.errors),
            "fallback_rate": (candidate.fallbacks, baseline.fallbacks),
            "guardrail_rate": (candidate.guardrails, baseline.guardrails),
            "thumbs_down_rate": (candidate.thumbs_down, baseline.thumbs_down),
        }
        alpha_m = self.alpha / (len(pairs) + 1)
        enough = min(candidate.requests, baseline.requests) >= self.min_requests
        out = []

        def decide(metric: str, p: float, cv: float, bv: float) -> MetricVerdict:
            if not enough:
                verdict, reason = Verdict.INCONCLUSIVE, "too little data"
            elif p <= alpha_m:
                verdict, reason = Verdict.FAIL, f"p={p:.3g} <= {alpha_m:.3g}"
            else:
                verdict, reason = Verdict.PASS, f"p={p:.3g} > {alpha_m:.3g}"
            return MetricVerdict(
                metric,
                "mann-whitney",
                verdict,
                p,
                alpha_m,
                candidate.requests,
                baseline.requests,
                cv,
                bv,
                reason,
            )

        for metric, (x_c, x_b) in pairs.items():
            p = mann_whitney_greater(
                np.array([candidate.requests - x_c, x_c]), np.array([baseline.requests - x_b, x_b])
            )
            out.append(decide(metric, p, x_c / max(candidate.requests, 1), x_b / max(baseline.requests, 1)))
        p = mann_whitney_greater(candidate.latency, baseline.latency)
        out.insert(1, decide("latency", p, candidate.quantile_ms(0.5), baseline.quantile_ms(0.5)))
        return Judgement(self.name, out)


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.01
    """Flagger's default request-success-rate of 99%."""
    max_p99_ms: float = 500.0
    """Flagger's default request-duration limit."""
    min_requests: int = 30


class ThresholdJudge:
    """Absolute limits on the candidate alone, as Flagger checks them."""

    name = "threshold"

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.t = thresholds or Thresholds()

    def judge(self, candidate: ArmSample, baseline: ArmSample) -> Judgement:
        t = self.t
        enough = candidate.requests >= t.min_requests
        error_rate = candidate.errors / max(candidate.requests, 1)
        p99 = candidate.quantile_ms(0.99)
        out = []
        for metric, value, limit, base in (
            ("error_rate", error_rate, t.max_error_rate, baseline.errors / max(baseline.requests, 1)),
            ("latency", p99, t.max_p99_ms, baseline.quantile_ms(0.99)),
        ):
            if not enough:
                verdict, reason = Verdict.INCONCLUSIVE, "too little data"
            elif value > limit:
                verdict, reason = Verdict.FAIL, f"{value:.4g} > limit {limit:.4g}"
            else:
                verdict, reason = Verdict.PASS, f"{value:.4g} <= limit {limit:.4g}"
            out.append(
                MetricVerdict(
                    metric,
                    "threshold",
                    verdict,
                    value,
                    limit,
                    candidate.requests,
                    baseline.requests,
                    value,
                    base,
                    reason,
                )
            )
        return Judgement(self.name, out)
