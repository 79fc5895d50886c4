"""``config_server`` in ``mangaassist.toml``: whether ``up`` runs the environment's config server."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.platform.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]
SERVICE = "[environments.t.services.a]\napp = 'm:f'\nrouter_port = 0\n"


def test_dev_runs_a_config_server_and_the_default_is_off(tmp_path: Path) -> None:
    assert load_settings("dev", ROOT / "mangaassist.toml", home=tmp_path).config_server is True
    config = tmp_path / "mangaassist.toml"
    config.write_text(SERVICE)
    assert load_settings("t", config).config_server is False


def test_a_non_boolean_is_refused_with_its_place(tmp_path: Path) -> None:
    config = tmp_path / "mangaassist.toml"
    config.write_text("[environments.t]\nconfig_server = 'yes'\n" + SERVICE)
    with pytest.raises(ConfigError, match=r"config_server: expected true or false, got 'yes'"):
        load_settings("t", config)
