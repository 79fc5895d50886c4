"""A real local control plane (a background process) running the test workload, for the module.

Every test gets services of its own (routers on free loopback ports) so tests do not share
conversations or counters. Revisions run ``mangaassist.platform.local.testing_app``, which starts in
a fraction of a second; one test runs the real chatbot through ``mangaassist up``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mangaassist.core.artifact import Artifact
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import Revision
from mangaassist.platform.local.client import (
    LocalCompute,
    _alive,
    read_pid,
    start_control_plane,
    stop_control_plane,
)
from mangaassist.platform.settings import PlatformSettings, load_settings

ROOT = Path(__file__).parents[3]
TEST_APP = "mangaassist.platform.local.testing_app:create_app"
SERVICES = ("split", "shift", "pin", "shadow", "crash", "stream", "broken", "retire", "stats", "stamp")
# in the control plane's environment, never in a worker's (the supervisor's allow-list)
NOT_INHERITED = {
    "MLFLOW_TRACKING_URI": "sqlite:////nowhere/mlflow.db",
    "MANGAASSIST_STATE_URL": "postgresql://u:pw@db/x",
}
# in the control plane's environment and passed by name to the ``stamp`` service only (pass_env)
PASSED_BY_NAME = {"OPENAI_API_KEY": "sk-test-passed-by-name"}


@dataclass
class Plane:
    settings: PlatformSettings
    compute: LocalCompute
    artifact: Artifact

    def revision(self, name: str, replicas: int = 1, **env: str) -> Revision:
        return Revision(name, self.artifact, TEST_APP, env, replicas)

    def url(self, service: str) -> str:
        return self.compute.url(service)


def write_config(directory: Path, services: tuple[str, ...], shadow_timeout_s: float = 2.0) -> Path:
    lines = [
        "[environments.test]",
        'provider = "local"',
        'home = "home"',
        "control_port = 0",
    ]
    for name in services:
        lines += [
            f"[environments.test.services.{name}]",
            f'app = "{TEST_APP}"',
            "router_port = 0",
            "ready_timeout_s = 20",
            f"shadow_timeout_s = {shadow_timeout_s}",
            *([f"pass_env = {sorted(PASSED_BY_NAME)!r}".replace("'", '"')] if name == "stamp" else []),
        ]
    path = directory / "mangaassist.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    directory = tmp_path_factory.mktemp("platform")
    config = write_config(directory, SERVICES)
    settings = load_settings("test", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=30, extra_env={**NOT_INHERITED, **PASSED_BY_NAME})
    compute = LocalCompute(settings.run_dir)
    artifact = pack_source(ROOT / "src", settings.home / "artifacts")
    try:
        yield Plane(settings, compute, artifact)
    finally:
        compute.close()
        pid = read_pid(settings.run_dir)
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left after stop: {report.left}"
        assert pid is None or not _alive(pid)
