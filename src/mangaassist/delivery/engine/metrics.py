"""The delivery engine's Prometheus metrics, read from the state database on every scrape.

The engine has no long-running process of its own (each run is driven by the CLI process that
started it), so its metrics are not counted in memory: ``EngineCollector`` is a ``prometheus_client``
collector that asks the state database when it is scraped (by the dashboard's ``/metrics``, which
Prometheus scrapes on the local platform). Every figure is therefore the same whichever process
serves it, and survives restarts.

=====================================================  =========  =====================================
family                                                 type       labels
=====================================================  =========  =====================================
``mangaassist_engine_runs``                            gauge      pipeline, environment, state (the
                                                                  effective one: ``interrupted`` for a
                                                                  run whose process is gone)
``mangaassist_engine_runs_finished_total``             counter    pipeline, environment, state (final)
``mangaassist_engine_rollbacks_total``                 counter    pipeline, environment
``mangaassist_engine_step_duration_seconds``           histogram  pipeline, step (finished steps)
``mangaassist_engine_approvals_waiting``               gauge      pipeline, environment
``mangaassist_engine_oldest_approval_wait_seconds``    gauge      pipeline, environment
``mangaassist_engine_scrape_errors_total``             counter    (the state database could not be read)
=====================================================  =========  =====================================

Counters are counts of finished runs, which only grow (the engine never deletes a run). A scrape
reads a few aggregate queries; step durations read one row per finished step (``duration_s``).
"""

from __future__ import annotations

import bisect
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mangaassist.delivery.engine.clock import parse_iso
from mangaassist.delivery.engine.errors import StateStoreError
from mangaassist.delivery.engine.model import RunState, StepStatus
from mangaassist.delivery.engine.state import StateStore, owner_gone, runs, steps

log = logging.getLogger("mangaassist.engine")

STEP_BUCKETS_S: tuple[float, ...] = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
"""Upper bounds of the step-duration histogram (seconds): from a check to a canary's long step."""


class EngineCollector(Collector):
    """The engine's figures from ``store`` at each scrape (module docstring)."""

    def __init__(self, store: StateStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self.errors = 0

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "mangaassist_engine_scrape_errors", "Scrapes that could not read the state database"
        )
        try:
            families = self._families()
        except (StateStoreError, sa.exc.SQLAlchemyError) as exc:
            self.errors += 1
            log.warning("engine metrics: %s", exc)
            families = []
        errors.add_metric([], self.errors)
        yield from families
        yield errors

    def _families(self) -> list[Metric]:
        now = self.clock()
        live = GaugeMetricFamily(
            "mangaassist_engine_runs", "Runs by effective state", labels=["pipeline", "environment", "state"]
        )
        finished = CounterMetricFamily(
            "mangaassist_engine_runs_finished",
            "Runs that ended, by final state",
            labels=["pipeline", "environment", "state"],
        )
        rollbacks = CounterMetricFamily(
            "mangaassist_engine_rollbacks", "Runs that ended rolled back", labels=["pipeline", "environment"]
        )
        durations = HistogramMetricFamily(
            "mangaassist_engine_step_duration_seconds",
            "Duration of finished steps",
            labels=["pipeline", "step"],
        )
        waiting = GaugeMetricFamily(
            "mangaassist_engine_approvals_waiting",
            "Runs waiting for an approval",
            labels=["pipeline", "environment"],
        )
        oldest = GaugeMetricFamily(
            "mangaassist_engine_oldest_approval_wait_seconds",
            "How long the longest-waiting approval has waited",
            labels=["pipeline", "environment"],
        )
        states: Counter[tuple[str, str, str]] = Counter()
        per_step: dict[tuple[str, str], list[float]] = defaultdict(list)
        approvals: Counter[tuple[str, str]] = Counter()
        longest: dict[tuple[str, str], float] = {}
        with self.store.transaction() as conn:
            for agg in conn.execute(
                sa.select(runs.c.pipeline, runs.c.environment, runs.c.state, sa.func.count())
                .where(runs.c.state.in_([s.value for s in RunState if s.final]))
                .group_by(runs.c.pipeline, runs.c.environment, runs.c.state)
            ):
                states[(agg[0], agg[1], agg[2])] += int(agg[3])
            active = conn.execute(
                sa.select(
                    runs.c.id,
                    runs.c.pipeline,
                    runs.c.environment,
                    runs.c.state,
                    runs.c.lease_expires_at,
                    runs.c.owner_pid,
                    runs.c.owner_host,
                ).where(runs.c.state.in_([s.value for s in RunState if not s.final]))
            ).mappings()
            active_runs = {run["id"]: run for run in active}
            for run in active_runs.values():
                effective = RunState.INTERRUPTED if owner_gone(run, now) else RunState(run["state"])
                states[(run["pipeline"], run["environment"], effective.value)] += 1
            if active_runs:
                for step in conn.execute(
                    sa.select(steps.c.run_id, steps.c.detail, steps.c.waiting_since).where(
                        steps.c.run_id.in_(list(active_runs)), steps.c.status == StepStatus.WAITING.value
                    )
                ).mappings():
                    if _waits_for_approval(step["detail"]):
                        owner = active_runs[step["run_id"]]
                        key = (owner["pipeline"], owner["environment"])
                        approvals[key] += 1
                        if step["waiting_since"]:
                            waited = (now - parse_iso(step["waiting_since"])).total_seconds()
                            longest[key] = max(longest.get(key, 0.0), waited)
            for timed in conn.execute(
                sa.select(runs.c.pipeline, steps.c.name, steps.c.duration_s)
                .join(runs, runs.c.id == steps.c.run_id)
                .where(steps.c.duration_s.is_not(None))
                .where(steps.c.status.in_([StepStatus.DONE.value, StepStatus.FAILED.value]))
            ):
                per_step[(timed[0], timed[1])].append(float(timed[2]))
        for (pipeline, environment, name), n in sorted(states.items()):
            live.add_metric([pipeline, environment, name], n)
            if RunState(name).final:
                finished.add_metric([pipeline, environment, name], n)
            if name == RunState.ROLLED_BACK.value:
                rollbacks.add_metric([pipeline, environment], n)
        for (pipeline, step_name), values in sorted(per_step.items()):
            durations.add_metric([pipeline, step_name], _buckets(values), sum(values))
        for key, n in sorted(approvals.items()):
            waiting.add_metric(list(key), n)
            oldest.add_metric(list(key), round(longest.get(key, 0.0), 3))
        return [live, finished, rollbacks, durations, waiting, oldest]


def _waits_for_approval(detail: str | None) -> bool:
    try:
        return bool(json.loads(detail or "{}").get("wait_for") == "approval")
    except ValueError:
        return False


def _buckets(values: list[float]) -> list[tuple[str, float]]:
    counts = [0] * (len(STEP_BUCKETS_S) + 1)
    for v in values:
        counts[bisect.bisect_left(STEP_BUCKETS_S, v)] += 1
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip((*STEP_BUCKETS_S, float("inf")), counts, strict=True):
        running += n
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return out
