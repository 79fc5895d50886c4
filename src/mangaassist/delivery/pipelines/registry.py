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
from mangaassist.delivery.pipelines import app, config, demo, infra, kb, model, monitoring

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
    monitoring.NAME: monitoring.build,  # CD-08, SLO rules, dashboards, alarms
    monitoring.ROLLBACK: monitoring.build_rollback,
}


def is_built(name: str) -> bool:
    return name in PIPELINES


def build(name: str, params: dict[str, Any] | None = None) -> Pipeline:
    factory = PIPELINES.get(name)
    if factory is None:
        raise UnknownPipeline(
            f"no pipeline named {name!r} is built yet (built: {', '.join(sorted(PIPELINES))})"
        )
    return factory(dict(params or {}))
