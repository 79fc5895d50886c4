"""The main job of ``make demo``: a narrated tour of the chatbot and two kinds of release.

1. Starts ``mangaassist serve`` as a real child process on a loopback port, waits for
   ``/readyz``, asks one question per intent (plus a guardrail case) and prints answers, intents,
   sources and timings.
2. Releases a knowledge-base change (CD-04): incremental build, gate report, alias swap, the
   chatbot answering from the new version, rollback.
3. Releases two prompt changes (CD-06) through the config server the chatbot follows: a good one
   promoted step by step, a bad one (stops citing sources) rolled back by the judge.
4. Starts the local platform and releases the application twice (CD-01): a good release promoted
   by canary, a faulty one rolled back by the judge, with the judge's numbers.
5. On that same platform, before it stops, delivers the intent model (CD-03): a first champion on
   70% of the data, retrained with all of it (gate, shadow, canary, promoted), and a model trained
   on shuffled labels blocked by the evaluation gate.
6. On that same platform, the chat widget (CD-05): two releases built, gated and checked in headless
   Chromium against the real chatbot behind the edge (a screenshot of it answering is saved), a
   broken bundle stopped by the browser check before publish, a rollback.
7. On that same platform, last, monitoring (CD-08): the SLO rules installed in its Prometheus, the
   dashboards written; an outage injected while a release's canary runs fires the page alert, which
   rolls the canary back.

``--no-releases`` skips 4 to 7 (they need the platform).

One module per segment: ``tour`` (1), ``kb`` (2), ``config`` (3), ``release`` (4), ``model`` (5),
``frontend`` (6), ``alerts`` (7);
``run_demo`` here is what ``mangaassist demo`` runs. Every platform resource (the config server, the
control plane, compute, the config store, the registry, the index) comes from ``platform.factory``.
The demo is a layer between the CLI and the delivery layer: it never imports ``mangaassist.cli``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from rich.console import Console

from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.demo.alerts import run_alert_demo
from mangaassist.demo.config import run_config_demo
from mangaassist.demo.engine import DEMO_ENVIRONMENT
from mangaassist.demo.frontend import run_frontend_demo
from mangaassist.demo.infra import run_infra_demo
from mangaassist.demo.kb import run_kb_demo
from mangaassist.demo.migration import run_migration_demo
from mangaassist.demo.model import run_model_demo
from mangaassist.demo.release import local_platform, run_release_demo
from mangaassist.demo.tour import QUESTIONS, run_tour
from mangaassist.platform.factory import platform_for, settings_for

__all__ = ["run_demo"]


def run_demo(console: Console, port: int = 0, releases: bool = True) -> int:
    """The whole demo; returns the exit status (0: every segment's checks passed)."""
    home = Path(os.environ.get("MANGAASSIST_HOME", ".mangaassist"))
    home.mkdir(parents=True, exist_ok=True)
    # a config server of its own, fresh: the demo starts from the files
    config_platform = platform_for(DEMO_ENVIRONMENT, home=home / "demo-config")
    config_platform.stop_config_server()
    shutil.rmtree(config_platform.home, ignore_errors=True)
    config_url = config_platform.config_server_url()
    server = ChatbotProcess(
        env={
            "MANGAASSIST_REVISION": os.environ.get("MANGAASSIST_REVISION", "demo"),
            "MANGAASSIST_CONFIG_URL": config_url,
            "MANGAASSIST_CONFIG_POLL": "1",
            "MANGAASSIST_DEV_SIGNIN": "1",  # the tour signs customers in (POST /v1/signin)
        },
        port=port,
        log_path=home / "demo-chatbot.log",
    )
    console.rule("[bold]MangaAssist demo")
    watch = platform_for(settings_for(DEMO_ENVIRONMENT))
    watched_before = watch.dashboard_running()
    dashboard_url = watch.ensure_dashboard()
    if dashboard_url:
        console.print(
            f"Watch every release of this demo live on the delivery dashboard: {dashboard_url}/runs "
            "(approving from it needs a link from `mangaassist dashboard link`)",
            highlight=False,
        )
    infra_failures = run_infra_demo(console, home)
    console.print()
    console.print(
        f"Starting the chatbot on {server.url} (log: {server.log_path}); the first start trains "
        "the intent model and embeds the catalog and knowledge base, later starts reuse the cache ..."
    )
    started = time.monotonic()
    migration_failures = 0
    with server:
        console.print(f"Ready in {time.monotonic() - started:.1f}s; versions {server.readiness['versions']}")
        failures = run_tour(console, server.url)
        kb_failures = run_kb_demo(console, server.url, home)
        console.print()
        try:
            store = config_platform.config_store(config_url)
            config_failures = run_config_demo(console, server.url, store, config_url, home)
            console.print()
            migration_failures = run_migration_demo(console, server.url, config_url, home)
        finally:
            config_platform.close()
            config_platform.stop_config_server()
    console.print(f"Chatbot stopped (exit status {server.exit_status}).")
    console.print()
    release_failures = model_failures = alert_failures = frontend_failures = 0
    if releases:
        with local_platform(console) as platform:
            release_failures = run_release_demo(console, platform)
            console.print()
            model_failures = run_model_demo(console, platform)
            console.print()
            frontend_failures = run_frontend_demo(console, platform)
            console.print()  # last: its outage leaves a page alert firing for a minute or two
            alert_failures = run_alert_demo(console, platform)
    if not watched_before and not releases:
        watch.stop_dashboard()  # with releases, the platform's `down` stops it with the rest
    watch.close()
    console.rule("[bold]Summary")
    for line in (
        f"Chatbot tour stopped cleanly: {server.exit_status == 0}",
        f"Intents right: {len(QUESTIONS) - failures}/{len(QUESTIONS)}",
        f"Infrastructure (CD-02): {'ok' if infra_failures == 0 else 'FAILED'}",
        f"Knowledge-base release: {'ok' if kb_failures == 0 else 'FAILED'}",
        f"Config and prompt releases: {'ok' if config_failures == 0 else 'FAILED'}",
        f"Database migrations (CD-07): {'ok' if migration_failures == 0 else 'FAILED'}",
        f"Application releases: {('ok' if release_failures == 0 else 'FAILED') if releases else 'skipped'}",
        f"Model releases: {('ok' if model_failures == 0 else 'FAILED') if releases else 'skipped'}",
        f"Widget (CD-05): {('ok' if frontend_failures == 0 else 'FAILED') if releases else 'skipped'}",
        f"Alerts (CD-08): {('ok' if alert_failures == 0 else 'FAILED') if releases else 'skipped'}",
        f"Total {time.monotonic() - started:.1f}s",
    ):
        console.print(line, highlight=False)
    failed = (
        failures,
        infra_failures,
        kb_failures,
        config_failures,
        migration_failures,
        release_failures,
        model_failures,
        alert_failures,
        frontend_failures,
    )
    return 0 if not any(failed) else 1
