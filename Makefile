# The one list of commands. `make demo` and `make test` set up whatever is
# missing (Debian packages through apt when run as root, the Python packages
# in .venv) and then run. CI calls `make test` through .ci/run.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup system-packages demo up test test-unit test-integration test-e2e lint format clean \
	bench-volunteer

setup: system-packages $(STAMP)

system-packages:
	@scripts/ensure-system-packages

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/shequ demo $(ARGS)

up: setup
	$(BIN)/shequ up $(ARGS)

test: setup lint
	@scripts/pytest tests $(PYTEST_ARGS)

test-unit: setup
	@scripts/pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	@scripts/pytest tests/integration $(PYTEST_ARGS)

test-e2e: setup
	@scripts/pytest tests/e2e $(PYTEST_ARGS)

# Ranking volunteers for one task among 10,000 (target: 20 ms per task). The
# merger folds this into `make bench`.
bench-volunteer: setup
	$(BIN)/python bench/volunteer_matching.py

lint: $(STAMP)
	$(BIN)/ruff check shared services tests bench
	$(BIN)/ruff format --check shared services tests bench

format: $(STAMP)
	$(BIN)/ruff check --fix shared services tests bench
	$(BIN)/ruff format shared services tests bench

clean:
	rm -rf $(VENV) .shequ .pytest_cache .ruff_cache
