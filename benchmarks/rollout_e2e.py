"""CD-01 benchmark on the real platform: releases of the real chatbot under 50 requests/s.

One platform (``mangaassist up`` with its own control and router ports, state in a temporary
home that borrows the checkout's model and embedding caches) serves every scenario; background
traffic is ``delivery.rollout.load`` through the router (multi-turn conversations, 10% feedback).
A poller reads the control plane's weights every 50 ms, so rollbacks are timed from the outside.

Scenarios (each one ``mangaassist deploy app --yes --json`` as a user runs it):

* ``good``: an unchanged candidate through 5/25/50/100: total time, failed requests,
  conversations served by two revisions.
* ``fault`` (``--runs`` times): ``--set-env MANGAASSIST_FAULT=error_rate=0.2``: time from the
  candidate's first faulty response to 100% of traffic back on stable (target p99 <= 5 s), failed
  requests (users who got an error), the largest weight the candidate reached.
* ``live-fault`` (``--runs`` times): ``error_rate=0.2,scope=users``: the same errors, but only on
  requests the router sends by weight (users), so every gate before users passes and the canary
  judge alone must catch it: time from the first faulty answer a user got to 100% of traffic back
  on stable, and how many users got an error.
* ``slow``: ``latency_ms=400``: must be rolled back before the 25% step; where it was stopped.

Usage::

    python benchmarks/rollout_e2e.py [--runs 10] [--rps 50] [--scenarios good,fault,live-fault,slow]

Writes ``benchmarks/results/rollout_e2e.json``. Takes 10-20 minutes (every candidate is a new
revision: a new worker process that loads the model and warms up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from mangaassist.delivery.rollout.load import BackgroundLoad
from mangaassist.platform.local.client import LocalCompute

ROOT = Path(__file__).resolve().parents[1]
MANGAASSIST = Path(sys.executable).with_name("mangaassist")
CONFIG = """\
[environments.dev]
provider = "local"
home = "home"
control_port = 0
[environments.dev.services.chatbot]
app = "mangaassist.chatbot.app:create_app"
source = "{src}"
first_revision = "r1"
router_port = 0
replicas = 1
ready_timeout_s = 240
[environments.dev.services.chatbot.env]
MANGAASSIST_TORCH_THREADS = "1"
[environments.dev.deploy]
test_command = "{{python}} -c 'print(1)'"
latency_budget_ms = {budget}
load_rps = {load_rps}
load_s = {load_s}
warmup_s = 1
steps = [5, 25, 50, 100]
min_requests = 30
judge_min_requests = 10
max_step_s = 120
on_inconclusive = "rollback"
drain_idle_s = 1
drain_max_s = 20
"""


class WeightWatch:
    """The chatbot's weights over time, read from the control plane every ``interval`` seconds."""

    def __init__(self, run_dir: Path, interval: float = 0.05) -> None:
        self.compute = LocalCompute(run_dir, timeout_s=5.0)
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                weights = self.compute.raw_status()["services"]["chatbot"]["weights"]
                self.samples.append((time.time(), {k: float(v) for k, v in weights.items()}))
            except Exception:  # noqa: S110 - a missed sample is fine; the next one comes in 50 ms
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> WeightWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.compute.close()

    def max_weight(self, revision: str, since: float) -> float:
        return max((w.get(revision, 0.0) for t, w in self.samples if t >= since), default=0.0)

    def back_to_stable(self, revision: str, since: float) -> float | None:
        """The first time at or after ``since`` when ``revision`` had no weight."""
        for t, w in self.samples:
            if t >= since and w.get(revision, 0.0) == 0.0:
                return t
        return None


def cli(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MANGAASSIST), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def deploy(env: dict[str, str], *extra: str) -> tuple[dict[str, Any], float]:
    started = time.time()
    done = cli(env, "deploy", "app", "--yes", "--json", *extra)
    try:
        doc: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(
            f"deploy printed no JSON (exit {done.returncode}): {done.stderr[-2000:]}"
        ) from None
    return doc, started


def scenario(env: dict[str, str], run_dir: Path, url: str, rps: float, *extra: str) -> dict[str, Any]:
    """One deploy under background load; what users saw, what the weights did.

    Every scenario sets a unique ``MANGAASSIST_BENCH_RUN`` on its revision: the release id covers
    the environment, so each deploy is a new candidate even from the same source tree.
    """
    with WeightWatch(run_dir) as watch:
        load = BackgroundLoad(url, rps=rps, sessions=40, seed=None).start()
        time.sleep(3)  # steady traffic before the deploy starts
        doc, started = deploy(env, *extra, "--set-env", f"MANGAASSIST_BENCH_RUN={uuid.uuid4().hex[:8]}")
        finished = time.time()
        time.sleep(1)
        report = load.stop()
    candidate = str(doc.get("candidate"))
    failures = [t for t, rev in report.failures if rev == candidate]
    out: dict[str, Any] = {
        "state": doc.get("state"),
        "reason": doc.get("reason"),
        "candidate": candidate,
        "seconds": round(finished - started, 2),
        "requests": report.requests,
        "failed": report.failed,
        "failed_on_candidate": report.failed_by_revision.get(candidate, 0),
        "served_by_candidate": report.by_revision.get(candidate, 0),
        "mixed_conversations": report.mixed_conversations,
        "conversations": report.conversations,
        "p50_ms": report.as_dict()["p50_ms"],
        "p99_ms": report.as_dict()["p99_ms"],
        "max_candidate_weight": watch.max_weight(candidate, started),
        "drained_after_s": (doc.get("release") or {}).get("drained_after_s"),
        "sessions_moved_out": moved_out(run_dir),
    }
    if failures:
        first = min(failures)
        back = watch.back_to_stable(candidate, first)
        out["first_fault_to_stable_s"] = round(back - first, 3) if back is not None else None
    return out


SCENARIOS = ("good", "fault", "live-fault", "slow")
FAULTS = {"fault": "error_rate=0.2", "live-fault": "error_rate=0.2,scope=users"}


def fault_runs(
    env: dict[str, str], run_dir: Path, url: str, rps: float, runs: int, name: str, spec: str
) -> dict[str, Any]:
    """``runs`` deploys with ``MANGAASSIST_FAULT=spec``, each one and a summary."""
    done = []
    for i in range(runs):
        one = scenario(env, run_dir, url, rps, "--set-env", f"MANGAASSIST_FAULT={spec}")
        print(f"{name} {i + 1}/{runs}: {json.dumps(one)}", flush=True)
        done.append(one)
    timed = [r["first_fault_to_stable_s"] for r in done if r.get("first_fault_to_stable_s") is not None]
    return {
        "fault": spec,
        "runs": done,
        "rolled_back": sum(r["state"] == "rolled_back" for r in done),
        "first_fault_to_stable_s": summary(timed) if timed else None,
        "caught_before_users": sum(r["served_by_candidate"] == 0 for r in done),
        "failed_requests": summary([float(r["failed_on_candidate"]) for r in done]),
        "target_p99_s": 5.0,
    }


def moved_out(run_dir: Path) -> dict[str, int]:
    """Per revision, the conversations the router moved away from it (its revision was gone)."""
    compute = LocalCompute(run_dir, timeout_s=10.0)
    try:
        revisions = compute.stats("chatbot", 1 << 62).get("revisions", {})
    finally:
        compute.close()
    return {name: int(c.get("sessions_moved_out", 0)) for name, c in revisions.items()}


def summary(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "max": round(float(arr.max()), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="fault runs")
    parser.add_argument("--rps", type=float, default=50.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--latency-budget-ms",
        type=float,
        default=1500.0,
        help="the pinned latency gate before the canary (high, so the canary judge meets the slow one)",
    )
    parser.add_argument(
        "--pinned-load",
        default="20x5",
        help="the pinned load before the canary, RPSxSECONDS (default: the environment default, 20x5)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rollout_e2e.json")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}: expected {', '.join(SCENARIOS)}")
    try:
        load_rps, load_s = (float(x) for x in args.pinned_load.lower().split("x"))
    except ValueError:
        parser.error(f"--pinned-load {args.pinned_load!r}: expected RPSxSECONDS, e.g. 20x5")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rps": args.rps,
        "latency_budget_ms": args.latency_budget_ms,
        "pinned_load": {"rps": load_rps, "seconds": load_s},
    }
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        directory = Path(tmp)
        (directory / "mangaassist.toml").write_text(
            CONFIG.format(src=ROOT / "src", budget=args.latency_budget_ms, load_rps=load_rps, load_s=load_s),
            encoding="utf-8",
        )
        (directory / "policy.yaml").write_text("environments:\n  dev: {}\n", encoding="utf-8")
        for name in ("pyproject.toml", "src", "data", "knowledge", "ml", "config"):
            (directory / name).symlink_to(ROOT / name)
        home = directory / "home"
        home.mkdir()
        for cached in ("models", "cache"):  # the trained model and the embedding cache of this checkout
            if (ROOT / ".mangaassist" / cached).is_dir():
                shutil.copytree(ROOT / ".mangaassist" / cached, home / cached)
        env = {
            **os.environ,
            "MANGAASSIST_PLATFORM_CONFIG": str(directory / "mangaassist.toml"),
            "MANGAASSIST_HOME": str(home),
            "MANGAASSIST_ROOT": str(directory),
            "MANGAASSIST_POLICY": str(directory / "policy.yaml"),
            "MANGAASSIST_POLL_SECONDS": "0.2",
            "MANGAASSIST_STATE_URL": "",
            "MANGAASSIST_FAULT": "",
            "HF_HUB_OFFLINE": "1",
        }
        up = cli(env, "up", timeout=400)
        if up.returncode != 0:
            raise SystemExit(f"mangaassist up failed: {up.stderr[-2000:]}")
        try:
            status = json.loads(cli(env, "status", "--json").stdout)
            url = status["services"]["chatbot"]["url"]
            run_dir = home / "platform"
            print(f"platform up; router {url}; {args.rps:g} requests/s of background traffic", flush=True)
            if "good" in chosen:
                good = scenario(env, run_dir, url, args.rps)
                print(f"good: {json.dumps(good)}", flush=True)
                results["good"] = good
            for name, spec in FAULTS.items():
                if name in chosen:
                    results[name] = fault_runs(env, run_dir, url, args.rps, args.runs, name, spec)
            if "slow" in chosen:
                slow = scenario(env, run_dir, url, args.rps, "--set-env", "MANGAASSIST_FAULT=latency_ms=400")
                slow["stopped_before_25"] = (
                    slow["state"] == "rolled_back" and slow["max_candidate_weight"] < 25
                )
                print(f"slow: {json.dumps(slow)}", flush=True)
                results["slow"] = slow
        finally:
            down = cli(env, "down")
            if down.returncode != 0:
                print(f"mangaassist down failed: {down.stderr[-1000:]}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
