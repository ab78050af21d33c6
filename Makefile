# One command to test on a fresh machine with Python 3.11 and Node.js: `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AZURITE := node_modules/.bin/azurite-table

.PHONY: test test-e2e-py313 install worker-env lint run bench-outbound bench-inbound clean

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

install: $(STAMP) $(AZURITE) worker-env

# The Functions host's Python worker for 3.13 in its own virtualenv (.venv-3.13): the
# worker-indexing test and `make run` check the app with it. Without a Python 3.13 this
# says so; the worker-indexing test then fails with the same message.
worker-env: $(STAMP)
	-@$(PY) -m devhost.worker_env ensure >/dev/null

# The end-to-end tests on Python 3.13 (CI runs this after `make test`).
test-e2e-py313: install
	"$$($(PY) -m devhost.worker_env python)" -m pytest -q -p no:cacheprovider tests/e2e tests/test_worker_indexing.py $(PYTEST_ARGS)

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

$(AZURITE): package.json
	npm install --no-audit --no-fund --silent
	touch $(AZURITE)

lint: install
	$(PY) -m ruff check .

run: install
	$(PY) -m devhost --with-emulators

bench-outbound: install
	$(PY) -m bench.outbound

bench-inbound: install
	$(PY) -m bench.inbound

clean:
	rm -rf $(VENV) .venv-3.13 node_modules .pytest_cache .ruff_cache .hypothesis
