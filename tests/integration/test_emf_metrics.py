"""The chatbot's EMF lines on AWS (``chatbot.emf``), from a real chatbot process: what CloudWatch
would extract from its standard output, put into moto's CloudWatch, is what CD-08's alarms and the
CloudWatch ``Metrics`` provider read (their metric names and dimensions, not this test's)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.delivery.monitoring.build import resolve
from mangaassist.delivery.monitoring.cloudwatch import alarms_document
from tests.conftest import server_env
from tests.emf_extract import extract
from tests.moto_server import client, moto_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def test_a_chatbot_with_emf_on_writes_what_the_alarms_and_the_judges_read(
    state_home: Path, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    env = server_env(state_home, MANGAASSIST_EMF="1", MANGAASSIST_REVISION="r7")
    with ChatbotProcess(env=env, log_path=log) as server:
        asked = {
            "hello there": None,
            "do you have the manga Zzyzx Quantum Ferret volume 2?": None,  # no such series: fallback
            "my email is ann@example.com, where is my order?": None,  # PII: guardrail
        }
        for i, message in enumerate(asked):
            r = httpx.post(
                f"{server.url}/v1/chat", json={"session_id": f"s{i}", "message": message}, timeout=30
            )
            assert r.status_code == 200
            asked[message] = r.headers.get("X-MangaAssist-Fallback") or r.headers.get(
                "X-MangaAssist-Guardrail"
            )
        shadow = httpx.post(
            f"{server.url}/v1/chat",
            json={"session_id": "mirror", "message": "hello"},
            headers={"X-MangaAssist-Shadow": "1"},
            timeout=30,
        )
        assert shadow.status_code == 200
        assert (
            httpx.post(f"{server.url}/v1/feedback", json={"session_id": "s0", "rating": "up"}).status_code
            == 200
        )
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    fallbacks = sum(1 for m, flag in asked.items() if "Zzyzx" in m and flag)
    guardrails = sum(1 for m, flag in asked.items() if "@" in m and flag)
    assert (fallbacks, guardrails) == (1, 1), asked

    lines = [line for line in log.read_text().splitlines() if line.startswith('{"_aws"')]
    data = [d for line in lines for d in extract(line)]
    assert data and {d["namespace"] for d in data} == {"MangaAssist"}

    def total(name: str, **dimensions: str) -> float:
        """CloudWatch's sum of a metric with exactly these dimensions (moto's statistics match any
        datum that has them, so they are summed here as CloudWatch would)."""
        return sum(
            d["datum"]["Value"]
            for d in data
            if d["datum"]["MetricName"] == name
            and {x["Name"]: x["Value"] for x in d["datum"]["Dimensions"]} == dimensions
        )

    with moto_server() as endpoint:  # CloudWatch's API takes every datum as extracted
        cw = client(endpoint, "cloudwatch")
        for d in data:
            cw.put_metric_data(Namespace=d["namespace"], MetricData=[d["datum"]])
        listed = {
            (m["MetricName"], tuple(sorted((x["Name"], x["Value"]) for x in m["Dimensions"])))
            for m in cw.list_metrics(Namespace="MangaAssist")["Metrics"]
        }
        assert ("RouterRequests", (("Service", "chatbot"),)) in listed
        assert ("RouterRequests", (("Service", "chatbot"), ("Status", "2xx"))) in listed

    # what the prod alarms of the chatbot's SLOs read, from the compiled alarm document
    slos, ws, _ = resolve([ROOT / "monitoring" / "slos"], "prod")
    mapping = alarms_document(slos, ws, "prod")["slos"]
    availability = mapping["chatbot-chat-availability"]["metrics"]
    grounded = mapping["chatbot-grounded-answers"]["metrics"]
    assert total(availability["total"]["MetricName"], **availability["total"]["Dimensions"]) == 3
    assert total(availability["errors"]["MetricName"], **availability["errors"]["Dimensions"]) == 0
    assert total(grounded["total"]["MetricName"], **grounded["total"]["Dimensions"]) == 3
    assert total(grounded["errors"]["MetricName"], **grounded["errors"]["Dimensions"]) == 1
    latency = mapping["chatbot-chat-latency"]["metrics"]["goodpct"]
    assert total(latency["MetricName"], **latency["Dimensions"]) > 0
    # what CloudWatchMetrics asks for per revision (platform.metrics' names)
    assert total("RouterQualityFlags", Service="chatbot", Revision="r7", Flag="fallback") == 1
    assert total("RouterQualityFlags", Service="chatbot", Revision="r7", Flag="guardrail") == 1
    assert total("RouterFeedback", Service="chatbot", Revision="r7", Rating="up") == 1
    assert all(json.loads(line).get("Service") == "chatbot" for line in lines)
