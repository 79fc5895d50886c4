"""CD-03's offline gate of the intent model: its limits (``ml/intent.yaml``) and the registry.

The decision is ``delivery.analysis.gates.model_metrics_gate`` (pure, over numbers already
measured: ``chatbot.intent_training`` measures them on ``ml/intents/eval.jsonl`` and the registry
stores them with each version), which returns a ``GateResult``: PASS or FAIL with one reason per
failed check, and the side-by-side table (metric, champion, candidate, limit, ok) in its report's
``rows``. This module parses the limits (``GateConfig``) and gates a registered version against
the ``champion`` (``gate_version``). Callers: ``mangaassist model gate`` / ``model promote`` and
the model pipeline.

The limits live in the ``gate`` section of ``ml/intent.yaml``, one entry per metric::

    gate:
      metrics:
        macro_f1:             {min: 0.88, max_drop: 0.01}
        recall_human_handoff: {min: 0.90, max_drop: 0.02}
        ece:                  {max: 0.15, max_rise: 0.03}
        p99_latency_ms:       {max: 50}
        size_mb:              {max: 0.5}

* ``min`` / ``max``: absolute limits every candidate must meet, champion or not.
* ``max_drop`` (metrics where higher is better) / ``max_rise`` (lower is better): how far the
  candidate may fall behind the champion. Checked only when there is a champion and it recorded
  the metric (a champion registered before a metric existed does not block; the row says so).

Why not MLflow's ``MetricThreshold`` + ``validate_evaluation_results``: see
``delivery.analysis.gates`` (a tolerated drop cannot be expressed with it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mangaassist.core import safeyaml
from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.core.intents import INTENTS
from mangaassist.delivery.analysis.gates import GateResult, MetricLimit, model_metrics_gate
from mangaassist.platform.model_registry import ModelRegistry, ModelVersion

HIGHER_IS_BETTER: dict[str, bool] = {
    "macro_f1": True,
    "accuracy": True,
    "ece": False,
    "p99_latency_ms": False,
    "p50_latency_ms": False,
    "size_mb": False,
    **{f"recall_{intent}": True for intent in INTENTS},
    **{f"precision_{intent}": True for intent in INTENTS},
    **{f"f1_{intent}": True for intent in INTENTS},
}
"""Every metric the gate may check, and which way is better (the names the training records)."""

_LIMIT_KEYS = ("min", "max", "max_drop", "max_rise")


@dataclass(frozen=True)
class GateConfig:
    """The ``gate`` section of ``ml/intent.yaml``: limits per metric, in the file's order."""

    limits: tuple[MetricLimit, ...]

    @classmethod
    def from_mapping(
        cls, raw: Any, source: str = "gate", known: Mapping[str, bool] = HIGHER_IS_BETTER
    ) -> GateConfig:
        """Validate ``raw`` (the parsed ``gate`` section); errors name the field at fault. ``known``:
        the metrics it may name and which way is better (default the intent model's)."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: expected a mapping with 'metrics'")
        unknown = set(raw) - {"metrics"}
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        metrics = raw.get("metrics")
        if not isinstance(metrics, Mapping) or not metrics:
            raise ConfigError(f"{source}.metrics: expected a non-empty mapping of metric -> limits")
        limits = []
        for metric, spec in metrics.items():
            where = f"{source}.metrics.{metric}"
            if metric not in known:
                raise ConfigError(f"{where}: unknown metric; known: {', '.join(sorted(known))}")
            if not isinstance(spec, Mapping) or not spec:
                raise ConfigError(f"{where}: expected a mapping with any of {', '.join(_LIMIT_KEYS)}")
            values: dict[str, float] = {}
            for key, value in spec.items():
                if key not in _LIMIT_KEYS:
                    raise ConfigError(
                        f"{where}.{key}: unknown limit; expected one of {', '.join(_LIMIT_KEYS)}"
                    )
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
                if key in ("max_drop", "max_rise") and value < 0:
                    raise ConfigError(f"{where}.{key}: must be >= 0, got {value}")
                values[key] = float(value)
            if known[metric] and "max_rise" in values:
                raise ConfigError(f"{where}.max_rise: {metric} is better when higher; use max_drop")
            if not known[metric] and "max_drop" in values:
                raise ConfigError(f"{where}.max_drop: {metric} is better when lower; use max_rise")
            if "min" in values and "max" in values and values["min"] > values["max"]:
                raise ConfigError(f"{where}: min {values['min']} is above max {values['max']}")
            limits.append(MetricLimit(metric=str(metric), **values))
        return cls(tuple(limits))

    @classmethod
    def load(cls, path: Path) -> GateConfig:
        """The ``gate`` section of a model config file (``ml/intent.yaml``)."""
        raw = safeyaml.load_file(path)
        if not isinstance(raw, Mapping) or "gate" not in raw:
            raise ConfigError(f"{path}: no 'gate' section")
        return cls.from_mapping(raw["gate"], f"{path}: gate")


def gate_version(
    registry: ModelRegistry, name: str, config: GateConfig, version: str | None = None
) -> GateResult:
    """Gate a registered version (default: the one ``candidate`` points at) against ``champion``."""
    if version is None:
        found = registry.alias(name, "candidate")
        if found is None:
            raise NotFoundError(f"model {name}: no version has the alias 'candidate'; train one first")
        candidate: ModelVersion = found
    else:
        candidate = registry.get(name, version)
    champion = registry.alias(name, "champion")
    return model_metrics_gate(
        candidate.metrics,
        champion.metrics if champion is not None else None,
        config.limits,
        candidate_version=candidate.version,
        champion_version=champion.version if champion is not None else None,
    )
