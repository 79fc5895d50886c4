"""CD-02 benchmark: synthesize the CDK app for all three stages, offline, and count what the gates find.

One run of ``python infra/app.py`` (dev, staging and prod stages; cdk-nag's AwsSolutions checks run
inside and fail the synth on any unacknowledged finding), then cfn-lint and the template rules
(``delivery.infra.template_findings``) on every template. Repeated ``--runs`` times for the synth
time. Targets: synth of all three stages <= 60 s here; 0 unacknowledged cdk-nag findings (a synth
that succeeds has none); 0 cfn-lint errors; 0 template findings.

Usage::

    python benchmarks/infra_synth.py [--runs 3] [--json]

Writes ``benchmarks/results/infra_synth.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mangaassist.delivery.pipelines import infra as cd02  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="synths to time (default 3)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    params = {"root": str(ROOT)}
    seconds = []
    summary: dict[str, object] = {}
    for i in range(args.runs):
        out = Path(tempfile.mkdtemp(prefix="bench-synth-"))
        started = time.perf_counter()
        summary = cd02.synthesize(params, None, out)
        seconds.append(time.perf_counter() - started)
        if not args.json:
            print(f"synth {i + 1}/{args.runs}: {seconds[-1]:.1f} s", flush=True)
    stages: dict[str, dict[str, str]] = summary["stages"]  # type: ignore[assignment]
    paths = [p for stacks in stages.values() for p in stacks.values()]
    lint = cd02.lint(paths)
    errors = [m for m in lint if m.get("Level") == "Error"]
    templates = {s: json.loads(Path(p).read_text()) for stacks in stages.values() for s, p in stacks.items()}
    findings = cd02.template_findings(templates, cd02.acknowledged_wildcards(templates))
    acknowledgments = sum(
        len(((res.get("Metadata") or {}).get("cdk_nag") or {}).get("rules_to_suppress") or [])
        for t in templates.values()
        for res in t.get("Resources", {}).values()
    )
    result = {
        "benchmark": "infra_synth",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": 2, "python": platform.python_version()},
        "runs": args.runs,
        "stages": {stage: len(stacks) for stage, stacks in stages.items()},
        "resources": sum(len(t.get("Resources", {})) for t in templates.values()),
        "synth_seconds": {
            "median": round(statistics.median(seconds), 2),
            "max": round(max(seconds), 2),
            "all": [round(s, 2) for s in seconds],
        },
        "cdk_nag_unacknowledged": 0,  # the synth fails on any: every run above succeeded
        "cdk_nag_acknowledged_resource_rules": acknowledgments,
        "cfn_lint_errors": len(errors),
        "cfn_lint_warnings": len(lint) - len(errors),
        "template_findings": [f.line() for f in findings],
        "targets": {"synth_seconds_max": 60, "cdk_nag_unacknowledged": 0, "cfn_lint_errors": 0},
        "met": max(seconds) <= 60 and not errors and not findings,
    }
    out_file = ROOT / "benchmarks" / "results" / "infra_synth.json"
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"synth of {len(stages)} stages ({result['resources']} resources): median "
            f"{result['synth_seconds']['median']} s, max {result['synth_seconds']['max']} s; "
            f"cfn-lint errors {len(errors)}, warnings {len(lint) - len(errors)}; "
            f"template findings {len(findings)}"
        )
        print(f"written to {out_file.relative_to(ROOT)}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
