"""What ``mangaassist`` commands and ``make demo`` show in a terminal, in one place for both.

A layer between the demo and the delivery layer (``cli > demo > views > delivery``): the CLI and
the demo import it, it imports neither.

- ``progress``: ``ProgressDisplay`` (an engine run's events as Rich spinners and bars in a terminal,
  one plain line per event elsewhere) and ``say`` (plain text, no markup);
- ``runs``: ``run_pipeline`` (start one engine run and drive it to its end under a progress
  display), who asks (``resolve_actor``) and the executor's settings from the environment;
- ``tables``: the Rich tables of the knowledge-base gate, the config evaluation gate and rollout;
- ``answers``: one chat exchange as ``mangaassist chat`` prints it (``render_answer``).
"""
