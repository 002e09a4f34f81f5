# The one list of commands. `make demo` and `make test` set up whatever is
# missing (Debian packages through apt when run as root, the Python packages
# in .venv) and then run. CI calls `make test` through .ci/run.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
FANOUT_ARGS ?=
SOAK_ARGS ?=

.PHONY: setup system-packages demo up catalogue authorisation test test-unit test-integration test-e2e test-browser test-fault test-deploy test-monitoring bench bench-volunteer soak fault-figures lint format clean

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

test-deploy: setup
	@scripts/pytest tests/deploy $(PYTEST_ARGS)

test-browser: setup
	@scripts/pytest tests/browser $(PYTEST_ARGS)

test-fault: setup
	@scripts/pytest tests/fault $(PYTEST_ARGS)

test-monitoring: setup
	@scripts/pytest tests/monitoring $(PYTEST_ARGS)

# Benchmarks measure and assert nothing about speed, so they stay out of
# `make test`. The disclosure log's writes bench/results/disclosure.json and the
# table in docs/performance.md; BENCH_ARGS="--sizes 1000,100000" runs fewer sizes.
# The fan-out benchmark (bench/fanout.py) writes bench/results/latest.json, with
# the others' results merged, and its table there; FANOUT_ARGS="--quick" is short.
# The soak run: a stack of its own, 10,000 reports, random consumer kills and
# one broker restart, then reconciliation (bench/results/soak.json and the
# generated table in docs/reliability.md). SOAK_ARGS="--incidents 1000" is shorter.
soak: setup
	PYTHONWARNINGS=ignore::DeprecationWarning $(BIN)/python bench/soak.py $(SOAK_ARGS)

# The fault suite three times in a row, each run's figures recorded, then the
# generated table in docs/reliability.md (bench/fault_figures.py). Every run
# goes ahead even when one fails, so the table shows all of them.
FAULT_RUNS ?= 3
fault-figures: setup
	@rm -f bench/results/fault-runs.jsonl
	@for run in $$(seq $(FAULT_RUNS)); do \
		echo "fault suite, run $$run of $(FAULT_RUNS)"; \
		SHEQU_FAULT_FIGURES=bench/results/fault-runs.jsonl scripts/pytest tests/fault -q $(PYTEST_ARGS); \
	done
	$(BIN)/python bench/fault_figures.py

bench: setup
	PYTHONWARNINGS=ignore::DeprecationWarning $(BIN)/python bench/disclosure_log.py $(BENCH_ARGS)
	$(BIN)/python bench/volunteer_matching.py
	PYTHONWARNINGS=ignore::DeprecationWarning $(BIN)/python bench/fanout.py $(FANOUT_ARGS)

# Ranking volunteers for one task among 10,000 (target: 20 ms per task). The
# `make bench` runs it too.
bench-volunteer: setup
	$(BIN)/python bench/volunteer_matching.py

# Regenerates the published event catalogue after a contract changed (tests/contracts checks it).
catalogue: $(STAMP)
	$(BIN)/shequ asyncapi -o docs/asyncapi.yaml
	$(BIN)/shequ catalogue -o docs/event-catalogue.md

# Regenerates the authorisation matrix after an access.yaml or a route changed
# (tests/unit/shared/test_policy.py checks it).
authorisation: $(STAMP)
	$(BIN)/shequ authorisation -o docs/authorisation.md

lint: $(STAMP)
	$(BIN)/ruff check shared services tests bench examples
	$(BIN)/ruff format --check shared services tests bench examples

format: $(STAMP)
	$(BIN)/ruff check --fix shared services tests bench examples
	$(BIN)/ruff format shared services tests bench examples

clean:
	rm -rf $(VENV) .shequ .pytest_cache .ruff_cache .hypothesis
