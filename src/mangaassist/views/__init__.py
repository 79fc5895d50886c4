"""What ``mangaassist`` commands, ``make demo`` and the dashboard show, in one place for all.

A layer between the demo and the delivery layer (``cli > dashboard > demo > views > delivery``):
the CLI, the dashboard and the demo import it, it imports none of them.

- ``progress``: ``ProgressDisplay`` (an engine run's events as Rich spinners and bars in a terminal,
  one plain line per event elsewhere) and ``say`` (plain text, no markup);
- ``runs``: ``run_pipeline`` (start one engine run and drive it to its end under a progress
  display), who asks (``resolve_actor``) and the executor's settings from the environment;
- ``tables``: the Rich tables of the knowledge-base gate, the config evaluation gate and rollout;
- ``answers``: one chat exchange as ``mangaassist chat`` prints it (``render_answer``);
- ``history``: the engine's runs, one run's timeline and canary evidence, the audit log and its
  verification as JSON-able data (``runs list|show --json``, ``audit --json`` and the dashboard);
- ``inventory``: what is deployed where, as JSON-able dicts for the dashboard's Services and Versions
  pages, each section failing soft (``{"available": False, "error": ...}``) when what it reads does
  not run: ``services`` (revisions, weights, health, ready workers, per-revision traffic from the
  routers, shadow, pins), ``config_profiles`` (CD-06), ``knowledge_bases`` (CD-04), ``models``
  (CD-03), ``frontend`` (CD-05), ``monitoring`` (CD-08 SLOs and firing alerts) and ``versions`` (all
  but services); ``kb list``, ``model list`` and ``previews list`` print its ``kb_listing``,
  ``model_listing`` and ``preview_rows`` under ``--json``.
"""
