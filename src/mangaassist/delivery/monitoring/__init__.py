"""CD-08, monitoring: the SLO compiler.

SLO specs (``monitoring/slos/*.yaml``: Sloth ``prometheus/v1`` or OpenSLO ``SLO`` documents) are
compiled into everything that watches the service, from one typed model so they cannot disagree:

- ``slo``: parse and validate the specs (``load_slos``), window sets and per-environment overrides
  (``load_environments``, ``apply_environment``), and the shape of an SLI (``sli_shape``);
- ``rules``: the Prometheus recording and alerting rules, exactly as Sloth generates them;
- ``promtests``: ``promtool test rules`` files that play burn scenarios against those rules;
- ``cloudwatch``: the same multiwindow burn-rate alerts as CloudWatch alarm definitions;
- ``dashboards``: Grafana dashboards (SLO overview, one per service);
- ``build``: ``build(slo_paths, out, environment)`` validates everything, then writes it all at once.

The CLI is ``mangaassist monitor build|test`` (``cli/monitor_cmds.py``). Nothing here imports the
workload: the specs name metrics, and the rules read them from Prometheus.

Metrics the specs and dashboards read (prometheus-client exposition; the local Prometheus scrapes
them from every router, worker and the config server):

- ``mangaassist_router_requests_total{service, revision, status}``: counter, one per request through
  a service's router, ``status`` the HTTP status the client got (a request no worker answered counts
  as the router's own 502, or 504 on a timeout). Availability SLIs: ``status=~"5.."`` over all, per
  ``service`` (``chatbot``, ``intent-model``).
- ``mangaassist_router_latency_seconds_bucket{service, revision, le}`` (with ``_count`` and
  ``_sum``): histogram of the router's request latency; its buckets include ``le="2.5"``. Latency
  SLI: the share of ``_count`` not in ``le="2.5"``.
- ``mangaassist_router_answers_total{service, revision, fallback}``: the router's 2xx answers,
  ``fallback="true"`` when the answer carried ``X-MangaAssist-Fallback`` (not grounded). Grounded
  answers SLI: ``fallback="true"`` over all, for ``service="chatbot"``.
- ``mangaassist_config_requests_total{code}``: counter of the config server's requests by status.
  Config availability SLI: ``code=~"5.."`` over all.
- ``mangaassist_router_shadow_intent_total{service, revision, result="agreed|disagreed"}``: the
  router's shadow comparisons: dashboards only.
- ``mangaassist_info{revision, model, config, index}``: the chatbot workers' info gauge, with the
  target label ``mangaassist_service`` the local Prometheus adds to worker targets: dashboards only.

Each SLI is one metric's subset over the whole (the outcome is a label), so it is simple to alert
on, to test with synthetic series and to map to CloudWatch.
"""
