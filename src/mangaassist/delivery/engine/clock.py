"""Time as the engine sees it: injectable, so tests expire leases and approvals without waiting.

``SystemClock`` is the default everywhere; ``FakeClock`` is the test double, shipped with the library
so pipeline tests can use it too.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, time-zone aware (UTC)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; a fake clock advances instead."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock:
    """A clock that only moves when told to (``advance``) or when someone sleeps on it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2025, 1, 8, 12, 0, tzinfo=UTC)  # a Wednesday, outside freezes
        self._lock = threading.Lock()
        self.slept = 0.0

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.advance(seconds)


def iso(moment: datetime) -> str:
    """How the state store writes a time: ISO 8601 in UTC with microseconds, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)
