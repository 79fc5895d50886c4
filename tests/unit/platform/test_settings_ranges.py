"""``mangaassist.toml``: every number range-checked, ports distinct, wrong types named: a clear
``ConfigError`` naming the field, never a traceback later (issue: hostile or careless files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.platform.settings import load_settings

BASE = """
[environments.qa]
provider = "local"
control_port = 8079
{extra}
[environments.qa.services.chatbot]
app = "mangaassist.chatbot.app:create_app"
router_port = 8080
{service}
[environments.qa.services.intent-model]
app = "mangaassist.chatbot.model_server:create_app"
router_port = {model_port}
"""


def _load(tmp_path: Path, *, extra: str = "", service: str = "", model_port: str = "8081") -> object:
    path = tmp_path / "mangaassist.toml"
    path.write_text(BASE.format(extra=extra, service=service, model_port=model_port))
    return load_settings("qa", path)


def test_the_base_file_loads(tmp_path: Path) -> None:
    settings = _load(tmp_path)
    assert settings.services["chatbot"].router_port == 8080  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        (
            {"model_port": "99999999"},
            r"services\.intent-model\.router_port: expected a TCP port from 0 to 65535",
        ),
        ({"extra": "edge_port = 70000"}, r"environments\.qa\.edge_port: expected a TCP port"),
        ({"extra": "dashboard_port = -1"}, r"dashboard_port: expected a TCP port"),
        ({"service": "ready_timeout_s = 'soon'"}, r"services\.chatbot\.ready_timeout_s: expected seconds"),
        (
            {"service": "shadow_timeout_s = -5"},
            r"services\.chatbot\.shadow_timeout_s: expected seconds, more than 0",
        ),
        (
            {"service": "ready_timeout_s = 1e12"},
            r"ready_timeout_s: expected seconds, more than 0 and at most 3600",
        ),
        (
            {"model_port": "8080"},
            r"services\.chatbot\.router_port and services\.intent-model\.router_port are both port 8080",
        ),
        ({"extra": "dashboard_port = 8079"}, r"control_port and dashboard_port are both port 8079"),
        ({"service": "env = 'x'"}, r"services\.chatbot\.env: expected a table"),
        ({"extra": "[environments.qa.monitoring]\nprometheus_port = 8080"}, r"both port 8080"),
    ],
)
def test_a_careless_value_is_named(tmp_path: Path, kw: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _load(tmp_path, **kw)


def test_free_ports_may_repeat(tmp_path: Path) -> None:
    settings = _load(tmp_path, model_port="0", extra="edge_port = 0\ndashboard_port = 0")
    assert settings.edge_port == 0 and settings.dashboard_port == 0  # type: ignore[attr-defined]


def test_an_environment_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    path = tmp_path / "mangaassist.toml"
    path.write_text('[environments]\nqa = "local"\n')
    with pytest.raises(ConfigError, match=r"environments\.qa: expected a table"):
        load_settings("qa", path)
