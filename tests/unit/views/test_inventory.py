"""``views.inventory``'s pure parts: traffic figures from router counters and observations, one
service's view, a config profile's view, SLOs from built rule files and from the specs, alerts from
Prometheus's rule groups, aliases, and failing soft."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.monitoring.build import build
from mangaassist.platform.compute import (
    NotRunning,
    RevisionHealth,
    RevisionStatus,
    ServiceStatus,
    Shadow,
    WorkerState,
    WorkerStatus,
)
from mangaassist.platform.config_store import ConfigVersion, Rollout
from mangaassist.views import inventory

ROOT = Path(__file__).parents[3]
SLOS = ROOT / "monitoring" / "slos"


def obs(
    seq: int, time: float, revision: str, status: int = 200, latency_ms: float = 10.0, **extra: Any
) -> dict[str, Any]:
    """One router observation, as ``/_router/stats?cursor=N`` lists it."""
    return {
        "seq": seq,
        "time": time,
        "kind": extra.pop("kind", "request"),
        "revision": revision,
        "status": status,
        "latency_ms": latency_ms,
        "error": extra.pop("error", None),
        "fallback": False,
        "guardrail": False,
        "pinned": extra.pop("pinned", False),
        "session": "s",
        "rating": extra.pop("rating", None),
    }


# -- traffic ------------------------------------------------------------------------------------------


def test_recent_traffic_counts_the_window_only_by_revision() -> None:
    now = 1000.0
    observations = [
        obs(1, 900.0, "r1", latency_ms=999.0),  # before the window (60 s): not counted
        obs(2, 950.0, "r1", latency_ms=10.0),
        obs(3, 951.0, "r1", status=503, latency_ms=30.0),
        obs(4, 952.0, "r1", latency_ms=20.0, pinned=True),
        obs(5, 953.0, "r2", status=0, latency_ms=2000.0, error="timeout"),
        obs(6, 954.0, "r2", kind="feedback", status=0, latency_ms=0.0, rating="down"),  # not a request
        obs(7, 999.0, "r2", latency_ms=5.0),
    ]
    recent = inventory.recent_traffic(observations, now=now, window_s=60.0)
    assert recent["window_s"] == 60.0 and recent["truncated"] is False
    r1, r2 = recent["revisions"]["r1"], recent["revisions"]["r2"]
    assert r1 == {
        "requests": 3,
        "rate_per_s": 3 / 60,
        "failed": 1,
        "error_rate": 1 / 3,
        "p50_ms": 20.0,
        "p99_ms": 30.0,
        "pinned": 1,
    }
    assert (r2["requests"], r2["failed"], r2["error_rate"]) == (2, 1, 0.5)
    assert (r2["p50_ms"], r2["p99_ms"]) == (5.0, 2000.0)


def test_recent_traffic_shortens_a_window_it_did_not_read_whole() -> None:
    # the oldest observation read is number 101, 20 s ago: the 100 before it were not read
    observations = [obs(101 + i, 980.0 + i, "r1") for i in range(10)]
    recent = inventory.recent_traffic(observations, now=1000.0, window_s=60.0)
    assert recent["truncated"] is True
    assert recent["window_s"] == pytest.approx(20.0)
    assert recent["revisions"]["r1"]["rate_per_s"] == pytest.approx(10 / 20.0)
    # read from the first observation on: nothing older exists, the window stays whole
    whole = inventory.recent_traffic([obs(1, 980.0, "r1")], now=1000.0, window_s=60.0)
    assert (whole["truncated"], whole["window_s"]) == (False, 60.0)
    assert inventory.recent_traffic([], now=1000.0) == {"window_s": 60.0, "truncated": False, "revisions": {}}


def test_revision_traffic_has_the_error_rate_and_no_infinities() -> None:
    counters = {
        "requests": 40,
        "failed": 10,
        "statuses": {"200": 30, "503": 8},
        "transport_errors": {"timeout": 2},
        "p50_ms": 1.5,
        "p99_ms": float("inf"),  # beyond the router's last bucket
        "pinned": 3,
        "feedback": {"up": 2},
    }
    traffic = inventory.revision_traffic(counters)
    assert (traffic["requests"], traffic["failed"], traffic["error_rate"]) == (40, 10, 0.25)
    assert (traffic["p50_ms"], traffic["p99_ms"], traffic["pinned"]) == (1.5, None, 3)
    assert traffic["transport_errors"] == {"timeout": 2} and traffic["feedback"] == {"up": 2}
    json.dumps(traffic, allow_nan=False)  # JSON a browser parses
    assert inventory.revision_traffic({})["error_rate"] is None


def _revision(name: str, weight: float, states: list[WorkerState], health: RevisionHealth) -> RevisionStatus:
    workers = tuple(
        WorkerStatus(pid=100 + i, port=9000 + i, state=s, restarts=0) for i, s in enumerate(states)
    )
    return RevisionStatus(name, "d" * 64, len(states), health, None, weight, workers)


STATUS = ServiceStatus(
    name="chatbot",
    url="http://127.0.0.1:8080",
    revisions=(
        _revision("r1", 90.0, [WorkerState.READY, WorkerState.READY], RevisionHealth.HEALTHY),
        _revision("r2", 10.0, [WorkerState.READY, WorkerState.RESTARTING], RevisionHealth.DEGRADED),
        _revision("r3", 0.0, [], RevisionHealth.UNHEALTHY),
    ),
    weights={"r1": 90.0, "r2": 10.0},
    shadow=Shadow("r3", 0.2),
)


def test_service_view_merges_status_counters_recent_traffic_and_shadow() -> None:
    snapshot = {
        "service": "chatbot",
        "since": 500.0,
        "cursor": 3,
        "unrouted": {"unknown_revision": 1},
        "revisions": {
            "r1": {"requests": 10, "failed": 1, "p50_ms": 2.0, "p99_ms": 8.0, "pinned": 0},
            "r2": {"requests": 4, "failed": 0, "pinned": 2},
        },
        "shadow": {
            "r3": {
                "requests": 5,
                "statuses": {"200": 3, "500": 1},
                "errors": {"timeout": 1},
                "intent_compared": 3,
                "intent_agreed": 2,
            }
        },
        "observations": [obs(1, 990.0, "r1"), obs(2, 991.0, "r1", status=500), obs(3, 992.0, "r2")],
    }
    view = inventory.service_view(STATUS, snapshot, now=1000.0, window_s=60.0)
    assert view["name"] == "chatbot" and view["weights"] == {"r1": 90.0, "r2": 10.0}
    r1, r2, r3 = view["revisions"]
    assert [r["name"] for r in view["revisions"]] == ["r1", "r2", "r3"]
    assert (r1["weight"], r1["health"], r1["workers"], r1["ready_workers"]) == (90.0, "healthy", 2, 2)
    assert (r2["health"], r2["ready_workers"]) == ("degraded", 1)
    assert (r3["health"], r3["ready_workers"], r3["workers"]) == ("unhealthy", 0, 0)
    assert (r1["traffic"]["requests"], r1["traffic"]["error_rate"]) == (10, 0.1)
    assert (r1["recent"]["requests"], r1["recent"]["failed"]) == (2, 1)
    assert r2["recent"]["requests"] == 1
    assert r3["recent"] == inventory.IDLE and r3["traffic"]["requests"] == 0
    assert view["pinned"] == {"r2": 2}
    shadow = view["shadow"]
    assert (shadow["revision"], shadow["share"]) == ("r3", 0.2)
    assert shadow["traffic"]["failed"] == 2 and shadow["traffic"]["error_rate"] == 0.4
    assert shadow["traffic"]["intent_agreement"] == pytest.approx(2 / 3)
    stats = view["stats"]
    assert (
        stats["available"] is True and stats["cursor"] == 3 and stats["unrouted"] == {"unknown_revision": 1}
    )
    assert stats["recent_window_s"] == 60.0 and stats["recent_truncated"] is False
    json.dumps(view, allow_nan=False)


def test_service_view_without_stats_still_lists_revisions() -> None:
    view = inventory.service_view(STATUS, None, now=1000.0, stats_error="the router does not answer")
    assert view["stats"] == {"available": False, "error": "the router does not answer"}
    assert [r["weight"] for r in view["revisions"]] == [90.0, 10.0, 0.0]
    assert all(r["traffic"] is None and r["recent"] is None for r in view["revisions"])
    assert view["shadow"] == {"revision": "r3", "share": 0.2, "traffic": None}
    assert view["pinned"] == {}


# -- config profiles ------------------------------------------------------------------------------------


def _version(profile: str, version: str) -> ConfigVersion:
    return ConfigVersion(profile, version, {"secret": "content"}, "2026-01-01T00:00:00Z", "ana", "why")


def test_config_profile_view_marks_live_and_candidate_and_the_rollout_share() -> None:
    versions = [_version("prompts", "prompts-a"), _version("prompts", "prompts-b")]
    view = inventory.config_profile_view(Rollout("prompts", "prompts-a", "prompts-b", 20.0, 7), versions)
    assert view["live"] == "prompts-a" and view["revision"] == 7
    assert view["rollout"] == {"candidate": "prompts-b", "percentage": 20.0}
    assert [(v["version"], v["live"], v["candidate"]) for v in view["versions"]] == [
        ("prompts-a", True, False),
        ("prompts-b", False, True),
    ]
    assert "content" not in view["versions"][0] and view["versions"][0]["author"] == "ana"
    done = inventory.config_profile_view(Rollout("prompts", "prompts-b", None, 0.0, 8), versions)
    assert done["rollout"] is None and [v["live"] for v in done["versions"]] == [False, True]
    empty = inventory.config_profile_view(Rollout("flags", None, None, 0.0), [])
    assert (empty["live"], empty["versions"], empty["rollout"]) == (None, [], None)


# -- models ------------------------------------------------------------------------------------------------


def test_alias_map_names_every_alias_once() -> None:
    listed = [
        {"version": "1", "aliases": ["previous"]},
        {"version": "2", "aliases": ("champion",)},
        {"version": "3", "aliases": []},
    ]
    assert inventory.alias_map(listed) == {"candidate": None, "champion": "2", "previous": "1"}
    assert inventory.alias_map([]) == {"candidate": None, "champion": None, "previous": None}


# -- monitoring ------------------------------------------------------------------------------------------


def test_slos_from_installed_rules_match_the_specs_compiled_for_the_environment(tmp_path: Path) -> None:
    report = build([SLOS], tmp_path / "out", "dev")
    deployed = inventory.deployed_slos(report.rule_files)
    spec = inventory.spec_slos([SLOS], "dev")
    assert (spec["window_set"], spec["period"]) == ("dev-short", "1d")
    assert [s["id"] for s in deployed] == [s["id"] for s in spec["items"]] == list(report.slos)
    for rules_slo, spec_slo in zip(deployed, spec["items"], strict=True):
        assert rules_slo == {**spec_slo, "description": None}
    by_id = {s["id"]: s for s in deployed}
    latency = by_id["chatbot-chat-latency"]
    assert (latency["objective"], latency["error_budget"], latency["period_days"]) == (95.0, 0.05, 1.0)
    assert by_id["chatbot-chat-availability"]["alert"] == "ChatbotAvailabilityBudgetBurn"
    grounded = by_id["chatbot-grounded-answers"]  # ticket only
    assert (grounded["page"], grounded["ticket"]) == (False, True)
    # prod's objectives and 30-day windows, from the same specs
    prod = {s["id"]: s for s in inventory.spec_slos([SLOS], "prod")["items"]}
    assert (prod["chatbot-chat-latency"]["objective"], prod["chatbot-chat-latency"]["period_days"]) == (
        99.0,
        30.0,
    )


def test_an_environment_the_specs_do_not_know_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no environment 'nowhere'"):
        inventory.spec_slos([SLOS], "nowhere")


def test_prometheus_alerts_lists_active_alerts_firing_first() -> None:
    groups = [
        {
            "name": "sloth-slo-meta-recordings-chatbot-chat-availability",
            "rules": [{"type": "recording", "name": "slo:objective:ratio", "health": "ok"}],
        },
        {
            "name": "sloth-slo-alerts-chatbot-chat-availability",
            "rules": [
                {
                    "type": "alerting",
                    "name": "ChatbotAvailabilityBudgetBurn",
                    "state": "firing",
                    "alerts": [
                        {
                            "labels": {
                                "alertname": "ChatbotAvailabilityBudgetBurn",
                                "sloth_service": "chatbot",
                                "sloth_slo": "chat-availability",
                                "sloth_severity": "ticket",
                            },
                            "annotations": {"summary": "chatbot chat-availability burns", "title": "t"},
                            "state": "pending",
                            "activeAt": "2026-01-01T00:00:10Z",
                            "value": "2e+01",
                        },
                        {
                            "labels": {
                                "alertname": "ChatbotAvailabilityBudgetBurn",
                                "sloth_service": "chatbot",
                                "sloth_slo": "chat-availability",
                                "sloth_severity": "page",
                            },
                            "annotations": {"title": "(page) chatbot chat-availability"},
                            "state": "firing",
                            "activeAt": "2026-01-01T00:00:00Z",
                            "value": "1e+02",
                        },
                    ],
                },
                {"type": "alerting", "name": "Quiet", "state": "inactive", "alerts": []},
            ],
        },
    ]
    alerts = inventory.prometheus_alerts(groups)
    assert [(a["state"], a["severity"]) for a in alerts] == [("firing", "page"), ("pending", "ticket")]
    first = alerts[0]
    assert (first["name"], first["service"], first["slo"]) == (
        "ChatbotAvailabilityBudgetBurn",
        "chatbot",
        "chat-availability",
    )
    assert (first["summary"], first["since"]) == ("(page) chatbot chat-availability", "2026-01-01T00:00:00Z")
    assert alerts[1]["summary"] == "chatbot chat-availability burns"


# -- failing soft ----------------------------------------------------------------------------------------


def test_a_section_that_cannot_be_read_says_why_instead_of_raising() -> None:
    def no_plane() -> dict[str, Any]:
        raise NotRunning("no control plane runs for /tmp/x (run `mangaassist up`)")

    def broken() -> dict[str, Any]:
        raise ValueError("bad row")

    assert inventory._soft(no_plane) == {
        "available": False,
        "error": "no control plane runs for /tmp/x (run `mangaassist up`)",
    }
    assert inventory._soft(broken) == {"available": False, "error": "ValueError: bad row"}
    assert inventory._soft(lambda: {"x": 1}) == {"available": True, "x": 1}
