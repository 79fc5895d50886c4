"""CloudWatch embedded metric format (EMF): the workload's own metrics on AWS.

Locally the router counts every request, answer, flag and feedback by revision (Prometheus, the
judges). On AWS no router of ours sees the requests, so the worker writes the same counts as EMF
lines to its standard output: the ECS task's ``awslogs`` driver (or SageMaker's log agent) sends
them to CloudWatch Logs, which turns them into custom metrics in ``MANGAASSIST_METRICS_NAMESPACE``
(default ``MangaAssist``). Those are the metrics CD-08's burn-rate alarms read
(``delivery/monitoring/cloudwatch.py``: ``RouterRequests``, ``RouterLatency``, ``RouterAnswers``)
and the CloudWatch ``Metrics`` provider gives the canary judges (``RouterQualityFlags``,
``RouterFeedback``: ``platform.metrics``).

On with ``MANGAASSIST_EMF=1`` (``EcsServiceCompute`` sets it in every task); off by default. One
line per counted request, one per answer, one per flag, one per feedback; each line is one JSON
document of the format's specification: ``_aws.Timestamp`` (ms), ``_aws.CloudWatchMetrics`` (the
namespace, dimension sets, metric names and units), and the dimension values and metric values as
top-level members.

=======================  ==========================================  ======================
metric                   dimension sets                              written
=======================  ==========================================  ======================
``RouterRequests``       (Service), (Service, Status = ``5xx`` ...)  per request on the
``RouterLatency`` (s)    (Service)                                   service's counted path
``RouterAnswers``        (Service), (Service, Fallback)              per answer (not shadows)
``RouterQualityFlags``   (Service, Revision, Flag)                   per flag set
``RouterFeedback``       (Service, Revision, Rating)                 per feedback
=======================  ==========================================  ======================

What it cannot count: requests the load balancer answers itself (no task reached), and a worker
that dies before writing. CD-08's availability alarms on AWS therefore see the workers' own 5xx;
the ALB's 5xx are alarmed on by CD-02's monitoring stack.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Collection
from typing import Any, TextIO

from mangaassist.core.errors import ConfigError
from mangaassist.platform.metrics import FEEDBACK_METRIC, QUALITY_FLAGS_METRIC

NAMESPACE = "MangaAssist"
REQUESTS_METRIC = "RouterRequests"
LATENCY_METRIC = "RouterLatency"
ANSWERS_METRIC = "RouterAnswers"
FLAGS = ("fallback", "guardrail")
RATINGS = ("up", "down")


class EmfWriter:
    """Writes one EMF document per event to ``stream`` (standard output), as one line."""

    def __init__(
        self,
        service: str,
        revision: str,
        *,
        namespace: str = NAMESPACE,
        counted_paths: Collection[str] = ("/v1/chat",),
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not service or not revision:
            raise ConfigError("EMF metrics need a service and a revision name")
        self.service = service
        self.revision = revision
        self.namespace = namespace
        self.counted_paths = frozenset(counted_paths)
        self._stream = stream
        self._clock = clock

    @classmethod
    def from_env(cls, service: str, revision: str, counted_paths: Collection[str]) -> EmfWriter | None:
        """``MANGAASSIST_EMF`` = ``1`` (on) or ``0``/unset (off); ``MANGAASSIST_SERVICE`` overrides
        ``service`` (the platform names the service a revision belongs to)."""
        raw = os.environ.get("MANGAASSIST_EMF", "").strip().lower()
        if raw in ("", "0", "false", "off"):
            return None
        if raw not in ("1", "true", "on"):
            raise ConfigError(f"MANGAASSIST_EMF={raw!r}: expected 1 (on) or 0 (off)")
        namespace = os.environ.get("MANGAASSIST_METRICS_NAMESPACE") or NAMESPACE
        return cls(
            os.environ.get("MANGAASSIST_SERVICE") or service,
            revision,
            namespace=namespace,
            counted_paths=counted_paths,
        )

    # -- events ----------------------------------------------------------------------------------

    def request(self, path: str, status: int, seconds: float) -> None:
        """A response on ``path`` (only the counted paths are written): its status class and, for
        an answered request, its latency."""
        if path not in self.counted_paths:
            return
        self._write(
            [
                (REQUESTS_METRIC, "Count", [["Service"], ["Service", "Status"]]),
                (LATENCY_METRIC, "Seconds", [["Service"]]),
            ],
            {"Service": self.service, "Status": f"{status // 100}xx"},
            {REQUESTS_METRIC: 1, LATENCY_METRIC: round(max(seconds, 0.0), 6)},
        )

    def answer(self, *, fallback: bool, guardrail: bool) -> None:
        """A 2xx chat answer: counted, with its fallback flag as a dimension, and one flag line per
        quality flag set."""
        self._write(
            [(ANSWERS_METRIC, "Count", [["Service"], ["Service", "Fallback"]])],
            {"Service": self.service, "Fallback": "true" if fallback else "false"},
            {ANSWERS_METRIC: 1},
        )
        for flag, on in (("fallback", fallback), ("guardrail", guardrail)):
            if on:
                self._write(
                    [(QUALITY_FLAGS_METRIC, "Count", [["Service", "Revision", "Flag"]])],
                    {"Service": self.service, "Revision": self.revision, "Flag": flag},
                    {QUALITY_FLAGS_METRIC: 1},
                )

    def feedback(self, rating: str) -> None:
        if rating not in RATINGS:
            raise ValueError(f"rating {rating!r}: expected one of {', '.join(RATINGS)}")
        self._write(
            [(FEEDBACK_METRIC, "Count", [["Service", "Revision", "Rating"]])],
            {"Service": self.service, "Revision": self.revision, "Rating": rating},
            {FEEDBACK_METRIC: 1},
        )

    # -- the format ------------------------------------------------------------------------------

    def _write(
        self,
        directives: list[tuple[str, str, list[list[str]]]],
        dimensions: dict[str, str],
        values: dict[str, float],
    ) -> None:
        document: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(self._clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": sets,
                        "Metrics": [{"Name": name, "Unit": unit}],
                    }
                    for name, unit, sets in directives
                ],
            },
            **dimensions,
            **values,
        }
        stream = self._stream or sys.stdout
        stream.write(json.dumps(document, separators=(",", ":")) + "\n")
        stream.flush()
