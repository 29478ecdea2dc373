# talik — the two commands of the README.
#   make demo   build .venv, generate the demo world, run the monitor flow, publish a release
#   make test   build .venv with the test extras and run the whole test suite
#   make soak   the scheduled deployment every minute for 20 minutes (prints its figures)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.talik-installed

# Prefect state stays inside the checkout; telemetry is off (docs/prefect.md).
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_RESULTS_PERSIST_BY_DEFAULT := true
export PREFECT_RESULTS_LOCAL_STORAGE_PATH := $(PREFECT_HOME)/storage
export MPLBACKEND := Agg

.PHONY: demo test soak venv clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# uv installs the same requirements in seconds instead of minutes; pip is the fallback.
$(STAMP): pyproject.toml | $(BIN)/python
	( $(BIN)/python -m pip install --quiet "uv>=0.4" && \
	  $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[test]" ) || \
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/talik demo

test: $(STAMP)
	$(BIN)/python -m pytest

# The scheduled service for 20 minutes on a local Prefect server (benchmarks/soak.py).
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --minutes 20

clean-demo:
	rm -rf data/demo releases/demo .prefect
