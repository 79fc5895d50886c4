"""The build's embedding loop without the real model: length-sorted batches come back in the
callers' order, vectors are cached every ``flush_every`` chunks (a failure keeps what was flushed),
stage times are reported, bad settings are refused, and ``kb build``'s progress display."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from mangaassist.cli.kb_cmds import BuildProgress
from mangaassist.core.errors import ConfigError
from mangaassist.core.kb import Chunk, embed_text
from mangaassist.delivery.engine.runs import ProgressEvent
from mangaassist.delivery.pipelines import kb
from mangaassist.platform.embeddings import (
    EmbedStats,
    HashingEmbedder,
    Matrix,
    MiniLMEmbedder,
    embed_runtime,
    make_embedder,
)

REPO = Path(__file__).parents[3]


def chunks(n: int) -> list[Chunk]:
    out = []
    for i in range(n):
        text = " ".join(["word"] * (1 + (i * 7) % 23)) + f" number {i}"
        import hashlib

        digest = hashlib.sha256(embed_text("Doc", "H", text).encode()).hexdigest()
        out.append(Chunk(f"d{i}#0", f"d{i}", "Doc", "H", text, digest))
    return out


class SortingEmbedder(HashingEmbedder):
    """Hashing vectors, handed out in length order like MiniLM's, failing after ``fail_after``."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.fail_after = fail_after
        self.stats = EmbedStats()
        self.batches_seen: list[list[int]] = []

    def embed_batches(
        self, texts: Sequence[str], batch_size: int | None = None
    ) -> Iterator[tuple[list[int], Matrix]]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        size = batch_size or 4
        for start in range(0, len(order), size):
            if self.fail_after is not None and start >= self.fail_after:
                raise RuntimeError("killed")
            rows = order[start : start + size]
            self.batches_seen.append(rows)
            self.stats.forward_s += 0.001
            self.stats.tokens += len(rows)
            self.stats.padded_tokens += len(rows) * 2
            yield rows, self.embed([texts[i] for i in rows])


def workspace(tmp_path: Path, embedder: HashingEmbedder, **params: object) -> kb.Workspace:
    ws = kb.Workspace({"root": str(REPO), "home": str(tmp_path), "embedder": "hashing", **params})
    ws.embedder = embedder
    return ws


def test_length_sorted_batches_are_cached_under_the_right_hash(tmp_path: Path) -> None:
    embedder = SortingEmbedder()
    ws = workspace(tmp_path, embedder, batch_size=5, flush_every=7)
    items = chunks(40)
    done, hits, stages = ws.embed_with_stages(items)
    assert (done, hits) == (40, 0)
    # batches were in length order, not arrival order
    assert [len(items[i].embed_text) for b in embedder.batches_seen for i in b] == sorted(
        len(c.embed_text) for c in items
    )
    cached = ws.cache.get_many(ws.model, [c.content_hash for c in items])
    expected = HashingEmbedder().embed([c.embed_text for c in items])
    for i, c in enumerate(items):
        np.testing.assert_allclose(cached[c.content_hash], expected[i], atol=1e-6)
    assert stages["forward_s"] == pytest.approx(0.008)  # 8 batches of 5
    assert stages["padding_waste"] == pytest.approx(0.5)
    assert {"cache_read_s", "cache_write_s", "embed_s", "tokenize_s"} <= set(stages)
    # a second pass finds everything in the cache
    assert ws.embed_with_stages(items)[:2] == (0, 40)


def test_a_failure_keeps_every_flushed_vector(tmp_path: Path) -> None:
    ws = workspace(tmp_path, SortingEmbedder(fail_after=20), batch_size=5, flush_every=10)
    items = chunks(40)
    with pytest.raises(RuntimeError, match="killed"):
        ws.embed_missing(items)
    assert ws.cache.count(ws.model) == 20  # flushed at 10 and 20, nothing after
    ws.embedder = SortingEmbedder()
    assert ws.embed_missing(items) == (20, 20)


def test_embedders_without_sorted_batches_still_work(tmp_path: Path) -> None:
    ws = workspace(tmp_path, HashingEmbedder(), batch_size=3)
    assert ws.embed_with_stages(chunks(10))[:2] == (10, 0)


@pytest.mark.parametrize("bad", [0, -3, "many"])
def test_bad_batch_settings_are_refused(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        kb.Workspace({"root": str(REPO), "home": str(tmp_path), "embedder": "hashing", "batch_size": bad})
    with pytest.raises(ConfigError, match="flush_every"):
        kb.Workspace({"root": str(REPO), "home": str(tmp_path), "embedder": "hashing", "flush_every": bad})


def test_bad_runtimes_are_refused_before_loading_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="expected one of torch, onnx"):
        MiniLMEmbedder(runtime="tensorflow")
    with pytest.raises(ConfigError, match="batch size 0"):
        MiniLMEmbedder(batch_size=0)
    monkeypatch.setenv("MANGAASSIST_EMBED_RUNTIME", "cuda")
    with pytest.raises(ConfigError, match="MANGAASSIST_EMBED_RUNTIME='cuda'"):
        make_embedder("minilm")
    with pytest.raises(ConfigError, match="embedder 'bert'"):
        make_embedder("bert")
    assert embed_runtime("onnx") == "onnx"
    monkeypatch.setenv("MANGAASSIST_EMBED_RUNTIME", "onnx")
    assert embed_runtime() == "onnx"
    monkeypatch.delenv("MANGAASSIST_EMBED_RUNTIME")
    assert embed_runtime() == "torch"


def events(n: int) -> list[ProgressEvent]:
    return [
        ProgressEvent(
            "step.progress", "run-1", "embed", f"embedded {i}/{n} chunks, 80.0 chunks/s, 1m00s left", i / n
        )
        for i in range(1, n + 1)
    ]


def test_plain_progress_is_one_line_per_tenth() -> None:
    out = io.StringIO()
    display = BuildProgress(as_json=True, stream=Console(file=out, force_terminal=False, width=200))
    with display:
        for event in events(500):
            display(event)
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 12
    assert lines[-1] == "run-1 embed: embedded 500/500 chunks, 80.0 chunks/s, 1m00s left"


def test_terminal_progress_is_a_bar_with_rate_and_time_left() -> None:
    out = io.StringIO()
    display = BuildProgress(as_json=False, stream=Console(file=out, force_terminal=True, width=200))
    assert display.rich
    with display:
        display(ProgressEvent("step.started", "run-1", "embed", "embed the new and changed chunks"))
        for event in events(50)[:25]:
            display(event)
        assert display.progress is not None
        display.progress.refresh()  # what its timer does ten times a second
        display(ProgressEvent("step.done", "run-1", "embed", "embedded=50"))
    text = out.getvalue()
    assert "embedded 25/50 chunks, 80.0 chunks/s, 1m00s left" in text and "50%" in text
    assert "100%" in text  # the step's bar is full once it is done
