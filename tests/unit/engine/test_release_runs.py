"""What a release runs of each pipeline (``registry.release_runs``): CD-06 once per profile whose
content changed, the rest once per environment."""

from __future__ import annotations

from mangaassist.core.configspec import PROFILES
from mangaassist.delivery.pipelines.registry import release_runs


def test_cd06_runs_once_per_changed_profile_in_profile_order() -> None:
    runs = release_runs(
        "CD-06",
        "staging",
        [
            "config/flags.yaml",
            "config/schemas/prompts.schema.json",
            "config/prompts.yaml",
            "config/chatbot.yaml",
        ],
    )
    assert runs == [
        {"environment": "staging", "profile": "prompts"},
        {"environment": "staging", "profile": "flags"},
    ]


def test_a_changed_evaluation_suite_reevaluates_every_profile() -> None:
    runs = release_runs("CD-06", "dev", ["config/evals/prompts-regressions.yaml"])
    assert [r["profile"] for r in runs] == list(PROFILES)


def test_files_of_no_profile_run_nothing_and_other_pipelines_run_once() -> None:
    assert release_runs("CD-06", "dev", ["config/chatbot.yaml", "config/README.md"]) == []
    assert release_runs("CD-06", "dev", ["config/nested/flags.yaml"]) == []
    assert release_runs("CD-01", "prod", ["src/mangaassist/x.py"]) == [{"environment": "prod"}]
    assert release_runs("CD-01", "prod") == [{"environment": "prod"}]
