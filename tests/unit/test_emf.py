"""``chatbot.emf``: each event's EMF document, valid by the specification (``tests/emf_extract``),
with the metric names and dimensions CD-08's alarms and the CloudWatch provider read."""

from __future__ import annotations

import io
import json

import pytest

from mangaassist.chatbot.emf import EmfWriter
from mangaassist.core.errors import ConfigError
from tests.emf_extract import InvalidEmf, extract


def _writer() -> tuple[EmfWriter, io.StringIO]:
    out = io.StringIO()
    return EmfWriter("chatbot", "r2", stream=out, clock=lambda: 1765090000.25), out


def _data(out: io.StringIO) -> list[tuple[str, dict[str, str], float, str]]:
    rows = []
    for line in out.getvalue().splitlines():
        for d in extract(line):
            datum = d["datum"]
            dims = {x["Name"]: x["Value"] for x in datum["Dimensions"]}
            rows.append((datum["MetricName"], dims, datum["Value"], datum["Unit"]))
    return rows


def test_a_request_counts_per_service_and_status_class_with_its_latency() -> None:
    emf, out = _writer()
    emf.request("/v1/chat", 503, 0.0421)
    emf.request("/healthz", 200, 0.001)  # not a counted path: nothing written
    assert len(out.getvalue().splitlines()) == 1
    assert json.loads(out.getvalue())["_aws"]["Timestamp"] == 1765090000250
    assert _data(out) == [
        ("RouterRequests", {"Service": "chatbot"}, 1.0, "Count"),
        ("RouterRequests", {"Service": "chatbot", "Status": "5xx"}, 1.0, "Count"),
        ("RouterLatency", {"Service": "chatbot"}, 0.0421, "Seconds"),
    ]


def test_an_answer_counts_its_fallback_and_one_flag_line_per_flag() -> None:
    emf, out = _writer()
    emf.answer(fallback=True, guardrail=True)
    emf.answer(fallback=False, guardrail=False)
    rows = _data(out)
    assert ("RouterAnswers", {"Service": "chatbot", "Fallback": "true"}, 1.0, "Count") in rows
    assert ("RouterAnswers", {"Service": "chatbot", "Fallback": "false"}, 1.0, "Count") in rows
    assert [r for r in rows if r[0] == "RouterAnswers" and r[1] == {"Service": "chatbot"}] == [
        ("RouterAnswers", {"Service": "chatbot"}, 1.0, "Count")
    ] * 2
    flags = sorted(r[1]["Flag"] for r in rows if r[0] == "RouterQualityFlags")
    assert flags == ["fallback", "guardrail"]
    assert all(r[1]["Revision"] == "r2" for r in rows if r[0] == "RouterQualityFlags")


def test_feedback_by_revision_and_rating_and_a_bad_rating_refused() -> None:
    emf, out = _writer()
    emf.feedback("down")
    assert _data(out) == [
        ("RouterFeedback", {"Service": "chatbot", "Revision": "r2", "Rating": "down"}, 1.0, "Count")
    ]
    with pytest.raises(ValueError, match="rating 'meh'"):
        emf.feedback("meh")


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MANGAASSIST_EMF", raising=False)
    assert EmfWriter.from_env("chatbot", "r1", ("/v1/chat",)) is None
    monkeypatch.setenv("MANGAASSIST_EMF", "0")
    assert EmfWriter.from_env("chatbot", "r1", ("/v1/chat",)) is None
    monkeypatch.setenv("MANGAASSIST_EMF", "1")
    monkeypatch.setenv("MANGAASSIST_SERVICE", "chatbot-burst")
    monkeypatch.setenv("MANGAASSIST_METRICS_NAMESPACE", "Other")
    emf = EmfWriter.from_env("chatbot", "r1", ("/v1/chat",))
    assert emf is not None and (emf.service, emf.namespace) == ("chatbot-burst", "Other")
    monkeypatch.setenv("MANGAASSIST_EMF", "yes please")
    with pytest.raises(ConfigError, match="MANGAASSIST_EMF='yes please'"):
        EmfWriter.from_env("chatbot", "r1", ("/v1/chat",))


def test_the_extraction_double_refuses_what_cloudwatch_would() -> None:
    good = {
        "_aws": {
            "Timestamp": 1,
            "CloudWatchMetrics": [
                {"Namespace": "N", "Dimensions": [["Service"]], "Metrics": [{"Name": "M"}]}
            ],
        },
        "Service": "s",
        "M": 1,
    }
    assert extract(json.dumps(good))
    for broken in (
        {**good, "_aws": {**good["_aws"], "Timestamp": "now"}},
        {**good, "Service": 3},
        {**good, "M": "one"},
        {k: v for k, v in good.items() if k != "M"},
    ):
        with pytest.raises(InvalidEmf):
            extract(json.dumps(broken))
