"""The alerting segment of ``make demo`` (CD-08): an outage pages, and the page rolls a canary back.

Runs last on the local platform of the release and model segments (Prometheus and Alertmanager are
children of its control plane when the Debian packages are installed):

1. **The rules.** The CD-08 pipeline builds ``monitoring/slos`` for ``dev`` (its ``dev-short``
   windows: a 10 s and a 2 min window for the fast page, so an outage pages within a minute),
   checks them with promtool, installs them in the platform's Prometheus and verifies they loaded;
   the dashboards are written and their directory printed.
2. **A canary during an outage.** With chat traffic running, a CD-01 release of a changed source
   tree starts its canary; once the candidate has its first share of the traffic, a drill fault on
   the chatbot's router (``LocalCompute.set_fault``) answers 503 to half of the chat requests, on
   every revision alike. The judge compares candidate with stable and sees no difference; the SLO
   sees the service burn its error budget at about 100x: Prometheus fires
   ``ChatbotAvailabilityBudgetBurn`` (severity page), Alertmanager delivers it to the control plane,
   and the running phase fails on it: all traffic back on the stable revision. The canary's step is
   made long (``min_requests`` 400) so the judge cannot pass it before the alert can fire.
3. The fault is cleared; the timeline is printed (fault, page, rollback).

Returns the number of failed checks: the rules did not install, or the release did not end rolled
back with the page alert as its reason.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mangaassist.delivery.engine.model import RunState
from mangaassist.delivery.pipelines import monitoring as cd08
from mangaassist.delivery.rollout.load import BackgroundLoad
from mangaassist.delivery.rollout.phases import page_alerts
from mangaassist.demo.engine import DEMO_ENVIRONMENT
from mangaassist.demo.release import DEMO_SETTINGS, changed_project, release
from mangaassist.platform.factory import Platform
from mangaassist.views.progress import ProgressDisplay
from mangaassist.views.runs import run_pipeline

SERVICE = "chatbot"
FAULT_SHARE = 0.5
OUTAGE_SETTINGS: dict[str, Any] = {
    **DEMO_SETTINGS,
    "min_requests": 400,  # the judge cannot pass the first step before the page can fire
    "max_step_s": 150,
}


def run_alert_demo(console: Console, platform: Platform) -> int:
    """The CD-08 segment on the running local ``platform``; the number of failed checks."""
    console.rule("[bold]CD-08: an outage pages, and the page rolls back a canary")
    rules = platform.rule_host()
    if rules.url() is None:
        console.print(
            "[red]Prometheus is not running on this platform[/] (install the Debian packages: "
            "apt-get install -y prometheus prometheus-alertmanager): segment not run"
        )
        return 1
    run, steps = run_pipeline(
        ProgressDisplay(console), cd08.NAME, {"environment": DEMO_ENVIRONMENT}, environment=DEMO_ENVIRONMENT
    )
    installed = steps.get("apply") or steps.get("build")
    console.print(
        f"rules: run {run.id} [bold]{run.effective_state.value}[/]; "
        f"{len(rules.groups())} groups loaded in Prometheus; dashboards in {rules.dashboards_dir}: "
        f"{', '.join(sorted(p.name for p in rules.dashboards_dir.glob('*.json')))}",
        highlight=False,
    )
    if run.effective_state is not RunState.SUCCEEDED or installed is None:
        console.print(f"[red]the rules were not installed[/]: {run.reason}")
        return 1
    return _canary_during_an_outage(console, platform)


def _canary_during_an_outage(console: Console, platform: Platform) -> int:
    compute = platform.compute()
    metrics = platform.metrics()
    set_fault = getattr(compute, "set_fault", None)
    if set_fault is None:  # the drill's fault lives in the local router
        console.print("[red]this platform cannot inject a fault[/]")
        return 1
    stable = set(compute.status(SERVICE).weights)
    scratch = Path(tempfile.mkdtemp(prefix="mangaassist-outage-"))
    load = BackgroundLoad(compute.url(SERVICE), rps=12, sessions=8, seed=11).start()
    timeline: dict[str, float] = {}
    stop = threading.Event()

    def outage_when_the_canary_starts() -> None:
        while not stop.is_set():
            weights = compute.status(SERVICE).weights
            if any(rev not in stable and share > 0 for rev, share in weights.items()):
                set_fault(SERVICE, status=503, share=FAULT_SHARE)
                timeline["fault"] = time.monotonic()
                console.print(
                    f"[bold]outage[/]: the chatbot's router now answers 503 to {FAULT_SHARE:.0%} of the "
                    f"chats, on every revision (canary weights {dict(weights)})"
                )
                break
            stop.wait(0.5)
        while not stop.is_set() and "page" not in timeline:
            if page_alerts(metrics, SERVICE):
                timeline["page"] = time.monotonic()
                break
            stop.wait(0.5)

    watcher = threading.Thread(target=outage_when_the_canary_starts, name="outage", daemon=True)
    code = 0
    try:
        project = changed_project(platform.settings.root, scratch)
        console.print("A release of a changed source tree starts its canary, with 12 chats/s running:")
        watcher.start()
        began = time.monotonic()
        run, steps = release(
            console, {"environment": DEMO_ENVIRONMENT, **OUTAGE_SETTINGS, "source": str(project)}
        )
        ended = time.monotonic()
        stop.set()
        watcher.join(timeout=5)
        console.print(
            f"run {run.id}: [bold]{run.effective_state.value}[/] in {ended - began:.0f}s; "
            f"live: {dict(compute.status(SERVICE).weights)}"
        )
        console.print(f"reason: {run.reason}", markup=False, highlight=False)
        if "fault" in timeline:
            fault = timeline["fault"]
            page = f"{timeline['page'] - fault:.0f}s" if "page" in timeline else "not seen by the watcher"
            console.print(
                f"timeline: page alert {page} after the outage began; rollout rolled back "
                f"{ended - fault:.0f}s after it",
                highlight=False,
            )
        if run.effective_state is not RunState.ROLLED_BACK or "page alert" not in (run.reason or ""):
            console.print("[red]expected the canary to be rolled back by the page alert[/]")
            code = 1
        failed = next((s for s in steps.values() if s.detail.get("verdict") == "FAIL"), None)
        if failed is not None and "restore_ms" in (failed.detail.get("numbers") or {}):
            console.print(f"weights flipped back in {failed.detail['numbers']['restore_ms']:.1f} ms")
    finally:
        stop.set()
        if "fault" in timeline:
            compute.clear_fault(SERVICE)  # type: ignore[attr-defined]
            console.print("outage over: fault cleared")
        report = load.stop()
        console.print(
            f"traffic: {report.requests} chats, {report.failed} failed ({dict(report.failed_by_revision)})",
            highlight=False,
        )
        shutil.rmtree(scratch, ignore_errors=True)
    return code
