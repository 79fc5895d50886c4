"""The pure parts of ``platform.static_site``: release ids, validation, content types, retention."""

from __future__ import annotations

import hashlib

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.platform.static_site import (
    check_branch,
    check_channel,
    check_invalidation_paths,
    check_path,
    check_release,
    content_type,
    is_asset,
    preview_channel,
    release_id,
    retained_ids,
)

FILES = {
    "index.html": b"<!doctype html><script src=loader.js></script>",
    "loader.js": b"import('./assets/app-1a2b.js')",
    "assets/app-1a2b.js": b"console.log(1)",
}


def test_the_release_id_is_the_hash_of_the_sorted_paths_and_file_hashes() -> None:
    lines = "".join(f"{p}\0{hashlib.sha256(FILES[p]).hexdigest()}\n" for p in sorted(FILES))
    expected = "r-" + hashlib.sha256(lines.encode()).hexdigest()[:12]
    assert release_id(FILES) == expected
    assert release_id(dict(reversed(list(FILES.items())))) == expected  # order does not matter
    changed = {**FILES, "loader.js": FILES["loader.js"] + b" "}
    assert release_id(changed) != expected
    renamed = {
        **{k: v for k, v in FILES.items() if k != "assets/app-1a2b.js"},
        "assets/app.js": b"console.log(1)",
    }
    assert release_id(renamed) != expected  # same bytes under another path is another release


@pytest.mark.parametrize(
    "branch", ["feat/login", "a..b", "..", "-lead", ".hidden", "has space", "x" * 64, ""]
)
def test_a_branch_with_path_characters_is_refused_naming_it(branch: str) -> None:
    with pytest.raises(ConfigError, match="branch") as caught:
        check_branch(branch)
    assert repr(branch) in str(caught.value)


def test_plain_branch_names_are_accepted_up_to_63_characters() -> None:
    for branch in ("main", "feat-login", "fix_1.2", "A" + "x" * 62):
        assert check_branch(branch) == branch
    assert preview_channel("feat-login") == "preview/feat-login"
    assert check_channel("dev") == "dev" and check_channel("preview/feat-login") == "preview/feat-login"
    with pytest.raises(ConfigError, match="branch 'a/b'"):
        check_channel("preview/a/b")
    with pytest.raises(ConfigError, match="channel"):
        check_channel("../prod")


@pytest.mark.parametrize("missing", [("loader.js",), ("index.html",), ("index.html", "loader.js")])
def test_a_release_without_its_entry_files_is_refused_naming_what_is_missing(
    missing: tuple[str, ...],
) -> None:
    files = {k: v for k, v in FILES.items() if k not in missing}
    with pytest.raises(ConfigError, match=f"lacks its entry file\\(s\\) {', '.join(missing)} "):
        check_release(files)
    check_release(FILES)  # manifest.json is optional


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../etc/passwd", "'..'"),
        ("assets/../index.html", "'..'"),
        ("/index.html", "relative"),
        ("assets\\app.js", "relative"),
        ("assets//app.js", "normalised"),
        ("./index.html", "normalised"),
        ("assets/", "normalised"),
        ("assets/a b.js", "characters"),
        ("releases/r-1/index.html", "reserved"),
        ("previews/x/index.html", "reserved"),
        ("", "empty"),
    ],
)
def test_bad_paths_are_refused(path: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        check_path(path)
    with pytest.raises(ConfigError, match=why):
        check_release({**FILES, path: b"x"})


def test_assets_are_what_lives_under_assets() -> None:
    assert is_asset("assets/app-1a2b.js") and is_asset("assets/img/logo.svg")
    assert not is_asset("index.html") and not is_asset("manifest.json") and not is_asset("assets.js")


def test_content_types() -> None:
    assert content_type("loader.js") == "application/javascript"
    assert content_type("assets/app.css").startswith("text/css")
    assert content_type("index.html").startswith("text/html")
    assert content_type("manifest.json") == "application/json"
    assert content_type("assets/logo.svg") == "image/svg+xml"
    assert content_type("assets/cover.PNG") == "image/png"
    assert content_type("assets/blob.unknownext") == "application/octet-stream"


def test_invalidation_paths_are_url_paths() -> None:
    assert check_invalidation_paths(["/index.html", "/loader.js"]) == ("/index.html", "/loader.js")
    for bad in ([], ["index.html"], ["/a/../b"]):
        with pytest.raises(ConfigError):
            check_invalidation_paths(bad)


def test_retention_keeps_the_newest_uploads_and_the_last_distinct_releases_of_each_channel() -> None:
    uploads = [f"r{i}" for i in range(30, 0, -1)]  # newest first
    assert retained_ids(uploads, {}, keep=3) == {"r30", "r29", "r28"}
    pointed = {"dev": ["r1", "r2", "r3", "r2", "r4", "r4"], "preview/x": ["r9"]}
    # dev's last 3 distinct: r4, r2, r3 (r1 is older than all of them); the preview keeps r9
    assert retained_ids(uploads, pointed, keep=3) == {"r30", "r29", "r28", "r4", "r2", "r3", "r9"}
