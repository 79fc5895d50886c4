"""Benchmark: all-MiniLM-L6-v2 int8 (``make_embedder("minilm-int8")``) against the float model.

Times ``embed`` (length-sorted batches of 32, as a build embeds) of N chunks spread evenly over
the synthetic corpus of ``benchmarks/kb_reindex.py``, with torch, ONNX Runtime and the int8 graph,
and how close the int8 vectors are to the float ones (cosine). Run it under ``nice -n 10`` on a
shared machine and read the ratios.

    python benchmarks/embedding_int8.py [--chunks 2000] [--out benchmarks/results/embedding_int8.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kb_reindex import corpus_texts, synthetic_repo  # noqa: E402
from mangaassist.platform.embeddings import make_embedder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    synthetic_repo(tmp, int(args.chunks * 1.1))
    texts = corpus_texts(tmp)
    texts = texts[:: max(1, len(texts) // args.chunks)][: args.chunks]
    out: dict[str, object] = {"chunks": len(texts), "load_before": os.getloadavg()[0]}
    vectors = {}
    for label, kind, runtime in (
        ("fp32 torch", "minilm", "torch"),
        ("fp32 onnx", "minilm", "onnx"),
        ("int8 onnx", "minilm-int8", None),
    ):
        embedder = make_embedder(kind, runtime)
        embedder.embed(texts[:32])  # warm up
        started = time.perf_counter()
        vectors[label] = embedder.embed(texts)
        seconds = time.perf_counter() - started
        out[label] = {"seconds": round(seconds, 1), "chunks_per_s": round(len(texts) / seconds, 1)}
        print(label, out[label], flush=True)
    cosine = (vectors["fp32 torch"] * vectors["int8 onnx"]).sum(axis=1)
    mean, low = round(float(cosine.mean()), 4), round(float(cosine.min()), 4)
    out["int8_vs_fp32_cosine"] = {"mean": mean, "min": low}
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out))
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
