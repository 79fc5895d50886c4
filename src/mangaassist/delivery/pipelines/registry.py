"""The pipelines the engine can run, by name: one factory per pipeline, built from a run's params.

``runs resume`` rebuilds a run's pipeline from the name and params stored with it, so a factory must
be deterministic in its params. The release planner asks ``is_built`` to list a pipeline that does not
exist yet as "not built yet" instead of skipping it.

CD-01..CD-08 register here as their issues land. ``demo`` is a demonstration and test pipeline only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mangaassist.core.configspec import PROFILES
from mangaassist.delivery.engine.errors import UnknownPipeline
from mangaassist.delivery.engine.runs import Pipeline
from mangaassist.delivery.pipelines import (
    app,
    config,
    demo,
    frontend,
    infra,
    kb,
    migration,
    model,
    monitoring,
)

PipelineFactory = Callable[[dict[str, Any]], Pipeline]

PIPELINES: dict[str, PipelineFactory] = {
    demo.NAME: demo.build,
    app.NAME: app.build,  # CD-01, application deployment
    infra.NAME: infra.build,  # CD-02, infrastructure as code
    kb.NAME: kb.build,
    kb.PROMOTE: kb.build_promote,
    config.NAME: config.build,  # CD-06, configuration and prompts
    config.ROLLBACK: config.build_rollback,
    model.NAME: model.build,  # CD-03, the intent model: gate, shadow, canary, approval, promote
    migration.NAME: migration.build,  # CD-07, database migrations: expand, backfill, verify, cutover
    migration.CONTRACT: migration.build_contract,
    migration.ROLLBACK: migration.build_rollback,
    monitoring.NAME: monitoring.build,  # CD-08, SLO rules, dashboards, alarms
    monitoring.ROLLBACK: monitoring.build_rollback,
    frontend.NAME: frontend.build,  # CD-05, the widget: build, gates, browser check, upload, publish
    frontend.ROLLBACK: frontend.build_rollback,
    frontend.PREVIEW_DELETE: frontend.build_preview_delete,
}


def config_release_runs(environment: str, paths: list[str]) -> list[dict[str, Any]]:
    """CD-06 in a release: one run per profile whose content changed, in ``PROFILES`` order: its file
    ``config/NAME.yaml`` or its schema ``config/schemas/NAME.schema.json``. A changed evaluation
    suite (``config/evals/``) re-runs every profile (the deploy evaluates it; content equal to the
    live version then ends the run with nothing to deploy). Other files under ``config/`` belong to
    no profile: nothing to run for them."""
    changed: set[str] = set()
    for path in paths:
        parts = Path(path).parts
        if len(parts) == 2 and parts[0] == "config" and parts[1].endswith(".yaml"):
            changed.add(parts[1].removesuffix(".yaml"))
        elif len(parts) == 3 and parts[:2] == ("config", "schemas") and parts[2].endswith(".schema.json"):
            changed.add(parts[2].removesuffix(".schema.json"))
        elif len(parts) >= 2 and parts[:2] == ("config", "evals"):
            changed.update(PROFILES)
    return [{"environment": environment, "profile": p} for p in PROFILES if p in changed]


RELEASE_RUNS: dict[str, Callable[[str, list[str]], list[dict[str, Any]]]] = {
    migration.NAME: lambda environment, _paths: migration.release_runs(environment),
    config.NAME: config_release_runs,
}
"""Pipelines a release runs other than once with ``{"environment": ENV}``, given the environment and
the changed paths that put them in the plan: CD-07 runs once per pending migration, in order (none:
nothing to apply); CD-06 once per profile whose content changed."""

ALSO_LOCK: dict[str, tuple[str, ...]] = {migration.NAME: migration.LOCKS}
"""More locks a pipeline's runs hold (``Executor.start(also_lock=...)``)."""


def is_built(name: str) -> bool:
    return name in PIPELINES


def release_runs(name: str, environment: str, paths: list[str] | None = None) -> list[dict[str, Any]]:
    """The params of each run a release makes of pipeline ``name`` in ``environment``; ``paths``:
    the changed paths that put it in the release's plan."""
    plan = RELEASE_RUNS.get(name)
    return plan(environment, list(paths or [])) if plan is not None else [{"environment": environment}]


def build(name: str, params: dict[str, Any] | None = None) -> Pipeline:
    factory = PIPELINES.get(name)
    if factory is None:
        raise UnknownPipeline(
            f"no pipeline named {name!r} is built yet (built: {', '.join(sorted(PIPELINES))})"
        )
    return factory(dict(params or {}))
