"""The release planner: what changed since the last release -> which pipelines run, in which order, and why.

Deciding (``plan_release``: changed paths in, ordered pipelines out, pure) is kept apart from doing
(``execute``: runs the planned pipelines in order through a runner the caller provides, stops at
the first failure). A pipeline that is not built yet is listed as such and stops the release
there: what comes after it depends on it (the dependency map of docs/architecture.md), so it is never skipped
silently.

Called by ``mangaassist release`` (``--plan`` prints the plan; without it, executes it).
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mangaassist.core import kb
from mangaassist.delivery.engine import audit
from mangaassist.delivery.engine.clock import iso
from mangaassist.delivery.engine.errors import BadRequest
from mangaassist.delivery.engine.state import StateStore, dumps, releases


@dataclass(frozen=True)
class PipelineSpec:
    id: str
    title: str
    folders: tuple[str, ...]
    """Path prefixes (from the repository root) whose changes this pipeline ships."""
    files: tuple[str, ...] = ()
    """Files whose changes this pipeline ships, as patterns from the repository root: a root file
    (``Dockerfile``, ``requirements*.txt``) or one file in a folder that is not all this pipeline's
    (``data/catalog.jsonl``). ``*`` matches within one path segment, as in GitHub's path filters
    (the workflows' filters are these patterns as they are); no other wildcard is allowed."""
    files_why: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Why each file pattern belongs to this pipeline, for the plan's explanation (one per pattern;
    patterns with the same reason are explained together)."""
    folders_why: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Why a folder belongs to this pipeline where its name does not say it, for the plan's
    explanation (``data/``: the chatbot's image holds it)."""

    def __post_init__(self) -> None:
        stray = sorted(set(self.folders_why) - set(self.folders))
        if stray:
            raise ValueError(
                f"{self.id}: folders_why names {stray}, which are not among its folders {list(self.folders)}"
            )
        odd = [
            p for p in self.files if any(c in p for c in "?+[]!") or "**" in p or p.startswith(("/", "./"))
        ]
        if odd:  # GitHub's filters read these otherwise than the planner does, or not at all
            raise ValueError(
                f"{self.id}: file patterns {odd}: only literal paths from the root and * are allowed"
            )
        unexplained = [p for p in self.files if not self.files_why.get(p)]
        stray = sorted(set(self.files_why) - set(self.files))
        if unexplained or stray:
            raise ValueError(
                f"{self.id}: files_why must give each of its file patterns a reason and nothing else "
                f"(without one: {unexplained}; not among its files: {stray})"
            )


APPLICATION_FILES = (
    "pyproject.toml",
    "Makefile",
    "setup.py",
    "setup.cfg",
    "MANIFEST.in",
    "uv.lock",
    "poetry.lock",
    "pdm.lock",
    "Pipfile",
    "Pipfile.lock",
    "requirements*.txt",
    "constraints*.txt",
    "Dockerfile",
    ".dockerignore",
)
"""Root files that change how the application is built, what it depends on or what its container image
holds (the ``Dockerfile`` and its build context's allow-list): CD-01 ships them."""

IMAGE_FILES: dict[str, str] = {
    f"{kb.KNOWLEDGE_DIR}/*.md": (
        "the chatbot's image: a worker builds its own index from these pages at start while the "
        "environment has no live index (CD-04's), and finds its root by the folder"
    ),
    "ml/intents/train.jsonl": (
        "the chatbot's image: a worker trains its in-process intent model from it at start (no model "
        "package is in the image), the fallback when CD-03's endpoint does not answer in time"
    ),
    "config/chatbot.yaml": (
        "the chatbot's image: every worker loads its settings from it at start (the base config; "
        "CD-06's profiles reach a worker through the config store, not the image)"
    ),
}
"""Files of other pipelines' folders that the chatbot's image holds because a worker reads them at
start (``chatbot.settings``: ``knowledge_dir``, ``intents_dir``, ``config_path``): CD-01 ships them
too, so a change of one rebuilds and redeploys the image. The rest of ``knowledge/``, ``ml/`` and
``config/`` is not in the image (the ``Dockerfile`` copies these files only);
tests/unit/delivery/test_dockerfile.py checks that every path the image copies plans CD-01."""

CHUNK_SETTINGS_WHY = (
    "the knowledge base's chunk settings (retrieval.chunk_words and chunk_overlap cut every chunk, so "
    "they change the index; the file holds other settings too and a changed path does not say which "
    "keys changed, so any change of it plans CD-04, whose build does nothing past its plan step when "
    "the chunks come out the same)"
)
"""Why ``core.kb.CHUNK_SETTINGS_FILE`` plans CD-04: docs/pipelines/cd-04-knowledge-base.md, "Sources
and chunks", says why the rule is the file's and not its keys'."""


def source_file(module: str) -> str:
    """The repository path of a module of this package (the ``src/`` layout): ``mangaassist.core.kb``
    is ``src/mangaassist/core/kb.py``."""
    return f"src/{module.replace('.', '/')}.py"


CHUNKING_CODE_FILES = tuple(source_file(module) for module in kb.CHUNKING_CODE)
"""The chunking code's source files (``core.kb.CHUNKING_CODE``, the modules whose digest keys the
build's chunk memo): CD-04's files too, beside CD-01's ``src/``."""

CHUNKING_CODE_WHY = (
    "the knowledge base's chunking code (the build's chunk memo is keyed on a digest of these "
    "files, so a new version of them chunks every source again and may change the index; the build "
    "does nothing past its plan step when the chunks come out the same)"
)

CATALOG: tuple[PipelineSpec, ...] = (
    PipelineSpec(
        "CD-01",
        "application code",
        ("src/", "data/"),
        (*APPLICATION_FILES, *IMAGE_FILES),
        {
            **dict.fromkeys(APPLICATION_FILES, "the application's dependencies, build and image"),
            **IMAGE_FILES,
        },
        folders_why={"data/": "the chatbot's image copies data/ and reads it at run time"},
    ),
    PipelineSpec("CD-02", "infrastructure as code", ("infra/",)),
    PipelineSpec("CD-03", "ML models", ("ml/",)),
    PipelineSpec(
        "CD-04",
        "RAG knowledge base",
        (f"{kb.KNOWLEDGE_DIR}/",),
        # what the build reads outside knowledge/ (core.kb names them for both): the one file of data/
        # it indexes (the seed orders beside it are not, so a change of them plans CD-01 alone), the
        # file of its chunk settings (which CD-06 ships too) and the chunking code's source files
        # (CD-01's too, under src/)
        (kb.CATALOG_FILE, kb.CHUNK_SETTINGS_FILE, *CHUNKING_CODE_FILES),
        {
            kb.CATALOG_FILE: "the knowledge base's sources (it indexes the catalog's series descriptions)",
            kb.CHUNK_SETTINGS_FILE: CHUNK_SETTINGS_WHY,
            **dict.fromkeys(CHUNKING_CODE_FILES, CHUNKING_CODE_WHY),
        },
    ),
    PipelineSpec("CD-05", "frontend", ("frontend/",)),
    PipelineSpec("CD-06", "configuration & prompts", ("config/",)),
    PipelineSpec("CD-07", "database migrations", ("migrations/",)),
    PipelineSpec("CD-08", "monitoring & observability", ("monitoring/",)),
)
SPECS = {spec.id: spec for spec in CATALOG}

# docs/architecture.md: "CD-02 → everything; CD-07 → CD-01; CD-04 → CD-01; CD-03 → CD-01; CD-08 → CD-01 and
# CD-03; CD-05 needs CD-01's endpoint; CD-01 reads CD-06's config at run time."
# (before, after): why ``before`` must be done first.
DEPENDENCIES: dict[tuple[str, str], str] = {
    **{
        ("CD-02", other): "the infrastructure it runs on must exist first"
        for other in ("CD-01", "CD-03", "CD-04", "CD-05", "CD-06", "CD-07", "CD-08")
    },
    ("CD-07", "CD-01"): "the schema must be expanded before the code that uses it ships",
    ("CD-04", "CD-01"): "the knowledge index must be live before the code that reads it",
    ("CD-03", "CD-01"): "the model endpoint must serve before the code that calls it",
    ("CD-08", "CD-01"): "its alarms gate the service's rollout",
    ("CD-08", "CD-03"): "its alarms gate the model's rollout",
    ("CD-01", "CD-05"): "the widget needs the service's endpoint",
    ("CD-06", "CD-01"): "the service reads this config at run time",
}


def full_order() -> list[str]:
    """Every pipeline in dependency order; ties broken by id, so the order is stable."""
    remaining = {spec.id for spec in CATALOG}
    order: list[str] = []
    while remaining:
        ready = sorted(p for p in remaining if not any((b, p) in DEPENDENCIES for b in remaining if b != p))
        if not ready:
            raise AssertionError(f"dependency cycle among {sorted(remaining)}")
        order.append(ready[0])
        remaining.remove(ready[0])
    return order


ORDER = full_order()


@dataclass(frozen=True)
class PlannedPipeline:
    id: str
    title: str
    paths: list[str]
    """The changed paths that put it in the plan."""
    after: list[str]
    """Why it comes where it does: the planned pipelines it must follow, each with the reason."""
    built: bool

    @property
    def reason(self) -> str:
        spec = SPECS[self.id]
        parts = []
        for folder in spec.folders:
            under = [p for p in self.paths if _folder_of(p, spec) == folder]
            if under:
                why = f" ({spec.folders_why[folder]})" if folder in spec.folders_why else ""
                parts.append(f"{len(under)} changed path(s) under {folder}{why}: {_shown(under)}")
        files: dict[str, list[str]] = {}
        for path in self.paths:
            pattern = _file_pattern_of(path, spec) if _folder_of(path, spec) is None else None
            if pattern is not None:
                files.setdefault(spec.files_why[pattern], []).append(path)
        parts.extend(
            f"{len(paths)} changed file(s) of {why}: {_shown(paths)}" for why, paths in files.items()
        )
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "built": self.built,
            "reason": self.reason,
            "after": self.after,
            "paths": self.paths,
        }


@dataclass(frozen=True)
class ReleasePlan:
    environment: str
    since: str | None
    """The git ref compared with; None: no earlier release, everything tracked is new."""
    head: str | None
    pipelines: list[PlannedPipeline]
    unmapped: list[str] = field(default_factory=list)
    """Changed paths no pipeline ships (docs, tests...), listed so nothing is hidden."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "since": self.since,
            "head": self.head,
            "pipelines": [p.as_dict() for p in self.pipelines],
            "not_built": [p.id for p in self.pipelines if not p.built],
            "unmapped": self.unmapped,
        }


def _shown(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _clean(path: str) -> str:
    return path.removeprefix("./")


def _folder_of(path: str, spec: PipelineSpec) -> str | None:
    """The first of ``spec``'s folders ``path`` is under, if any."""
    return next((folder for folder in spec.folders if _clean(path).startswith(folder)), None)


@cache
def _file_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` as GitHub's path filters read it: ``*`` any characters but ``/``, the rest literal."""
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")))


def _file_pattern_of(path: str, spec: PipelineSpec) -> str | None:
    """The first of ``spec``'s file patterns the whole of ``path`` matches, if any."""
    clean = _clean(path)
    return next((p for p in spec.files if _file_pattern(p).fullmatch(clean)), None)


def pipelines_for(path: str) -> list[str]:
    """The pipelines that ship ``path`` (a folder they own, or one of their files), in release
    order; empty when none does. Most paths have one; a file two pipelines read has several
    (``data/catalog.jsonl``: the knowledge base indexes it, the chatbot's image holds ``data/``)."""
    return [
        pid
        for pid in ORDER
        if _folder_of(path, SPECS[pid]) is not None or _file_pattern_of(path, SPECS[pid]) is not None
    ]


def plan_release(
    changed: Iterable[str],
    *,
    environment: str,
    is_built: Callable[[str], bool],
    since: str | None = None,
    head: str | None = None,
) -> ReleasePlan:
    """Map changed paths to pipelines and order them by the dependency map. Pure."""
    by_pipeline: dict[str, list[str]] = {}
    unmapped: list[str] = []
    for path in sorted(set(changed)):
        pipelines = pipelines_for(path)
        if not pipelines:
            unmapped.append(path)
        for pipeline in pipelines:
            by_pipeline.setdefault(pipeline, []).append(path)
    chosen = [p for p in ORDER if p in by_pipeline]
    planned = []
    for pid in chosen:
        after = [f"{b}: {DEPENDENCIES[(b, pid)]}" for b in chosen if (b, pid) in DEPENDENCIES]
        planned.append(PlannedPipeline(pid, SPECS[pid].title, by_pipeline[pid], after, is_built(pid)))
    return ReleasePlan(environment, since, head, planned, unmapped)


# -- git -------------------------------------------------------------------------------------------


def _run_git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadRequest(f"cannot run git in {cwd}: {exc}") from None


def _git(args: list[str], cwd: Path) -> str:
    done = _run_git(args, cwd)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        cause = lines[-1] if lines else f"exit status {done.returncode}"
        raise BadRequest(f"git {' '.join(args)} failed in {cwd}: {cause}")
    return done.stdout


def git_head(repo: Path) -> str:
    return _git(["rev-parse", "HEAD"], repo).strip()


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit ``ref`` names, or ``BadRequest("unknown git ref ...")``."""
    _git(["rev-parse", "--git-dir"], repo)  # not a repository: git's own message says so
    done = _run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], repo)
    if done.returncode != 0 or not done.stdout.strip():
        raise BadRequest(f"unknown git ref {ref!r} in {repo} (a branch, tag or commit is expected)")
    return done.stdout.strip()


def _paths(output: str) -> list[str]:
    return [p for p in output.split("\0") if p]


def changed_paths(repo: Path, since: str | None) -> list[str]:
    """Paths changed on HEAD's side since ``since``; every tracked path when ``since`` is None.

    Three-dot semantics: the diff runs from the merge base of ``since`` and HEAD to HEAD, so work
    that landed only on ``since``'s side is not counted. Renames are not detected
    (``--no-renames``): a moved file counts at both its old path (deleted) and its new one, so a file
    moved out of a pipeline's folder still puts that pipeline in the plan.
    """
    if since is None:
        return _paths(_git(["ls-files", "-z"], repo))
    commit = resolve_ref(repo, since)
    base = _run_git(["merge-base", commit, "HEAD"], repo)
    if base.returncode != 0 or not base.stdout.strip():
        raise BadRequest(
            f"git ref {since!r} shares no history with HEAD in {repo}: no merge base to diff from"
        )
    diff = ["diff", "--no-renames", "--name-only", "-z", base.stdout.strip(), "HEAD"]
    return _paths(_git(diff, repo))


def last_release(store: StateStore, environment: str) -> str | None:
    """The commit of the newest successful release to ``environment``."""
    with store.transaction() as conn:
        return conn.execute(
            sa.select(releases.c.commit)
            .where(releases.c.environment == environment, releases.c.status == "succeeded")
            .order_by(releases.c.finished_at.desc())
            .limit(1)
        ).scalar_one_or_none()


# -- doing -----------------------------------------------------------------------------------------


class ItemStatus(StrEnum):
    SUCCEEDED = "succeeded"
    """The pipeline's run succeeded."""
    FAILED = "failed"
    """The pipeline's run ended in any other state; the release stopped here."""
    NOT_BUILT = "not built yet"
    """No such pipeline exists yet; the release stopped here (what follows depends on it)."""
    NOT_RUN = "not run"
    """After the stop: not attempted."""


@dataclass(frozen=True)
class ItemResult:
    id: str
    status: ItemStatus
    run_id: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status.value, "run_id": self.run_id, "detail": self.detail}


@dataclass(frozen=True)
class ReleaseSummary:
    id: str
    plan: ReleasePlan
    results: list[ItemResult]

    @property
    def succeeded(self) -> bool:
        return all(r.status is ItemStatus.SUCCEEDED for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "succeeded": self.succeeded,
            "plan": self.plan.as_dict(),
            "results": [r.as_dict() for r in self.results],
        }


Runner = Callable[[PlannedPipeline], tuple[bool, str | None, str]]
"""Runs one planned pipeline: (succeeded, run id, one-line detail)."""


def execute(
    plan: ReleasePlan, runner: Runner, *, store: StateStore | None = None, actor: str = "release"
) -> ReleaseSummary:
    """Run the plan's pipelines in order; stop at the first failure or unbuilt pipeline.

    With a ``store``, the release is recorded (its commit becomes the next ``--plan``'s base when it
    succeeded) and audited.
    """
    started = datetime.now(UTC)
    release_id = f"rel-{uuid.uuid4().hex[:10]}"
    results: list[ItemResult] = []
    stopped = False
    for item in plan.pipelines:
        if stopped:
            results.append(ItemResult(item.id, ItemStatus.NOT_RUN, detail="the release stopped before it"))
            continue
        if not item.built:
            results.append(
                ItemResult(item.id, ItemStatus.NOT_BUILT, detail=f"{item.title}: pipeline not built yet")
            )
            stopped = True
            continue
        ok, run_id, detail = runner(item)
        results.append(ItemResult(item.id, ItemStatus.SUCCEEDED if ok else ItemStatus.FAILED, run_id, detail))
        stopped = not ok
    summary = ReleaseSummary(release_id, plan, results)
    if store is not None:
        finished = datetime.now(UTC)
        with store.transaction() as conn:
            if plan.head is not None:
                conn.execute(
                    releases.insert().values(
                        id=release_id,
                        environment=plan.environment,
                        commit=plan.head,
                        status="succeeded" if summary.succeeded else "failed",
                        started_at=iso(started),
                        finished_at=iso(finished),
                        summary=dumps(summary.as_dict()),
                    )
                )
            audit.append(
                store,
                conn,
                at=finished,
                kind="release.succeeded" if summary.succeeded else "release.stopped",
                actor=actor,
                detail={
                    "release": release_id,
                    "environment": plan.environment,
                    "commit": plan.head,
                    "results": [r.as_dict() for r in results],
                },
            )
    return summary
