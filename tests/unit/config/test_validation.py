# ruff: noqa: E501
"""The validation gate: each kind of invalid content is rejected with its file, line and field."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from mangaassist.chatbot.config import load_config
from mangaassist.chatbot.config_client import ActiveConfig
from mangaassist.core.flags import on_new_version
from mangaassist.delivery.config_profiles import Problem, load_eval_suites, validate_all, validate_profile
from mangaassist.delivery.pipelines.config import plan_percentages

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    return tmp_path / "config"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_the_committed_profiles_and_suites_are_valid() -> None:
    assert all(not found for found in validate_all(ROOT / "config").values())
    suites, problems = load_eval_suites(ROOT / "config")
    assert suites and not problems


def test_schema_error_names_file_line_and_field(cfg: Path) -> None:
    _edit(cfg / "runtime.yaml", "top_k: 3", "top_k: 30")
    p = _only(validate_profile(cfg, "runtime"))
    assert p.file.endswith("runtime.yaml")
    assert p.field == "retrieval.top_k"
    assert p.line == _line_of(cfg / "runtime.yaml", "top_k: 30")
    assert "maximum" in p.message or "30" in p.message


def test_threshold_out_of_range_and_inconsistent_thresholds(cfg: Path) -> None:
    _edit(cfg / "runtime.yaml", "chunk_overlap: 30", "chunk_overlap: 200")
    p = _only(validate_profile(cfg, "runtime"))
    assert (p.field, p.line) == ("retrieval.chunk_overlap", _line_of(cfg / "runtime.yaml", "chunk_overlap"))
    assert "below retrieval.chunk_words" in p.message


def test_yaml_syntax_error_is_located(cfg: Path) -> None:
    (cfg / "guardrails.yaml").write_text("max_answer_chars: 100\npii_patterns: [\n  - x: {\n")
    p = _only(validate_profile(cfg, "guardrails"))
    assert p.file.endswith("guardrails.yaml") and p.line >= 2
    assert "YAML" in p.message


def test_template_variable_the_chatbot_does_not_provide(cfg: Path) -> None:
    _edit(
        cfg / "prompts.yaml",
        'text: "{answer}"\n    variables: [answer]',
        'text: "{answer} {mood}"\n    variables: [answer, mood]',
    )
    p = _only(validate_profile(cfg, "prompts"))
    assert p.field == "templates.recommendation.variables[1]"
    assert "'mood' is not provided by the chatbot" in p.message


def test_undeclared_and_unused_variables_and_the_required_one(cfg: Path) -> None:
    path = cfg / "prompts.yaml"
    _edit(path, 'text: "{answer}"\n    variables: [answer]', 'text: "{lead}"\n    variables: [answer]')
    messages = {(p.field, p.message) for p in validate_profile(cfg, "prompts")}
    assert (
        "templates.recommendation.variables[0]",
        "'answer' is declared but the text never uses it",
    ) in messages
    assert ("templates.recommendation.text", "uses {lead}, which is not declared in variables") in messages
    assert ("templates.recommendation.text", "must use the required variable {answer}") in messages


def test_rendered_prompt_over_the_token_budget(cfg: Path) -> None:
    _edit(cfg / "prompts.yaml", "token_budget: 1024", "token_budget: 100")
    problems = validate_profile(cfg, "prompts")
    assert problems and all("over token_budget 100" in p.message for p in problems)
    assert problems[0].line == _line_of(cfg / "prompts.yaml", "{answer}\\n\\nSources")


def test_regular_expression_that_does_not_compile(cfg: Path) -> None:
    _edit(cfg / "guardrails.yaml", "regex: '\\+?\\d[\\d ()-]{8,}\\d'", "regex: '(unclosed'")
    p = _only(validate_profile(cfg, "guardrails"))
    assert p.field == "pii_patterns[0].regex"
    assert p.line == _line_of(cfg / "guardrails.yaml", "(unclosed")


def test_a_pattern_that_needs_backtracking_is_refused_with_the_reason(cfg: Path) -> None:
    _edit(cfg / "guardrails.yaml", "regex: '\\+?\\d[\\d ()-]{8,}\\d'", "regex: '(?<=call me )\\d+'")
    p = _only(validate_profile(cfg, "guardrails"))
    assert p.field == "pii_patterns[0].regex"
    assert "lookaround and backreferences are not accepted" in p.message


def test_a_catastrophic_pattern_runs_in_linear_time_on_every_message(cfg: Path) -> None:
    """``(a+)+$`` takes Python's ``re`` minutes on 40 characters; compiled with RE2 it answers at once."""
    _edit(cfg / "guardrails.yaml", "regex: '\\+?\\d[\\d ()-]{8,}\\d'", "regex: '(a+)+$'")
    assert validate_profile(cfg, "guardrails") == []
    active = ActiveConfig(load_config(ROOT / "config" / "runtime.yaml"), {}, guardrails=yaml.safe_load(
        (cfg / "guardrails.yaml").read_text()
    ))  # fmt: skip
    started = time.perf_counter()
    screened, blocked = active.screen("a" * 50_000 + "!")
    assert time.perf_counter() - started < 0.5
    assert blocked is None and screened.endswith("!")
    assert active.screen("aaaa")[0] == "[redacted]"


def test_flag_the_code_reads_must_exist_and_operators_must_be_known(cfg: Path) -> None:
    _edit(cfg / "flags.yaml", "- name: handoff-offer", "- name: handoff-offer-v2")
    p = _only(validate_profile(cfg, "flags"))
    assert "reads flag 'handoff-offer'" in p.message and p.field == "features"
    _edit(
        cfg / "flags.yaml",
        "parameters: {rollout",
        "constraints: [{contextName: userId, operator: STR_SOUNDS_LIKE, values: [a]}]\n        parameters: {rollout",
    )
    fields = {p.field for p in validate_profile(cfg, "flags")}
    assert "features[0].strategies[0].constraints[0].operator" in fields


def test_eval_check_without_a_threshold_is_rejected(cfg: Path) -> None:
    _edit(cfg / "evals" / "prompts.yaml", "- {type: cites_source, threshold: 1.0}", "- {type: cites_source}")
    suites, problems = load_eval_suites(cfg)
    assert not suites
    p = problems[0]
    assert "'threshold' is a required property" in p.message
    assert p.field == "cases[0].checks[1]"
    assert p.line == _line_of(cfg / "evals" / "prompts.yaml", "{type: cites_source}")


def test_rollout_plans() -> None:
    assert plan_percentages("linear", 20) == [20, 40, 60, 80, 100]
    assert plan_percentages("exponential", 10) == [10, 20, 40, 80, 100]
    assert plan_percentages("all-at-once", 20) == [100]


def test_bucketing_is_monotone_and_close_to_the_target() -> None:
    ids = [f"s-{i}" for i in range(20_000)]
    at = {pct: {s for s in ids if on_new_version("prompts", s, pct)} for pct in (5, 20, 50, 100)}
    assert at[5] <= at[20] <= at[50] <= at[100] == set(ids)
    assert abs(len(at[20]) / len(ids) - 0.20) < 0.01
