"""CD-05 end to end: the real widget built with npm, its typecheck and vitest, headless Chromium
through a candidate server and then through the edge, the local ``StaticSite``.

One deploy of ``frontend/`` (the module's ``deployed`` fixture) is shared: the other tests start
from it. Each test leaves the environment's channel on that release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mangaassist.cli.main import app
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord, StepStatus
from mangaassist.delivery.frontend.budget import LOADER_BUDGET_BYTES, TOTAL_BUDGET_BYTES
from mangaassist.delivery.frontend.build import release_of
from mangaassist.delivery.frontend.serve import STUB_SOURCES
from mangaassist.delivery.frontend.sources import broken_source, changed_source
from mangaassist.delivery.pipelines import frontend as cd05
from mangaassist.platform.static_site import RELEASE_HEADER
from tests.integration.frontend.conftest import ENV, ROOT, Stage

PNG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Deployed:
    run: RunRecord
    steps: dict[str, StepRecord]
    printed: str
    release: str


@pytest.fixture(scope="module")
def deployed(stage: Stage) -> Deployed:
    run, steps, printed = stage.run(cd05.NAME, {"api": stage.stub.url})
    assert run.effective_state is RunState.SUCCEEDED, f"{run.reason}\n{printed}"
    return Deployed(run, steps, printed, steps["build"].output["release_id"])


def _not_started(steps: dict[str, StepRecord], *names: str) -> bool:
    return all(steps[n].status in (StepStatus.PENDING, StepStatus.SKIPPED) for n in names)


def _served(stage: Stage, path: str = "/") -> httpx.Response:
    return httpx.get(stage.edge_url + path, timeout=10)


def test_a_deploy_builds_gates_checks_in_chromium_uploads_publishes_and_verifies(
    stage: Stage, deployed: Deployed
) -> None:
    steps = deployed.steps
    assert [s for s, r in steps.items() if r.status is not StepStatus.DONE] == []
    built = steps["build"].output
    files = built["files"]
    assert {"index.html", "loader.js", "manifest.json"} <= set(files)
    assets = sorted(p for p in files if p.startswith("assets/"))
    assert any(p.startswith("assets/widget-") and p.endswith(".js") for p in assets)
    assert any(p.startswith("assets/react-") for p in assets)
    assert all(len(meta["sha256"]) == 64 and meta["size"] > 0 for meta in files.values())
    assert deployed.release == release_of(files) and deployed.release.startswith("r-")
    assert steps["build"].detail["numbers"]["build_s"] > 0

    gates = steps["gates"].detail
    assert gates["verdict"] == "PASS"
    numbers = gates["numbers"]
    assert 0 < numbers["loader_gzip_bytes"] <= LOADER_BUDGET_BYTES
    assert numbers["loader_gzip_bytes"] < numbers["total_gzip_bytes"] <= TOTAL_BUDGET_BYTES
    assert numbers["tests"] >= 28 and numbers["tests_failed"] == 0 and numbers["typecheck_errors"] == 0
    assert "sizes: loader.js" in deployed.printed and "vitest" in deployed.printed

    check = steps["browser-check"]
    assert check.output["sources"] == [s["title"] for s in STUB_SOURCES]
    assert check.detail["release"] == deployed.release and check.detail["problems"] == []
    shot = Path(check.output["screenshot"])
    assert shot.parent == stage.home / "frontend" / "runs" / deployed.run.id
    assert shot.read_bytes().startswith(PNG)

    upload = steps["upload"].output
    assert set(upload["uploaded"]) == set(files) and upload["skipped"] == []
    publish = steps["publish"].output
    assert publish["channel"] == ENV and publish["release_id"] == deployed.release
    assert publish["invalidation"]["paths"] == ["/index.html", "/loader.js"]
    assert stage.site.invalidations(ENV)[0].paths == ("/index.html", "/loader.js")

    verify = steps["verify"]
    assert verify.detail["release"] == deployed.release and verify.detail["problems"] == []
    assert Path(verify.output["screenshot"]).read_bytes().startswith(PNG)
    index = _served(stage)
    assert index.headers[RELEASE_HEADER] == deployed.release and index.headers["Cache-Control"] == "no-cache"
    widget = next(p for p in assets if p.startswith("assets/widget-") and p.endswith(".js"))
    assert "immutable" in _served(stage, "/" + widget).headers["Cache-Control"]
    kinds = stage.audit_kinds(deployed.run.id)
    assert kinds[0] == "run.started" and kinds.count("step.done") == 6 and kinds[-1] == "run.finished"
    assert kinds.count("step.effect") == 4  # gc, upload, point, invalidate: each recorded once


def test_the_same_source_to_a_preview_builds_the_same_files_and_uploads_nothing(
    stage: Stage, deployed: Deployed
) -> None:
    run, steps, printed = stage.run(cd05.NAME, {"api": stage.stub.url, "preview": "feat-cart"})
    assert run.effective_state is RunState.SUCCEEDED, f"{run.reason}\n{printed}"
    assert steps["build"].output["files"] == deployed.steps["build"].output["files"]  # same hashes
    assert steps["build"].output["node_modules"] == "cached"
    assert steps["upload"].output["uploaded"] == [] and steps["upload"].detail["numbers"]["uploaded"] == 0
    assert "uploaded 0 file(s)" in printed
    assert steps["publish"].output["channel"] == "preview/feat-cart"
    assert steps["browser-check"].detail["url"].endswith("/previews/feat-cart/")
    preview = _served(stage, "/previews/feat-cart/")
    assert preview.status_code == 200 and preview.headers[RELEASE_HEADER] == deployed.release
    assert stage.site.current(ENV) == deployed.release

    runner = CliRunner()
    listed = runner.invoke(app, ["previews", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["branch"] == "feat-cart" and row["release"] == deployed.release
    assert row["url"] == stage.edge_url + "/previews/feat-cart/"
    deleted = runner.invoke(app, ["previews", "delete", "feat-cart"])
    assert deleted.exit_code == 0, deleted.output
    assert stage.site.previews() == [] and _served(stage, "/previews/feat-cart/").status_code == 404
    again = runner.invoke(app, ["previews", "delete", "feat-cart"])
    assert again.exit_code == 1 and "there is no preview of branch feat-cart" in again.output


def test_a_broken_bundle_is_stopped_by_the_browser_check_before_anything_is_published(
    stage: Stage, deployed: Deployed, tmp_path: Path
) -> None:
    before = (stage.site.current(ENV), len(stage.site.history(ENV)), len(stage.site.releases()))
    source = broken_source(ROOT / "frontend", tmp_path / "broken")
    run, steps, _ = stage.run(cd05.NAME, {"api": stage.stub.url, "source": str(source)})
    assert run.effective_state is not RunState.SUCCEEDED
    assert steps["gates"].status is StepStatus.DONE  # it typechecks and its unit tests pass
    check = steps["browser-check"]
    assert check.status is StepStatus.FAILED
    assert "before anything was published" in str(run.reason)
    assert any("a broken bundle" in p for p in check.detail["problems"]), check.detail["problems"]
    assert _not_started(steps, "upload", "publish", "verify")
    broken = steps["build"].output["release_id"]
    assert broken != deployed.release
    assert (stage.site.current(ENV), len(stage.site.history(ENV)), len(stage.site.releases())) == before
    assert broken not in {r.release_id for r in stage.site.releases()}
    assert _served(stage).headers[RELEASE_HEADER] == deployed.release
    assert Path(check.detail["screenshot"]).is_file()  # what the browser showed instead


def test_a_changed_widget_uploads_only_its_new_files_and_a_rollback_is_visible_through_the_edge(
    stage: Stage, deployed: Deployed, tmp_path: Path
) -> None:
    source = changed_source(ROOT / "frontend", tmp_path / "changed", "rollback test")
    run, steps, printed = stage.run(cd05.NAME, {"api": stage.stub.url, "source": str(source)})
    assert run.effective_state is RunState.SUCCEEDED, f"{run.reason}\n{printed}"
    second = steps["build"].output["release_id"]
    first_files = deployed.steps["build"].output["files"]
    uploaded = set(steps["upload"].output["uploaded"])
    new_assets = {p for p in uploaded if p.startswith("assets/")}
    assert len(new_assets) == 1 and next(iter(new_assets)).startswith("assets/widget-")
    assert new_assets.isdisjoint(first_files)
    assert {"index.html", "loader.js"} <= uploaded
    skipped = set(steps["upload"].output["skipped"])
    assert any(p.startswith("assets/react-") for p in skipped) and skipped <= set(first_files)
    assert _served(stage).headers[RELEASE_HEADER] == second

    back, back_steps, printed = stage.run(cd05.ROLLBACK, {})
    assert back.effective_state is RunState.SUCCEEDED, f"{back.reason}\n{printed}"
    restore = back_steps["restore"].output
    assert (restore["from"], restore["to"]) == (second, deployed.release)
    assert restore["invalidation"]["paths"] == ["/index.html", "/loader.js"]
    assert back_steps["verify"].output["visible_s"] < 1.0
    assert _served(stage).headers[RELEASE_HEADER] == deployed.release
    assert stage.site.history(ENV)[-1].reason == back.id
    # the second release's widget chunk stays served to tabs that loaded it
    assert _served(stage, "/" + next(iter(new_assets))).status_code == 200
    assert "rollback.started" not in stage.audit_kinds(back.id)


def test_a_build_without_loader_js_fails_naming_it_and_publishes_nothing(
    stage: Stage, tmp_path: Path
) -> None:
    source = tmp_path / "bad"
    source.mkdir()
    build = (
        "node -e \"require('fs').mkdirSync('dist',{recursive:true});"
        "require('fs').writeFileSync('dist/index.html','<p>x')\""
    )
    (source / "package.json").write_text(
        json.dumps({"name": "bad", "version": "0.0.0", "private": True, "scripts": {"build": build}})
    )
    (source / "package-lock.json").write_text(
        json.dumps(
            {
                "name": "bad",
                "version": "0.0.0",
                "lockfileVersion": 3,
                "requires": True,
                "packages": {"": {"name": "bad", "version": "0.0.0"}},
            }
        )
    )
    before = (stage.site.current(ENV), len(stage.site.releases()))
    run, steps, _ = stage.run(cd05.NAME, {"api": stage.stub.url, "source": str(source)})
    assert run.effective_state is not RunState.SUCCEEDED
    assert steps["build"].status is StepStatus.FAILED
    assert "the build produced no loader.js" in str(run.reason) and "nothing is published" in str(run.reason)
    assert _not_started(steps, "gates", "browser-check", "upload", "publish")
    assert (stage.site.current(ENV), len(stage.site.releases())) == before
