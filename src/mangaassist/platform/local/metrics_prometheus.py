"""``PrometheusMetrics`` on the local environment's own Prometheus (CD-08): the router series the
control plane's Prometheus scrapes, read through the shared Prometheus query API reader
(``platform.prometheus``, also behind Amazon Managed Prometheus: ``platform.aws.metrics_amp``).
Shadow counters, the snapshot and the firing alerts come from the ``RouterMetrics`` it is given.

Chosen by ``[environments.NAME.monitoring] judge_source = "prometheus"`` in ``platform.factory``.
"""

from __future__ import annotations

from collections.abc import Callable

from mangaassist.platform.metrics import Metrics
from mangaassist.platform.prometheus import (
    _ANSWERS,
    _FEEDBACK,
    _LATENCY,
    _REQUESTS,
    _TRANSPORT,
    US,
    PrometheusError,
    _delta,
    _latencies,
    expand,
)
from mangaassist.platform.prometheus import PrometheusMetrics as _Reader

__all__ = [
    "US",
    "_ANSWERS",
    "_FEEDBACK",
    "_LATENCY",
    "_REQUESTS",
    "_TRANSPORT",
    "PrometheusError",
    "PrometheusMetrics",
    "_delta",
    "_latencies",
    "expand",
]

NOT_RUNNING = (
    "judge_source = 'prometheus', but the environment's Prometheus is not running "
    "(mangaassist up starts it with [environments.NAME.monitoring])"
)


class PrometheusMetrics(_Reader):
    """Per-revision outcomes from the local Prometheus (``url``: its URL, or a callable giving it
    while it runs), the rest from the routers' ``RouterMetrics`` (``delegate``)."""

    def __init__(
        self, url: str | Callable[[], str | None], delegate: Metrics, *, timeout_s: float = 10.0
    ) -> None:
        super().__init__(url, delegate, timeout_s=timeout_s, missing=NOT_RUNNING)
