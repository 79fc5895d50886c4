"""The pure parts of the widget's build (``delivery/frontend/build.py``) and its source copies:
file lists, release naming, entry files, the source copy, the node_modules cache key, run pruning."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.frontend.build import (
    BuildError,
    check_entry_files,
    check_source,
    copy_source,
    dependencies_key,
    file_list,
    load_release,
    missing_entry_files,
    prune_runs,
    read_dist,
    release_of,
)
from mangaassist.delivery.frontend.sources import BROKEN_LINE, WIDGET_ENTRY, broken_source, changed_source
from mangaassist.platform.static_site import file_digest, release_id

FILES = {
    "loader.js": b"(function(){import('./assets/widget-Ab12.js')})()",
    "index.html": b"<!doctype html><script src=./loader.js defer></script>",
    "manifest.json": b"{}",
    "assets/widget-Ab12.js": b"export function mount(){}",
    "assets/react-Cd34.js": b"export const React = {};",
}


def test_the_file_list_has_every_file_sorted_with_its_sha256_and_size() -> None:
    listed = file_list(FILES)
    assert list(listed) == sorted(FILES)
    assert listed["loader.js"] == {"sha256": file_digest(FILES["loader.js"]), "size": len(FILES["loader.js"])}


def test_the_release_is_named_by_its_files_as_the_site_names_it() -> None:
    name = release_of(file_list(FILES))
    assert name == release_id(FILES) and name.startswith("r-") and len(name) == 14
    assert release_of(file_list(dict(reversed(list(FILES.items()))))) == name  # order does not matter
    assert release_of(file_list({**FILES, "loader.js": FILES["loader.js"] + b";"})) != name
    renamed = {**{k: v for k, v in FILES.items() if k != "manifest.json"}, "manifest2.json": b"{}"}
    assert release_of(file_list(renamed)) != name


def test_a_build_without_its_entry_files_is_an_error_naming_them(tmp_path: Path) -> None:
    assert missing_entry_files(FILES) == []
    assert missing_entry_files({"index.html": b""}) == ["loader.js"]
    with pytest.raises(BuildError) as caught:
        check_entry_files({"assets/a.js": b""}, tmp_path / "dist")
    message = str(caught.value)
    assert "the build produced no index.html and no loader.js" in message
    assert "nothing is published" in message and str(tmp_path / "dist") in message


def _source(root: Path) -> Path:
    (root / "src" / "widget").mkdir(parents=True)
    (root / "node_modules" / "react").mkdir(parents=True)
    (root / "dist" / "assets").mkdir(parents=True)
    (root / "package.json").write_text('{"name": "w"}')
    (root / "package-lock.json").write_text('{"lockfileVersion": 3}')
    (root / WIDGET_ENTRY).write_text("export function mount() {}\n")
    (root / "node_modules" / "react" / "index.js").write_text("x")
    (root / "dist" / "loader.js").write_text("old")
    (root / "src" / "dist").mkdir()  # only the top-level dist is skipped
    (root / "src" / "dist" / "keep.ts").write_text("1")
    return root


def test_the_source_copy_leaves_out_node_modules_and_dist(tmp_path: Path) -> None:
    source = _source(tmp_path / "frontend")
    copy = copy_source(source, tmp_path / "copy")
    copied = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    assert copied == ["package-lock.json", "package.json", "src/dist/keep.ts", "src/widget/index.tsx"]
    (copy / "stale.txt").write_text("from an earlier copy")
    assert not (copy_source(source, copy) / "stale.txt").exists()  # replaced, not merged


def test_a_directory_without_package_files_is_not_a_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lacks package\.json, package-lock\.json"):
        check_source(tmp_path)
    with pytest.raises(ConfigError, match="no such directory"):
        check_source(tmp_path / "nope")


def test_node_modules_are_cached_by_the_lock_the_manifest_and_node(tmp_path: Path) -> None:
    source = _source(tmp_path / "frontend")
    key = dependencies_key(source, "v20.19.2")
    assert len(key) == 16 and dependencies_key(source, "v20.19.2") == key
    assert dependencies_key(source, "v22.1.0") != key
    (source / "package-lock.json").write_text('{"lockfileVersion": 3, "packages": {}}')
    assert dependencies_key(source, "v20.19.2") != key
    (source / WIDGET_ENTRY).write_text("changed source, same dependencies")
    assert dependencies_key(source, "v20.19.2") == dependencies_key(source, "v20.19.2")


def test_a_recorded_build_is_read_back_only_if_unchanged(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    for path, data in FILES.items():
        (dist / path).parent.mkdir(parents=True, exist_ok=True)
        (dist / path).write_bytes(data)
    listed = file_list(read_dist(dist))
    assert load_release(dist, listed) == FILES
    (dist / "assets" / "widget-Ab12.js").write_bytes(b"tampered")
    with pytest.raises(BuildError, match="changed since the build recorded it"):
        load_release(dist, listed)
    (dist / "extra.js").write_bytes(b"")
    with pytest.raises(BuildError, match="no longer holds the files the build recorded"):
        load_release(dist, listed)


def test_old_run_directories_are_pruned_newest_kept(tmp_path: Path) -> None:
    now = time.time()
    for n in range(6):
        (tmp_path / f"run-{n}").mkdir()
        os.utime(tmp_path / f"run-{n}", (now - 100 + n, now - 100 + n))
    removed = prune_runs(tmp_path, keep=3, spare="run-0")
    assert sorted(removed) == ["run-1", "run-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-0", "run-3", "run-4", "run-5"]
    assert prune_runs(tmp_path / "none") == []


def test_a_changed_source_exports_its_label_and_a_broken_one_throws(tmp_path: Path) -> None:
    source = _source(tmp_path / "frontend")
    changed = changed_source(source, tmp_path / "changed", "deploy 7")
    text = (changed / WIDGET_ENTRY).read_text()
    assert text.startswith("export function mount() {}") and "export const BUILD_LABEL = 'deploy 7';" in text
    assert not (changed / "node_modules").exists()
    broken = broken_source(source, tmp_path / "broken")
    assert (broken / WIDGET_ENTRY).read_text().endswith(BROKEN_LINE)
    assert (source / WIDGET_ENTRY).read_text() == "export function mount() {}\n"  # the source is untouched
    with pytest.raises(ValueError, match="label"):
        changed_source(source, tmp_path / "x", "'; alert(1); '")
