"""The delivery dashboard (``python -m mangaassist.dashboard``), started by ``mangaassist up``.

One FastAPI process over the engine's state store and, given ``--environment``, the environment's
platform: ``/runs`` (filters; a run's timeline, approvals and canary evidence at ``/runs/ID``),
``/approvals``, ``/services``, ``/versions``, ``/delivery``, ``/audit``, each with its JSON under
``/api`` built by the functions the CLI's ``--json`` outputs print (``views.history``,
``views.inventory``, ``delivery.report``); live pages follow ``/events/...`` (server-sent events).
``/metrics`` serves the engine's Prometheus metrics (``delivery.engine.metrics``) to the platform's
Prometheus, which finds it by a target file in ``HOME/monitoring/targets/``.

- ``server``: the routes, the live streams, the process (``serve``, ``main``);
- ``auth``: sign-in tokens, session cookies, the CSRF token and origin checks of decisions;
- ``charts``: the canary evidence as inline SVG;
- ``templates/``, ``static/``: the pages, one stylesheet and the live-update script.

Loopback only unless ``--allow-remote`` (then every page needs a session). docs/dashboard.md.
"""

NAME = "dashboard"
"""The dashboard's daemon name (``platform.daemons``): its state file and log under the home,
``dashboard.json`` and ``dashboard.log``. Here, not in ``server``, so the CLI names the daemon
without importing the server (FastAPI)."""
