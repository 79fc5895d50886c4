# The commands the README, CI and developers all use.
#   make setup   create .venv: torch==2.13.0 (local CPU build) first, then the package and its extras
#   make demo    set up if needed, then the main job (a narrated tour of MangaAssist)
#   make test    set up if needed, then the whole suite (unit, integration, end-to-end)
#   make test-releases  only the CD-01 releases of the real chatbot (also part of `make test`)
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

# The CD-01 releases of the real chatbot alone (tests/e2e/test_deploy_cli.py, 5-9 minutes), in the
# file's order; `make test` runs them too, shuffled with the rest.
test-releases: setup
	$(PY) -m pytest -q -p no:randomly tests/e2e/test_deploy_cli.py

bench: setup
	$(PY) benchmarks/run_all.py

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
