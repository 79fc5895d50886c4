"""CD-03 benchmark on the real platform: intent model deploys (MiniLM) under live users.

One local platform (both services, the chatbot asking the model's router; its own control and
router ports; state in a temporary home that borrows the checkout's model and embedding caches).
Users all along: ``--rps`` intent requests a second on the model's router (``demo.model.ModelUsers``:
each answer's status, serving revision and model version recorded from the client's side) and
``--chats`` chat conversations a second through the chatbot. Versions are trained in this process
on the checkout's ``ml/intent.yaml`` (MiniLM) into the temporary home's MLflow registry; every
deploy is ``mangaassist deploy model intent --yes --json`` as a user runs it.

* ``good`` (``--runs`` times): the champion is a model trained on 70% of the training set, served
  by a fresh revision (set up directly: alias and revision, not measured); a model trained on all of
  it is deployed: gate, shadow, canary, approval (nobody in dev), drain, alias. Measured: from the
  command's start to the ``champion`` alias naming the new version (the registry's own record of
  the move), and the command's wall time. CD-03 has no bake step: nothing is subtracted; the drain
  before the old revision is retired (``drain_idle_s``) is inside the time and reported apart.
* ``bad`` (``--runs`` times): a model trained on shuffled labels, forced past the offline gate with
  ``--override-gate --reason`` (dev's policy allows it; the engine audits it as
  ``policy.override``, checked here for each run). It must be caught in the shadow: the number of
  user requests it served is counted from the client side (answers whose ``X-MangaAssist-Revision``
  is the candidate or whose ``X-Model-Version`` is its package) and from the router's counters
  (requests to the candidate minus the pinned ones: the deploy step's own ``/readyz`` check).
  Target: 0.

Usage::

    python benchmarks/model_deploy.py [--runs 3] [--rps 20] [--chats 4]

Writes ``benchmarks/results/model_deploy.json``. About 6-8 minutes on a 2-core machine.
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
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from mangaassist.core.artifact import Artifact
from mangaassist.delivery.model_promotion import promote
from mangaassist.delivery.pipelines import model as cd03
from mangaassist.delivery.rollout.load import BackgroundLoad
from mangaassist.demo.model import ModelUsers, Trainer
from mangaassist.platform.compute import Revision
from mangaassist.platform.local.client import LocalCompute
from mangaassist.platform.local.model_registry_mlflow import MlflowModelRegistry

ROOT = Path(__file__).resolve().parents[1]
MANGAASSIST = Path(sys.executable).with_name("mangaassist")
APP = "mangaassist.chatbot.model_server:create_app"
SHADOW = {"shadow_min_requests": 100, "shadow_max_s": 120, "shadow_p99_budget_ms": 1000}
"""The pipeline's shadow defaults (100 comparisons, agreement 0.85, no mirrored error allowed), with
the p99 budget at 1 s: three model processes, the chatbot and the users share two cores."""
CANARY = {
    "steps": [5, 25, 50, 100],
    "min_requests": 30,
    "judge_min_requests": 10,
    "max_step_s": 120,
    "on_inconclusive": "rollback",
    "drain_idle_s": 2,
    "drain_max_s": 30,
}
"""The pipeline's canary defaults (5/25/50/100, 30 requests per step), a shorter inconclusive limit
that rolls back instead of waiting for a person, and the default 2 s drain."""
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
[environments.dev.services.chatbot.links]
MANGAASSIST_INTENT_URL = "intent-model"
[environments.dev.services.intent-model]
app = "{app}"
source = "{src}"
first_revision = "r1"
router_port = 0
replicas = 1
ready_timeout_s = 180
shadow_timeout_s = 2
[environments.dev.services.intent-model.env]
MANGAASSIST_TORCH_THREADS = "1"
"""
REASON = "benchmark: a shuffled-label model must be caught in shadow"


def toml_table(name: str, values: dict[str, Any]) -> str:
    rows = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return f"[environments.dev.{name}]\n" + "\n".join(rows) + "\n"


def cli(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MANGAASSIST), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def json_of(done: subprocess.CompletedProcess[str], what: str) -> Any:
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(
            f"{what} printed no JSON (exit {done.returncode}): {done.stderr[-2000:]}"
        ) from None


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 2),
        "max": round(max(values), 2),
        "min": round(min(values), 2),
    }


class Bench:
    def __init__(self, home: Path, env: dict[str, str], users: ModelUsers) -> None:
        self.home = home
        self.env = env
        self.users = users
        self.compute = LocalCompute(home / "platform")
        self.registry = MlflowModelRegistry.from_home(home)
        self.trainer = Trainer(ROOT / "ml" / "intent.yaml", self.registry)

    def live(self) -> list[str]:
        return [n for n, w in self.compute.status(cd03.SERVICE).weights.items() if w > 0]

    def serve_champion(self, version: str, name: str) -> None:
        """Set-up, not measured: ``version`` is the champion and a fresh revision ``name`` serves it."""
        champion = self.registry.alias("intent", "champion")
        if champion is None or champion.version != version:
            promote(self.registry, "intent", version, actor="bench", reason="benchmark set-up")
        package = self.registry.download("intent", version, self.home / "models" / "packages")
        status = self.compute.status(cd03.SERVICE)
        (stable,) = self.live()
        digest = next(r.digest for r in status.revisions if r.name == stable)
        artifact = Artifact(self.home / "artifacts" / f"{digest}.tar", digest)
        revision = Revision(name, artifact, APP, {cd03.PACKAGE_ENV: str(package)}, 1)
        deployed = self.compute.deploy(cd03.SERVICE, revision, timeout_s=180)
        if deployed.health.value != "healthy":
            raise RuntimeError(f"set-up revision {name}: {deployed.health.value} ({deployed.reason})")
        self.compute.set_weights(cd03.SERVICE, {name: 100.0})
        self.compute.retire(cd03.SERVICE, stable, drain_timeout_s=10)

    def deploy(self, version: str, *extra: str) -> tuple[dict[str, Any], float, float, int]:
        mark = self.users.mark()
        started = time.time()
        done = cli(self.env, "deploy", "model", "intent", "--version", version, "--yes", "--json", *extra)
        finished = time.time()
        return json_of(done, "deploy model"), started, finished, mark

    def alias_moved_at(self, version: str, since: float) -> float | None:
        for move in self.registry.history("intent"):
            if move.get("alias") == "champion" and str(move.get("version")) == version:
                at = datetime.fromisoformat(str(move["at"])).timestamp()
                if at >= since:
                    return at
        return None

    def timeline(self, run_id: str) -> dict[str, Any]:
        shown = json_of(cli(self.env, "runs", "show", run_id, "--json"), "runs show")
        return {s["name"]: s for s in shown["timeline"]}

    def audit_kinds(self, run_id: str) -> list[str]:
        entries = json_of(cli(self.env, "audit", "--run", run_id, "--json"), "audit")
        return [str(e["kind"]) for e in entries]

    def good(self, i: int, v70: str) -> dict[str, Any]:
        self.serve_champion(v70, f"base-{i}")
        version, _ = self.trainer.train(f"benchmark good {i}")
        doc, started, finished, mark = self.deploy(version)
        steps = self.timeline(str(doc["run"]))
        # the alias moves in the promote step's last effect; the registry records it to the second
        promote_end = (steps.get("promote") or {}).get("finished_at")
        moved = datetime.fromisoformat(str(promote_end)).timestamp() if promote_end else None
        recorded = self.alias_moved_at(version, started - 1)
        answers = self.users.since(mark)
        promoted = (steps.get("promote") or {}).get("output") or {}
        return {
            "version": version,
            "state": doc["state"],
            "reason": doc["reason"],
            "candidate": doc["candidate"],
            "deploy_to_champion_s": round(moved - started, 2) if moved is not None else None,
            "alias_move_recorded_s": round(recorded - started, 2) if recorded is not None else None,
            "command_s": round(finished - started, 2),
            "steps_s": {n: s.get("duration_s") for n, s in steps.items()},
            "drained_after_s": promoted.get("drained_after_s"),
            "shadow": {k: doc["shadow"].get(k) for k in ("verdict", "compared", "agreement", "p99_ms")},
            "canary": {n: c.get("verdict") for n, c in doc["canary"].items()},
            "canary_numbers": {n: c.get("numbers") for n, c in doc["canary"].items()},
            "champion_after": doc["champion_after"],
            "users": len(answers),
            "users_failed": sum(1 for s, *_ in answers if s != 200),
        }

    def bad(self, i: int) -> dict[str, Any]:
        version, _ = self.trainer.train(f"benchmark shuffled {i}", shuffled=True)
        package_version = self.registry.get("intent", version).tags.get("package_version")
        champion_before = self.registry.alias("intent", "champion")
        doc, started, finished, mark = self.deploy(version, "--override-gate", "--reason", REASON)
        time.sleep(1)  # answers in flight when the run ended
        answers = self.users.since(mark)
        candidate = str(doc["candidate"])
        counters = self.compute.stats(cd03.SERVICE)["revisions"].get(candidate, {})
        requests, pinned = int(counters.get("requests", 0)), int(counters.get("pinned", 0))
        champion_after = self.registry.alias("intent", "champion")
        kinds = self.audit_kinds(str(doc["run"]))
        return {
            "version": version,
            "state": doc["state"],
            "candidate": candidate,
            "gate": {"verdict": doc["gate"]["verdict"], "overridden": doc["gate"]["overridden"]},
            "override_audited": "policy.override" in kinds,
            "shadow": {
                k: doc["shadow"].get(k) for k in ("verdict", "mirrored", "compared", "agreement", "reasons")
            },
            "caught_in": next((n for n, s in doc["steps"].items() if s["status"] == "failed"), None),
            "command_s": round(finished - started, 2),
            "user_requests_during_run": len(answers),
            "served_users_client_side": sum(
                1 for _, rev, model in answers if rev == candidate or model == package_version
            ),
            "router_requests_to_candidate": requests,
            "router_pinned_to_candidate": pinned,
            "served_users_router": requests - pinned,
            "champion_unchanged": (champion_before and champion_before.version)
            == (champion_after and champion_after.version),
            "live_after": self.live(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="good runs and bad runs, each")
    parser.add_argument("--rps", type=float, default=20.0, help="intent requests/s on the model's router")
    parser.add_argument("--chats", type=float, default=4.0, help="chats/s through the chatbot")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "model_deploy.json")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "embedder": "minilm",
        "users": {"intent_rps": args.rps, "chats_per_s": args.chats},
        "settings": {"shadow": SHADOW, "canary": CANARY, "bake_s": 0, "bake": "none: CD-03 has no bake step"},
    }
    with tempfile.TemporaryDirectory(prefix="model-bench-") as tmp:
        directory = Path(tmp)
        (directory / "mangaassist.toml").write_text(
            CONFIG.format(src=ROOT / "src", app=APP)
            + toml_table("model_deploy", CANARY)
            + toml_table("model_shadow", SHADOW),
            encoding="utf-8",
        )
        for name in ("pyproject.toml", "src", "data", "knowledge", "ml", "config"):
            (directory / name).symlink_to(ROOT / name)
        home = directory / "home"
        home.mkdir()
        for cached in ("models", "cache"):  # the trained model and the embedding cache of this checkout
            if (ROOT / ".mangaassist" / cached).is_dir():
                shutil.copytree(ROOT / ".mangaassist" / cached, home / cached)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        overrides = {
            "MANGAASSIST_PLATFORM_CONFIG": str(directory / "mangaassist.toml"),
            "MANGAASSIST_HOME": str(home),
            "MANGAASSIST_ROOT": str(directory),
            "MANGAASSIST_POLL_SECONDS": "0.2",
            "MANGAASSIST_STATE_URL": "",
            "MANGAASSIST_FAULT": "",
            "MANGAASSIST_POLICY": str(ROOT / "policy.yaml"),  # dev: gate_overrides (audited)
            "HF_HUB_OFFLINE": "1",
        }
        os.environ.update(overrides)  # this process trains into the same home's registry
        env = {**os.environ, "MANGAASSIST_ACTOR": "bench"}
        up = cli(env, "up", timeout=400)
        if up.returncode != 0:
            raise SystemExit(f"mangaassist up failed: {up.stderr[-2000:]}")
        try:
            status = json_of(cli(env, "status", "--json"), "status")
            model_url = status["services"][cd03.SERVICE]["url"]
            chat_url = status["services"]["chatbot"]["url"]
            users = ModelUsers(model_url, rps=args.rps).start()
            chats = BackgroundLoad(chat_url, rps=args.chats, sessions=8, seed=None).start()
            bench = Bench(home, env, users)
            print(
                f"platform up; {args.rps:g} intent requests/s on {model_url}, {args.chats:g} chats/s",
                flush=True,
            )
            try:
                v70, took = bench.trainer.train("benchmark champion: 70% of the data", fraction=0.7)
                print(f"70% champion v{v70} trained in {took:.0f}s", flush=True)
                good = []
                for i in range(args.runs):
                    one = bench.good(i + 1, v70)
                    print(f"good {i + 1}/{args.runs}: {json.dumps(one)}", flush=True)
                    good.append(one)
                bad = []
                for i in range(args.runs):
                    one = bench.bad(i + 1)
                    print(f"bad {i + 1}/{args.runs}: {json.dumps(one)}", flush=True)
                    bad.append(one)
            finally:
                answers = users.stop()
                report = chats.stop()
                bench.compute.close()
            timed = [r["deploy_to_champion_s"] for r in good if r["deploy_to_champion_s"] is not None]
            results["good"] = {
                "runs": good,
                "promoted": sum(r["state"] == "succeeded" for r in good),
                "deploy_to_champion_s": summary(timed) if timed else None,
                "drained_after_s": summary([float(r["drained_after_s"] or 0) for r in good]),
            }
            results["bad"] = {
                "runs": bad,
                "caught_in_shadow": sum(
                    r["state"] == "rolled_back" and r["caught_in"] == "shadow" for r in bad
                ),
                "override_audited": sum(bool(r["override_audited"]) for r in bad),
                "served_users_client_side": sum(r["served_users_client_side"] for r in bad),
                "served_users_router": sum(r["served_users_router"] for r in bad),
                "target_served_users": 0,
            }
            results["users"]["intent_requests"] = len(answers)
            results["users"]["intent_failed"] = sum(1 for s, *_ in answers if s != 200)
            results["users"]["chats"] = report.requests
            results["users"]["chats_failed"] = report.failed
        finally:
            down = cli(env, "down")
            if down.returncode != 0:
                print(f"mangaassist down failed: {down.stderr[-1000:]}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
