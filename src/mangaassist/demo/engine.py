"""The environment every segment of the demo runs in.

The demo's runs on the delivery engine go through ``views.runs.run_pipeline`` with a
``views.progress.ProgressDisplay`` on the demo's console: started, driven and shown as
``mangaassist deploy``, ``kb build`` and ``config deploy`` do theirs.
"""

from __future__ import annotations

DEMO_ENVIRONMENT = "dev"
"""The environment every segment of the demo runs in (``mangaassist.toml``: the local platform)."""
