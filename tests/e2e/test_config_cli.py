"""``mangaassist config`` as a user runs it: validate, history and rollback against a real config server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.e2e.test_cli import run
from tests.integration.config.conftest import ROOT, start_config_server


def test_validate_names_the_file_line_and_field(tmp_path: Path) -> None:
    ok = run("config", "validate", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    folder = tmp_path / "config"
    shutil.copytree(ROOT / "config", folder)
    text = (folder / "guardrails.yaml").read_text()
    (folder / "guardrails.yaml").write_text(text + "\nmax_answer_chars: -5\n")
    bad = run("config", "validate", "guardrails", "--dir", str(folder), "--json")
    assert bad.returncode != 0
    assert "guardrails.yaml" in bad.stdout and "max_answer_chars" in bad.stdout


def test_rollback_and_history(tmp_path: Path) -> None:
    server = start_config_server(tmp_path / "config-home")
    try:
        store = server.store
        content = yaml.safe_load((ROOT / "config" / "runtime.yaml").read_text())
        first = store.create_version("runtime", content, author="ann").version
        store.promote("runtime", first, actor="ann")
        changed = {**content, "retrieval": {**content["retrieval"], "top_k": 4}}
        second = store.create_version("runtime", changed, author="ann").version
        store.promote("runtime", second, actor="ann")
        env = {
            "MANGAASSIST_CONFIG_URL": server.url,
            "MANGAASSIST_HOME": str(tmp_path / "home"),
            "MANGAASSIST_ACTOR": "carol",
        }
        done = run("config", "rollback", "runtime", "--json", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        out = json.loads(done.stdout)
        assert (out["state"], out["live"], out["previous"]) == ("succeeded", first, second)
        assert store.rollout("runtime").stable == first

        history = json.loads(run("config", "history", "runtime", "--json", env=env).stdout)
        assert [v["version"] for v in history["versions"]] == [first, second]
        assert "+  top_k: 4" in history["versions"][1]["diff"]
        assert history["events"][-1]["actor"] == "carol"

        runs = json.loads(run("runs", "list", "--json", env=env).stdout)
        assert any(r["pipeline"] == "CD-06-rollback" and r["requester"] == "carol" for r in runs)

        missing = run("config", "rollback", "runtime", "--to", "runtime-000000000000", "--json", env=env)
        assert missing.returncode != 0
        assert store.rollout("runtime").stable == first
    finally:
        server.kill()
