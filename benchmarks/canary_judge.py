"""Benchmark (simulation): false rollbacks and detection power of the three canary judges, side by side.

Every simulated deployment sends requests to the stable revision and the candidate (Poisson
arrivals), and consults every judge after each look (10 s of traffic), as a canary step does. The
stable revision has 1% errors, a lognormal latency with an 80 ms median, 5% fallbacks, 1% guardrail
firings and 0.5% thumbs-down per request. All judges see the same traffic in every deployment.

Schedules (the candidate's share of the traffic):

* ``fixed``: 5% for the whole run.
* ``grow``: the rollout's own rule for the 5% step of a 5/25/50/100 canary with the default
  settings (``rollout.strategies.decide`` and ``grow``; ``rollout.settings``: ``grow_after_s``,
  ``max_step_s``): at a look where the sequential judge says INCONCLUSIVE after the share has been
  held for ``grow_after_s`` (also past ``max_step_s``, while the step waits for an approval), the
  share grows to 10%, then 25% (prod's ``max_canary_weight_before_approval``). The candidate's
  request rate follows the share (and the stable revision's the rest). In the pipeline a PASS ends
  the step; here the step is watched for the whole run whatever the verdict (as every schedule is).
  The sequential judge is told the segments (as the rollout's window does); the other judges see
  the whole window.

Cases (each judge, each case, one run):

* A/A at 50 req/s, ``fixed`` and ``grow``, 10 minutes: a FAIL at any look is a false rollback.
* A/A with the baseline revision (the pipeline's default: latency judged against a fresh copy of the
  stable release that carries the candidate's share; rates against the stable release as a whole).
* A/A at 0.1 req/s, ``grow``, 10 minutes (a look every 10 s): never FAIL (at that rate the judge
  must say INCONCLUSIVE), and for 1 hour (a look every minute), when the candidate has served about
  90 requests and the judge decides. The sequential judge is run twice: with the benchmark's floor
  of 30 requests and with the pipeline's ``judge_min_requests`` (10).
* A/B: errors 1% -> 2%, 1% -> 3%, median latency +20%, each ``fixed`` and ``grow`` (and latency
  against the baseline revision): the time of the first FAIL; power within 5 and 10 minutes.

    nice -n 10 python benchmarks/canary_judge.py [--deployments 2000] [--power-deployments 1000]
        [--trickle-deployments 1000] [--workers 2] [--seed 7] [--json]

Results: benchmarks/results/canary_judge.json (``targets``: each target with its value and whether
it is met; ``ceilings``: what no valid test could beat, for the targets a 5% canary cannot meet).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mangaassist.core.verdict import Verdict  # noqa: E402
from mangaassist.delivery.analysis import (  # noqa: E402
    ArmSample,
    Judgement,
    JudgeSettings,
    MannWhitneyJudge,
    Segment,
    SequentialJudge,
    ThresholdJudge,
)
from mangaassist.delivery.analysis.samples import BUCKETS, buckets_of  # noqa: E402
from mangaassist.delivery.rollout.settings import DeploySettings  # noqa: E402
from mangaassist.delivery.rollout.strategies import Phase, Strategy, decide, grow  # noqa: E402

RPS, SHARE, TICK_S, ALPHA = 50.0, 0.05, 10.0, 0.01
PROD_CAP = 25.0
"""prod's ``max_canary_weight_before_approval`` (policy.yaml): growth never passes it."""
JUDGES = ("sequential", "mann-whitney", "threshold")


@dataclass(frozen=True)
class Arm:
    error_rate: float = 0.01
    median_ms: float = 80.0
    sigma: float = 0.5
    fallback_rate: float = 0.05
    guardrail_rate: float = 0.01
    thumbs_down_rate: float = 0.005


@dataclass(frozen=True)
class Case:
    name: str
    candidate: Arm
    schedule: str
    """``fixed`` or ``grow``."""
    duration_s: float = 600.0
    rps: float = RPS
    look_s: float = TICK_S
    copy: bool = False
    """The pipeline's baseline revision: latency judged against a copy with the candidate's share."""
    floor10: bool = False
    """Also run the sequential judge with the pipeline's judge floor (10 requests)."""


def tick(rng: np.random.Generator, arm: Arm, rate: float, sample: ArmSample, dt: float) -> None:
    n = int(rng.poisson(rate * dt))
    if n == 0:
        return
    sample.requests += n
    sample.errors += int(rng.binomial(n, arm.error_rate))
    sample.fallbacks += int(rng.binomial(n, arm.fallback_rate))
    sample.guardrails += int(rng.binomial(n, arm.guardrail_rate))
    sample.thumbs_down += int(rng.binomial(n, arm.thumbs_down_rate))
    latencies = rng.lognormal(np.log(arm.median_ms), arm.sigma, n)
    sample.latency += np.bincount(buckets_of(latencies), minlength=BUCKETS)


def _add(into: ArmSample, more: ArmSample) -> None:
    into.requests += more.requests
    into.errors += more.errors
    into.fallbacks += more.fallbacks
    into.guardrails += more.guardrails
    into.thumbs_down += more.thumbs_down
    into.latency += more.latency


def _judges(floor10: bool) -> dict[str, Any]:
    settings = JudgeSettings(alpha=ALPHA, min_requests=30)
    judges: dict[str, Any] = {
        "sequential": SequentialJudge(settings),
        "mann-whitney": MannWhitneyJudge(alpha=ALPHA, min_requests=30),
        "threshold": ThresholdJudge(),
    }
    if floor10:
        judges["sequential (floor 10)"] = SequentialJudge(replace(settings, min_requests=10))
    return judges


def _step() -> Phase:
    """The first step of a canary as the rollout plans it by default (5%, before a 25% step), with
    its growth rule and its limits (``rollout.settings.DeploySettings``)."""
    return DeploySettings("prod").plan(Strategy.CANARY, only_allowed=False).phases[0]


def deploy(rng: np.random.Generator, case: Case) -> dict[str, Any]:
    """One deployment: seconds until each judge first failed the candidate (inf if never), the
    candidate's share at the end and the sequential judge's last verdict."""
    judges = _judges(case.floor10)
    phase = _step()
    first_fail = {name: math.inf for name in judges}
    fail_n = {name: math.inf for name in judges}
    failed_metrics: list[str] = []
    segments: list[Segment] = []
    c, b, lb = ArmSample(), ArmSample(), ArmSample()
    total_c, total_b = ArmSample(), ArmSample()
    weight, since = phase.weight, 0.0
    last: Judgement | None = None
    for k in range(1, int(case.duration_s / case.look_s) + 1):
        share = weight / 100
        now_c, now_b = ArmSample(), ArmSample()
        tick(rng, case.candidate, case.rps * share, now_c, case.look_s)
        if case.copy:  # the baseline revision: the candidate's share; the stable revision the rest
            now_lb = ArmSample()
            tick(rng, Arm(), case.rps * share, now_lb, case.look_s)
            tick(rng, Arm(), case.rps * (1 - 2 * share), now_b, case.look_s)
            _add(now_b, now_lb)  # the rates' baseline is the stable release as a whole
            _add(lb, now_lb)
        else:
            tick(rng, Arm(), case.rps * (1 - share), now_b, case.look_s)
        for sample, more in ((c, now_c), (b, now_b), (total_c, now_c), (total_b, now_b)):
            _add(sample, more)
        t = k * case.look_s
        for name, judge in judges.items():
            if first_fail[name] < math.inf:
                continue  # decided: it is not consulted again
            if name.startswith("sequential"):
                judgement = judge.judge(c, b, lb if case.copy else None, earlier=segments)
                if name == "sequential":
                    last = judgement
            else:
                judgement = judge.judge(total_c, total_b)
            if judgement.verdict is Verdict.FAIL:
                first_fail[name], fail_n[name] = t, total_c.requests
                if name == "sequential":
                    failed_metrics = [m.metric for m in judgement.failing]
        if case.schedule == "grow" and last is not None and first_fail["sequential"] == math.inf:
            # the rollout's own rule (a PASS would end the step in the pipeline: here it is watched on)
            action = decide(phase, last.verdict, total_c.requests, t)
            to = grow(phase, last.verdict, action, weight, t - since, PROD_CAP)
            if to is not None:
                segments.append(Segment(c, b, lb if case.copy else None))
                c, b, lb = ArmSample(), ArmSample(), ArmSample()
                weight, since = to, t
    return {
        "first_fail": first_fail,
        "fail_n": fail_n,
        "failed_metrics": failed_metrics,
        "final_weight": weight,
        "last_verdict": last.verdict.value if last is not None else None,
    }


def _chunk(args: tuple[Case, int, int]) -> list[dict[str, Any]]:
    case, seed, count = args
    rng = np.random.default_rng(seed)
    return [deploy(rng, case) for _ in range(count)]


def run_case(case: Case, deployments: int, seed: int, pool: ProcessPoolExecutor) -> list[dict[str, Any]]:
    size = 50
    jobs = [
        (case, seed * 1_000_003 + i, min(size, deployments - i * size))
        for i in range((deployments + size - 1) // size)
    ]
    out: list[dict[str, Any]] = []
    for part in pool.map(_chunk, jobs):
        out.extend(part)
    return out


def aa_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(runs[0]["first_fail"])
    out: dict[str, Any] = {
        "runs": len(runs),
        "false_rollback_rate": {
            n: sum(r["first_fail"][n] < math.inf for r in runs) / len(runs) for n in names
        },
        "false_rollbacks": {n: sum(r["first_fail"][n] < math.inf for r in runs) for n in names},
    }
    metrics = [m for r in runs for m in r["failed_metrics"]]
    out["sequential_failed_on"] = {m: metrics.count(m) for m in sorted(set(metrics))}
    verdicts = [r["last_verdict"] for r in runs]
    out["sequential_last_verdict"] = {v: verdicts.count(v) for v in sorted({str(v) for v in verdicts})}
    weights = [r["final_weight"] for r in runs]
    out["final_share"] = {f"{w:g}%": weights.count(w) for w in sorted(set(weights))}
    return out


def ab_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per judge: the share of deployments failed within 1, 5 and 10 minutes, and the medians over
    all deployments (a deployment never failed counts as infinitely late: null when that is the
    median) of the seconds and of the candidate's requests until the first FAIL."""
    out: dict[str, Any] = {"runs": len(runs)}
    for name in runs[0]["first_fail"]:
        times = np.array([r["first_fail"][name] for r in runs])
        requests = np.array([r["fail_n"][name] for r in runs])
        out[name] = {
            "power_within_1min": float((times <= 60).mean()),
            "power_within_5min": float((times <= 300).mean()),
            "power_within_10min": float(np.isfinite(times).mean()),
            "median_seconds_to_detect": float(np.median(times)),
            "median_candidate_requests_to_detect": float(np.median(requests)),
        }
    weights = [r["final_weight"] for r in runs]
    out["final_share"] = {f"{w:g}%": weights.count(w) for w in sorted(set(weights))}
    return out


def ceilings() -> dict[str, Any]:
    """What no valid test can beat at a fixed 5% share: the most powerful test at one look (the
    last moment the target allows), knowing the stable revision's error rate exactly, at the error
    metric's alpha share (0.4 of 0.01) and at all of alpha."""
    from scipy.stats import binom, poisson

    def power(seconds: float, p0: float, p1: float, alpha: float) -> float:
        lam = RPS * SHARE * seconds
        ns = np.arange(max(1, int(lam - 8 * lam**0.5)), int(lam + 8 * lam**0.5))
        weights = poisson.pmf(ns, lam)
        total = 0.0
        for n, w in zip(ns, weights, strict=True):
            k = int(binom.isf(alpha, n, p0)) + 1  # smallest k with P(X >= k) <= alpha
            while k > 0 and binom.sf(k - 2, n, p0) <= alpha:
                k -= 1
            while binom.sf(k - 1, n, p0) > alpha:
                k += 1
            total += w * float(binom.sf(k - 1, n, p1))
        return round(total / float(weights.sum()), 4)

    return {
        "errors 1% -> 3% within 5 min at 5%": {
            "alpha_0.004": power(300, 0.01, 0.03, 0.004),
            "alpha_0.01": power(300, 0.01, 0.03, 0.01),
        },
        "errors 1% -> 2% within 10 min at 5%": {
            "alpha_0.004": power(600, 0.01, 0.02, 0.004),
            "alpha_0.01": power(600, 0.01, 0.02, 0.01),
        },
    }


CASES: tuple[tuple[str, Case, str], ...] = (
    ("A/A fixed 5%", Case("aa", Arm(), "fixed"), "aa"),
    ("A/A grow", Case("aa", Arm(), "grow"), "aa"),
    ("A/A fixed 5%, baseline revision", Case("aa", Arm(), "fixed", copy=True), "aa"),
    ("A/A 0.1 req/s grow", Case("aa", Arm(), "grow", rps=0.1, floor10=True), "trickle"),
    (
        "A/A 0.1 req/s grow, 1 h",
        Case("aa", Arm(), "grow", duration_s=3600.0, rps=0.1, look_s=60.0, floor10=True),
        "trickle",
    ),
    ("errors 1% -> 2% fixed 5%", Case("e2", Arm(error_rate=0.02), "fixed"), "ab"),
    ("errors 1% -> 3% fixed 5%", Case("e3", Arm(error_rate=0.03), "fixed"), "ab"),
    ("median latency +20% fixed 5%", Case("l20", Arm(median_ms=96.0), "fixed"), "ab"),
    ("errors 1% -> 2% grow", Case("e2", Arm(error_rate=0.02), "grow"), "ab"),
    ("errors 1% -> 3% grow", Case("e3", Arm(error_rate=0.03), "grow"), "ab"),
    ("median latency +20% grow", Case("l20", Arm(median_ms=96.0), "grow"), "ab"),
    (
        "median latency +20% fixed 5%, baseline revision",
        Case("l20", Arm(median_ms=96.0), "fixed", copy=True),
        "ab",
    ),
)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    def seq(case: str, key: str) -> Any:
        return results[case]["sequential"][key]

    aa = results["A/A fixed 5%"]["false_rollback_rate"]["sequential"]
    aa_grow = results["A/A grow"]["false_rollback_rate"]["sequential"]
    trickle = results["A/A 0.1 req/s grow"]["false_rollbacks"]
    rows = [
        (
            "A/A false rollback <= 1% (fixed 5%; grow)",
            max(aa, aa_grow),
            lambda v: v <= 0.01,
            f"{aa:.2%}; {aa_grow:.2%}",
        ),
        (
            "errors 1% -> 3%: power >= 95% within 5 min at a 5% canary (fixed, no growth)",
            seq("errors 1% -> 3% fixed 5%", "power_within_5min"),
            lambda v: v >= 0.95,
            None,
        ),
        (
            "median latency +20%: median time to detect <= 60 s (fixed 5%)",
            seq("median latency +20% fixed 5%", "median_seconds_to_detect"),
            lambda v: v <= 60,
            None,
        ),
        (
            "errors 1% -> 2%: caught within 10 min >= 90% (grow)",
            seq("errors 1% -> 2% grow", "power_within_10min"),
            lambda v: v >= 0.9,
            None,
        ),
        (
            "0.1 req/s, 10 min: 0 false rollbacks in the A/A runs (floor 30; floor 10)",
            trickle["sequential"] + trickle["sequential (floor 10)"],
            lambda v: v == 0,
            f"{trickle['sequential']} and {trickle['sequential (floor 10)']} of "
            f"{results['A/A 0.1 req/s grow']['runs']}",
        ),
    ]
    return [
        {"target": name, "value": value, "shown": shown or _shown(value), "met": bool(check(value))}
        for name, value, check, shown in rows
    ]


def _shown(value: float) -> str:
    return f"{value:.1%}" if 0 <= value <= 1 and not float(value).is_integer() else f"{value:g}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployments", type=int, default=2000, help="A/A deployments per case")
    parser.add_argument("--power-deployments", type=int, default=1000, help="deployments per A/B case")
    parser.add_argument("--trickle-deployments", type=int, default=1000, help="A/A runs at 0.1 req/s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if min(args.deployments, args.power_deployments, args.trickle_deployments, args.workers) < 1:
        parser.error("counts and --workers must be >= 1")
    started = time.perf_counter()
    counts = {"aa": args.deployments, "ab": args.power_deployments, "trickle": args.trickle_deployments}
    results: dict[str, Any] = {}
    say: Callable[[str], None] = (lambda _line: None) if args.json else print
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for index, (label, case, kind) in enumerate(CASES):
            runs = run_case(case, counts[kind], args.seed * 100 + index, pool)
            if kind == "ab":
                results[label] = ab_summary(runs)
                say(
                    f"{label}: "
                    + "; ".join(
                        f"{n} {results[label][n]['power_within_5min']:.1%} within 5 min, "
                        f"{results[label][n]['power_within_10min']:.1%} within 10 "
                        f"(median {results[label][n]['median_seconds_to_detect']:.0f} s)"
                        for n in JUDGES
                    )
                )
            else:
                results[label] = aa_summary(runs)
                say(
                    f"{label}: false rollbacks "
                    + ", ".join(
                        f"{n} {results[label]['false_rollbacks'][n]}/{len(runs)}"
                        for n in results[label]["false_rollbacks"]
                    )
                )
    table = targets(results)
    for row in table:
        say(f"{'met' if row['met'] else 'NOT met'}: {row['target']}: {row['shown']}")
    defaults = DeploySettings("prod")
    report = {
        "benchmark": "canary_judge",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "rps": RPS,
            "canary_share": SHARE,
            "look_every_s": TICK_S,
            "alpha": ALPHA,
            "min_requests": 30,
            "grow": {
                "rule": "rollout.strategies.grow on the 5% step of a 5/25/50/100 canary",
                "grow_after_s": defaults.grow_after_s,
                "ladder": list(_step().grow_to),
                "max_step_s": _step().max_duration_s,
                "cap": PROD_CAP,
            },
            "deployments": args.deployments,
            "power_deployments": args.power_deployments,
            "trickle_deployments": args.trickle_deployments,
            "seed": args.seed,
            "workers": args.workers,
        },
        "results": results,
        "targets": table,
        "ceilings": ceilings(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = ROOT / "benchmarks" / "results" / "canary_judge.json"
    text = json.dumps(_finite(report), indent=2, allow_nan=False)
    out.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print(f"written to {out.relative_to(ROOT)} in {report['seconds']} s")
    return 0


def _finite(value: Any) -> Any:
    """JSON without NaN or infinity: a time never reached is null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


if __name__ == "__main__":
    raise SystemExit(main())
