# `make demo` and `make test` each set up .venv on first use, then are quick no-ops on set-up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sasq-installed
TORCH_VERSION := 2.13.0

.PHONY: setup demo test test-quick lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# An unpinned torch pulls GBs of CUDA wheels; the pinned CPU build is what these machines carry.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sasq demo --out out/demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (those that export or calibrate the default model,
# eval, sweeps, benches): about 2 minutes on a busy 2-core machine. `make test` runs all.
test-quick: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf out build *.egg-info .pytest_cache .ruff_cache
