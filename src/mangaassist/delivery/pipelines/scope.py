"""``RunScope``: what the steps of one pipeline run share in memory.

A pipeline's ``build(params)`` makes one and binds its steps to it (``scope.bind(step)``): the
environment's ``Platform`` (every resource from ``platform.factory``, each client made once) and
the rollout phases' ``PhaseMemory``. Its lifetime is the pipeline object's: one CLI invocation or
one ``runs resume``. Nothing of it is a module global, so nothing leaks from one run, test or
environment into the next; a run resumed in another process starts with a new scope and re-reads
what it needs from the run's persisted outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.engine.runs import Outcome, StepContext
from mangaassist.delivery.rollout.phases import PhaseMemory
from mangaassist.platform.compute import Compute
from mangaassist.platform.factory import Platform, platform_for
from mangaassist.platform.metrics import Metrics
from mangaassist.platform.settings import PlatformSettings

T = TypeVar("T")
StepFn = Callable[..., Outcome]
"""A step written against a scope: ``step(scope, ctx, *args)``."""


class RunScope:
    """The environment's platform (made on first use) and the phases' memory of one run."""

    def __init__(self, environment: str | None = None) -> None:
        self.environment = environment
        """The run's environment: the engine's record of it (``ctx.run.environment``) once a step ran."""
        self.phases = PhaseMemory()
        self._platform: Platform | None = None
        self._kept: dict[str, Any] = {}

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = platform_for(self.environment or "dev")
        return self._platform

    @property
    def settings(self) -> PlatformSettings:
        return self.platform.settings

    def compute(self) -> Compute:
        return self.platform.compute()

    def metrics(self) -> Metrics:
        return self.platform.metrics()

    def keep(self, key: str, make: Callable[[], T]) -> T:
        """``make()`` once per run (a client a step polls with), kept until ``close``."""
        if key not in self._kept:
            self._kept[key] = make()
        return cast(T, self._kept[key])

    def bind(self, step: StepFn, *args: Any) -> Callable[[StepContext], Outcome]:
        """``step`` as the engine calls it, with the context only: ``step(self, ctx, *args)``."""
        return functools.partial(self._call, step, args)

    def _call(self, step: StepFn, args: tuple[Any, ...], ctx: StepContext) -> Outcome:
        if self._platform is None:
            self.environment = ctx.run.environment
        elif self.environment != ctx.run.environment:
            raise ConfigError(
                f"run {ctx.run.id} is in {ctx.run.environment}, its pipeline's scope in {self.environment}"
            )
        return step(self, ctx, *args)

    def close(self) -> None:
        for kept in self._kept.values():
            close = getattr(kept, "close", None)
            if callable(close):
                close()
        self._kept.clear()
        if self._platform is not None:
            self._platform.close()
            self._platform = None
