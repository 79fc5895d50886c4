"""CD-01's build of a local revision (``delivery.rollout.build``) with a real ``pip wheel``: the
project's ``data/`` travels inside the revision, so a catalog change alone is a new revision (as it
is a new image on AWS), and the revision's workers read that data, not the repository's."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest

from mangaassist.chatbot.settings import Settings
from mangaassist.core.errors import ConfigError
from mangaassist.delivery.rollout.build import build_release, import_release
from mangaassist.platform.artifacts import REVISION_DATA

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tinyshop"
version = "1.0.0"

[tool.setuptools.packages.find]
where = ["src"]
"""


def project(root: Path) -> Path:
    (root / "src" / "tinyshop").mkdir(parents=True)
    (root / "src" / "tinyshop" / "__init__.py").write_text("NAME = 'tiny'\n")
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "data").mkdir()
    (root / "data" / "catalog.jsonl").write_text('{"series": "One"}\n')
    (root / "data" / "orders.jsonl").write_text("")
    return root


def members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_the_revision_carries_the_data_it_was_built_with(tmp_path: Path) -> None:
    root, store = project(tmp_path / "repo"), tmp_path / "store"
    first = build_release(root, store)
    files = members(first.artifact.path)
    assert files["tinyshop/__init__.py"] == b"NAME = 'tiny'\n"
    assert files[f"{REVISION_DATA}/catalog.jsonl"] == b'{"series": "One"}\n'
    again = build_release(root, store)
    assert again.cached and again.artifact.digest == first.artifact.digest  # same tree, same revision

    (root / "data" / "catalog.jsonl").write_text('{"series": "One"}\n{"series": "Two"}\n')
    changed = build_release(root, store)
    assert not changed.cached and changed.artifact.digest != first.artifact.digest  # data alone: new
    assert members(changed.artifact.path)[f"{REVISION_DATA}/catalog.jsonl"].count(b"series") == 2
    assert members(first.artifact.path)[f"{REVISION_DATA}/catalog.jsonl"].count(b"series") == 1  # kept

    (root / "data" / "catalog.jsonl").write_text('{"series": "One"}\n')  # back: the first revision
    assert build_release(root, store).artifact.digest == first.artifact.digest


def test_a_project_without_data_builds_as_before_and_a_wheel_with_that_folder_is_refused(
    tmp_path: Path,
) -> None:
    root = project(tmp_path / "repo")
    for f in (root / "data").iterdir():
        f.unlink()
    (root / "data").rmdir()
    plain = build_release(root, tmp_path / "store")
    assert not any(name.startswith(REVISION_DATA) for name in members(plain.artifact.path))

    wheel = tmp_path / "clash-1.0-py3-none-any.whl"  # a wheel with its own top-level revision-data/
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("clash/__init__.py", "")
        zf.writestr(f"{REVISION_DATA}/catalog.jsonl", "{}")
    with pytest.raises(ConfigError, match=f"top-level {REVISION_DATA}/"):
        import_release(wheel, tmp_path / "store2", data=root)
    assert not (tmp_path / "store2").exists() or not list((tmp_path / "store2").glob("*.tar"))


def test_the_chatbot_reads_the_catalog_from_the_revisions_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path / "repo")
    (root / "knowledge").mkdir()
    monkeypatch.setenv("MANGAASSIST_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MANGAASSIST_DATA_DIR", raising=False)
    assert Settings.from_env(root).catalog_path == root / "data" / "catalog.jsonl"
    monkeypatch.setenv("MANGAASSIST_DATA_DIR", str(tmp_path / "unpacked" / REVISION_DATA))
    settings = Settings.from_env(root)
    assert settings.catalog_path == tmp_path / "unpacked" / REVISION_DATA / "catalog.jsonl"
    assert settings.orders_path == tmp_path / "unpacked" / REVISION_DATA / "orders.jsonl"
