"""Benchmark (simulation): false rollbacks and detection power of the three canary judges.

Each simulated deployment sends 50 requests/s, 5% to the candidate, and consults every judge after
each 10 s of traffic, as a canary step does:

* A/A: the candidate is identical to the stable revision (1% errors, lognormal latency with an
  80 ms median, 5% fallbacks, 1% guardrail firings, 0.5% thumbs-down), observed for 10 minutes.
  A judge that says FAIL at any look has caused a false rollback.
* A/B: the candidate's error rate goes 1% -> 2% or 1% -> 3%, or its latency rises 20%. We record
  when each judge first says FAIL, and the share of deployments caught within 5 minutes (power).

    python benchmarks/canary_judge.py [--deployments 2000] [--power-deployments 500] [--json]

Results: benchmarks/results/canary_judge.json. Targets: sequential false rollbacks <= 1%; power
>= 95% within 5 minutes for 1% -> 3%.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mangaassist.core.verdict import Verdict  # noqa: E402
from mangaassist.delivery.analysis import (  # noqa: E402
    ArmSample,
    CanaryJudge,
    MannWhitneyJudge,
    SequentialJudge,
    ThresholdJudge,
)
from mangaassist.delivery.analysis.samples import BUCKETS, buckets_of  # noqa: E402

RPS, SHARE, TICK_S = 50.0, 0.05, 10.0


@dataclass(frozen=True)
class Arm:
    error_rate: float = 0.01
    median_ms: float = 80.0
    sigma: float = 0.5
    fallback_rate: float = 0.05
    guardrail_rate: float = 0.01
    thumbs_down_rate: float = 0.005


def tick(rng: np.random.Generator, arm: Arm, rate: float, sample: ArmSample) -> None:
    n = int(rng.poisson(rate * TICK_S))
    if n == 0:
        return
    sample.requests += n
    sample.errors += int(rng.binomial(n, arm.error_rate))
    sample.fallbacks += int(rng.binomial(n, arm.fallback_rate))
    sample.guardrails += int(rng.binomial(n, arm.guardrail_rate))
    sample.thumbs_down += int(rng.binomial(n, arm.thumbs_down_rate))
    latencies = rng.lognormal(np.log(arm.median_ms), arm.sigma, n)
    sample.latency += np.bincount(buckets_of(latencies), minlength=BUCKETS)


def deploy(
    rng: np.random.Generator, candidate: Arm, judges: list[CanaryJudge], duration_s: float
) -> dict[str, float]:
    """Seconds until each judge first failed the candidate (inf if never)."""
    c, b = ArmSample(), ArmSample()
    first_fail = {j.name: float("inf") for j in judges}
    looks = int(duration_s / TICK_S)
    for k in range(1, looks + 1):
        tick(rng, candidate, RPS * SHARE, c)
        tick(rng, Arm(), RPS * (1 - SHARE), b)
        for j in judges:
            if first_fail[j.name] == float("inf") and j.judge(c, b).verdict is Verdict.FAIL:
                first_fail[j.name] = k * TICK_S
    return first_fail


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployments", type=int, default=2000, help="A/A deployments")
    parser.add_argument("--power-deployments", type=int, default=500, help="deployments per A/B scenario")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.deployments < 1 or args.power_deployments < 1:
        parser.error("--deployments and --power-deployments must be >= 1")
    rng = np.random.default_rng(args.seed)
    judges: list[CanaryJudge] = [SequentialJudge(), MannWhitneyJudge(), ThresholdJudge()]
    started = time.perf_counter()

    aa = [deploy(rng, Arm(), judges, 600.0) for _ in range(args.deployments)]
    false_rollbacks = {j.name: sum(r[j.name] < float("inf") for r in aa) / len(aa) for j in judges}
    if not args.json:
        print(
            f"A/A, {args.deployments} deployments of 10 min, 60 looks each: false rollback rate "
            + ", ".join(f"{k} {v:.2%}" for k, v in false_rollbacks.items())
        )

    scenarios = {
        "errors 1% -> 2%": Arm(error_rate=0.02),
        "errors 1% -> 3%": Arm(error_rate=0.03),
        "median latency +20%": Arm(median_ms=96.0),
    }
    power: dict[str, dict[str, dict[str, float]]] = {}
    for label, arm in scenarios.items():
        runs = [deploy(rng, arm, judges, 600.0) for _ in range(args.power_deployments)]
        power[label] = {}
        for j in judges:
            times = np.array([r[j.name] for r in runs])
            caught = times[np.isfinite(times)]
            power[label][j.name] = {
                "power_within_5min": float((times <= 300).mean()),
                "power_within_10min": float(np.isfinite(times).mean()),
                "median_seconds_to_detect": float(np.median(caught)) if len(caught) else float("inf"),
                "median_candidate_requests_to_detect": float(np.median(caught) * RPS * SHARE)
                if len(caught)
                else float("inf"),
            }
        if not args.json:
            print(
                f"{label}: "
                + "; ".join(
                    f"{name} {v['power_within_5min']:.1%} within 5 min "
                    f"(median {v['median_seconds_to_detect']:.0f} s)"
                    for name, v in power[label].items()
                )
            )

    report = {
        "benchmark": "canary_judge",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "rps": RPS,
            "canary_share": SHARE,
            "look_every_s": TICK_S,
            "aa_minutes": 10,
            "deployments": args.deployments,
            "power_deployments": args.power_deployments,
            "seed": args.seed,
            "alpha": 0.01,
        },
        "false_rollback_rate": false_rollbacks,
        "power": power,
        "targets": {"sequential_false_rollback_max": 0.01, "power_1_to_3_within_5min_min": 0.95},
        "meets": {
            "false_rollback": false_rollbacks["sequential"] <= 0.01,
            "power_1_to_3": power["errors 1% -> 3%"]["sequential"]["power_within_5min"] >= 0.95,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = ROOT / "benchmarks" / "results" / "canary_judge.json"
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print(f"written to {out.relative_to(ROOT)} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
