"""Canary evidence over time: what a judged rollout phase saw at each consultation of its judge.

**Recording.** ``rollout.phases.run_phase`` consults the ``SequentialJudge`` every 0.2 s and, until
now, recorded only the last consultation (``Consultation.detail()``: the judgement with each metric's
final statistic, threshold and verdict). An ``EvidenceTrail`` (one per phase step, in the run's
``PhaseMemory``) keeps every metric's statistic at each consultation, bounded: at most
``MAX_POINTS`` points, evenly thinned by consultations (when it is full, every other point goes and
only every second consultation is kept from then on), and the deciding consultation always last. The
phase writes it into the step's detail under ``"evidence"`` when it ends (done or failed); nothing
here changes what the judge or the phase decides. Its shape (``EvidenceTrail.as_dict``)::

    {"version": 1, "shifted_at": 1736337600.0, "consultations": 873, "every": 8,
     "t": [0.0, 1.6, ...], "candidate_n": [0, 12, ...], "baseline_n": [0, 230, ...],
     "metrics": {"error_rate": {"test": "event-share e-process", "threshold": 250.0,
                                "statistic": [1.0, 0.93, ...], "verdicts": "IIIP..."}}}

``t`` is seconds since the phase's shift (the judge's ``elapsed_s``), ``verdicts`` one letter per point
(``P``, ``I``, ``F``; ``-`` where a metric was not judged). Statistics are rounded to 4 significant
digits; +infinity is written ``1e300`` (as the step's numbers write it), NaN ``null``. Limits: a step
still running or waiting has no evidence yet (the engine stores a waiting step's detail only when it
starts waiting); a phase resumed in another process keeps the points from its resume on.

**Reading.** ``canary_evidence(steps)`` finds the judged phases among a run's ``StepRecord``s and
returns one ``EvidenceSeries`` per phase and metric: the points over time, the threshold, the
direction, the metric's verdict and the phase's decision with its time. Steps recorded before the
trail existed give one point, the final judgement. Pure: no IO, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mangaassist.delivery.analysis.judgement import Judgement
from mangaassist.delivery.engine.model import StepRecord, StepStatus

MAX_POINTS = 120
"""Points an ``EvidenceTrail`` keeps per phase (about 7 KB of JSON with five metrics)."""
EVIDENCE_VERSION = 1
E_PROCESS = "event-share e-process"
"""``MetricVerdict.test`` of the ``SequentialJudge``: an e-value, FAIL at ``e >= threshold`` and PASS
only below ``sqrt(threshold)`` (its doubt line, ``1/sqrt(alpha_m)``; see ``analysis.sequential``)."""
INFINITY = 1e300
"""How +infinity is written in JSON (as ``rollout.executor`` writes the step's numbers)."""

_LETTER = {"PASS": "P", "INCONCLUSIVE": "I", "FAIL": "F"}
_VERDICT = {letter: verdict for verdict, letter in _LETTER.items()}
_LOWER_IS_WORSE = frozenset({"mann-whitney"})
"""Tests whose statistic fails when it is *at or below* the threshold (a p-value)."""


# -- recording ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tick:
    t: float
    candidate_n: int
    baseline_n: int
    statistics: dict[str, tuple[float, str]]
    """metric -> (statistic, verdict letter)."""


@dataclass
class EvidenceTrail:
    """The bounded trajectory of one phase's consultations of its judge (see the module doc)."""

    shifted_at: float | None = None
    """Wall-clock time (epoch seconds) of the phase's shift: where ``t`` counts from."""
    max_points: int = MAX_POINTS
    consultations: int = 0
    every: int = 1
    """Only consultations whose index is a multiple of this are kept (it doubles when full)."""
    _kept: list[_Tick] = field(default_factory=list, init=False, repr=False)
    _last: _Tick | None = field(default=None, init=False, repr=False)
    _tests: dict[str, tuple[str, float]] = field(default_factory=dict, init=False, repr=False)
    """metric -> (test, threshold), in the judgement's order."""

    def __post_init__(self) -> None:
        if self.max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {self.max_points}")

    def record(self, elapsed_s: float, judgement: Judgement, candidate_n: int, baseline_n: int) -> None:
        """Add one consultation: ``elapsed_s`` since the shift, the judgement, the sample sizes."""
        for m in judgement.metrics:
            self._tests.setdefault(m.metric, (m.test, float(m.threshold)))
        tick = _Tick(
            float(elapsed_s),
            int(candidate_n),
            int(baseline_n),
            {m.metric: (float(m.statistic), _LETTER.get(m.verdict.value, "-")) for m in judgement.metrics},
        )
        if self.consultations % self.every == 0:
            self._kept.append(tick)
            if len(self._kept) >= self.max_points:  # one place stays free for the newest
                self._kept = self._kept[::2]
                self.every *= 2
        self._last = tick
        self.consultations += 1

    def ticks(self) -> list[_Tick]:
        """The kept consultations and, last, the newest one (at most ``max_points``)."""
        if self._last is None:
            return []
        if self._kept and self._kept[-1] is self._last:
            return list(self._kept)
        return [*self._kept, self._last]

    def as_dict(self) -> dict[str, Any]:
        """JSON for the step's detail (``"evidence"``)."""
        ticks = self.ticks()
        return {
            "version": EVIDENCE_VERSION,
            "shifted_at": self.shifted_at,
            "consultations": self.consultations,
            "every": self.every,
            "t": [round(k.t, 3) for k in ticks],
            "candidate_n": [k.candidate_n for k in ticks],
            "baseline_n": [k.baseline_n for k in ticks],
            "metrics": {
                metric: {
                    "test": test,
                    "threshold": _json_float(threshold, digits=None),
                    "statistic": [_json_float(k.statistics.get(metric, (math.nan, "-"))[0]) for k in ticks],
                    "verdicts": "".join(k.statistics.get(metric, (math.nan, "-"))[1] for k in ticks),
                }
                for metric, (test, threshold) in self._tests.items()
            },
        }


def _json_float(value: float, digits: int | None = 4) -> float | None:
    """A float JSON can carry: NaN -> None, +-infinity -> +-``INFINITY``, else rounded."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return INFINITY if value > 0 else -INFINITY
    return float(f"{value:.{digits}g}") if digits else value


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidencePoint:
    """One consultation of the judge, for one metric."""

    t: float
    """Seconds since the phase's shift (since the analysis started)."""
    value: float | None
    """The statistic (an e-value for the sequential judge); None where it was not a number."""
    verdict: str | None = None
    """The metric's verdict at that consultation (PASS, INCONCLUSIVE, FAIL), if recorded."""
    candidate_n: int | None = None
    baseline_n: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "value": self.value,
            "verdict": self.verdict,
            "candidate_n": self.candidate_n,
            "baseline_n": self.baseline_n,
        }


@dataclass(frozen=True)
class EvidenceSeries:
    """One metric of one judged phase: its statistic over time against its threshold, and the decision."""

    run_id: str
    step: str
    """The engine step (``canary-5``, ``switch``...)."""
    step_index: int
    metric: str
    test: str
    """How the metric was judged (``event-share e-process``: an e-value)."""
    points: tuple[EvidencePoint, ...]
    threshold: float | None
    """Where the statistic decides FAIL (``e >= threshold`` for an e-value)."""
    higher_is_worse: bool
    """True: FAIL at or above the threshold (e-values); False: at or below it (p-values)."""
    pass_below: float | None
    """For an e-value: the doubt line, below which the metric may PASS (``sqrt(threshold)``)."""
    verdict: str | None
    """The metric's final verdict (PASS, INCONCLUSIVE, FAIL)."""
    reason: str | None
    """The judge's reason for that verdict."""
    decision: str | None
    """What the phase did: ``proceed`` (the judge passed, or a bake ended), ``approved`` (inconclusive at
    its limit, a person let it go on), ``rollback`` (FAIL, or inconclusive at its limit), ``rejected``
    (inconclusive, a person rejected it: rolled back), ``stopped`` (the candidate became unhealthy or a
    page alert fired: rolled back without the judge); None while undecided."""
    decision_verdict: str | None
    """The phase's verdict (the worst metric's) when it decided."""
    decided_t: float | None
    """Seconds since the shift at the deciding consultation."""
    decided_at: str | None
    """When (ISO 8601, UTC)."""
    decisive: bool
    """This metric's verdict is the one the phase decided on (a FAIL among PASSes, say)."""
    started_at: str | None
    """When the analysis started: the phase's shift (ISO 8601, UTC), if recorded."""
    step_status: str
    step_reason: str | None
    consultations: int | None = None
    """How many times the judge was consulted (None: recorded before the trail existed)."""
    every: int | None = None
    """The trail kept one consultation in ``every`` (plus the deciding one)."""

    @property
    def scale(self) -> str:
        """``log`` for e-values, else ``linear``."""
        return "log" if self.test == E_PROCESS else "linear"

    @property
    def decision_point(self) -> EvidencePoint | None:
        """The point at the decision (the last one at or before ``decided_t``), or None."""
        if self.decision is None or not self.points:
            return None
        if self.decided_t is None:
            return self.points[-1]
        before = [p for p in self.points if p.t <= self.decided_t + 1e-9]
        return before[-1] if before else self.points[0]

    def label(self) -> str:
        """A short caption of the decision, e.g. ``rollback (FAIL) at 12.4 s``."""
        if self.decision is None:
            return "no decision yet"
        text = self.decision
        if self.decision_verdict:
            text += f" ({self.decision_verdict})"
        if self.decided_t is not None:
            text += f" at {self.decided_t:.1f} s"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (``json.dumps(..., allow_nan=False)`` accepts it)."""
        return {
            "run_id": self.run_id,
            "step": self.step,
            "step_index": self.step_index,
            "metric": self.metric,
            "test": self.test,
            "scale": self.scale,
            "higher_is_worse": self.higher_is_worse,
            "threshold": self.threshold,
            "pass_below": self.pass_below,
            "points": [p.as_dict() for p in self.points],
            "verdict": self.verdict,
            "reason": self.reason,
            "decision": self.decision,
            "decision_verdict": self.decision_verdict,
            "decided_t": self.decided_t,
            "decided_at": self.decided_at,
            "decisive": self.decisive,
            "label": self.label(),
            "started_at": self.started_at,
            "step_status": self.step_status,
            "step_reason": self.step_reason,
            "consultations": self.consultations,
            "every": self.every,
        }


def canary_evidence(steps: list[StepRecord]) -> list[EvidenceSeries]:
    """Per judged phase (in step order) and metric (in the judge's order), its evidence over time.

    A judged phase is a step whose detail holds the judge's ``judgement`` (a rollout phase that
    decided) or an ``evidence`` trail (also a phase stopped because its candidate became unhealthy).
    Other steps (builds, gates, a shadow, a phase that only shifted) give nothing."""
    out: list[EvidenceSeries] = []
    for step in sorted(steps, key=lambda s: s.index):
        out.extend(_series_of(step))
    return out


def _series_of(step: StepRecord) -> list[EvidenceSeries]:
    detail = _dict(step.detail) or {}
    judgement = _dict(detail.get("judgement"))
    trail = _dict(detail.get("evidence"))
    if judgement is None and trail is None:
        return []
    judged = _list((judgement or {}).get("metrics"))
    final = {str(m["metric"]): m for m in judged if isinstance(m, dict) and "metric" in m}
    trail_metrics = _dict((trail or {}).get("metrics")) or {}
    names = list(final) + [
        str(name) for name, v in trail_metrics.items() if isinstance(v, dict) and str(name) not in final
    ]
    numbers = _dict(detail.get("numbers")) or {}
    decision = _decision(step, detail, judgement)
    verdict = _str(detail.get("verdict")) or _str((judgement or {}).get("verdict"))
    shifted_at = _num((trail or {}).get("shifted_at"))
    if shifted_at is None:
        shifted_at = _num((_dict(step.output) or {}).get("shifted_at"))
    times = [_num(t) for t in _list((trail or {}).get("t"))]
    decided_t = _num(numbers.get("elapsed_s"))
    if decided_t is None and times and decision is not None:
        decided_t = times[-1]
    decided_at = None
    if decision is not None:
        if shifted_at is not None and decided_t is not None:
            decided_at = _iso(shifted_at + decided_t)
        else:
            decided_at = step.finished_at
    series = []
    for name in names:
        m: dict[str, Any] = final.get(name, {})
        recorded = _dict(trail_metrics.get(name))
        test = _str(m.get("test")) or _str((recorded or {}).get("test")) or ""
        threshold = _num(m.get("threshold"))
        if threshold is None:
            threshold = _num((recorded or {}).get("threshold"))
        metric_verdict = _str(m.get("verdict"))
        if recorded is not None and times:
            points = _trail_points(trail or {}, recorded, times)
        elif m:
            points = (
                EvidencePoint(
                    decided_t if decided_t is not None else 0.0,
                    _value(m.get("statistic")),
                    metric_verdict,
                    _int(m.get("candidate_n")),
                    _int(m.get("baseline_n")),
                ),
            )
        else:
            points = ()
        if metric_verdict is None and points:
            metric_verdict = points[-1].verdict
        series.append(
            EvidenceSeries(
                run_id=step.run_id,
                step=step.name,
                step_index=step.index,
                metric=name,
                test=test,
                points=points,
                threshold=threshold,
                higher_is_worse=test not in _LOWER_IS_WORSE,
                pass_below=_doubt_line(test, threshold),
                verdict=metric_verdict,
                reason=_str(m.get("reason")),
                decision=decision,
                decision_verdict=verdict,
                decided_t=decided_t if decision is not None else None,
                decided_at=decided_at,
                decisive=decision is not None and verdict is not None and metric_verdict == verdict,
                started_at=_iso(shifted_at) if shifted_at is not None else None,
                step_status=step.status.value,
                step_reason=step.reason,
                consultations=_int((trail or {}).get("consultations")),
                every=_int((trail or {}).get("every")),
            )
        )
    return series


def _trail_points(
    trail: dict[str, Any], recorded: dict[str, Any], times: list[float | None]
) -> tuple[EvidencePoint, ...]:
    values = _list(recorded.get("statistic"))
    letters = _str(recorded.get("verdicts")) or ""
    cand = _list(trail.get("candidate_n"))
    base = _list(trail.get("baseline_n"))
    points = []
    for i, t in enumerate(times):
        if t is None:
            continue
        points.append(
            EvidencePoint(
                t,
                _value(values[i]) if i < len(values) else None,
                _VERDICT.get(letters[i]) if i < len(letters) else None,
                _int(cand[i]) if i < len(cand) else None,
                _int(base[i]) if i < len(base) else None,
            )
        )
    return tuple(points)


def _decision(step: StepRecord, detail: dict[str, Any], judgement: dict[str, Any] | None) -> str | None:
    """What the phase did, from its status and the executor's action (``strategies.Action``)."""
    action = _str(detail.get("action"))
    if step.status is StepStatus.DONE:
        if detail.get("approved_by"):
            return "approved"
        return "proceed"
    if step.status is StepStatus.FAILED:
        if judgement is None:
            return "stopped"
        if action == "ask-approval":
            return "rejected"
        return "rollback"
    return None


def _doubt_line(test: str, threshold: float | None) -> float | None:
    """The e-process's PASS line, ``1/sqrt(alpha_m) = sqrt(threshold)`` (``analysis.sequential``)."""
    if test != E_PROCESS or threshold is None or threshold <= 0:
        return None
    return math.sqrt(threshold)


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _value(value: Any) -> float | None:
    """A statistic: finite, or +-``INFINITY`` for an infinite one; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if math.isnan(number):
        return None
    return max(-INFINITY, min(INFINITY, number))


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
