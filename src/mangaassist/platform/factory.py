"""The one place that turns an environment's settings into platform clients.

Pipelines and the CLI call ``compute_for(environment)``; nothing else says ``if provider ==``.
Only the ``local`` provider exists so far; ``aws`` comes with its issue.
"""

from __future__ import annotations

from mangaassist.core.errors import ConfigError
from mangaassist.platform.compute import Compute
from mangaassist.platform.local.settings import PlatformSettings, load_settings


def settings_for(environment: str | None = None) -> PlatformSettings:
    """The environment's settings from ``mangaassist.toml`` (default ``MANGAASSIST_ENV`` or ``dev``)."""
    return load_settings(environment)


def compute_for(environment: str | PlatformSettings | None = None) -> Compute:
    """The ``Compute`` of an environment. Local: the running control plane (``mangaassist up``)."""
    settings = environment if isinstance(environment, PlatformSettings) else settings_for(environment)
    if settings.provider == "local":
        from mangaassist.platform.local.client import LocalCompute

        return LocalCompute(settings.run_dir)
    raise ConfigError(
        f"environment {settings.environment}: provider {settings.provider!r} is not implemented yet"
    )
