# One entry point. `make run`: set up and run the main job; `make test`: set up and run every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export OFFERLAB_DATA_DIR ?= $(abspath ../shared/data)
export MPLBACKEND ?= Agg

.PHONY: setup run test test-quick lint bench-data clean

setup: $(VENV)/.installed

# torch first and on its own: the pinned CPU build lies on this machine's disk; a bare `torch`
# would pull a multi-GB CUDA build. Everything else resolves against it.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	touch $@

run: setup
	$(BIN)/offerlab run

test: setup
	$(BIN)/python -m pytest

test-quick: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src tests scripts

clean:
	rm -rf runs mlflow.db mlartifacts .pytest_cache
