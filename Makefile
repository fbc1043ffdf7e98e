# Two commands matter: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster-home
export ASR_DATA_ROOT ?= $(CURDIR)/.asr-data

.PHONY: demo test dev lint format bench bench-gpu eval system-deps clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

# Debian packages some tools and tests need (espeak-ng synthesizes the labeled data).
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng >/dev/null; fi; }

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/asr demo

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m bench

# Throughput on an NVIDIA machine: Triton + base-sized ONNX model, synthetic 10k-phrase day.
bench-gpu: $(STAMP)
	$(BIN)/python -m bench.triton_gpu

# Accuracy benchmark: a held-out-voice labeled store (synthesized once), scored by the pipeline.
EVAL_STORE ?= .tmp/eval-store
ASR_MODEL_DIR ?= models/demo-letters
eval: $(STAMP) system-deps
	test -d $(EVAL_STORE)/catalog || $(BIN)/python -m tools.synthesize dataset --out $(EVAL_STORE) \
	  --seed 1 --start-date 2026-11-01 --days 2 --activities 40 --voices heldout
	$(BIN)/python -m tools.evaluate --store $(EVAL_STORE) --model-dir $(ASR_MODEL_DIR) \
	  --out bench/out/eval.json

clean:
	rm -rf $(VENV) .asr-data .dagster-home .pytest_cache .ruff_cache
