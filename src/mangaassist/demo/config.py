"""The configuration segment of ``make demo`` (CD-06): a prompt change promoted, a bad one rolled back.

With the chatbot already running at ``url`` and following the config server at ``config_url``:

1. the repository's four profiles become the first stable versions (the server starts empty);
2. a *good* prompt change (policy answers end by offering more help) goes through the CD-06
   pipeline: validation, the evaluation gate (live against candidate, table printed), then a
   staged rollout by session bucket (50% then 100%, judged at each step while policy questions
   arrive from many sessions), a short bake, promotion;
3. a *bad* prompt change (policy answers stop naming their sources) is deployed with the
   evaluation gate skipped on purpose (recorded on the run) to show the second line of defence:
   the canary judge sees the fallback rate rise on the new version and sets it to 0% at once;
4. the chatbot answers with the promoted version, and the profile's history shows every change.

Edits are made to a copy of ``config/``; the repository is never modified. Called by
``mangaassist demo`` with the config server's store (``Platform.config_store`` of
``platform.factory``; the caller owns it); returns the number of failed checks.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console

from mangaassist.delivery.engine.model import RunRecord, RunState
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.pipelines import config as cd06
from mangaassist.demo.engine import DEMO_ENVIRONMENT
from mangaassist.demo.tour import ask
from mangaassist.platform.config_store import ConfigStore
from mangaassist.platform.settings import find_root
from mangaassist.views.progress import ProgressDisplay
from mangaassist.views.runs import run_pipeline
from mangaassist.views.tables import eval_table, rollout_table

QUESTIONS = (
    "What is the return window?",
    "How much does shipping cost?",
    "Which payment methods do you accept?",
    "Can I cancel a pre-order?",
)
POLICY_TEMPLATE = (
    'policy_question:\n    text: "{answer}\\n\\nSources: {sources}"\n    variables: [answer, sources]'
)
GOOD_TEMPLATE = (
    'policy_question:\n    text: "{answer}\\n\\nSources: {sources}\\n\\nAnything else I can help with?"\n'
    "    variables: [answer, sources]"
)
BAD_TEMPLATE = 'policy_question:\n    text: "{answer}"\n    variables: [answer]'
PROFILES = ("runtime", "prompts", "guardrails", "flags")


class Traffic:
    """Policy questions from new sessions, about ``rate`` per second, until stopped."""

    def __init__(self, url: str, rate: float = 12.0) -> None:
        self.url = url
        self.interval = 1.0 / rate
        self.stop = threading.Event()
        self.sent = 0
        self.failed = 0
        self.thread = threading.Thread(target=self._run, name="demo-config-traffic", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    r = http.post(
                        "/v1/chat",
                        json={
                            "session_id": f"demo-cfg-{uuid.uuid4().hex[:10]}",
                            "message": QUESTIONS[self.sent % len(QUESTIONS)],
                        },
                    )
                    self.failed += r.status_code >= 500
                except httpx.HTTPError:
                    self.failed += 1
                self.sent += 1
                self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _variant(repo: Path, dest: Path, template: str) -> Path:
    folder = dest / f"config-{uuid.uuid4().hex[:6]}"
    shutil.copytree(repo / "config", folder)
    path = folder / "prompts.yaml"
    text = path.read_text(encoding="utf-8")
    if POLICY_TEMPLATE not in text:
        raise RuntimeError(f"{repo / 'config' / 'prompts.yaml'}: the policy_question template changed")
    path.write_text(text.replace(POLICY_TEMPLATE, template), encoding="utf-8")
    return folder


def _release(
    console: Console, url: str, params: dict[str, Any], state: StateStore
) -> tuple[RunRecord, Traffic]:
    """Deploy a prompt change (CD-06) while policy questions arrive at ``url``; print the evaluation
    gate's table (if it ran) and the rollout's. Returns the run and the traffic it had."""
    with Traffic(url) as traffic:
        run, steps = run_pipeline(
            ProgressDisplay(console),
            cd06.NAME,
            params,
            environment=DEMO_ENVIRONMENT,
            target=cd06.target(params["profile"]),
            requester="demo",
            store=state,
            poll_seconds=0.2,
        )
    rows = steps["evaluate"].detail.get("rows", []) if "evaluate" in steps else []
    if rows:
        console.print(eval_table(rows))
    if "rollout" in steps:
        console.print(rollout_table(steps["rollout"].detail.get("steps", [])))
    return run, traffic


def _wait_for(client: httpx.Client, version: str, timeout: float = 5.0) -> float | None:
    """Seconds until the chatbot serves ``version`` of the prompts profile as stable."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        served = client.get("/readyz").json().get("configs", {}).get("prompts", {})
        if served.get("stable") == version and not served.get("candidate"):
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def _ask(client: httpx.Client, console: Console) -> dict[str, Any]:
    body = ask(console, client, QUESTIONS[0], "demo-cfg")
    console.print(f"     [dim]prompts version {body['versions']['configs']['prompts']}[/]", highlight=False)
    return body


def run_config_demo(console: Console, url: str, store: ConfigStore, config_url: str, home: Path) -> int:
    """The CD-06 segment with the chatbot at ``url`` following the config server at ``config_url``
    (``store`` is that server's store)."""
    repo = find_root()
    state = StateStore(f"sqlite:///{home / 'state.sqlite3'}")
    failures = 0
    console.rule("[bold]Configuration and prompts (CD-06): staged, judged, rolled back by itself")
    started = time.monotonic()
    for name in PROFILES:
        content = yaml.safe_load((repo / "config" / f"{name}.yaml").read_text(encoding="utf-8"))
        version = store.create_version(name, content, author="demo", message="first version").version
        if store.rollout(name).stable != version:
            store.promote(name, version, actor="demo", reason="first version")
    live = store.rollout("prompts").stable or ""
    console.print(f"config server {config_url}; live prompts version {live}", highlight=False)
    with (
        tempfile.TemporaryDirectory(prefix="mangaassist-config-demo-") as tmp,
        httpx.Client(base_url=url, timeout=30.0) as client,
    ):
        if _wait_for(client, live) is None:
            console.print("[red]the chatbot does not follow the config server[/]")
            return 1
        base = {
            "profile": "prompts",
            "url": config_url,
            "home": str(home),
            "strategy": "linear",
            "step": 50,
            "step_seconds": 6,
            "step_max_seconds": 40,
            "bake_seconds": 4,
            "judge": {"min_requests": 20},
        }
        console.print(
            "\n[bold]1. A good prompt change[/]: policy answers end by offering more help. "
            "Validation, the evaluation gate (live against candidate), then 50% -> 100% of "
            "sessions, judged at each step while policy questions arrive (~12/s)."
        )
        good = _variant(repo, Path(tmp), GOOD_TEMPLATE)
        run, traffic = _release(console, url, {**base, "config_dir": str(good)}, state)
        promoted = store.rollout("prompts").stable or ""
        ok = run.state is RunState.SUCCEEDED and promoted != live
        failures += not ok
        console.print(
            f"run {run.id} [{'green' if ok else 'red'}]{run.state.value}[/]: prompts {live} -> "
            f"{promoted}; {traffic.sent} requests during the rollout, {traffic.failed} failed",
            highlight=False,
        )
        seen = _wait_for(client, promoted)
        failures += seen is None
        console.print(f"every worker serves {promoted} ({(seen or 0) * 1000:.0f} ms after the promotion)")
        after = _ask(client, console)
        failures += "Anything else I can help with?" not in after["answer"]

        console.print(
            "\n[bold]2. A bad prompt change[/]: policy answers stop naming their sources. The "
            "evaluation gate would block it (its cites_source check); it is skipped here on "
            "purpose (recorded on the run) to show the canary judge catching it on live traffic."
        )
        bad = _variant(repo, Path(tmp), BAD_TEMPLATE)
        run, traffic = _release(console, url, {**base, "config_dir": str(bad), "evaluate": False}, state)
        rollout = store.rollout("prompts")
        ok = run.state is RunState.ROLLED_BACK and rollout.stable == promoted and rollout.candidate is None
        failures += not ok
        console.print(
            f"run {run.id} [{'green' if ok else 'red'}]{run.state.value}[/]: {run.reason}",
            highlight=False,
        )
        console.print(
            f"prompts stays {rollout.stable}, candidate at {rollout.percentage:g}%; "
            f"{traffic.sent} requests, {traffic.failed} failed",
            highlight=False,
        )
        after = _ask(client, console)
        failures += "Sources:" not in after["answer"]
    events = store.history("prompts")
    console.print(
        "history of prompts: "
        + ", ".join(f"{e['action']} {e['version'] or ''} {e['percentage'] or 0:g}%" for e in events[-6:]),
        highlight=False,
    )
    console.print(f"configuration segment took {time.monotonic() - started:.0f}s", highlight=False)
    return int(failures)
