"""The router host as a process: a router port another program holds stops `up` with a message
naming the port (and leaves nothing running); its admin socket is its owner's alone; a router host
left running with other router settings is replaced, not adopted."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest

from mangaassist.core.errors import MangaAssistError
from mangaassist.platform.local.client import (
    LocalCompute,
    _alive,
    read_pid,
    start_control_plane,
    stop_control_plane,
)
from mangaassist.platform.settings import load_settings
from tests.integration.platform.conftest import ROOT, write_config

pytestmark = pytest.mark.slow


def _kill_control_plane(run_dir: Path) -> None:
    """SIGKILL the control plane (its router host and workers are left) and wait until it is gone."""
    plane = read_pid(run_dir)
    assert plane is not None
    os.kill(plane, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(plane) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(plane)


def test_a_taken_router_port_stops_up_naming_it_and_leaves_nothing(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    config = write_config(tmp_path, ("busy",))
    config.write_text(config.read_text().replace("router_port = 0", f"router_port = {port}"))
    settings = load_settings("test", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    try:
        with pytest.raises(MangaAssistError) as err:
            start_control_plane(settings, config, wait_s=30)
        message = str(err.value)
        assert "router host did not start" in message and f"127.0.0.1:{port}" in message, message
        assert read_pid(settings.run_dir) is None
        assert not (settings.run_dir / "routers.json").exists()
    finally:
        holder.close()
        stop_control_plane(settings)


def test_the_admin_socket_is_the_owners_and_a_mismatched_host_is_replaced(tmp_path: Path) -> None:
    config = write_config(tmp_path, ("web",))
    settings = load_settings("test", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=30)
    try:
        routers = json.loads((settings.run_dir / "routers.json").read_text())
        mode = stat.S_IMODE(os.stat(routers["socket"]).st_mode)
        assert mode == 0o600, oct(mode)  # tables are published there: no other local user may
        first = int(routers["pid"])
        _kill_control_plane(settings.run_dir)
        # the next start runs the service with another router limit: the old host must not serve it
        config.write_text(config.read_text() + "max_body_bytes = 4096\n")
        start_control_plane(settings, config, wait_s=60)
        compute = LocalCompute(settings.run_dir)
        try:
            routing = compute.raw_status()["routers"]
        finally:
            compute.close()
        assert routing["adopted"] is False
        second = routing["pid"]
        assert second != first and not _alive(first)
    finally:
        report = stop_control_plane(settings)
    assert report.left == []


def test_a_router_host_never_announced_is_stopped_not_left_holding_the_ports(tmp_path: Path) -> None:
    """A control plane that dies before its router host wrote `routers.json` leaves a router host
    nobody knows: the next start finds it by its command line (this module, this state directory)
    and stops it before starting its own, which takes the same fixed port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path, ("web",))
    config.write_text(config.read_text().replace("router_port = 0", f"router_port = {port}"))
    settings = load_settings("test", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=30)
    try:
        first = int(json.loads((settings.run_dir / "routers.json").read_text())["pid"])
        _kill_control_plane(settings.run_dir)
        (settings.run_dir / "routers.json").unlink()  # as if it died before the host announced itself
        start_control_plane(settings, config, wait_s=60)
        second = int(json.loads((settings.run_dir / "routers.json").read_text())["pid"])
        assert second != first and not _alive(first)
        compute = LocalCompute(settings.run_dir)
        try:
            assert compute.url("web") == f"http://127.0.0.1:{port}"
        finally:
            compute.close()
    finally:
        report = stop_control_plane(settings)
    assert report.left == []
