"""The database migration segment of ``make demo`` (CD-07): orders reshaped under chat traffic.

With the demo's chatbot answering users all along (chats about orders, a new session each time, so
sessions are written while the tables change):

1. ``migrate apply 0001`` (orders gain ``status_updated_at``) as a user runs it, throttled so that
   the backfill takes a few seconds, and SIGKILLed in the middle of it; ``migrate resume RUN`` goes
   on from the segments' checkpoints (the first attempt's pages are not scanned again), verify finds
   0 differences, reads switch. No bake here (``--bake 0``): this chatbot runs outside the local
   platform, so no Prometheus watches it (the bake under CD-08's page alerts is tested with the
   platform up);
2. ``migrate apply 0002`` (orders gain ``customer_status``, the key of the index by customer and
   status that CD-02 provisioned); "show my shipped orders" is then answered from that index;
3. ``migrate apply 0003`` (session items gain their TTL attribute) while conversations go on;
4. ``migrate list``: every migration cut over; no chat request failed.

The demo's config server is fresh each run, so the migrations start pending; the orders already
shaped by an earlier demo are counted as "already" by the backfill.

Called by ``mangaassist demo`` as ``run_migration_demo(console, url, config_url, home)``; returns the
number of failed checks.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from mangaassist.chatbot.store import ORDERS, ORDERS_BY_STATUS, ChatStore
from mangaassist.delivery.pipelines import migration as cd07
from mangaassist.demo.engine import DEMO_ENVIRONMENT
from mangaassist.demo.tour import sign_in
from mangaassist.platform.factory import platform_for

CLI = Path(sys.executable).with_name("mangaassist")
MESSAGES = (
    ("where is my order MA-100002?", "cust-0002"),
    ("show my shipped orders", "cust-0002"),
    ("which orders are delivered?", "cust-0001"),
    ("what is your return policy?", None),
)


class ChatTraffic:
    """Users asking about their orders until stopped; counts answers and failures."""

    def __init__(self, url: str, rate: float = 4.0) -> None:
        self.url = url
        self.rate = rate
        self.answered = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-chats", daemon=True)

    def _run(self) -> None:
        i = 0
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            try:  # each user signs in once (the development sign-in of the demo's chatbot)
                tokens = {c: sign_in(client, c) for c in {c for _, c in MESSAGES}}
            except httpx.HTTPError as exc:
                self.failed.append(f"{type(exc).__name__} signing in")
                return
            while not self._stop.wait(1.0 / self.rate):
                message, customer = MESSAGES[i % len(MESSAGES)]
                i += 1
                try:
                    r = client.post(
                        "/v1/chat",
                        json={"session_id": f"mig-{uuid.uuid4().hex[:8]}", "message": message},
                        headers=tokens[customer],
                    )
                    if r.status_code >= 500:
                        self.failed.append(f"{r.status_code} for {message!r}")
                    else:
                        self.answered += 1
                except httpx.HTTPError as exc:
                    self.failed.append(f"{type(exc).__name__} for {message!r}")

    def __enter__(self) -> ChatTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _check(console: Console, ok: bool, what: str) -> int:
    console.print(f"  {'[green]ok[/]' if ok else '[red]FAILED[/]'} {escape(what)}", highlight=False)
    return 0 if ok else 1


def _cli(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run([str(CLI), *args, "--json"], env=env, capture_output=True, text=True, timeout=300)
    try:
        doc: Any = json.loads(done.stdout)
    except ValueError:
        doc = {"state": "error", "reason": (done.stderr or done.stdout).strip()[-400:]}
    return doc


def _checkpointed_pages(home: Path, run_id: str) -> int:
    with sqlite3.connect(home / "state.sqlite3", timeout=5) as conn:
        rows = conn.execute(
            "SELECT value FROM engine_checkpoints WHERE run_id = ? AND step = 'backfill'", (run_id,)
        ).fetchall()
    return sum(int(json.loads(v)["pages"]) for (v,) in rows)


def _backfilling(home: Path) -> str | None:
    """The run whose ``backfill`` step is running, read from the state database (None: none)."""
    database = home / "state.sqlite3"
    if not database.exists():
        return None
    with sqlite3.connect(database, timeout=5) as conn:
        row = conn.execute(
            "SELECT s.run_id FROM engine_steps s JOIN engine_runs r ON r.id = s.run_id "
            "WHERE s.name = 'backfill' AND s.status IN ('running', 'waiting') "
            "AND r.state IN ('running', 'waiting') "
            "ORDER BY r.created_at DESC LIMIT 1"
        ).fetchone()
    return str(row[0]) if row else None


def _kill_during_backfill(console: Console, env: dict[str, str], home: Path) -> str | None:
    """``migrate apply 0001`` throttled, SIGKILLed once two pages are checkpointed; the run's id
    (None if that never happened within a minute)."""
    apply = subprocess.Popen(
        [str(CLI), "migrate", "apply", "1", "--rate", "8", "--segments", "2", "--page", "4", "--bake", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        # read the state database itself, not `migrate status`: a CLI process per look takes
        # seconds on a loaded machine, long enough for the throttled backfill to finish unseen
        while time.monotonic() < deadline and apply.poll() is None:
            run_id = _backfilling(home)
            if run_id is not None:
                pages = _checkpointed_pages(home, run_id)
                if pages >= 2:
                    apply.send_signal(signal.SIGKILL)
                    apply.wait()
                    console.print(
                        f"  migrate apply 0001: SIGKILLed during the backfill ({pages} pages checkpointed)",
                        highlight=False,
                    )
                    return run_id
            time.sleep(0.2)
    finally:
        if apply.poll() is None:
            apply.kill()
            apply.wait()
    return None  # the backfill was never seen with two pages checkpointed: nothing was killed


def run_migration_demo(console: Console, url: str, config_url: str, home: Path) -> int:
    console.rule("[bold]Database migrations (CD-07): orders reshaped under chat traffic")
    failures = 0
    env = {
        **os.environ,
        "MANGAASSIST_HOME": str(home),
        "MANGAASSIST_CONFIG_URL": config_url,
        "MANGAASSIST_CONFIG_POLL": "1",
        "MANGAASSIST_ACTOR": "demo",
    }
    platform = platform_for(DEMO_ENVIRONMENT, home=home)
    tables = platform.tables()
    if ORDERS_BY_STATUS not in {i.name for i in tables.indexes(ORDERS)}:
        failures += _check(
            console, False, "the orders index by customer and status exists (CD-02 provisions it)"
        )
        return failures
    with ChatTraffic(url) as traffic:
        run_id = _kill_during_backfill(console, env, home)
        failures += _check(console, run_id is not None, "the apply was killed in its backfill step")
        if run_id is not None:
            resumed = _cli(env, "migrate", "resume", run_id)
            failures += _check(
                console,
                resumed.get("state") == "succeeded",
                f"migrate resume {run_id}: {resumed.get('state')}",
            )
            with sqlite3.connect(home / "state.sqlite3", timeout=5) as conn:
                raw = conn.execute(
                    "SELECT output FROM engine_steps WHERE run_id = ? AND name IN ('backfill', 'verify') "
                    "ORDER BY idx",
                    (run_id,),
                ).fetchall()
            backfill, verify = (json.loads(r[0]) for r in raw)
            console.print(
                f"  backfill: {backfill.get('scanned')} items over both attempts, "
                f"{backfill.get('resumed_segments')} segment(s) resumed from their checkpoints "
                "(the pages checkpointed before the kill were not read again); "
                f"verify: {verify.get('checked')} checked, {verify.get('differences')} different",
                highlight=False,
            )
            failures += _check(
                console, verify.get("differences") == 0, "verify: 0 differences before the cutover"
            )
        for ident, what in (
            ("2", "orders gain customer_status (the index's key)"),
            ("3", "sessions gain their TTL"),
        ):
            done = _cli(env, "migrate", "apply", ident, "--bake", "0")
            steps = done.get("steps", {})
            written = (steps.get("backfill") or {}).get("output", {})
            console.print(
                f"  migrate apply {ident} ({what}): {done.get('state')}; "
                f"{written.get('written', 0)} written, {written.get('already', 0)} already shaped "
                "(written by the chatbot under the rule), "
                f"{written.get('conflicts', 0)} left to newer writes",
                highlight=False,
            )
            failures += _check(
                console, done.get("state") == "succeeded", f"migration {ident} applied and cut over"
            )
        store = platform.config_store(config_url)
        rules = cd07.live_rules(store)
        shipped, how = ChatStore(tables, lambda: rules).orders_with_status("cust-0002", "shipped")
        failures += _check(
            console, how == "index" and bool(shipped), f"'my shipped orders' read through {how}"
        )
        with httpx.Client(base_url=url, timeout=30.0) as client:
            body = client.post(
                "/v1/chat",
                json={"session_id": "mig-final", "message": "show my shipped orders"},
                headers=sign_in(client, "cust-0002"),
            ).json()
        console.print(
            f"  [bold cyan]you>[/] show my shipped orders\n  [bold green]bot>[/] {escape(body['answer'])}"
        )
        failures += _check(console, "MA-100002" in body["answer"], "the chatbot lists the shipped order")
    listed = _cli(env, "migrate", "list")
    states = {m["id"][:4]: m["state"] for m in listed} if isinstance(listed, list) else {}
    failures += _check(console, set(states.values()) == {"cutover"}, f"migrate list: {states}")
    failures += _check(
        console,
        not traffic.failed,
        f"{traffic.answered} chat answers during the migrations, {len(traffic.failed)} failed",
    )
    return failures
