"""The answer-quality gate step of CD-01, CD-03 and CD-06: a sample of the golden set
(``ml/answers``, ``chatbot.answer_quality``) answered by the candidate and by what is live, judged
by ``answer_gate``.

* CD-01 (``http_gate``): over HTTP through the router, pinned to the candidate revision and to the
  stable one, customers signed with the platform home's development key (the real thing).
* CD-03 and CD-06 (``child_gate``): in a child process (``python -m
  mangaassist.chatbot.answer_quality compare``) that loads the chatbot once and answers with each
  arm's intent model package (CD-03) or config profiles (CD-06): the deploy never loads it.

Run params, the same in the three pipelines (``GateSettings``): ``answers_sample`` (30 questions,
plus a tenth as many conversations; 0 skips the step), ``answers_seed``, ``answers_tolerance``
(0.02), ``answers_alpha`` (0.05, the sign test's), ``answers_golden`` (the set's folder) and
``answers_baseline`` (false: also hold the candidate to the recorded ``baseline.json`` on the same
items).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mangaassist.chatbot.answer_quality import (
    BASELINE_FILE,
    DEFAULT_TOLERANCE,
    Baseline,
    Case,
    Grounding,
    HttpTarget,
    Report,
    default_dir,
    golden_digest,
    load_golden,
    report_from_dict,
    run,
    sample,
)
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.analysis.gates import Comparison, GateResult, binomial_tail, check
from mangaassist.platform.compute import Pin

DEFAULT_ALPHA = 0.05
"""False-alarm probability of the paired sign test that decides whether a drop against live is real."""


def paired(candidate: Report, live: Report, attr: str) -> tuple[int, int]:
    """(losses, wins) of the candidate against live on the turns both answered: turns live got
    right and the candidate wrong, and the other way round (``attr``: ``intent_ok`` or ``correct``)."""
    reference = {(r.case, r.turn): bool(getattr(r, attr)) for r in live.results}
    losses = wins = 0
    for r in candidate.results:
        theirs = reference.get((r.case, r.turn))
        if theirs is None:
            continue
        mine = bool(getattr(r, attr))
        losses += theirs and not mine
        wins += mine and not theirs
    return losses, wins


def answer_gate(
    candidate: Report,
    live: Report | None = None,
    baseline: Mapping[str, float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    candidate_version: str | None = None,
    baseline_version: str | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> GateResult:
    """The candidate's answers against live's on the same items (and the recorded ``baseline`` on
    them, when given).

    * **intent accuracy, correctness**: FAIL when the candidate's rate is more than ``tolerance``
      below the reference (the lower of live's and the baseline's: a change is judged by what it
      does, not by what live already lost) **and**, against live, the drop is more than noise: a
      one-sided sign test on the paired turns (the candidate wrong where live was right, against
      the other way round) with p < ``alpha``. A sample of 30 questions moves by a turn or two
      between two equally good versions; a drop the test cannot tell from that is recorded as a
      failed check that does not block. Against the baseline alone (no live run), one turn of
      slack is added to ``tolerance`` instead.
    * **fabrications**: no more fabricated prices, stock counts or dates than the reference (the
      higher of the two; 0 when neither fabricates, which is the target; 0 without a reference).
    * **errors**: no more failed requests than live.

    Without any reference the rates are recorded, not judged."""
    refs: dict[str, list[float]] = {"intent_accuracy": [], "correctness": [], "fabrications": []}
    for ref in (
        {
            "intent_accuracy": live.intent_accuracy,
            "correctness": live.correctness,
            "fabrications": float(live.fabrications),
        }
        if live is not None
        else None,
        baseline,
    ):
        if ref is not None:
            for key in refs:
                refs[key].append(float(ref[key]))
    checks = []
    for key, attr, label, value in (
        ("intent_accuracy", "intent_ok", "answers: intent accuracy", candidate.intent_accuracy),
        ("correctness", "correct", "answers: correctness", candidate.correctness),
    ):
        bar = min(refs[key]) if refs[key] else None
        if bar is None:
            checks.append(
                check(label, round(value, 4), Comparison.AT_LEAST, None, rule="no reference", blocking=False)
            )
            continue
        slack = tolerance if live is not None else tolerance + 1 / max(1, candidate.turns)
        rule = f">= reference - {slack:.3g}"
        significant = True
        reason = ""
        if live is not None:
            losses, wins = paired(candidate, live, attr)
            p_value = binomial_tail(losses, losses + wins, 0.5) if losses > wins else 1.0
            significant = p_value < alpha
            rule += f", unless not significant (sign test p >= {alpha:g})"
            reason = (
                f"{label} {value:.4g} < {bar - slack:.4g} (reference {bar:.4g} - {slack:.3g}); "
                f"worse on {losses} turns, better on {wins} (sign test p = {p_value:.3g})"
            )
        checks.append(
            check(
                label,
                round(value, 4),
                Comparison.AT_LEAST,
                round(bar - slack, 4),
                baseline=round(bar, 4),
                rule=rule,
                reason=reason,
                blocking=significant,
            )
        )
    fab_ref = max(refs["fabrications"]) if refs["fabrications"] else 0.0
    checks.append(
        check(
            "answers: fabrications",
            float(candidate.fabrications),
            Comparison.AT_MOST,
            fab_ref,
            baseline=fab_ref,
            rule=f"<= {fab_ref:g} (prices, stock and dates not in the cited data)",
        )
    )
    checks.append(
        check(
            "answers: errors",
            float(candidate.errors),
            Comparison.AT_MOST,
            float(live.errors) if live is not None else 0.0,
            rule="no more failed requests than the reference",
        )
    )
    measured = {
        "intent_accuracy": round(candidate.intent_accuracy, 4),
        "correctness": round(candidate.correctness, 4),
        "fabrications": float(candidate.fabrications),
        "turns": float(candidate.turns),
    }
    if live is not None:
        measured.update(
            live_intent_accuracy=round(live.intent_accuracy, 4),
            live_correctness=round(live.correctness, 4),
            live_fabrications=float(live.fabrications),
        )
    report = {
        "candidate": candidate.as_dict(failures=10),
        "live": live.summary() if live is not None else None,
        "baseline": dict(baseline) if baseline is not None else None,
    }
    return GateResult(tuple(checks), measured, report, candidate_version, baseline_version)


@dataclass(frozen=True)
class GateSettings:
    """The answer-quality step's run params (the same names in CD-01, CD-03 and CD-06)."""

    sample: int = 30
    """``answers_sample``: questions sent to each arm (plus a tenth as many conversations, at least
    2), spread over the intents; 0 skips the step. CI runs the whole set."""
    seed: int = 0
    """``answers_seed``: which sample."""
    tolerance: float = DEFAULT_TOLERANCE
    """``answers_tolerance``: how far below the reference the candidate's rates may fall."""
    golden: str = ""
    """``answers_golden``: the golden set's folder (default ``ROOT/ml/answers``)."""
    alpha: float = DEFAULT_ALPHA
    """``answers_alpha``: the sign test's false-alarm probability (a drop against live must be
    this unlikely under "equally good" to block)."""
    baseline: bool = False
    """``answers_baseline``: also hold the candidate to the recorded ``baseline.json`` on the same
    items (only meaningful where the chatbot runs the embedder it was recorded with)."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GateSettings:
        try:
            made = cls(
                sample=int(params.get("answers_sample", cls.sample)),
                seed=int(params.get("answers_seed", cls.seed)),
                tolerance=float(params.get("answers_tolerance", cls.tolerance)),
                golden=str(params.get("answers_golden") or ""),
                alpha=float(params.get("answers_alpha", cls.alpha)),
                baseline=bool(params.get("answers_baseline", cls.baseline)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"answers_* params: {exc}") from None
        if made.sample < 0 or not 0 <= made.tolerance <= 1 or not 0 < made.alpha < 1:
            raise ConfigError(
                f"answers_sample {made.sample}, answers_tolerance {made.tolerance:g}, answers_alpha "
                f"{made.alpha:g}: expected a sample >= 0 (0 skips the step), a tolerance in [0, 1] "
                "and an alpha in (0, 1)"
            )
        return made

    def directory(self) -> Path:
        return Path(self.golden) if self.golden else default_dir()

    def cases(self) -> list[Case]:
        return sample(load_golden(self.directory()), self.sample, self.seed)

    def reference(self, cases: Sequence[Case]) -> dict[str, float] | None:
        if not self.baseline:
            return None
        recorded = Baseline.load(self.directory() / BASELINE_FILE)
        return recorded.on(c.id for c in cases) if recorded is not None else None


def http_gate(
    settings: GateSettings,
    candidate_pin: Pin,
    live_pin: Pin | None,
    home: Path,
    *,
    candidate: str,
    live: str | None,
    root: Path | None = None,
) -> GateResult:
    """CD-01: the sample sent over HTTP to the candidate revision and to the live one (each at its
    pin: ``Compute.pin``'s URL, headers and auth; customers signed with ``home``'s development key), then
    ``answer_gate``."""
    from mangaassist.platform.settings import find_root

    cases = settings.cases()
    grounding = Grounding.load(root or find_root())
    digest = golden_digest(settings.directory())
    reports: dict[str, Report] = {}
    for arm, pin in (("candidate", candidate_pin), ("live", live_pin)):
        if pin is None:
            continue
        target = HttpTarget(
            pin.url,
            headers=pin.headers,
            auth=pin.auth,
            home=home,
            name=f"{arm} {candidate if arm == 'candidate' else live}",
        )
        try:
            reports[arm] = run(cases, target, grounding, workers=4, golden=digest)
        finally:
            target.close()
    return answer_gate(
        reports["candidate"],
        reports.get("live"),
        settings.reference(cases),
        settings.tolerance,
        candidate_version=candidate,
        baseline_version=live,
        alpha=settings.alpha,
    )


def child_gate(
    settings: GateSettings,
    request: Mapping[str, Any],
    *,
    candidate: str,
    live: str | None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 900,
) -> GateResult:
    """CD-03 and CD-06: ``compare`` in a child process (the deploy never loads the chatbot), then
    ``answer_gate`` on its two reports. ``request`` holds the arms (``live``/``candidate`` config
    contents, or ``intent_packages``); the sample comes from ``settings``."""
    body = {**request, "golden": str(settings.directory()), "sample": settings.sample, "seed": settings.seed}
    child_env = dict(os.environ if env is None else env)
    for var in (
        "MANGAASSIST_CONFIG_URL",
        "MANGAASSIST_CONFIG_DIR",
        "MANGAASSIST_INTENT_URL",
        "MANGAASSIST_MODEL_PACKAGE",
    ):
        child_env.pop(var, None)
    with tempfile.TemporaryDirectory(prefix="mangaassist-answers-") as tmp:
        path = Path(tmp) / "request.json"
        path.write_text(json.dumps(body), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "mangaassist.chatbot.answer_quality", "compare", str(path)],
            capture_output=True,
            text=True,
            env=child_env,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise ConfigError(f"the answer-quality run failed: {done.stderr.strip()[-800:]}")
    result = json.loads(done.stdout)
    live_report = report_from_dict(result["live"]) if result.get("live") else None
    ids = result["cases"]
    return answer_gate(
        report_from_dict(result["candidate"]),
        live_report,
        settings.reference([c for c in load_golden(settings.directory()) if c.id in set(ids)]),
        settings.tolerance,
        candidate_version=candidate,
        baseline_version=live,
        alpha=settings.alpha,
    )
