"""The golden set (ml/answers) on the real chatbot (MiniLM): the whole set in process against the
recorded baseline, and a sample over real HTTP with signed-in customers (``mangaassist serve``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.chatbot.answer_quality import (
    BASELINE_FILE,
    Baseline,
    Grounding,
    HttpTarget,
    InProcessTarget,
    Report,
    load_golden,
    run,
    sample,
)
from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.delivery.pipelines.answers import DEFAULT_TOLERANCE, answer_gate

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
GOLDEN = ROOT / "ml" / "answers"


def _failures(report: Report, limit: int = 25) -> str:
    return "\n".join(
        f"{f.case}#{f.turn} {f.message!r}: intent {f.intent} (want {f.expected_intent}), "
        f"missing {list(f.missing_facts)}, sources {list(f.sources)}, fabricated {list(f.fabrications)}"
        for f in report.failures()[:limit]
    )


def _baseline(case_ids: list[str]) -> dict[str, float]:
    recorded = Baseline.load(GOLDEN / BASELINE_FILE)
    assert recorded is not None, "record one: mangaassist quality baseline"
    on = recorded.on(case_ids)
    assert on is not None, "the golden set changed since the baseline: re-record it"
    return on


def test_the_whole_golden_set_is_not_below_the_baseline(
    state_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANGAASSIST_ROOT", str(ROOT))
    monkeypatch.setenv("MANGAASSIST_HOME", str(state_home))
    monkeypatch.setenv("MANGAASSIST_EMBEDDER", "minilm")
    for var in (
        "MANGAASSIST_CONFIG_URL",
        "MANGAASSIST_INTENT_URL",
        "MANGAASSIST_MODEL_PACKAGE",
        "MANGAASSIST_FAULT",
    ):
        monkeypatch.delenv(var, raising=False)
    cases = load_golden(GOLDEN)
    target = InProcessTarget.load()
    try:
        report = run(cases, target, Grounding.load(ROOT))
    finally:
        target.close()
    assert report.turns >= 400 and report.errors == 0
    assert report.fabrications == 0, _failures(report)
    result = answer_gate(report, None, _baseline([c.id for c in cases]), DEFAULT_TOLERANCE)
    assert result.passed, "\n".join(result.reasons) + "\n" + _failures(report)


def test_a_sample_over_http_with_signed_in_customers(chatbot: ChatbotProcess, state_home: Path) -> None:
    cases = load_golden(GOLDEN)
    picked = sample(cases, 35, seed=7)
    orders = [c for c in cases if c.customer is not None and c not in picked][:8]
    chosen = picked + orders
    assert any(c.customer for c in chosen)
    target = HttpTarget(chatbot.url, home=state_home)
    try:
        report = run(chosen, target, Grounding.load(ROOT), workers=4)
    finally:
        target.close()
    assert report.errors == 0, [r.error for r in report.results if r.error][:3]
    assert report.fabrications == 0, _failures(report)
    # the customer's token reaches the order lookup: an owned order is found, by id
    owned = [r for r in report.results if r.sources and any(s.startswith("MA-") for s in r.sources)]
    assert owned, _failures(report)
    result = answer_gate(report, None, _baseline([c.id for c in chosen]), tolerance=0.05)
    assert result.passed, "\n".join(result.reasons) + "\n" + _failures(report)
