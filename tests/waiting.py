"""Waiting for something a real process does, in tests: poll until it holds or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(check: Callable[[], Any], timeout_s: float = 45.0, what: str = "") -> Any:
    """``check()``'s first truthy result, polled every 0.5 s; ``AssertionError`` naming ``what``
    and the last result when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s:g}s: {what} (last: {last!r})")
