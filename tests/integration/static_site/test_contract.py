"""What every ``StaticSite`` provider must do for CD-05: content-addressed uploads that skip what is
stored, an atomic pointer per channel with its history, previews, invalidation records, and
retention that keeps the last 20 releases of each channel."""

from __future__ import annotations

import threading

import pytest

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.static_site import RETAINED_RELEASES, StaticSite, StaticSiteError, release_id
from tests.integration.static_site.conftest import ENV, release


def test_uploading_twice_skips_what_is_stored_and_a_new_release_skips_shared_assets(site: StaticSite) -> None:
    first = site.upload(release(1))
    assert first.release_id == release_id(release(1))
    assert first.uploaded == tuple(sorted(release(1))) and first.skipped == ()
    again = site.upload(release(1))
    assert again.release_id == first.release_id
    assert again.uploaded == () and again.skipped == tuple(sorted(release(1)))
    second = site.upload(release(2))
    assert second.skipped == ("assets/vendor-7f3a.js",)
    assert set(second.uploaded) == {"index.html", "loader.js", "manifest.json", "assets/app-0002.js"}
    assert [r.release_id for r in site.releases()] == [first.release_id, second.release_id]
    info = site.release(second.release_id)
    assert {f.path for f in info.assets} == {"assets/app-0002.js", "assets/vendor-7f3a.js"}
    assert {f.path for f in info.entry_files} == {"index.html", "loader.js", "manifest.json"}
    assert site.read(second.release_id, "assets/vendor-7f3a.js") == b"export const vendor = 1;"
    assert site.read(second.release_id, "index.html") == release(2)["index.html"]
    with pytest.raises(NotFoundError):
        site.read(second.release_id, "assets/app-0001.js")  # release 1's, not release 2's
    with pytest.raises(NotFoundError):
        site.release("r-000000000000")


def test_an_asset_path_never_changes_content_and_bad_releases_store_nothing(site: StaticSite) -> None:
    site.upload(release(1))
    with pytest.raises(StaticSiteError, match=r"assets/vendor-7f3a\.js is stored with other content"):
        site.upload(release(2, shared=b"export const vendor = 2;"))
    with pytest.raises(ConfigError, match=r"lacks its entry file\(s\) loader.js"):
        site.upload({k: v for k, v in release(3).items() if k != "loader.js"})
    with pytest.raises(ConfigError, match=r"'\.\.'"):
        site.upload(release(4, extra={"assets/../../x.js": b"x"}))
    assert [r.release_id for r in site.releases()] == [release_id(release(1))]


def test_the_pointer_moves_atomically_and_keeps_its_history(site: StaticSite) -> None:
    r1, r2 = site.upload(release(1)).release_id, site.upload(release(2)).release_id
    assert site.current(ENV) is None and site.history(ENV) == []
    one = site.point(ENV, r1, reason="deploy 1")
    assert (one.release_id, one.previous, one.seq, one.reason) == (r1, None, 1, "deploy 1")
    two = site.point(ENV, r2, reason="deploy 2")
    assert (two.previous, two.seq) == (r1, 2) and site.current(ENV) == r2
    back = site.point(ENV, r1, reason="rollback")
    assert (back.release_id, back.previous, back.seq) == (r1, r2, 3)
    assert site.point(ENV, r1, reason="again") == back  # already live: nothing changes
    assert [(m.release_id, m.previous, m.reason) for m in site.history(ENV)] == [
        (r1, None, "deploy 1"),
        (r2, r1, "deploy 2"),
        (r1, r2, "rollback"),
    ]
    with pytest.raises(StaticSiteError, match="not uploaded"):
        site.point(ENV, "r-0123456789ab", reason="typo")
    assert site.current(ENV) == r1
    with pytest.raises(ConfigError, match="serves environment dev"):
        site.point("prod", r1, reason="wrong site")

    # readers during moves only ever see one of the two releases, never nothing or a mix
    seen: set[str | None] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(site.current(ENV))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(10):
            site.point(ENV, r2 if i % 2 == 0 else r1, reason=f"flip {i}")
    finally:
        stop.set()
        reader.join()
    assert seen <= {r1, r2} and seen
    assert len(site.history(ENV)) == 13


def test_previews_are_channels_of_their_own(site: StaticSite) -> None:
    r1, r2 = site.upload(release(1)).release_id, site.upload(release(2)).release_id
    site.point(ENV, r1, reason="deploy")
    site.point("preview/feat-login", r2, reason="pr 12")
    site.point("preview/fix-cart", r1, reason="pr 13")
    assert site.previews() == ["feat-login", "fix-cart"]
    assert site.current("preview/feat-login") == r2 and site.current(ENV) == r1
    assert site.url("preview/feat-login").endswith("/previews/feat-login/")
    assert site.url(ENV).endswith("/") and "previews" not in site.url(ENV)
    assert site.delete_preview("feat-login") is True
    assert site.previews() == ["fix-cart"]
    assert site.current("preview/feat-login") is None and site.history("preview/feat-login") == []
    assert site.delete_preview("feat-login") is False
    assert site.current(ENV) == r1  # the environment's channel is untouched
    with pytest.raises(ConfigError, match="branch 'feat/login'"):
        site.delete_preview("feat/login")
    with pytest.raises(ConfigError, match=r"branch '\.\.'"):
        site.point("preview/..", r1, reason="escape")


def test_invalidations_are_recorded_per_channel(site: StaticSite) -> None:
    site.point(ENV, site.upload(release(1)).release_id, reason="deploy")
    made = site.invalidate(ENV, ["/index.html", "/loader.js"])
    assert made.id and made.channel == ENV and made.paths == ("/index.html", "/loader.js") and made.at
    later = site.invalidate(ENV, ["/index.html"])
    assert later.id != made.id
    assert site.invalidations(ENV) == [made, later]
    preview = site.invalidate("preview/feat-login", ["/index.html"])
    assert site.invalidations("preview/feat-login") == [preview]
    assert site.invalidations(ENV) == [made, later]
    with pytest.raises(ConfigError, match="at least one path"):
        site.invalidate(ENV, [])
    with pytest.raises(ConfigError, match="URL path"):
        site.invalidate(ENV, ["index.html"])


def test_retention_keeps_the_last_20_releases_of_each_channel(site: StaticSite) -> None:
    ids = []
    for n in range(RETAINED_RELEASES + 2):  # 22 deploys: releases 0 and 1 fall out of dev's window
        ids.append(site.upload(release(n)).release_id)
        site.point(ENV, ids[-1], reason=f"deploy {n}")
    site.point("preview/old-branch", ids[0], reason="a preview still on release 0")
    assert site.retained() == {ids[0], *ids[2:]}
    collected = site.gc()
    assert collected.releases == (ids[1],)
    assert collected.files >= 1  # release 1's own chunk at least
    assert [r.release_id for r in site.releases()] == [ids[0], *ids[2:]]
    with pytest.raises(NotFoundError):
        site.read(ids[1], "assets/app-0001.js")
    for n in (0, 2, RETAINED_RELEASES + 1):  # the preview's, the oldest of dev's window, the live one
        assert site.read(ids[n], f"assets/app-{n:04d}.js") == f"export const release = {n};".encode()
    assert site.read(ids[2], "assets/vendor-7f3a.js") == b"export const vendor = 1;"  # shared: kept
    assert site.current(ENV) == ids[-1]

    assert site.delete_preview("old-branch") is True
    assert site.gc().releases == (ids[0],)  # no channel keeps it any more
    assert site.gc().releases == ()  # nothing left to collect
    assert site.read(ids[-1], "index.html") == release(RETAINED_RELEASES + 1)["index.html"]
