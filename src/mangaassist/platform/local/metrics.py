"""``RouterMetrics``: the ``Metrics`` protocol on the local routers' per-request records.

Every local router records each request and feedback it handles (``platform.local.stats``); this
reads them through the control API (``/v1/services/NAME/stats?cursor=N``) and hands them out as
``RequestOutcome`` values. Made by ``platform.factory.Platform.metrics`` only.
"""

from __future__ import annotations

from typing import Any

from mangaassist.platform.local.client import LocalCompute
from mangaassist.platform.metrics import Alert, OutcomeBatch, RequestOutcome, ShadowCounters

NEWEST = 1 << 62
"""A cursor past any observation: the answer carries the counters and the newest ``cursor`` only."""


class RouterMetrics:
    """Per-request outcomes from the local routers (exact: one observation per request)."""

    per_request = True

    def __init__(self, compute: LocalCompute) -> None:
        self._compute = compute

    def outcomes(self, service: str, cursor: int = 0) -> OutcomeBatch:
        data = self._compute.stats(service, cursor)
        oldest = data.get("oldest_kept")
        lost = int(oldest) - cursor - 1 if oldest is not None and cursor and int(oldest) > cursor + 1 else 0
        return OutcomeBatch(
            tuple(RequestOutcome.from_dict(obs) for obs in data.get("observations", [])),
            int(data.get("cursor", cursor)),
            lost,
        )

    def cursor(self, service: str) -> int:
        return int(self._compute.stats(service, NEWEST).get("cursor", 0))

    def shadow(self, service: str, revision: str) -> ShadowCounters:
        data = self._compute.stats(service, NEWEST).get("shadow", {}).get(revision) or {}
        return ShadowCounters.from_dict(data)

    def snapshot(self, service: str, cursor: int | None = None) -> dict[str, Any]:
        return self._compute.stats(service, NEWEST if cursor is None else cursor)

    def alerts(self, service: str) -> list[Alert]:
        """The alerts Alertmanager delivered to the control plane, firing for ``service``."""
        return [Alert.from_labels(service, a) for a in self._compute.alerts(service)]
