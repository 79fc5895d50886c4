"""Retrieval on knowledge/evals/golden.jsonl with the real embedder: the fused ranking (BM25 +
cosine, reciprocal rank fusion) finds the expected page at rank 1 more often than the plain hybrid
ranking, and loses nothing at rank 5."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.chatbot.answer_quality import retrieval_eval

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def test_fused_retrieval_beats_the_hybrid_ranking(state_home: Path) -> None:
    result = retrieval_eval(ROOT, ROOT / "knowledge" / "evals" / "golden.jsonl", "minilm", home=state_home)
    hybrid, fused = result["hybrid"], result["fused"]
    assert fused["questions"] >= 150
    assert fused["recall_at_1"] >= hybrid["recall_at_1"] + 0.02, result
    assert fused["mrr"] >= hybrid["mrr"], result
    assert fused["recall_at_5"] >= hybrid["recall_at_5"] - 0.01, result
    assert fused["recall_at_1"] >= 0.88 and fused["recall_at_5"] >= 0.95, result
    assert fused["ms_per_query"] < 5.0
    missed = {m["question"]: m["got"] for m in result["misses_at_1"]}
    assert "how long does standard shipping take within the US?" not in missed  # the example
    torn = missed.get("my volume arrived with a torn cover, what can I do?", ["damaged-or-misprinted-items"])
    assert "damaged-or-misprinted-items" in torn[:2]  # not always first yet (box-set damage competes)
