"""The widget's size budget and CD-05's gate result (``delivery/frontend/budget.py``)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from mangaassist.delivery.frontend.budget import (
    LOADER_BUDGET_BYTES,
    TOTAL_BUDGET_BYTES,
    CommandCheck,
    frontend_gate,
    gzip_size,
    measure,
    typecheck_errors,
    vitest_counts,
)


def test_gzip_size_is_the_length_of_the_level_9_gzip() -> None:
    data = b"export const a = 1;\n" * 200
    assert gzip_size(data) == len(gzip.compress(data, compresslevel=9, mtime=0))
    assert gzip_size(data) < len(data) // 10


def test_only_js_and_css_are_measured_and_the_total_is_their_sum() -> None:
    report = measure(
        {
            "index.html": b"<p>" * 5000,
            "manifest.json": b"{}",
            "loader.js": b"console.log(1)",
            "assets/widget-a1.js": b"let x = 1;" * 100,
            "assets/widget-a1.css": b".a{color:red}" * 50,
        }
    )
    assert sorted(report.sizes) == ["assets/widget-a1.css", "assets/widget-a1.js", "loader.js"]
    assert report.loader == gzip_size(b"console.log(1)")
    assert report.total == sum(report.sizes.values())
    assert report.problems() == [] and report.as_dict()["ok"] is True
    assert all(c.passed for c in report.checks())


def test_a_loader_over_its_budget_fails_naming_the_file_and_its_size() -> None:
    big = os.urandom(LOADER_BUDGET_BYTES + 500)  # random bytes do not compress
    report = measure({"loader.js": big, "index.html": b"x"})
    size = gzip_size(big)
    assert size > LOADER_BUDGET_BYTES
    (problem,) = report.problems()
    assert problem == f"loader.js is {size:,} bytes gzip, over its budget of {LOADER_BUDGET_BYTES:,}"
    loader_check, total_check = report.checks()
    assert not loader_check.passed and loader_check.reason == problem and total_check.passed


def test_a_widget_over_the_total_budget_fails_naming_its_largest_files() -> None:
    chunk = os.urandom(TOTAL_BUDGET_BYTES)
    report = measure(
        {"loader.js": b"import('./assets/x.js')", "assets/react-ff.js": chunk, "assets/w.css": b"a{}"}
    )
    (problem,) = report.problems()
    assert problem.startswith(f"all JS and CSS is {report.total:,} bytes gzip, over its budget of 153,600")
    assert f"largest: assets/react-ff.js {gzip_size(chunk):,} bytes" in problem
    assert not report.checks()[1].passed


def test_a_build_without_loader_is_over_no_budget_but_fails_the_check() -> None:
    report = measure({"assets/a.js": b"1"})
    assert report.loader is None and report.problems() == [
        "loader.js is missing: it is what the page includes"
    ]
    assert not report.checks()[0].passed


def _ok(name: str, counts: dict[str, int]) -> CommandCheck:
    return CommandCheck(name, True, 1.5, "fine", counts)


def test_the_gate_passes_with_every_check_and_records_the_numbers() -> None:
    result = frontend_gate(
        measure({"loader.js": b"x"}), _ok("typecheck", {"errors": 0}), _ok("test", {"tests": 28, "failed": 0})
    )
    assert result.passed and result.reasons == ()
    numbers = result.numbers()
    assert numbers["tests"] == 28 and numbers["tests_failed"] == 0 and numbers["loader_gzip_bytes"] > 0
    assert [c.name for c in result.checks] == [
        "typecheck errors",
        "vitest failed tests",
        "loader.js gzip bytes",
        "all JS and CSS gzip bytes",
    ]


def test_the_gate_fails_with_every_reason_at_once() -> None:
    typecheck = CommandCheck("typecheck", False, 3.0, "src/a.ts(1,1): error TS2322: nope", {"errors": 1})
    tests = CommandCheck("test", False, 5.0, "1 failed", {"tests": 28, "failed": 1})
    result = frontend_gate(measure({"loader.js": os.urandom(LOADER_BUDGET_BYTES * 2)}), typecheck, tests)
    assert not result.passed
    reasons = result.reasons
    assert reasons[0].startswith("npm run typecheck failed (1 error(s))") and "TS2322" in reasons[0]
    assert reasons[1].startswith("npm test failed (1 of 28 tests)")
    assert reasons[2].startswith("loader.js is ")


def test_a_test_run_that_ran_no_test_fails() -> None:
    result = frontend_gate(measure({"loader.js": b"x"}), _ok("typecheck", {"errors": 0}), _ok("test", {}))
    assert not result.passed and result.reasons[0].startswith("npm test ran no test")


def test_typecheck_errors_and_vitest_counts_are_read_from_the_tools_output(tmp_path: Path) -> None:
    assert typecheck_errors("a.ts(1,2): error TS2322: x\nb.ts(3,4): error TS7006: y\n") == 2
    assert typecheck_errors("") == 0
    report = tmp_path / "vitest.json"
    report.write_text(
        json.dumps(
            {
                "numTotalTests": 3,
                "numPassedTests": 2,
                "numFailedTests": 1,
                "testResults": [
                    {
                        "assertionResults": [
                            {"status": "passed", "fullName": "a"},
                            {"status": "failed", "fullName": "b c"},
                        ]
                    }
                ],
            }
        )
    )
    assert vitest_counts(report) == {"tests": 3, "passed": 2, "failed": 1, "failed_names": ["b c"]}
    assert vitest_counts(tmp_path / "missing.json") == {}
