"""The rollout executor: read what both revisions served, consult the judge, act on the decision.

Called by the rollout phases (``rollout.phases``). ``TrafficWindow`` turns the request outcomes
since a cursor (``Metrics.outcomes(service, cursor)``, provider-neutral) into one ``ArmSample`` per
revision, leaving out pinned requests (smoke and load tests) and shadow copies. ``Consultation`` is
the judgement, the decision (``strategies.decide``) and the numbers the audit records. ``shift`` and
``restore`` are the only functions here that change the world; the pipeline calls them inside
``ctx.effect`` so that a resumed run never applies them twice.

A phase whose share grows (``strategies.grow``) splits its window where the share changed
(``TrafficWindow.split``): the judge weighs each segment with its own share and keeps the evidence of
all of them (``analysis.Segment``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis import (
    ArmSample,
    Judgement,
    JudgeSettings,
    Observation,
    Segment,
    SequentialJudge,
)
from mangaassist.delivery.rollout.strategies import Action, Baseline, Phase, decide
from mangaassist.platform.compute import Compute, RevisionHealth
from mangaassist.platform.metrics import Metrics, OutcomeKind, RequestOutcome


class JudgedWindow(Protocol):
    """What a phase has read since its shift: one sample per arm (``executor.TrafficWindow`` for
    services, CD-06's bucket window for config versions)."""

    @property
    def candidate_sample(self) -> ArmSample: ...

    @property
    def stable_sample(self) -> ArmSample:
        """The stable side (with a baseline copy: the stable release as a whole)."""
        ...

    @property
    def baseline_sample(self) -> ArmSample:
        """The baseline copy alone (empty without one)."""
        ...

    @property
    def baseline(self) -> str | None: ...

    @property
    def first_candidate_error_at(self) -> float | None: ...

    @property
    def cursor(self) -> Any:
        """Where the next read starts (JSON: it goes into the phase's output)."""
        ...

    def read(self) -> int:
        """Read what was served since the last read; return how many observations were new."""
        ...


@runtime_checkable
class SegmentedWindow(Protocol):
    """A window that can be split where the candidate's share changed (a phase that grows)."""

    def split(self, cursor: Any) -> None:
        """From ``cursor`` on (exclusive), observations belong to a new segment."""
        ...

    def segments(self) -> list[Segment]:
        """The window's samples per segment, oldest first (one while the share never changed)."""
        ...


def window_segments(window: JudgedWindow) -> list[Segment]:
    """``window``'s segments; a window that cannot be split is one segment."""
    if isinstance(window, SegmentedWindow):
        return window.segments()
    latency = window.baseline_sample if window.baseline is not None else None
    return [Segment(window.candidate_sample, window.stable_sample, latency)]


@dataclass
class TrafficWindow:
    """Observations of two revisions after ``cursor``, accumulated as they are read.

    With a ``baseline`` (a fresh copy of the stable release carrying the candidate's share), its
    requests count twice: in ``stable_sample`` (the stable release: the rates are compared against
    all of it, the more data the stronger each candidate event weighs) and in ``baseline_sample``
    (the latency is compared against it alone: the same share, the same load)."""

    service: str
    candidate: str
    stable: str
    cursor: int
    candidate_sample: ArmSample = field(default_factory=ArmSample)
    stable_sample: ArmSample = field(default_factory=ArmSample)
    first_candidate_error_at: float | None = None
    """Wall-clock time of the candidate's first failed request in this window (for reports)."""
    lost: int = 0
    """Observations that fell out of the router's buffer before they were read."""
    baseline: str | None = None
    baseline_sample: ArmSample = field(default_factory=ArmSample)
    boundaries: list[int] = field(default_factory=list)
    """Cursors where the candidate's share changed inside the window (``split``)."""
    _marks: list[tuple[ArmSample, ArmSample, ArmSample]] = field(default_factory=list, init=False, repr=False)
    """The three samples as they were at each boundary that later observations passed."""

    def split(self, cursor: Any) -> None:
        """Observations after ``cursor`` (a growth's shift) belong to a new segment."""
        self.boundaries.append(int(cursor))

    def segments(self) -> list[Segment]:
        now = (self.candidate_sample, self.stable_sample, self.baseline_sample)
        # a boundary that no observation has passed yet: everything so far is before it
        marks = [*self._marks, *[now] * (len(self.boundaries) - len(self._marks)), now]
        out, before = [], (ArmSample(), ArmSample(), ArmSample())
        for mark in marks:
            c, s, b = (m.minus(p) for m, p in zip(mark, before, strict=True))
            out.append(Segment(c, s, b if self.baseline is not None else None))
            before = mark
        return out

    def read(self, metrics: Metrics) -> int:
        """Add the observations newer than the cursor; return how many were read."""
        batch = metrics.outcomes(self.service, self.cursor)
        self.lost += batch.lost
        for outcome in batch.outcomes:
            self.add(outcome)
        self.cursor = batch.cursor
        return len(batch.outcomes)

    def add(self, outcome: RequestOutcome) -> None:
        while len(self._marks) < len(self.boundaries) and outcome.seq > self.boundaries[len(self._marks)]:
            self._marks.append(
                (
                    self.candidate_sample.merged(ArmSample()),
                    self.stable_sample.merged(ArmSample()),
                    self.baseline_sample.merged(ArmSample()),
                )
            )
        revision = outcome.revision
        if revision == self.candidate:
            samples = [self.candidate_sample]
        elif revision == self.stable:
            samples = [self.stable_sample]
        elif self.baseline is not None and revision == self.baseline:
            samples = [self.stable_sample, self.baseline_sample]
        else:
            return
        if outcome.kind is OutcomeKind.FEEDBACK:
            for sample in samples:
                sample.add_feedback(outcome.rating or "")
            return
        if outcome.pinned:
            return
        status = 0 if outcome.error else outcome.status
        observation = Observation(status, outcome.latency_ms, outcome.fallback, outcome.guardrail)
        for sample in samples:
            sample.add(observation)
        if observation.failed and revision == self.candidate and self.first_candidate_error_at is None:
            self.first_candidate_error_at = outcome.time or time.time()


@dataclass(frozen=True)
class Consultation:
    """One consultation of the judge during a phase: the judgement and what to do about it."""

    phase: str
    judgement: Judgement
    action: Action
    elapsed_s: float
    candidate: ArmSample
    baseline: ArmSample
    grown: tuple[dict[str, Any], ...] = ()
    """The phase's growths so far (``strategies.grow``): each shift's ``weight`` and ``at``."""

    @property
    def weight(self) -> float | None:
        """The candidate's share now, if the phase grew it (else the phase's own weight applies)."""
        return float(self.grown[-1]["weight"]) if self.grown else None

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict

    def numbers(self) -> dict[str, float]:
        """The verdict's numbers for the audit (flat floats, as the engine records them)."""
        c, b = self.candidate, self.baseline
        out: dict[str, float] = {
            "candidate_requests": float(c.requests),
            "stable_requests": float(b.requests),
            "candidate_errors": float(c.errors),
            "stable_errors": float(b.errors),
            "candidate_error_rate": _rate(c.errors, c.requests),
            "stable_error_rate": _rate(b.errors, b.requests),
            "candidate_p50_ms": _finite(c.quantile_ms(0.5)),
            "stable_p50_ms": _finite(b.quantile_ms(0.5)),
            "candidate_p99_ms": _finite(c.quantile_ms(0.99)),
            "stable_p99_ms": _finite(b.quantile_ms(0.99)),
            "candidate_fallbacks": float(c.fallbacks),
            "stable_fallbacks": float(b.fallbacks),
            "elapsed_s": round(self.elapsed_s, 3),
        }
        if self.weight is not None:
            out["candidate_weight"] = self.weight
        for metric in self.judgement.metrics:
            out[f"e_{metric.metric}"] = _finite(metric.statistic)
        worst = self.judgement.failing or [m for m in self.judgement.metrics if m.verdict is self.verdict]
        if worst:
            out["threshold"] = worst[0].threshold
        return out

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "phase": self.phase,
            "action": self.action.value,
            "judgement": self.judgement.as_dict(),
            "summary": self.judgement.summary(),
        }
        if self.grown:
            out["grown"] = [{"weight": g.get("weight"), "at": g.get("at")} for g in self.grown]
        return out


def _rate(x: int, n: int) -> float:
    return round(x / n, 6) if n else 0.0


def _finite(value: float) -> float:
    if math.isnan(value):
        return -1.0
    return 1e300 if math.isinf(value) else round(value, 3)


def judge_settings(alpha: float, min_requests: int) -> JudgeSettings:
    return JudgeSettings(alpha=alpha, min_requests=min_requests)


def consult(
    judge: SequentialJudge,
    phase: Phase,
    window: JudgedWindow,
    elapsed_s: float,
    pre_switch: ArmSample | None = None,
    grown: Sequence[dict[str, Any]] = (),
) -> Consultation:
    """Judge the window (against ``pre_switch`` for a PRE_SWITCH phase) and decide. A window split
    where its share grew is judged segment by segment (``window_segments``)."""
    baseline = window.stable_sample
    if phase.baseline is Baseline.PRE_SWITCH and pre_switch is not None:
        baseline = pre_switch
        # another period: latency is not comparable (the latency-budget gate guards it)
        judge = SequentialJudge(dataclasses.replace(judge.settings, compare_latency=False))
        judgement = judge.judge(window.candidate_sample, baseline)
    else:
        *earlier, now = window_segments(window)
        judgement = judge.judge(now.candidate, now.baseline, now.latency_baseline, earlier=earlier)
    action = decide(phase, judgement.verdict, window.candidate_sample.requests, elapsed_s)
    return Consultation(
        phase.name, judgement, action, elapsed_s, window.candidate_sample, baseline, tuple(grown)
    )


def shift(
    compute: Compute,
    metrics: Metrics,
    service: str,
    candidate: str,
    stable: str,
    weight: float,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Give the candidate ``weight``% of new conversations (one atomic table swap) and return the
    stats cursor right after it, which is where the phase's window begins.

    With a ``baseline`` (a fresh copy of the stable release) it gets the same share as the candidate
    (at most what is left), the stable revision the rest: the judge then compares two revisions that
    carry the same load."""
    if weight >= 100:
        weights = {candidate: 100.0}
    elif baseline is not None:
        share = min(weight, 100.0 - weight)
        weights = {candidate: weight, baseline: share, stable: 100.0 - weight - share}
    else:
        weights = {candidate: weight, stable: 100.0 - weight}
    applied = compute.set_weights(service, weights)
    cursor = metrics.cursor(service)
    return {"weights": dict(applied), "cursor": cursor, "at": time.time()}


def restore(compute: Compute, service: str, stable: str) -> dict[str, Any]:
    """All new conversations to the stable revision at once; its time is what the drills measure."""
    started = time.perf_counter()
    applied = compute.set_weights(service, {stable: 100.0})
    return {"weights": dict(applied), "at": time.time(), "took_ms": (time.perf_counter() - started) * 1000}


def candidate_health(compute: Compute, service: str, candidate: str) -> tuple[RevisionHealth | None, str]:
    """The candidate's health now (None if it is gone) and the reason the platform gives."""
    for rev in compute.status(service).revisions:
        if rev.name == candidate:
            return rev.health, rev.reason or ""
    return None, "the revision is gone"
