# Two commands: `make app` (serve the browser app on the default zoo model) and
# `make test` (run the test suite).  Both create .venv on first use and install torch
# (the CPU build, pinned so pip takes the local file) before the project.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: setup app test bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

app: setup
	$(BIN)/interp app --port $(PORT)

# lint, format and type checks first: they take seconds and fail fast
test: setup
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# every benchmark, stopping at the first that misses a target (BENCH / BENCH_ARGS pick others)
BENCH ?= benchmarks/[a-z]*.py
bench: setup
	for f in $(BENCH); do $(BIN)/python $$f $(BENCH_ARGS) || exit 1; done
