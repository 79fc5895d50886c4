"""A bounded load generator of realistic chat conversations, loopback only unless told otherwise.

``run_load`` sends ``rps`` requests per second for ``duration_s`` seconds (open loop: the schedule
does not wait for slow answers, so a slow revision shows up as latency, not as less load) through a
router or to one revision (``headers`` with the pin header). ``sessions`` conversations run at once;
each is a short scripted exchange (2 to 4 turns from one of the intents' scripts) and a new one
starts when it ends, so conversations are sticky and finite the way real ones are. A share of
conversations posts feedback at the end (mostly thumbs up).

At most ``max_in_flight`` (128) requests are outstanding at once: a tick that finds that many
unanswered is not sent and counted as ``skipped``. Without the bound a stalled service (or a
machine too loaded to answer) makes the queue grow without limit, and the HTTP client's pool, whose
bookkeeping grows with its waiting requests, then spends more time on the queue than on sending.

Used by ``mangaassist traffic``, the pipeline's latency-budget gate, the demo, the tests and
``benchmarks/rollout_e2e.py``. It refuses any host that is not loopback, except for a caller that
passes ``remote=True`` for a URL the environment's own ``Compute`` gave it (a pin, or the service's
URL): CD-01's pinned latency gate and its warm-ups on AWS load the candidate where it runs (the
ALB with the pin header, or the revision's Lambda function URL, signed through the pin's ``auth``),
bounded by ``rps``, ``duration_s`` and ``max_in_flight`` as everywhere. A URL a person types
(``mangaassist traffic --url``) stays loopback only, so a typo cannot load someone else's host.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from mangaassist.core.errors import ConfigError

CONVERSATIONS: tuple[tuple[str, ...], ...] = (
    ("Do you have Chainsaw Man volume 3 in paperback?", "How much is it?", "Is volume 4 in stock too?"),
    ("I loved Berserk. Can you recommend something similar?", "Something shorter, please", "thanks!"),
    ("Where is my order MA-100001?", "When will it arrive?"),
    ("How long do I have to return a manga I bought?", "Do you ship to Canada?", "ok thanks"),
    ("hey there, how are you doing?", "Recommend me a cozy slice of life manga"),
    ("Do you have Frieren volume 5?", "What about the box set?", "Can I preorder volume 13?"),
    ("What should I read after One Piece?", "Is Vinland Saga finished?", "Do you have it in hardcover?"),
    ("I want to talk to a real person please",),
    ("What payment methods do you accept?", "Can I pay with PayPal?"),
    ("What is the reading order for Monogatari?", "Thanks a lot"),
)
"""Scripted conversations, each opening with one intent (search, recommendation, order, policy...)."""

SMOKE_CASES: tuple[tuple[str, str], ...] = (
    ("product_search", "Do you have Chainsaw Man volume 3 in paperback?"),
    ("recommendation", "I loved Berserk. Can you recommend something similar?"),
    ("order_status", "Where is my order MA-100001?"),
    ("policy_question", "How long do I have to return a manga I bought?"),
    ("chitchat", "hey there, how are you doing?"),
    ("human_handoff", "I want to talk to a real person please"),
    ("out_of_scope", "Can you help me with my calculus homework?"),
)
"""One chat per intent, with the intent the answer must carry (the pipeline's smoke test)."""


def check_loopback(url: str) -> None:
    """Refuse to send load anywhere but this machine."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(f"{url}: load is only sent to loopback addresses (127.0.0.1, ::1, localhost)")


@dataclass
class LoadReport:
    """What one load run saw, from the client's side."""

    target_rps: float
    duration_s: float = 0.0
    requests: int = 0
    ok: int = 0
    failed: int = 0
    """5xx answers and requests that got no answer at all."""
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    transport_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    by_revision: collections.Counter[str] = field(default_factory=collections.Counter)
    failed_by_revision: collections.Counter[str] = field(default_factory=collections.Counter)
    conversations: int = 0
    mixed_conversations: int = 0
    """Conversations whose answers came from more than one revision."""
    feedback: int = 0
    abandoned: int = 0
    """Requests still unanswered when the run stopped (cancelled after a grace period)."""
    skipped: int = 0
    """Ticks not sent because ``max_in_flight`` requests were still unanswered."""
    failures: list[tuple[float, str]] = field(default_factory=list)
    """(wall-clock time, revision) of every failed request, for drills that time a rollback."""

    def quantile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_rps": self.target_rps,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "achieved_rps": round(self.requests / self.duration_s, 2) if self.duration_s else 0.0,
            "ok": self.ok,
            "failed": self.failed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": self.transport_errors,
            "p50_ms": _round(self.quantile(0.5)),
            "p95_ms": _round(self.quantile(0.95)),
            "p99_ms": _round(self.quantile(0.99)),
            "by_revision": dict(self.by_revision),
            "failed_by_revision": dict(self.failed_by_revision),
            "conversations": self.conversations,
            "mixed_conversations": self.mixed_conversations,
            "feedback": self.feedback,
            "abandoned": self.abandoned,
            "skipped": self.skipped,
        }


def _round(value: float) -> float | None:
    return None if value != value else round(value, 3)


@dataclass
class _Conversation:
    id: str
    script: Sequence[str]
    turn: int = 0
    revisions: set[str] = field(default_factory=set)
    in_flight: int = 0


class _Load:
    def __init__(
        self,
        url: str,
        rps: float,
        duration_s: float,
        sessions: int,
        headers: Mapping[str, str],
        scripts: Sequence[Sequence[str]],
        feedback_share: float,
        seed: int | None,
        stop: threading.Event | None,
        max_in_flight: int = 128,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.auth = auth
        self.max_in_flight = max_in_flight
        self.rps = rps
        self.duration_s = duration_s
        self.headers = dict(headers)
        self.scripts = scripts
        self.feedback_share = feedback_share
        self.rng = random.Random(seed)
        self.stop = stop
        self.report = LoadReport(rps)
        self.slots = [self._new() for _ in range(max(1, sessions))]

    def _new(self) -> _Conversation:
        self.report.conversations += 1
        return _Conversation(f"load-{uuid.uuid4().hex[:16]}", self.rng.choice(self.scripts))

    async def run(self) -> LoadReport:
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=30.0, limits=limits, auth=self.auth) as client:
            started = time.perf_counter()
            tasks: set[asyncio.Task[None]] = set()
            total = int(self.rps * self.duration_s)
            for i in range(total):
                if self.stop is not None and self.stop.is_set():
                    break
                delay = started + i / self.rps - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(tasks) >= self.max_in_flight:
                    self.report.skipped += 1
                    continue
                slot = i % len(self.slots)
                convo = self.slots[slot]
                if convo.turn >= len(convo.script):
                    self._finish(convo, client, tasks)
                    convo = self.slots[slot] = self._new()
                message = convo.script[convo.turn]
                convo.turn += 1
                task = asyncio.create_task(self._chat(client, convo, message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            for convo in self.slots:
                self._finish(convo, client, tasks)
            if tasks:
                # stopped early: give answers in flight a short grace, then count the rest as lost
                grace = 5.0 if self.stop is not None and self.stop.is_set() else 35.0
                _, pending = await asyncio.wait(set(tasks), timeout=grace)
                for task in pending:
                    task.cancel()
                self.report.abandoned = len(pending)
            self.report.duration_s = time.perf_counter() - started
        return self.report

    def _finish(
        self, convo: _Conversation, client: httpx.AsyncClient, tasks: set[asyncio.Task[None]]
    ) -> None:
        if len(convo.revisions) > 1:
            self.report.mixed_conversations += 1
        if convo.turn and self.rng.random() < self.feedback_share:
            rating = "down" if self.rng.random() < 0.1 else "up"
            task = asyncio.create_task(self._feedback(client, convo.id, rating))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _chat(self, client: httpx.AsyncClient, convo: _Conversation, message: str) -> None:
        report = self.report
        headers = {**self.headers, "X-Session-Id": convo.id}
        began = time.perf_counter()
        revision = "?"
        try:
            response = await client.post(
                f"{self.url}/v1/chat", json={"session_id": convo.id, "message": message}, headers=headers
            )
            status = response.status_code
            revision = response.headers.get("X-MangaAssist-Revision", "?")
        except httpx.HTTPError:
            status = 0
            report.transport_errors += 1
        latency = (time.perf_counter() - began) * 1000
        report.requests += 1
        report.latencies_ms.append(latency)
        report.statuses[status] += 1
        report.by_revision[revision] += 1
        if revision != "?":
            convo.revisions.add(revision)
        if status == 0 or status >= 500:
            report.failed += 1
            report.failed_by_revision[revision] += 1
            report.failures.append((time.time(), revision))
        else:
            report.ok += 1

    async def _feedback(self, client: httpx.AsyncClient, session: str, rating: str) -> None:
        try:
            response = await client.post(
                f"{self.url}/v1/feedback",
                json={"session_id": session, "rating": rating},
                headers={**self.headers, "X-Session-Id": session},
            )
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            self.report.feedback += 1


def run_load(
    url: str,
    *,
    rps: float,
    duration_s: float,
    sessions: int = 20,
    headers: Mapping[str, str] | None = None,
    scripts: Sequence[Sequence[str]] = CONVERSATIONS,
    feedback_share: float = 0.1,
    seed: int | None = None,
    stop: threading.Event | None = None,
    max_in_flight: int = 128,
    auth: httpx.Auth | None = None,
    remote: bool = False,
) -> LoadReport:
    """Send the load and wait for every answer (at most ``rps * duration_s`` requests, at most
    ``max_in_flight`` unanswered at once); ``headers`` and ``auth``: a pin's (``Compute.pin``).
    ``remote``: ``url`` came from the environment's ``Compute``, so it may be another host (the
    module's docstring); otherwise it must be loopback."""
    if not remote:
        check_loopback(url)
    elif (parts := urlsplit(url)).scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url}: load needs an http or https URL with a host")
    if rps <= 0 or duration_s <= 0:
        raise ConfigError(f"load needs rps > 0 and a duration > 0, got rps={rps} duration={duration_s}")
    if rps > 2000:
        raise ConfigError(f"rps {rps} is over the generator's bound of 2000")
    if not 1 <= max_in_flight <= 1024:
        raise ConfigError(f"max_in_flight {max_in_flight}: expected 1..1024")
    load = _Load(
        url,
        rps,
        duration_s,
        sessions,
        headers or {},
        scripts,
        feedback_share,
        seed,
        stop,
        max_in_flight,
        auth,
    )
    return asyncio.run(load.run())


class BackgroundLoad:
    """``run_load`` in a thread: ``start()``, then ``stop()`` returns the report (tests, demo, benches)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._stop = threading.Event()
        self._kwargs = {"duration_s": 3600.0, **kwargs, "stop": self._stop}
        self._url = url
        self.report: LoadReport | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.report = run_load(self._url, **self._kwargs)
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def start(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def stop(self) -> LoadReport:
        self._stop.set()
        self._thread.join(120)
        if self._error is not None:
            raise self._error
        if self.report is None:
            raise RuntimeError("the load did not stop within 120 s of being asked to")
        return self.report
