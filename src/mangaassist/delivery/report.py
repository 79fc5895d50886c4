"""The delivery-performance report: the four DORA measures and the gates that stopped bad releases,
per pipeline and environment, read from the engine's run history.

``delivery_report(store, now, since, environment)`` reads the runs (and the steps of the runs that
failed) from the state store and hands them to ``compute``, the pure core that unit tests feed
with constructed records. ``mangaassist report delivery`` prints it; it is made for the delivery
dashboard too, which can serve ``DeliveryReport.as_dict()`` as it is.

**Groups.** Runs are grouped by (pipeline, environment), where the pipeline is the *family* a run
belongs to (``family``):

1. ``CD-NN-anything`` belongs to ``CD-NN``: ``CD-04-promote``, ``CD-05-rollback``,
   ``CD-05-preview-delete``, ``CD-06-rollback``, ``CD-07-contract``, ``CD-07-rollback`` and
   ``CD-08-rollback``. This agrees with ``views.runs.RUNS_AS`` (the pipelines that already run
   under another one's lock and policy) and extends it to the rollbacks of CD-05 and CD-06;
2. any other ``NAME-rollback`` belongs to ``NAME``;
3. any other pipeline is its own family (``CD-01``, ``demo``...).

Within a family each run has a ``RunKind`` (``kind_of``):

- ``deploy``: a run of the family's own pipeline. These are the deployments every measure counts;
- ``rollback``: a ``...-rollback`` pipeline, or a CD-01 run with the param ``rollback_of``
  (``mangaassist rollback app``): it puts a previous release back. It can end an incident, and is
  never counted as a deployment;
- ``other``: the remaining companions (``CD-04-promote``, a hand move of ``kb-live`` that may go
  forward or back, which the run does not record; ``CD-07-contract``; ``CD-05-preview-delete``) and
  runs with a ``preview`` param (a CD-05 preview channel is never what customers get). Counted in
  ``runs.other`` so nothing is hidden, used by no measure.

A group shares one timeline: CD-06's profiles (one lock per profile) are one group per environment.

**The window** is ``[since, now]``: a run counts when it *finished* inside it. Without ``since`` it
starts at the first run recorded (of the environment, if one is given). Runs created after ``now``
are ignored and runs that finish after it are unfinished, so a report for an earlier ``now`` reads
the history as it was then.

**The measures** (None, not 0, when there is nothing to measure):

- ``deployments``: ``count``, deploy runs that succeeded; ``per_day``, that count over the window's
  length in days (0.0 for a window without one; None when there is no window: no ``since`` and no
  run).
- ``lead_time``: from the run being requested (``created_at``) to its success (``finished_at``), of
  each succeeded deploy run: ``count``, ``median_s``, ``p90_s``. No run records when its change was
  committed (a release records its commit's hash, not its time; pipelines record artifact digests),
  so the basis is named in ``lead_time_basis``: ``"run requested"``. It includes waiting for
  approvals, windows and freezes.
- ``change_failure_rate``: ``rate`` = (``failed`` + ``rolled_back``) / ``finished``, over deploy runs
  that ended succeeded, failed or rolled back. Aborted runs (``runs abort``, a rejection, an
  approval timeout, a precondition a step refused, a superseded run) changed nothing on purpose and
  are counted apart (``aborted``), in neither side of the rate.
- ``time_to_restore``: an incident starts when a deploy run ends failed or rolled back and ends when
  the next deploy or rollback run of the same group succeeds (``finished_at`` to ``finished_at``).
  Failures while an incident is open join it (one outage, timed from its first failure).
  ``restored``: incidents that ended in the window, timed by ``median_s`` and ``p90_s``; ``open``:
  incidents not ended at ``now``, whenever they began, ``open_since`` the earliest one's start;
  ``incidents`` = ``restored`` + ``open``.
- ``stopped_at``: for each deploy run that ended failed or rolled back in the window, the step that
  stopped it (its first failed step; ``"(not recorded)"`` if none is marked), step name -> runs, the
  most frequent first. These are the bad releases a gate caught. In ``totals`` the counts are summed
  by step name across pipelines.
- ``runs``: runs that finished in the window by kind (``deploy``, ``rollback``, ``other``), and
  ``unfinished``, runs running, waiting or interrupted at ``now``.

Medians and percentiles interpolate linearly between the closest ranks (numpy's default).

**``DeliveryReport.as_dict()``** (stable keys; times are ISO 8601 UTC, durations seconds)::

    {
      "generated_at": "2025-01-15T12:00:00.000000+00:00",
      "environment": "prod",                   # or null: every environment
      "window": {"since": "...", "start": "...", "end": "...", "days": 7.0},
                                               # since: as asked (null); start: the window's start
                                               # (null when there is no run); end: now
      "lead_time_basis": "run requested",
      "groups": [
        {
          "pipeline": "CD-05", "environment": "prod", "members": ["CD-05", "CD-05-rollback"],
          "deployments": {"count": 3, "per_day": 0.4286},
          "lead_time": {"count": 3, "median_s": 420.0, "p90_s": 900.0},
          "change_failure_rate": {"rate": 0.25, "failed": 0, "rolled_back": 1, "finished": 4,
                                  "aborted": 0},
          "time_to_restore": {"incidents": 1, "restored": 1, "open": 0, "median_s": 3600.0,
                              "p90_s": 3600.0, "open_since": null},
          "stopped_at": {"browser-check": 1},
          "runs": {"deploy": 4, "rollback": 1, "other": 0, "unfinished": 0}
        }
      ],
      "totals": {"deployments": ..., "lead_time": ..., "change_failure_rate": ...,
                 "time_to_restore": ..., "stopped_at": ..., "runs": ...}
    }

Groups are sorted by pipeline, then environment; a group is listed when one of its runs finished
in the window, is unfinished, or it has an open incident.

Bad input is a ``BadRequest``: ``since`` not before ``now``, an environment that has no runs and is
not in the release policy (``UnknownEnvironment``), a ``--since`` that is neither a duration nor a
date (``parse_since``).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from mangaassist.delivery.engine.clock import iso, parse_iso
from mangaassist.delivery.engine.errors import BadRequest, UnknownEnvironment
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord, StepStatus
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.engine.state import StateStore, run_record, runs

LEAD_TIME_BASIS = "run requested"
"""What lead time is measured from: the run's ``created_at`` (no run records a commit time)."""

NOT_RECORDED = "(not recorded)"
"""``stopped_at``'s key for a failed run none of whose steps is marked failed."""

_CD_COMPANION = re.compile(r"^(CD-\d+)-.+$")
_SINCE_DURATION = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")
_SINCE_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_DAY_S = 86_400.0


class RunKind(StrEnum):
    """What a run is to its family's measures (module docstring, "Groups")."""

    DEPLOY = "deploy"
    """A run of the family's own pipeline: a deployment."""
    ROLLBACK = "rollback"
    """Puts a previous release back (``...-rollback``, CD-01's ``rollback_of``); may end an incident."""
    OTHER = "other"
    """A companion that is neither (alias moves, contracts, previews); counted, never measured."""


def family(pipeline: str) -> str:
    """The pipeline a run's measures are reported under: ``CD-05-rollback`` -> ``CD-05``."""
    match = _CD_COMPANION.match(pipeline)
    if match:
        return match.group(1)
    return pipeline.removesuffix("-rollback") or pipeline


def kind_of(run: RunRecord) -> RunKind:
    """Whether ``run`` is a deploy, a rollback or another companion run of its family."""
    if run.pipeline.endswith("-rollback") or run.params.get("rollback_of"):
        return RunKind.ROLLBACK
    if family(run.pipeline) != run.pipeline or run.params.get("preview"):
        return RunKind.OTHER
    return RunKind.DEPLOY


# -- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployments:
    count: int
    """Deploy runs that succeeded in the window."""
    per_day: float | None
    """``count`` over the window's days; None without a window."""

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "per_day": self.per_day}


@dataclass(frozen=True)
class LeadTime:
    count: int
    """Succeeded deploy runs measured (``LEAD_TIME_BASIS`` to finished)."""
    median_s: float | None
    p90_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "median_s": self.median_s, "p90_s": self.p90_s}


@dataclass(frozen=True)
class ChangeFailures:
    rate: float | None
    """(failed + rolled_back) / finished; None when no deploy run finished."""
    failed: int
    rolled_back: int
    finished: int
    """Deploy runs that ended succeeded, failed or rolled back."""
    aborted: int
    """Deploy runs that ended aborted: in neither side of the rate."""

    @property
    def failures(self) -> int:
        return self.failed + self.rolled_back

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "failed": self.failed,
            "rolled_back": self.rolled_back,
            "finished": self.finished,
            "aborted": self.aborted,
        }


@dataclass(frozen=True)
class Restores:
    restored: int
    """Incidents that ended in the window."""
    open: int
    """Incidents not ended at ``now``."""
    median_s: float | None
    p90_s: float | None
    open_since: datetime | None
    """When the oldest open incident began."""

    @property
    def incidents(self) -> int:
        return self.restored + self.open

    def as_dict(self) -> dict[str, Any]:
        return {
            "incidents": self.incidents,
            "restored": self.restored,
            "open": self.open,
            "median_s": self.median_s,
            "p90_s": self.p90_s,
            "open_since": iso(self.open_since) if self.open_since else None,
        }


@dataclass(frozen=True)
class Measures:
    """The measures of one group, or of all of them (``DeliveryReport.totals``)."""

    deployments: Deployments
    lead_time: LeadTime
    change_failure_rate: ChangeFailures
    time_to_restore: Restores
    stopped_at: dict[str, int]
    """Step name -> deploy runs it stopped (failed or rolled back), the most frequent first."""
    runs: dict[str, int]
    """Finished in the window by kind (``deploy``, ``rollback``, ``other``), and ``unfinished``."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployments": self.deployments.as_dict(),
            "lead_time": self.lead_time.as_dict(),
            "change_failure_rate": self.change_failure_rate.as_dict(),
            "time_to_restore": self.time_to_restore.as_dict(),
            "stopped_at": dict(self.stopped_at),
            "runs": dict(self.runs),
        }


@dataclass(frozen=True)
class GroupReport:
    pipeline: str
    """The family (``family``)."""
    environment: str
    members: tuple[str, ...]
    """The pipelines whose runs the group holds (in the window), sorted."""
    measures: Measures

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "environment": self.environment,
            "members": list(self.members),
            **self.measures.as_dict(),
        }


@dataclass(frozen=True)
class DeliveryReport:
    """The report (module docstring): one ``GroupReport`` per (pipeline, environment), and totals."""

    generated_at: datetime
    environment: str | None
    since: datetime | None
    """As asked; None: from the first run."""
    window_start: datetime | None
    """``since``, else the first run's ``created_at``; None when there is neither."""
    groups: tuple[GroupReport, ...]
    totals: Measures
    lead_time_basis: str = LEAD_TIME_BASIS

    @property
    def window_days(self) -> float | None:
        if self.window_start is None:
            return None
        return (self.generated_at - self.window_start).total_seconds() / _DAY_S

    def as_dict(self) -> dict[str, Any]:
        days = self.window_days
        return {
            "generated_at": iso(self.generated_at),
            "environment": self.environment,
            "window": {
                "since": iso(self.since) if self.since else None,
                "start": iso(self.window_start) if self.window_start else None,
                "end": iso(self.generated_at),
                "days": round(days, 6) if days is not None else None,
            },
            "lead_time_basis": self.lead_time_basis,
            "groups": [g.as_dict() for g in self.groups],
            "totals": self.totals.as_dict(),
        }


# -- reading the store ---------------------------------------------------------------------------


def delivery_report(
    store: StateStore,
    now: datetime,
    since: datetime | None = None,
    environment: str | None = None,
    *,
    environments: Iterable[str] | None = None,
) -> DeliveryReport:
    """The report of the runs in ``store`` as of ``now``, for runs that finished from ``since`` (None:
    from the first run), of ``environment`` (None: every environment).

    ``environments``: the environments that exist (default: those ``policy.yaml`` declares,
    ``load_policy()``); an environment with runs in the store always exists. Anything else is
    ``UnknownEnvironment``; ``since`` not before ``now`` is ``BadRequest``. Reads every run of the
    environment (the first failure of an incident may precede the window) and the steps of the
    deploy runs that failed in the window.
    """
    now = _aware(now)
    since = _aware(since) if since is not None else None
    check_window(since, now)
    if environment is not None:
        with store.transaction() as conn:
            seen = {row[0] for row in conn.execute(sa.select(runs.c.environment).distinct())}
        if environment not in seen:  # the policy is read outside the transaction (a file)
            _check_environment(environment, seen, environments)
    with store.transaction() as conn:
        query = sa.select(runs).order_by(runs.c.created_at, runs.c.id)
        if environment is not None:
            query = query.where(runs.c.environment == environment)
        records = [run_record(row, now) for row in conn.execute(query).mappings()]
        steps_by_run = {r.id: store.steps(conn, r.id) for r in records if _stopped_in_window(r, now, since)}
    return compute(records, steps_by_run, now, since, environment=environment)


def _check_environment(environment: str, seen: set[str], environments: Iterable[str] | None) -> None:
    if environments is not None:
        declared, where = set(environments), "is not a known environment"
    else:
        policy = load_policy()
        declared, where = set(policy.environments), f"has no runs and is not in {policy.path}"
    if environment in declared:
        return
    known = ", ".join(sorted(declared | seen)) or "none"
    raise UnknownEnvironment(f"environment {environment!r} {where} (known: {known})")


def check_window(since: datetime | None, now: datetime) -> None:
    """``BadRequest`` unless ``since`` (when given) is before ``now``."""
    if since is not None and _aware(since) >= _aware(now):
        when = "is in the future" if _aware(since) > _aware(now) else "is now"
        raise BadRequest(f"since {iso(since)} {when} (now: {iso(now)}): the report's window would be empty")


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: a duration back from ``now`` (``7d``, ``12h``, ``2w``) or an ISO 8601 date or time
    (``2025-01-31``, ``2025-01-31T09:00``; UTC unless it names its offset)."""
    match = _SINCE_DURATION.match(text)
    if match:
        return _aware(now) - int(match.group(1)) * _SINCE_UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(
            f"since {text!r}: expected a duration such as 7d, 12h or 2w, "
            "or an ISO date such as 2025-01-31 (or 2025-01-31T09:00)"
        ) from None
    return _aware(moment)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- the pure core -------------------------------------------------------------------------------


def _finished_at(run: RunRecord, now: datetime) -> datetime | None:
    """When ``run`` ended, if it had by ``now``."""
    if not run.state.final:
        return None
    ended = parse_iso(run.finished_at or run.updated_at)
    return ended if ended <= now else None


def _in_window(moment: datetime, since: datetime | None, now: datetime) -> bool:
    return (since is None or moment >= since) and moment <= now


def _stopped_in_window(run: RunRecord, now: datetime, since: datetime | None) -> bool:
    ended = _finished_at(run, now)
    return (
        ended is not None
        and _in_window(ended, since, now)
        and run.state in (RunState.FAILED, RunState.ROLLED_BACK)
        and kind_of(run) is RunKind.DEPLOY
    )


@dataclass
class _Tally:
    """The raw figures of one group (or of all): lists and counts the measures are made from."""

    members: set[str] = field(default_factory=set)
    deployed: int = 0
    lead_times: list[float] = field(default_factory=list)
    failed: int = 0
    rolled_back: int = 0
    aborted: int = 0
    restores: list[float] = field(default_factory=list)
    open_since: list[datetime] = field(default_factory=list)
    stopped_at: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)

    @property
    def listed(self) -> bool:
        return bool(sum(self.runs.values()) or self.open_since)

    def merge(self, other: _Tally) -> None:
        self.members |= other.members
        self.deployed += other.deployed
        self.lead_times += other.lead_times
        self.failed += other.failed
        self.rolled_back += other.rolled_back
        self.aborted += other.aborted
        self.restores += other.restores
        self.open_since += other.open_since
        self.stopped_at.update(other.stopped_at)
        self.runs.update(other.runs)

    def measures(self, days: float | None) -> Measures:
        finished = self.deployed + self.failed + self.rolled_back
        return Measures(
            deployments=Deployments(self.deployed, round(self.deployed / days, 4) if days else None),
            lead_time=LeadTime(
                len(self.lead_times), _quantile(self.lead_times, 0.5), _quantile(self.lead_times, 0.9)
            ),
            change_failure_rate=ChangeFailures(
                rate=round((self.failed + self.rolled_back) / finished, 4) if finished else None,
                failed=self.failed,
                rolled_back=self.rolled_back,
                finished=finished,
                aborted=self.aborted,
            ),
            time_to_restore=Restores(
                restored=len(self.restores),
                open=len(self.open_since),
                median_s=_quantile(self.restores, 0.5),
                p90_s=_quantile(self.restores, 0.9),
                open_since=min(self.open_since, default=None),
            ),
            stopped_at=dict(sorted(self.stopped_at.items(), key=lambda item: (-item[1], item[0]))),
            runs={
                "deploy": self.runs[RunKind.DEPLOY.value],
                "rollback": self.runs[RunKind.ROLLBACK.value],
                "other": self.runs[RunKind.OTHER.value],
                "unfinished": self.runs["unfinished"],
            },
        )


def compute(
    runs: Iterable[RunRecord],
    steps_by_run: Mapping[str, Sequence[StepRecord]],
    now: datetime,
    since: datetime | None = None,
    *,
    environment: str | None = None,
) -> DeliveryReport:
    """The report of ``runs`` as of ``now`` (module docstring), pure.

    ``steps_by_run``: the steps of (at least) the deploy runs that ended failed or rolled back in the
    window, for ``stopped_at``; a run missing from it is counted under ``"(not recorded)"``.
    ``environment``: only that environment's runs (None: all). ``since`` not before ``now`` is
    ``BadRequest``; naive times are read as UTC.
    """
    now = _aware(now)
    since = _aware(since) if since is not None else None
    check_window(since, now)
    timelines: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    first_created: datetime | None = None
    for run in runs:
        if environment is not None and run.environment != environment:
            continue
        created = parse_iso(run.created_at)
        if created > now:
            continue  # not requested yet, as of now
        first_created = created if first_created is None else min(first_created, created)
        timelines[(family(run.pipeline), run.environment)].append(run)
    window_start = since if since is not None else first_created
    days = (now - window_start).total_seconds() / _DAY_S if window_start is not None else None

    tallies = {key: _tally(group, steps_by_run, now, since) for key, group in timelines.items()}
    totals = _Tally()
    groups = []
    for (name, env), tally in sorted(tallies.items()):
        if not tally.listed:
            continue
        totals.merge(tally)
        groups.append(GroupReport(name, env, tuple(sorted(tally.members)), tally.measures(days)))
    return DeliveryReport(
        generated_at=now,
        environment=environment,
        since=since,
        window_start=window_start,
        groups=tuple(groups),
        totals=totals.measures(days),
    )


def _tally(
    group: list[RunRecord],
    steps_by_run: Mapping[str, Sequence[StepRecord]],
    now: datetime,
    since: datetime | None,
) -> _Tally:
    tally = _Tally()
    ended: list[tuple[datetime, RunRecord]] = []
    for run in group:
        moment = _finished_at(run, now)
        if moment is None:
            tally.runs["unfinished"] += 1
            tally.members.add(run.pipeline)
        else:
            ended.append((moment, run))
    ended.sort(key=lambda item: (item[0], item[1].id))

    incident: datetime | None = None  # when the open incident began
    for moment, run in ended:
        kind = kind_of(run)
        inside = _in_window(moment, since, now)
        if inside:
            tally.members.add(run.pipeline)
            tally.runs[kind.value] += 1
        failed = kind is RunKind.DEPLOY and run.state in (RunState.FAILED, RunState.ROLLED_BACK)
        if failed and incident is None:
            incident = moment
        elif kind is not RunKind.OTHER and run.state is RunState.SUCCEEDED and incident is not None:
            if inside:
                tally.restores.append((moment - incident).total_seconds())
            incident = None
        if not inside or kind is not RunKind.DEPLOY:
            continue
        if run.state is RunState.SUCCEEDED:
            tally.deployed += 1
            tally.lead_times.append((moment - parse_iso(run.created_at)).total_seconds())
        elif run.state is RunState.ABORTED:
            tally.aborted += 1
        else:
            if run.state is RunState.FAILED:
                tally.failed += 1
            else:
                tally.rolled_back += 1
            tally.stopped_at[_stopping_step(steps_by_run.get(run.id, ()))] += 1
    if incident is not None:
        tally.open_since.append(incident)
    return tally


def _stopping_step(steps: Sequence[StepRecord]) -> str:
    failed = [s for s in steps if s.status is StepStatus.FAILED]
    return min(failed, key=lambda s: s.index).name if failed else NOT_RECORDED


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of ``values``, interpolated between the closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return round(value, 3)


def human_duration(seconds: float | None, *, none: str = "–") -> str:
    """A duration for people: ``42 s``, ``3.5 min``, ``2.1 h``, ``1.5 d``; ``none`` for no data.
    ``report delivery`` and the dashboard's delivery page print durations this way."""
    if seconds is None:
        return none
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5_400:
        return f"{seconds / 60:.1f} min"
    if seconds < 129_600:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 86_400:.1f} d"
