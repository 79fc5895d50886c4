"""Fault injection for drills: ``MANGAASSIST_FAULT=error_rate=0.3,latency_ms=400[,scope=users]``.

Off unless set. Only ``POST /v1/chat`` is affected (``POST /v1/intent`` on the model endpoint,
``chatbot.model_server``), so health checks keep telling the truth about the process while its
answers degrade, which is exactly what canary analysis must catch.

``scope=users`` limits the fault to requests that carry no ``X-MangaAssist-Revision`` pin: what the
router sends by weight (users), not the gates' pinned requests (smoke, latency gate, golden set).
It is the fault no gate before users can see, a bug only real traffic reaches, and it drills the
canary judge itself (``benchmarks/rollout_e2e.py``, scenario ``live-fault``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mangaassist.core.errors import ConfigError


@dataclass(frozen=True)
class FaultPlan:
    error_rate: float = 0.0
    """Share of chat requests answered with HTTP 500."""
    latency_ms: float = 0.0
    """Delay added to every chat request."""
    users_only: bool = False
    """``scope=users``: only unpinned requests (see the module docstring)."""

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0

    def applies(self, pinned: bool) -> bool:
        """Whether a request (``pinned``: it named its revision) meets the fault at all."""
        return self.active and not (self.users_only and pinned)

    def should_fail(self, rng: random.Random) -> bool:
        return self.error_rate > 0 and rng.random() < self.error_rate

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        values: dict[str, float] = {}
        users_only = False
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if sep and key == "scope":
                if raw.strip() not in ("all", "users"):
                    raise ConfigError(f"MANGAASSIST_FAULT: scope must be 'all' or 'users', got {raw!r}")
                users_only = raw.strip() == "users"
                continue
            if not sep or key not in ("error_rate", "latency_ms"):
                raise ConfigError(
                    f"MANGAASSIST_FAULT: {part!r} is not 'error_rate=FRACTION', 'latency_ms=MS' "
                    "or 'scope=all|users'"
                )
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"MANGAASSIST_FAULT: {key} must be a number, got {raw!r}") from None
            if key == "error_rate" and not 0.0 <= value <= 1.0:
                raise ConfigError(f"MANGAASSIST_FAULT: error_rate must be within 0..1, got {value}")
            if key == "latency_ms" and not 0.0 <= value <= 600_000:
                raise ConfigError(f"MANGAASSIST_FAULT: latency_ms must be within 0..600000, got {value}")
            values[key] = value
        return cls(**values, users_only=users_only)
