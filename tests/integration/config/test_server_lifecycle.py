"""``ensure_server`` starts the local config server in the background; ``stop_server`` stops it."""

from __future__ import annotations

from pathlib import Path

from mangaassist.platform.local.config_server import ensure_server, running_url, stop_server


def test_ensure_reuses_and_stop_stops(tmp_path: Path) -> None:
    home = tmp_path / "cfg"
    url = ensure_server(home)
    assert running_url(home) == url
    assert ensure_server(home) == url  # a second call finds the running one
    assert stop_server(home) is True
    assert running_url(home) is None
    assert not (home / "config-server.json").exists()
    assert stop_server(home) is False  # nothing left to stop
