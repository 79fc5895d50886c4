"""The dashboard's inline SVG charts (``dashboard.charts``): the canary evidence panel's chart."""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET

import pytest

from mangaassist.core.verdict import Verdict
from mangaassist.dashboard.charts import evidence_svg
from mangaassist.delivery.analysis.evidence import (
    E_PROCESS,
    EvidencePoint,
    EvidenceSeries,
    EvidenceTrail,
    canary_evidence,
)
from mangaassist.delivery.analysis.judgement import Judgement, MetricVerdict
from mangaassist.delivery.engine.model import StepRecord, StepStatus

SVG = "{http://www.w3.org/2000/svg}"
E_VALUES = (1.0, 0.8, 3.5, 40.0, 310.0)
"""An error-rate e-process that crosses its threshold (250) at the fifth consultation, t = 1.0 s."""


def _series(
    values: tuple[float, ...] = E_VALUES, metric: str = "error_rate", step: str = "canary-5"
) -> EvidenceSeries:
    """A series read back from a step recorded the way ``run_phase`` records a FAIL."""
    trail = EvidenceTrail(shifted_at=1736337600.0)
    for i, e in enumerate(values):
        verdict = Verdict.FAIL if e >= 250 else Verdict.INCONCLUSIVE
        metric_verdict = MetricVerdict(metric, E_PROCESS, verdict, e, 250.0, 5 * i, 95 * i, 0.0, 0.0, "why")
        judgement = Judgement("sequential", [metric_verdict])
        trail.record(0.25 * i, judgement, 5 * i, 95 * i)
    final = judgement.metrics[0]
    detail = {
        "phase": step,
        "action": "rollback",
        "judgement": judgement.as_dict(),
        "verdict": final.verdict.value,
        "numbers": {"elapsed_s": 0.25 * (len(values) - 1), f"e_{metric}": e},
        "evidence": trail.as_dict(),
    }
    record = StepRecord("run-1", 5, step, StepStatus.FAILED, 1, None, None, 2.0, "judge: FAIL", detail)
    (series,) = canary_evidence([record])
    return series


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314 - our own output: valid XML, or this raises
    assert root.tag == f"{SVG}svg"
    return root


def _kind(root: ET.Element, kind: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("data-kind") == kind]


def _polyline(root: ET.Element) -> list[tuple[float, float]]:
    (line,) = _kind(root, "series")
    return [(float(x), float(y)) for x, y in (p.split(",") for p in (line.get("points") or "").split())]


def test_the_chart_is_one_valid_svg_that_scales_to_a_phone_screen() -> None:
    svg = evidence_svg(_series())
    root = _parse(svg)
    assert root.get("viewBox") == "0 0 360 140" and root.get("width") == "100%" and root.get("height") is None
    assert root.get("role") == "img"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    assert title.text == "error_rate during canary-5: rollback (FAIL) at 1.0 s; fails at or above 250"
    # self-contained: no script, no stylesheet, nothing fetched
    assert not any(
        e.tag in (f"{SVG}script", f"{SVG}style", f"{SVG}image", f"{SVG}foreignObject") for e in root.iter()
    )
    assert "href" not in svg and "url(" not in svg and "style=" not in svg
    assert svg == evidence_svg(_series())  # deterministic
    texts = [e.text for e in root.iter(f"{SVG}text")]
    assert "seconds since the shift" in texts and "e-value (log)" in texts  # axis labels


def test_the_statistic_is_a_line_on_a_log_scale_and_the_threshold_a_dashed_line() -> None:
    root = _parse(evidence_svg(_series()))
    points = _polyline(root)
    assert len(points) == len(E_VALUES)
    assert [x for x, _ in points] == sorted(x for x, _ in points)
    (threshold,) = _kind(root, "threshold")
    assert threshold.get("stroke-dasharray") and threshold.get("y1") == threshold.get("y2")
    assert threshold.get("data-value") == "250"
    y_of = {v: y for v, (_, y) in zip(E_VALUES, points, strict=True)}
    y_threshold = float(threshold.get("y1") or "nan")
    assert y_of[310.0] < y_threshold < y_of[40.0]  # the crossing is drawn across the line (y grows down)
    # log scale: equal ratios are equal distances (1 -> 3.5 -> ... ; 40 is 10 x 4 and 4 x 10)
    per_decade = (y_of[1.0] - y_of[40.0]) / math.log10(40.0)
    assert y_of[1.0] - y_of[3.5] == pytest.approx(per_decade * math.log10(3.5), abs=0.15)
    assert texts_of(root, "fails ≥ 250")
    (pass_line,) = _kind(root, "pass-line")  # the e-process's doubt line, sqrt(250)
    assert pass_line.get("data-value") == "15.8"


def texts_of(root: ET.Element, text: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}text") if e.text == text]


def test_the_decision_is_marked_at_its_time_with_a_label() -> None:
    series = _series()
    root = _parse(evidence_svg(series))
    (marker,) = _kind(root, "decision")
    assert marker.get("data-decision") == "rollback" and marker.get("data-t") == "1"
    circle = marker.find(f"{SVG}circle")
    assert circle is not None
    last_x, last_y = _polyline(root)[-1]
    assert (float(circle.get("cx") or 0), float(circle.get("cy") or 0)) == (last_x, last_y)
    label = marker.find(f"{SVG}text")
    assert label is not None and label.text == "rollback (FAIL) at 1.0 s"
    # a decision recorded before the newest point is marked where it was made, not at the end
    earlier = dataclasses.replace(series, decided_t=0.5)
    root = _parse(evidence_svg(earlier))
    (marker,) = _kind(root, "decision")
    circle = marker.find(f"{SVG}circle")
    assert circle is not None and float(circle.get("cx") or 0) == _polyline(root)[2][0]


def test_hostile_names_are_escaped() -> None:
    hostile = "<script>alert('x')</script>&\"]]>\x00\x1b"
    series = _series(metric=hostile, step="<img src=x onerror=alert(1)>")
    svg = evidence_svg(series)
    root = _parse(svg)
    assert "<script" not in svg and "<img" not in svg and "\x00" not in svg and "\x1b" not in svg
    assert not any(e.tag.endswith("script") or e.tag.endswith("img") for e in root.iter())
    title = root.find(f"{SVG}title")
    assert title is not None and (title.text or "").startswith("<script>alert('x')</script>&\"]]>")
    assert root.get("data-metric") == "<script>alert('x')</script>&\"]]>"


def test_an_empty_series_still_draws_a_labelled_frame() -> None:
    empty = dataclasses.replace(_series(), points=(), decided_t=None, decision=None)
    root = _parse(evidence_svg(empty))
    assert _kind(root, "empty") and not _kind(root, "series") and not _kind(root, "decision")
    assert _kind(root, "threshold")  # the threshold is known even without points
    nothing = dataclasses.replace(empty, threshold=None, pass_below=None, test="", verdict=None)
    root = _parse(evidence_svg(nothing))
    assert _kind(root, "empty") and not _kind(root, "threshold")
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == "error_rate during canary-5: no decision yet"


def test_a_single_point_an_infinite_e_value_and_a_p_value_are_drawn() -> None:
    single = dataclasses.replace(
        _series(), points=(EvidencePoint(12.5, 335.0, "FAIL", 33, 31),), decided_t=12.5
    )
    root = _parse(evidence_svg(single))
    (dot,) = _kind(root, "series")
    assert dot.tag == f"{SVG}circle" and _kind(root, "decision")
    infinite = _series(values=(1.0, 5.0, 1e300))  # +infinity as the trail writes it
    points = _polyline(_parse(evidence_svg(infinite)))
    assert points[-1][1] == 22.0  # drawn at the top edge of the plot
    p_value = dataclasses.replace(
        _series(), test="mann-whitney", higher_is_worse=False, threshold=0.002, pass_below=None,
        points=tuple(EvidencePoint(float(i), p) for i, p in enumerate((0.9, 0.3, 0.001))), decided_t=2.0,
    )  # fmt: skip
    root = _parse(evidence_svg(p_value))
    assert texts_of(root, "fails ≤ 0.002") and not _kind(root, "pass-line")
    assert len(_polyline(root)) == 3


def test_other_sizes_keep_their_proportions_and_tiny_ones_are_refused() -> None:
    root = _parse(evidence_svg(_series(), width=720, height=200))
    assert root.get("viewBox") == "0 0 720 200"
    assert max(x for x, _ in _polyline(root)) <= 720
    with pytest.raises(ValueError, match="at least"):
        evidence_svg(_series(), width=100)


def test_two_metrics_get_different_element_ids() -> None:
    a = _parse(evidence_svg(_series(metric="error_rate"))).get("aria-labelledby")
    b = _parse(evidence_svg(_series(metric="latency"))).get("aria-labelledby")
    assert a and b and a != b
