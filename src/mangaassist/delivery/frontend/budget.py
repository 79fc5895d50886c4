"""The widget's size budget and CD-05's ``gates`` step as one ``GateResult``.

Sizes are gzip level 9 of each ``.js`` and ``.css`` file of the build, as ``frontend/scripts/size.mjs``
measures them (``npm run size``):

- ``loader.js`` <= 10 240 bytes: every page view fetches it uncached (``no-cache``);
- all JS and CSS together <= 153 600 bytes: everything a first chat costs.

Over a budget, the check's reason names the file(s) and their sizes. ``frontend_gate`` adds the
typecheck (``npm run typecheck``) and the unit tests (``npm test``, vitest) as checks of the same
gate, so the step fails with every reason at once.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mangaassist.delivery.analysis.gates import Comparison, GateCheck, GateResult, check

LOADER = "loader.js"
LOADER_BUDGET_BYTES = 10 * 1024
TOTAL_BUDGET_BYTES = 150 * 1024
MEASURED_SUFFIXES = (".js", ".css")


def gzip_size(data: bytes) -> int:
    """Bytes of ``data`` gzipped at level 9 (what a CDN sends, give or take the header)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


@dataclass(frozen=True)
class BudgetReport:
    """The gzip sizes of a build's JS and CSS files, and the budgets they are held against."""

    sizes: dict[str, int]
    """Release path -> gzip bytes, for every ``.js`` and ``.css`` file, sorted by path."""
    loader_budget: int = LOADER_BUDGET_BYTES
    total_budget: int = TOTAL_BUDGET_BYTES

    @property
    def loader(self) -> int | None:
        return self.sizes.get(LOADER)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def largest(self, n: int = 3) -> list[tuple[str, int]]:
        return sorted(self.sizes.items(), key=lambda item: (-item[1], item[0]))[:n]

    def problems(self) -> list[str]:
        """Why the build is over budget, naming files and sizes (empty: within budget)."""
        out = []
        if self.loader is None:
            out.append(f"{LOADER} is missing: it is what the page includes")
        elif self.loader > self.loader_budget:
            out.append(f"{LOADER} is {self.loader:,} bytes gzip, over its budget of {self.loader_budget:,}")
        if self.total > self.total_budget:
            largest = ", ".join(f"{path} {size:,} bytes" for path, size in self.largest())
            out.append(
                f"all JS and CSS is {self.total:,} bytes gzip, over its budget of {self.total_budget:,} "
                f"(largest: {largest})"
            )
        return out

    def checks(self) -> list[GateCheck]:
        loader_problem = next((p for p in self.problems() if p.startswith(LOADER)), "")
        total_problem = next((p for p in self.problems() if p.startswith("all JS")), "")
        return [
            check(
                f"{LOADER} gzip bytes",
                None if self.loader is None else float(self.loader),
                Comparison.AT_MOST,
                float(self.loader_budget),
                reason=loader_problem,
            ),
            check(
                "all JS and CSS gzip bytes",
                float(self.total),
                Comparison.AT_MOST,
                float(self.total_budget),
                reason=total_problem,
            ),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "loader_gzip_bytes": self.loader,
            "loader_budget_bytes": self.loader_budget,
            "total_gzip_bytes": self.total,
            "total_budget_bytes": self.total_budget,
            "files": self.sizes,
            "ok": not self.problems(),
        }


def measure(
    files: Mapping[str, bytes],
    *,
    loader_budget: int = LOADER_BUDGET_BYTES,
    total_budget: int = TOTAL_BUDGET_BYTES,
) -> BudgetReport:
    """The budget report of a build's files (path -> bytes)."""
    sizes = {
        path: gzip_size(bytes(files[path])) for path in sorted(files) if path.endswith(MEASURED_SUFFIXES)
    }
    return BudgetReport(sizes, loader_budget, total_budget)


@dataclass(frozen=True)
class CommandCheck:
    """One npm command of the gate: whether it passed, what it counted, its output's tail."""

    name: str
    ok: bool
    seconds: float
    output: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "counts": self.counts,
            "output": self.output[-2000:],
        }


_TS_ERROR = re.compile(r"error TS\d+")


def typecheck_errors(output: str) -> int:
    """How many ``error TSnnnn`` lines ``tsc`` printed."""
    return len(_TS_ERROR.findall(output))


def vitest_counts(report: Path) -> dict[str, Any]:
    """From vitest's JSON report: tests, passed, failed, and the names of the failed tests."""
    try:
        doc = json.loads(report.read_text())
    except (OSError, ValueError):
        return {}
    failed_names = [
        str(a.get("fullName") or a.get("title"))
        for suite in doc.get("testResults", [])
        for a in suite.get("assertionResults", [])
        if a.get("status") == "failed"
    ]
    return {
        "tests": int(doc.get("numTotalTests", 0)),
        "passed": int(doc.get("numPassedTests", 0)),
        "failed": int(doc.get("numFailedTests", 0)),
        "failed_names": failed_names,
    }


def frontend_gate(budget: BudgetReport, typecheck: CommandCheck, tests: CommandCheck) -> GateResult:
    """CD-05's gates as one result: the typecheck, the unit tests and the two size budgets."""
    errors = typecheck.counts.get("errors", 0 if typecheck.ok else 1)
    failed = tests.counts.get("failed", 0 if tests.ok else 1)
    total_tests = tests.counts.get("tests", 0)
    checks = (
        check(
            "typecheck errors",
            float(errors),
            Comparison.AT_MOST,
            0.0,
            requires=typecheck.ok,
            reason=f"npm run typecheck failed ({errors} error(s)): {typecheck.output[-600:]}",
        ),
        check(
            "vitest failed tests",
            float(failed),
            Comparison.AT_MOST,
            0.0,
            requires=tests.ok and total_tests > 0,
            reason=(
                f"npm test failed ({failed} of {total_tests} tests): {tests.output[-600:]}"
                if total_tests
                else f"npm test ran no test: {tests.output[-600:]}"
            ),
        ),
        *budget.checks(),
    )
    measured = {
        "loader_gzip_bytes": float(budget.loader or 0),
        "total_gzip_bytes": float(budget.total),
        "typecheck_errors": float(errors),
        "tests": float(total_tests),
        "tests_failed": float(failed),
        "typecheck_s": round(typecheck.seconds, 3),
        "tests_s": round(tests.seconds, 3),
    }
    return GateResult(
        checks,
        measured=measured,
        report={"budget": budget.as_dict(), "typecheck": typecheck.as_dict(), "tests": tests.as_dict()},
    )
