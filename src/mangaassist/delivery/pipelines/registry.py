"""The pipelines the engine can run, by name: one factory per pipeline, built from a run's params.

``runs resume`` rebuilds a run's pipeline from the name and params stored with it, so a factory must
be deterministic in its params. The release planner asks ``is_built`` to list a pipeline that does not
exist yet as "not built yet" instead of skipping it.

CD-01..CD-08 register here as their issues land. ``demo`` is a demonstration and test pipeline only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


RELEASE_RUNS: dict[str, Callable[[str], list[dict[str, Any]]]] = {migration.NAME: migration.release_runs}
"""Pipelines a release runs other than once with ``{"environment": ENV}``: CD-07 runs once per
pending migration, in order (none: nothing to apply)."""

ALSO_LOCK: dict[str, tuple[str, ...]] = {migration.NAME: migration.LOCKS}
"""More locks a pipeline's runs hold (``Executor.start(also_lock=...)``)."""


def is_built(name: str) -> bool:
    return name in PIPELINES


def release_runs(name: str, environment: str) -> list[dict[str, Any]]:
    """The params of each run a release makes of pipeline ``name`` in ``environment``."""
    plan = RELEASE_RUNS.get(name)
    return plan(environment) if plan is not None else [{"environment": environment}]


def build(name: str, params: dict[str, Any] | None = None) -> Pipeline:
    factory = PIPELINES.get(name)
    if factory is None:
        raise UnknownPipeline(
            f"no pipeline named {name!r} is built yet (built: {', '.join(sorted(PIPELINES))})"
        )
    return factory(dict(params or {}))
