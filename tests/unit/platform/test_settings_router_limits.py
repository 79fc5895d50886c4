"""The router's limits in ``mangaassist.toml``: defaults, values, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.platform.local.supervisor import health_timeout
from mangaassist.platform.settings import ServiceSettings, load_settings

ROOT = Path(__file__).resolve().parents[3]
SERVICE = "[environments.t.services.a]\napp = 'm:f'\nrouter_port = 0\n"


def _load(tmp_path: Path, extra: str = "") -> ServiceSettings:
    config = tmp_path / "mangaassist.toml"
    config.write_text(SERVICE + extra)
    return load_settings("t", config).services["a"]


def test_defaults_keep_a_router_that_cannot_be_held(tmp_path: Path) -> None:
    a = _load(tmp_path)
    assert (a.connect_timeout_s, a.response_timeout_s, a.idle_read_timeout_s) == (2.0, 60.0, 30.0)
    assert a.max_body_bytes == 10 * 1024 * 1024
    dev = load_settings("dev", ROOT / "mangaassist.toml", home=tmp_path).services["chatbot"]
    assert dev.response_timeout_s == 60.0 and dev.max_body_bytes == 10 * 1024 * 1024


def test_values_are_read_per_service(tmp_path: Path) -> None:
    a = _load(
        tmp_path,
        "connect_timeout_s = 0.5\nresponse_timeout_s = 5\nidle_read_timeout_s = 1.5\nmax_body_bytes = 1024\n",
    )
    assert (a.connect_timeout_s, a.response_timeout_s, a.idle_read_timeout_s) == (0.5, 5.0, 1.5)
    assert isinstance(a.response_timeout_s, float)
    assert a.max_body_bytes == 1024


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("connect_timeout_s = 0", r"services\.a\.connect_timeout_s: expected seconds, more than 0 .* got 0"),
        ("response_timeout_s = -1", r"services\.a\.response_timeout_s: expected seconds.* got -1"),
        ("idle_read_timeout_s = '30'", r"services\.a\.idle_read_timeout_s: expected seconds.* got '30'"),
        ("idle_read_timeout_s = true", r"services\.a\.idle_read_timeout_s: expected seconds.* got True"),
        ("response_timeout_s = nan", r"services\.a\.response_timeout_s: expected seconds.* got nan"),
        ("connect_timeout_s = 7200", r"services\.a\.connect_timeout_s: .*at most 3600, got 7200"),
        ("max_body_bytes = 0", r"services\.a\.max_body_bytes: expected a number of bytes from 1 .* got 0"),
        ("max_body_bytes = 1.5", r"services\.a\.max_body_bytes: expected a number of bytes.* got 1\.5"),
        ("max_body_bytes = 2147483648", r"services\.a\.max_body_bytes: .*in memory\), got 2147483648"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, line + "\n")


def test_the_liveness_probe_follows_the_response_timeout_within_bounds() -> None:
    assert health_timeout(60.0) == 5.0
    assert health_timeout(2.5) == 2.5
    assert health_timeout(0.2) == 1.0
