import random
from pathlib import Path

import pytest

from mangaassist.chatbot.config import ChatbotConfig, load_config
from mangaassist.chatbot.faults import FaultPlan
from mangaassist.core.errors import ConfigError


def test_fault_plan_parses_combined_spec() -> None:
    plan = FaultPlan.parse("error_rate=0.3, latency_ms=400")
    assert plan == FaultPlan(error_rate=0.3, latency_ms=400.0)
    assert plan.active
    assert not FaultPlan.parse("").active


def test_fault_error_rate_is_honoured() -> None:
    rng = random.Random(7)
    plan = FaultPlan.parse("error_rate=0.3")
    failures = sum(plan.should_fail(rng) for _ in range(10_000))
    assert 2700 < failures < 3300
    assert not any(FaultPlan().should_fail(rng) for _ in range(1000))


def test_a_users_scoped_fault_spares_pinned_requests() -> None:
    """``scope=users``: the gates' pinned requests never meet the fault, weighted traffic does."""
    plan = FaultPlan.parse("error_rate=0.2,scope=users")
    assert plan == FaultPlan(error_rate=0.2, users_only=True)
    assert plan.applies(pinned=False) and not plan.applies(pinned=True)
    everywhere = FaultPlan.parse("latency_ms=50,scope=all")
    assert everywhere.applies(pinned=True) and everywhere.applies(pinned=False)
    assert not FaultPlan().applies(pinned=False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("error_rate=1.5", "within 0..1"),
        ("latency_ms=abc", "must be a number"),
        ("explode=1", "is not 'error_rate"),
        ("error_rate", "is not 'error_rate"),
        ("error_rate=0.2,scope=canary", "scope must be 'all' or 'users'"),
    ],
)
def test_bad_fault_specs_are_explained(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FaultPlan.parse(spec)


def test_repo_config_is_valid_and_versioned() -> None:
    cfg = load_config(Path(__file__).parents[2] / "config" / "chatbot.yaml")
    assert cfg.generator.kind == "local"
    assert cfg.version.startswith("cfg-")
    assert cfg.version == ChatbotConfig.model_validate(cfg.model_dump()).version


def test_config_version_changes_with_content() -> None:
    a = ChatbotConfig()
    b = ChatbotConfig.model_validate({"retrieval": {"top_k": 5}})
    assert a.version != b.version


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("retrieval:\n  top_k: 0\n", "retrieval.top_k"),
        ("generator:\n  kind: gpt5\n", "generator.kind"),
        ("retrieval:\n  topk: 3\n", "retrieval.topk"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("retrieval: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "chatbot.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)
