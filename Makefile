# mailintake — one target per job. Services run on 127.0.0.1 only (deploy/local/).
SHELL := /bin/bash
STATE ?= $(or $(MAILINTAKE_LOCAL_DIR),/var/tmp/mailintake-local)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ENV := set -a; source $(STATE)/env.sh; set +a
PYTEST_ARGS ?=

.PHONY: demo test services down venv lint unit integration e2e fault bench clean

demo: venv services  ## bring services up, seed a demo tenant, run the pipeline on sample mail
	@$(ENV); $(BIN)/mailintake demo

test: venv services  ## bring services up and run the whole suite
	@$(ENV); $(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: venv services
	@$(ENV); $(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: venv services
	@$(ENV); $(BIN)/pytest tests/e2e $(PYTEST_ARGS)

fault: venv services
	@$(ENV); $(BIN)/pytest tests/fault $(PYTEST_ARGS)

bench: venv services
	@$(ENV); for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

services:  ## install (apt, go build) and start RabbitMQ, Dovecot and the store
	@bash deploy/local/up.sh

down:
	@bash deploy/local/down.sh

venv: $(BIN)/mailintake

$(BIN)/mailintake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
