"""The chatbot's runtime config (CD-06): which version of each profile a session gets, and how.

``ConfigClient`` follows the config server (``platform/local/config_server.py``): one thread per
profile sends ``GET /v1/profiles/P`` with ``If-None-Match`` and ``?wait=INTERVAL``, so an unchanged
profile costs a 304 every ``interval`` seconds (default 2 s, ``MANGAASSIST_CONFIG_POLL``) and a
change arrives as soon as the server has it. Every document received is the last-known-good: kept
in memory and written to ``HOME/config-cache/P.json``. When the server is down the client keeps
serving what it has (memory, else the disk cache at start-up, else the files), and retries every
interval.

For each request ``ActiveConfig`` is what the session gets: per profile, the candidate version if
the session's bucket (``core.flags.on_new_version``) is inside the rollout percentage, else the
stable one. It applies the ``prompts`` (answer templates; an answer grounded in sources that does
not name one is a fallback), ``guardrails`` (PII masking, blocked topics, maximum length) and
``flags`` profiles, and carries the versions the response reports. Workers report per-version
outcomes (``observe``) to the server, which the config pipeline's judge reads.

Without a config server (``MANGAASSIST_CONFIG_URL`` unset) and without ``MANGAASSIST_CONFIG_DIR``,
the chatbot behaves as before: ``config/chatbot.yaml`` only, no templates.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import yaml

from mangaassist.chatbot.config import ChatbotConfig
from mangaassist.core.configspec import PROFILES, STORE_NAME, cites, render_template, version_of
from mangaassist.core.flags import FlagSet, on_new_version
from mangaassist.core.migrations import SCHEMA_PROFILE, Rules
from mangaassist.core.saferegex import Pattern, compile_linear

log = logging.getLogger("mangaassist.chatbot.config")

HANDOFF_OFFER = " If you prefer, I can hand you over to a person: just ask."


@dataclass
class ActiveConfig:
    """The config one request is answered with."""

    runtime: ChatbotConfig
    versions: dict[str, str]
    prompts: Mapping[str, Any] | None = None
    guardrails: Mapping[str, Any] | None = None
    flags: Mapping[str, Any] | None = None

    @cached_property
    def _flagset(self) -> FlagSet:
        return FlagSet(self.flags or {"features": []})

    @cached_property
    def _pii(self) -> list[Pattern]:
        return [compile_linear(p["regex"]) for p in (self.guardrails or {}).get("pii_patterns") or []]

    @cached_property
    def _blocked(self) -> list[tuple[str, Pattern]]:
        return [
            (t["name"], compile_linear(t["regex"]))
            for t in (self.guardrails or {}).get("blocked_topics") or []
        ]

    def flag(self, name: str, session_id: str, customer_id: str | None) -> bool:
        return self._flagset.is_enabled(name, {"sessionId": session_id, "userId": customer_id})

    def screen(self, message: str) -> tuple[str, str | None]:
        """The message with PII masked, and the blocked topic it touches (or None)."""
        for pattern in self._pii:
            message = pattern.sub("[redacted]", message)
        for name, pattern in self._blocked:
            if pattern.search(message):
                return message, name
        return message, None

    @property
    def blocked_reply(self) -> str:
        return str((self.guardrails or {}).get("blocked_reply") or "Sorry, I can't help with that.")

    def finish(
        self,
        *,
        intent: str,
        answer: str,
        sources: list[str],
        lead: str,
        facts: list[str],
        message: str,
        fallback: bool,
        handoff: bool,
    ) -> tuple[str, bool]:
        """Apply the answer template, the citation rule, the handoff flag and the length limit."""
        template = ((self.prompts or {}).get("templates") or {}).get(intent)
        if template is not None and not fallback:
            values = {
                "answer": answer,
                "sources": ", ".join(sources),
                "lead": lead,
                "facts": "\n".join(facts),
                "message": message,
                "intent": intent,
                "store": STORE_NAME,
            }
            answer = render_template(template["text"], values)
            if sources and not cites(answer, sources):
                fallback = True  # an answer from sources without a citation line is not grounded
        if fallback and handoff:
            answer += HANDOFF_OFFER
        limit = (self.guardrails or {}).get("max_answer_chars")
        if limit and len(answer) > limit:
            answer = answer[: limit - 1].rstrip() + "…"
        return answer, fallback


FOLLOWED = (*PROFILES, SCHEMA_PROFILE)
"""What a worker follows on the config server: the profiles under ``config/`` and the migration
rules CD-07 publishes (``schema``, no file)."""


def _file_profiles(config_dir: Path) -> dict[str, Any]:
    out = {}
    for name in PROFILES:
        path = config_dir / f"{name}.yaml"
        if path.is_file():
            out[name] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return out


@dataclass
class _Served:
    """One profile as the server last served it (or a local stand-in)."""

    doc: dict[str, Any]
    source: str
    """``server``, ``disk`` (last-known-good from a previous run) or ``files``."""
    etag: str | None = None
    fetched_at: float = 0.0


@dataclass
class _Tally:
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    guardrails: int = 0
    feedback: int = 0
    thumbs_down: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class ConfigClient:
    """Follows the config server; see the module docstring."""

    def __init__(
        self,
        url: str | None,
        cache_dir: Path,
        base: ChatbotConfig,
        *,
        config_dir: Path | None = None,
        interval: float = 2.0,
    ) -> None:
        self.url = url.rstrip("/") if url else None
        self.cache_dir = cache_dir
        self.base = base
        self.interval = interval
        self._lock = threading.Lock()
        self._served: dict[str, _Served] = {}
        self._runtime_cache: dict[str, ChatbotConfig] = {}
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._rules_cache: tuple[Any, Rules] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors = 0
        for name, content in _file_profiles(config_dir).items() if config_dir else ():
            version = version_of(name, content)
            doc = {"profile": name, "stable": {"version": version, "content": content}, "candidate": None}
            self._served[name] = _Served({**doc, "percentage": 0.0}, "files")
        for name in FOLLOWED if self.url else ():
            cached = self._read_cache(name)
            if cached is not None:
                self._served[name] = _Served(cached, "disk")

    # -- following the server ------------------------------------------------------------------

    def start(self) -> ConfigClient:
        if self.url is None:
            return self
        with httpx.Client(timeout=2.0) as http:
            for name in FOLLOWED:  # one quick round first, so a worker starts on the current versions
                self._poll(http, name, wait=0.0)
        for name in FOLLOWED:
            thread = threading.Thread(target=self._follow, args=(name,), name=f"config-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        reporter = threading.Thread(target=self._report_loop, name="config-report", daemon=True)
        reporter.start()
        self._threads.append(reporter)
        return self

    def close(self) -> None:
        self._stop.set()
        self._flush()

    def _follow(self, name: str) -> None:
        with httpx.Client(timeout=self.interval + 5.0) as http:
            while not self._stop.is_set():
                if not self._poll(http, name, wait=self.interval):
                    self._stop.wait(self.interval)

    def _poll(self, http: httpx.Client, name: str, wait: float) -> bool:
        """One conditional GET; False when the server could not be reached (keep what we have)."""
        current = self._served.get(name)
        headers = {"If-None-Match": current.etag} if current and current.etag else {}
        try:
            response = http.get(f"{self.url}/v1/profiles/{name}", params={"wait": wait}, headers=headers)
        except httpx.HTTPError as exc:
            self.errors += 1
            log.debug("config server unreachable for %s: %s", name, exc)
            return False
        if response.status_code == 304:
            return True
        if response.status_code != 200:
            self.errors += 1
            return False
        doc = response.json()
        if doc.get("stable") is None:  # the server has nothing for this profile yet: keep ours
            return True
        with self._lock:
            self._served[name] = _Served(doc, "server", response.headers.get("ETag"), time.time())
        self._write_cache(name, doc)
        return True

    def _read_cache(self, name: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads((self.cache_dir / f"{name}.json").read_text(encoding="utf-8"))
            return doc
        except (OSError, ValueError):
            return None

    def _write_cache(self, name: str, doc: dict[str, Any]) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        tmp.replace(self.cache_dir / f"{name}.json")

    # -- what a session gets -------------------------------------------------------------------

    def active(self, session_id: str) -> ActiveConfig:
        chosen: dict[str, tuple[str, Any]] = {}
        with self._lock:
            served = dict(self._served)
        for name, s in served.items():
            doc = s.doc
            role = "stable"
            if doc.get("candidate") and on_new_version(name, session_id, float(doc.get("percentage", 0))):
                role = "candidate"
            chosen[name] = (doc[role]["version"], doc[role]["content"])
        versions = {name: v for name, (v, _) in chosen.items()}
        runtime = self.base
        if "runtime" in chosen:
            version, content = chosen["runtime"]
            runtime = self._runtime_cache.get(version) or ChatbotConfig.model_validate(content)
            self._runtime_cache[version] = runtime
        else:
            versions["runtime"] = self.base.version
        return ActiveConfig(
            runtime,
            versions,
            chosen.get("prompts", ("", None))[1],
            chosen.get("guardrails", ("", None))[1],
            chosen.get("flags", ("", None))[1],
        )

    def schema_rules(self) -> Rules:
        """The migration rules every write follows now (CD-07's ``schema`` profile, its stable
        version for every session: a dual write must not depend on the session)."""
        with self._lock:
            served = self._served.get(SCHEMA_PROFILE)
        if served is None:
            return Rules()
        content = (served.doc.get("stable") or {}).get("content")
        cached = self._rules_cache
        if cached is not None and cached[0] is content:
            return cached[1]
        rules = Rules.from_content(content)
        self._rules_cache = (content, rules)
        return rules

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                name: {
                    "source": s.source,
                    "stable": (s.doc.get("stable") or {}).get("version"),
                    "candidate": (s.doc.get("candidate") or {}).get("version"),
                    "percentage": s.doc.get("percentage", 0.0),
                }
                for name, s in self._served.items()
            }

    # -- outcomes per version ------------------------------------------------------------------

    def observe(
        self,
        versions: Mapping[str, str],
        *,
        status: int,
        latency_ms: float,
        fallback: bool = False,
        guardrail: bool = False,
    ) -> None:
        if self.url is None:
            return
        with self._lock:
            for name, version in versions.items():
                t = self._tallies.setdefault((name, version), _Tally())
                t.requests += 1
                t.errors += status >= 500
                t.fallbacks += fallback
                t.guardrails += guardrail
                t.latencies_ms.append(round(latency_ms, 3))

    def observe_feedback(self, versions: Mapping[str, str], rating: str) -> None:
        if self.url is None:
            return
        with self._lock:
            for name, version in versions.items():
                t = self._tallies.setdefault((name, version), _Tally())
                t.feedback += 1
                t.thumbs_down += rating == "down"

    def _report_loop(self) -> None:
        while not self._stop.wait(min(self.interval, 0.5)):
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            tallies, self._tallies = self._tallies, {}
        if not tallies or self.url is None:
            return
        report: dict[str, dict[str, Any]] = {}
        for (name, version), t in tallies.items():
            report.setdefault(name, {})[version] = t.__dict__
        try:
            httpx.post(f"{self.url}/v1/observations", json=report, timeout=2.0).raise_for_status()
        except httpx.HTTPError:
            with self._lock:  # the server is down: keep the counts for the next report
                for key, t in tallies.items():
                    kept = self._tallies.setdefault(key, _Tally())
                    for attr in ("requests", "errors", "fallbacks", "guardrails", "feedback", "thumbs_down"):
                        setattr(kept, attr, getattr(kept, attr) + getattr(t, attr))
                    kept.latencies_ms.extend(t.latencies_ms[-5000:])
