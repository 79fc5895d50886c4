"""CD-05's channels, branch validation, rollback targets and the undo of a publish."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.frontend.serve import StubChatbot
from mangaassist.delivery.pipelines import frontend as cd05
from mangaassist.platform.local.static_site import LocalStaticSite
from mangaassist.platform.static_site import PointerChange


def test_a_deploy_goes_to_the_environment_or_a_branch_preview() -> None:
    assert cd05.channel_for("dev") == "dev"
    assert cd05.channel_for("dev", "feat-login.2") == "preview/feat-login.2"
    assert cd05.path_prefix("dev") == "/"
    assert cd05.path_prefix("preview/feat-login.2") == "/previews/feat-login.2/"


@pytest.mark.parametrize(
    "branch", ["../x", "a/b", "..", ".hidden", "a b", "x" * 64, "feat/../../etc", "a\\b"]
)
def test_a_branch_with_path_characters_is_refused(branch: str) -> None:
    with pytest.raises(ConfigError, match="a preview's branch must match"):
        cd05.channel_for("dev", branch)


@pytest.mark.parametrize("branch", ["../x", "a/b"])
def test_a_pipeline_for_a_bad_branch_is_not_even_built(branch: str) -> None:
    with pytest.raises(ConfigError, match="a preview's branch must match"):
        cd05.build({"environment": "dev", "preview": branch})
    with pytest.raises(ConfigError, match="a preview's branch must match"):
        cd05.build_preview_delete({"environment": "dev", "preview": branch})


def test_the_pipelines_need_an_environment_and_a_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment=NAME"):
        cd05.build({})
    with pytest.raises(ConfigError, match="not a widget source directory"):
        cd05.build({"environment": "dev", "source": str(tmp_path)})
    pipeline = cd05.build({"environment": "dev"})  # the repository's frontend/
    assert pipeline.step_names == ["build", "gates", "browser-check", "upload", "publish", "verify"]
    assert pipeline.rollback is not None
    assert cd05.build_rollback({"environment": "dev"}).step_names == ["restore", "verify"]


def test_a_deploy_invalidates_at_most_two_paths() -> None:
    assert cd05.ENTRY_PATHS == ("/index.html", "/loader.js")


def _move(seq: int, release: str, previous: str | None) -> PointerChange:
    return PointerChange("dev", release, previous, "2025-01-01T00:00:00.000+00:00", f"run-{seq}", seq)


def test_a_rollback_returns_to_the_release_the_live_pointer_replaced() -> None:
    assert cd05.previous_release([]) is None
    assert cd05.previous_release([_move(1, "r-a", None)]) is None
    assert cd05.previous_release([_move(1, "r-a", None), _move(2, "r-b", "r-a")]) == "r-a"
    history = [_move(1, "r-a", None), _move(2, "r-b", "r-a"), _move(3, "r-a", "r-b")]
    assert cd05.previous_release(history) == "r-b"  # a rollback is undone by the next one


def _release(n: int) -> dict[str, bytes]:
    return {
        "index.html": f"<title>{n}</title>".encode(),
        "loader.js": f"// {n}".encode(),
        f"assets/w-{n}.js": b"1",
    }


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LocalStaticSite]:
    made = LocalStaticSite(tmp_path / "site", environment="dev", base_url="http://127.0.0.1:1")
    yield made
    made.close()


def test_undoing_a_publish_points_back_and_invalidates_the_entry_paths(site: LocalStaticSite) -> None:
    r1, r2 = (site.upload(_release(n)).release_id for n in (1, 2))
    site.point("dev", r1, reason="run-a")
    site.point("dev", r2, reason="run-b")
    assert cd05.undo_publish(site, "dev", "run-other") == {
        "done": "nothing: the run did not move the pointer"
    }
    done = cd05.undo_publish(site, "dev", "run-b")
    assert done["done"] == f"dev pointed back to {r1}" and site.current("dev") == r1
    assert site.history("dev")[-1].reason == "run-b rolled back"
    assert site.invalidations("dev")[-1].paths == ("/index.html", "/loader.js")
    site.point("dev", r2, reason="run-c")
    site.point("dev", r1, reason="run-d")
    assert cd05.undo_publish(site, "dev", "run-c")["done"].startswith("nothing: dev was moved again since")
    assert site.current("dev") == r1


def test_undoing_the_first_publish_of_a_preview_deletes_it(site: LocalStaticSite) -> None:
    r1 = site.upload(_release(1)).release_id
    site.point("preview/feat-x", r1, reason="run-p")
    site.point("dev", r1, reason="run-e")
    assert cd05.undo_publish(site, "preview/feat-x", "run-p")["done"].startswith("deleted the preview")
    assert site.previews() == []
    assert cd05.undo_publish(site, "dev", "run-e")["done"] == f"nothing: dev had no release before {r1}"
    assert site.current("dev") == r1


def test_a_channel_url_that_gives_no_answer_is_named_before_anything_is_uploaded() -> None:
    with StubChatbot() as stub:
        assert cd05.unreachable(stub.url + "/no-such-page") is None  # a 404 is an answer
        closed = stub.url
    problem = cd05.unreachable(closed, timeout_s=2)
    assert problem is not None and "ConnectError" in problem
