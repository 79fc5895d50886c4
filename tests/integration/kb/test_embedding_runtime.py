"""all-MiniLM-L6-v2 as the build runs it (length-sorted batches, its own pooling) against
sentence-transformers' ``encode``, and the ONNX Runtime graph against torch: the same vectors
within tolerance, so neither changes the model id or the embedding cache."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from mangaassist.platform.embeddings import (
    ONNX_TOLERANCE,
    MiniLMEmbedder,
    model_id,
    onnx_model_path,
)

WORDS = "manga volume return window shipping preorder gift card customs refund series author".split()


def texts(n: int = 40) -> list[str]:
    rng = random.Random(7)
    out = ["hi", "What is the return window?", ""]
    # 3 to 400 words: some far past the 256-token limit, so truncation is exercised too
    out += [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 400))) for _ in range(n - len(out))]
    return out


@pytest.fixture(scope="module")
def torch_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(runtime="torch")


def test_sorted_batches_match_sentence_transformers(torch_embedder: MiniLMEmbedder) -> None:
    from sentence_transformers import SentenceTransformer

    sample = texts()
    reference = SentenceTransformer(str(torch_embedder.model_path), device="cpu").encode(
        sample, batch_size=64, normalize_embeddings=True
    )
    torch_embedder.stats.reset()
    got = torch_embedder.embed(sample)
    assert got.shape == (len(sample), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, atol=1e-5)  # same order as the input, same vectors
    stats = torch_embedder.stats
    assert stats.texts == len(sample) and stats.batches == -(-len(sample) // torch_embedder.batch_size)
    assert stats.forward_s > 0 and 0 <= stats.padding_waste < 0.5
    # arrival-order batches of 8 would pad far more than length-sorted ones
    ids = torch_embedder.tokenize(sample)
    sorted_cells = sum(torch_embedder.pad(ids, rows)[1].size for rows in torch_embedder.plan_batches(ids, 8))
    arrival_cells = sum(
        torch_embedder.pad(ids, list(range(s, min(len(ids), s + 8))))[1].size for s in range(0, len(ids), 8)
    )
    assert sorted_cells < 0.8 * arrival_cells
    assert max(len(x) for x in ids) == 256  # truncated at the model's max_seq_length


def test_batch_size_does_not_change_vectors(torch_embedder: MiniLMEmbedder) -> None:
    sample = texts(12)
    one = np.zeros((len(sample), 384), dtype=np.float32)
    for rows, matrix in torch_embedder.embed_batches(sample, batch_size=1):
        one[rows] = matrix
    np.testing.assert_allclose(torch_embedder.embed(sample), one, atol=1e-5)
    assert torch_embedder.embed([]).shape == (0, 384)


def test_onnx_runtime_matches_torch_and_exports_once(torch_embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    onnx = MiniLMEmbedder(runtime="onnx", onnx_dir=tmp_path)
    path = onnx_model_path(tmp_path, onnx.version)
    assert onnx.onnx_path == path and path.is_file()
    assert not list(tmp_path.glob(".*.tmp"))  # moved into place, nothing left behind
    assert model_id(onnx) == model_id(torch_embedder)  # the same embedding version
    sample = texts()
    got, expected = onnx.embed(sample), torch_embedder.embed(sample)
    assert float(np.abs(got - expected).max()) <= ONNX_TOLERANCE
    assert float((got * expected).sum(axis=1).min()) > 0.99999
    exported_at = path.stat().st_mtime_ns
    again = MiniLMEmbedder(runtime="onnx", onnx_dir=tmp_path)  # found, not exported again
    assert path.stat().st_mtime_ns == exported_at
    np.testing.assert_allclose(again.embed(sample[:5]), got[:5], atol=1e-6)
