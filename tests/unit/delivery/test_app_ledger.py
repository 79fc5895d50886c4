"""CD-01's ledger is per service (``releases/ENV/SERVICE/``); the environment's default service still
reads the per-environment ledger kept before (``releases/ENV/``), which nothing rewrites; a
``service`` param the environment does not declare is refused before a run is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.pipelines import app as cd01
from mangaassist.platform.settings import PlatformSettings, load_settings

TEST_APP = "mangaassist.platform.local.testing_app:create_app"


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deploy: str = "") -> PlatformSettings:
    config = tmp_path / "mangaassist.toml"
    config.write_text(
        '[environments.dev]\nprovider = "local"\n'
        f'[environments.dev.services.chatbot]\napp = "{TEST_APP}"\nrouter_port = 0\n'
        f'[environments.dev.services.chatbot-burst]\napp = "{TEST_APP}"\nrouter_port = 0\n'
        f'[environments.dev.services.web]\napp = "{TEST_APP}"\nrouter_port = 0\n'
        f"[environments.dev.deploy]\n{deploy}"
    )
    monkeypatch.setenv("MANGAASSIST_PLATFORM_CONFIG", str(config))
    monkeypatch.setenv("MANGAASSIST_HOME", str(tmp_path / "home"))
    return load_settings("dev", config)


def _old_layout(p: PlatformSettings) -> Path:
    """A home written before ledgers were per service: one history and revision file per environment."""
    ledger = p.home / "releases" / "dev"
    ledger.mkdir(parents=True)
    (ledger / "history.jsonl").write_text(json.dumps({"revision": "rel-old", "key": "k-old"}) + "\n")
    (ledger / "rel-old.json").write_text(json.dumps({"revision": "rel-old", "set_env": {"A": "1"}}))
    return ledger


def test_an_old_layout_history_is_the_default_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _settings(tmp_path, monkeypatch)
    ledger = _old_layout(p)
    assert [r["revision"] for r in cd01.releases(p, "chatbot")] == ["rel-old"]
    assert cd01.revision_record(p, "chatbot", "rel-old") == {"revision": "rel-old", "set_env": {"A": "1"}}
    assert cd01.releases(p, "chatbot-burst") == []
    assert cd01.revision_record(p, "chatbot-burst", "rel-old") is None

    # new records go to the service's own ledger; the old file is read, never rewritten
    cd01._append_history(p, "chatbot", {"revision": "rel-new"}, "k-new")
    cd01._append_history(p, "chatbot", {"revision": "rel-new"}, "k-new")  # a resumed promote
    cd01._append_history(p, "chatbot", {"revision": "rel-old"}, "k-old")  # recorded before, old layout
    cd01._append_history(p, "chatbot-burst", {"revision": "rel-b"}, "k-b")
    cd01._note_revision(p, "chatbot-burst", "rel-b", {"revision": "rel-b", "set_env": {"B": "2"}})
    assert [r["revision"] for r in cd01.releases(p, "chatbot")] == ["rel-old", "rel-new"]
    assert [r["revision"] for r in cd01.releases(p, "chatbot-burst")] == ["rel-b"]
    assert (ledger / "history.jsonl").read_text().count("\n") == 1
    assert [
        json.loads(line)["key"] for line in (ledger / "chatbot" / "history.jsonl").read_text().splitlines()
    ] == ["k-new"]
    assert (ledger / "chatbot-burst" / "history.jsonl").is_file()
    assert cd01.revision_record(p, "chatbot-burst", "rel-b") == {"revision": "rel-b", "set_env": {"B": "2"}}
    assert cd01.revision_record(p, "chatbot", "rel-b") is None


def test_the_old_layout_belongs_to_the_service_the_file_deploys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment whose deploy setting ``service`` named another service released that one
    before: the old history is that service's, not the chatbot's."""
    p = _settings(tmp_path, monkeypatch, 'service = "web"\n')
    _old_layout(p)
    assert [r["revision"] for r in cd01.releases(p, "web")] == ["rel-old"]
    assert cd01.releases(p, "chatbot") == []


def test_the_service_param_overrides_the_file_and_must_be_declared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _settings(tmp_path, monkeypatch)
    assert cd01.settings_for("dev").service == "chatbot"
    assert cd01.settings_for("dev", "chatbot-burst").service == "chatbot-burst"
    assert cd01.run_service({"environment": "dev", "service": "chatbot-burst"}) == "chatbot-burst"
    assert "to dev/chatbot-burst by" in cd01.describe({"environment": "dev", "service": "chatbot-burst"})
    assert cd01.declared_services("dev") == {"chatbot": None, "chatbot-burst": None, "web": None}
    message = r"service 'nope' is not declared in environment dev \(declared: chatbot, chatbot-burst, web;"
    with pytest.raises(ConfigError, match=message):
        cd01.settings_for("dev", "nope")
    with pytest.raises(ConfigError, match=message):
        cd01.build({"environment": "dev", "service": "nope"})
    with pytest.raises(ConfigError, match=message):
        cd01.describe({"environment": "dev", "service": "nope"})
    assert cd01.build({"environment": "dev", "service": "chatbot-burst"}).name == cd01.NAME
