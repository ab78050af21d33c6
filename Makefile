# One command to test on a fresh machine with Python 3.11 and Node.js: `make test`.
# One command to see the sync run, on a seeded sandbox: `make run` (RUN_ARGS="--port 7171 -v" to change it).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed
AZURITE := node_modules/.bin/azurite-table
# Packages are compiled to bytecode when installed, as pip does in Azure's remote build: a process
# started with PYTHONDONTWRITEBYTECODE would otherwise compile every import afresh (0.5 s more
# to import the app; the cold-start benchmark would measure the compiler).
UV_INSTALL := $(UV) pip install --quiet --compile-bytecode --python $(PY)

.PHONY: test test-deep test-e2e-py313 install install-run worker-env lint run bench bench-outbound bench-inbound bench-ingress bench-sweep bench-big-room bench-initial docs clean

test: install
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The model-based test (tests/e2e/test_model.py) with many more examples and steps, for a release.
DEEP_EXAMPLES ?= 200
DEEP_STEPS ?= 40
test-deep: install
	MODEL_EXAMPLES=$(DEEP_EXAMPLES) MODEL_STEPS=$(DEEP_STEPS) MODEL_RANDOM=1 MODEL_TIMEOUT=0 \
		$(PY) -m pytest -q tests/e2e/test_model.py $(PYTEST_ARGS)

# Python packages and Azurite are installed side by side (npm takes longest).
install:
	@$(MAKE) --no-print-directory -j2 $(DEV_STAMP) $(AZURITE)
	@$(MAKE) --no-print-directory worker-env

# What `make run` needs, and no more: it starts without the test tools and the worker environment.
install-run:
	@$(MAKE) --no-print-directory -j2 $(RUN_STAMP) $(AZURITE)

# The Functions host's Python worker for 3.13 in its own virtualenv (.venv-3.13): the
# worker-indexing test and `make run` check the app with it. Without a Python 3.13 this
# says so; the worker-indexing test then fails with the same message.
worker-env: $(DEV_STAMP)
	-@$(PY) -m devhost.worker_env ensure >/dev/null

# The end-to-end tests on Python 3.13 (CI runs this after `make test`).
test-e2e-py313: install
	"$$($(PY) -m devhost.worker_env python)" -m pytest -q -p no:cacheprovider tests/e2e tests/test_worker_indexing.py $(PYTEST_ARGS)

$(UV): requirements-tools.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-tools.txt
	touch $(UV)

$(RUN_STAMP): $(UV) requirements.txt requirements-run.txt
	$(UV_INSTALL) -r requirements-run.txt
	touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(UV_INSTALL) -r requirements-dev.txt
	touch $(DEV_STAMP)

$(AZURITE): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $(AZURITE)

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

run: install-run
	$(PY) -m devhost $(RUN_ARGS)

# Every benchmark, each with its bound, ratio and load average: a table, then JSON (BENCH_ARGS="--only outbound").
bench: install
	$(PY) -m bench.all $(BENCH_ARGS)

bench-big-room: install
	$(PY) -m bench.bigroom

bench-outbound: install
	$(PY) -m bench.outbound

bench-inbound: install
	$(PY) -m bench.inbound

bench-ingress: install
	$(PY) -m bench.ingress

bench-sweep: install
	$(PY) -m bench.sweep

bench-initial: install
	$(PY) -m bench.initial

# docs/settings.md and local.settings.example.json, from sync/settings.py.
docs: install-run
	$(PY) -m devhost.settings_docs

clean:
	rm -rf $(VENV) .venv-3.13 node_modules .pytest_cache .ruff_cache .mypy_cache .hypothesis .local-stack.json
