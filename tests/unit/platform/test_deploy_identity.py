"""A deploy of a live revision name is "already there" only for the very same revision."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from mangaassist.core.artifact import Artifact
from mangaassist.platform.compute import Revision
from mangaassist.platform.local.controlplane import (
    Conflict,
    RevisionRuntime,
    ServiceRuntime,
    revision_difference,
)
from mangaassist.platform.local.supervisor import RevisionSupervisor
from mangaassist.platform.settings import ServiceSettings

APP = "mangaassist.platform.local.testing_app:create_app"
ART = Artifact(Path("/artifacts/a.tar"), "a" * 64)


def test_same_name_same_digest_other_env_is_another_revision() -> None:
    live = Revision("r2", ART, APP, {"MANGAASSIST_FAULT": "error_rate=0.2", "KEEP": "1", "OLD": "x"})
    assert revision_difference(live, Revision("r2", ART, APP, dict(live.env))) is None
    diff = revision_difference(
        live, Revision("r2", ART, APP, {"MANGAASSIST_FAULT": "", "KEEP": "1", "NEW": "y"})
    )
    assert diff is not None
    assert "another environment" in diff
    assert "MANGAASSIST_FAULT differs" in diff
    assert "NEW not set on the live revision" in diff
    assert "OLD set only on the live revision" in diff
    assert "error_rate" not in diff  # names, never values (they may be credentials)


def test_other_digest_or_app_is_another_revision() -> None:
    live = Revision("r2", ART, APP, {})
    other = Artifact(Path("/artifacts/b.tar"), "b" * 64)
    assert "another artifact" in (revision_difference(live, Revision("r2", other, APP, {})) or "")
    assert "another app" in (revision_difference(live, Revision("r2", ART, "x.y:create_app", {})) or "")


def _service(tmp_path: Path, live: Revision) -> tuple[ServiceRuntime, RevisionSupervisor]:
    svc = ServiceRuntime(ServiceSettings(name="chatbot", app=APP, router_port=0), cast(Any, None))
    sup = RevisionSupervisor(
        name="chatbot-r2",
        app=APP,
        workdir=tmp_path,
        env={},
        replicas=1,
        log_dir=tmp_path,
        on_change=lambda: None,
        on_pids=lambda: None,
        revision=live.name,
    )
    svc.revisions[live.name] = RevisionRuntime(live, sup)
    return svc, sup


async def test_deploy_refuses_a_live_name_with_another_env(tmp_path: Path) -> None:
    live = Revision("r2", ART, APP, {"MANGAASSIST_FAULT": "error_rate=0.4"})
    svc, sup = _service(tmp_path, live)
    with pytest.raises(Conflict) as err:
        await svc.deploy(Revision("r2", ART, APP, {"MANGAASSIST_FAULT": "error_rate=1"}), timeout_s=0.01)
    message = str(err.value)
    assert "revision r2 of chatbot" in message and "MANGAASSIST_FAULT differs" in message
    with pytest.raises(Conflict, match="TESTAPP_DELAY_MS not set on the live revision"):
        await svc.deploy(Revision("r2", ART, APP, {**live.env, "TESTAPP_DELAY_MS": "60"}), timeout_s=0.01)
    assert svc.revisions["r2"].supervisor is sup and svc.revisions["r2"].revision is live  # untouched


async def test_deploy_of_the_same_revision_returns_the_live_one(tmp_path: Path) -> None:
    live = Revision("r2", ART, APP, {"MANGAASSIST_FAULT": "error_rate=0.4"})
    svc, sup = _service(tmp_path, live)
    status = await svc.deploy(Revision("r2", ART, APP, dict(live.env)), timeout_s=0.01)
    assert status["name"] == "r2" and status["digest"] == ART.digest
    assert svc.revisions["r2"].supervisor is sup  # nothing new was started
