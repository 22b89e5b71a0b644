# registry-mirror: every command a developer or CI needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STATE  := .services

.PHONY: setup test lint demo bench services services-down browser wrk clean

## setup: create .venv and install the package with its dev extras (quiet when nothing changed)
setup: $(STAMP)

# setup.py and the C encoder too: an edit of either rebuilds mirror/_image_wire*.so.
$(STAMP): pyproject.toml setup.py mirror/_image_wire.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)
	@echo "setup: .venv ready"

## test: the whole suite against real PostgreSQL 18 and a real Kafka broker
test: setup browser
	$(BIN)/python -m mirror.devservices.kafka fetch
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint: ruff and mypy
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

## demo: the main job on the embedded defaults (Ctrl-C to stop)
demo: setup
	$(BIN)/mirror demo $(DEMO_ARGS)

## bench: the benchmarks; figures go to bench/RESULTS.md
bench: setup wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

## services: start a local PostgreSQL and Kafka for development and print the env vars
services: setup
	@$(BIN)/python -m mirror.devservices.kafka fetch
	@$(BIN)/python -m mirror.devservices start --state-dir $(STATE)

## services-down: stop what `make services` started
services-down:
	@test ! -x $(BIN)/python || $(BIN)/python -m mirror.devservices stop --state-dir $(STATE)

## browser: Debian's Chromium for the dashboard test (installed when missing and root)
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
	  { test "$$(id -u)" = 0 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "browser: chromium not installed; the dashboard test needs /usr/bin/chromium"; }

## wrk: Debian's wrk, the load benchmark's load generator (installed when missing and root)
wrk:
	@command -v wrk >/dev/null 2>&1 || \
	  { test "$$(id -u)" = 0 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) \
	    || echo "wrk: not installed; the load benchmark (python -m bench load) needs it: apt-get install wrk"; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(STATE)
