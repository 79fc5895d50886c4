"""CD-08 benchmark: when do the generated SLO burn-rate alerts fire, measured by Prometheus' own engine.

The rules come from ``build([monitoring/slos], tmp, None)`` (google-30d windows: page on 5m and 1h
above 14.4x the error budget, or 30m and 6h above 6x; ticket on 2h and 1d above 3x, or 6h and 3d
above 1x). Scenarios 1-3 play the real chatbot availability SLO (objective 99.5, error budget 0.5%)
with ``promtool test rules`` on synthetic series (built with ``promtests``' helpers; samples and
rule evaluations every minute), never with a re-implementation of PromQL:

1. Detection time of steady burns starting at t=0: 1000x requested, capped at 200x (a 99.5% objective
   cannot burn faster than every request failing), 14.4x and 6x (the page factors themselves) and
   1.05x those factors, each after 6 hours of healthy traffic (625 requests/min, ~10.4/s, errors at
   b0 = 0.1x the budget; 6 h so that the page's longest window is full of history at t=0), and 14.4x
   after 1 hour only (the 6h window then holds 1h + t of data and fills faster). Each run expects NO
   alert at every minute up to a horizon; promtool reports the alerts it got at each failing minute,
   and the earliest with ``sloth_severity="page"`` is the detection time. The test pins
   ``group_eval_order`` (recordings, then alerts): without it promtool runs the groups in Go map
   order, so an alert reads its recordings from this minute or, at random, the previous one; the
   alerts-first order is measured too ("lagged": a real Prometheus, whose groups run independently,
   lies between the two). Analytic time, in continuous minutes: with full history the ratio over a
   window of L minutes is (B*t + b0*(L - t))/L for t < L, which first exceeds a factor f at
   t = (f - b0)*L/(B - b0) (while the history is shorter than the window: (B*t + b0*H)/(t + H), at
   t = H*(f - b0)/(B - f)); a condition holds once both its windows do, the page at the earliest of
   its two conditions; the evaluation that sees it is the next whole minute.
2. A 5-minute blip at 10x after 6 h of healthy traffic: the page fires at no minute of the blip and
   of the 2 h after it.
3. 24 hours of normal traffic replayed (seeded, piecewise per 5-minute segment: diurnal traffic with
   a trough of ~5 requests/s at 03:00 and a peak of ~15/s at 15:00, +-8% noise; errors at 0.3x the
   budget times a log-normal factor, a Poisson count per segment), after 3 days of warm-up at the
   mean so that even the 3d window has history: no page and no ticket at any checked minute
   (``--check-every``, default every minute; the rules run every minute whatever is checked, so
   checking every 5 minutes saves only ~10%).
4. Rule evaluation time in a real Prometheus (``/usr/bin/prometheus``, evaluation_interval 5s) for
   all three services' rule files: on an empty TSDB, then on 3 days of backfilled series of every
   SLI (``promtool tsdb create-blocks-from openmetrics``, 30 s samples, 2 revisions x 2 instances);
   per group and in total, from ``/api/v1/rules`` read every 5 s for ``--prom-seconds``.

Targets: 0 pages for the 10x blip; 0 alerts over the 24 h of normal traffic; every measured page time
within one evaluation step (1 min) plus the firing condition's short-window delay of the analytic
time. The rules compare with ``>``: a burn exactly at a factor only reaches it, so in exact
arithmetic it never pages through that condition, and the float rounding of the ratio and of
``factor * budget`` decides; for those burns the analytic time at equality is accepted too.

Usage::

    python benchmarks/slo_alerts.py [--quick] [--json] [--check-every 1] [--prom-seconds 30]

Writes ``benchmarks/results/slo_alerts.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mangaassist.delivery.monitoring import promtests  # noqa: E402
from mangaassist.delivery.monitoring.build import build, resolve  # noqa: E402
from mangaassist.delivery.monitoring.rules import dump_yaml, format_float  # noqa: E402
from mangaassist.delivery.monitoring.slo import (  # noqa: E402
    SLO,
    BurnWindow,
    CounterRatio,
    WindowSet,
    format_duration,
    parse_duration,
    sli_shape,
)

SLO_DIR = ROOT / "monitoring" / "slos"
SLO_ID = "chatbot-chat-availability"
REQ_PER_MIN = 625.0
"""~10.4 requests/s: with a 0.5% budget, every burn used here is a whole multiple of 1/64 errors per
minute, so the counters are exact in binary and no ratio depends on rounding the schedule."""
BASE_BURN = 0.1
"""Errors of the healthy baseline, as a multiple of the error budget."""
HISTORY_MIN = 360
"""Healthy minutes before a burn: the page's longest window (6h), so it is full at t=0."""
BLIP_BURN, BLIP_MIN, AFTER_BLIP_MIN = 10.0, 5, 120
NORMAL_BURN, DAY_MIN, SEGMENT_MIN, WARMUP_MIN = 0.3, 24 * 60, 5, 3 * 24 * 60
SEED = 8


# -- series ---------------------------------------------------------------------------------------


def quantize(value: float) -> float:
    """Counter increments in whole multiples of promtests.QUANTUM (exact in binary: no fake resets)."""
    return round(value / promtests.QUANTUM) * promtests.QUANTUM


def sli_series(slo: SLO) -> list[tuple[str, dict[str, str], str, float]]:
    """(metric, labels, role, start) of the series the SLO's SLI reads; role says what each sample
    adds: the ``bad`` events, the ``good`` ones or the ``total``. Labels come from promtests' solver."""
    shape = sli_shape(slo.sli)
    if isinstance(shape, CounterRatio):
        subset = promtests._solve(shape.subset.matchers)
        rest = promtests._other_than(shape.total, shape.extra)
        bad, good = (subset, rest) if shape.subset_is_error else (rest, subset)
        return [(shape.total.metric, bad, "bad", 1000.0), (shape.total.metric, good, "good", 100000.0)]
    base = promtests._solve(shape.count.matchers)
    return [
        (shape.count.metric, base, "total", 101000.0),
        (shape.bucket.metric, {**base, "le": shape.le}, "good", 100000.0),
        (shape.bucket.metric, {**base, "le": "+Inf"}, "total", 101000.0),
    ]


def input_series(slo: SLO, bad: list[float], total: list[float]) -> list[dict[str, str]]:
    """promtool ``input_series`` for per-sample bad and total increments (runs as ``a+bxN``)."""
    bad = [quantize(b) for b in bad]
    total = [quantize(t) for t in total]
    incs = {"bad": bad, "total": total, "good": [t - b for t, b in zip(total, bad, strict=True)]}
    return [
        {
            "series": promtests._series_name(metric, labels),
            "values": promtests._counter_values(start, incs[role]),
        }
        for metric, labels, role, start in sli_series(slo)
    ]


def schedule(phases: list[tuple[int, float]], budget: float) -> tuple[list[float], list[float]]:
    """Per-minute (bad, total) increments for phases of (minutes, burn as a multiple of the budget)."""
    bad = [min(1.0, burn * budget) * REQ_PER_MIN for minutes, burn in phases for _ in range(minutes)]
    return bad, [REQ_PER_MIN] * len(bad)


def normal_day(budget: float, seed: int, minutes: int) -> tuple[list[float], list[float], dict[str, float]]:
    """A replayed day, piecewise per 5-minute segment (seeded): diurnal traffic (trough 5/s at 03:00,
    peak 15/s at 15:00, +-8% noise) and errors at 0.3x the budget times a log-normal factor (sigma
    0.5, mean 1), drawn as a Poisson count per segment."""
    rng = np.random.default_rng(seed)
    bad: list[float] = []
    total: list[float] = []
    burns = []
    for start in range(0, minutes, SEGMENT_MIN):
        hour = start / 60
        rps = 10 * (1 + 0.5 * math.sin(2 * math.pi * (hour - 9) / 24)) * (1 + 0.08 * rng.standard_normal())
        per_min = round(rps * 60)
        ratio = NORMAL_BURN * budget * rng.lognormal(-0.125, 0.5)
        errors = int(rng.poisson(ratio * per_min * SEGMENT_MIN))
        n = min(SEGMENT_MIN, minutes - start)
        bad += [quantize(errors / SEGMENT_MIN)] * n
        total += [float(per_min)] * n
        burns.append(errors / SEGMENT_MIN / per_min / budget)
    stats = {
        "requests_per_s_min": round(min(total) / 60, 2),
        "requests_per_s_max": round(max(total) / 60, 2),
        "mean_burn": round(sum(bad) / sum(total) / budget, 3),
        "max_segment_burn": round(max(burns), 2),
    }
    return bad, total, stats


# -- promtool -------------------------------------------------------------------------------------

_FAILURE = re.compile(r"alertname: (\S+), time: (\S+),")
_SEVERITY = re.compile(r'sloth_severity="(page|ticket)"')


def parse_failures(output: str, alertname: str) -> dict[int, set[str]]:
    """Minute -> severities firing, from promtool's report of the alert tests that expected nothing."""
    found = list(_FAILURE.finditer(output))
    firing: dict[int, set[str]] = {}
    for i, m in enumerate(found):
        if m.group(1) != alertname:
            raise RuntimeError(f"promtool reported an unexpected alert {m.group(1)!r}")
        end = found[i + 1].start() if i + 1 < len(found) else len(output)
        got = output[m.end() : end].split("got:", 1)[-1]
        firing[parse_duration(m.group(2)) // 60] = set(_SEVERITY.findall(got))
    return firing


@dataclass(frozen=True)
class Played:
    firing: dict[int, set[str]]
    """Minute (from the burn's start) -> severities firing, for the checked minutes that had any."""
    seconds: float
    checks: int
    samples: int

    def first(self, severity: str) -> int | None:
        return min((m for m, s in self.firing.items() if severity in s), default=None)

    def count(self, severity: str) -> int:
        return sum(1 for s in self.firing.values() if severity in s)


def group_order(rule_file: Path, alerts_first: bool = False) -> list[str]:
    """The rule file's groups, recordings before alerts (or after: ``alerts_first``). promtool
    evaluates the groups in map order unless ``group_eval_order`` says otherwise, so without it an
    alert reads its SLI recordings from this evaluation or, at random, from the previous one."""
    names = [g["name"] for g in yaml.safe_load(rule_file.read_text())["groups"]]
    alerts = [n for n in names if n.startswith("sloth-slo-alerts-")]
    recordings = [n for n in names if n not in alerts]
    return alerts + recordings if alerts_first else recordings + alerts


def play(
    work: Path,
    name: str,
    rule_file: Path,
    slo: SLO,
    bad: list[float],
    total: list[float],
    zero: int,
    checks: range,
    alerts_first: bool = False,
) -> Played:
    """``promtool test rules`` on the series, expecting no alert at every minute ``zero + m`` for m in
    ``checks``; what fired, by minute relative to ``zero``."""
    step = 60
    doc = {
        "rule_files": [str(rule_file)],
        "evaluation_interval": format_duration(step),
        "group_eval_order": group_order(rule_file, alerts_first),
        "tests": [
            {
                "name": name,
                "interval": format_duration(step),
                "input_series": input_series(slo, bad, total),
                "alert_rule_test": [
                    {
                        "eval_time": format_duration((zero + m) * step),
                        "alertname": slo.alerting.name,
                        "exp_alerts": [],
                    }
                    for m in checks
                ],
            }
        ],
    }
    path = work / f"{name}.yml"
    path.write_text(dump_yaml(doc))
    started = time.perf_counter()
    done = subprocess.run(
        [promtests.promtool_path(), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    firing = parse_failures(output, slo.alerting.name)
    if done.returncode != 0 and not firing:
        raise RuntimeError(f"promtool failed on {path}:\n{output[-3000:]}")
    if done.returncode == 0 and firing:
        raise RuntimeError(f"promtool passed but reported alerts on {path}")
    return Played({m - zero: s for m, s in firing.items()}, round(seconds, 2), len(checks), len(bad) + 1)


# -- the analytic model ---------------------------------------------------------------------------


def crossing(
    f: float, b0: float, burn: float, window: float, history: float, strict: bool = True
) -> float | None:
    """Minutes after the burn starts until the error ratio over ``window`` minutes first exceeds
    ``f`` (times the budget; ``strict``: >, else >=), in continuous time, with ``history`` minutes at
    ``b0`` before (None: never). While the window reaches before the history, it holds only
    ``t + history`` minutes: ratio (B*t + b0*H) / (t + H); once full, (B*t + b0*(L - t)) / L."""
    if burn < f or (strict and burn == f):
        return None
    if b0 > f:
        return 0.0
    if history < window and burn > f:
        t = history * (f - b0) / (burn - f)
        if t <= window - history:
            return t
    return (f - b0) * window / (burn - b0)


def analytic_page(ws: WindowSet, burn: float, history: float, strict: bool = True) -> dict[str, Any]:
    """When each page condition first holds (both windows over the factor) and the page's time."""
    out: dict[str, Any] = {}
    best: tuple[float, str, float] | None = None
    for severity, speed, cond in ws.conditions():
        if severity != "page":
            continue
        f = cond.factor(ws.period_s)
        short = crossing(f, BASE_BURN, burn, cond.short_s / 60, history, strict)
        long_ = crossing(f, BASE_BURN, burn, cond.long_s / 60, history, strict)
        at = None if short is None or long_ is None else max(short, long_)
        out[f"{speed}_{_name(cond)}_min"] = None if at is None else round(at, 3)
        if at is not None and (best is None or at < best[0]):
            best = (at, f"{speed} {_name(cond)}", short or 0.0)
    out["page_min"] = None if best is None else round(best[0], 3)
    out["condition"] = None if best is None else best[1]
    out["short_window_delay_min"] = None if best is None else round(best[2], 3)
    return out


def _name(cond: BurnWindow) -> str:
    return f"{format_duration(cond.short_s)}/{format_duration(cond.long_s)}"


# -- scenarios ------------------------------------------------------------------------------------


def burn_scenario(
    work: Path, rule_file: Path, slo: SLO, ws: WindowSet, requested: float, history: int, horizon: int
) -> dict[str, Any]:
    budget = slo.error_budget
    burn = min(requested, 1 / budget)
    bad, total = schedule([(history, BASE_BURN), (horizon, burn)], budget)
    name, checks = f"burn-{requested:g}x-h{history}", range(1, horizon + 1)
    played = play(work, name, rule_file, slo, bad, total, history, checks)
    # the other extreme of a real Prometheus, whose groups run independently: the alerts read the
    # SLI recordings of the previous evaluation
    lagged = play(
        work, name + "-alerts-first", rule_file, slo, bad, total, history, checks, alerts_first=True
    )
    strict = analytic_page(ws, burn, history)
    at_equality = analytic_page(ws, burn, history, strict=False)
    measured = played.first("page")
    analytic = strict["page_min"]

    def compare(model: dict[str, Any]) -> tuple[float | None, float | None, bool]:
        """(measured - analytic, tolerance, within it); no analytic page: met if none was measured."""
        if model["page_min"] is None:
            return None, None, measured is None
        tolerance = round(1 + model["short_window_delay_min"], 3)
        diff = None if measured is None else round(measured - model["page_min"], 3)
        return diff, tolerance, diff is not None and abs(diff) <= tolerance

    # A burn exactly at a page factor only ever reaches it: in exact arithmetic ">" never holds, and
    # Prometheus' float rounding of the ratio (and of "factor * budget") decides. Either is accepted.
    tie = any(math.isclose(burn, c.factor(ws.period_s)) for sev, _, c in ws.conditions() if sev == "page")
    diff, tolerance, met = compare(strict)
    model = "strict" if met else None
    if not met and tie:
        diff, tolerance, met = compare(at_equality)
        model = "at equality" if met else None
    return {
        "requested_burn": requested,
        "burn": burn,
        "error_ratio": min(1.0, burn * budget),
        "history_min": history,
        "horizon_min": horizon,
        "page_min": measured,
        "ticket_min": played.first("ticket"),
        "page_min_alerts_group_first": lagged.first("page"),
        "analytic": strict,
        "analytic_page_min_at_equality": at_equality["page_min"],
        "expected_eval_min": None if analytic is None else math.floor(analytic) + 1,
        "diff_min": diff,
        "tolerance_min": tolerance,
        "tie": tie,
        "matched_model": model,
        "met": met,
        "promtool_seconds": round(played.seconds + lagged.seconds, 2),
        "checks": played.checks,
    }


def blip_scenario(work: Path, rule_file: Path, slo: SLO) -> dict[str, Any]:
    phases = [(HISTORY_MIN, BASE_BURN), (BLIP_MIN, BLIP_BURN), (AFTER_BLIP_MIN, BASE_BURN)]
    bad, total = schedule(phases, slo.error_budget)
    played = play(
        work, "blip", rule_file, slo, bad, total, HISTORY_MIN, range(1, BLIP_MIN + AFTER_BLIP_MIN + 1)
    )
    return {
        "history_min": HISTORY_MIN,
        "blip_min": BLIP_MIN,
        "burn": BLIP_BURN,
        "checked_min": f"every minute from 1 to {BLIP_MIN + AFTER_BLIP_MIN} after the blip's start",
        "page_minutes": played.count("page"),
        "ticket_minutes": played.count("ticket"),
        "promtool_seconds": played.seconds,
    }


def normal_scenario(
    work: Path, rule_file: Path, slo: SLO, minutes: int, warmup: int, every: int
) -> dict[str, Any]:
    budget = slo.error_budget
    day_bad, day_total, stats = normal_day(budget, SEED, minutes)
    mean_total = sum(day_total) / len(day_total)
    bad = [quantize(NORMAL_BURN * budget * mean_total)] * warmup + day_bad
    total = [float(round(mean_total))] * warmup + day_total
    played = play(work, "normal", rule_file, slo, bad, total, warmup, range(every, minutes + 1, every))
    return {
        "replayed_min": minutes,
        "warmup_min": warmup,
        "check_every_min": every,
        "checks": played.checks,
        "seed": SEED,
        "pattern": stats,
        "page_minutes": played.count("page"),
        "ticket_minutes": played.count("ticket"),
        "first_alert_min": min(played.firing, default=None),
        "promtool_seconds": played.seconds,
    }


# -- Prometheus -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (a local http URL)
        return json.loads(resp.read())


def backfill(slos: tuple[SLO, ...], work: Path, days: float, step_s: int) -> dict[str, Any]:
    """``days`` of every SLI's series up to now (2 revisions x 2 instances each, errors at 0.3x the
    budget), written as TSDB blocks by ``promtool tsdb create-blocks-from openmetrics``."""
    now = int(time.time()) // step_s * step_s - step_s
    n = int(days * 86400) // step_s
    per_step = REQ_PER_MIN / 60 * step_s / 4
    series: dict[str, tuple[float, float]] = {}
    for slo in slos:
        ratio = NORMAL_BURN * slo.error_budget
        inc = {"bad": per_step * ratio, "good": per_step * (1 - ratio), "total": per_step}
        for metric, labels, role, start in sli_series(slo):
            for rev in ("r1", "r2"):
                for inst in ("w1", "w2"):
                    all_labels = sorted({**labels, "revision": rev, "instance": inst}.items())
                    # OpenMetrics: no space after the commas
                    name = metric + "{" + ",".join(f'{k}="{v}"' for k, v in all_labels) + "}"
                    series.setdefault(name, (start, quantize(inc[role])))
    work.mkdir(parents=True, exist_ok=True)
    om = work / "backfill.om"
    with om.open("w") as fh:
        for name in sorted(series):
            start, inc = series[name]
            fh.writelines(
                f"{name} {format_float(start + inc * i)} {now - (n - i) * step_s}\n" for i in range(n + 1)
            )
        fh.write("# EOF\n")
    blocks = work / "data"
    started = time.perf_counter()
    done = subprocess.run(
        [promtests.promtool_path(), "tsdb", "create-blocks-from", "openmetrics", str(om), str(blocks)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promtool tsdb create-blocks-from failed: {(done.stdout + done.stderr)[-2000:]}")
    om.unlink()
    return {
        "series": len(series),
        "samples": len(series) * (n + 1),
        "days": days,
        "sample_interval_s": step_s,
        "create_blocks_seconds": round(time.perf_counter() - started, 1),
        "data": blocks,
    }


def rule_evaluation(rule_files: list[Path], work: Path, seconds: float, data: Path | None) -> dict[str, Any]:
    """Run Prometheus on the rule files (evaluation_interval 5s) and read every group's evaluation time
    from ``/api/v1/rules`` every 5 s."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    config.write_text(
        dump_yaml(
            {
                "global": {"evaluation_interval": "5s", "scrape_interval": "15s"},
                "rule_files": [str(p) for p in rule_files],
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data or work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    evals: dict[str, dict[str, float]] = {}
    totals: list[float] = []
    health: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({proc.returncode}): see {work / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not become ready in 60 s")
            time.sleep(0.5)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(5)
            groups = get_json(f"{url}/api/v1/rules")["data"]["groups"]
            total = 0.0
            for g in groups:
                if g.get("lastEvaluation", "").startswith("0001-"):
                    continue  # not evaluated yet
                evals.setdefault(g["name"], {})[g["lastEvaluation"]] = float(g["evaluationTime"])
                total += float(g["evaluationTime"])
                health.update(r.get("health", "unknown") for r in g["rules"])
            if total:
                totals.append(total)
        rules = sum(len(g["rules"]) for g in groups)
        # did the SLI recordings have data to work on (backfilled) or nothing (empty TSDB)?
        query = urllib.parse.quote('{__name__=~"slo:sli_error:ratio_rate.+"}')
        recorded = len(get_json(f"{url}/api/v1/query?query={query}")["data"]["result"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    per_group = {
        name: {
            "evaluations": len(v),
            "max_s": round(max(v.values()), 6),
            "mean_s": round(statistics.mean(v.values()), 6),
        }
        for name, v in sorted(evals.items())
    }
    return {
        "groups": len(per_group),
        "rules": rules,
        "reads": len(totals),
        "sli_ratio_series_with_data": recorded,
        "rule_health": sorted(health),
        "total_s": {
            "max": round(max(totals), 6) if totals else None,
            "mean": round(statistics.mean(totals), 6) if totals else None,
        },
        "slowest_group": max(per_group, key=lambda k: per_group[k]["max_s"]) if per_group else None,
        "per_group": per_group,
        "stopped_cleanly": proc.returncode == 0,
    }


# -- report ---------------------------------------------------------------------------------------


def version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip()


def fmt(value: float | None, unit: str = "") -> str:
    return "never" if value is None else f"{value:g}{unit}"


def print_table(result: dict[str, Any]) -> None:
    setup = result["setup"]
    print(
        f"SLO {setup['slo']} objective {setup['objective']} (budget {setup['error_budget']}), window set "
        f"{setup['window_set']['name']}, {setup['requests_per_s']} req/s, baseline {BASE_BURN}x"
    )
    print(f"{setup['promtool']}\n{setup['prometheus']}\n")
    head = (
        f"{'burn':>12} {'history':>8} {'page':>6} {'analytic':>9} {'condition':>12} {'diff':>7} {'tol':>6} "
        f"{'at ==':>7} {'lagged':>7} {'ticket':>7} {'met':>4}"
    )
    print("1. minutes from the burn's start to the page (promtool, rules and samples every minute)")
    print(head)
    for b in result["burns"]:
        burn = f"{b['burn']:g}x" + (
            f" ({b['requested_burn']:g}x)" if b["burn"] != b["requested_burn"] else ""
        )
        a = b["analytic"]
        ok = ("yes=" if b["matched_model"] == "at equality" else "yes") if b["met"] else "NO"
        print(
            f"{burn:>12} {b['history_min']:>7}m {fmt(b['page_min']):>6} {fmt(a['page_min']):>9} "
            f"{a['condition'] or '-':>12} {fmt(b['diff_min']):>7} {fmt(b['tolerance_min']):>6} "
            f"{fmt(b['analytic_page_min_at_equality']):>7} {fmt(b['page_min_alerts_group_first']):>7} "
            f"{fmt(b['ticket_min']):>7} {ok:>4}"
        )
    print(
        "   (page: measured, recordings evaluated before alerts; analytic: strict >, continuous time; "
        "at ==: the analytic time if reaching a factor were enough; lagged: measured with the alert "
        "groups evaluated first, i.e. reading the previous minute's recordings; ticket: measured; "
        "yes=: a burn exactly at a factor, matched by the analytic time at equality; diff and tol "
        "against the model matched)"
    )
    bl = result["blip"]
    print(
        f"\n2. {bl['blip_min']}-minute {bl['burn']:g}x blip: pages at {bl['page_minutes']} of "
        f"{BLIP_MIN + AFTER_BLIP_MIN} minutes (tickets {bl['ticket_minutes']})"
    )
    nd = result["normal_day"]
    p = nd["pattern"]
    print(
        f"3. {nd['replayed_min'] / 60:g} h of normal traffic ({p['requests_per_s_min']}-"
        f"{p['requests_per_s_max']} req/s, mean burn {p['mean_burn']}x, worst 5-min segment "
        f"{p['max_segment_burn']}x) after "
        f"{nd['warmup_min'] / 60:g} h warm-up, checked every {nd['check_every_min']} min: "
        f"page minutes {nd['page_minutes']}, ticket minutes {nd['ticket_minutes']}"
    )
    print("4. Prometheus rule evaluation (evaluation_interval 5s)")
    for label, ev in result["rule_evaluation"].items():
        if ev is None:
            continue
        extra = ""
        if "backfill" in ev:
            bf = ev["backfill"]
            extra = f" [{bf['series']} series, {bf['samples']} samples over {bf['days']:g} d]"
        print(
            f"   {label}{extra}: {ev['groups']} groups, {ev['rules']} rules, total per round max "
            f"{ev['total_s']['max'] * 1000:.2f} ms, mean {ev['total_s']['mean'] * 1000:.2f} ms over "
            f"{ev['reads']} reads; slowest group {ev['slowest_group']} "
            f"(max {ev['per_group'][ev['slowest_group']]['max_s'] * 1000:.2f} ms); "
            f"health {ev['rule_health']}; "
            f"SLI ratio series with data: {ev['sli_ratio_series_with_data']}"
        )
    print(f"\ntargets: {json.dumps(result['targets'])}")
    print(f"met: {json.dumps(result['met'])}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter scenarios (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--check-every", type=int, default=1, help="minutes between checks of the 24 h replay (default 1)"
    )
    parser.add_argument("--prom-seconds", type=float, default=30, help="how long Prometheus runs (each run)")
    args = parser.parse_args()
    if args.check_every < 1:
        parser.error("--check-every must be >= 1")
    if args.prom_seconds < 5:
        parser.error("--prom-seconds must be >= 5 (the rules are read every 5 s)")
    began = time.perf_counter()
    slos, ws, _env = resolve([SLO_DIR], None)
    slo = next(s for s in slos if s.id == SLO_ID)
    work = Path(tempfile.mkdtemp(prefix="bench-slo-alerts-"))
    try:
        report = build([SLO_DIR], work / "build", None)
        rule_files = list(report.rule_files)
        rule_file = next(p for p in rule_files if p.name == f"{slo.service}.yml")
        page_quick = ws.page_quick.factor(ws.period_s)
        page_slow = ws.page_slow.factor(ws.period_s)
        if args.quick:
            burns = [(1000.0, HISTORY_MIN, 30), (1.05 * page_quick, HISTORY_MIN, 90)]
            day, warmup, prom_s = 6 * 60, 6 * 60, min(args.prom_seconds, 12)
        else:
            burns = [
                (1000.0, HISTORY_MIN, 60),
                (page_quick, HISTORY_MIN, 240),
                (1.05 * page_quick, HISTORY_MIN, 240),
                (page_slow, HISTORY_MIN, 420),
                (1.05 * page_slow, HISTORY_MIN, 420),
                (page_quick, 60, 240),
            ]
            day, warmup, prom_s = DAY_MIN, WARMUP_MIN, args.prom_seconds
        results = []
        for requested, history, horizon in burns:
            results.append(burn_scenario(work, rule_file, slo, ws, requested, history, horizon))
            if not args.json:
                r = results[-1]
                print(
                    f"burn {r['burn']:g}x after {history} min: page at {fmt(r['page_min'])} min "
                    f"(analytic {fmt(r['analytic']['page_min'])}) [{r['promtool_seconds']} s]",
                    flush=True,
                )
        blip = blip_scenario(work, rule_file, slo)
        if not args.json:
            print(f"blip: {blip['page_minutes']} page minutes [{blip['promtool_seconds']} s]", flush=True)
        normal = normal_scenario(work, rule_file, slo, day, warmup, args.check_every)
        if not args.json:
            print(
                f"normal: {normal['page_minutes']} page, {normal['ticket_minutes']} ticket minutes "
                f"[{normal['promtool_seconds']} s]",
                flush=True,
            )
        evaluation: dict[str, Any] = {
            "empty_tsdb": rule_evaluation(rule_files, work / "prom-empty", prom_s, None),
            "backfilled_3d": None,
        }
        if not args.quick:
            bf = backfill(slos, work / "prom-data", 3, 30)
            data = bf.pop("data")
            evaluation["backfilled_3d"] = {
                **rule_evaluation(rule_files, work / "prom-data", prom_s, data),
                "backfill": bf,
            }
        if not args.json:
            print("prometheus: done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    targets = {
        "blip_10x_5min_pages": 0,
        "normal_traffic_alerts": 0,
        "page_time_abs_diff_min": "<= 1 evaluation step (1 min) + the short window's delay",
    }
    met = {
        "blip_10x_5min_pages": blip["page_minutes"] == 0,
        "normal_traffic_alerts": normal["page_minutes"] + normal["ticket_minutes"] == 0,
        "page_times": all(r["met"] for r in results),
    }
    result = {
        "benchmark": "slo_alerts",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": 2, "python": platform.python_version()},
        "quick": args.quick,
        "setup": {
            "promtool": version(promtests.promtool_path()),
            "prometheus": version(shutil.which("prometheus") or "/usr/bin/prometheus"),
            "slo": slo.id,
            "objective": slo.objective,
            "error_budget": slo.error_budget,
            "window_set": {
                "name": ws.name,
                "period": ws.period,
                "conditions": [
                    {
                        "severity": sev,
                        "speed": speed,
                        "short": format_duration(c.short_s),
                        "long": format_duration(c.long_s),
                        "factor": c.factor(ws.period_s),
                    }
                    for sev, speed, c in ws.conditions()
                ],
            },
            "rule_files": [p.name for p in rule_files],
            "rules": {"recording": report.recording_rules, "alert": report.alert_rules},
            "sample_and_evaluation_interval_s": 60,
            "requests_per_min": REQ_PER_MIN,
            "requests_per_s": round(REQ_PER_MIN / 60, 2),
            "baseline_burn": BASE_BURN,
            "baseline_errors_per_min": quantize(BASE_BURN * slo.error_budget * REQ_PER_MIN),
            "history_min": HISTORY_MIN,
            "method": "promtool test rules expecting no alert at every checked minute; promtool's "
            "failure report lists the alerts got at each failing minute",
        },
        "burns": results,
        "blip": blip,
        "normal_day": normal,
        "rule_evaluation": evaluation,
        "targets": targets,
        "met": met,
        "all_met": all(met.values()),
        "seconds": round(time.perf_counter() - began, 1),
    }
    out_file = ROOT / "benchmarks" / "results" / "slo_alerts.json"
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print()
        print_table(result)
        print(f"written to {out_file.relative_to(ROOT)} in {result['seconds']} s")
    return 0 if result["all_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
