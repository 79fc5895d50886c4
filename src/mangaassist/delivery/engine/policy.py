"""Release policy as code: who may approve, when deploys may happen, how failures roll back.

Loaded from ``policy.yaml`` (path from ``--policy``/``MANGAASSIST_POLICY``, else ``./policy.yaml``,
else the built-in default below, which the repository's ``policy.yaml`` spells out with comments).
A malformed file is a ``PolicyError`` naming the file, the line and the field.

Per environment, optionally refined per pipeline (``pipelines: {CD-03: {prod: {...}}}``):

- ``approvals``: how many distinct people must approve before an approval step passes;
- ``approvers``: who may approve (empty: anyone); ``self_approval``: may the requester approve;
- ``approval_timeout``: after it the waiting run is aborted safely (``30m``, ``24h``, ``2d``);
- ``rollback``: ``automatic`` (a failed run runs its rollback) or ``manual`` (left to an operator);
- ``max_canary_weight_before_approval``: the highest canary weight (%) a pipeline may shift to
  before it must pass an approval step;
- ``approval_overrides``: whether a run may replace its approvals by one confirmation with
  ``--override ENV.approvals --reason TEXT`` (false unless set); the confirmation still comes from
  another person where ``self_approval`` is false: four-eyes is not something the requester alone
  can waive;
- ``identities``: how requesters and approvers must be identified (``engine.people``): any of
  ``flag`` (free text: ``--as``), ``token`` (a signed identity token), ``aws`` (the AWS caller
  identity), ``github`` (a GitHub Actions OIDC token); default: all of them where no approval is
  required, only the verified three where one is, so four-eyes cannot be met by typing names;
- ``gate_overrides``: whether a run may pass a failed quality gate of its pipeline (CD-03's offline
  model gate) with ``--override ENV.gates --reason TEXT``; without it there is no such rule to name;
- ``windows``: if any, deploys only inside one of them (``days``, ``from``, ``to``, ``timezone``);
- ``freezes``: no deploys inside them; weekly (``from: "fri 15:00"``, ``to: "mon 09:00"``) or dated
  (``from: "2025-12-24 00:00"``); every time is read in its ``timezone`` (IANA name) or the file's.

Each window set and freeze is a rule with an id (``prod.windows``, ``prod.freeze.weekend``,
``prod.approvals`` where ``approval_overrides`` is true, and ``dev.gates`` where ``gate_overrides``
is true) that a blocked run names and
that ``--override RULE --reason TEXT`` lets pass.
Deciding only: this module returns data (``Block``, ``EnvironmentPolicy``); ``runs`` acts on it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from mangaassist.core import safeyaml
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.engine import people
from mangaassist.delivery.engine.approvals import identity
from mangaassist.delivery.engine.errors import PolicyError, UnknownEnvironment, UnknownRule
from mangaassist.platform.settings import find_config

DEFAULT_POLICY_NAME = "<built-in default policy>"

DEFAULT_POLICY_YAML = """\
version: 1
timezone: UTC
environments:
  dev:
    approvals: 0
    self_approval: true
    rollback: automatic
    gate_overrides: true
  staging:
    approvals: 0
    self_approval: true
    rollback: automatic
  prod:
    approvals: 1
    approvers: []
    self_approval: false
    approval_timeout: 24h
    rollback: automatic
    max_canary_weight_before_approval: 25
    freezes:
      - name: weekend
        from: "fri 15:00"
        to: "mon 09:00"
pipelines:
  CD-02:
    prod:
      approvals: 2
"""

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ENV_FIELDS = {
    "approvals",
    "approvers",
    "self_approval",
    "approval_timeout",
    "rollback",
    "max_canary_weight_before_approval",
    "gate_overrides",
    "approval_overrides",
    "identities",
    "windows",
    "freezes",
}
MAX_DURATION_S = 365 * 86400.0
"""The longest duration a policy may name (an approval may wait up to a year)."""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class Block:
    """A rule that forbids a run now, and why, in words a user can act on."""

    rule: str
    explanation: str
    until: datetime | None = None
    """When this rule stops blocking (the freeze ends, the next window opens), if computable."""


@dataclass(frozen=True)
class Window:
    """Deploys are allowed on ``days`` between ``start`` and ``end`` (minutes of the day, local time)."""

    name: str
    days: frozenset[int]
    start: int
    end: int
    zone: ZoneInfo

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return local.weekday() in self.days and self.start <= minute < self.end

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{self.name}: {days} {_hhmm(self.start)}-{_hhmm(self.end)} {self.zone.key}"

    def next_open(self, at: datetime) -> datetime | None:
        """The first moment after ``at`` at which this window opens (None: it never does)."""
        local = at.astimezone(self.zone)
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opens = datetime.combine(day, time(self.start // 60, self.start % 60), tzinfo=self.zone)
            if opens > at:
                return opens.astimezone(UTC)
        return None

    def as_spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "days": sorted(self.days),
            "start": self.start,
            "end": self.end,
            "timezone": self.zone.key,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Window:
        return cls(
            name=str(spec["name"]),
            days=frozenset(int(d) for d in spec["days"]),
            start=int(spec["start"]),
            end=int(spec["end"]),
            zone=ZoneInfo(str(spec["timezone"])),
        )


@dataclass(frozen=True)
class Freeze:
    """No deploys inside. Weekly (``weekly`` set: minutes of the week, Monday 00:00 = 0) or dated."""

    name: str
    zone: ZoneInfo
    weekly: tuple[int, int] | None = None
    dated: tuple[datetime, datetime] | None = None

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        if self.weekly is not None:
            start, end = self.weekly
            minute = local.weekday() * 1440 + local.hour * 60 + local.minute
            return start <= minute < end if start <= end else (minute >= start or minute < end)
        assert self.dated is not None
        return self.dated[0] <= at < self.dated[1]

    def describe(self) -> str:
        if self.weekly is not None:
            start, end = self.weekly
            return f"no deploys from {_dow(start)} to {_dow(end)} {self.zone.key}"
        assert self.dated is not None
        begin, finish = (d.strftime("%Y-%m-%d %H:%M") for d in self.dated)
        return f"no deploys from {begin} to {finish} {self.zone.key}"

    def ends_after(self, at: datetime) -> datetime:
        """When the freeze that contains ``at`` ends."""
        if self.weekly is not None:
            local = at.astimezone(self.zone)
            minute = local.weekday() * 1440 + local.hour * 60 + local.minute
            ahead = (self.weekly[1] - minute) % 10080 or 10080
            wall = local.replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=ahead)
            return wall.replace(tzinfo=self.zone).astimezone(UTC)
        assert self.dated is not None
        return self.dated[1].astimezone(UTC)

    def as_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "timezone": self.zone.key}
        if self.weekly is not None:
            spec["weekly"] = list(self.weekly)
        if self.dated is not None:
            spec["dated"] = [d.isoformat() for d in self.dated]
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Freeze:
        weekly = spec.get("weekly")
        dated = spec.get("dated")
        return cls(
            name=str(spec["name"]),
            zone=ZoneInfo(str(spec["timezone"])),
            weekly=(int(weekly[0]), int(weekly[1])) if weekly else None,
            dated=(datetime.fromisoformat(dated[0]), datetime.fromisoformat(dated[1])) if dated else None,
        )


@dataclass(frozen=True)
class EnvironmentPolicy:
    """The policy that applies to one run: its environment's settings refined by its pipeline's."""

    environment: str
    pipeline: str
    approvals: int = 0
    approvers: tuple[str, ...] = ()
    self_approval: bool = True
    approval_timeout_s: float = 86400.0
    rollback: Literal["automatic", "manual"] = "automatic"
    max_canary_weight_before_approval: int = 100
    gate_overrides: bool = False
    """Whether ``ENV.gates`` is a rule ``--override`` may name (a failed pipeline gate let through)."""
    approval_overrides: bool = False
    """Whether ``ENV.approvals`` is a rule ``--override`` may name (a run that skips its approvals):
    never unless the policy says so for the environment."""
    identities: tuple[str, ...] | None = None
    """The identity sources the policy names (None: the default, see ``accepted_identities``)."""
    windows: tuple[Window, ...] = ()
    freezes: tuple[Freeze, ...] = ()
    source: str = DEFAULT_POLICY_NAME

    @property
    def accepted_identities(self) -> tuple[str, ...]:
        """Every source where no approval is required, the verified ones where one is."""
        if self.identities is not None:
            return self.identities
        return people.SOURCES if self.approvals == 0 else people.VERIFIED

    @property
    def approvals_rule(self) -> str:
        return f"{self.environment}.approvals"

    @property
    def gates_rule(self) -> str:
        return f"{self.environment}.gates"

    @property
    def destructive_rule(self) -> str:
        """What CD-02 needs to replace or delete a stateful resource (``--override``, audited)."""
        return f"{self.environment}.destructive"

    @property
    def alerts_rule(self) -> str:
        """What a CD-01 / CD-03 deploy needs to start while a page alert fires for its service."""
        return f"{self.environment}.alerts"

    def rules(self) -> list[str]:
        """Every rule id that ``--override`` may name for this run."""
        names = [self.destructive_rule, self.alerts_rule]
        if self.approval_overrides:
            names.insert(0, self.approvals_rule)
        if self.gate_overrides:
            names.append(self.gates_rule)
        if self.windows:
            names.append(f"{self.environment}.windows")
        names += [f"{self.environment}.freeze.{f.name}" for f in self.freezes]
        return names

    def blocks(self, at: datetime) -> list[Block]:
        """The deploy-time rules that forbid deploying at ``at`` (starting a run, or any of its steps)."""
        found: list[Block] = []
        if self.windows and not any(w.contains(at) for w in self.windows):
            allowed = "; ".join(w.describe() for w in self.windows)
            local = at.astimezone(self.windows[0].zone)
            opens = [t for t in (w.next_open(at) for w in self.windows) if t is not None]
            found.append(
                Block(
                    f"{self.environment}.windows",
                    f"{local:%a %H:%M} {self.windows[0].zone.key} is outside the deploy windows ({allowed}) "
                    f"[{self.source}]",
                    min(opens) if opens else None,
                )
            )
        for freeze in self.freezes:
            if freeze.contains(at):
                local = at.astimezone(freeze.zone)
                found.append(
                    Block(
                        f"{self.environment}.freeze.{freeze.name}",
                        f"{freeze.describe()}; it is {local:%a %H:%M} {freeze.zone.key} [{self.source}]",
                        freeze.ends_after(at),
                    )
                )
        return found

    def clear_at(self, at: datetime, overridden: Iterable[str] = ()) -> datetime | None:
        """The first moment from ``at`` on when no rule (but those ``overridden``) blocks; None if unknown.

        Follows one block's end to the next (a freeze ending outside the windows, a window opening
        inside a dated freeze) a bounded number of times.
        """
        skip = set(overridden)
        moment = at
        for _ in range(32):
            blocking = [b for b in self.blocks(moment) if b.rule not in skip]
            if not blocking:
                return moment
            ends = [b.until for b in blocking]
            if any(end is None for end in ends):
                return None
            moment = max(end for end in ends if end is not None)
        return None

    def check_overrides(self, overrides: dict[str, str]) -> None:
        known = self.rules()
        for rule, reason in overrides.items():
            if rule not in known:
                raise UnknownRule(f"--override {rule}: no such rule for this run (rules: {', '.join(known)})")
            if not reason.strip():
                raise UnknownRule(f"--override {rule} needs --reason TEXT (overrides are audited)")

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "pipeline": self.pipeline,
            "approvals": self.approvals,
            "approvers": list(self.approvers),
            "self_approval": self.self_approval,
            "approval_timeout_s": self.approval_timeout_s,
            "rollback": self.rollback,
            "max_canary_weight_before_approval": self.max_canary_weight_before_approval,
            "gate_overrides": self.gate_overrides,
            "approval_overrides": self.approval_overrides,
            "identities": list(self.accepted_identities),
            "windows": [w.describe() for w in self.windows],
            "freezes": [f"{f.name}: {f.describe()}" for f in self.freezes],
            "window_specs": [w.as_spec() for w in self.windows],
            "freeze_specs": [f.as_spec() for f in self.freezes],
            "source": self.source,
        }

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any], environment: str, pipeline: str) -> EnvironmentPolicy:
        """Rebuild the deploy-time rules from ``as_dict`` output (the snapshot stored with a run).

        Snapshots written before windows and freezes were stored as specs rebuild without them.
        """
        return cls(
            environment=str(snapshot.get("environment", environment)),
            pipeline=str(snapshot.get("pipeline", pipeline)),
            approvals=int(snapshot.get("approvals", 0)),
            approvers=tuple(snapshot.get("approvers") or ()),
            self_approval=bool(snapshot.get("self_approval", True)),
            approval_timeout_s=float(snapshot.get("approval_timeout_s", 86400.0)),
            rollback="manual" if snapshot.get("rollback") == "manual" else "automatic",
            max_canary_weight_before_approval=int(snapshot.get("max_canary_weight_before_approval", 100)),
            gate_overrides=bool(snapshot.get("gate_overrides", False)),
            approval_overrides=bool(snapshot.get("approval_overrides", False)),
            identities=tuple(snapshot["identities"]) if snapshot.get("identities") is not None else None,
            windows=tuple(Window.from_spec(w) for w in snapshot.get("window_specs") or ()),
            freezes=tuple(Freeze.from_spec(f) for f in snapshot.get("freeze_specs") or ()),
            source=str(snapshot.get("source", DEFAULT_POLICY_NAME)),
        )


@dataclass(frozen=True)
class Policy:
    path: str
    environments: dict[str, EnvironmentPolicy]
    pipelines: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Per pipeline, per environment: the fields that replace the environment's (already parsed)."""

    def for_run(self, environment: str, pipeline: str) -> EnvironmentPolicy:
        base = self.environments.get(environment)
        if base is None:
            known = ", ".join(self.environments)
            raise UnknownEnvironment(f"environment {environment!r} is not in {self.path} (known: {known})")
        refined = self.pipelines.get(pipeline, {}).get(environment)
        resolved = replace(base, pipeline=pipeline)
        return replace(resolved, **refined) if refined else resolved


# -- loading -------------------------------------------------------------------------------------


class _Map(dict[str, Any]):
    """A YAML mapping that remembers the line of each key (and its own)."""

    line: int = 0
    lines: dict[str, int]


class _LineLoader(safeyaml.SafeLoader):
    """The hostile-input guards of ``core.safeyaml`` (no aliases, bounded depth), with line numbers."""


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> Any:
    data = _Map()
    data.line = node.start_mark.line + 1
    data.lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
    yield data
    data.update({str(k): v for k, v in loader.construct_mapping(node).items()})


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def default_policy_path() -> Path | None:
    """``MANGAASSIST_POLICY``, else ``policy.yaml`` beside the project's ``mangaassist.toml``
    (``MANGAASSIST_PLATFORM_CONFIG``, or the first in the current directory or its parents), else
    None: the built-in default. Never a file that merely happens to be in the current directory."""
    env = os.environ.get("MANGAASSIST_POLICY")
    if env:
        return Path(env)
    try:
        project = find_config(beside_package=False).parent
    except ConfigError:
        return None
    policy = project / "policy.yaml"
    return policy if policy.is_file() else None


def load_policy(path: Path | str | None = None) -> Policy:
    """Read ``path`` (or the default location); fall back on the built-in default when there is none."""
    chosen = Path(path) if path is not None else default_policy_path()
    if chosen is None:
        return parse_policy(DEFAULT_POLICY_YAML, DEFAULT_POLICY_NAME)
    try:
        data = chosen.read_bytes()
    except OSError as exc:
        raise PolicyError(str(chosen), None, "(file)", f"cannot read it: {exc.strerror or exc}") from None
    try:
        text = safeyaml.text_of(data, str(chosen))
    except ConfigError as exc:  # too large, or not a text file
        raise PolicyError(str(chosen), None, "(file)", str(exc).removeprefix(f"{chosen}: ")) from None
    return parse_policy(text, str(chosen))


def default_policy() -> Policy:
    return parse_policy(DEFAULT_POLICY_YAML, DEFAULT_POLICY_NAME)


def parse_policy(text: str, path: str) -> Policy:
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(path, line, "(syntax)", str(exc.problem or exc)) from None
    except yaml.YAMLError as exc:
        raise PolicyError(path, None, "(syntax)", str(exc)) from None
    parser = _Parser(path)
    return parser.policy(data)


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.zone = ZoneInfo("UTC")

    def fail(self, where: _Map | None, key: str | None, field_path: str, problem: str) -> PolicyError:
        line = None
        if where is not None:
            line = where.lines.get(key, where.line) if key is not None else where.line
        return PolicyError(self.path, line, field_path, problem)

    def mapping(self, value: Any, parent: _Map | None, key: str, field_path: str) -> _Map:
        if not isinstance(value, _Map):
            raise self.fail(parent, key, field_path, f"expected a mapping, got {_kind(value)}")
        return value

    def policy(self, data: Any) -> Policy:
        if data is None:
            raise PolicyError(self.path, 1, "(file)", "the file is empty")
        root = self.mapping(data, None, "", "(top level)")
        unknown = set(root) - {"version", "timezone", "environments", "pipelines"}
        if unknown:
            name = sorted(unknown)[0]
            raise self.fail(
                root, name, name, "unknown field (expected version, timezone, environments, pipelines)"
            )
        if root.get("version", 1) != 1:
            raise self.fail(
                root, "version", "version", f"unsupported version {root['version']!r} (expected 1)"
            )
        if "timezone" in root:
            self.zone = self.timezone(root["timezone"], root, "timezone", "timezone")
        if "environments" not in root:
            raise self.fail(root, None, "environments", "missing (declare at least one environment)")
        envs = self.mapping(root["environments"], root, "environments", "environments")
        if not envs:
            raise self.fail(root, "environments", "environments", "declare at least one environment")
        environments: dict[str, EnvironmentPolicy] = {}
        for env_name, raw in envs.items():
            base = EnvironmentPolicy(environment=str(env_name), pipeline="", source=self.path)
            fields = self.env_fields(raw, envs, str(env_name), f"environments.{env_name}")
            environments[str(env_name)] = replace(base, **fields)
        pipelines: dict[str, dict[str, dict[str, Any]]] = {}
        raw_pipes = root.get("pipelines") or _Map()
        pipes = self.mapping(raw_pipes, root, "pipelines", "pipelines") if raw_pipes else _Map()
        for pipe_name, per_env in pipes.items():
            per_env_map = self.mapping(per_env, pipes, str(pipe_name), f"pipelines.{pipe_name}")
            pipelines[str(pipe_name)] = {}
            for env_name, raw in per_env_map.items():
                where = f"pipelines.{pipe_name}.{env_name}"
                if env_name not in environments:
                    raise self.fail(
                        per_env_map, str(env_name), where, "unknown environment (declare it first)"
                    )
                pipelines[str(pipe_name)][str(env_name)] = self.env_fields(
                    raw, per_env_map, str(env_name), where
                )
        return Policy(path=self.path, environments=environments, pipelines=pipelines)

    def env_fields(self, raw: Any, parent: _Map, key: str, where: str) -> dict[str, Any]:
        if raw is None:
            return {}
        env = self.mapping(raw, parent, key, where)
        out: dict[str, Any] = {}
        for name, value in env.items():
            at = f"{where}.{name}"
            if name not in _ENV_FIELDS:
                raise self.fail(
                    env, name, at, f"unknown field (expected one of {', '.join(sorted(_ENV_FIELDS))})"
                )
            if name == "approvals" or name == "max_canary_weight_before_approval":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise self.fail(env, name, at, f"expected a whole number >= 0, got {value!r}")
                if name == "max_canary_weight_before_approval" and value > 100:
                    raise self.fail(env, name, at, f"a weight is a percentage (0-100), got {value}")
                out[name] = value
            elif name == "approvers":
                if value is None:
                    value = []
                if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                    raise self.fail(env, name, at, "expected a list of names (empty: anyone may approve)")
                out[name] = tuple(value)
            elif name in ("self_approval", "gate_overrides", "approval_overrides"):
                if not isinstance(value, bool):
                    raise self.fail(env, name, at, f"expected true or false, got {value!r}")
                out[name] = value
            elif name == "identities":
                if (
                    not isinstance(value, list)
                    or not value
                    or not all(isinstance(v, str) and v in people.SOURCES for v in value)
                ):
                    known = ", ".join(people.SOURCES)
                    raise self.fail(env, name, at, f"expected a non-empty list of {known}, got {value!r}")
                out[name] = tuple(dict.fromkeys(value))
            elif name == "approval_timeout":
                out["approval_timeout_s"] = self.duration(value, env, name, at)
            elif name == "rollback":
                if value not in ("automatic", "manual"):
                    raise self.fail(env, name, at, f"expected 'automatic' or 'manual', got {value!r}")
                out[name] = value
            elif name == "windows":
                out[name] = tuple(
                    self.window(item, env, name, f"{at}[{i}]")
                    for i, item in enumerate(self.seq(value, env, name, at))
                )
            elif name == "freezes":
                out[name] = tuple(
                    self.freeze(item, env, name, f"{at}[{i}]")
                    for i, item in enumerate(self.seq(value, env, name, at))
                )
        distinct = {identity(a) for a in out.get("approvers", ())}
        if distinct and out.get("approvals", 0) > len(distinct):
            raise self.fail(
                env,
                "approvals",
                f"{where}.approvals",
                f"{out['approvals']} approvals required but only {len(distinct)} distinct approver(s) listed "
                f"({', '.join(out['approvers'])}): no run could ever be approved",
            )
        return out

    def seq(self, value: Any, parent: _Map, key: str, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(parent, key, where, f"expected a list, got {_kind(value)}")
        return value

    def timezone(self, value: Any, parent: _Map, key: str, where: str) -> ZoneInfo:
        try:
            return ZoneInfo(str(value))
        except (ZoneInfoNotFoundError, ValueError):
            raise self.fail(
                parent, key, where, f"unknown time zone {value!r} (use an IANA name like Europe/Paris)"
            ) from None

    def duration(self, value: Any, parent: _Map, key: str, where: str) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            match = _DURATION.match(str(value))
            if not match:
                raise self.fail(
                    parent, key, where, f"expected a duration like 90s, 30m, 24h or 2d, got {value!r}"
                )
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        # a deadline is a datetime: beyond MAX_DURATION_S it overflows (and means "never" anyway)
        if not 0 < seconds <= MAX_DURATION_S:  # also refuses nan
            raise self.fail(
                parent, key, where, f"expected a duration above 0 and at most 365d, got {value!r}"
            )
        return seconds

    def named(
        self, item: Any, parent: _Map, key: str, where: str, allowed: set[str]
    ) -> tuple[_Map, str, ZoneInfo]:
        entry = self.mapping(item, parent, key, where)
        unknown = set(entry) - allowed
        if unknown:
            name = sorted(unknown)[0]
            raise self.fail(
                entry, name, f"{where}.{name}", f"unknown field (expected {', '.join(sorted(allowed))})"
            )
        for required in ("name", "from", "to"):
            if required not in entry:
                raise self.fail(entry, None, f"{where}.{required}", "missing")
        name = entry["name"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise self.fail(
                entry, "name", f"{where}.name", f"expected a word (letters, digits, - or _), got {name!r}"
            )
        zone = (
            self.timezone(entry["timezone"], entry, "timezone", f"{where}.timezone")
            if "timezone" in entry
            else self.zone
        )
        return entry, name, zone

    def window(self, item: Any, parent: _Map, key: str, where: str) -> Window:
        entry, name, zone = self.named(item, parent, key, where, {"name", "days", "from", "to", "timezone"})
        raw_days = entry.get("days", list(DAYS[:5]))
        if not isinstance(raw_days, list) or not all(str(d).lower()[:3] in DAYS for d in raw_days):
            raise self.fail(
                entry, "days", f"{where}.days", f"expected a list of days like [mon, tue], got {raw_days!r}"
            )
        start = self.clock(entry["from"], entry, "from", f"{where}.from")
        end = self.clock(entry["to"], entry, "to", f"{where}.to")
        if end <= start:
            raise self.fail(entry, "to", f"{where}.to", "must be later than 'from' on the same day")
        days = frozenset(DAYS.index(str(d).lower()[:3]) for d in raw_days)
        return Window(name=name, days=days, start=start, end=end, zone=zone)

    def freeze(self, item: Any, parent: _Map, key: str, where: str) -> Freeze:
        entry, name, zone = self.named(item, parent, key, where, {"name", "from", "to", "timezone"})
        start_raw, end_raw = entry["from"], entry["to"]
        if isinstance(start_raw, str) and start_raw[:3].lower() in DAYS:
            start = self.weekly(start_raw, entry, "from", f"{where}.from")
            end = self.weekly(end_raw, entry, "to", f"{where}.to")
            return Freeze(name=name, zone=zone, weekly=(start, end))
        begin = self.moment(start_raw, zone, entry, "from", f"{where}.from")
        finish = self.moment(end_raw, zone, entry, "to", f"{where}.to")
        if finish <= begin:
            raise self.fail(entry, "to", f"{where}.to", "must be later than 'from'")
        return Freeze(name=name, zone=zone, dated=(begin, finish))

    def clock(self, value: Any, parent: _Map, key: str, where: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1440:
            return value  # YAML 1.1 reads an unquoted 15:00 as sexagesimal 900: minutes of the day
        match = _CLOCK.match(str(value).strip())
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise self.fail(parent, key, where, f'expected a time of day like "15:00", got {value!r}')
        return int(match.group(1)) * 60 + int(match.group(2))

    def weekly(self, value: Any, parent: _Map, key: str, where: str) -> int:
        text = str(value).strip().split()
        if len(text) != 2 or text[0][:3].lower() not in DAYS:
            raise self.fail(parent, key, where, f'expected a day and a time like "fri 15:00", got {value!r}')
        return DAYS.index(text[0][:3].lower()) * 1440 + self.clock(text[1], parent, key, where)

    def moment(self, value: Any, zone: ZoneInfo, parent: _Map, key: str, where: str) -> datetime:
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value).strip())
            except ValueError:
                raise self.fail(
                    parent,
                    key,
                    where,
                    f'expected "fri 15:00" or a date like "2025-12-24 00:00", got {value!r}',
                ) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _dow(minute_of_week: int) -> str:
    return f"{DAYS[minute_of_week // 1440].capitalize()} {_hhmm(minute_of_week % 1440)}"
