"""``views.inventory`` against a real local platform: a control plane (the test workload behind real
routers, with Prometheus and Alertmanager), the config server as its own process, LanceDB, the
widget's local site and MLflow, all under one state directory; and a platform where nothing runs.

The control plane comes from the platform tests' own helpers (``tests/integration/platform/conftest``),
the config server from the CD-06 tests' (``tests/integration/config/conftest``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from mangaassist.cli.frontend_cmds import previews_app
from mangaassist.cli.kb_cmds import kb_app
from mangaassist.delivery.model_promotion import promote
from mangaassist.delivery.monitoring.build import build
from mangaassist.delivery.pipelines import monitoring as cd08
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import PIN_HEADER, RevisionHealth
from mangaassist.platform.factory import Platform, platform_for
from mangaassist.platform.local.client import LocalCompute, start_control_plane, stop_control_plane
from mangaassist.platform.settings import load_settings
from mangaassist.platform.vector import LIVE_ALIAS, IndexRecord, VectorIndex
from mangaassist.views import inventory
from tests.integration.config.conftest import ConfigServer, start_config_server
from tests.integration.platform.conftest import Plane, write_config
from tests.waiting import eventually

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[3]
SHOP, QUIET = "shop", "quiet"
MONITORING = (
    "[environments.test.monitoring]\nprometheus_port = 0\nalertmanager_port = 0\nscrape_interval_s = 1\n"
)
DRILL_RULES = """
groups:
  - name: inventory-drill
    rules:
      - alert: InventoryDrill
        expr: vector(1)
        labels: {sloth_service: shop, sloth_slo: availability, sloth_severity: page}
        annotations: {summary: "shop drill"}
"""


@dataclass
class Stage:
    plane: Plane
    config: Path
    config_server: ConfigServer


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    """One control plane (services ``shop`` and ``quiet``, Prometheus and Alertmanager) and the config
    server of its state directory."""
    directory = tmp_path_factory.mktemp("inventory")
    config = write_config(directory, (SHOP, QUIET))
    with config.open("a") as out:
        out.write(MONITORING)
    settings = load_settings("test", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=60)
    compute = LocalCompute(settings.run_dir)
    server = start_config_server(settings.home)
    try:
        artifact = pack_source(ROOT / "src", settings.home / "artifacts")
        yield Stage(Plane(settings, compute, artifact), config, server)
    finally:
        compute.close()
        if server.proc.poll() is None:
            server.kill()
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left after stop: {report.left}"


@pytest.fixture
def platform(stage: Stage, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The stage's environment as the dashboard opens it (``platform.factory``), one per test."""
    monkeypatch.delenv("MANGAASSIST_CONFIG_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with platform_for(stage.plane.settings) as opened:
        yield opened


# -- services ---------------------------------------------------------------------------------------


def test_services_show_revisions_weights_health_and_what_the_router_counted(
    stage: Stage, platform: Platform
) -> None:
    plane, compute = stage.plane, stage.plane.compute
    compute.deploy(SHOP, plane.revision("r1"))
    compute.deploy(SHOP, plane.revision("r2", TESTAPP_FAIL_EVERY="4"))  # every 4th chat answers 500
    broken = compute.deploy(SHOP, plane.revision("r3", TESTAPP_NEVER_READY="no model package"))
    assert broken.health is RevisionHealth.UNHEALTHY
    compute.set_weights(SHOP, {"r1": 75, "r2": 25})
    compute.set_shadow(SHOP, "r1", 1.0)  # r2's requests mirrored to r1 (a shadow's own are not)
    url = plane.url(SHOP)
    served: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    mirrored = 0
    with httpx.Client(timeout=10) as client:
        for i in range(60):
            r = client.post(f"{url}/v1/chat", json={"message": "hi"}, headers={"X-Session-Id": f"inv-{i}"})
            revision = r.json()["revision"]
            served[revision] += 1
            failed[revision] += r.status_code >= 500
            mirrored += revision == "r2"
        for _ in range(3):
            r = client.post(f"{url}/v1/chat", json={"message": "hi"}, headers={PIN_HEADER: "r2"})
            assert r.json()["revision"] == "r2"
            served["r2"] += 1
            failed["r2"] += r.status_code >= 500
    assert served["r1"] and served["r2"] > 3, served  # both revisions got conversations

    def shadow_done() -> dict[str, Any] | None:
        view = inventory.services(platform)
        shop = next(s for s in view["services"] if s["name"] == SHOP)
        return view if shop["shadow"]["traffic"]["requests"] == mirrored else None

    view = eventually(shadow_done, 15, "every mirrored request counted")
    assert view["available"] is True and view["environment"] == "test"
    assert [s["name"] for s in view["services"]] == sorted([SHOP, QUIET])
    quiet = next(s for s in view["services"] if s["name"] == QUIET)
    assert quiet["revisions"] == [] and quiet["stats"]["available"] is True
    shop = next(s for s in view["services"] if s["name"] == SHOP)
    assert shop["url"] == url and shop["weights"] == {"r1": 75.0, "r2": 25.0}
    revisions = {r["name"]: r for r in shop["revisions"]}
    assert {name: r["weight"] for name, r in revisions.items()} == {"r1": 75.0, "r2": 25.0, "r3": 0.0}
    for name in ("r1", "r2"):
        rev = revisions[name]
        assert (rev["health"], rev["workers"], rev["ready_workers"]) == ("healthy", 1, 1)
        assert (rev["traffic"]["requests"], rev["traffic"]["failed"]) == (served[name], failed[name])
        assert rev["traffic"]["error_rate"] == failed[name] / served[name]
        assert rev["traffic"]["p50_ms"] is not None
        recent = rev["recent"]
        assert (recent["requests"], recent["failed"]) == (served[name], failed[name])
        assert recent["rate_per_s"] == pytest.approx(served[name] / inventory.RECENT_WINDOW_S)
    # r2's process answers every 4th of its chats with a 500, and only its own requests reach it
    assert failed["r2"] == served["r2"] // 4 and failed["r1"] == 0
    assert revisions["r2"]["recent"]["pinned"] == 3 and shop["pinned"] == {"r2": 3}
    r3 = revisions["r3"]
    assert (r3["health"], r3["ready_workers"], r3["traffic"]["requests"]) == ("unhealthy", 0, 0)
    assert "no model package" in r3["reason"]
    assert shop["shadow"]["revision"] == "r1" and shop["shadow"]["share"] == 1.0
    assert shop["shadow"]["traffic"]["failed"] == 0
    assert shop["stats"]["available"] is True and shop["stats"]["recent_truncated"] is False
    json.dumps(view, allow_nan=False)


# -- config profiles ------------------------------------------------------------------------------------


def test_config_profiles_show_versions_the_live_one_and_a_rollout_share(
    stage: Stage, platform: Platform
) -> None:
    store = stage.config_server.store
    first = store.create_version("flags", {"version": 1, "features": []}, author="ana", message="first")
    store.promote("flags", first.version, actor="ana")
    second = store.create_version("flags", {"version": 2, "features": []}, author="bo", message="second")
    store.set_rollout("flags", candidate=second.version, percentage=20.0, actor="bo")

    page = inventory.config_profiles(platform)
    assert page["available"] is True and page["url"] == stage.config_server.url
    profiles = {p["profile"]: p for p in page["profiles"]}
    assert list(profiles) == ["runtime", "prompts", "guardrails", "flags"]
    flags = profiles["flags"]
    assert flags["live"] == first.version
    assert flags["rollout"] == {"candidate": second.version, "percentage": 20.0}
    assert [(v["version"], v["author"], v["live"], v["candidate"]) for v in flags["versions"]] == [
        (first.version, "ana", True, False),
        (second.version, "bo", False, True),
    ]
    assert (profiles["runtime"]["live"], profiles["runtime"]["versions"]) == (None, [])


# -- the Versions page: knowledge base, widget, and the CLI's lists --------------------------------------


def _kb_version(index: VectorIndex, name: str, rows: int) -> str:
    index.create_version(name, model="test-model@1", dim=4, meta={"metrics": {"recall_at_5": 0.95}})
    records = [
        IndexRecord(
            f"doc-{i}#0",
            f"doc-{i}",
            f"Doc {i}",
            "",
            f"text {i}",
            f"hash-{i}",
            "policy",
            np.array([1.0, float(i), 0.0, 0.0], dtype=np.float32),
        )
        for i in range(rows)
    ]
    index.add(name, records)
    index.seal(name, {})
    return name


def _widget(n: int) -> dict[str, bytes]:
    return {
        "index.html": f"<html>release {n}</html>".encode(),
        "loader.js": f"// loader {n}".encode(),
        f"assets/widget-{n}.js": f"console.log({n})".encode(),
    }


def test_versions_page_lists_kb_versions_and_widget_releases_as_the_cli_does(
    stage: Stage, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = platform.vector_index()
    first = _kb_version(index, "kb-test-000000000001", rows=2)
    index.move_alias(LIVE_ALIAS, first, expect=None)
    second = _kb_version(index, "kb-test-000000000002", rows=3)
    index.move_alias(LIVE_ALIAS, second, expect=first)
    site = platform.static_site()
    one = site.upload(_widget(1)).release_id
    site.point("test", one, reason="first")
    two = site.upload(_widget(2)).release_id
    site.point("test", two, reason="second")
    three = site.upload(_widget(3)).release_id
    site.point("preview/feat-cart", three, reason="a branch")

    page = inventory.versions(platform, model_names=[])
    assert page["environment"] == "test"
    kb = page["knowledge_bases"]
    assert kb["available"] is True and (kb["alias"], kb["live"], kb["previous"]) == (
        LIVE_ALIAS,
        second,
        first,
    )
    assert [(v["name"], v["rows"], v["state"], v["live"]) for v in kb["versions"]] == [
        (first, 2, "ready", False),
        (second, 3, "ready", True),
    ]
    widget = page["frontend"]
    assert widget["available"] is True and widget["channel"] == "test"
    assert (widget["live"], widget["previous"]) == (two, one)
    assert [
        (r["release_id"], r["live"], r["channels"], r["files"], r["assets"]) for r in widget["releases"]
    ] == [
        (one, False, [], 3, 1),
        (two, True, ["test"], 3, 1),
        (three, False, ["preview/feat-cart"], 3, 1),
    ]
    assert widget["releases"][1]["size_bytes"] == sum(len(b) for b in _widget(2).values())
    (preview,) = widget["previews"]
    assert (preview["branch"], preview["release"], preview["moves"]) == ("feat-cart", three, 1)
    assert preview["url"].endswith("/previews/feat-cart/")
    assert page["models"] == {"available": True, "models": []}
    json.dumps(page, allow_nan=False)

    # `kb list --json` and `previews list --json` print the same lists, from the same functions
    settings = stage.plane.settings
    monkeypatch.setenv("MANGAASSIST_PLATFORM_CONFIG", str(stage.config))
    monkeypatch.setenv("MANGAASSIST_ENV", "test")
    monkeypatch.setenv("MANGAASSIST_HOME", str(settings.home))
    monkeypatch.setenv("MANGAASSIST_ROOT", str(ROOT))
    runner = CliRunner()
    listed = runner.invoke(kb_app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == {"live": kb["live"], "versions": kb["versions"]}
    previews = runner.invoke(previews_app, ["list", "--env", "test", "--json"])
    assert previews.exit_code == 0, previews.output
    assert json.loads(previews.stdout) == widget["previews"]


# -- models ------------------------------------------------------------------------------------------------


def _package(directory: Path) -> Path:
    from mangaassist.chatbot.catalog import Catalog
    from mangaassist.chatbot.entities import EntitySignals
    from mangaassist.chatbot.intent import Example, save_package
    from mangaassist.chatbot.intent_training import TrainingConfig, fit
    from mangaassist.platform.embeddings import HashingEmbedder

    examples = [
        Example("where is my order", "order_status"),
        Example("track my package please", "order_status"),
        Example("I want to talk to a human", "human_handoff"),
        Example("connect me with an agent", "human_handoff"),
    ]
    embedder = HashingEmbedder()
    signals = EntitySignals(Catalog.load(ROOT / "data" / "catalog.jsonl"))
    model = fit(examples, embedder, signals, TrainingConfig(augment_copies=0))
    return save_package(model, directory / "pkg", {"version": "intent-test", "embedder": embedder.name})


def test_models_list_the_versions_and_the_version_each_alias_names(
    platform: Platform, tmp_path: Path
) -> None:
    registry = platform.model_registry()
    package = _package(tmp_path)
    one = registry.register("inv-model", package, metrics={"macro_f1": 0.9}, params={"C": "8.0"})
    two = registry.register("inv-model", package, metrics={"macro_f1": 0.95}, params={"C": "4.0"})
    promote(registry, "inv-model", one.version, actor="test", reason="first champion")
    promote(registry, "inv-model", two.version, actor="test", reason="better")

    page = inventory.models(platform, names=["inv-model"])
    assert page["available"] is True
    (model,) = page["models"]
    assert [(v["version"], v["metrics"]["macro_f1"]) for v in model["versions"]] == [("1", 0.9), ("2", 0.95)]
    assert model["aliases"] == {"candidate": None, "champion": "2", "previous": "1"}
    assert {k: model[k] for k in ("model", "versions")} == inventory.model_listing(registry, "inv-model")
    # by default, the model of ml/intent.yaml (`model list`'s): none of it registered here
    assert inventory.models(platform)["models"] == [
        {
            "model": "intent",
            "versions": [],
            "aliases": {"candidate": None, "champion": None, "previous": None},
        }
    ]


# -- monitoring ------------------------------------------------------------------------------------------


def test_monitoring_shows_the_installed_slos_and_the_alerts_prometheus_fires(
    platform: Platform, tmp_path: Path
) -> None:
    before = inventory.monitoring(platform)["slos"]
    # nothing installed yet: the specs, compiled for the environment (which environments.yaml lacks)
    assert before["available"] is False and "no environment 'test'" in before["error"]
    host = platform.rule_host()
    report = build([ROOT / "monitoring" / "slos"], tmp_path / "out", "dev")
    cd08.install(host, list(report.rule_files))  # what CD-08's apply step does
    (host.rules_dir / "inventory-drill.yml").write_text(DRILL_RULES)  # not CD-08's: not an SLO
    host.reload()

    def drill_firing() -> dict[str, Any] | None:
        page = inventory.monitoring(platform)
        names = [a["name"] for a in page["alerts"].get("firing", [])]
        return page if "InventoryDrill" in names else None

    page = eventually(drill_firing, 45, "the drill alert firing in Prometheus")
    assert page["available"] is True and page["environment"] == "test"
    slos = page["slos"]
    assert slos["available"] is True and slos["source"] == "deployed"
    assert sorted(Path(f).name for f in slos["files"]) == sorted(p.name for p in report.rule_files)
    assert [s["id"] for s in slos["items"]] == list(report.slos)
    latency = next(s for s in slos["items"] if s["id"] == "chatbot-chat-latency")
    assert (latency["objective"], latency["period_days"], latency["page"]) == (95.0, 1.0, True)
    assert isinstance(slos["installed_at"], float)
    alerts = page["alerts"]
    assert alerts["available"] is True and alerts["prometheus"].startswith("http://127.0.0.1:")
    (drill,) = [a for a in alerts["firing"] if a["name"] == "InventoryDrill"]
    assert (drill["severity"], drill["service"], drill["slo"], drill["summary"]) == (
        "page",
        SHOP,
        "availability",
        "shop drill",
    )
    assert drill["since"]
    json.dumps(page, allow_nan=False)


# -- failing soft --------------------------------------------------------------------------------------


def test_every_section_renders_when_the_services_behind_others_are_down(
    stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MANGAASSIST_CONFIG_URL", raising=False)
    monkeypatch.delenv("MANGAASSIST_HOME", raising=False)
    home = (
        tmp_path / "elsewhere"
    )  # the same environment's settings, a state directory where no control plane runs
    server = start_config_server(home)
    with platform_for(load_settings("test", stage.config, home=home)) as platform:
        assert inventory.config_profiles(platform)["available"] is True
        server.kill()

        services = inventory.services(platform)
        assert services == {
            "available": False,
            "error": f"no control plane runs for {platform.home} (run `mangaassist up`)",
        }
        page = inventory.versions(platform, model_names=[])
        config = page["config_profiles"]
        assert config["available"] is False
        assert config["error"].startswith(f"the config server of {platform.home} does not run")
        alerts = page["monitoring"]["alerts"]
        assert alerts["available"] is False and alerts["error"].startswith(
            "Prometheus does not run for environment test"
        )
        assert page["monitoring"]["available"] is False
        # what does not need a running service is still there
        assert page["knowledge_bases"] == {
            "available": True,
            "alias": LIVE_ALIAS,
            "live": None,
            "versions": [],
            "previous": None,
            "moved_at": None,
        }
        assert page["frontend"]["available"] is True and page["frontend"]["releases"] == []
        assert page["models"] == {"available": True, "models": []}
        json.dumps({"services": services, **page}, allow_nan=False)
