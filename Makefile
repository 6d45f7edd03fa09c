# Two commands for a new user: `make run` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
SIZE ?= small

.PHONY: run test test-unit test-integration test-e2e fuzz install bench clean docs-check asyncapi-tools asyncapi-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# --quiet twice: also silences setuptools' editable-install banner (pip still prints errors).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/contacts serve

# Every level: tests/unit, tests/integration and tests/e2e (what CI runs, via .ci/run).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast loop: domain, parsing and encoding tests with no server, minus the few marked slow (seconds).
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -m 'not slow' $(PYTEST_ARGS)

# The real app over HTTP against embedded (or CONTACTS_TEST_*) PostgreSQL and NATS.
test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# Real processes killed and restarted (worker, PostgreSQL, NATS, a NATS cluster).
test-e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

# The schemathesis fuzz test of the whole API (tests/integration/test_fuzz.py) with many more examples.
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	CONTACTS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/integration/test_fuzz.py $(PYTEST_ARGS)

# The API docs page in headless Chromium with no network: fails on a blank page (skips without Chromium).
docs-check: $(STAMP)
	$(BIN)/python scripts/docs_check.py

# docs/asyncapi.json through @asyncapi/parser 3 (Node.js 18+), installed into .tools (git-ignored).
ASYNCAPI_PARSER := .tools/node_modules/@asyncapi/parser/package.json
$(ASYNCAPI_PARSER):
	npm install --silent --no-audit --no-fund --prefix .tools @asyncapi/parser@3.6.0

asyncapi-tools: $(ASYNCAPI_PARSER)

asyncapi-check: $(ASYNCAPI_PARSER)
	node scripts/asyncapi_check.mjs docs/asyncapi.json

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# `make bench` runs the whole suite (SIZE=small: a few minutes; SIZE=full: the issue's sizes).
# BENCH_ARGS starting with "-" are added to it (BENCH_ARGS="--contacts 50000 --parts queries");
# otherwise they name one benchmark instead (BENCH_ARGS="queries --contacts 1000000").
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(if $(filter -%,$(firstword $(BENCH_ARGS))),suite --size $(SIZE) $(BENCH_ARGS),$(or $(BENCH_ARGS),suite --size $(SIZE)))

clean:
	rm -rf $(VENV) .data .pytest_cache
