"""What one build remembers between its steps: the sources' chunks (until a byte of them changes)
and a ready version's rows (sealed versions never change)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.pipelines import kb
from mangaassist.platform.local.vector_lancedb import LanceVectorIndex
from mangaassist.platform.vector import HybridScorer, IndexRecord, VersionError, row_keywords
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


def test_the_files_the_planner_maps_to_the_knowledge_base_are_the_ones_that_change_its_chunks(
    tmp_path: Path,
) -> None:
    """The build and the release planner take the knowledge base's files from one place (core.kb):
    a change of each file the planner maps to CD-04 changes the chunks, and a change of the files
    beside them that it does not map (the seed orders, the other config profiles) does not."""
    from mangaassist.core import kb as sources
    from mangaassist.delivery import planner

    root = copy_sources(tmp_path / "repo")
    for other in ("data/orders.jsonl", "data/README.md", "config/runtime.yaml"):
        (root / other).write_text("x: 1\n", encoding="utf-8")
    ws = workspace(root, tmp_path / "home")
    first = ws.chunks()
    for other in ("data/orders.jsonl", "data/README.md", "config/runtime.yaml"):
        assert "CD-04" not in planner.pipelines_for(other)
        (root / other).write_text("x: 2\n", encoding="utf-8")
        assert ws.chunks() == first, other
    # and the chunking code's files, which key the chunk memo (tests/unit/engine/test_engine_planner.py)
    assert planner.SPECS["CD-04"].files == (
        sources.CATALOG_FILE,
        sources.CHUNK_SETTINGS_FILE,
        *planner.CHUNKING_CODE_FILES,
    )
    settings = root / sources.CHUNK_SETTINGS_FILE
    settings.write_text(settings.read_text(encoding="utf-8").replace("chunk_words: 160", "chunk_words: 40"))
    assert ws.chunks() != first
    catalog = root / sources.CATALOG_FILE
    chunked = ws.chunks()
    text = catalog.read_text(encoding="utf-8")
    catalog.write_text(text.replace('"description": "', '"description": "Newly added. ', 1), encoding="utf-8")
    edited = ws.chunks()
    assert edited != chunked and {c.doc_id for c in edited} == {c.doc_id for c in chunked}


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


def test_only_the_changed_files_are_parsed_again_and_the_chunks_equal_a_fresh_chunking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_sources(tmp_path / "repo")
    ws = workspace(root, tmp_path / "home")
    ws.chunks()
    parsed: list[str] = []
    original = kb.parse_document

    def counting(raw: str, where: str) -> kb.Document:
        parsed.append(Path(where).name)
        return original(raw, where)

    monkeypatch.setattr(kb, "parse_document", counting)
    docs = sorted((root / "knowledge").glob("*.md"))
    edited, crlf = docs[0], docs[1]
    edited.write_text(
        edited.read_text(encoding="utf-8") + "\n## Added\nA brand new section.\n", encoding="utf-8"
    )
    crlf.write_bytes(crlf.read_bytes().replace(b"\n", b"\r\n"))  # bytes differ, text does not
    chunks = ws.chunks()
    assert sorted(parsed) == sorted([edited.name, crlf.name])
    words, overlap = kb.chunk_settings(root / "config" / "chatbot.yaml")
    sources = root / "knowledge", root / "data" / "catalog.jsonl"
    fresh = kb.chunk_all(kb.read_documents(*sources), words, overlap)
    assert chunks == fresh and any(c.heading == "Added" for c in chunks)
    assert not any("\r" in c.text or "\r" in c.heading for c in chunks)

    parsed.clear()
    config = root / "config" / "chatbot.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("chunk_words: 160", "chunk_words: 40"))
    smaller = ws.chunks()
    assert len(parsed) == len(docs)  # other chunk settings: every file is chunked again
    assert smaller == kb.chunk_all(kb.read_documents(*sources), 40, overlap)


def test_a_duplicate_document_id_is_refused_even_when_every_file_is_remembered(tmp_path: Path) -> None:
    root = copy_sources(tmp_path / "repo")
    ws = workspace(root, tmp_path / "home")
    ws.chunks()
    doc = sorted((root / "knowledge").glob("*.md"))[0]
    (root / "knowledge" / f"zz-copy-of-{doc.name}").write_bytes(doc.read_bytes())  # same bytes: remembered
    with pytest.raises(ConfigError, match="duplicate document ids"):
        ws.chunks()


TOPICS = ("giftcards", "shipping", "preorders", "refunds", "points", "bundles", "customs", "wrapping")


def ready_version(ws: kb.Workspace, name: str) -> list[IndexRecord]:
    texts = [(f"d{i}", f"Doc {i}", f"all about {t} here") for i, t in enumerate(TOPICS)]
    vectors = ws.embedder.embed([f"{title} - H: {text}" for _, title, text in texts])
    rows = [
        IndexRecord(f"{d}#0", d, title, "H", text, f"h{d}", "policy", vectors[i])
        for i, (d, title, text) in enumerate(texts)
    ]
    ws.index.create_version(name, model=ws.model, dim=ws.embedder.dim, meta={})
    ws.index.add(name, rows)
    return rows


def count_searches(monkeypatch: pytest.MonkeyPatch, index: Any) -> list[str]:
    """The versions ``index`` is searched in from now on, one entry per search."""
    searched: list[str] = []
    original = index.search

    def counting(name: str, *args: Any, **kwargs: Any) -> Any:
        searched.append(name)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(index, "search", counting)
    return searched


def figures(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "p95_ms"}  # the only one that is a timing


def test_a_ready_versions_evaluation_is_remembered_per_question_set_and_equals_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_sources(tmp_path / "repo")
    ws = workspace(root, tmp_path / "home")
    ready_version(ws, "kb-eval-1")
    golden = [kb.Golden(f"what about {t}?", frozenset({f"d{i}"})) for i, t in enumerate(TOPICS)]
    searched = count_searches(monkeypatch, ws.index)
    with pytest.raises(VersionError):
        ws.evaluate_ready("kb-eval-1", golden)  # building: never remembered (and not searchable)
    ws.index.seal("kb-eval-1", {})
    searched.clear()
    first = ws.evaluate_ready("kb-eval-1", golden)
    again = ws.evaluate_ready("kb-eval-1", golden)
    assert again == first and len(searched) == 3 * len(golden)  # sealed: searched once, then remembered
    assert first["recall_at_5"] == 1.0
    assert figures(ws.evaluate("kb-eval-1", golden)) == figures(first)

    searched.clear()
    fewer = golden[:4]
    narrower = ws.evaluate_ready("kb-eval-1", fewer)
    assert len(searched) == 3 * len(fewer)  # other questions: searched again
    assert figures(narrower) == figures(ws.evaluate("kb-eval-1", fewer))
    moved = [kb.Golden(g.question, frozenset({"d0"})) for g in golden]  # same questions, other answers
    assert figures(ws.evaluate_ready("kb-eval-1", moved)) == figures(ws.evaluate("kb-eval-1", moved))
    assert ws.evaluate_ready("kb-eval-1", moved)["mrr"] < first["mrr"]
    other = kb.Workspace(
        {"root": str(root), "home": str(tmp_path / "home"), "embedder": "hashing", "environment": "dev"}
    )
    searched = count_searches(monkeypatch, other.index)
    other.evaluate_ready("kb-eval-1", golden)
    assert len(searched) == 3 * len(golden)  # another environment's index: its own figures


def test_a_version_held_from_rows_just_read_searches_like_one_read_from_disk(tmp_path: Path) -> None:
    root = copy_sources(tmp_path / "repo")
    ws = workspace(root, tmp_path / "home")
    ready_version(ws, "kb-held-1")
    ws.index.seal("kb-held-1", {})
    held = kb.open_index(ws.home)
    assert isinstance(held, LanceVectorIndex)
    held.remember("kb-held-1", held.records("kb-held-1"))
    cold = kb.open_index(ws.home)
    query = ws.embedder.embed(["returns for topic 3"])[0]
    assert held.search("kb-held-1", query, "returns for topic 3", k=5) == cold.search(
        "kb-held-1", query, "returns for topic 3", k=5
    )
    ws.index.create_version("kb-held-2", model=ws.model, dim=ws.embedder.dim, meta={})
    with pytest.raises(VersionError):
        held.remember("kb-held-2", [])  # only a sealed version is held


def test_keywords_remembered_from_the_last_gated_version_give_the_same_scorer(tmp_path: Path) -> None:
    root = copy_sources(tmp_path / "repo")
    ws = workspace(root, tmp_path / "home")
    rows = ready_version(ws, "kb-words-1")
    kb._ROW_WORDS.clear()
    first = kb._keywords_of(rows)
    assert first == [frozenset(row_keywords(r)) for r in rows]
    edited = [*rows[:-1], replace(rows[-1], text="entirely different wording about wrapping")]
    second = kb._keywords_of(edited)
    assert all(a is b for a, b in zip(first[:-1], second[:-1], strict=True))  # remembered, not recomputed
    assert second[-1] == frozenset(row_keywords(edited[-1])) != first[-1]
    matrix = np.stack([r.vector for r in edited])
    plain, given = HybridScorer(edited, matrix), HybridScorer(edited, matrix, second)
    assert {w: p.tolist() for w, p in plain._postings.items()} == {
        w: p.tolist() for w, p in given._postings.items()
    }
    query = ws.embedder.embed(["different wording for wrapping"])[0]
    assert plain.search(query, "different wording for wrapping") == given.search(
        query, "different wording for wrapping"
    )
    with pytest.raises(ValueError, match="one keyword set per record"):
        HybridScorer(edited, matrix, second[:-1])


def test_the_live_rows_map_is_made_once_per_remembered_version(tmp_path: Path) -> None:
    root = copy_sources(tmp_path / "repo")
    ws = workspace(root, tmp_path / "home")
    ws.index.create_version("kb-map-1", model=ws.model, dim=256, meta={})
    ws.index.add("kb-map-1", [record(i) for i in range(3)])
    plan = {"mode": "incremental", "live": "kb-map-1"}
    building = ws.reusable(plan)
    assert ws.reusable(plan) is not building  # rows of a building version are read each time
    ws.index.seal("kb-map-1", {"chunks": 3})
    sealed = ws.reusable(plan)
    assert ws.reusable(plan) is sealed and sorted(sealed) == ["d0#0", "d1#0", "d2#0"]
    assert sealed["d1#0"][1] == "h1"
    ws.index.create_version("kb-map-2", model=ws.model, dim=256, meta={})
    ws.index.add("kb-map-2", [record(i) for i in range(5)])
    ws.index.seal("kb-map-2", {"chunks": 5})
    other = ws.reusable({"mode": "incremental", "live": "kb-map-2"})
    assert len(other) == 5 and ws.reusable(plan) is not sealed  # another version: its own map
    assert ws.reusable({"mode": "full", "live": "kb-map-2"}) == {}


# -- what a build in a new process inherits: the chunk memo on disk, the figures kept with a version


def forget_this_process() -> None:
    """What a new process lacks: every in-process memo of the pipeline."""
    for memo in (kb._CHUNKED, kb._SOURCE_CHUNKS, kb._READY_ROWS, kb._EVALUATIONS, kb._ROW_WORDS):
        memo.clear()
    kb._REUSABLE.clear()
    kb._MEMO_HOLDS.clear()


def test_a_new_process_parses_only_the_changed_files_and_its_chunks_equal_a_fresh_chunking(
    tmp_path: Path,
) -> None:
    root = copy_sources(tmp_path / "repo")
    forget_this_process()  # earlier tests chunked the same files in this process
    workspace(root, tmp_path / "home").chunks()
    files = len(list((root / "knowledge").glob("*.md"))) + 1
    assert {"files": files, "parsed": files, "from_memory": 0, "from_disk": 0} == kb._CHUNKING_STATS
    forget_this_process()
    doc = sorted((root / "knowledge").glob("*.md"))[0]
    doc.write_text(doc.read_text(encoding="utf-8") + "\n## Added\nA brand new section.\n", encoding="utf-8")

    chunks = workspace(root, tmp_path / "home").chunks()
    assert {"files": files, "parsed": 1, "from_memory": 0, "from_disk": files - 1} == kb._CHUNKING_STATS
    words, overlap = kb.chunk_settings(root / "config" / "chatbot.yaml")
    sources = root / "knowledge", root / "data" / "catalog.jsonl"
    assert chunks == kb.chunk_all(kb.read_documents(*sources), words, overlap)
    assert any(c.heading == "Added" for c in chunks)
    # the keywords the memo seeds are the ones the gate would find by tokenizing
    for c in chunks:
        assert kb._ROW_WORDS[(c.doc_title, c.heading, c.text)] == frozenset(
            row_keywords(
                IndexRecord(c.id, c.doc_id, c.doc_title, c.heading, c.text, c.content_hash, c.kind, [])
            )
        )
    # the memo keeps the files of the last chunking only: the edited file's old entry is gone
    memo = kb.ChunkMemo(tmp_path / "home" / "kb" / "memo.sqlite3")
    assert len(memo.keys(kb._chunking_code())) == files


def test_the_memo_of_other_chunking_code_or_an_unreadable_entry_is_chunked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_sources(tmp_path / "repo")
    home = tmp_path / "home"
    expected = workspace(root, home).chunks()
    files = kb._CHUNKING_STATS["files"]
    memo = kb.ChunkMemo(home / "kb" / "memo.sqlite3")
    with memo._conn() as conn:  # one entry damaged on disk
        sha = conn.execute("SELECT sha FROM source_chunks LIMIT 1").fetchone()[0]
        conn.execute("UPDATE source_chunks SET value = '{not json' WHERE sha = ?", (sha,))
    forget_this_process()
    assert workspace(root, home).chunks() == expected
    assert kb._CHUNKING_STATS["parsed"] == 1 and kb._CHUNKING_STATS["from_disk"] == files - 1

    forget_this_process()
    monkeypatch.setattr(kb, "_chunking_code", lambda: "another-release")
    assert workspace(root, home).chunks() == expected
    assert kb._CHUNKING_STATS["parsed"] == files  # another release of the chunker: nothing reused
    with memo._conn() as conn:
        codes = {row[0] for row in conn.execute("SELECT DISTINCT code FROM source_chunks")}
    assert codes == {"another-release"}  # and the older release's entries are gone


def test_a_new_process_takes_the_figures_kept_with_a_version_only_when_they_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_sources(tmp_path / "repo")
    home = tmp_path / "home"
    ws = workspace(root, home)
    ready_version(ws, "kb-kept-1")
    ws.index.seal("kb-kept-1", {})
    golden = [kb.Golden(f"what about {t}?", frozenset({f"d{i}"})) for i, t in enumerate(TOPICS)]
    first = ws.evaluate_ready("kb-kept-1", golden)
    assert ws.last_evaluation == "searched"
    ws.index.update_meta("kb-kept-1", {"evaluation": ws.evaluated["kb-kept-1"]})  # as the gate does

    forget_this_process()
    fresh = workspace(root, home)
    searched = count_searches(monkeypatch, fresh.index)
    assert fresh.evaluate_ready("kb-kept-1", golden) == first
    assert fresh.last_evaluation == "kept with the version" and searched == []

    moved = [kb.Golden(g.question, frozenset({"d0"})) for g in golden]  # other answers: other figures
    assert figures(fresh.evaluate_ready("kb-kept-1", moved)) == figures(fresh.evaluate("kb-kept-1", moved))
    assert fresh.last_evaluation == "searched"

    forget_this_process()
    monkeypatch.setattr(kb, "_scoring_code", lambda provider: "another-release")
    again = workspace(root, home)
    again.evaluate_ready("kb-kept-1", golden)
    assert again.last_evaluation == "searched"  # another release of the scoring code: searched again

    forget_this_process()
    monkeypatch.undo()
    ws.index.update_meta(
        "kb-kept-1", {"evaluation": {"key": ws.evaluated["kb-kept-1"]["key"], "figures": "x"}}
    )
    damaged = workspace(root, home)
    assert figures(damaged.evaluate_ready("kb-kept-1", golden)) == figures(first)
    assert damaged.last_evaluation == "searched"  # figures of the wrong shape are not trusted


def test_a_chunking_made_without_the_memo_is_written_to_it_by_the_next_call_with_it(tmp_path: Path) -> None:
    root = copy_sources(tmp_path / "repo")
    forget_this_process()
    memo = kb.ChunkMemo(tmp_path / "home" / "kb" / "memo.sqlite3")
    kb._chunked(root, memo)
    doc = sorted((root / "knowledge").glob("*.md"))[0]
    doc.write_text(doc.read_text(encoding="utf-8") + "\n## Added\nA brand new section.\n", encoding="utf-8")
    kb._chunked(root, None)  # remembered in this process only
    kb._chunked(root, memo)
    forget_this_process()
    kb._chunked(root, memo)  # a new process finds the edited file in the memo
    assert (
        kb._CHUNKING_STATS["parsed"] == 0 and kb._CHUNKING_STATS["from_disk"] == kb._CHUNKING_STATS["files"]
    )
