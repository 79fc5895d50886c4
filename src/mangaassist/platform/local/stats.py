"""Per-revision request outcomes recorded by the router, for judges, dashboards and Prometheus.

The records and their Prometheus view live in ``platform.request_series`` (shared with the workers
that record their own series where no router stands in front of them: on ECS behind an ALB); this
module keeps the router's names. The router calls ``RouterStats.record`` once per request; readers
get JSON (``snapshot``) or Prometheus text (``RouterCollector``).
"""

from __future__ import annotations

from mangaassist.platform.request_series import (
    DISAGREEMENT_TEXT_MAX,
    DISAGREEMENTS_KEPT,
    LATENCY_BUCKETS_MS,
    OBSERVATION_FIELDS,
    Histogram,
    RevisionCounters,
    RouterCollector,
    RouterStats,
    ShadowCounters,
)

__all__ = [
    "DISAGREEMENTS_KEPT",
    "DISAGREEMENT_TEXT_MAX",
    "LATENCY_BUCKETS_MS",
    "OBSERVATION_FIELDS",
    "Histogram",
    "RevisionCounters",
    "RouterCollector",
    "RouterStats",
    "ShadowCounters",
]
