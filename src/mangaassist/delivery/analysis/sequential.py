"""The anytime-valid canary judge (the one pipelines use). Design and measurements: ADR 0005.

The test: which revision served a request
-----------------------------------------
While the candidate takes a share of the traffic, the router picks the revision before the request
has any outcome. So if the candidate is no worse, which revision served a request is a coin flip
with the candidate's share ``q0``, *whatever happened to the request*: it erred or not, it was fast
or slow. If the candidate is worse, its requests are over-represented among the bad outcomes. Per
metric the judge keeps a likelihood ratio for that coin, mixed over how much worse the candidate
might be (equal weights over the alternatives ``k``)::

    E = mean over k of  prod over requests of  (q_k(o) / q0)                 if the candidate served it
                                                ((1 - q_k(o)) / (1 - q0))    if the other side did

where ``o`` is the request's outcome and ``q_k(o)`` the probability that a request with that outcome
came from the candidate under alternative ``k``. If the candidate is no worse, each factor has
expectation one whatever the outcome, so ``E`` is a test martingale over the requests and, by Ville's
inequality, ``P(E ever >= 1/alpha) <= alpha``: the judge may be consulted after every request without
raising its false-failure rate. The product needs only counts per outcome and side (``ArmSample``).

* **Rates** (errors, fallbacks, guardrail firings, thumbs-down): the outcome is "the event happened".
  Alternative ``k`` multiplies the candidate's rate by ``rho_k``, so an event came from the candidate
  with ``q = rho*q0 / (rho*q0 + 1 - q0)``; requests without the event keep factor one (for rare events
  they add about 2% of evidence, and without them the e-value is exactly one while nothing happens).
  ``rho`` runs over ``RATE_GRID`` times ``rho_min``, the ratio the smallest increase that matters
  (``error_rate_delta``, ...) makes of the other side's rate: a mixture concentrated on the effects
  that matter (``rho_min`` to twice it) dilutes the evidence least where detection is hardest.
* **Latency**: the outcome is the request's band among ``LATENCY_BANDS`` quantile bands of the two
  sides' *pooled* histogram. Alternative ``k`` makes the candidate ``(1 + latency_increase) ** m_k``
  times slower (``LATENCY_GRID``); with ``u_b`` the normal score of band ``b``'s middle rank and
  ``sigma`` the pooled log-latency's spread, the candidate's log-odds in band ``b`` grow linearly with
  ``u_b`` (``latency_log_lrs``). Every band is evidence, fast ones included (a slow candidate is
  missing from them): three times the evidence per request of the earlier "slower than the stable
  median" count at a 5% share. Bands, scores and spread come from the pooled histogram, the same
  whichever side served each request, so they do not bias the coin.

``alpha`` (per deployment) is split across the metrics (Bonferroni, weighted: 40% errors, 30%
latency, 10% each for fallbacks, guardrail firings and thumbs-down). A tail metric (slower than
the stable p95) was tried and removed: it failed identical candidates on artefacts of a new revision
(fresh upstream connections). A metric FAILs when ``E >= 1/alpha_m``; until both revisions have
``min_requests``, nothing can fail or pass (INCONCLUSIVE: too little data). After that a metric
PASSes unless evidence is building (``E >= 1/sqrt(alpha_m)``), or, for a rate, a plain one-sided
test of its events says the candidate looks worse (``pass_p``, below), or, for latency, the observed
median is already slower than the baseline's by more than ``latency_increase``; each keeps it
INCONCLUSIVE so the step is extended (and its share grown: ``rollout.strategies.grow``).

Why the rate guard: the e-process bets on effects up to ``2 * rho_min``, so at a large share each
candidate event is weak evidence (at 50% a candidate event moves ``E`` by less than x2). A candidate
failing 40% of its requests against a clean stable revision, judged at a 50% step the moment both
have 30 requests, PASSed one time in ten (8 errors against none leave ``E`` below the doubt line).
Holding such a PASS while the candidate's share of the events is significant at ``pass_p`` (a
binomial tail, given the events) stops that (docs/pipelines/cd-01-app.md, "The judge"). The guard
never FAILs anything, so the false-failure bound is unchanged; an identical candidate is at most
held a few looks longer.

Segments: a share that grows
----------------------------
A canary step that stays INCONCLUSIVE grows its share (``rollout.strategies.grow``: 5% -> 10% ->
25%). It is judged in *segments*, one per share, each coin with its own ``q0``: per alternative the
log likelihood ratios of the segments add up before the mixture. Each segment's product is a test
martingale started where the previous one stopped, so the whole is still one, and the evidence
gathered at 5% counts at 10%. ``judge(..., earlier=[Segment, ...])`` takes the finished segments.

What is estimated rather than known
-----------------------------------
``q0`` is the candidate's share of the requests the segment's two sides served (the router splits
conversations, not requests, so the exact share is not known in advance), ``rho_min`` comes from the
other side's rate, and the bands move as the pooled histogram fills. So ``E`` is a test martingale
only approximately: ``benchmarks/canary_judge.py`` measures the false-failure rate at a 5% share
against the stable revision, against a baseline copy at the candidate's share, with a growing share
and at 0.1 request/s. The coin is per request; requests of one conversation share their revision,
which for common outcomes (latency bands) makes the coin lumpier than the test assumes (ADR 0005).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.gates import binomial_tail
from mangaassist.delivery.analysis.judgement import Judgement, MetricVerdict
from mangaassist.delivery.analysis.samples import BUCKETS, LOG_STEP, ArmSample

RATE_GRID: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0)
"""Multiples of ``rho_min`` a rate's e-value mixes over, with equal weight."""
LATENCY_GRID: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0)
"""Slowdowns the latency e-value mixes over, with equal weight: ``(1 + latency_increase) ** m``."""
LATENCY_BANDS = 10
"""Latency bands of equal share of both sides' pooled requests (fewer while they have served fewer
than ``MIN_PER_BAND`` requests per band; below two bands latency has no evidence yet)."""
MIN_PER_BAND = 10
METRICS = ("error_rate", "latency", "fallback_rate", "guardrail_rate", "thumbs_down_rate")
TEST = "event-share e-process"
"""``MetricVerdict.test`` of every metric of this judge (``analysis.evidence`` reads it)."""


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
        if not self.latency_increase > 0:
            raise ValueError(f"latency_increase must be > 0, got {self.latency_increase}")


@dataclass(frozen=True)
class Segment:
    """What both sides served while the candidate's share stayed the same (a step's share grows in
    segments); ``latency_baseline`` as in ``SequentialJudge.judge``."""

    candidate: ArmSample
    baseline: ArmSample
    latency_baseline: ArmSample | None = None


def _mix(log_lrs: Sequence[float]) -> float:
    """The equal-weight mixture of ``exp(log_lrs)``, without overflow."""
    if not log_lrs:
        return 1.0
    top = max(log_lrs)
    if top > 700:
        return math.inf
    return math.exp(top) * sum(math.exp(v - top) for v in log_lrs) / len(log_lrs)


def _rate_log_lrs(x_c: int, x_b: int, q0: float, rhos: Sequence[float]) -> list[float]:
    """Per alternative ``rho``: the log likelihood ratio of which side ``x_c + x_b`` events came from."""
    if x_c + x_b == 0 or not 0 < q0 < 1:
        return [0.0] * len(rhos)
    out = []
    for rho in rhos:
        q = rho * q0 / (rho * q0 + 1 - q0)
        out.append(x_c * math.log(q / q0) + x_b * math.log((1 - q) / (1 - q0)))
    return out


def e_value(x_c: int, x_b: int, q0: float, rho_min: float) -> float:
    """The mixture e-value of ``x_c`` candidate and ``x_b`` baseline events (see the module doc)."""
    rhos = [max(rho_min, 1.0 + 1e-9) * m for m in RATE_GRID]
    return _mix(_rate_log_lrs(x_c, x_b, q0, rhos))


def latency_log_lrs(
    candidate: ArmSample,
    reference: ArmSample,
    slowdowns: Sequence[float],
    bands: int = LATENCY_BANDS,
) -> npt.NDArray[np.float64]:
    """Per slowdown factor: the log likelihood ratio of which side each request came from, given its
    latency band (see the module doc). ``reference`` is the side the candidate is compared with.

    The bands are quantiles of the *pooled* histogram of both sides; each band ``b`` gets the normal
    score ``u_b`` of its middle rank, and the pooled log-latency its spread ``sigma`` (interquartile
    range / 1.349). If the candidate's latencies are the reference's times ``s``, a request in band
    ``b`` came from the candidate with log-odds ``logit q0 + t*u_b - t**2 * (1/2 - q0)``, where
    ``t = log(s) / sigma``: the exact posterior for log-normal latencies, and a monotone one (the
    slower the band, the likelier the candidate) for any others. Everything but ``q0`` comes from the
    pooled histogram, which is the same whichever side served each request: taking the bands or the
    shape from the reference alone made them depend on which requests it served, and with a baseline
    copy at the candidate's share (``q0`` about one half) that failed identical candidates on latency
    twice as often as its alpha allows (ADR 0005, revision 2). Ranks, not latencies, also keep one
    very slow request from deciding alone."""
    out = np.zeros(len(slowdowns), dtype=np.float64)
    n_c, n_r = int(candidate.latency.sum()), int(reference.latency.sum())
    n = n_c + n_r
    k = min(bands, n // MIN_PER_BAND)
    if n_c == 0 or n_r == 0 or k < 2:
        return out
    q0 = n_c / n
    cum = np.concatenate(([0], np.cumsum(candidate.latency + reference.latency)))
    inner = np.searchsorted(cum, n * np.arange(1, k) / k, side="left")
    edges = np.unique(np.concatenate(([0], inner, [BUCKETS])))
    edges = edges[np.concatenate(([True], np.diff(cum[edges]) > 0))]  # no empty band
    if len(edges) < 3:  # every request in one band: latency says nothing yet
        return out
    edges[-1] = BUCKETS
    cum_c = np.concatenate(([0], np.cumsum(candidate.latency)))
    c_band = np.diff(cum_c[edges]).astype(np.float64)
    r_band = np.diff(cum[edges]) - c_band
    middle = (cum[edges[:-1]] + cum[edges[1:]]) / (2 * n)
    scores = np.array([_NORMAL.inv_cdf(m) for m in middle])
    q25, q75 = np.interp((0.25 * n, 0.75 * n), cum, _EDGE_INDEX)
    # the spread, taken at least as wide as the smallest slowdown: no alternative bets on more than
    # a shift of a few spreads, however narrow the histogram (a cache answering in one bucket)
    logs = np.log(np.asarray(slowdowns, dtype=np.float64))
    sigma = max(float(q75 - q25) * LOG_STEP / 1.349, float(logs.min()))
    t = logs[:, None] / sigma
    logit = math.log(q0 / (1 - q0)) + t * scores[None, :] - t**2 * (0.5 - q0)
    q = 1 / (1 + np.exp(-logit))
    out[:] = np.log(q / q0) @ c_band + np.log((1 - q) / (1 - q0)) @ r_band
    return out


_NORMAL = NormalDist()
_EDGE_INDEX = np.arange(BUCKETS + 1, dtype=np.float64)


@dataclass(frozen=True)
class _Metric:
    metric: str
    log_lrs: list[float]
    candidate_n: int
    baseline_n: int
    x_c: int
    """Events on the candidate (rates; 0 for latency)."""
    x_b: int
    q0: float
    """The candidate's share of the requests (event-weighted over segments, for the rate guard)."""
    candidate_value: float
    baseline_value: float


class SequentialJudge:
    """Anytime-valid: a which-side-served-it e-process per metric. See the module doc."""

    name = "sequential"
    rate_grid: tuple[float, ...] = RATE_GRID
    latency_grid: tuple[float, ...] = LATENCY_GRID
    latency_bands: int = LATENCY_BANDS

    def __init__(self, settings: JudgeSettings | None = None) -> None:
        self.settings = settings or JudgeSettings()

    # -- evidence per metric ----------------------------------------------------------------------

    def _rate(self, metric: str, segments: Sequence[Segment], delta: float) -> _Metric:
        def count(s: ArmSample) -> int:
            return int(getattr(s, _COUNTS[metric]))

        n_c = sum(s.candidate.requests for s in segments)
        n_b = sum(s.baseline.requests for s in segments)
        x_c = sum(count(s.candidate) for s in segments)
        x_b = sum(count(s.baseline) for s in segments)
        base_rate = (x_b + 1) / (n_b + 2)  # smoothed, so a clean baseline still gives a finite ratio
        rho_min = max((base_rate + delta) / base_rate, 1.0 + 1e-9)
        rhos = [rho_min * m for m in self.rate_grid]
        log_lrs = [0.0] * len(rhos)
        expected = 0.0
        for s in segments:
            total = s.candidate.requests + s.baseline.requests
            q0 = s.candidate.requests / total if total else 0.0
            xc, xb = count(s.candidate), count(s.baseline)
            log_lrs = [a + b for a, b in zip(log_lrs, _rate_log_lrs(xc, xb, q0, rhos), strict=True)]
            expected += q0 * (xc + xb)
        q0_all = expected / (x_c + x_b) if x_c + x_b else _share(n_c, n_b)
        return _Metric(metric, log_lrs, n_c, n_b, x_c, x_b, q0_all, x_c / max(n_c, 1), x_b / max(n_b, 1))

    def _latency(self, segments: Sequence[Segment]) -> _Metric:
        slowdowns = [(1 + self.settings.latency_increase) ** m for m in self.latency_grid]
        log_lrs = np.zeros(len(slowdowns), dtype=np.float64)
        candidates, references = [], []
        for s in segments:
            ref = s.latency_baseline if s.latency_baseline is not None else s.baseline
            log_lrs += latency_log_lrs(s.candidate, ref, slowdowns, self.latency_bands)
            candidates.append(s.candidate)
            references.append(ref)
        candidate, reference = _merged(candidates), _merged(references)
        return _Metric(
            "latency",
            log_lrs.tolist(),
            candidate.requests,
            reference.requests,
            0,
            0,
            _share(candidate.requests, reference.requests),
            candidate.quantile_ms(0.5),
            reference.quantile_ms(0.5),
        )

    def evidence(self, segments: Sequence[Segment]) -> list[_Metric]:
        s = self.settings
        return [
            self._rate("error_rate", segments, s.error_rate_delta),
            self._latency(segments),
            self._rate("fallback_rate", segments, s.flag_rate_delta),
            self._rate("guardrail_rate", segments, s.flag_rate_delta),
            self._rate("thumbs_down_rate", segments, s.thumbs_down_delta),
        ]

    # -- verdicts ---------------------------------------------------------------------------------

    def _beyond_margin(self, m: _Metric) -> bool:
        """Whether the candidate's observed median latency is already slower than the baseline's by
        more than the smallest change that matters (``latency_increase``). Such a metric may not
        PASS yet, however small its e-value: a candidate several times slower would otherwise PASS
        a 5% step the moment both revisions reach ``min_requests`` (the e-process needs a few dozen
        requests to be sure). The step goes on collecting until the e-process decides. It never
        FAILs anything by itself, so the false-failure bound is unchanged."""
        if m.metric != "latency" or math.isnan(m.candidate_value) or math.isnan(m.baseline_value):
            return False
        return m.candidate_value > m.baseline_value * (1 + self.settings.latency_increase)

    @staticmethod
    def _events_p(m: _Metric) -> float:
        """One-sided p of a rate metric's events: P(at least ``x_c`` of the ``x_c + x_b`` events on
        the candidate) if each lands there with its request share ``q0`` (event-weighted over
        segments: a binomial with the mean share is wider than the segments' mix, so this p is
        never too small). Latency: 1 (its own guard)."""
        if m.metric == "latency" or m.x_c == 0 or not 0 < m.q0 < 1:
            return 1.0
        return binomial_tail(m.x_c, m.x_c + m.x_b, m.q0)

    def judge(
        self,
        candidate: ArmSample,
        baseline: ArmSample,
        latency_baseline: ArmSample | None = None,
        *,
        earlier: Sequence[Segment] = (),
    ) -> Judgement:
        """``latency_baseline``: judge latency against this sample instead of ``baseline`` (a
        revision carrying the candidate's share of the traffic; see ``rollout.phases.Canary``).
        ``earlier``: the finished segments of the same step at other shares (the module doc);
        ``candidate``, ``baseline`` and ``latency_baseline`` are then the current segment."""
        s = self.settings
        segments = [*earlier, Segment(candidate, baseline, latency_baseline)]
        out = []
        for m, weight in zip(self.evidence(segments), s.alpha_weights, strict=True):
            if not s.compare_latency and m.metric == "latency":
                continue  # not comparable across periods; each remaining metric keeps its share
            enough = min(m.candidate_n, m.baseline_n) >= s.min_requests
            alpha_m = s.alpha * weight
            fail_at, doubt_at = 1 / alpha_m, 1 / math.sqrt(alpha_m)
            e = _mix(m.log_lrs)
            if not enough:
                verdict, reason = Verdict.INCONCLUSIVE, f"too little data (< {s.min_requests} requests)"
            elif e >= fail_at:
                verdict, reason = Verdict.FAIL, f"candidate worse: e-value {e:.3g} >= {fail_at:.3g}"
            elif e >= doubt_at:
                verdict, reason = (
                    Verdict.INCONCLUSIVE,
                    f"evidence building: e-value {e:.3g} >= {doubt_at:.3g}",
                )
            elif (p := self._events_p(m)) < s.pass_p:
                verdict, reason = (
                    Verdict.INCONCLUSIVE,
                    f"{m.x_c} of {m.x_c + m.x_b} events on the candidate against a {m.q0:.0%} share of "
                    f"the requests (p={p:.2g}): looks worse, not yet significant",
                )
            elif self._beyond_margin(m):
                verdict, reason = (
                    Verdict.INCONCLUSIVE,
                    f"median {_num(m.candidate_value)} ms against {_num(m.baseline_value)} ms: slower than "
                    "the smallest change that matters, not yet significant",
                )
            else:
                verdict, reason = Verdict.PASS, f"no evidence the candidate is worse (e-value {e:.3g})"
            out.append(
                MetricVerdict(
                    m.metric,
                    TEST,
                    verdict,
                    e,
                    fail_at,
                    m.candidate_n,
                    m.baseline_n,
                    m.candidate_value,
                    m.baseline_value,
                    reason,
                )
            )
        return Judgement(self.name, out)


_COUNTS = {
    "error_rate": "errors",
    "fallback_rate": "fallbacks",
    "guardrail_rate": "guardrails",
    "thumbs_down_rate": "thumbs_down",
}


def _merged(samples: Sequence[ArmSample]) -> ArmSample:
    out = samples[0]
    for more in samples[1:]:
        out = out.merged(more)
    return out


def _share(n_c: int, n_b: int) -> float:
    return n_c / (n_c + n_b) if n_c + n_b else 0.0


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
