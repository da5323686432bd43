# The README's two commands live here. Everything installs into ./.venv from
# the project's own files; torch comes from the local CPU build (2.13.0) so pip
# never pulls a multi-GB CUDA wheel.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= runs/data/synthetic
RUN_DIR ?= runs

.PHONY: setup demo test test-fast bench clean serve stop

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"

# The main job on the default (synthetic) data.
demo: setup
	$(BIN)/lobsweep full-search --profile demo --run-dir $(RUN_DIR)

# The tests run through a whitespace-free link to the environment (lobsweep/envlink.py): in a
# checkout whose path holds a space, Ray could not start workers from .venv's own path.
TEST_PY = "$$($(BIN)/python -m lobsweep.envlink)/bin/python"

# The whole suite, slow end-to-end tests included (CI runs this).
test: setup
	$(TEST_PY) -m pytest -q

# Local loop: skip the slow end-to-end tests.
test-fast: setup
	$(TEST_PY) -m pytest -q -m "not slow"

# Prefect server + work pool + worker and an MLflow server with the UI, all on 127.0.0.1.
serve: setup
	RUN_DIR=$(RUN_DIR) scripts/serve.sh

stop:
	RUN_DIR=$(RUN_DIR) scripts/stop.sh

clean:
	rm -rf $(RUN_DIR) .pytest_cache
