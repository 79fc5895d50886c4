"""The evaluation gate of the intent model (CD-03): may this candidate replace the champion?

A pure decision over numbers already measured (``chatbot.intent_training`` measures them on
``ml/intents/eval.jsonl`` and the registry stores them with each version). ``gate(candidate,
champion, config)`` returns a ``GateReport``: PASS or FAIL with one reason per failed check, and
one row per metric for the side-by-side table (metric, champion, candidate, limit, ok). Callers:
``mangaassist model gate`` / ``model promote`` and the model pipeline.

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

Why not MLflow's ``MetricThreshold`` + ``validate_evaluation_results``: its absolute ``threshold``
is exactly ``min`` / ``max`` here (``tests/unit/model`` checks that the two agree), but its
comparison with the baseline, ``min_absolute_change``, must be positive and means "better than
the baseline by at least this much". A tolerated *drop* (the candidate may be 0.01 worse, which is
noise on 267 examples) cannot be expressed with it. So the rule is written here, in plain code:
``candidate >= champion - max_drop`` (higher is better), ``candidate <= champion + max_rise``
(lower is better). Values are compared after rounding to 4 decimals, as they are recorded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.core.intents import INTENTS
from mangaassist.core.verdict import Verdict
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
_EPS = 1e-9


@dataclass(frozen=True)
class MetricLimit:
    """The limits on one metric; ``None`` means "not checked"."""

    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    """Higher-is-better metrics: the candidate may be at most this much below the champion."""
    max_rise: float | None = None
    """Lower-is-better metrics: the candidate may be at most this much above the champion."""

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    def describe(self, with_champion: bool) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if with_champion and self.max_drop is not None:
            parts.append(f">= champion - {self.max_drop:g}")
        if with_champion and self.max_rise is not None:
            parts.append(f"<= champion + {self.max_rise:g}")
        return ", ".join(parts) or "recorded only"


@dataclass(frozen=True)
class GateConfig:
    """The ``gate`` section of ``ml/intent.yaml``: limits per metric, in the file's order."""

    limits: tuple[MetricLimit, ...]

    @classmethod
    def from_mapping(cls, raw: Any, source: str = "gate") -> GateConfig:
        """Validate ``raw`` (the parsed ``gate`` section); errors name the field at fault."""
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
            if metric not in HIGHER_IS_BETTER:
                raise ConfigError(f"{where}: unknown metric; known: {', '.join(sorted(HIGHER_IS_BETTER))}")
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
            if HIGHER_IS_BETTER[metric] and "max_rise" in values:
                raise ConfigError(f"{where}.max_rise: {metric} is better when higher; use max_drop")
            if not HIGHER_IS_BETTER[metric] and "max_drop" in values:
                raise ConfigError(f"{where}.max_drop: {metric} is better when lower; use max_rise")
            if "min" in values and "max" in values and values["min"] > values["max"]:
                raise ConfigError(f"{where}: min {values['min']} is above max {values['max']}")
            limits.append(MetricLimit(metric=str(metric), **values))
        return cls(tuple(limits))

    @classmethod
    def load(cls, path: Path) -> GateConfig:
        """The ``gate`` section of a model config file (``ml/intent.yaml``)."""
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(raw, Mapping) or "gate" not in raw:
            raise ConfigError(f"{path}: no 'gate' section")
        return cls.from_mapping(raw["gate"], f"{path}: gate")


@dataclass(frozen=True)
class GateRow:
    """One line of the side-by-side table."""

    metric: str
    candidate: float | None
    champion: float | None
    limit: str
    ok: bool
    note: str = ""


@dataclass(frozen=True)
class GateReport:
    verdict: Verdict
    """PASS: every check held; FAIL: at least one did not (``reasons`` says which)."""
    rows: tuple[GateRow, ...]
    reasons: tuple[str, ...]
    candidate_version: str | None = None
    champion_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "candidate_version": self.candidate_version,
            "champion_version": self.champion_version,
            "reasons": list(self.reasons),
            "rows": [asdict(r) for r in self.rows],
            **self.extra,
        }


def gate(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    config: GateConfig,
    *,
    candidate_version: str | None = None,
    champion_version: str | None = None,
) -> GateReport:
    """Candidate metrics against the absolute limits and, when there is one, the champion's."""
    rows: list[GateRow] = []
    reasons: list[str] = []
    for limit in config.limits:
        name = limit.metric
        value = _rounded(candidate.get(name))
        base = _rounded(champion.get(name)) if champion is not None else None
        compare = champion is not None and base is not None
        failed: list[str] = []
        note = ""
        if value is None:
            failed.append(f"{name}: not measured for the candidate")
        else:
            if limit.min is not None and value < limit.min - _EPS:
                failed.append(f"{name} {value:g} is below the minimum {limit.min:g}")
            if limit.max is not None and value > limit.max + _EPS:
                failed.append(f"{name} {value:g} is above the maximum {limit.max:g}")
            if compare and base is not None:
                if limit.max_drop is not None and value < base - limit.max_drop - _EPS:
                    failed.append(
                        f"{name} {value:g} is more than {limit.max_drop:g} below the champion's {base:g}"
                    )
                if limit.max_rise is not None and value > base + limit.max_rise + _EPS:
                    failed.append(
                        f"{name} {value:g} is more than {limit.max_rise:g} above the champion's {base:g}"
                    )
        if (
            champion is not None
            and base is None
            and (limit.max_drop is not None or limit.max_rise is not None)
        ):
            note = "champion did not record it: not compared"
        reasons.extend(failed)
        rows.append(
            GateRow(
                metric=name,
                candidate=value,
                champion=base,
                limit=limit.describe(with_champion=compare),
                ok=not failed,
                note=note or "; ".join(failed),
            )
        )
    return GateReport(
        verdict=Verdict.FAIL if reasons else Verdict.PASS,
        rows=tuple(rows),
        reasons=tuple(reasons),
        candidate_version=candidate_version,
        champion_version=champion_version,
    )


def gate_version(
    registry: ModelRegistry, name: str, config: GateConfig, version: str | None = None
) -> GateReport:
    """Gate a registered version (default: the one ``candidate`` points at) against ``champion``."""
    if version is None:
        found = registry.alias(name, "candidate")
        if found is None:
            raise NotFoundError(f"model {name}: no version has the alias 'candidate'; train one first")
        candidate: ModelVersion = found
    else:
        candidate = registry.get(name, version)
    champion = registry.alias(name, "champion")
    return gate(
        candidate.metrics,
        champion.metrics if champion is not None else None,
        config,
        candidate_version=candidate.version,
        champion_version=champion.version if champion is not None else None,
    )


def _rounded(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 4)
