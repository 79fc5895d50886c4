"""Charts for the dashboard as self-contained inline SVG: no script, no stylesheet, no external asset.

``evidence_svg`` draws one ``delivery.analysis.evidence.EvidenceSeries`` (one metric of one judged
rollout phase): the statistic over time as a line (an e-value on a log scale), the threshold where it
fails as a dashed line (and, for an e-value, the dotted line below which it may pass), the phase's
decision as a marker with its label, the axes with their labels, and a ``<title>``/``<desc>`` for
screen readers. The SVG has a ``viewBox`` and ``width="100%"`` (no height), so it takes its
container's width and keeps its proportions: at the default 360 x 140 it fits a 375 px phone screen.
Styling is presentation attributes only (nothing a Content-Security-Policy without
``'unsafe-inline'`` blocks). Every text from data is escaped. Pure and deterministic: the same series
gives the same bytes.
"""

from __future__ import annotations

import hashlib
import html
import math
import re

from mangaassist.delivery.analysis.evidence import EvidencePoint, EvidenceSeries

MIN_WIDTH, MIN_HEIGHT = 200, 100
FONT = "system-ui, -apple-system, sans-serif"
INK, MUTED, GRID, LINE = "#212121", "#616161", "#e0e0e0", "#1565c0"
COLORS = {"FAIL": "#c62828", "PASS": "#2e7d32", "INCONCLUSIVE": "#a15c00"}
"""Verdict colours (each has at least 4.5:1 contrast on white)."""
THRESHOLD_COLOR = COLORS["FAIL"]
PASS_COLOR = COLORS["PASS"]
LOG_FLOOR_EXP, LOG_SPAN_ABOVE = -3, 3
"""A log axis shows at least down to 10^-3 and at most 10^3 times above the threshold: values beyond
are drawn at the edge (an infinite e-value at the top)."""

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def evidence_svg(series: EvidenceSeries, width: int = 360, height: int = 140) -> str:
    """One metric's evidence over time as an inline SVG string (see the module doc)."""
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        raise ValueError(f"a chart needs at least {MIN_WIDTH} x {MIN_HEIGHT}, got {width} x {height}")
    key = f"{series.run_id}\0{series.step_index}\0{series.step}\0{series.metric}"
    ident = "ev-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    x0, x1, y0, y1 = 42.0, width - 10.0, 22.0, height - 28.0
    log = series.scale == "log"
    points = [p for p in series.points if p.value is not None]
    values = [float(p.value) for p in points if p.value is not None]
    y_of, ticks = _y_axis(values, series, log, y0, y1)
    t_max = max([p.t for p in series.points] + [series.decided_t or 0.0])
    t_max = t_max if t_max > 0 else 1.0

    def x_of(t: float) -> float:
        return x0 + (x1 - x0) * max(0.0, min(t, t_max)) / t_max

    verdict_color = COLORS.get(series.verdict or "", MUTED)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" role="img" aria-labelledby="{ident}-title {ident}-desc" '
        f'font-family="{FONT}" font-size="10" data-metric="{_text(series.metric)}" '
        f'data-step="{_text(series.step)}">',
        f'<title id="{ident}-title">{_text(_title(series))}</title>',
        f'<desc id="{ident}-desc">{_text(_description(series, points, t_max))}</desc>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        # header: the metric and the phase on the left, the metric's verdict on the right
        f'<text x="4" y="13" fill="{INK}" font-size="11" font-weight="600">'
        f"{_text(_clip(series.metric, 28))} · {_text(_clip(series.step, 18))}</text>",
        f'<text x="{width - 4}" y="13" fill="{verdict_color}" font-size="10" font-weight="600" '
        f'text-anchor="end">{_text(series.verdict or "no verdict")}</text>',
    ]
    # grid and y ticks
    for value, label in ticks:
        y = y_of(value)
        parts.append(f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(
            f'<text x="{x0 - 4:.1f}" y="{y + 3:.1f}" fill="{MUTED}" font-size="9" '
            f'text-anchor="end">{_text(label)}</text>'
        )
    # axes and their labels
    parts += [
        f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x0:.1f}" y2="{y1:.1f}" stroke="{MUTED}"/>',
        f'<line x1="{x0:.1f}" y1="{y1:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="{MUTED}"/>',
        f'<text x="10" y="{(y0 + y1) / 2:.1f}" fill="{MUTED}" font-size="9" text-anchor="middle" '
        f'transform="rotate(-90 10 {(y0 + y1) / 2:.1f})">{_text(_y_title(series, log))}</text>',
    ]
    for t, anchor in ((0.0, "start"), (t_max / 2, "middle"), (t_max, "end")):
        parts.append(
            f'<text x="{x_of(t):.1f}" y="{y1 + 11:.1f}" fill="{MUTED}" font-size="9" '
            f'text-anchor="{anchor}">{_text(_num(t))}</text>'
        )
    parts.append(
        f'<text x="{(x0 + x1) / 2:.1f}" y="{height - 4}" fill="{MUTED}" font-size="9" '
        f'text-anchor="middle">seconds since the shift</text>'
    )
    # the threshold (fails there) and, for an e-value, the line below which it may pass
    if series.threshold is not None:
        y = y_of(series.threshold)
        sign = "≥" if series.higher_is_worse else "≤"
        parts += [
            f'<line data-kind="threshold" data-value="{_text(_num(series.threshold))}" x1="{x0:.1f}" '
            f'y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" stroke="{THRESHOLD_COLOR}" stroke-width="1" '
            f'stroke-dasharray="5 3"/>',
            _halo_text(x0 + 3, y - 3, f"fails {sign} {_num(series.threshold)}", THRESHOLD_COLOR, "start"),
        ]
    if series.pass_below is not None:
        y = y_of(series.pass_below)
        parts += [
            f'<line data-kind="pass-line" data-value="{_text(_num(series.pass_below))}" x1="{x0:.1f}" '
            f'y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" stroke="{PASS_COLOR}" stroke-width="1" '
            f'stroke-dasharray="1 3"/>',
            _halo_text(x0 + 3, y + 10, f"may pass < {_num(series.pass_below)}", PASS_COLOR, "start"),
        ]
    # the statistic over time
    coords = [(x_of(p.t), y_of(float(p.value))) for p in points if p.value is not None]
    if len(coords) > 1:
        parts.append(
            f'<polyline data-kind="series" fill="none" stroke="{LINE}" stroke-width="1.5" '
            f'stroke-linejoin="round" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in coords)}"/>'
        )
    elif coords:
        x, y = coords[0]
        parts.append(f'<circle data-kind="series" cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{LINE}"/>')
    else:
        parts.append(
            f'<text data-kind="empty" x="{(x0 + x1) / 2:.1f}" y="{(y0 + y1) / 2:.1f}" fill="{MUTED}" '
            f'text-anchor="middle">no observations recorded</text>'
        )
    # the decision
    at = series.decision_point
    if at is not None and at.value is not None:
        parts.append(_marker(series, at, x_of(at.t), y_of(float(at.value)), (x0 + x1) / 2, y0, y1))
    parts.append("</svg>")
    return "".join(parts)


def _marker(
    series: EvidenceSeries, at: EvidencePoint, x: float, y: float, middle: float, y0: float, y1: float
) -> str:
    # the metric that decided gets the verdict's colour; the others show the decision in grey
    color = COLORS.get(series.decision_verdict or "", MUTED) if series.decisive else MUTED
    anchor, dx = ("end", -6.0) if x > middle else ("start", 6.0)
    label_y = y - 9 if y - 9 >= y0 + 9 else y + 14
    label_y = min(max(label_y, y0 + 9), y1 - 3)
    t = series.decided_t if series.decided_t is not None else at.t
    return (
        f'<g data-kind="decision" data-decision="{_text(series.decision or "")}" data-t="{_text(_num(t))}">'
        f'<line x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" stroke="{color}" stroke-width="1" '
        f'stroke-dasharray="2 2"/>'
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}" stroke="#ffffff" stroke-width="1.5"/>'
        f"{_halo_text(x + dx, label_y, series.label(), color, anchor, bold=True)}"
        "</g>"
    )


def _halo_text(x: float, y: float, text: str, color: str, anchor: str, *, bold: bool = False) -> str:
    """Text with a white outline, readable over the grid and the line."""
    weight = ' font-weight="600"' if bold else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" fill="{color}" font-size="9"{weight} text-anchor="{anchor}" '
        f'stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke">{_text(text)}</text>'
    )


def _y_axis(
    values: list[float], series: EvidenceSeries, log: bool, y0: float, y1: float
) -> tuple[_Scale, list[tuple[float, str]]]:
    """The value -> y mapping and the ticks (value, label) of the y axis."""
    marks = [v for v in (series.threshold, series.pass_below) if v is not None]
    if log:
        anchor = series.threshold if series.threshold and series.threshold > 0 else 1.0
        cap = math.log10(anchor) + LOG_SPAN_ABOVE
        seen = [math.log10(v) for v in [*values, *marks, 1.0] if v > 0]
        lo = max(LOG_FLOOR_EXP, math.floor(min(seen)))
        hi = min(math.ceil(cap), math.ceil(max(seen)))
        if hi <= lo:
            hi = lo + 1
        step = max(1, math.ceil((hi - lo) / 5))
        ticks = [(10.0**k, _decade(k)) for k in range(lo, hi + 1, step)]
        return _Scale(float(lo), float(hi), y0, y1, log=True), ticks
    finite = [v for v in [*values, *marks] if math.isfinite(v) and abs(v) < 1e299]
    bottom = min([0.0, *finite])
    top = max(finite) if finite else bottom
    top = top + (top - bottom) * 0.1 if top > bottom else bottom + 1.0
    ticks = [(bottom + (top - bottom) * i / 2, _num(bottom + (top - bottom) * i / 2)) for i in range(3)]
    return _Scale(bottom, top, y0, y1, log=False), ticks


class _Scale:
    """value -> y (clamped to the plot: beyond the axis is drawn at its edge)."""

    def __init__(self, lo: float, hi: float, y0: float, y1: float, *, log: bool) -> None:
        self.lo, self.hi, self.y0, self.y1, self.log = lo, hi, y0, y1, log

    def __call__(self, value: float) -> float:
        v = (math.log10(value) if value > 0 else self.lo) if self.log else value
        if math.isnan(v):
            v = self.lo
        v = max(self.lo, min(self.hi, v))
        return self.y1 - (self.y1 - self.y0) * (v - self.lo) / (self.hi - self.lo)


def _title(series: EvidenceSeries) -> str:
    what = f"{series.metric} during {series.step}: {series.label()}"
    if series.threshold is not None:
        sign = "at or above" if series.higher_is_worse else "at or below"
        what += f"; fails {sign} {_num(series.threshold)}"
    return what


def _description(series: EvidenceSeries, points: list[EvidencePoint], t_max: float) -> str:
    kind = "e-value (log scale)" if series.scale == "log" else (series.test or "statistic")
    if not points:
        return f"{kind} of {series.metric}: no observations recorded."
    last = points[-1]
    text = (
        f"{kind} of {series.metric} at {len(points)} consultations over {_num(t_max)} s; "
        f"last {_num(float(last.value or 0.0))}"
    )
    if last.candidate_n is not None and last.baseline_n is not None:
        text += f" with {last.candidate_n} candidate and {last.baseline_n} baseline requests"
    if series.verdict:
        text += f". Verdict {series.verdict}"
        if series.reason:
            text += f": {series.reason}"
    return text + "."


def _y_title(series: EvidenceSeries, log: bool) -> str:
    return "e-value (log)" if log else _clip(series.test or "statistic", 18)


def _decade(k: int) -> str:
    return f"{10.0**k:g}" if -3 <= k <= 3 else f"1e{k}"


def _num(value: float) -> str:
    """A short number: 3 significant digits, ``inf`` for the JSON stand-in of infinity."""
    if math.isnan(value):
        return "nan"
    if abs(value) >= 1e299:
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(text: str) -> str:
    """Escaped for XML text and attributes, with characters XML cannot carry removed."""
    return html.escape(_NOT_XML.sub("", str(text)), quote=True)
