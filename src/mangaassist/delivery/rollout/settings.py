"""Deployment settings of an environment: ``[environments.ENV.deploy]`` in ``mangaassist.toml``.

Read by the CD-01 pipeline (``delivery.pipelines.app``) when a run is built, and by the CLI to show
what a deploy will do. Every key is optional; the defaults are what a small team wants in ``dev``:

=============================  ======================================================================
``test_command``               the test gate, run in the source tree (default: the unit suite)
``latency_budget_ms``          p99 the candidate must meet under pinned load (default 300)
``load_rps`` / ``load_s``      that load: requests per second and duration (default 20 / 5)
``warmup_s``                   pinned load before it that is not measured (default 1)
``canary_baseline``            a canary starts a fresh copy of the stable release with the
                               candidate's share and judges the candidate against it (default true)
``pinned_error_rate``          the error rate acceptable under that load: more failures than a
                               one-sided binomial test at ``alpha`` 0.001 allows fail the gate before
                               any user reaches the candidate (default 0.01)
``strategy``                   the default strategy (``canary``)
``strategies``                 strategies allowed here (default: all three in ``dev``, no
                               ``all-at-once`` elsewhere)
``steps``                      canary weights, % (default ``[5, 25, 50, 100]``)
``min_requests``               requests each revision must serve in a step before it can PASS (30)
``judge_min_requests``         the judge's "too little data" floor per revision (10)
``max_step_s``                 how long INCONCLUSIVE may extend a step (default 300)
``grow_after_s``               a canary step still INCONCLUSIVE after this long at its share grows
                               it (also while it waits for an approval): twice the step's weight,
                               then the next step's, never above the policy's
                               ``max_canary_weight_before_approval`` (default 20; 0: never)
``on_inconclusive``            after ``max_step_s``: ``approval`` (default: hold and wait for a
                               person) or ``rollback``
``rollback_window_s``          blue-green: how long the old revision stays warm (default 600)
``drain_idle_s`` / ``drain_max_s``  promotion: retire the old revision once it served nothing for
                               ``drain_idle_s`` (default 2), at the latest after ``drain_max_s`` (60)
``alpha``                      the judge's false-rollback budget per deployment (default 0.01)
``scan_limits``                on AWS, the most vulnerability findings of each severity the release's
                               container image (``ECS_IMAGE``) may have: a table ``{CRITICAL = 0,
                               HIGH = 0}`` (the default), merged over the defaults per severity (a
                               file or a run may raise a limit, not remove one); an unknown
                               severity is an error naming it
``scan_poll_s`` / ``scan_timeout_s``  how often a scan still running is looked at (default 10) and
                               for how long at most (default 600)
``service``                    the service deployed (default ``chatbot``)
=============================  ======================================================================

``run_settings(params)`` is what a pipeline reads for a run: the ``mangaassist.toml`` found from here
(``MANGAASSIST_PLATFORM_CONFIG``), the run's ``environment``, the run's params over the file.
Run params of the same names override the file (tests and ``--steps`` use that). CD-03 reads the
same keys for the intent model's canary from ``[environments.ENV.model_deploy]`` (``table=``), with
``service = "intent-model"``.
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.analysis.gates import DEFAULT_SCAN_LIMITS, scan_limits
from mangaassist.delivery.rollout.strategies import OnInconclusive, RolloutPlan, Strategy, plan_for
from mangaassist.platform.settings import find_config

DEFAULT_TEST_COMMAND = "{python} -m pytest tests/unit -q -x -p no:cacheprovider"


@dataclass(frozen=True)
class DeploySettings:
    environment: str
    service: str = "chatbot"
    test_command: str = DEFAULT_TEST_COMMAND
    latency_budget_ms: float = 300.0
    load_rps: float = 20.0
    load_s: float = 5.0
    warmup_s: float = 1.0
    pinned_error_rate: float = 0.01
    canary_baseline: bool = True
    strategy: Strategy = Strategy.CANARY
    strategies: tuple[Strategy, ...] = (Strategy.CANARY, Strategy.BLUE_GREEN)
    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    min_requests: int = 30
    judge_min_requests: int = 10
    max_step_s: float = 300.0
    grow_after_s: float = 20.0
    on_inconclusive: OnInconclusive = OnInconclusive.APPROVAL
    rollback_window_s: float = 600.0
    drain_idle_s: float = 2.0
    drain_max_s: float = 60.0
    alpha: float = 0.01
    scan_limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SCAN_LIMITS))
    scan_poll_s: float = 10.0
    scan_timeout_s: float = 600.0

    def plan(self, strategy: str | Strategy | None = None, *, only_allowed: bool = True) -> RolloutPlan:
        """The phases of ``strategy`` (default this environment's) with these settings.

        ``only_allowed``: refuse a strategy the environment does not allow (``strategies``); the
        model pipeline, which always runs a canary, does not ask."""
        try:
            chosen = Strategy(strategy or self.strategy.value)
        except ValueError:
            raise ConfigError(
                f"strategy {strategy!r}: expected one of {', '.join(s.value for s in Strategy)}"
            ) from None
        if only_allowed and chosen not in self.strategies:
            raise ConfigError(
                f"strategy {chosen.value} is not allowed in {self.environment} "
                f"(allowed: {', '.join(s.value for s in self.strategies)}; "
                f"see [environments.{self.environment}.deploy] strategies)"
            )
        return plan_for(
            chosen,
            steps=self.steps,
            min_requests=self.min_requests,
            max_step_s=self.max_step_s,
            on_inconclusive=self.on_inconclusive,
            rollback_window_s=self.rollback_window_s,
            grow_after_s=self.grow_after_s,
        )

    def test_argv(self, python: str) -> list[str]:
        return shlex.split(self.test_command.replace("{python}", python))

    def as_params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [v.value if isinstance(v, Strategy) else v for v in value]
            elif isinstance(value, OnInconclusive | Strategy):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out


def _default(environment: str) -> DeploySettings:
    allowed: tuple[Strategy, ...] = (Strategy.CANARY, Strategy.BLUE_GREEN)
    if environment == "dev":  # all-at-once skips the judge: allowed where nobody depends on it
        allowed = (*allowed, Strategy.ALL_AT_ONCE)
    return DeploySettings(environment, strategies=allowed)


def _coerce(name: str, value: Any, where: str) -> Any:
    try:
        if name in ("test_command", "service"):
            if not isinstance(value, str) or not value.strip():
                raise ValueError("a non-empty string")
            return value
        if name == "strategy":
            return Strategy(value)
        if name == "strategies":
            return tuple(Strategy(v) for v in value)
        if name == "on_inconclusive":
            chosen = OnInconclusive(value)
            if chosen is OnInconclusive.PROCEED:  # a bake's rule, never a deploy's
                raise ValueError("rollback or approval")
            return chosen
        if name == "steps":
            steps = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
            if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
                raise ValueError("increasing percentages within (0, 100]")
            if steps[-1] != 100:
                steps = (*steps, 100.0)
            return steps
        if name in ("min_requests", "judge_min_requests"):
            number = int(value)
            if number < 1:
                raise ValueError("a whole number >= 1")
            return number
        if name == "canary_baseline":
            if not isinstance(value, bool):
                raise ValueError("a boolean (true or false)")
            return value
        if name == "scan_limits":
            return scan_limits(value, f"{where}.{name}")
        if name == "scan_poll_s":
            seconds = float(value)
            if not seconds > 0:
                raise ValueError("a number > 0")
            return seconds
        if name == "pinned_error_rate":
            share = float(value)
            if not 0 <= share < 1:
                raise ValueError("a number within [0, 1)")
            return share
        if name == "alpha":
            alpha = float(value)
            if not 0 < alpha < 1:
                raise ValueError("a number within (0, 1)")
            return alpha
        seconds = float(value)
        if seconds < 0:
            raise ValueError("a number >= 0")
        return seconds
    except (TypeError, ValueError) as exc:
        expected = str(exc) if str(exc).startswith(("a ", "increasing")) else "a valid value"
        raise ConfigError(f"{where}.{name}: expected {expected}, got {value!r}") from None


def deploy_settings(
    environment: str,
    config: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    table_name: str = "deploy",
) -> DeploySettings:
    """The environment's deploy settings: defaults, then the file's ``[environments.ENV.<table_name>]``,
    then ``overrides``."""
    settings = _default(environment)
    known = {f.name for f in fields(DeploySettings)} - {"environment"}
    table: dict[str, Any] = {}
    if config is not None and config.is_file():
        try:
            data = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{config}: {exc}") from None
        table = dict(data.get("environments", {}).get(environment, {}).get(table_name, {}))
    where = f"{config.name if config else 'mangaassist.toml'}: environments.{environment}.{table_name}"
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown setting (known: {', '.join(sorted(known))})")
    values = {k: _coerce(k, v, where) for k, v in table.items()}
    limits = {**settings.scan_limits, **values.get("scan_limits", {})}
    for key, value in (overrides or {}).items():
        if key in known and value is not None:
            values[key] = _coerce(key, value, "params")
    # per severity, over the defaults and the file: a limit is raised for one run, never dropped
    values["scan_limits"] = {**limits, **values.get("scan_limits", {})}
    return replace(settings, **values)


def run_settings(params: Mapping[str, Any], *, table_name: str = "deploy") -> DeploySettings:
    """The deploy settings of a run: its ``environment``'s table (if a ``mangaassist.toml`` is found),
    then the run's params."""
    environment = str(params.get("environment") or "dev")
    try:
        config: Path | None = find_config()
    except ConfigError:
        config = None
    return deploy_settings(environment, config, params, table_name=table_name)
