# One command to test on a fresh machine with Python 3.11 and Node.js: `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AZURITE := node_modules/.bin/azurite-table

.PHONY: test install lint run bench-outbound bench-inbound clean

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

install: $(STAMP) $(AZURITE)

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
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .hypothesis
