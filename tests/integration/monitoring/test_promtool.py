"""The generated rules under Prometheus' own engine: ``promtool check rules`` and ``promtool test rules``
on the build of ``monitoring/slos``, and proof that those tests can fail.

promtool comes from Debian's ``prometheus`` package (``scripts/install-monitoring.sh``, run by
``make setup`` as root). Without it these tests fail with that message: they are never skipped.

Also here, without promtool: what the generated scenarios expect (``promtests.expectations``), so a
change that made a scenario vacuous (nothing ever fires, or everything does) is caught even where
the expectations and the rules would agree with each other.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mangaassist.delivery.monitoring import promtests, slo
from mangaassist.delivery.monitoring.build import build

ROOT = Path(__file__).parents[3]
SPECS = ROOT / "monitoring/slos"
TESTDATA = ROOT / "tests/fixtures/sloth/testdata"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: apt-get install prometheus (Debian's package; make setup runs "
            "scripts/install-monitoring.sh as root). The monitoring tests need it and are not skipped.",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("monitoring") / "build"
    build([SPECS], out, None)
    return out


def _run(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=600, check=False
    )


# -- the scenarios' expectations (no promtool) ----------------------------------------------------


def test_scenarios_expect_what_the_brief_says_for_every_slo():
    envs = slo.load_environments(ROOT / "monitoring/environments.yaml")
    for ws in (slo.GOOGLE_30D, envs.get("dev").window_set):
        for spec in slo.load_slos([SPECS]):
            exp = promtests.expectations(spec, ws)
            page = ["page"] if spec.alerting.page.enabled else []
            assert exp["fast-burn"][0][1] == [*page, "ticket"], (spec.id, ws.name)
            assert all(firing == [] for _, firing in exp["blip"] + exp["spike"] + exp["silent"]), spec.id
            (_, nothing), (_, ticket) = exp["slow-burn"]
            assert (nothing, ticket) == ([], ["ticket"]), spec.id


def test_slow_burn_ticket_comes_after_hours_with_google_30d():
    chat = slo.load_slos([SPECS])[0]
    exp = promtests.expectations(chat, slo.GOOGLE_30D)
    assert exp["slow-burn"] == [("1h30m", []), ("4h", ["ticket"])]
    assert exp["fast-burn"] == [("15m", ["page", "ticket"])]


def test_series_are_synthesised_from_the_selectors():
    by_id = {s.id: s for s in slo.load_slos([SPECS])}
    phases = (promtests._Phase(3, 0.5),)
    series = promtests._input_series(by_id["chatbot-grounded-answers"], phases)
    assert [s["series"] for s in series] == [
        'mangaassist_router_answers_total{fallback="true", service="chatbot"}',
        'mangaassist_router_answers_total{fallback="false", service="chatbot"}',
    ]
    assert [s["values"] for s in series] == ["1000+500x3", "100000+500x3"]
    latency = promtests._input_series(by_id["chatbot-chat-latency"], phases)
    assert [s["series"] for s in latency] == [
        'mangaassist_router_latency_seconds_count{service="chatbot"}',
        'mangaassist_router_latency_seconds_bucket{le="2.5", service="chatbot"}',
        'mangaassist_router_latency_seconds_bucket{le="+Inf", service="chatbot"}',
    ]


def test_counter_values_never_step_down_between_runs():
    """Inexact increments once made a counter dip by 1e-13, which rate() read as a reset (a page)."""
    increments = promtests._bad_increments(
        (promtests._Phase(3, 0.0), promtests._Phase(2, 0.0099999999999994), promtests._Phase(2, 0.0))
    )
    assert all((i / promtests.QUANTUM).is_integer() for i in increments)
    assert promtests._counter_values(1000.0, increments) == "1000+0x3 1010+10x1 1020+0x1"


def test_raw_sli_is_untestable_with_the_reason():
    _base, raw = slo.load_slos([TESTDATA / "in-base.yaml"])
    with pytest.raises(promtests.Untestable, match="raw error-ratio query"):
        promtests.slo_test_file(raw, slo.GOOGLE_30D, "../rules/svc01.yml")


# -- promtool -------------------------------------------------------------------------------------


def test_generated_rules_pass_promtool_check(promtool: str, built: Path):
    files = sorted((built / "prometheus/rules").glob("*.yml"))
    assert len(files) == 3
    done = _run(promtool, "check", "rules", *files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == 3


def test_generated_promtool_tests_pass(promtool: str, built: Path):
    runs = promtests.run_promtool(built)
    assert [r.command[1] for r in runs] == ["check", "test"]
    assert all(r.ok for r in runs), "\n".join(r.output for r in runs)
    assert runs[1].output.count("SUCCESS") == 5


def test_dev_short_build_passes_promtool_too(promtool: str, tmp_path: Path):
    build([SPECS], tmp_path / "dev", "dev")
    runs = promtests.run_promtool(tmp_path / "dev")
    assert all(r.ok for r in runs), "\n".join(r.output for r in runs)


def test_a_test_expecting_a_page_on_a_5_minute_blip_fails(promtool: str, built: Path, tmp_path: Path):
    """Hand-written negative: the blip must not page, so a test saying it does must fail."""
    doc = yaml.safe_load((built / "prometheus/tests/chatbot-chat-availability.yml").read_text())
    blip = next(t for t in doc["tests"] if " blip: " in t["name"])
    fast = next(t for t in doc["tests"] if " fast-burn: " in t["name"])
    page = next(
        a for a in fast["alert_rule_test"][0]["exp_alerts"] if a["exp_labels"]["sloth_severity"] == "page"
    )
    blip["alert_rule_test"][0]["exp_alerts"] = [page]  # the page, right at the end of the blip
    doc["tests"] = [blip]
    doc["rule_files"] = [str(built / "prometheus/rules/chatbot.yml")]
    path = tmp_path / "negative.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = _run(promtool, "test", "rules", path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert (
        "FAILED" in output
        and "ChatbotAvailabilityBudgetBurn" in output
        and "got:[]" in output.replace(" ", "")
    )


def test_the_tests_catch_a_wrong_burn_factor(promtool: str, built: Path, tmp_path: Path):
    """Rules paging at 1.44x instead of 14.4x page on the 20x spike (its 1h window reaches 1.7x): the
    generated tests must say so."""
    shutil.copytree(built / "prometheus", tmp_path / "prometheus")
    rules_file = tmp_path / "prometheus/rules/chatbot.yml"
    rules_file.write_text(rules_file.read_text().replace("(14.4 * ", "(1.44 * "))
    done = _run(promtool, "test", "rules", tmp_path / "prometheus/tests/chatbot-chat-availability.yml")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "chatbot-chat-availability spike:" in output and 'sloth_severity="page"' in output


def test_generated_tests_for_sloths_base_spec_pass(promtool: str, tmp_path: Path):
    report = build([TESTDATA / "in-base.yaml"], tmp_path / "sloth", None)
    assert [p.name for p in report.test_files] == ["svc01-slo1.yml"]
    runs = promtests.run_promtool(tmp_path / "sloth")
    assert all(r.ok for r in runs), "\n".join(r.output for r in runs)


def test_cli_build_then_test(promtool: str, tmp_path: Path):
    import typer

    from mangaassist.cli.monitor_cmds import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:
        """The CLI's root, as cli/main.py makes it."""

    runner = CliRunner()
    out = tmp_path / "cli"
    built_json = runner.invoke(
        app, ["monitor", "build", "--slo", str(SPECS / "config-server.yaml"), "--out", str(out), "--json"]
    )
    assert built_json.exit_code == 0, built_json.output
    assert '"slos": 1' in built_json.output and '"window_set": "google-30d"' in built_json.output
    tested = runner.invoke(app, ["monitor", "test", "--out", str(out)])
    assert tested.exit_code == 0, tested.output
    assert "promtool check rules (1 files): ok" in tested.output
    assert "promtool test rules (1 files): ok" in tested.output
    bad = runner.invoke(
        app, ["monitor", "build", "--slo", str(TESTDATA / "in-invalid-version.yaml"), "--out", str(out)]
    )
    assert bad.exit_code == 2
    assert "in-invalid-version.yaml:1: version: unsupported version" in bad.output
    missing = runner.invoke(app, ["monitor", "test", "--out", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "run `mangaassist monitor build` first" in missing.output


def test_cli_default_out_is_a_build_directory_in_the_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Not ``HOME/monitoring`` itself: the local platform keeps Prometheus' rules and state there."""
    from mangaassist.cli import monitor_cmds

    monkeypatch.setenv("MANGAASSIST_ROOT", str(ROOT))
    monkeypatch.setenv("MANGAASSIST_HOME", str(tmp_path / "home"))
    (tmp_path / "home/monitoring/rules").mkdir(parents=True)
    assert monitor_cmds.default_out() == tmp_path / "home/monitoring/build"
