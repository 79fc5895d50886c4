"""The delivery engine: durable runs of named steps, locks, approvals, audit and release policy.

Public surface (everything a pipeline or the CLI needs):

- ``Pipeline``, ``Step``, ``Outcome``, ``StepContext``, ``approval_step``: what a pipeline is made of;
- ``Executor``: the one thing that starts, drives, resumes and aborts runs;
- ``StateStore``: where it all persists (SQLite by default, PostgreSQL by URL);
- ``RunState``, ``StepStatus``, ``StepOutcome``, ``WaitFor``: documented states;
- ``load_policy`` / ``EnvironmentPolicy``: release policy as code;
- ``audit``, ``approvals``, ``locks``: the modules behind the CLI commands of the same names.

See docs/engine.md.
"""

from mangaassist.delivery.engine.clock import Clock, FakeClock, SystemClock
from mangaassist.delivery.engine.model import (
    RunRecord,
    RunState,
    StepOutcome,
    StepRecord,
    StepStatus,
    WaitFor,
)
from mangaassist.delivery.engine.policy import EnvironmentPolicy, Policy, load_policy
from mangaassist.delivery.engine.runs import (
    Executor,
    Outcome,
    Pipeline,
    ProgressEvent,
    Step,
    StepContext,
    approval_step,
)
from mangaassist.delivery.engine.state import StateStore

__all__ = [
    "Clock",
    "EnvironmentPolicy",
    "Executor",
    "FakeClock",
    "Outcome",
    "Pipeline",
    "Policy",
    "ProgressEvent",
    "RunRecord",
    "RunState",
    "StateStore",
    "Step",
    "StepContext",
    "StepOutcome",
    "StepRecord",
    "StepStatus",
    "SystemClock",
    "WaitFor",
    "approval_step",
    "load_policy",
]
