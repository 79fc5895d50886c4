"""Run every benchmark (``make bench``), each to its end whatever the others did, then say which
met its targets.

A benchmark's exit status is its verdict: 0 when it finished and met the targets it checks (some
only measure, and always exit 0 when they finish), 1 when it measured but missed a target, anything
else when it could not measure. One that misses does not stop the rest (each writes its
own JSON under ``benchmarks/results/``); the summary names every miss and failure, and the exit status
is 1 when there was any.

    python benchmarks/run_all.py [--only NAME ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chat_latency", ()),
    ("infra_synth", ()),
    ("slo_alerts", ()),
    ("router_overhead", ()),
    ("upstream_clients", ()),
    ("canary_judge", ()),
    ("kb_reindex", ()),
    ("config_propagation", ()),
    ("model_endpoint", ()),
    ("rollout_e2e", ()),
    ("model_deploy", ()),
    ("migration_drill", ("--out", "benchmarks/results/migration_drill_bench.json")),
    ("frontend_drill", ("--out", "benchmarks/results/frontend_drill_bench.json")),
)


def verdict(code: int) -> str:
    return {0: "ok", 1: "missed a target"}.get(code, f"failed (exit {code})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [name for name, _ in BENCHMARKS]
    parser.add_argument(
        "--only", nargs="+", choices=names, metavar="NAME", help=f"run only these: {', '.join(names)}"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    chosen = [(n, extra) for n, extra in BENCHMARKS if not args.only or n in args.only]
    results = []
    for i, (name, extra) in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *extra], cwd=HERE.parent).returncode
        seconds = round(time.monotonic() - started, 1)
        results.append({"benchmark": name, "exit": code, "verdict": verdict(code), "seconds": seconds})
        print(f"[{i}/{len(chosen)}] {name}: {verdict(code)} in {seconds:g} s", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['benchmark']:<20} {r['verdict']:<22} {r['seconds']:>8.1f} s")
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
