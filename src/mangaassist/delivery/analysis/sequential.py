"""The anytime-valid canary judge (the one pipelines use).

Every metric is an *event* that a request may have: an error, a fallback answer, a guardrail
firing, a thumbs-down, or being slower than the stable revision's median. If the candidate is no
worse, each event comes from the candidate with probability ``q0``, its share of the traffic. If
it is worse by a rate ratio ``rho``, that probability is ``q(rho) = rho*q0 / (rho*q0 + 1 - q0)``.

The judge keeps, per metric, the e-value

    E = mean over rho in a grid of  (q(rho)/q0)^x_c * ((1 - q(rho))/(1 - q0))^x_b

where ``x_c`` and ``x_b`` count the events of each revision. Under "no worse" each factor has
expectation one, so ``E`` is a test martingale in the sequence of events, and by Ville's
inequality ``P(E ever >= 1/alpha) <= alpha``: the judge may be consulted after every request
without raising its false-failure rate. The grid starts at the smallest effect that matters
(``rho_min``, from the settings) and covers larger ones, so power goes where it is needed.

``alpha`` (per deployment) is split across the metrics (Bonferroni, weighted: 40% errors, 30% for
requests slower than the stable median, 10% each for fallbacks, guardrail firings and
thumbs-down). A tail metric (slower than the stable p95) was tried and removed: it failed
identical candidates on artefacts of a new revision (fresh upstream connections). A metric FAILs when
``E >= 1/alpha_m``; until both revisions have ``min_requests``, nothing can fail or pass
(INCONCLUSIVE: too little data). After that a metric PASSes unless evidence is building
(``E >= 1/sqrt(alpha_m)``), or, for a rate, a plain one-sided test of its events says the candidate
looks worse (``pass_p``, below), or, for latency, the observed median is already slower than the
baseline's by more than ``latency_increase``; each keeps it INCONCLUSIVE so the step is extended.

Why the rate guard: the e-process bets on effects up to ``3 * rho_min``, so at a large share each
candidate event is weak evidence (at 50% a candidate event moves ``E`` by at most x1.5). A candidate
failing 40% of its requests against a clean stable revision, judged at a 50% step the moment both
have 30 requests, PASSed one time in ten (8 errors against none leave ``E`` below the doubt line).
Holding such a PASS while the candidate's share of the events is significant at ``pass_p`` (a
binomial tail, given the events) stops that: 1 in 400 simulated drills instead of 40
(docs/pipelines/cd-01-app.md, "The judge"). The guard never FAILs anything, so the false-failure
bound is unchanged; an identical candidate is at most held a few looks longer.

``q0`` is the candidate's share of the requests both served in the window; with thousands of
requests per event it is known far better than the event counts, and the approximation is
measured in ``benchmarks/canary_judge.py`` (A/A false-failure rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.gates import binomial_tail
from mangaassist.delivery.analysis.judgement import Judgement, MetricVerdict
from mangaassist.delivery.analysis.samples import ArmSample, bucket_of

_GRID = (1.0, 1.5, 2.0, 3.0)
"""Multiples of ``rho_min`` mixed over, with equal weight. A short grid dilutes the evidence
least; larger effects still fail fast because they produce many more events
(``benchmarks/canary_judge.py`` compared grids: this one had the most power at the same
false-failure rate)."""
METRICS = ("error_rate", "latency", "fallback_rate", "guardrail_rate", "thumbs_down_rate")


@dataclass(frozen=True)
class JudgeSettings:
    alpha: float = 0.01
    """False-failure budget of one deployment, split across the metrics."""
    min_requests: int = 30
    """Below this many requests on either revision, every metric is INCONCLUSIVE."""
    error_rate_delta: float = 0.005
    """Smallest error-rate increase that matters (absolute): +0.5 percentage point."""
    flag_rate_delta: float = 0.01
    """Smallest increase of the fallback and guardrail rates that matters (absolute)."""
    thumbs_down_delta: float = 0.01
    """Smallest increase of thumbs-down per request that matters (absolute)."""
    latency_increase: float = 0.2
    """Smallest latency increase that matters (relative): +20%."""
    pass_p: float = 0.05
    """A rate metric may not PASS while the one-sided binomial test of its events (the candidate's
    count of them against its share of the requests) has p below this: the data already say the
    candidate looks worse, only not yet with anytime-valid evidence. 0 turns the guard off."""
    compare_latency: bool = True
    """False when the two samples come from different periods (blue-green's candidate after the
    switch against the stable revision before it): load drift between periods looks like a
    latency shift, while error and flag rates are far less sensitive to it. Latency is then left
    to absolute gates (the pipeline's latency budget)."""
    alpha_weights: tuple[float, ...] = (0.4, 0.3, 0.1, 0.1, 0.1)
    """Share of ``alpha`` per metric, in ``METRICS`` order: errors and latency matter most."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be within (0, 1), got {self.alpha}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be >= 1, got {self.min_requests}")
        if not 0 <= self.pass_p < 1:
            raise ValueError(f"pass_p must be within [0, 1), got {self.pass_p}")
        if len(self.alpha_weights) != len(METRICS) or any(w <= 0 for w in self.alpha_weights):
            raise ValueError(f"alpha_weights needs {len(METRICS)} positive shares, got {self.alpha_weights}")
        if abs(sum(self.alpha_weights) - 1.0) > 1e-9:
            raise ValueError(f"alpha_weights must add up to 1, got {sum(self.alpha_weights)}")


def e_value(x_c: int, x_b: int, q0: float, rho_min: float) -> float:
    """The mixture e-value of ``x_c`` candidate and ``x_b`` baseline events (see the module doc)."""
    if x_c + x_b == 0 or not 0 < q0 < 1:
        return 1.0
    logs = []
    for m in _GRID:
        rho = max(rho_min, 1.0 + 1e-9) * m
        q = rho * q0 / (rho * q0 + 1 - q0)
        logs.append(x_c * math.log(q / q0) + x_b * math.log((1 - q) / (1 - q0)))
    top = max(logs)
    return math.exp(top) * sum(math.exp(v - top) for v in logs) / len(logs) if top < 700 else math.inf


@dataclass(frozen=True)
class _Events:
    metric: str
    x_c: int
    x_b: int
    rho_min: float
    candidate_value: float
    baseline_value: float


class SequentialJudge:
    """Anytime-valid: an event-share e-process per metric. See the module doc."""

    name = "sequential"

    def __init__(self, settings: JudgeSettings | None = None) -> None:
        self.settings = settings or JudgeSettings()

    def _rate_events(self, metric: str, x_c: int, x_b: int, n_c: int, n_b: int, delta: float) -> _Events:
        base_rate = (x_b + 1) / (n_b + 2)  # smoothed, so a clean baseline still gives a finite ratio
        return _Events(
            metric, x_c, x_b, (base_rate + delta) / base_rate, x_c / max(n_c, 1), x_b / max(n_b, 1)
        )

    def _latency_events(self, metric: str, c: ArmSample, b: ArmSample, q: float) -> _Events:
        """Requests slower than the stable revision's ``q`` quantile (the median: a shift of the
        bulk; p95: a slow tail, where a clearly slower candidate gives a large ratio quickly)."""
        cut_ms = b.quantile_ms(q)
        if math.isnan(cut_ms):
            return _Events(metric, 0, 0, 1.0, math.nan, math.nan)
        cut = bucket_of(cut_ms)
        # how much a +latency_increase slowdown would raise the baseline's share over the cut
        shifted = b.slower_than(bucket_of(cut_ms / (1 + self.settings.latency_increase)))
        base_share = max(b.slower_than(cut), 1) / max(b.requests, 1)
        rho_min = max(1.0 + 1e-6, (shifted / max(b.requests, 1)) / base_share)
        return _Events(metric, c.slower_than(cut), b.slower_than(cut), rho_min, c.quantile_ms(q), cut_ms)

    def events(self, c: ArmSample, b: ArmSample, latency_b: ArmSample | None = None) -> list[_Events]:
        s = self.settings
        return [
            self._rate_events("error_rate", c.errors, b.errors, c.requests, b.requests, s.error_rate_delta),
            self._latency_events("latency", c, latency_b if latency_b is not None else b, 0.5),
            self._rate_events(
                "fallback_rate", c.fallbacks, b.fallbacks, c.requests, b.requests, s.flag_rate_delta
            ),
            self._rate_events(
                "guardrail_rate", c.guardrails, b.guardrails, c.requests, b.requests, s.flag_rate_delta
            ),
            self._rate_events(
                "thumbs_down_rate", c.thumbs_down, b.thumbs_down, c.requests, b.requests, s.thumbs_down_delta
            ),
        ]

    def _beyond_margin(self, ev: _Events) -> bool:
        """Whether the candidate's observed median latency is already slower than the baseline's by
        more than the smallest change that matters (``latency_increase``). Such a metric may not
        PASS yet, however small its e-value: the latency events ("slower than the baseline's
        median") can be at most twice as frequent on the candidate, so evidence grows slowly, and a
        candidate several times slower would otherwise PASS a 5% step the moment both revisions
        reach ``min_requests``. The step goes on collecting until the e-process decides. It never
        FAILs anything by itself, so the false-failure bound is unchanged. Rate metrics need no such
        rule (their events are rare, so each one is strong evidence) and would be held back by the
        noise of small counts."""
        if ev.metric != "latency" or math.isnan(ev.candidate_value) or math.isnan(ev.baseline_value):
            return False
        return ev.candidate_value > ev.baseline_value * (1 + self.settings.latency_increase)

    @staticmethod
    def _events_p(ev: _Events, q0: float) -> float:
        """One-sided p of a rate metric's events: P(at least ``x_c`` of the ``x_c + x_b`` events on
        the candidate) if each lands there with its request share ``q0``. Latency: 1 (its own guard)."""
        if ev.metric == "latency" or ev.x_c == 0 or not 0 < q0 < 1:
            return 1.0
        return binomial_tail(ev.x_c, ev.x_c + ev.x_b, q0)

    def judge(
        self, candidate: ArmSample, baseline: ArmSample, latency_baseline: ArmSample | None = None
    ) -> Judgement:
        """``latency_baseline``: judge latency against this sample instead of ``baseline`` (a
        revision carrying the candidate's share of the traffic; see ``rollout.phases.Canary``)."""
        s = self.settings
        metrics = self.events(candidate, baseline, latency_baseline)
        out = []
        for ev, weight in zip(metrics, s.alpha_weights, strict=True):
            if not s.compare_latency and ev.metric == "latency":
                continue  # not comparable across periods; each remaining metric keeps its share
            other = latency_baseline if ev.metric == "latency" and latency_baseline is not None else baseline
            total = candidate.requests + other.requests
            q0 = candidate.requests / total if total else 0.0
            enough = min(candidate.requests, other.requests) >= s.min_requests
            alpha_m = s.alpha * weight
            fail_at, doubt_at = 1 / alpha_m, 1 / math.sqrt(alpha_m)
            e = e_value(ev.x_c, ev.x_b, q0, ev.rho_min)
            if not enough:
                verdict, reason = Verdict.INCONCLUSIVE, f"too little data (< {s.min_requests} requests)"
            elif e >= fail_at:
                verdict, reason = Verdict.FAIL, f"candidate worse: e-value {e:.3g} >= {fail_at:.3g}"
            elif e >= doubt_at:
                verdict, reason = (
                    Verdict.INCONCLUSIVE,
                    f"evidence building: e-value {e:.3g} >= {doubt_at:.3g}",
                )
            elif (p := self._events_p(ev, q0)) < s.pass_p:
                verdict, reason = (
                    Verdict.INCONCLUSIVE,
                    f"{ev.x_c} of {ev.x_c + ev.x_b} events on the candidate against a {q0:.0%} share of "
                    f"the requests (p={p:.2g}): looks worse, not yet significant",
                )
            elif self._beyond_margin(ev):
                verdict, reason = (
                    Verdict.INCONCLUSIVE,
                    f"median {_num(ev.candidate_value)} ms against {_num(ev.baseline_value)} ms: slower than "
                    "the smallest change that matters, not yet significant",
                )
            else:
                verdict, reason = Verdict.PASS, f"no evidence the candidate is worse (e-value {e:.3g})"
            out.append(
                MetricVerdict(
                    ev.metric,
                    "event-share e-process",
                    verdict,
                    e,
                    fail_at,
                    candidate.requests,
                    other.requests,
                    ev.candidate_value,
                    ev.baseline_value,
                    reason,
                )
            )
        return Judgement(self.name, out)


def _num(value: float) -> str:
    return f"{value:.3g}"


def rates(sample: ArmSample) -> dict[str, float]:
    """Plain rates of a sample, for reports."""
    n = max(sample.requests, 1)
    return {
        "requests": float(sample.requests),
        "error_rate": sample.errors / n,
        "fallback_rate": sample.fallbacks / n,
        "guardrail_rate": sample.guardrails / n,
        "p50_ms": sample.quantile_ms(0.5),
        "p99_ms": sample.quantile_ms(0.99),
    }
