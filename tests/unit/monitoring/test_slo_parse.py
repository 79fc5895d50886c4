"""SLO specs into the typed model (``delivery/monitoring/slo.py``): what is accepted, and how bad input
is named (file, line, field) before anything is written.

The fixtures are Sloth's and OpenSLO's own (``tests/fixtures/sloth``, ``tests/fixtures/openslo``),
plus small specs written here. One deliberate divergence from Sloth is pinned: Sloth accepts
``validate/good/good-aa.yaml`` although its ``pageAlert`` key (camelCase, in a ``prometheus/v1``
file) is ignored, dropping the page alert's labels; we refuse it and name the line.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.monitoring import slo
from mangaassist.delivery.monitoring.slo import (
    GOOGLE_28D,
    GOOGLE_30D,
    EventsSLI,
    GoodTotalSLI,
    RawSLI,
    SpecError,
)

ROOT = Path(__file__).parents[3]
SLOTH = ROOT / "tests/fixtures/sloth"
TESTDATA = SLOTH / "testdata"
OPENSLO = ROOT / "tests/fixtures/openslo"
SPECS = ROOT / "monitoring/slos"

EVENTS = (
    'error_query: sum(rate(http_requests_total{code=~"5.."}[{{.window}}]))\n'
    "total_query: sum(rate(http_requests_total[{{.window}}]))"
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _indent(text: str, spaces: int) -> str:
    return textwrap.indent(text, " " * spaces).lstrip()


def sloth_spec(objective: str = "99.9", events: str = EVENTS, extra: str = "", alerting: str = "") -> str:
    """A one-SLO Sloth spec (line 5: objective, 10: the SLO's extra field, 12: alerting.name)."""
    return (
        'version: "prometheus/v1"\n'
        'service: "svc"\n'
        "slos:\n"
        '  - name: "slo1"\n'
        f"    objective: {objective}\n"
        "    sli:\n"
        f"      events:\n        {_indent(events, 8)}\n"
        f"    {extra}\n"
        "    alerting:\n"
        "      name: SvcAlert\n"
        f"      {alerting}\n"
    )


def problems(exc: pytest.ExceptionInfo[SpecError]) -> list[tuple[str, int, str]]:
    return [(p.file.name, p.line, p.field) for p in exc.value.problems]


# -- accepted -------------------------------------------------------------------------------------


def test_sloth_base_spec_becomes_two_slos_with_merged_labels_and_alerting():
    base, raw = slo.load_slos([TESTDATA / "in-base.yaml"])
    assert (base.id, base.service, base.name, base.objective) == ("svc01-slo1", "svc01", "slo1", 99.9)
    assert base.labels == {"global01k1": "global01v1", "global02k1": "global02v1"}
    assert isinstance(base.sli, EventsSLI) and "{{.window}}" in base.sli.error_query
    assert base.alerting.name == "myServiceAlert"
    assert base.alerting.page.labels == {"alert03k1": "alert03v1"}
    assert base.alerting.ticket.labels == {"alert04k1": "alert04v1"}
    assert base.alerting.annotations == {"alert02k1": "alert02k2"}
    assert base.location == slo.Location(TESTDATA / "in-base.yaml", 6)
    assert isinstance(raw.sli, RawSLI)
    assert raw.alerting.name == "" and not raw.alerting.enabled


def test_error_budget_uses_slothes_float_rounding():
    (base, _raw) = slo.load_slos([TESTDATA / "in-base.yaml"])
    assert base.error_budget == 0.0009999999999999432  # (100 - 99.9) / 100, as in the golden alerts
    assert base.objective_ratio == 0.9990000000000001


def test_multifile_keeps_document_order():
    ids = [s.id for s in slo.load_slos([TESTDATA / "in-multifile.yaml"])]
    assert ids == ["svc01-slo1", "svc01-slo02", "svc02-slo1", "svc02-slo02"]


def test_openslo_v1alpha_objective_becomes_name_index_without_alerts():
    (only,) = slo.load_slos([TESTDATA / "in-openslo.yaml"])
    assert (only.id, only.name, only.objective, only.spec) == (
        "svc01-slo1-0",
        "slo1-0",
        99.9,
        "openslo/v1alpha",
    )
    assert isinstance(only.sli, GoodTotalSLI)
    assert 'code!~"(5..|429)"' in only.sli.good_query
    assert not only.alerting.enabled


def test_openslo_v1_inline_indicator_ref_and_target_percent(tmp_path: Path):
    sli_file = write(
        tmp_path,
        "slis.yaml",
        """
        apiVersion: openslo/v1
        kind: SLI
        metadata:
          name: answers-bad
        spec:
          ratioMetric:
            counter: true
            bad:
              metricSource:
                type: Prometheus
                spec:
                  query: sum(rate(answers_total{fallback="true"}[{{.window}}]))
            total:
              metricSource:
                type: prometheus
                spec:
                  query: sum(rate(answers_total[{{.window}}]))
        """,
    )
    slo_file = write(
        tmp_path,
        "slos.yaml",
        """
        apiVersion: openslo/v1
        kind: SLO
        metadata:
          name: grounded
          labels:
            team: [a, b]
        spec:
          service: chat
          indicatorRef: answers-bad
          timeWindow:
            - duration: 30d
              isRolling: true
          budgetingMethod: Occurrences
          objectives:
            - targetPercent: 97.5
            - target: 0.99
              indicator:
                metadata: {name: inline}
                spec:
                  ratioMetric:
                    good:
                      metricSource: {type: Prometheus, spec: {query: 'sum(rate(ok_total[{{.window}}]))'}}
                    total:
                      metricSource: {type: Prometheus, spec: {query: 'sum(rate(all_total[{{.window}}]))'}}
        """,
    )
    first, second = slo.load_slos([sli_file, slo_file])
    assert (first.id, first.objective, first.labels) == ("chat-grounded-0", 97.5, {"team": "a,b"})
    assert isinstance(first.sli, EventsSLI)  # bad/total is an error ratio as it is
    assert first.sli.error_query.startswith('sum(rate(answers_total{fallback="true"}')
    assert (second.id, second.objective, second.spec) == ("chat-grounded-1", 99.0, "openslo/v1")
    assert isinstance(second.sli, GoodTotalSLI)


@pytest.mark.parametrize("name", ["good-multi.yaml", "good-openslo.yaml"])
def test_sloths_good_specs_are_accepted(name: str):
    assert slo.load_slos([TESTDATA / "validate/good" / name])


def test_our_specs_parse_with_the_metric_names_of_the_docstring():
    slos = {s.id: s for s in slo.load_slos([SPECS])}
    assert set(slos) == {
        "chatbot-chat-availability",
        "chatbot-chat-latency",
        "chatbot-grounded-answers",
        "intent-model-intent-availability",
        "config-server-config-availability",
    }
    latency = slo.sli_shape(slos["chatbot-chat-latency"].sli)
    assert isinstance(latency, slo.HistogramThreshold) and latency.le == "2.5"
    assert latency.count.metric == "mangaassist_router_latency_seconds_count"
    availability = slo.sli_shape(slos["chatbot-chat-availability"].sli)
    assert isinstance(availability, slo.CounterRatio) and availability.subset_is_error
    assert availability.total.metric == "mangaassist_router_requests_total"
    assert [m.render() for m in availability.extra] == ['status=~"5.."']
    assert not slos["chatbot-grounded-answers"].alerting.page.enabled  # a ticket, never a page
    assert slos["chatbot-grounded-answers"].alerting.ticket.enabled


# -- refused, with file, line and field ------------------------------------------------------------


def test_unknown_field_pagealert_is_refused_where_sloth_ignores_it():
    with pytest.raises(SpecError) as exc:
        slo.load_slos([TESTDATA / "validate/good/good-aa.yaml"])
    assert problems(exc) == [("good-aa.yaml", 21, "slos[0].alerting.pageAlert")]
    assert "unknown field" in str(exc.value)
    assert str(exc.value).startswith(
        f"{TESTDATA / 'validate/good/good-aa.yaml'}:21: slos[0].alerting.pageAlert"
    )


def test_every_problem_of_every_file_is_reported_together():
    with pytest.raises(SpecError) as exc:
        slo.load_slos([TESTDATA / "validate/bad"])
    assert problems(exc) == [
        ("bad-aa.yaml", 21, "slos[0].alerting.pageAlert"),
        ("bad-aa.yaml", 28, "slos[1].objective"),  # the second SLO's problem is not hidden by the first
        ("bad-multi.yaml", 77, "slos[1].sli"),
        ("bad-openslo.yaml", 22, "spec.timeWindows[0].count"),
    ]
    assert isinstance(exc.value, ConfigError)
    assert "101 is outside (0, 100]" in str(exc.value)
    assert "the time window is 4w but the SLO period is 30d" in str(exc.value)


def test_openslo_period_must_match_the_window_set_in_use():
    assert slo.load_slos([TESTDATA / "validate/bad/bad-openslo.yaml"], period_s=GOOGLE_28D.period_s)
    with pytest.raises(SpecError):
        slo.load_slos([TESTDATA / "validate/bad/bad-openslo.yaml"], period_s=GOOGLE_30D.period_s)


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        ("0", "0 is outside (0, 100]"),
        ("-1", "-1 is outside (0, 100]"),
        ("100.01", "100.01 is outside (0, 100]"),
        ('"99.9"', "must be a number, not str '99.9'"),
        ("true", "must be a number"),
        (".nan", "is not a finite number"),
    ],
)
def test_objective_outside_0_100_is_refused(tmp_path: Path, objective: str, message: str):
    path = write(tmp_path, "s.yaml", sloth_spec(objective=objective))
    with pytest.raises(SpecError) as exc:
        slo.load_slos([path])
    assert problems(exc) == [("s.yaml", 5, "slos[0].objective")]
    assert message in str(exc.value)


def test_objective_of_exactly_100_is_accepted(tmp_path: Path):
    (only,) = slo.load_slos([write(tmp_path, "s.yaml", sloth_spec(objective="100"))])
    assert only.objective == 100 and only.error_budget == 0


@pytest.mark.parametrize(
    ("events", "field", "message"),
    [
        (
            'error_query: sum(rate(x{code="5"}[5m]))\ntotal_query: sum(rate(x[{{.window}}]))',
            "slos[0].sli.events.error_query",
            "does not use {{.window}}",
        ),
        (
            "error_query: sum(rate(x[{{.window}}]))\ntotal_query: sum(rate(x[{{.window}}] offset {{.r}}))",
            "slos[0].sli.events.total_query",
            "only {{.window}} may be templated, not {{.r}}",
        ),
        (
            "error_query: sum(rate(x[{{.window}}])\ntotal_query: sum(rate(x[{{.window}}]))",
            "slos[0].sli.events.error_query",
            "unclosed '('",
        ),
        (
            "error_query: sum(rate(x[{{.window}}]))\nother: 1",
            "slos[0].sli.events.other",
            "unknown field",
        ),
    ],
)
def test_bad_queries_are_named(tmp_path: Path, events: str, field: str, message: str):
    with pytest.raises(SpecError) as exc:
        slo.load_slos([write(tmp_path, "s.yaml", sloth_spec(events=events))])
    assert [p[2] for p in problems(exc)] == [field]
    assert message in str(exc.value)


def test_window_template_with_spaces_is_accepted(tmp_path: Path):
    events = 'error_query: sum(rate(x{c="5"}[{{ .window }}]))\ntotal_query: sum(rate(x[{{.window}}]))'
    (only,) = slo.load_slos([write(tmp_path, "s.yaml", sloth_spec(events=events))])
    assert slo.render_query(only.sli.error_query, 300) == 'sum(rate(x{c="5"}[5m]))'  # type: ignore[union-attr]


def test_two_slos_with_one_id_across_files_name_both_places(tmp_path: Path):
    first = write(tmp_path, "a.yaml", sloth_spec())
    second = write(tmp_path, "b.yaml", sloth_spec(objective="99"))
    with pytest.raises(SpecError) as exc:
        slo.load_slos([tmp_path])
    assert problems(exc) == [("b.yaml", 4, "name")]
    assert f"SLO 'svc-slo1' (service 'svc', name 'slo1') is already declared at {first}:4" in str(exc.value)
    assert slo.load_slos([first]) and slo.load_slos([second])  # each alone is fine


def test_sloths_duplicate_fixtures_are_refused_for_the_duplicate_and_for_pagealert():
    """Sloth's duplicate fixtures also use ``pageAlert``, which we refuse: the first SLO of each file
    is refused for that, and the second (valid) one as a duplicate."""
    with pytest.raises(SpecError) as exc:
        slo.load_slos([TESTDATA / "validate_with_duplicates/prom"])
    assert problems(exc) == [
        ("bad-prom-1-duplicate.yaml", 21, "slos[0].alerting.pageAlert"),
        ("bad-prom-1-original.yaml", 21, "slos[0].alerting.pageAlert"),
        ("bad-prom-1-original.yaml", 27, "name"),
    ]
    assert "SLO 'svc01-slo02'" in str(exc.value)
    with pytest.raises(SpecError) as exc:
        slo.load_slos([TESTDATA / "validate_with_duplicates/bad-prom-multi-duplicates.yaml"])
    assert [p[1:] for p in problems(exc)] == [
        (22, "slos[0].alerting.pageAlert"),
        (66, "slos[0].alerting.pageAlert"),
        (72, "name"),
    ]
    with pytest.raises(SpecError) as exc:
        slo.load_slos([TESTDATA / "validate_with_duplicates/openslo"])
    assert problems(exc) == [("bad-openslo-1-original.yaml", 11, "name")]
    assert "SLO 'svc01-slo1-0'" in str(exc.value)


def test_invalid_version_is_named():
    with pytest.raises(SpecError) as exc:
        slo.load_slos([TESTDATA / "in-invalid-version.yaml"])
    assert problems(exc) == [("in-invalid-version.yaml", 1, "version")]
    assert "unsupported version 'prometheus/v999'" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (sloth_spec(extra="labels: {sloth_id: x}"), (10, "slos[0].labels.sloth_id"), "reserved"),
        (sloth_spec(extra="labels: {tier: 2}"), (10, "slos[0].labels.tier"), "must be a string, not int 2"),
        (sloth_spec(extra="plugins: {chain: []}"), (10, "slos[0].plugins"), "Sloth plugins are Go code"),
        (
            sloth_spec(alerting="name: Other"),
            (13, "slos[0].alerting.name"),
            "duplicate field (first at line 12)",
        ),
        (
            sloth_spec().replace("name: SvcAlert", "labels: {}"),
            (12, "slos[0].alerting"),
            "alerting.name is required",
        ),
        ("version: prometheus/v1\nservice: [a]\nslos: []\n", (2, "service"), "must be a scalar, not a list"),
        (
            "apiVersion: sloth.slok.dev/v1\nkind: PrometheusServiceLevel\n",
            (1, "(document)"),
            "(Kubernetes) is not supported",
        ),
        ("apiVersion: openslo/v1\nkind: Service\n", (1, "(document)"), "kind 'Service' is not supported"),
        ("just text\n", (1, "(document)"), "must be a mapping"),
        ("version: [\n", (2, "(yaml)"), "expected the node content"),
    ],
)
def test_malformed_specs_are_named(tmp_path: Path, text: str, where: tuple[int, str], message: str):
    with pytest.raises(SpecError) as exc:
        slo.load_slos([write(tmp_path, "s.yaml", text)])
    assert [p[1:] for p in problems(exc)] == [where]
    assert message in str(exc.value)


def test_missing_file_and_empty_directory(tmp_path: Path):
    with pytest.raises(SpecError, match="cannot read"):
        slo.load_slos([tmp_path / "nope.yaml"])
    with pytest.raises(SpecError, match="no SLO spec files"):
        slo.load_slos([tmp_path])


def test_openslo_examples_are_refused_with_their_lines():
    """The specification's own examples use what cannot become Prometheus burn-rate rules."""
    with pytest.raises(SpecError) as exc:
        slo.load_slos([OPENSLO / "v1alpha/slos.yaml"])
    assert problems(exc) == [
        ("slos.yaml", 9, "[0].spec.indicator"),
        ("slos.yaml", 42, "[1].spec.budgetingMethod"),
    ]
    assert "threshold metrics are not supported" in str(exc.value)
    with pytest.raises(SpecError) as exc:
        slo.load_slos([OPENSLO / "v1/slos.yaml"])
    assert problems(exc) == [("slos.yaml", 37, "[0].spec.budgetingMethod")]
    assert "'Timeslices': only budgetingMethod: Occurrences" in str(exc.value)


def test_openslo_v1_indicator_ref_to_a_datadog_sli_names_the_sli_file(tmp_path: Path):
    slo_file = write(
        tmp_path,
        "slo.yaml",
        """
        apiVersion: openslo/v1
        kind: SLO
        metadata: {name: search}
        spec:
          service: web
          indicatorRef: search-availability
          objectives: [{target: 0.99}]
        """,
    )
    with pytest.raises(SpecError) as exc:
        slo.load_slos([OPENSLO / "v1/slis.yaml", slo_file])
    assert problems(exc) == [("slis.yaml", 19, "[0].spec.ratioMetric.good.metricSource.type")]
    assert "'Datadog' is not supported: only Prometheus" in str(exc.value)
    with pytest.raises(SpecError, match="no kind: SLI document named 'search-availability'"):
        slo.load_slos([slo_file])


# -- durations, window sets, environments -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "printed"),
    [
        ("5m", 300, "5m"),
        ("30d", 30 * 86400, "30d"),
        ("28d", 28 * 86400, "4w"),
        ("72h", 3 * 86400, "3d"),
        ("24h", 86400, "1d"),
        ("168h", 7 * 86400, "1w"),
        ("2h24m", 8640, "2h24m"),
        ("90s", 90, "1m30s"),
        ("1y", 365 * 86400, "1y"),
    ],
)
def test_durations_print_as_prometheus_prints_them(text: str, seconds: int, printed: str):
    assert slo.parse_duration(text) == seconds
    assert slo.format_duration(seconds) == printed


@pytest.mark.parametrize("text", ["", "5", "5x", "0m", "1.5h", "500ms", "m5"])
def test_bad_durations_are_refused(text: str):
    with pytest.raises(ValueError, match="duration"):
        slo.parse_duration(text)


@pytest.mark.parametrize(
    ("builtin", "file"), [(GOOGLE_30D, "google-30d.yaml"), (GOOGLE_28D, "google-28d.yaml")]
)
def test_builtin_window_sets_equal_sloths_files(builtin: slo.WindowSet, file: str):
    assert slo.load_window_set(SLOTH / "alert-windows" / file, builtin.name) == builtin


def test_google_30d_factors_and_windows():
    factors = [round(c.factor(GOOGLE_30D.period_s), 9) for _, _, c in GOOGLE_30D.conditions()]
    assert factors == [14.4, 6, 3, 1]
    assert [slo.format_duration(w) for w in GOOGLE_30D.windows()] == [
        "5m",
        "30m",
        "1h",
        "2h",
        "6h",
        "1d",
        "3d",
    ]


def test_custom_7d_window_set_from_sloths_file():
    ws = slo.load_window_set(SLOTH / "windows/7d.yaml")
    assert (ws.name, ws.period) == ("7d", "1w")
    assert [c.factor(ws.period_s) for _, _, c in ws.conditions()] == [13.44, 3.5, 1.4000000000000001, 0.98]


def test_window_file_problems_are_named(tmp_path: Path):
    path = write(
        tmp_path,
        "w.yaml",
        """
        apiVersion: sloth.slok.dev/v1
        kind: AlertWindows
        spec:
          sloPeriod: 30d
          page:
            quick: {errorBudgetPercent: 2, shortWindow: 1h, longWindow: 5m}
            slow: {errorBudgetPercent: 5, shortWindow: 30m, longWindow: 6h}
          ticket:
            quick: {errorBudgetPercent: 10, shortWindow: 2h, longWindow: 1d}
            slow: {errorBudgetPercent: 10, shortWindow: 6h, longWindow: 3d}
        """,
    )
    with pytest.raises(SpecError) as exc:
        slo.load_window_set(path)
    assert problems(exc) == [("w.yaml", 6, "spec.page.quick.shortWindow")]


def test_repository_environments_dev_uses_short_windows_with_the_same_factors():
    envs = slo.load_environments(ROOT / "monitoring/environments.yaml")
    dev = envs.get("dev")
    assert dev.window_set.name == "dev-short" and dev.window_set.period == "1d"
    factors = [c.factor(dev.window_set.period_s) for _, _, c in dev.window_set.conditions()]
    assert factors == pytest.approx([14.4, 6, 3, 1])
    assert max(dev.window_set.windows()) <= 3 * 3600  # a demo sees every window within hours
    assert envs.get("prod").window_set == GOOGLE_30D
    specs = slo.load_slos([SPECS])
    changed = {s.key: s.objective for s in slo.apply_environment(specs, dev)}
    assert changed["chatbot/chat-latency"] == 95
    assert changed["chatbot/chat-availability"] == 99.5  # not overridden


def test_environment_problems_are_named(tmp_path: Path):
    path = write(
        tmp_path,
        "environments.yaml",
        """
        environments:
          dev:
            window_set: google-30d
            objectives:
              chatbot/renamed: 99
        """,
    )
    env = slo.load_environments(path).get("dev")
    with pytest.raises(SpecError) as exc:
        slo.apply_environment(slo.load_slos([SPECS]), env)
    assert problems(exc) == [("environments.yaml", 5, "environments.dev.objectives.chatbot/renamed")]
    with pytest.raises(ConfigError, match=r"no environment 'qa' \(known: dev\)"):
        slo.load_environments(path).get("qa")
    bad = write(tmp_path, "e2.yaml", "environments:\n  dev:\n    window_set: fast\n")
    with pytest.raises(SpecError, match="no window set 'fast'") as exc2:
        slo.load_environments(bad)
    assert problems(exc2) == [("e2.yaml", 3, "environments.dev.window_set")]


# -- SLI shapes -----------------------------------------------------------------------------------


def test_shapes_that_cannot_be_derived_say_why():
    _base, raw = slo.load_slos([TESTDATA / "in-base.yaml"])
    with pytest.raises(slo.ShapeError, match="raw error-ratio query"):
        slo.sli_shape(raw.sli)
    with pytest.raises(slo.ShapeError, match="different metrics"):
        slo.sli_shape(EventsSLI("sum(rate(a_total[{{.window}}]))", "sum(rate(b_total[{{.window}}]))"))
    with pytest.raises(slo.ShapeError, match="plus at least one matcher"):
        slo.sli_shape(EventsSLI("sum(rate(a_total[{{.window}}]))", "sum(rate(a_total[{{.window}}]))"))
    with pytest.raises(slo.ShapeError, match="is not sum"):
        slo.sli_shape(EventsSLI("sum(increase(a_total[{{.window}}]))", "sum(rate(a_total[{{.window}}]))"))


def test_matchers_behave_like_prometheus():
    m = slo.Matcher("code", "=~", "5..")
    assert m.matches({"code": "503"}) and not m.matches({"code": "5030"}) and not m.matches({})
    assert slo.Matcher("code", "!=", "200").matches({})  # a missing label is ""
    assert slo.Matcher("x", "!~", "a|b").matches({"x": "c"})


def test_openslo_v1_sli_documents_are_validated(tmp_path: Path):
    sli = "apiVersion: openslo/v1\nkind: SLI\nmetadata: {name: a}\nspec: {}\n"
    path = write(
        tmp_path, "s.yaml", sli + "---\n" + sli + "---\napiVersion: openslo/v1\nkind: SLI\nspec: {}\n"
    )
    with pytest.raises(SpecError) as exc:
        slo.load_slos([path])
    assert problems(exc) == [("s.yaml", 8, "metadata.name"), ("s.yaml", 11, "(document)")]
    assert "a second SLI named 'a' (first at" in str(exc.value)
    assert "missing required field: metadata" in str(exc.value)


def test_unsafe_yaml_tags_are_refused_as_values(tmp_path: Path):
    path = write(tmp_path, "s.yaml", sloth_spec(objective="!!python/object:os.system 99"))
    with pytest.raises(SpecError) as exc:
        slo.load_slos([path])
    assert problems(exc) == [("s.yaml", 5, "slos[0].objective")]
    assert "must be a number, not a value tagged tag:yaml.org,2002:python/object:os.system" in str(exc.value)
