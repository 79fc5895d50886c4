"""A stage for CD-05 run for real: environment ``dev`` of a temporary ``mangaassist.toml`` (local
provider, state in a temporary directory), its edge (``platform/local/edge.py``) started as its
own process on a free loopback port with ``/v1`` going to a stub chat API, and an engine state
store of its own. Runs go through ``views.runs.run_pipeline``, as the CLI's do.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mangaassist.delivery.engine import audit
from mangaassist.delivery.engine.model import RunRecord, StepRecord
from mangaassist.delivery.engine.state import StateStore
from mangaassist.delivery.frontend.serve import StubChatbot
from mangaassist.platform.local.edge import ensure_edge, stop_edge
from mangaassist.platform.local.static_site import LocalStaticSite
from mangaassist.views.progress import ProgressDisplay
from mangaassist.views.runs import run_pipeline

ROOT = Path(__file__).parents[3]
ENV = "dev"
VARIABLES = ("MANGAASSIST_PLATFORM_CONFIG", "MANGAASSIST_HOME", "MANGAASSIST_ROOT", "MANGAASSIST_POLICY")


@dataclass
class Stage:
    directory: Path
    home: Path
    edge_url: str
    stub: StubChatbot
    store: StateStore
    site: LocalStaticSite

    def run(
        self, pipeline: str, params: dict[str, Any], target: str = "CD-05"
    ) -> tuple[RunRecord, dict[str, StepRecord], str]:
        """Run ``pipeline`` to its end: the run, its steps by name, what the display printed."""
        out = io.StringIO()
        display = ProgressDisplay(Console(file=out, width=200), rich=False)
        run, steps = run_pipeline(
            display,
            pipeline,
            {"environment": ENV, **params},
            environment=ENV,
            target=target,
            requester="tester",
            store=self.store,
            poll_seconds=0.1,
        )
        return run, steps, out.getvalue()

    def audit_kinds(self, run_id: str) -> list[str]:
        with self.store.transaction() as conn:
            return [e.kind for e in audit.entries(conn, run_id)]


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    directory = tmp_path_factory.mktemp("cd05")
    config = directory / "mangaassist.toml"
    config.write_text(f"[environments.{ENV}]\nprovider = 'local'\nhome = 'home'\ncontrol_port = 0\n")
    home = directory / "home"
    saved = {k: os.environ.get(k) for k in VARIABLES}
    os.environ.update(
        {
            "MANGAASSIST_PLATFORM_CONFIG": str(config),
            "MANGAASSIST_HOME": str(home),
            "MANGAASSIST_ROOT": str(ROOT),
        }
    )
    os.environ.pop("MANGAASSIST_POLICY", None)  # the built-in default: dev is free
    stub = StubChatbot()
    site_root = home / "sites" / "widget"
    edge_url = ensure_edge(home, site_root=site_root, environment=ENV, api=stub.url, port=0)
    store = StateStore(f"sqlite:///{directory / 'engine.db'}")
    site = LocalStaticSite(site_root, environment=ENV, base_url=edge_url)
    try:
        yield Stage(directory, home, edge_url, stub, store, site)
    finally:
        site.close()
        store.close()
        stop_edge(home)
        stub.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
