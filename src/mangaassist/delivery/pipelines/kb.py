"""CD-04, the RAG knowledge base: sources -> chunks -> embeddings -> a new index version -> gates ->
the ``kb-live`` alias moves to it. Blue/green: the live version is never modified.

The runbook (``build``), one engine step each:

1. ``plan``: chunk the sources (``knowledge/*.md`` and the catalog's descriptions), diff them
   against the live version (added, changed, deleted, unchanged chunks by id and content hash)
   and decide: nothing to do (the live version was built from exactly these sources by this
   model), incremental, or full. Full is forced when there is no live version or when the
   embedding model differs from the live version's, so a version never mixes models.
2. ``embed``: embed only what has no vector yet: the added and changed chunks (incremental) or
   every chunk (full), minus what the embedding cache already holds for this model.
3. ``build``: write the version (``kb-<model>-<build id>``, the build id being the digest of the
   model and the chunks, so a resumed run rebuilds the same name) and seal it.
4. ``gate``: chunk count matches the sources (nothing lost or duplicated), embedding dimension,
   unit-length vectors, retrieval quality on ``knowledge/evals/golden.jsonl`` (recall@5, MRR,
   nDCG@10: absolute thresholds and at most ``tolerance`` below the live version, which is
   evaluated now with its own embedder when it was embedded by another model) and query p95.
5. ``promote``: move the alias (compare-and-set against the live version the plan saw), then
   garbage-collect all but the newest ``keep`` versions (never the live one or its predecessor).

A failing gate leaves the alias where it was. ``kb promote`` and ``kb rollback`` are one-step
pipelines (``CD-04-promote``) so alias moves are locked and audited like builds.

Params (all optional): ``mode`` (auto | incremental | full), ``embedder`` (minilm | minilm-int8 |
hashing; a new model means a full build into versions of its own, and the chatbot embeds queries
with whichever model built the version it searches),
``root`` (repository; default: found from the working directory or ``MANGAASSIST_ROOT``),
``home`` (state; default ``MANGAASSIST_HOME`` or ``ROOT/.mangaassist``), ``keep`` (3), ``alias``,
``golden`` (path), ``thresholds`` (see ``delivery.analysis.gates.RetrievalThresholds``),
``runtime`` (torch | onnx; default ``MANGAASSIST_EMBED_RUNTIME`` or torch: the same vectors, so the
same model id), ``batch_size`` (texts per forward pass, 32), ``flush_every`` (vectors per cache
write, 2048; at most 15 s of work apart), ``write_batch`` (rows per write into the new version,
4096), ``executor`` (inprocess | ray: where the embed step's forward passes run;
``platform.ray_embedding``, ADR 0014), ``ray_address`` (auto, HOST:PORT or ray://HOST:PORT of a
running cluster; default a local Ray on this machine), ``ray_workers`` (default one per CPU of the
cluster).

The embed step records where its time went (``stages``: cache reads, tokenization and padding,
forward passes, padding share, cache writes); the plan step its chunking time, the build step its
writing time. ``kb build --json`` shows them together.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mangaassist.core.errors import ConfigError
from mangaassist.core.kb import (
    CATALOG_FILE,
    CHUNK_SETTINGS_FILE,
    CHUNKING_CODE,
    KNOWLEDGE_DIR,
    Chunk,
    Document,
    chunk_all,
    corpus_digest,
    keywords,
    parse_document,
    series_document,
)
from mangaassist.delivery.analysis.gates import (
    Comparison,
    GateResult,
    RetrievalThresholds,
    check,
    retrieval_gate,
)
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext
from mangaassist.delivery.pipelines.gating import gate_outcome
from mangaassist.platform import ray_embedding
from mangaassist.platform.embedding_cache import ChunkEmbeddingCache
from mangaassist.platform.embeddings import (
    DEFAULT_BATCH_SIZE,
    Embedder,
    EmbedStats,
    embed_runtime,
    embedder_kind,
    make_embedder,
    model_id,
)
from mangaassist.platform.factory import platform_for
from mangaassist.platform.kb_memo import ChunkMemo, SourceKey, code_identity
from mangaassist.platform.settings import find_root as find_project_root
from mangaassist.platform.settings import state_home as project_home
from mangaassist.platform.vector import (
    LIVE_ALIAS,
    AliasConflict,
    IndexRecord,
    IndexVersion,
    VectorIndex,
    VersionState,
    row_keywords,
)

NAME = "CD-04"
PROMOTE = "CD-04-promote"

NORM_TOLERANCE = 1e-3
"""How far from 1 a stored vector's length may be: retrieval scores are dot products, read as cosines."""


# -- the runbook -----------------------------------------------------------------------------------


def build(params: dict[str, Any]) -> Pipeline:
    mode = params.get("mode", "auto")
    if mode not in ("auto", "incremental", "full"):
        raise ConfigError(f"mode {mode!r}: expected auto, incremental or full")
    RetrievalThresholds.from_params(params.get("thresholds"))
    ray_embedding.check_settings(
        str(params.get("executor", "inprocess")), params.get("ray_address"), params.get("ray_workers")
    )
    return Pipeline(
        NAME,
        (
            Step("plan", _plan, "diff the sources against the live index version", changes=False),
            Step("embed", _embed, "embed the new and changed chunks", changes=False),
            Step("build", _build, "write and seal the new index version", changes=False),
            Step("gate", _gate, "chunk count, dimension, retrieval quality, latency", changes=False),
            Step("promote", _promote, "move the alias to the new version; garbage-collect"),
        ),
        rollback=_rollback,
        description="RAG knowledge base: incremental re-embedding, blue/green versions behind an alias",
        params=params,
    )


def build_promote(params: dict[str, Any]) -> Pipeline:
    if not params.get("version"):
        raise ConfigError("CD-04-promote needs the param version=NAME")
    return Pipeline(
        PROMOTE,
        (Step("move-alias", _move_alias, f"point {params.get('alias', LIVE_ALIAS)} at {params['version']}"),),
        description="move the knowledge-base alias to a ready version (kb promote / kb rollback)",
        params=params,
    )


def _plan(ctx: StepContext) -> Outcome:
    kb = Workspace.of(ctx.params, ctx.run.environment)
    started = time.perf_counter()
    chunks = kb.chunks()
    chunking_s = time.perf_counter() - started
    sources = dict(_CHUNKING_STATS)  # files parsed, and taken from memory or from the memo
    model = kb.model
    live = kb.index.resolve(kb.alias)
    live_info = kb.index.version(live) if live else None
    target = version_name(model, chunks)
    requested = ctx.params.get("mode", "auto")
    if live_info is None:
        mode, why = "full", "no live version yet"
    elif live_info.model != model:
        mode, why = "full", f"embedding model changed: {live_info.model} -> {model}"
    elif requested == "full":
        mode, why = "full", "full rebuild requested"
    else:
        mode, why = "incremental", "same embedding model as the live version"
    diff = Diff.between(chunks, kb.ready_records(live) if live and mode == "incremental" else [])
    if live and mode == "full":
        live_rows = {r.chunk_id: r.content_hash for r in kb.ready_records(live)}
        diff = Diff.between(chunks, [], live_rows)
    noop = live == target
    existing = kb.index.version(target)
    plan = {
        "mode": mode,
        "why": why,
        "live": live,
        "live_model": live_info.model if live_info else None,
        "target": target,
        "model": model,
        "chunks": len(chunks),
        "noop": noop,
        "reuse": bool(existing and existing.state is VersionState.READY and not noop),
        **diff.counts(),
        "chunking_s": round(chunking_s, 3),
        "sources": sources,
    }
    summary = (
        f"nothing to do: {live} was built from these sources by {model}"
        if noop
        else f"{mode} ({why}): +{diff.added} ~{diff.changed} -{diff.deleted} ={diff.unchanged} -> {target}"
    )
    ctx.progress(summary, 1.0)
    return Outcome.done(plan, detail={"plan": plan, "summary": summary})


def _embed(ctx: StepContext) -> Outcome:
    plan = ctx.outputs["plan"]
    if plan["noop"] or plan["reuse"]:
        return Outcome.done({"embedded": 0, "cache_hits": 0}, detail={"skipped": True})
    kb = Workspace.of(ctx.params, ctx.run.environment)
    chunks = kb.chunks(expect=plan["target"])
    reusable = kb.reusable(plan)
    wanted = [c for c in chunks if reusable.get(c.id, (None, ""))[1] != c.content_hash]
    embedded, hits, stages = kb.embed_with_stages(wanted, ctx)
    output = {
        "embedded": embedded,
        "cache_hits": hits,
        "reused_from_live": len(chunks) - len(wanted),
        "runtime": getattr(kb.embedder, "runtime", None),
        "batch_size": kb.batch_size,
        "executor": kb.executor,
        "stages": stages,
    }
    if kb.ray is not None:
        output["ray"] = kb.ray
    return Outcome.done(output, numbers={"embedded": float(embedded), "cache_hits": float(hits)})


def _build(ctx: StepContext) -> Outcome:
    plan = ctx.outputs["plan"]
    if plan["noop"]:
        return Outcome.done({"version": plan["live"]}, detail={"skipped": True})
    if plan["reuse"]:
        return Outcome.done({"version": plan["target"]}, detail={"reused": True})
    kb = Workspace.of(ctx.params, ctx.run.environment)
    chunks = kb.chunks(expect=plan["target"])

    def write(key: str) -> dict[str, Any]:
        existing = kb.index.version(plan["target"])
        if existing is not None and existing.state is VersionState.READY:
            return existing.as_dict()  # applied before a kill, marker not recorded: done already
        sealed = kb.write_version(plan, chunks, key, ctx)
        return sealed.as_dict()

    started = time.perf_counter()
    sealed = ctx.effect("write-version", write)
    return Outcome.done(
        {
            "version": sealed["name"],
            "rows": sealed["rows"],
            "write_s": round(time.perf_counter() - started, 3),
        },
        numbers={"rows": float(sealed["rows"]), "size_bytes": float(sealed["size_bytes"])},
    )


def _gate(ctx: StepContext) -> Outcome:
    plan = ctx.outputs["plan"]
    if plan["noop"]:
        return Outcome.done(detail={"skipped": True})
    kb = Workspace.of(ctx.params, ctx.run.environment)
    result = kb.gate(plan)
    kept = {"metrics": result.report["new"], "gate": result.verdict.value}
    if plan["target"] in kb.evaluated:  # the next build compares against these without searching
        kept["evaluation"] = kb.evaluated[plan["target"]]
    kb.index.update_meta(plan["target"], kept)
    detail = result.as_dict()
    detail["live_figures"] = kb.live_figures
    return gate_outcome(
        result,
        output=detail,
        detail=detail,
        failure="gate failed: " + "; ".join(result.reasons) + f" (alias {kb.alias} left on {plan['live']})",
    )


def _promote(ctx: StepContext) -> Outcome:
    plan = ctx.outputs["plan"]
    if plan["noop"]:
        return Outcome.done({"live": plan["live"], "moved": False}, detail={"skipped": True})
    kb = Workspace.of(ctx.params, ctx.run.environment)

    def move(key: str) -> dict[str, Any]:
        try:
            kb.index.move_alias(kb.alias, plan["target"], expect=plan["live"], reason=key)
        except AliasConflict:
            if kb.index.resolve(kb.alias) != plan["target"]:
                raise  # someone else moved it: never overwrite their decision
        return {"live": plan["target"], "previous": plan["live"]}

    moved = ctx.effect("move-alias", move)
    dropped = kb.collect_garbage()
    return Outcome.done({**moved, "moved": True, "dropped": dropped}, detail={**moved, "dropped": dropped})


def _rollback(ctx: StepContext) -> Outcome:
    """Undo a move this run made (the promote step is last, so this is rare); else nothing to undo."""
    plan = ctx.outputs.get("plan")
    if not plan or plan.get("noop"):
        return Outcome.done()
    kb = Workspace.of(ctx.params, ctx.run.environment)
    history = kb.index.alias_history(kb.alias)
    mine = history and history[-1].reason.startswith(f"{ctx.run.id}/")
    if mine and plan["live"] and kb.index.resolve(kb.alias) == plan["target"]:
        ctx.effect(
            "restore-alias",
            lambda key: kb.index.move_alias(kb.alias, plan["live"], expect=plan["target"], reason=key).at,
        )
    return Outcome.done()


def _move_alias(ctx: StepContext) -> Outcome:
    kb = Workspace.of(ctx.params, ctx.run.environment)
    version = str(ctx.params["version"])
    info = kb.index.version(version)
    if info is None or info.state is not VersionState.READY:
        return Outcome.failed(f"{version} is not a ready index version (see `mangaassist kb list`)")
    if info.model != kb.model and embedder_kind(info.model) is None:
        return Outcome.failed(
            f"{version} was embedded by {info.model}, a model the chatbot has no query embedder for"
        )
    current = kb.index.resolve(kb.alias)

    def move(key: str) -> dict[str, Any]:
        if kb.index.resolve(kb.alias) == version:
            return {"live": version, "previous": current}
        kb.index.move_alias(kb.alias, version, expect=current, reason=key)
        return {"live": version, "previous": current}

    result = ctx.effect("move-alias", move)
    return Outcome.done(result, detail=result)


# -- helpers ---------------------------------------------------------------------------------------


def version_name(model: str, chunks: Sequence[Chunk]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model.split("@")[0].lower()).strip("-")
    return f"kb-{slug}-{corpus_digest(model, chunks)[:12]}"


@dataclass(frozen=True)
class Diff:
    added: int
    changed: int
    deleted: int
    unchanged: int

    @classmethod
    def between(
        cls, chunks: Sequence[Chunk], live: Sequence[IndexRecord], live_hashes: dict[str, str] | None = None
    ) -> Diff:
        old = live_hashes if live_hashes is not None else {r.chunk_id: r.content_hash for r in live}
        new = {c.id: c.content_hash for c in chunks}
        return cls(
            added=sum(1 for i in new if i not in old),
            changed=sum(1 for i, h in new.items() if i in old and old[i] != h),
            deleted=sum(1 for i in old if i not in new),
            unchanged=sum(1 for i, h in new.items() if old.get(i) == h),
        )

    def counts(self) -> dict[str, int]:
        return asdict(self)


@cache
def _embedder(kind: str, runtime: str | None = None) -> Embedder:
    return make_embedder(kind, runtime)


def _positive(params: dict[str, Any], key: str, default: int) -> int:
    raw = params.get(key, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={raw!r}: expected a whole number") from None
    if value < 1:
        raise ConfigError(f"{key}={raw!r}: expected at least 1")
    return value


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


SOURCE_MARKERS = (KNOWLEDGE_DIR, CATALOG_FILE)
"""What a knowledge-base build reads from the project root (``core.kb``'s names, which the release
planner maps to CD-04)."""


def find_root(explicit: str | None = None) -> Path:
    """The project root holding the knowledge base's sources (``platform.settings.find_root``)."""
    return find_project_root(explicit, needs=SOURCE_MARKERS)


def state_home(params: dict[str, Any], root: Path) -> Path:
    """The state directory: the ``home`` param, else ``platform.settings.state_home``."""
    return project_home(root, params.get("home"))


def read_documents(knowledge: Path, catalog: Path) -> list[Document]:
    """``knowledge/*.md`` (not its subfolders: ``evals/`` is no source) and the catalog rows."""
    docs = [parse_document(p.read_text(encoding="utf-8"), str(p)) for p in sorted(knowledge.glob("*.md"))]
    docs.extend(_catalog_documents(catalog.read_text(encoding="utf-8"), catalog))
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"duplicate document ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return docs


def _catalog_documents(text: str, catalog: Path) -> list[Document]:
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                docs.append(series_document(json.loads(line)))
            except (json.JSONDecodeError, KeyError) as exc:
                raise ConfigError(f"{catalog}:{n}: not a catalog row: {exc}") from exc
    return docs


_CHUNKED: dict[Path, tuple[str, list[Chunk]]] = {}
_READY_ROWS: dict[tuple[str, str, str], list[IndexRecord]] = {}
_REUSABLE: list[Any] = []
"""[rows of ``_READY_ROWS``, their ``reusable`` map]: the map of the remembered rows, made once."""
_EVALUATIONS: dict[tuple[Any, ...], dict[str, float]] = {}
"""A ready version's retrieval figures on a golden set with a query model (``evaluate_ready``)."""
_SOURCE_CHUNKS: dict[SourceKey, tuple[tuple[str, ...], list[Chunk]]] = {}
"""One source file's document ids and chunks, by (its role, sha256 of its bytes, chunk words,
overlap): the files of the last chunking only."""


def _chunked(root: Path, memo: ChunkMemo | None = None) -> list[Chunk]:
    """The sources' chunks, remembered per root while the sources' bytes stay the same: each step
    of a run needs them, and reading them (a few milliseconds) is far cheaper than parsing and
    chunking 20,000 chunks' worth of documents again (about a second). When some files changed,
    only those are parsed and chunked again: a file's chunks are a function of its bytes and the
    chunk settings alone, so the others' are taken from the last chunking by their bytes' digest,
    in this process or, in a new process, from ``memo`` (the chunking code's identity is part of
    the key there). ``_CHUNKING_STATS`` says how many files were parsed and where the rest came
    from."""
    config = root / CHUNK_SETTINGS_FILE
    knowledge, catalog = root / KNOWLEDGE_DIR, root / CATALOG_FILE
    digest = hashlib.sha256()
    contents: list[tuple[Path, bytes | None]] = []
    for path in (config, catalog, *sorted(knowledge.glob("*.md"), key=lambda p: p.name)):
        raw = path.read_bytes() if path.exists() else None
        digest.update(f"\0{path.name}\0".encode())
        digest.update(b"\0missing" if raw is None else raw)
        contents.append((path, raw))
    key = digest.hexdigest()
    remembered = _CHUNKED.get(root)
    if remembered is not None and remembered[0] == key and (memo is None or memo.path in _MEMO_HOLDS):
        _CHUNKING_STATS.update(files=len(contents) - 1, parsed=0, from_memory=len(contents) - 1, from_disk=0)
        return list(remembered[1])
    words, overlap = chunk_settings(config)
    if contents[1][1] is None:
        raise ConfigError(f"{catalog}: no such file")
    sources = [  # knowledge/*.md sorted, then the catalog
        (path, raw, (_role(path, catalog), hashlib.sha256(raw).hexdigest(), words, overlap))
        for path, raw in (*contents[2:], contents[1])
        if raw is not None
    ]
    in_memory = {k: _SOURCE_CHUNKS[k] for _, _, k in sources if k in _SOURCE_CHUNKS}
    stored = memo.keys(_chunking_code()) if memo is not None else set()
    wanted = [k for _, _, k in sources if k not in in_memory and k in stored]
    on_disk = _from_memo(memo.sources(_chunking_code(), wanted)) if memo is not None and wanted else {}
    fresh: dict[SourceKey, tuple[tuple[str, ...], list[Chunk]]] = {}
    made: dict[SourceKey, tuple[tuple[str, ...], list[Chunk]]] = {}
    ids: list[str] = []
    chunks: list[Chunk] = []
    for path, raw, memo_key in sources:
        done = in_memory.get(memo_key) or on_disk.get(memo_key) or fresh.get(memo_key)
        if done is None:
            text = _universal_newlines(raw.decode("utf-8"))  # what Path.read_text gives
            catalogued = memo_key[0] == "catalog"
            docs = _catalog_documents(text, path) if catalogued else [parse_document(text, str(path))]
            done = (tuple(d.id for d in docs), chunk_all(docs, words, overlap))
            made[memo_key] = done
        fresh[memo_key] = done
        ids.extend(done[0])
        chunks.extend(done[1])
    if len(set(ids)) != len(ids):
        raise ConfigError(f"duplicate document ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    _MEMO_HOLDS.clear()  # this chunking is in no memo file until it is written to one
    if memo is not None:
        put = {k: _to_memo(v) for k, v in fresh.items() if k not in stored or k in made}
        drop = stored - fresh.keys()
        if put or drop:
            memo.update(_chunking_code(), put, drop)
        _MEMO_HOLDS.add(memo.path)
    _CHUNKING_STATS.update(
        files=len(sources), parsed=len(made), from_memory=len(in_memory), from_disk=len(on_disk)
    )
    _SOURCE_CHUNKS.clear()  # the files of the last chunking only: memory stays one corpus
    _SOURCE_CHUNKS.update(fresh)
    _CHUNKED.clear()  # one root at a time is what a process builds
    _CHUNKED[root] = (key, chunks)
    return list(chunks)


def _role(path: Path, catalog: Path) -> str:
    return "catalog" if path == catalog else "markdown"


_MEMO_HOLDS: set[Path] = set()
"""The memo file that holds the files of ``_CHUNKED``'s chunking (written or read by it)."""

_CHUNKING_STATS: dict[str, int] = {}
"""The last ``_chunked``: source files, how many were parsed, how many came from memory, from disk."""


def figures_key(code: str, parts: Sequence[Any]) -> str:
    """What a version's figures are valid for: the scoring code, the version, its model, the
    query model, the questions and their relevant documents."""
    return hashlib.sha256(json.dumps([code, *parts], default=str).encode()).hexdigest()


def _figures(value: Any) -> dict[str, float] | None:
    """``value`` if it is a map of names to numbers (figures kept with a version), else None."""
    if not isinstance(value, dict) or not value:
        return None
    if not all(isinstance(k, str) and isinstance(v, int | float) for k, v in value.items()):
        return None
    return {k: float(v) for k, v in value.items()}


@cache
def _scoring_code(provider: str) -> str:
    import importlib

    from mangaassist.platform import vector

    return code_identity(Path(__file__), vector, importlib.import_module(provider))


@cache
def _chunking_code() -> str:
    """What a file's chunks are computed by (``core.kb.CHUNKING_CODE``, the modules the release
    planner maps to CD-04 too): a new release of this code chunks every file anew."""
    import importlib

    return code_identity(*(importlib.import_module(module) for module in CHUNKING_CODE))


def _to_memo(done: tuple[tuple[str, ...], list[Chunk]]) -> dict[str, Any]:
    """A file's entry in the memo: its document ids, its chunks and each chunk's keywords (which
    also seed ``_ROW_WORDS``: the gate of this build needs them too)."""
    ids, chunks = done
    words = []
    for c in chunks:
        found = frozenset(sys.intern(w) for w in keywords(f"{c.doc_title} {c.heading} {c.text}"))
        _ROW_WORDS.setdefault((c.doc_title, c.heading, c.text), found)
        words.append(" ".join(sorted(found)))
    return {
        "ids": list(ids),
        "chunks": [[c.id, c.doc_id, c.doc_title, c.heading, c.text, c.content_hash, c.kind] for c in chunks],
        "keywords": words,
    }


def _from_memo(values: dict[SourceKey, Any]) -> dict[SourceKey, tuple[tuple[str, ...], list[Chunk]]]:
    """The memo's entries as chunks; their keywords seed ``_ROW_WORDS`` (the gate's tokenizing).
    An entry of an unexpected shape is left out (its file is chunked again)."""
    out: dict[SourceKey, tuple[tuple[str, ...], list[Chunk]]] = {}
    for key, value in values.items():
        try:
            chunks = [Chunk(*row) for row in value["chunks"]]
            ids = tuple(str(i) for i in value["ids"])
            words = value["keywords"]
            if len(words) != len(chunks) or not all(isinstance(w, str) for w in words):
                continue
        except (KeyError, TypeError, ValueError):
            continue
        out[key] = (ids, chunks)
        for c, w in zip(chunks, words, strict=True):
            _ROW_WORDS.setdefault((c.doc_title, c.heading, c.text), frozenset(w.split()))
    return out


_ROW_WORDS: dict[tuple[str, str, str], frozenset[str]] = {}
"""The keywords of the rows of the last version the gate searched, by (title, heading, text)."""


def _keywords_of(records: Sequence[IndexRecord]) -> list[frozenset[str]]:
    """Each row's ``row_keywords``: a row the last gated version had (same title, heading and text)
    keeps the keywords found then; only new texts are tokenized."""
    fresh: dict[tuple[str, str, str], frozenset[str]] = {}
    out = []
    for r in records:
        key = (r.doc_title, r.heading, r.text)
        words = fresh.get(key)
        if words is None:
            words = _ROW_WORDS.get(key)
        if words is None:
            words = frozenset(sys.intern(w) for w in row_keywords(r))
        fresh[key] = words
        out.append(words)
    _ROW_WORDS.clear()  # one version's rows: memory stays one corpus
    _ROW_WORDS.update(fresh)
    return out


def _universal_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def chunk_settings(config_path: Path) -> tuple[int, int]:
    """``retrieval.chunk_words`` and ``chunk_overlap`` from ``config_path`` (the build reads
    ``core.kb.CHUNK_SETTINGS_FILE``, ``config/chatbot.yaml``), 160 and 30 when it has none."""
    raw: Any = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    retrieval = (raw or {}).get("retrieval") or {}
    return int(retrieval.get("chunk_words", 160)), int(retrieval.get("chunk_overlap", 30))


@dataclass(frozen=True)
class Golden:
    question: str
    relevant: frozenset[str]


def load_golden(path: Path) -> list[Golden]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(Golden(str(row["question"]), frozenset(str(r) for r in row["relevant"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{n}: expected {{question, relevant: [doc ids]}}: {exc}") from exc
    return out


def retrieval_metrics(ranked: Sequence[Sequence[str]], golden: Sequence[Golden]) -> dict[str, float]:
    """recall@1, recall@5, MRR and nDCG@10 (binary relevance) over ranked document ids, one list per
    question (the gate holds recall@5, MRR and nDCG@10; recall@1 is reported)."""
    recall = mrr = ndcg = top = 0.0
    for docs, g in zip(ranked, golden, strict=True):
        top += 1.0 if docs[:1] and docs[0] in g.relevant else 0.0
        recall += len(set(docs[:5]) & g.relevant) / len(g.relevant)
        first = next((i for i, d in enumerate(docs) if d in g.relevant), None)
        mrr += 0.0 if first is None else 1.0 / (first + 1)
        dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(docs[:10]) if d in g.relevant)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(10, len(g.relevant))))
        ndcg += dcg / ideal
    n = max(1, len(golden))
    return {"recall_at_1": top / n, "recall_at_5": recall / n, "mrr": mrr / n, "ndcg_at_10": ndcg / n}


class Workspace:
    """What one step needs: sources, index store, embedder, cache, thresholds."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.root = find_root(params.get("root"))
        self.home = state_home(params, self.root)
        self.alias = str(params.get("alias", LIVE_ALIAS))
        self.index: VectorIndex = open_index(self.home, params.get("environment"))
        kind = str(params.get("embedder", "minilm"))
        self.kind = kind
        self.embedder = _embedder(kind, embed_runtime(params.get("runtime")) if kind == "minilm" else None)
        self.model = model_id(self.embedder)
        self.cache = ChunkEmbeddingCache(self.home / "kb" / "embeddings.sqlite3")
        self.memo = ChunkMemo(self.home / "kb" / "memo.sqlite3")
        self.last_evaluation = ""
        """Where ``evaluate_ready``'s last figures came from: searched, remembered in this process,
        or kept with the version (its meta's ``evaluation``, written by the gate that made it)."""
        self.evaluated: dict[str, dict[str, Any]] = {}
        self.live_figures: str | None = None
        """Where the last gate's live figures came from (``last_evaluation`` then)."""
        """``evaluate_ready``'s figures by version, with the key they are valid for: the gate keeps
        the new version's with it, so the next build (in any process) need not search it again."""
        self.thresholds = RetrievalThresholds.from_params(params.get("thresholds"))
        self.keep = int(params.get("keep", 3))
        self.batch_size = _positive(params, "batch_size", DEFAULT_BATCH_SIZE)
        self.flush_every = _positive(params, "flush_every", 2048)
        self.write_batch = _positive(params, "write_batch", 4096)
        """Rows per write into a building version (each write is one LanceDB commit, a checkpoint
        and a progress line): a killed build restarts its version from nothing either way."""
        self.executor = str(params.get("executor", "inprocess"))
        self.ray_address: str | None = params.get("ray_address")
        ray_embedding.check_settings(self.executor, self.ray_address, params.get("ray_workers"))
        self.ray_workers = _positive(params, "ray_workers", 1) if params.get("ray_workers") else None
        self.ray: dict[str, Any] | None = None
        """The Ray executor's summary after an embed that used it (address, workers, start time)."""
        self.golden_path = Path(params.get("golden") or self.root / KNOWLEDGE_DIR / "evals" / "golden.jsonl")

    @classmethod
    def of(cls, params: dict[str, Any], environment: str | None = None) -> Workspace:
        """The workspace of a run: ``environment`` is the run's (its index store)."""
        return cls({**params, "environment": environment} if environment else params)

    def chunks(self, expect: str | None = None) -> list[Chunk]:
        chunks = _chunked(self.root, self.memo)
        if expect is not None and version_name(self.model, chunks) != expect:
            raise ConfigError(f"the sources changed since this run planned {expect}; start a new build")
        return chunks

    def reusable(self, plan: dict[str, Any]) -> dict[str, tuple[IndexRecord, str]]:
        """Live rows an incremental build copies instead of embedding again."""
        if plan["mode"] != "incremental" or not plan["live"]:
            return {}
        rows = self.ready_records(plan["live"])
        if _REUSABLE and _REUSABLE[0] is rows:  # the embed and build steps ask for the same rows
            made: dict[str, tuple[IndexRecord, str]] = _REUSABLE[1]
            return made
        reusable = {r.chunk_id: (r, r.content_hash) for r in rows}
        if rows is _READY_ROWS.get(self._ready_key(plan["live"])):
            _REUSABLE[:] = [rows, reusable]
        return reusable

    def _ready_key(self, name: str) -> tuple[str, str, str]:
        return (str(self.home), str(self.params.get("environment")), name)

    def ready_records(self, name: str) -> list[IndexRecord]:
        """A version's rows, remembered while it is ready: a sealed version never changes (and a
        name is a digest of its model and chunks), so the plan, embed and build steps of an
        incremental run read the live version once instead of three times."""
        key = self._ready_key(name)
        remembered = _READY_ROWS.get(key)
        if remembered is not None:
            return remembered
        info = self.index.version(name)
        rows = self.index.records(name)
        if info is not None and info.state is VersionState.READY:
            _READY_ROWS.clear()  # the live version of one index is what a build reuses
            _REUSABLE.clear()
            _READY_ROWS[key] = rows
        return rows

    def embed_missing(self, chunks: Sequence[Chunk], ctx: StepContext | None = None) -> tuple[int, int]:
        """Embed what the cache lacks, shortest texts first (little padding), and cache the vectors
        every ``flush_every`` chunks, so a killed build keeps all but the last few seconds of work."""
        embedded, hits, _ = self.embed_with_stages(chunks, ctx)
        return embedded, hits

    def embed_with_stages(
        self, chunks: Sequence[Chunk], ctx: StepContext | None = None
    ) -> tuple[int, int, dict[str, float]]:
        """``embed_missing`` plus where the time went: cache lookup, tokenization (with padding),
        forward passes, cache writes (seconds), and the share of computed tokens that was padding.

        With ``executor`` ray the forward passes run on Ray workers (the same batches, planned
        here); the cache, the progress and the checkpoints stay here, and a failure still caches
        every vector that came back before it."""
        started = time.perf_counter()
        cached = self.cache.get_many(self.model, (c.content_hash for c in chunks))
        todo = list({c.content_hash: c for c in chunks if c.content_hash not in cached}.values())
        stages: dict[str, float] = {"cache_read_s": time.perf_counter() - started, "cache_write_s": 0.0}
        stats = getattr(self.embedder, "stats", None)
        if isinstance(stats, EmbedStats):
            stats.reset()
        texts = [c.embed_text for c in todo]
        pending: dict[str, Any] = {}
        done = 0

        def flush() -> None:
            flushed = time.perf_counter()
            self.cache.put_many(self.model, pending)
            pending.clear()
            stages["cache_write_s"] += time.perf_counter() - flushed

        with ExitStack() as stack:
            batches = self._batches(texts)
            runner: ray_embedding.RayEmbedExecutor | None = None
            if self.executor == "ray" and todo:
                if ctx is not None:
                    ctx.progress(f"starting Ray workers ({self.ray_address or 'local'})", 0.0)
                runner = stack.enter_context(self._ray_executor())
                stages["ray_start_s"] = runner.start_s
                planned = time.perf_counter()
                groups = self._groups(texts)
                stages["ray_plan_s"] = time.perf_counter() - planned
                stats = runner.stats
                batches = runner.embed(texts, groups)
            began = last_flush = time.perf_counter()
            try:
                for rows, matrix in batches:
                    for r, row in enumerate(rows):
                        pending[todo[row].content_hash] = matrix[r]
                    done += len(rows)
                    now = time.perf_counter()
                    if len(pending) >= self.flush_every or now - last_flush >= 15.0 or done == len(todo):
                        flush()
                        last_flush = time.perf_counter()
                        if ctx is not None:
                            ctx.checkpoint(f"embedded-{done}")
                    if ctx is not None:
                        rate = done / max(now - began, 1e-9)
                        left = (len(todo) - done) / rate if rate else 0.0
                        line = f"embedded {done}/{len(todo)} chunks, {rate:.1f} chunks/s"
                        ctx.progress(f"{line}, {_duration(left)} left", done / len(todo))
            except BaseException:
                if pending:
                    flush()  # what came back before the failure stays cached: a rerun embeds the rest
                raise
            if pending:
                flush()
            stages["embed_s"] = time.perf_counter() - began
        if runner is not None:
            stages["ray_stop_s"] = runner.stop_s
            self.ray = runner.summary()
        if isinstance(stats, EmbedStats) and (runner is None or stats.batches):
            stages.update(
                tokenize_s=stats.tokenize_s,
                forward_s=stats.forward_s,
                padding_waste=stats.padding_waste,
                tokens=float(stats.tokens),
                padded_tokens=float(stats.padded_tokens),
            )
        return done, len(chunks) - len(todo), {k: round(v, 4) for k, v in stages.items()}

    def _ray_executor(self) -> ray_embedding.RayEmbedExecutor:
        kind = str(self.params.get("embedder", "minilm"))
        runtime = embed_runtime(self.params.get("runtime")) if kind == "minilm" else None
        spec = ray_embedding.EmbedderSpec(kind, runtime)
        return ray_embedding.RayEmbedExecutor(spec, self.model, self.ray_address, self.ray_workers)

    def _groups(self, texts: Sequence[str]) -> list[list[int]]:
        """The batches ``_batches`` runs, as indices into ``texts``: length-sorted when the embedder
        tokenizes (MiniLM), else slices of ``batch_size`` in order."""
        tokenize = getattr(self.embedder, "tokenize", None)
        plan = getattr(self.embedder, "plan_batches", None)
        if callable(tokenize) and callable(plan):
            return list(plan(tokenize(texts), self.batch_size))
        size = self.batch_size
        return [list(range(start, min(len(texts), start + size))) for start in range(0, len(texts), size)]

    def _batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], Any]]:
        """(indices, vectors) per forward pass: the embedder's own length-sorted batches when it
        has them (MiniLM), else slices of ``batch_size`` in order."""
        by_length = getattr(self.embedder, "embed_batches", None)
        if callable(by_length):
            yield from by_length(texts, self.batch_size)
            return
        for start in range(0, len(texts), self.batch_size):
            rows = list(range(start, min(len(texts), start + self.batch_size)))
            yield rows, self.embedder.embed([texts[i] for i in rows])

    def write_version(
        self, plan: dict[str, Any], chunks: Sequence[Chunk], key: str, ctx: StepContext | None = None
    ) -> IndexVersion:
        reusable = self.reusable(plan)
        vectors = self.cache.get_many(
            self.model,
            (c.content_hash for c in chunks if c.id not in reusable or reusable[c.id][1] != c.content_hash),
        )
        name = plan["target"]
        self.index.create_version(
            name,
            model=self.model,
            dim=self.embedder.dim,
            meta={
                "mode": plan["mode"],
                "why": plan["why"],
                "built_by": key,
                "from": plan["live"],
                "embedder": {
                    "kind": self.kind,
                    "model": self.model,
                    "dim": self.embedder.dim,
                    "normalised": True,
                    "runtime": getattr(self.embedder, "runtime", None),
                },
            },
        )
        records: list[IndexRecord] = []
        for c in chunks:
            old = reusable.get(c.id)
            vector = old[0].vector if old and old[1] == c.content_hash else vectors.get(c.content_hash)
            if vector is None:
                raise ConfigError(f"no embedding for chunk {c.id}: run the embed step again")
            records.append(
                IndexRecord(c.id, c.doc_id, c.doc_title, c.heading, c.text, c.content_hash, c.kind, vector)
            )
        step = self.write_batch
        for start in range(0, len(records), step):
            self.index.add(name, records[start : start + step])
            if ctx is not None:
                done = min(len(records), start + step)
                ctx.progress(f"wrote {done}/{len(records)} rows", done / len(records))
                ctx.checkpoint(f"rows-{done}")
        counts = {k: plan[k] for k in ("added", "changed", "deleted", "unchanged")}
        return self.index.seal(name, {"chunks": len(chunks), **counts})

    def evaluate(
        self, version: str, golden: Sequence[Golden], repeats: int = 3, embedder: Embedder | None = None
    ) -> dict[str, float]:
        """Retrieval of ``version`` on ``golden``, its queries embedded by ``embedder`` (default the
        build's): the embedder of the model that built ``version``."""
        queries = self.query_vectors([g.question for g in golden], embedder)
        ranked: list[list[str]] = []
        latencies: list[float] = []
        for r in range(repeats):
            for i, g in enumerate(golden):
                started = time.perf_counter()
                hits = self.index.search(version, queries[i], g.question, k=10)
                latencies.append((time.perf_counter() - started) * 1000)
                if r == 0:
                    ranked.append([h.doc_id for h in hits])
        metrics = retrieval_metrics(ranked, golden)
        metrics["p95_ms"] = float(np.percentile(latencies, 95)) if latencies else 0.0
        return metrics

    def evaluate_ready(
        self, version: str, golden: Sequence[Golden], embedder: Embedder | None = None
    ) -> dict[str, float]:
        """``evaluate``, remembered in this process for a ready version: a sealed version never
        changes, so its rankings of the same questions (and relevant documents) with the same query
        model are the same figures. The build that made a version has evaluated it in its gate; the
        next build's gate compares against it without searching it again. The query p95 is the one
        measured then."""
        info = self.index.version(version)
        if info is None or info.state is not VersionState.READY:
            self.last_evaluation = "searched"
            return self.evaluate(version, golden, embedder=embedder)
        key = (
            str(self.home),
            str(self.params.get("environment")),
            version,
            info.model,
            model_id(embedder or self.embedder),
            tuple((g.question, tuple(sorted(g.relevant))) for g in golden),
        )
        remembered = _EVALUATIONS.get(key)
        if remembered is not None:
            self.last_evaluation = "remembered in this process"
            return dict(remembered)
        stored = figures_key(self._scoring_code(), key[2:])
        kept = info.meta.get("evaluation")
        if isinstance(kept, dict) and kept.get("key") == stored and _figures(kept.get("figures")):
            remembered = _figures(kept["figures"])
            self.last_evaluation = "kept with the version"
        else:
            remembered = self.evaluate(version, golden, embedder=embedder)
            self.last_evaluation = "searched"
        assert remembered is not None
        self.evaluated[version] = {"key": stored, "figures": dict(remembered)}
        while len(_EVALUATIONS) >= 4:
            _EVALUATIONS.pop(next(iter(_EVALUATIONS)))  # the oldest: a build needs two
        _EVALUATIONS[key] = remembered
        return dict(remembered)

    def _scoring_code(self) -> str:
        """What a version's figures are computed by: this module (the metrics), the hybrid
        scorer, and the index store's provider."""
        return _scoring_code(type(self.index).__module__)

    def query_vectors(self, questions: Sequence[str], embedder: Embedder | None = None) -> list[Any]:
        embedder = embedder or self.embedder
        model = model_id(embedder)
        keys = [f"query:{q}" for q in questions]
        cached = self.cache.get_many(model, keys)
        missing = [q for q, k in zip(questions, keys, strict=True) if k not in cached]
        if missing:
            matrix = embedder.embed(missing)
            fresh = {f"query:{q}": matrix[i] for i, q in enumerate(missing)}
            self.cache.put_many(model, fresh)
            cached.update(fresh)
        return [cached[k] for k in keys]

    def gate(self, plan: dict[str, Any]) -> GateResult:
        """The new version's rows against its sources, its vectors against the embedder, and its
        retrieval on the golden set against the thresholds and the live version."""
        name = plan["target"]
        info = self.index.version(name)
        assert info is not None
        live_info = self.index.version(plan["live"]) if plan["live"] else None
        chunks = self.chunks()
        records = self.ready_records(name)  # sealed: the next build's plan reads these as live rows

        ids = [r.chunk_id for r in records]
        expected = {c.id: c.content_hash for c in chunks}
        lost = len(set(expected) - set(ids))
        extra = len(set(ids) - set(expected))
        dupes = len(ids) - len(set(ids))
        stale = sum(1 for r in records if expected.get(r.chunk_id, r.content_hash) != r.content_hash)
        count = check(
            "chunk count",
            len(ids),
            Comparison.EQUAL,
            len(chunks),
            baseline=plan["unchanged"] + plan["changed"] + plan["deleted"] if plan["live"] else None,
            rule=f"== {len(chunks)} from sources; lost {lost}, unexpected {extra}, "
            f"duplicated {dupes}, stale {stale}",
            requires=lost == extra == dupes == stale == 0,
        )
        dims = {int(np.asarray(r.vector).shape[0]) for r in records}
        matrix = np.stack([np.asarray(r.vector) for r in records]) if len(dims) == 1 else None
        finite = (
            bool(np.isfinite(matrix).all())
            if matrix is not None
            else all(bool(np.isfinite(r.vector).all()) for r in records)
        )
        stored = next(iter(dims)) if len(dims) == 1 else None if dims else info.dim
        rule = f"== {self.embedder.dim} ({self.model}), finite"
        dimension = check(
            "embedding dimension",
            stored,
            Comparison.EQUAL,
            self.embedder.dim,
            baseline=live_info.dim if live_info is not None else None,
            rule=rule,
            reason=f"embedding dimension {sorted(dims)}{'' if finite else ' not finite'} ({rule})",
            requires=dims <= {self.embedder.dim} and info.dim == self.embedder.dim and finite,
        )
        lengths = np.linalg.norm(
            matrix.astype(np.float32, copy=False)
            if matrix is not None
            else np.stack([np.asarray(r.vector, dtype=np.float32) for r in records]),
            axis=1,
        )
        off = float(np.abs(lengths - 1.0).max()) if len(records) else 0.0
        rule = f"every vector's length within {NORM_TOLERANCE} of 1"
        normalisation = check(
            "normalisation",
            round(off, 6),
            Comparison.AT_MOST,
            NORM_TOLERANCE,
            rule=rule,
            reason=f"a vector's length is off by {off:.2e} ({rule})",
            requires=bool(np.isfinite(off)),
        )
        # a question about a document that was deleted on purpose is stale, not a regression
        docs = {c.doc_id for c in chunks}
        everything = load_golden(self.golden_path)
        golden = [Golden(g.question, g.relevant & docs) for g in everything if g.relevant & docs]
        remember = getattr(self.index, "remember", None)
        if callable(remember):
            remember(name, records, _keywords_of(records))  # search what was just read
        new = self.evaluate_ready(name, golden)
        live: dict[str, float] | None = None
        self.live_figures = None
        if live_info is not None and live_info.model == self.model:
            live = self.evaluate_ready(live_info.name, golden)
            self.live_figures = self.last_evaluation
        elif live_info is not None:
            other = self.embedder_of(live_info.model)  # a new embedding model: live with its own
            if other:
                live = self.evaluate_ready(live_info.name, golden, embedder=other)
                self.live_figures = self.last_evaluation
            else:
                live = live_info.meta.get("metrics")
                self.live_figures = "the version's recorded metrics (its model cannot be loaded here)"
        new["questions"] = float(len(golden))
        new["questions_skipped"] = float(len(everything) - len(golden))
        return retrieval_gate(
            new,
            live,
            self.thresholds,
            structure=(count, dimension, normalisation),
            candidate_version=name,
            baseline_version=plan["live"],
        )

    def embedder_of(self, model: str) -> Embedder | None:
        """An embedder of ``model`` (another version's), or None when this process has none."""
        kind = embedder_kind(model)
        if kind is None:
            return None
        made = _embedder(kind, embed_runtime(self.params.get("runtime")) if kind == "minilm" else None)
        return made if model_id(made) == model else None

    def collect_garbage(self) -> list[str]:
        """Keep the newest ``keep`` ready versions, the live one and the one before it; drop the rest.

        A leftover building version is dropped too (a killed build that was never resumed).
        """
        live = self.index.resolve(self.alias)
        history = self.index.alias_history(self.alias)
        protected = {live, history[-1].previous if history else None}
        ready = [v for v in self.index.versions() if v.state is VersionState.READY]
        keep = {v.name for v in ready[-self.keep :]} | {p for p in protected if p}
        dropped = []
        for v in self.index.versions():
            if v.name not in keep:
                try:
                    self.index.drop(v.name)
                    dropped.append(v.name)
                except Exception:  # noqa: S112 - best effort; the alias already moved
                    continue
        return dropped


def open_index(home: Path, environment: str | None = None) -> VectorIndex:
    """The environment's index store (``platform.factory``: LanceDB under ``home`` locally,
    OpenSearch on aws)."""
    return platform_for(environment, home=home).vector_index()
