"""What one build remembers between its steps: the sources' chunks (until a byte of them changes)
and a ready version's rows (sealed versions never change)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mangaassist.delivery.pipelines import kb
from mangaassist.platform.vector import IndexRecord
from tests.integration.kb.conftest import copy_sources


def workspace(root: Path, home: Path) -> kb.Workspace:
    return kb.Workspace({"root": str(root), "home": str(home), "embedder": "hashing"})


def test_chunks_are_reread_when_any_source_changes(tmp_path: Path) -> None:
    root = copy_sources(tmp_path / "repo")
    ws = workspace(root, tmp_path / "home")
    first = ws.chunks()
    assert ws.chunks() == first and ws.chunks() is not ws.chunks()  # a copy each time
    doc = sorted((root / "knowledge").glob("*.md"))[0]
    doc.write_text(doc.read_text(encoding="utf-8") + "\n## Added\nA brand new section.\n", encoding="utf-8")
    edited = ws.chunks()
    assert len(edited) == len(first) + 1 and any(c.heading == "Added" for c in edited)
    doc.unlink()
    assert len(ws.chunks()) < len(edited)
    config = root / "config" / "chatbot.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("chunk_words: 160", "chunk_words: 40"))
    assert len(ws.chunks()) > len(edited)  # smaller windows: more chunks


def record(i: int) -> IndexRecord:
    return IndexRecord(
        f"d{i}#0", f"d{i}", "Doc", "H", f"text {i}", f"h{i}", "policy", np.ones(256, np.float32)
    )


def test_ready_versions_are_read_once_building_ones_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_sources(tmp_path / "repo")
    ws = workspace(root, tmp_path / "home")
    ws.index.create_version("kb-test-1", model=ws.model, dim=256, meta={})
    ws.index.add("kb-test-1", [record(i) for i in range(3)])
    reads: list[str] = []
    original = ws.index.records

    def counting(name: str) -> list[IndexRecord]:
        reads.append(name)
        return original(name)

    monkeypatch.setattr(ws.index, "records", counting)
    assert len(ws.ready_records("kb-test-1")) == 3
    assert len(ws.ready_records("kb-test-1")) == 3
    assert reads == ["kb-test-1", "kb-test-1"]  # still building: read each time
    ws.index.seal("kb-test-1", {"chunks": 3})
    ws.ready_records("kb-test-1")
    ws.ready_records("kb-test-1")
    assert reads == ["kb-test-1"] * 3  # sealed: read once more, then remembered
