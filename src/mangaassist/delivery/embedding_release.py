"""Releasing a new embedding model (CD-04): the candidate against the live model on retrieval.

``mangaassist kb compare-embedders --candidate KIND`` embeds the knowledge base's chunks and the
golden questions (``knowledge/evals/golden.jsonl``) with the live model and with the candidate
(``chatbot.answer_quality.retrieval_eval``: the chatbot's own chunks, the shared embedding cache,
so the candidate's vectors are ready for the full build that follows), ranks them the ways the
chatbot and the index gate do (``fused``: BM25 + vector, what the chatbot answers from; ``hybrid``:
cosine plus keyword boost, the index store's ranking) and holds the candidate's recall@1,
recall@5, MRR and nDCG@10 against the live model's with CD-03's metric gate
(``delivery.analysis.gates.model_metrics_gate``: ``min`` and ``max_drop`` per metric). The limits
live in ``ml/embeddings.yaml``::

    golden: knowledge/evals/golden.jsonl
    gate:
      metrics:
        fused.recall_at_1:  {max_drop: 0.02}
        hybrid.mrr:         {min: 0.80, max_drop: 0.02}

Metric names are ``RANKING.METRIC`` (``RANKINGS`` x ``METRICS``); validation errors name the field.
This module only decides, over numbers already measured: the command measures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mangaassist.core import safeyaml
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.analysis.gates import GateResult, model_metrics_gate
from mangaassist.delivery.model_gate import GateConfig

RANKINGS = ("fused", "hybrid")
METRICS = ("recall_at_1", "recall_at_5", "mrr", "ndcg_at_10")
KNOWN: dict[str, bool] = {f"{r}.{m}": True for r in RANKINGS for m in METRICS}
"""Every metric the gate may name; all are better when higher."""

CONFIG = Path("ml") / "embeddings.yaml"
"""The gate's limits, relative to the repository root."""


@dataclass(frozen=True)
class ReleaseConfig:
    """``ml/embeddings.yaml``: the golden questions and the gate's limits."""

    golden: Path
    gate: GateConfig

    @classmethod
    def load(cls, path: Path, root: Path) -> ReleaseConfig:
        raw = safeyaml.load_file(path)
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: expected a mapping with 'golden' and 'gate'")
        unknown = set(raw) - {"golden", "gate"}
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        golden = raw.get("golden", "knowledge/evals/golden.jsonl")
        if not isinstance(golden, str) or not golden:
            raise ConfigError(f"{path}: golden: expected a path relative to the repository root")
        if "gate" not in raw:
            raise ConfigError(f"{path}: no 'gate' section")
        return cls(root / golden, GateConfig.from_mapping(raw["gate"], f"{path}: gate", KNOWN))


def flatten(report: Mapping[str, Any]) -> dict[str, float]:
    """``retrieval_eval``'s report as ``RANKING.METRIC`` -> value."""
    return {f"{r}.{m}": float(report[r][m]) for r in RANKINGS for m in METRICS if r in report}


def compare(live: Mapping[str, Any], candidate: Mapping[str, Any], config: ReleaseConfig) -> GateResult:
    """The candidate's retrieval against the live model's (``retrieval_eval`` reports)."""
    return model_metrics_gate(
        flatten(candidate),
        flatten(live),
        config.gate.limits,
        candidate_version=str(candidate.get("embedder")),
        champion_version=str(live.get("embedder")),
        baseline="live model",
    )
