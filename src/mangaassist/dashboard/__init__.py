"""The delivery dashboard's server (``python -m mangaassist.dashboard``), started by ``mangaassist up``.

What it serves so far: ``/healthz``; ``/metrics``, the delivery engine's Prometheus metrics
(``delivery.engine.metrics``: runs by state, step durations, rollbacks, approvals waiting), read
from the state database at each scrape, which the platform's Prometheus scrapes (the server drops
a target file into ``HOME/monitoring/targets/``); ``/api/runs``, the newest runs as JSON (what
``mangaassist runs list --json`` prints); and ``/``, a plain page of those runs. Loopback only
unless told otherwise. The pages of the full dashboard grow here.
"""
