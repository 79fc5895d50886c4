"""``mangaassist up`` / ``status`` / ``chat`` / ``down`` with the real chatbot as revision r1, asking the
intent model served as its own service (``intent-model``, also r1) through that service's router."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mangaassist.platform.local.client import _alive
from mangaassist.platform.local.config_server import running_url

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[3]


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mangaassist.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def test_up_runs_the_chatbot_as_r1_behind_the_router_and_down_leaves_nothing(
    state_home: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "MANGAASSIST_ROOT": str(ROOT)}
    env.pop("MANGAASSIST_URL", None)
    default_ports = all(_free(port) for port in (8079, 8080, 8081, 8082, 8090, 9090, 9093))
    if not default_ports:  # someone runs the dev platform here: same config, free ports
        config = (ROOT / "mangaassist.toml").read_text()
        for port in (
            "control_port = 8079",
            "router_port = 8080",
            "router_port = 8081",
            "prometheus_port = 9090",
            "alertmanager_port = 9093",
            "edge_port = 8082",
            "dashboard_port = 8090",
        ):
            config = config.replace(port, port.split("=")[0] + "= 0")
        # the config file's folder is the project root (sources and data resolve against it)
        for name in ("src", "data", "knowledge", "ml", "config"):
            (tmp_path / name).symlink_to(ROOT / name)
        (tmp_path / "mangaassist.toml").write_text(config)
        env["MANGAASSIST_PLATFORM_CONFIG"] = str(tmp_path / "mangaassist.toml")
    home = ["--home", str(state_home)]
    try:
        up = _cli("up", *home, env=env)
        assert up.returncode == 0, up.stderr
        again = _cli("up", *home, env=env, timeout=60)
        assert again.returncode == 0 and "already running" in again.stdout

        status = json.loads(_cli("status", "--json", *home, env=env).stdout)
        edge = status["edge"]  # CD-05: the edge runs with the platform, /v1 to the chatbot's router
        assert edge is not None and edge["environment"] == "dev" and _alive(edge["pid"])
        if default_ports:
            assert edge["url"] == "http://127.0.0.1:8082"
        dashboard = status["dashboard"]  # the engine's metrics, scraped by the platform's Prometheus
        assert dashboard is not None and _alive(dashboard["pid"])
        if default_ports:
            assert dashboard["url"] == "http://127.0.0.1:8090"
        engine = httpx.get(f"{dashboard['url']}/metrics", timeout=10).text
        assert "mangaassist_engine_scrape_errors_total 0.0" in engine
        # up printed a sign-in link for whoever ran it: it opens a session on the dashboard
        link = re.search(r"(http://\S+/signin\?token=\S+)", up.stdout.replace("\n", ""))
        assert link is not None, up.stdout
        signed = httpx.get(link.group(1), timeout=10)
        assert signed.status_code == 303 and "ma_dashboard" in signed.cookies
        target = json.loads((state_home / "monitoring" / "targets" / "dashboard.json").read_text())
        assert target[0]["targets"] == [dashboard["url"].removeprefix("http://")]
        monitoring = status["monitoring"]  # CD-08: Prometheus and Alertmanager run with the platform
        assert monitoring["problems"] == []
        assert monitoring["running"] == {"alertmanager": True, "prometheus": True}
        if default_ports:
            assert monitoring["prometheus"] == "http://127.0.0.1:9090"
        chatbot = status["services"]["chatbot"]
        assert chatbot["weights"] == {"r1": 100.0}
        (r1,) = chatbot["revisions"]
        assert r1["name"] == "r1" and r1["health"] == "healthy" and len(r1["digest"]) == 64
        if default_ports:
            assert chatbot["url"] == "http://127.0.0.1:8080"
        model = status["services"]["intent-model"]
        assert model["weights"] == {"r1": 100.0}
        (m1,) = model["revisions"]
        assert m1["health"] == "healthy" and m1["app"] == "mangaassist.chatbot.model_server:create_app"
        assert chatbot["links"] == {"MANGAASSIST_INTENT_URL": model["url"]}
        pids = [status["pid"], *(w["pid"] for w in r1["workers"]), *(w["pid"] for w in m1["workers"])]
        pids += [edge["pid"], dashboard["pid"]]
        assert status["routers"]["adopted"] is False  # the routers run in a process of their own
        pids.append(status["routers"]["pid"])
        assert all(_alive(p) for p in pids)
        shown = _cli("status", *home, env=env, timeout=60)
        assert f"routers: PID {status['routers']['pid']}" in shown.stdout, shown.stdout

        url_args = [] if default_ports else ["--url", chatbot["url"]]
        chat = _cli("chat", "Do you have Frieren volume 5?", "--json", *url_args, env=env, timeout=60)
        assert chat.returncode == 0, chat.stderr
        answer = json.loads(chat.stdout)
        assert answer["versions"]["revision"] == "r1" and answer["intent"] == "product_search"
        stats = json.loads(_cli("revisions", "stats", "--json", *home, env=env).stdout)
        assert stats["revisions"]["r1"]["statuses"] == {"200": 1}
        # the environment's config server runs with the platform, and the chatbot follows it
        config_url = running_url(state_home)
        assert config_url is not None
        assert "configs" in httpx.get(f"{chatbot['url']}/readyz", timeout=10).json()
        # the chatbot asked the model service (warm-up calls, then this chat), and reports its version
        model_stats = json.loads(
            _cli("revisions", "stats", "--service", "intent-model", "--json", *home, env=env).stdout
        )
        assert model_stats["revisions"]["r1"]["statuses"].get("200", 0) >= 1
        ready = httpx.get(f"{model['url']}/readyz", timeout=10).json()
        assert answer["versions"]["model"] == ready["model_version"]

        # a model revision that fails every request, deployed and shadowed with the CLI: users never see it
        model_cli = ["--service", "intent-model", *home]
        deploy = _cli(
            "revisions",
            "deploy",
            "r2",
            "--set-env",
            "MANGAASSIST_FAULT=error_rate=1",
            "--json",
            *model_cli,
            env=env,
        )
        assert deploy.returncode == 0, deploy.stderr
        r2 = json.loads(deploy.stdout)
        assert r2["health"] == "healthy" and r2["weight"] == 0
        pids += [w["pid"] for w in r2["workers"]]
        assert _cli("revisions", "shadow", "r2", "--share", "1", *model_cli, env=env).returncode == 0
        again = _cli("chat", "Do you have Frieren volume 5?", "--json", *url_args, env=env, timeout=60)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["intent"] == "product_search"
        assert json.loads(again.stdout)["versions"]["model"] == ready["model_version"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shadow = json.loads(_cli("revisions", "stats", "--json", *model_cli, env=env).stdout)["shadow"]
            if shadow.get("r2", {}).get("statuses", {}).get("500"):
                break
            time.sleep(0.5)
        assert shadow["r2"]["statuses"]["500"] >= 1
    finally:
        down = _cli("down", *home, env=env, timeout=60)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if _alive(p)] == []
    assert running_url(state_home) is None  # `down` stopped the config server too
    assert "stopped the dashboard" in down.stdout
    assert not (state_home / "monitoring" / "targets" / "dashboard.json").exists()  # no stale target
    nothing = _cli("down", *home, env=env, timeout=60)
    assert nothing.returncode == 0 and "nothing runs" in nothing.stdout
    assert _cli("status", *home, env=env, timeout=60).returncode == 1
