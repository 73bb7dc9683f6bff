# `make demo` and `make test` each set up .venv on first use, then are quick no-ops on set-up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sasq-installed
TORCH_VERSION := 2.13.0

.PHONY: setup demo test test-quick evidence lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# An unpinned torch pulls GBs of CUDA wheels; the pinned CPU build is what these machines carry.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[dev,cpu]'
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

# The evidence behind the README's verdict on the papers' methods (about 1.5 hours on 2 cores):
# eval with intervals and the ablation rows, the budget sweeps, attention concentration.
EVIDENCE := out/evidence
PRECISION_ROWS := plain,trt-int8,trt-int8-fp16,trt-fp8,trt-fp8-shift-sum,fp16
ROWS := plain,resample,dgc,shift-sum,both,gps-stwq,kv4,kv4-shift-sum,v-only,v-only-shift-sum
evidence: $(STAMP)
	$(BIN)/sasq eval --model default --per-class 50 --rows $(ROWS) --bits W8A8,W6A6,W4A6 --calib-n 32 --out $(EVIDENCE)/eval-default
	$(BIN)/sasq eval --model digits32 --per-class 30 --rows $(ROWS) --bits W8A8,W6A6,W4A6 --calib-n 32 --out $(EVIDENCE)/eval-digits32
	$(BIN)/sasq eval --model default --per-class 50 --bits W8A8 --rows $(PRECISION_ROWS) --calib-n 32 --out $(EVIDENCE)/eval-precision-default
	$(BIN)/sasq eval --model digits32 --per-class 20 --bits W8A8 --rows $(PRECISION_ROWS) --calib-n 32 --out $(EVIDENCE)/eval-precision-digits32
	$(BIN)/sasq sweep-budget --model default --per-class 20 --calib-n 32 --threads 1 --repeats 3 --out $(EVIDENCE)/sweep-default
	$(BIN)/sasq sweep-budget --model digits32 --per-class 10 --calib-n 32 --threads 1 --repeats 3 --out $(EVIDENCE)/sweep-digits32
	$(BIN)/sasq attention --model default --out $(EVIDENCE)/attention-default
	$(BIN)/sasq attention --model digits32 --out $(EVIDENCE)/attention-digits32
	$(BIN)/sasq attention --random 16 --n 4 --batch 2 --out $(EVIDENCE)/attention-d16
	$(BIN)/python scripts/calib_study.py tv default > $(EVIDENCE)/tv-default.md
	$(BIN)/python scripts/calib_study.py tv digits32 > $(EVIDENCE)/tv-digits32.md

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf out build *.egg-info .pytest_cache .ruff_cache
