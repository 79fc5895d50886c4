"""The release planner: golden cases (changed paths in, ordered pipelines out) and its executor."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mangaassist.core import kb
from mangaassist.delivery import planner
from mangaassist.delivery.engine.errors import BadRequest
from mangaassist.delivery.planner import ItemStatus, PlannedPipeline, plan_release

ROOT = Path(__file__).resolve().parents[3]


def nothing_built(_pipeline: str) -> bool:
    return False


def ids(paths: list[str]) -> list[str]:
    return [p.id for p in plan_release(paths, environment="prod", is_built=nothing_built).pipelines]


def test_the_full_order_follows_the_design_dependency_map() -> None:
    assert planner.ORDER == ["CD-02", "CD-04", "CD-06", "CD-07", "CD-08", "CD-03", "CD-01", "CD-05"]
    position = {p: i for i, p in enumerate(planner.ORDER)}
    for before, after in planner.DEPENDENCIES:
        assert position[before] < position[after], (before, after)


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (["src/mangaassist/chatbot/app.py"], ["CD-01"]),
        (["frontend/src/App.tsx", "src/mangaassist/cli/main.py"], ["CD-01", "CD-05"]),
        (["src/a.py", "migrations/0002_expand.py", "infra/app.py"], ["CD-02", "CD-07", "CD-01"]),
        (["ml/intents/eval.jsonl", "monitoring/slo.yaml"], ["CD-08", "CD-03"]),
        # the image trains its in-process model from the training data: CD-01 ships that file too
        (["ml/intents/train.jsonl"], ["CD-03", "CD-01"]),
        (["ml/intent.yaml", "ml/answers/golden.jsonl", "ml/intents/README.md"], ["CD-03"]),
        (["config/prompts/answer.txt", "knowledge/faq/shipping.md", "src/x.py"], ["CD-04", "CD-06", "CD-01"]),
        (
            [
                "frontend/a",
                "src/b",
                "config/c",
                "migrations/d",
                "knowledge/e",
                "ml/f",
                "monitoring/g",
                "infra/h",
            ],
            ["CD-02", "CD-04", "CD-06", "CD-07", "CD-08", "CD-03", "CD-01", "CD-05"],
        ),
        (["docs/engine.md", "tests/unit/test_x.py", "README.md"], []),
        ([], []),
        (["pyproject.toml"], ["CD-01"]),
        (["Makefile", "uv.lock", "requirements-dev.txt", "setup.cfg"], ["CD-01"]),
        (["poetry.lock", "infra/app.py"], ["CD-02", "CD-01"]),
        (["docs/pyproject.toml", "frontend/Makefile"], ["CD-05"]),  # only the root's build files
        (["./src/a.py", ".github/workflows/ci.yml"], ["CD-01"]),
        (["Dockerfile"], ["CD-01"]),
        ([".dockerignore", "docs/x.md"], ["CD-01"]),
        (["docker/Dockerfile", "docs/Dockerfile"], []),  # only the root's image files
        (["data/catalog.jsonl"], ["CD-04", "CD-01"]),
        (["data/orders.jsonl", "frontend/a"], ["CD-01", "CD-05"]),  # the seed orders are not indexed
        (["data/orders.jsonl"], ["CD-01"]),
        # the knowledge base's chunk settings are there, and the image's base config is that file
        (["config/chatbot.yaml"], ["CD-04", "CD-06", "CD-01"]),
        (["config/runtime.yaml", "config/prompts.yaml"], ["CD-06"]),  # the build reads neither
        (["config/chatbot.yaml", "src/a.py"], ["CD-04", "CD-06", "CD-01"]),
        (["data/README.md", "data/sub/catalog.jsonl", "data/catalog.jsonl.bak"], ["CD-01"]),
        (["knowledge/faq/shipping.md", "data/catalog.jsonl", "src/a.py"], ["CD-04", "CD-01"]),
        # the image holds the pages (a worker's own index while there is no live one), not the evals
        (["knowledge/returns-policy.md"], ["CD-04", "CD-01"]),
        (["knowledge/evals/golden.jsonl", "knowledge/faq/shipping.md"], ["CD-04"]),
        (["docs/data/x.md", "database/y.sql", "data"], []),
    ],
)
def test_golden_cases(changed: list[str], expected: list[str]) -> None:
    assert ids(changed) == expected


def test_each_pipeline_says_why_it_is_included_and_why_it_comes_where_it_does() -> None:
    plan = plan_release(
        ["ml/intent.yaml", "ml/intents/eval.jsonl", "monitoring/slo.yaml", "docs/x.md"],
        environment="prod",
        is_built=lambda p: p == "CD-08",
        since="abc123",
    )
    cd08, cd03 = plan.pipelines
    assert cd03.reason == "2 changed path(s) under ml/: ml/intent.yaml, ml/intents/eval.jsonl"
    assert cd03.after == ["CD-08: its alarms gate the model's rollout"]
    assert cd08.after == [] and cd08.built and not cd03.built
    assert plan.unmapped == ["docs/x.md"]
    assert plan.as_dict()["not_built"] == ["CD-03"]


def planned(pid: str, built: bool = True) -> PlannedPipeline:
    return PlannedPipeline(pid, planner.SPECS[pid].title, [f"{pid}/x"], [], built)


def test_release_runs_in_order_and_stops_at_the_first_failure() -> None:
    plan = planner.ReleasePlan("prod", None, None, [planned("CD-02"), planned("CD-07"), planned("CD-01")])
    ran: list[str] = []

    def runner(item: PlannedPipeline) -> tuple[bool, str | None, str]:
        ran.append(item.id)
        return item.id != "CD-07", f"run-{item.id}", "failed at migrate" if item.id == "CD-07" else "ok"

    summary = planner.execute(plan, runner)
    assert ran == ["CD-02", "CD-07"]
    assert [(r.id, r.status) for r in summary.results] == [
        ("CD-02", ItemStatus.SUCCEEDED),
        ("CD-07", ItemStatus.FAILED),
        ("CD-01", ItemStatus.NOT_RUN),
    ]
    assert not summary.succeeded


def test_an_unbuilt_pipeline_is_listed_and_stops_the_release_never_skipped() -> None:
    plan = planner.ReleasePlan("prod", None, None, [planned("CD-02", built=False), planned("CD-01")])
    ran: list[str] = []
    summary = planner.execute(plan, lambda item: (ran.append(item.id) or True, None, ""))
    assert ran == []
    assert [r.status for r in summary.results] == [ItemStatus.NOT_BUILT, ItemStatus.NOT_RUN]
    assert summary.results[0].detail == "infrastructure as code: pipeline not built yet"


def test_build_and_dependency_files_put_the_application_in_the_plan_with_a_reason() -> None:
    (cd01,) = plan_release(
        ["pyproject.toml", "src/a.py", "uv.lock"], environment="prod", is_built=nothing_built
    ).pipelines
    assert cd01.paths == ["pyproject.toml", "src/a.py", "uv.lock"]
    assert cd01.reason == (
        "1 changed path(s) under src/: src/a.py; "
        "2 changed file(s) of the application's dependencies, build and image: pyproject.toml, uv.lock"
    )


def test_a_dockerfile_change_plans_the_application_because_its_image_changes() -> None:
    plan = plan_release(["Dockerfile", "docs/x.md"], environment="prod", is_built=nothing_built)
    (cd01,) = plan.pipelines
    assert (cd01.id, cd01.paths) == ("CD-01", ["Dockerfile"])
    assert cd01.reason == "1 changed file(s) of the application's dependencies, build and image: Dockerfile"
    assert plan.unmapped == ["docs/x.md"]


def planned_for(path: str, expected: list[str]) -> list[PlannedPipeline]:
    """The plan of a change of ``path`` alone: the ``expected`` pipelines, each there for ``path``."""
    plan = plan_release([path], environment="prod", is_built=nothing_built)
    assert [p.id for p in plan.pipelines] == expected and plan.unmapped == []
    assert all(p.paths == [path] for p in plan.pipelines)
    return plan.pipelines


def test_a_catalog_change_plans_the_knowledge_base_then_the_application_each_saying_why() -> None:
    cd04, cd01 = planned_for("data/catalog.jsonl", ["CD-04", "CD-01"])
    assert cd04.reason == (
        "1 changed file(s) of the knowledge base's sources (it indexes the catalog's series descriptions): "
        "data/catalog.jsonl"
    )
    assert cd01.reason == (
        "1 changed path(s) under data/ (the chatbot's image copies data/ and reads it at run time): "
        "data/catalog.jsonl"
    )
    assert cd04.after == [] and cd01.after == [
        "CD-04: the knowledge index must be live before the code that reads it"
    ]


def test_knowledge_and_data_changes_plan_the_knowledge_base_once_with_both_reasons() -> None:
    plan = plan_release(
        ["knowledge/faq/shipping.md", "data/catalog.jsonl", "knowledge/faq/returns.md"],
        environment="prod",
        is_built=nothing_built,
    )
    assert [p.id for p in plan.pipelines] == ["CD-04", "CD-01"]
    cd04, cd01 = plan.pipelines
    assert cd04.paths == ["data/catalog.jsonl", "knowledge/faq/returns.md", "knowledge/faq/shipping.md"]
    assert cd04.reason == (
        "2 changed path(s) under knowledge/: knowledge/faq/returns.md, knowledge/faq/shipping.md; "
        "1 changed file(s) of the knowledge base's sources (it indexes the catalog's series descriptions): "
        "data/catalog.jsonl"
    )
    assert cd01.paths == ["data/catalog.jsonl"]  # the knowledge base's own files are not the image's reason


def test_an_orders_change_plans_the_application_alone() -> None:
    (cd01,) = planned_for("data/orders.jsonl", ["CD-01"])
    assert cd01.reason == (
        "1 changed path(s) under data/ (the chatbot's image copies data/ and reads it at run time): "
        "data/orders.jsonl"
    )


def test_the_knowledge_base_files_are_the_ones_its_build_reads() -> None:
    """One definition (core.kb) for the build and the planner: what the build reads of data/ is
    what plans CD-04, and nothing else there does."""
    from mangaassist.delivery.pipelines import kb as kb_pipeline

    assert kb_pipeline.SOURCE_MARKERS == (kb.KNOWLEDGE_DIR, kb.CATALOG_FILE)
    assert planner.SPECS["CD-04"].folders == (f"{kb.KNOWLEDGE_DIR}/",)
    assert planner.SPECS["CD-04"].files == (
        kb.CATALOG_FILE,
        kb.CHUNK_SETTINGS_FILE,
        *planner.CHUNKING_CODE_FILES,
    )
    data = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "data").rglob("*") if p.is_file())
    assert [p for p in data if "CD-04" in planner.pipelines_for(p)] == [kb.CATALOG_FILE]
    assert all(planner.pipelines_for(p)[-1:] == ["CD-01"] for p in data)


def test_the_chunking_code_is_the_files_whose_digest_keys_the_chunk_memo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One definition (core.kb.CHUNKING_CODE) for the memo's key and the planner's map."""
    from mangaassist.delivery.pipelines import kb as kb_pipeline

    hashed: list[str] = []

    def identity(*modules: object) -> str:
        hashed.extend(Path(str(getattr(m, "__file__", m))).relative_to(ROOT).as_posix() for m in modules)
        return "digest"

    monkeypatch.setattr(kb_pipeline, "code_identity", identity)
    assert kb_pipeline._chunking_code.__wrapped__() == "digest"
    assert tuple(hashed) == planner.CHUNKING_CODE_FILES
    assert hashed == ["src/mangaassist/core/kb.py", "src/mangaassist/delivery/pipelines/kb.py"]
    assert all((ROOT / path).is_file() for path in hashed)


@pytest.mark.parametrize("path", planner.CHUNKING_CODE_FILES)
def test_a_change_of_the_chunking_code_plans_the_knowledge_base_and_the_application(path: str) -> None:
    cd04, cd01 = planned_for(path, ["CD-04", "CD-01"])
    assert cd04.reason == (
        "1 changed file(s) of the knowledge base's chunking code (the build's chunk memo is keyed on a "
        "digest of these files, so a new version of them chunks every source again and may change the "
        "index; the build does nothing past its plan step when the chunks come out the same): " + path
    )
    assert cd01.reason == f"1 changed path(s) under src/: {path}"
    assert cd01.after == ["CD-04: the knowledge index must be live before the code that reads it"]


@pytest.mark.parametrize(
    "path",
    [
        "src/mangaassist/chatbot/knowledge.py",  # the chatbot's reader, not the chunker
        "src/mangaassist/platform/kb_memo.py",
        "src/mangaassist/delivery/pipelines/kb_extra.py",
        "src/mangaassist/core/kb.pyi",
        "src/mangaassist/core/sub/kb.py",
    ],
)
def test_a_change_of_other_source_plans_the_application_alone(path: str) -> None:
    assert ids([path]) == ["CD-01"]


def test_a_chunk_settings_change_plans_the_knowledge_base_the_config_and_the_image_saying_why() -> None:
    cd04, cd06, cd01 = planned_for("config/chatbot.yaml", ["CD-04", "CD-06", "CD-01"])
    assert cd04.reason == (
        "1 changed file(s) of the knowledge base's chunk settings (retrieval.chunk_words and "
        "chunk_overlap cut every chunk, so they change the index; the file holds other settings too "
        "and a changed path does not say which keys changed, so any change of it plans CD-04, whose "
        "build does nothing past its plan step when the chunks come out the same): config/chatbot.yaml"
    )
    assert cd06.reason == "1 changed path(s) under config/: config/chatbot.yaml"
    assert cd01.reason == (
        "1 changed file(s) of the chatbot's image: every worker loads its settings from it at start "
        "(the base config; CD-06's profiles reach a worker through the config store, not the image): "
        "config/chatbot.yaml"
    )
    assert cd04.after == cd06.after == []  # neither depends on the other; the order is by id
    with_code = plan_release(["config/chatbot.yaml", "src/a.py"], environment="prod", is_built=nothing_built)
    assert with_code.pipelines[-1].after == [
        "CD-04: the knowledge index must be live before the code that reads it",
        "CD-06: the service reads this config at run time",
    ]


def test_the_files_of_other_pipelines_the_image_holds_plan_the_application_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a worker reads at start from knowledge/, ml/ and config/ is CD-01's too, and only that
    (chatbot.settings names it; test_dockerfile.py checks the image copies these and no more)."""
    from mangaassist.chatbot.settings import Settings

    for variable in ("MANGAASSIST_CONFIG", "MANGAASSIST_CUSTOMER_JWKS_URL"):
        monkeypatch.delenv(variable, raising=False)
    settings = Settings.from_env(ROOT)
    read = {
        f"{settings.knowledge_dir.relative_to(ROOT)}/*.md",
        (settings.intents_dir / "train.jsonl").relative_to(ROOT).as_posix(),
        settings.config_path.relative_to(ROOT).as_posix(),
    }
    assert set(planner.IMAGE_FILES) == read
    assert set(planner.IMAGE_FILES) <= set(planner.SPECS["CD-01"].files)
    plan = plan_release(
        ["knowledge/returns-policy.md", "knowledge/refunds.md", "ml/intents/train.jsonl"],
        environment="prod",
        is_built=nothing_built,
    )
    cd04, cd03, cd01 = plan.pipelines
    assert (cd04.id, cd03.id, cd01.id) == ("CD-04", "CD-03", "CD-01")
    assert cd01.reason == (
        "2 changed file(s) of the chatbot's image: a worker builds its own index from these pages at "
        "start while the environment has no live index (CD-04's), and finds its root by the folder: "
        "knowledge/refunds.md, knowledge/returns-policy.md; "
        "1 changed file(s) of the chatbot's image: a worker trains its in-process intent model from "
        "it at start (no model package is in the image), the fallback when CD-03's endpoint does not "
        "answer in time: ml/intents/train.jsonl"
    )
    assert cd01.after == [
        "CD-04: the knowledge index must be live before the code that reads it",
        "CD-03: the model endpoint must serve before the code that calls it",
    ]


def test_file_patterns_must_mean_the_same_to_github_and_each_say_why() -> None:
    for pattern in ("data/*.jsonl?", "data/**", "data/[ab].jsonl", "!data/x", "./data/x", "/data/x"):
        with pytest.raises(ValueError, match=r"only literal paths from the root and \* are allowed"):
            planner.PipelineSpec("CD-09", "test", (), (pattern,), {pattern: "why"})
    with pytest.raises(ValueError, match=r"without one: \['b'\]; not among its files: \['c'\]"):
        planner.PipelineSpec("CD-09", "test", (), ("a", "b"), {"a": "why", "c": "why"})
    spec = planner.PipelineSpec("CD-09", "test", (), ("data/*.csv",), {"data/*.csv": "why"})
    assert planner._file_pattern_of("data/x.csv", spec) == "data/*.csv"
    assert planner._file_pattern_of("data/sub/x.csv", spec) is None  # * stays in its segment
    assert planner._file_pattern_of("data/x.csv.bak", spec) is None  # the whole path matches


def test_an_unrelated_root_file_plans_nothing() -> None:
    plan = plan_release(["docs/x.md", "CHANGELOG.md"], environment="prod", is_built=nothing_built)
    assert plan.pipelines == [] and plan.unmapped == ["CHANGELOG.md", "docs/x.md"]
    assert planner.pipelines_for("docs/x.md") == []


def test_a_folder_reason_for_a_folder_the_pipeline_does_not_ship_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"^CD-09: folders_why names \['data/'\], which are not among its folders \['x/'\]"
    ):
        planner.PipelineSpec("CD-09", "test", ("x/",), folders_why={"data/": "why"})


# -- golden cases from a real git history ---------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    commit(root, {"README.md": "x", "knowledge/faq/shipping.md": "ships in 2 days\n" * 20}, "base")
    return root


def commit(repo: Path, files: dict[str, str], message: str) -> None:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def plan_from_git(repo: Path, since: str) -> planner.ReleasePlan:
    return plan_release(
        planner.changed_paths(repo, since), environment="prod", is_built=nothing_built, since=since
    )


def test_a_document_moved_out_of_the_knowledge_base_still_plans_cd04(repo: Path) -> None:
    git(repo, "mv", "knowledge/faq/shipping.md", "archive-shipping.md")
    git(repo, "commit", "-qm", "retire a document")
    assert planner.changed_paths(repo, "HEAD~1") == ["archive-shipping.md", "knowledge/faq/shipping.md"]
    plan = plan_from_git(repo, "HEAD~1")
    assert [p.id for p in plan.pipelines] == ["CD-04"]
    assert plan.pipelines[0].paths == ["knowledge/faq/shipping.md"] and plan.unmapped == [
        "archive-shipping.md"
    ]


def test_a_file_renamed_into_another_pipeline_plans_both(repo: Path) -> None:
    (repo / "config").mkdir()
    git(repo, "mv", "knowledge/faq/shipping.md", "config/shipping.md")
    git(repo, "commit", "-qm", "move")
    assert [p.id for p in plan_from_git(repo, "HEAD~1").pipelines] == ["CD-04", "CD-06"]


def test_since_diffs_from_the_merge_base_like_three_dots(repo: Path) -> None:
    git(repo, "checkout", "-qb", "feature")
    commit(repo, {"src/app.py": "print(1)\n"}, "feature work")
    git(repo, "checkout", "-q", "main")
    commit(repo, {"infra/stack.py": "stack = 1\n"}, "landed on main meanwhile")
    git(repo, "checkout", "-q", "feature")
    # HEAD (feature) did not change infra/: only its own side counts
    assert planner.changed_paths(repo, "main") == ["src/app.py"]
    assert [p.id for p in plan_from_git(repo, "main").pipelines] == ["CD-01"]


def test_an_unknown_ref_is_a_clear_error(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"^unknown git ref 'nonexistent-ref' in "):
        planner.changed_paths(repo, "nonexistent-ref")
    with pytest.raises(BadRequest, match=r"unknown git ref '--output=/tmp/x'"):
        planner.changed_paths(repo, "--output=/tmp/x")  # never read as an option
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    with pytest.raises(BadRequest, match="not a git repository"):
        planner.changed_paths(elsewhere, "HEAD")


def test_a_catalog_commit_plans_the_knowledge_base_then_the_application(repo: Path) -> None:
    commit(repo, {"data/catalog.jsonl": '{"id": "berserk"}\n', "data/orders.jsonl": "{}\n"}, "data")
    commit(repo, {"data/catalog.jsonl": '{"id": "berserk", "volumes": 42}\n'}, "a catalog row changes")
    plan = plan_from_git(repo, "HEAD~1")
    assert [(p.id, p.paths) for p in plan.pipelines] == [
        ("CD-04", ["data/catalog.jsonl"]),
        ("CD-01", ["data/catalog.jsonl"]),
    ]
    assert plan.unmapped == []


def test_paths_with_unusual_characters_come_back_as_they_are(repo: Path) -> None:
    commit(repo, {"knowledge/faq/économie « café ».md": "x"}, "unicode name")
    assert planner.changed_paths(repo, "HEAD~1") == ["knowledge/faq/économie « café ».md"]
