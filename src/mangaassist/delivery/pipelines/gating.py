"""A gate's ``GateResult`` (``delivery.analysis.gates``) as the ``Outcome`` of the step that ran it."""

from __future__ import annotations

from typing import Any

from mangaassist.delivery.analysis.gates import GateResult
from mangaassist.delivery.engine.runs import Outcome


def gate_outcome(
    result: GateResult,
    *,
    failure: str,
    output: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
    abort: bool = False,
) -> Outcome:
    """Done with PASS, or failed with ``failure`` (the run's reason) and FAIL (ending the run as
    ABORTED if ``abort``); either way with the result's numbers and, unless ``detail`` is given,
    ``result.as_dict()`` as the step's detail. ``output`` is what later steps read (on PASS)."""
    recorded = result.as_dict() if detail is None else detail
    if result.passed:
        return Outcome.done(output, detail=recorded, verdict=result.verdict, numbers=result.numbers())
    return Outcome.failed(
        failure, detail=recorded, verdict=result.verdict, numbers=result.numbers(), abort=abort
    )
