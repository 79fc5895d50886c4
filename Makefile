# The commands the README, CI and developers all use.
#   make setup   create .venv: torch==2.13.0 (local CPU build) first, then the package and its extras
#   make demo    set up if needed, then the main job (a narrated tour of MangaAssist)
#   make test    set up if needed, then the whole suite (unit, integration, end-to-end)
#   make test-releases  CD-01 releases of the real chatbot (6-7 minutes; not in CI yet, see below)
#   make bench   benchmarks; results under benchmarks/results/
#   make lint    ruff, mypy (strict on src/), import-linter (the layers and provider rule of docs/architecture.md),
#                the generated deploy workflows, actionlint (with shellcheck), zizmor --offline, hadolint

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-releases bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first, pinned, so nothing later pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,aws,infra]'
	@# promtool, Prometheus and Alertmanager for CD-08 (Debian's packages; as root only)
	scripts/install-monitoring.sh
	@# Chromium (the widget's browser check) and node/npm (its build) for CD-05 (as root only)
	scripts/install-browser.sh
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/mangaassist demo

# The whole suite in one pytest process, in random order (pytest-randomly); the seed is printed
# first, and `make test SEED=N` repeats that order.
ifndef SEED
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
PYTEST_ARGS ?=
test: setup
	@echo "random order: --randomly-seed=$(SEED)"
	$(PY) -m pytest -q -p randomly --randomly-seed=$(SEED) --durations=30 $(PYTEST_ARGS)

# CD-01 releases of the real chatbot (tests/e2e/test_deploy_cli.py, 6-7 minutes): kept out of
# `make test` for its time budget; not in .ci/run yet (issue 13): 1 of 3 runs on the second
# 2026-12-07 session was all green; the good release failed in the other two (in the one whose
# output was kept, rolled back by the latency judge: candidate p50 19.8 ms against stable 15.7 ms,
# same code), and the rollback test after it found no promoted release to go back to. Likely cause:
# the stable r1 that `up` starts has no artifact, so the canary gets no baseline copy and the
# candidate at 25% is compared with the stable at 75% (145 against 37 requests), a share gap that
# alone moves a median on 2 cores; to be confirmed and fixed in issue 13.
test-releases: setup
	MANGAASSIST_E2E_RELEASES=1 $(PY) -m pytest -q -p no:randomly tests/e2e/test_deploy_cli.py

bench: setup
	$(PY) benchmarks/chat_latency.py && $(PY) benchmarks/infra_synth.py && $(PY) benchmarks/slo_alerts.py && $(PY) benchmarks/router_overhead.py && $(PY) benchmarks/upstream_clients.py && $(PY) benchmarks/canary_judge.py && $(PY) benchmarks/kb_reindex.py && $(PY) benchmarks/config_propagation.py && $(PY) benchmarks/model_endpoint.py && $(PY) benchmarks/rollout_e2e.py && $(PY) benchmarks/model_deploy.py && $(PY) benchmarks/migration_drill.py --out benchmarks/results/migration_drill_bench.json && $(PY) benchmarks/frontend_drill.py --out benchmarks/results/frontend_drill_bench.json

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks infra scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) scripts/gen-workflows.py --check
	$(VENV)/bin/actionlint -shellcheck $(VENV)/bin/shellcheck .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --strict-collection --no-progress .github/workflows
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf .mangaassist .pytest_cache .mypy_cache .ruff_cache
