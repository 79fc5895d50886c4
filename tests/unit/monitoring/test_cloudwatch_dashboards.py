"""CloudWatch alarm definitions, Grafana dashboards and ``build`` (``delivery/monitoring``).

The alarms must be the Prometheus alerts in CloudWatch terms: the same windows, thresholds of
factor x error budget, composites that AND a condition's two windows and OR a severity's two
conditions. The dashboards must query the series the rules record. ``build`` must write everything
or nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.monitoring import cloudwatch, dashboards, slo
from mangaassist.delivery.monitoring.build import MARKER, build

ROOT = Path(__file__).parents[3]
SPECS = ROOT / "monitoring/slos"
TESTDATA = ROOT / "tests/fixtures/sloth/testdata"


@pytest.fixture(scope="module")
def slos() -> dict[str, slo.SLO]:
    return {s.id: s for s in slo.load_slos([SPECS])}


# -- CloudWatch -----------------------------------------------------------------------------------


def test_availability_alarms_mirror_the_burn_rate_windows(slos: dict[str, slo.SLO]):
    chat = slos["chatbot-chat-availability"]
    alarms = cloudwatch.slo_alarms(chat, slo.GOOGLE_30D, "prod")
    got = {(a.severity, a.speed, a.period_s): round(a.threshold, 12) for a in alarms.metric_alarms}
    budget = 0.005  # objective 99.5
    assert got == {
        ("page", "quick", 300): round(14.4 * budget, 12),
        ("page", "quick", 3600): round(14.4 * budget, 12),
        ("page", "slow", 1800): round(6 * budget, 12),
        ("page", "slow", 21600): round(6 * budget, 12),
        ("ticket", "quick", 7200): round(3 * budget, 12),
        ("ticket", "quick", 86400): round(3 * budget, 12),
        ("ticket", "slow", 21600): round(1 * budget, 12),
        ("ticket", "slow", 259200): round(1 * budget, 12),
    }
    first = alarms.metric_alarms[0].as_dict()
    assert first["AlarmName"] == "mangaassist-prod-slo-chatbot-chat-availability-page-quick-5m"
    assert first["ComparisonOperator"] == "GreaterThanThreshold"
    assert (first["EvaluationPeriods"], first["DatapointsToAlarm"]) == (1, 1)
    assert first["TreatMissingData"] == "notBreaching"
    errors, total, ratio = first["Metrics"]
    assert errors["MetricStat"]["Metric"] == {
        "Namespace": "MangaAssist",
        "MetricName": "RouterRequests",
        "Dimensions": [{"Name": "Service", "Value": "chatbot"}, {"Name": "Status", "Value": "5xx"}],
    }
    assert (errors["MetricStat"]["Period"], errors["MetricStat"]["Stat"]) == (300, "Sum")
    assert total["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "Service", "Value": "chatbot"}]
    assert ratio == {
        "Id": "ratio",
        "Expression": "FILL(errors, 0) / total",
        "Label": "chatbot-chat-availability error ratio over 5m",
        "ReturnData": True,
    }


def test_composites_and_the_windows_and_or_the_conditions(slos: dict[str, slo.SLO]):
    alarms = cloudwatch.slo_alarms(slos["chatbot-chat-availability"], slo.GOOGLE_30D)
    names = {a.name for a in alarms.metric_alarms}
    by_name = {c.name: c for c in alarms.composites}
    prefix = "mangaassist-slo-chatbot-chat-availability"
    quick = by_name[f"{prefix}-page-quick"]
    assert quick.rule == f'ALARM("{prefix}-page-quick-5m") AND ALARM("{prefix}-page-quick-1h")'
    page = by_name[f"{prefix}-page"]
    assert page.rule == f'ALARM("{prefix}-page-quick") OR ALARM("{prefix}-page-slow")'
    assert page.as_dict()["ActionsEnabled"] and not quick.as_dict()["ActionsEnabled"]
    for composite in alarms.composites:  # every reference resolves to an alarm defined before it
        assert set(composite.children) <= names | set(by_name)
    assert len(alarms.composites) == 6  # 4 conditions, 2 severities


def test_disabled_page_has_no_page_alarms(slos: dict[str, slo.SLO]):
    alarms = cloudwatch.slo_alarms(slos["chatbot-grounded-answers"], slo.GOOGLE_30D)
    assert {a.severity for a in alarms.metric_alarms} == {"ticket"}
    assert {c.severity for c in alarms.composites} == {"ticket"}
    assert alarms.ratio.metrics[0][1].dimensions == (("Service", "chatbot"), ("Fallback", "true"))


def test_latency_uses_the_percentile_rank_of_the_threshold(slos: dict[str, slo.SLO]):
    ratio = cloudwatch.error_ratio(slos["chatbot-chat-latency"])
    ((name, stat),) = ratio.metrics
    assert (stat.name, stat.stat, stat.dimensions) == (
        "RouterLatency",
        "PR(:2.5)",
        (("Service", "chatbot"),),
    )
    assert ratio.expression == f"1 - {name} / 100"


@pytest.mark.parametrize(
    ("prometheus", "cloudwatch_name"),
    [
        ("mangaassist_router_requests_total", "RouterRequests"),
        ("mangaassist_router_latency_seconds", "RouterLatency"),
        ("mangaassist_router_answers_total", "RouterAnswers"),
        ("mangaassist_config_requests_total", "ConfigRequests"),
    ],
)
def test_metric_names_follow_the_documented_mapping(prometheus: str, cloudwatch_name: str):
    assert cloudwatch.metric_name(prometheus) == cloudwatch_name


def test_unmappable_slis_are_reported_not_fatal():
    base, raw = slo.load_slos([TESTDATA / "in-base.yaml"])
    with pytest.raises(cloudwatch.Unmappable, match=r'code=~"\(5\.\.\|429\)" has no CloudWatch dimension'):
        cloudwatch.error_ratio(base)
    doc = cloudwatch.alarms_document([base, raw], slo.GOOGLE_30D)
    assert set(doc["unmapped"]) == {"svc01-slo1", "svc01-slo02"}
    assert doc["alarms"] == [] and doc["composite_alarms"] == []


def test_cloudwatch_period_limits():
    cloudwatch.check_period(10)
    cloudwatch.check_period(3 * 86400)  # an hour or more: up to 7 days
    with pytest.raises(ConfigError, match="periods are 10, 20, 30 or a multiple of 60"):
        cloudwatch.check_period(45)
    with pytest.raises(ConfigError, match="at most 1d"):
        cloudwatch.check_period(1800, evaluation_periods=49)
    with pytest.raises(ConfigError, match="at most 1w"):
        cloudwatch.check_period(8 * 86400)


def test_alarms_document_is_json_and_dev_short_periods_are_valid(slos: dict[str, slo.SLO]):
    ws = slo.load_environments(ROOT / "monitoring/environments.yaml").get("dev").window_set
    doc = cloudwatch.alarms_document(list(slos.values()), ws, "dev")
    assert json.loads(json.dumps(doc)) == doc
    periods = {m["MetricStat"]["Period"] for a in doc["alarms"] for m in a["Metrics"] if "MetricStat" in m}
    assert periods == {10, 60, 120, 240, 720, 2880, 8640}
    assert all(a["AlarmName"].startswith("mangaassist-dev-slo-") for a in doc["alarms"])
    assert doc["unmapped"] == {}
    assert len(doc["alarms"]) == 4 * 8 + 4  # four SLOs with both alerts, grounded answers ticket only


# -- dashboards -----------------------------------------------------------------------------------


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return board["panels"]


def _exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(board) for t in p.get("targets", [])]


def test_overview_has_every_slo_and_reads_the_recorded_series(slos: dict[str, slo.SLO]):
    board = dashboards.slo_overview(list(slos.values()), slo.GOOGLE_30D)
    assert board["uid"] == "mangaassist-slos"
    rows = [p["title"] for p in _panels(board) if p["type"] == "row"]
    assert rows[0] == "Firing SLO alerts"
    assert "chatbot / chat-latency: 99% over 30d" in rows
    assert len(rows) == 1 + len(slos)
    exprs = _exprs(board)
    assert 'ALERTS{alertstate="firing", sloth_id!=""}' in exprs
    for slo_id in slos:
        assert any(
            f'sloth_id="{slo_id}"' in e and "slo:period_error_budget_remaining:ratio" in e for e in exprs
        )
        assert any(f'sloth_id="{slo_id}"' in e and "slo:sli_error:ratio_rate30d" in e for e in exprs)
    ids = [p["id"] for p in _panels(board)]
    assert len(ids) == len(set(ids))
    targets = [t for p in _panels(board) for t in p.get("targets", [])]
    assert all(t["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for t in targets)
    assert {t["refId"] for t in targets} <= {"A", "B", "C", "D", "E", "F", "G"}
    assert board["templating"]["list"][0]["name"] == "datasource"


def test_burn_rate_panel_draws_the_page_and_ticket_factors(slos: dict[str, slo.SLO]):
    board = dashboards.slo_overview([slos["chatbot-chat-availability"]], slo.GOOGLE_30D)
    burn = next(p for p in _panels(board) if p.get("title", "").startswith("Burn rate"))
    steps = burn["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 1, 14.4]
    legends = [t["legendFormat"] for t in burn["targets"]]
    assert legends == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]


def test_service_dashboards(slos: dict[str, slo.SLO]):
    boards = dashboards.dashboards(list(slos.values()), slo.GOOGLE_30D)
    assert set(boards) == {
        "slo-overview.json",
        "service-chatbot.json",
        "service-intent-model.json",
        "service-config-server.json",
    }
    chat = boards["service-chatbot.json"]
    titles = [p["title"] for p in _panels(chat)]
    for wanted in (
        "Requests/s by revision",
        "Errors/s by revision",
        "Latency quantiles by revision",
        "Shadow agreement by revision",
        "Config and knowledge-base versions by revision",
    ):
        assert wanted in titles
    exprs = _exprs(chat)
    bucket = 'mangaassist_router_latency_seconds_bucket{service="chatbot"}'
    assert f"histogram_quantile(0.99, sum by (le, revision) (rate({bucket}[$__rate_interval])))" in exprs
    assert (
        'max by (revision, config, index, model) (mangaassist_info{mangaassist_service="chatbot"})' in exprs
    )
    config = boards["service-config-server.json"]
    config_titles = [p["title"] for p in _panels(config)]
    assert "Shadow agreement by revision" not in config_titles  # not behind a router
    assert any("mangaassist_config_requests_total" in e for e in _exprs(config))
    intent = boards["service-intent-model.json"]
    assert any(
        'mangaassist_router_latency_seconds_bucket{service="intent-model"}' in e
        for e in _exprs(intent)
    )


# -- build ----------------------------------------------------------------------------------------


def test_build_writes_every_artefact(tmp_path: Path):
    out = tmp_path / "build"
    report = build([SPECS], out, None)
    assert report.slos == (
        "chatbot-chat-availability",
        "chatbot-chat-latency",
        "chatbot-grounded-answers",
        "config-server-config-availability",
        "intent-model-intent-availability",
    )
    assert sorted(p.name for p in report.rule_files) == [
        "chatbot.yml",
        "config-server.yml",
        "intent-model.yml",
    ]
    assert len(report.test_files) == 5 and report.untested == {} and report.no_alarms == {}
    assert (report.window_set, report.period) == ("google-30d", "30d")
    assert report.recording_rules == 5 * 15 and report.alert_rules == 9
    assert report.test_cases == 5 * 5
    assert (report.metric_alarms, report.composite_alarms) == (36, 27)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(
        [
            MARKER,
            "cloudwatch/alarms.json",
            "grafana/service-chatbot.json",
            "grafana/service-config-server.json",
            "grafana/service-intent-model.json",
            "grafana/slo-overview.json",
            "prometheus/rules/chatbot.yml",
            "prometheus/rules/config-server.yml",
            "prometheus/rules/intent-model.yml",
            *(f"prometheus/tests/{s}.yml" for s in report.slos),
        ]
    )
    rules_doc = yaml.safe_load((out / "prometheus/rules/chatbot.yml").read_text())
    assert [g["name"] for g in rules_doc["groups"]][:3] == [
        "sloth-slo-sli-recordings-chatbot-chat-availability",
        "sloth-slo-meta-recordings-chatbot-chat-availability",
        "sloth-slo-alerts-chatbot-chat-availability",
    ]
    test_doc = yaml.safe_load((out / "prometheus/tests/chatbot-chat-latency.yml").read_text())
    assert test_doc["rule_files"] == ["../rules/chatbot.yml"]
    assert json.loads((out / MARKER).read_text())["counts"]["slos"] == 5
    assert report.as_dict()["counts"]["test_cases"] == 25


def test_build_for_dev_applies_the_environment(tmp_path: Path):
    report = build([SPECS], tmp_path / "dev", "dev")
    assert (report.environment, report.window_set, report.period) == ("dev", "dev-short", "1d")
    text = (tmp_path / "dev/prometheus/rules/chatbot.yml").read_text()
    assert "slo:sli_error:ratio_rate10s" in text and "sloth_objective: '95'" in text
    with pytest.raises(ConfigError, match="no environment 'qa'"):
        build([SPECS], tmp_path / "qa", "qa")
    assert not (tmp_path / "qa").exists()


def test_bad_spec_writes_nothing_and_keeps_the_previous_build(tmp_path: Path):
    out = tmp_path / "build"
    build([SPECS], out, None)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "specs"
    bad.mkdir()
    (bad / "ok.yaml").write_text((SPECS / "chatbot.yaml").read_text())
    (bad / "broken.yaml").write_text((SPECS / "config-server.yaml").read_text().replace("99.9", "101"))
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: slos\[0\]\.objective: 101 is outside"):
        build([bad], out, None)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left
    with pytest.raises(ConfigError):
        build([bad], tmp_path / "fresh", None)
    assert not (tmp_path / "fresh").exists()


def test_rebuild_replaces_the_previous_tree(tmp_path: Path):
    out = tmp_path / "build"
    build([SPECS], out, None)
    build([SPECS / "config-server.yaml"], out, None)
    assert sorted(p.name for p in (out / "prometheus/rules").iterdir()) == ["config-server.yml"]
    assert not (out / "grafana/service-chatbot.json").exists()


def test_build_refuses_to_replace_a_directory_it_did_not_write(tmp_path: Path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a monitoring build"):
        build([SPECS], tmp_path, None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_build_reports_slos_without_tests_or_alarms(tmp_path: Path):
    report = build([TESTDATA / "in-base.yaml"], tmp_path / "b", None)
    assert (
        set(report.untested) == {"svc01-slo02"} and "raw error-ratio query" in report.untested["svc01-slo02"]
    )
    assert set(report.no_alarms) == {"svc01-slo1", "svc01-slo02"}
    assert [p.name for p in report.test_files] == ["svc01-slo1.yml"]
