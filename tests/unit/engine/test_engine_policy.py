"""Release policy: the default policy exactly as issue 4 states it, time zones, and malformed files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mangaassist.delivery.engine.errors import PolicyError, UnknownEnvironment, UnknownRule
from mangaassist.delivery.engine.policy import EnvironmentPolicy, default_policy, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[3]


def at(text: str) -> datetime:
    return (
        datetime.fromisoformat(text).replace(tzinfo=UTC) if "+" not in text else datetime.fromisoformat(text)
    )


def test_default_policy_dev_is_free_staging_automatic_prod_one_approval_by_someone_else() -> None:
    policy = default_policy()
    dev, staging, prod = (policy.for_run(env, "CD-01") for env in ("dev", "staging", "prod"))
    assert (dev.approvals, dev.freezes, dev.windows, dev.self_approval) == (0, (), (), True)
    assert (staging.approvals, staging.rollback, staging.freezes) == (0, "automatic", ())
    assert (prod.approvals, prod.self_approval, prod.approvers, prod.approval_timeout_s) == (
        1,
        False,
        (),
        86400.0,
    )
    assert [f.name for f in prod.freezes] == ["weekend"]


@pytest.mark.parametrize(
    ("moment", "blocked"),
    [
        ("2025-01-10T14:59", False),  # Friday
        ("2025-01-10T15:00", True),
        ("2025-01-11T12:00", True),  # Saturday
        ("2025-01-12T23:59", True),  # Sunday
        ("2025-01-13T08:59", True),  # Monday
        ("2025-01-13T09:00", False),
        ("2025-01-08T03:00", False),  # Wednesday night
    ],
)
def test_no_prod_deploys_from_friday_1500_to_monday_0900(moment: str, blocked: bool) -> None:
    prod = default_policy().for_run("prod", "CD-01")
    blocks = prod.blocks(at(moment))
    assert bool(blocks) is blocked
    if blocked:
        assert blocks[0].rule == "prod.freeze.weekend"
        assert "no deploys from Fri 15:00 to Mon 09:00 UTC" in blocks[0].explanation
    assert default_policy().for_run("staging", "CD-01").blocks(at(moment)) == []


def test_the_repository_policy_file_is_the_default_policy() -> None:
    repo = load_policy(REPO / "policy.yaml")
    for env in ("dev", "staging", "prod"):
        mine, default = repo.for_run(env, "CD-01").as_dict(), default_policy().for_run(env, "CD-01").as_dict()
        mine.pop("source"), default.pop("source")
        assert mine == default


def test_freezes_and_windows_are_read_in_their_time_zone() -> None:
    text = """
timezone: Europe/Paris
environments:
  prod:
    windows:
      - {name: office, days: [mon, tue, wed, thu], from: "09:00", to: "17:00"}
    freezes:
      - {name: weekend, from: "fri 15:00", to: "mon 09:00"}
      - {name: tokyo-new-year, from: "2025-12-31 00:00", to: "2026-01-02 00:00", timezone: Asia/Tokyo}
"""
    prod = parse_policy(text, "p.yaml").for_run("prod", "CD-01")
    assert prod.blocks(at("2025-07-09T08:30+00:00")) == []  # Wed 10:30 in Paris (summer time)
    late = prod.blocks(at("2025-07-09T15:30+00:00"))  # Wed 17:30 in Paris
    assert [b.rule for b in late] == ["prod.windows"] and "Europe/Paris" in late[0].explanation
    friday = prod.blocks(at("2025-07-11T13:30+00:00"))  # Fri 15:30 Paris: outside windows and frozen
    assert [b.rule for b in friday] == ["prod.windows", "prod.freeze.weekend"]
    # 2025-12-30 15:30 UTC is already 2025-12-31 00:30 in Tokyo
    assert "prod.freeze.tokyo-new-year" in [b.rule for b in prod.blocks(at("2025-12-30T15:30+00:00"))]
    assert prod.rules() == [
        "prod.destructive",
        "prod.alerts",
        "prod.windows",
        "prod.freeze.weekend",
        "prod.freeze.tokyo-new-year",
    ]


def test_pipeline_sections_refine_their_environment() -> None:
    text = "environments:\n  prod:\n    approvals: 1\npipelines:\n  CD-07:\n    prod:\n      approvals: 2\n"
    policy = parse_policy(text, "p.yaml")
    assert policy.for_run("prod", "CD-07").approvals == 2
    assert policy.for_run("prod", "CD-01").approvals == 1


def test_unknown_environment_and_override_rules_are_refused() -> None:
    with pytest.raises(UnknownEnvironment, match="'qa' is not in <built-in default policy>"):
        default_policy().for_run("qa", "CD-01")
    prod = default_policy().for_run("prod", "CD-01")
    with pytest.raises(UnknownRule, match="no such rule"):
        prod.check_overrides({"prod.freeze.xmas": "because"})
    with pytest.raises(UnknownRule, match="needs --reason"):
        prod.check_overrides({"prod.freeze.weekend": " "})


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("environments:\n  prod:\n    approvals: one\n", 3, "environments.prod.approvals"),
        ("environments:\n  prod:\n    aprovals: 1\n", 3, "environments.prod.aprovals"),
        ("environments:\n  prod:\n    rollback: sometimes\n", 3, "environments.prod.rollback"),
        ("environments:\n  prod:\n    approval_timeout: soon\n", 3, "environments.prod.approval_timeout"),
        # a deadline that would overflow a datetime later, mid-run; and no timeout at all
        (
            "environments:\n  prod:\n    approval_timeout: 99999999999h\n",
            3,
            "environments.prod.approval_timeout",
        ),
        ("environments:\n  prod:\n    approval_timeout: 0\n", 3, "environments.prod.approval_timeout"),
        ("environments:\n  prod:\n    approval_timeout: .nan\n", 3, "environments.prod.approval_timeout"),
        ("environments:\n  prod:\n    approvals: &n 1\n  dev:\n    approvals: *n\n", 3, "(syntax)"),
        (
            "environments:\n  prod:\n    freezes:\n      - name: x\n"
            '        from: "fri 25:00"\n        to: "mon 09:00"\n',
            5,
            "environments.prod.freezes[0].from",
        ),
        ("timezone: Mars/Olympus\nenvironments:\n  dev: {}\n", 1, "timezone"),
        ("environments:\n  prod:\n    approvals: [1\n", 4, "(syntax)"),
        ("environments: []\n", 1, "environments"),
        ("pipelines:\n  CD-01:\n    qa: {}\nenvironments:\n  dev: {}\n", 3, "pipelines.CD-01.qa"),
    ],
)
def test_a_malformed_policy_names_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(path), line, field)
    assert str(caught.value).startswith(f"{path}:{line}: {field}: ")


def test_a_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read it"):
        load_policy(tmp_path / "nope.yaml")


# -- when a block ends, and the snapshot a run keeps ----------------------------------------------

PARIS = """
timezone: Europe/Paris
environments:
  prod:
    windows:
      - {name: office, days: [mon, tue, wed, thu, fri], from: "10:00", to: "17:00"}
    freezes:
      - {name: weekend, from: "fri 15:00", to: "mon 09:00"}
      - {name: xmas, from: "2025-12-24 00:00", to: "2025-12-27 00:00"}
"""


def test_each_block_says_when_it_ends() -> None:
    weekend = default_policy().for_run("prod", "CD-01").blocks(at("2025-01-11T12:00"))
    assert weekend[0].until == at("2025-01-13T09:00")
    paris = parse_policy(PARIS, "p.yaml").for_run("prod", "CD-01")
    late = paris.blocks(at("2025-03-28T16:30+00:00"))  # Fri 17:30 in Paris: after hours, and frozen
    assert [(b.rule, b.until) for b in late] == [
        ("prod.windows", at("2025-03-31T08:00+00:00")),  # Mon 10:00 in Paris, summer time by then
        ("prod.freeze.weekend", at("2025-03-31T07:00+00:00")),  # Mon 09:00 in Paris (CEST)
    ]
    xmas = paris.blocks(at("2025-12-24T12:00+00:00"))
    assert [(b.rule, b.until) for b in xmas] == [("prod.freeze.xmas", at("2025-12-26T23:00+00:00"))]


def test_clear_at_follows_one_block_to_the_next() -> None:
    paris = parse_policy(PARIS, "p.yaml").for_run("prod", "CD-01")
    # the freeze ends Monday 09:00 but the window only opens at 10:00
    assert paris.clear_at(at("2025-03-29T12:00+00:00")) == at("2025-03-31T08:00+00:00")
    # the xmas freeze ends Sat 27 00:00: then the weekend freeze and the window hold it to Monday 10:00
    assert paris.clear_at(at("2025-12-24T12:00+00:00")) == at("2025-12-29T09:00+00:00")
    # an overridden rule does not hold it
    assert paris.clear_at(at("2025-03-29T12:00+00:00"), ["prod.freeze.weekend", "prod.windows"]) == at(
        "2025-03-29T12:00+00:00"
    )
    assert paris.clear_at(at("2025-03-26T12:00+00:00")) == at("2025-03-26T12:00+00:00")  # not blocked


def test_a_run_policy_snapshot_rebuilds_the_same_rules() -> None:
    paris = parse_policy(PARIS, "p.yaml").for_run("prod", "CD-01")
    again = EnvironmentPolicy.from_snapshot(paris.as_dict(), "prod", "CD-01")
    for moment in ("2025-03-28T16:30+00:00", "2025-03-26T12:00+00:00", "2025-12-24T12:00+00:00"):
        assert again.blocks(at(moment)) == paris.blocks(at(moment))
    assert again.as_dict() == paris.as_dict()
    old = {k: v for k, v in paris.as_dict().items() if not k.endswith("_specs")}  # an older snapshot
    assert EnvironmentPolicy.from_snapshot(old, "prod", "CD-01").blocks(at("2025-03-28T16:30+00:00")) == []


def test_a_failed_gate_may_be_overridden_only_where_the_policy_says_so() -> None:
    dev, prod = (default_policy().for_run(env, "CD-03") for env in ("dev", "prod"))
    assert dev.gate_overrides and "dev.gates" in dev.rules()
    dev.check_overrides({"dev.gates": "drill: a shuffled-label model must be caught in shadow"})
    assert not prod.gate_overrides and "prod.gates" not in prod.rules()
    with pytest.raises(UnknownRule, match="no such rule"):
        prod.check_overrides({"prod.gates": "trust me"})
    again = EnvironmentPolicy.from_snapshot(dev.as_dict(), "dev", "CD-03")
    assert again.gate_overrides and again.rules() == dev.rules()
    with pytest.raises(PolicyError, match="gate_overrides: expected true or false"):
        parse_policy("environments:\n  dev:\n    gate_overrides: yes please\n", "p.yaml")


def test_the_policy_file_is_the_projects_not_whatever_the_current_directory_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mangaassist.delivery.engine.policy import default_policy_path

    monkeypatch.delenv("MANGAASSIST_POLICY", raising=False)
    monkeypatch.delenv("MANGAASSIST_PLATFORM_CONFIG", raising=False)
    stray = tmp_path / "elsewhere"
    stray.mkdir()
    (stray / "policy.yaml").write_text("environments: {}\n")
    monkeypatch.chdir(stray)
    assert default_policy_path() is None  # no project here: the built-in default
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "mangaassist.toml").write_text("[environments.dev]\n")
    (project / "policy.yaml").write_text("environments: {}\n")
    monkeypatch.chdir(project / "sub")
    assert default_policy_path() == project / "policy.yaml"
    monkeypatch.chdir(stray)
    monkeypatch.setenv("MANGAASSIST_PLATFORM_CONFIG", str(project / "mangaassist.toml"))
    assert default_policy_path() == (project / "policy.yaml").resolve()


def test_more_approvals_than_distinct_approvers_is_refused_with_its_line() -> None:
    text = "version: 1\nenvironments:\n  prod:\n    approvals: 2\n    approvers: [alice, ' Alice']\n"
    with pytest.raises(
        PolicyError, match=r"p\.yaml:4: environments\.prod\.approvals: 2 approvals required but only 1"
    ):
        parse_policy(text, "p.yaml")


def test_approvals_can_be_overridden_only_where_the_policy_says_so() -> None:
    strict = parse_policy("environments:\n  prod:\n    approvals: 1\n", "p.yaml").for_run("prod", "CD-01")
    with pytest.raises(UnknownRule, match=r"--override prod\.approvals: no such rule for this run"):
        strict.check_overrides({"prod.approvals": "in a hurry"})
    text = "environments:\n  prod:\n    approvals: 1\n    approval_overrides: true\n"
    lenient = parse_policy(text, "p.yaml").for_run("prod", "CD-01")
    lenient.check_overrides({"prod.approvals": "the approver is on leave; audited"})
    assert lenient.rules()[0] == "prod.approvals"
    assert default_policy().for_run("prod", "CD-01").approval_overrides is False


def test_a_new_state_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    from mangaassist.delivery.engine.state import StateStore

    path = tmp_path / "deep" / "state.sqlite3"
    store = StateStore(f"sqlite:///{path}")
    with store.transaction() as conn:
        assert store.runs(conn, datetime.now(UTC)) == []
    store.close()
    assert path.stat().st_mode & 0o777 == 0o600
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_mode & 0o077 == 0
