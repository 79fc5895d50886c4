"""Verdicts of gates and judges, ordered so that the worst one wins."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class Verdict(Enum):
    """The outcome of comparing a candidate with what it would replace.

    Members are ranked: PASS < INCONCLUSIVE < FAIL. Combining several verdicts keeps the worst.
    """

    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    """Enough evidence that the candidate is no worse than the baseline."""
    INCONCLUSIVE = "INCONCLUSIVE"
    """Not enough evidence either way yet; wait for more data, never roll back for this alone."""
    FAIL = "FAIL"
    """Enough evidence that the candidate is worse; act on it now."""

    @property
    def rank(self) -> int:
        return _RANK[self]

    @staticmethod
    def worst(verdicts: Iterable[Verdict]) -> Verdict:
        """The worst of ``verdicts``; PASS for none (nothing objected)."""
        return max(verdicts, key=lambda v: v.rank, default=Verdict.PASS)


_RANK = {Verdict.PASS: 0, Verdict.INCONCLUSIVE: 1, Verdict.FAIL: 2}
