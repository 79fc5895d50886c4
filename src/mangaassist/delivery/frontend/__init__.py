"""What CD-05 (the widget's pipeline, ``delivery/pipelines/frontend.py``) does, step by step, as
plain functions the pipeline, its tests, the drill and the demo share:

- ``build``: the source copied into a run's directory, ``npm ci`` into a ``node_modules`` cached by
  the hash of ``package-lock.json``, ``npm run build``, the file list with sha256 and the release id;
- ``budget``: the gzip size budget (loader and the whole widget) and the gate over the checks;
- ``serve``: a candidate build served on a free loopback port (``/v1`` proxied to a chat API) and a
  stub chat API for when no chatbot runs;
- ``browser``: the real-browser check (headless Chromium through Playwright): the host page opened,
  the widget opened, one message answered with sources, no console error, no failed request;
- ``sources``: changed and broken copies of the source for drills, tests and the demo.
"""
