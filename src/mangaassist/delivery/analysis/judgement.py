"""Verdicts as data: for every metric, the test, its statistic, the sample sizes and the decision."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mangaassist.core.verdict import Verdict
from mangaassist.delivery.analysis.samples import ArmSample


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    """``error_rate``, ``latency``, ``fallback_rate``, ``guardrail_rate`` or ``thumbs_down_rate``."""
    test: str
    """How it was decided, e.g. ``event-share e-process``, ``mann-whitney``, ``threshold``."""
    verdict: Verdict
    statistic: float
    """The test's statistic: an e-value, a p-value or the observed value, per ``test``."""
    threshold: float
    """Where the statistic decides: e >= threshold fails, p <= threshold fails, value > threshold fails."""
    candidate_n: int
    baseline_n: int
    candidate_value: float
    baseline_value: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d


@dataclass(frozen=True)
class Judgement:
    """A judge's answer: the worst metric verdict wins."""

    judge: str
    metrics: list[MetricVerdict] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return Verdict.worst(m.verdict for m in self.metrics)

    @property
    def failing(self) -> list[MetricVerdict]:
        return [m for m in self.metrics if m.verdict is Verdict.FAIL]

    def summary(self) -> str:
        parts = [f"{m.metric}={m.verdict.value}({m.statistic:.3g})" for m in self.metrics]
        return f"{self.judge}: {self.verdict.value} " + " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "verdict": self.verdict.value,
            "metrics": [m.as_dict() for m in self.metrics],
        }


class CanaryJudge(Protocol):
    """Compares a candidate with the stable revision on what both served over the same period.

    A judge is pure: it may be consulted as often as the caller likes; whether that inflates its
    false-failure rate is the judge's documented property.
    """

    name: str

    def judge(self, candidate: ArmSample, baseline: ArmSample) -> Judgement: ...
