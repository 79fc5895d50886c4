"""Typed step outputs: a dataclass a step returns and later steps read back, instead of dict keys.

The engine persists a step's output as JSON (``Outcome.done(output)``) and hands it to later steps
(``StepContext.outputs``), also after a resume in another process. A pipeline declares what a step
passes on as a frozen dataclass deriving from ``StepOutput``: the step returns ``out.as_output()``,
a later step reads ``Out.of(ctx, "step")``; a missing or mistyped field is a ``ValueError`` naming
the step and the field, not a ``KeyError`` deep in a runbook.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

from mangaassist.delivery.engine.runs import StepContext


@dataclasses.dataclass(frozen=True)
class StepOutput:
    """Base of a step's typed output (subclasses are frozen dataclasses of JSON values)."""

    def as_output(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_output(cls, data: dict[str, Any], step: str = "?") -> Self:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = data[f.name]
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                have = ", ".join(sorted(data))
                raise ValueError(f"step {step}: its output has no {f.name!r} (has: {have})")
        return cls(**values)

    @classmethod
    def of(cls, ctx: StepContext, step: str) -> Self:
        """The output ``step`` recorded in this run."""
        if step not in ctx.outputs:
            raise ValueError(f"step {step} has no output in run {ctx.run.id} (it has not run yet)")
        return cls.from_output(ctx.outputs[step], step)
