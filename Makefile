# Two commands matter: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster-home
export ASR_DATA_ROOT ?= $(CURDIR)/.asr-data
# Policy as code (docs/deploy.md). checkov's pinned dependencies conflict with ours
# (requirements.lock), so it lives in its own virtualenv under .tmp, created by $(CHECKOV).
CHECKOV_VENV := .tmp/checkov-venv
CHECKOV := $(CHECKOV_VENV)/bin/checkov
OVERLAYS := deploy/k8s/overlays/staging deploy/k8s/overlays/production
SECRETS_EXCLUDE := ^(data/|models/.*\.safetensors$$|requirements\.lock$$|\.secrets\.baseline$$)

.PHONY: demo test dev lint format bench bench-gpu eval system-deps clean manifests sbom audit secrets-baseline

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

# Debian packages some tools and tests need: the list and why each is there are in the script.
system-deps:
	bash tools/system-deps.sh

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/asr demo

test: $(STAMP) system-deps $(CHECKOV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q
	$(BIN)/bandit -q -r asr_assets -c pyproject.toml --severity-level medium
	$(BIN)/python -m tools.secret_scan --baseline .secrets.baseline $$(git ls-files | grep -vE '$(SECRETS_EXCLUDE)')
	$(BIN)/python -m tools.deploy.render --out build/manifests $(OVERLAYS)
	$(BIN)/python -m tools.deploy.iam staging build/iam/staging
	$(BIN)/python -m tools.deploy.iam production build/iam/production
	$(CHECKOV) --config-file deploy/checkov.yaml

# `dagster dev` suggests `dg dev`; this project does not adopt the dg CLI (README, "Why not dg").
dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	PYTHONWARNINGS='ignore:Function `dev_command` is superseded' \
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

# Accuracy benchmark: a held-out-voice labeled store and two stores read by synthesizers never
# used in training (festival, FreeTTS), synthesized once, scored by the pipeline; one table per
# synthesizer, and ROC/PR/reliability plots of the calibrated judgement in bench/out/.
EVAL_STORE ?= .tmp/eval-store
EVAL_FOREIGN ?= .tmp/eval-festival .tmp/eval-freetts .tmp/eval-flite
ASR_MODEL_DIR ?= models/demo-letters
eval: $(STAMP) system-deps
	test -d $(EVAL_STORE)/catalog || $(BIN)/python -m tools.synthesize dataset --out $(EVAL_STORE) \
	  --seed 1 --start-date 2026-11-01 --days 2 --activities 40 --voices heldout
	test -d .tmp/eval-festival/catalog || $(BIN)/python -m tools.synthesize foreign \
	  --out .tmp/eval-festival --synthesizer festival --seed 11 --start-date 2026-11-01 --activities 30
	test -d .tmp/eval-freetts/catalog || $(BIN)/python -m tools.synthesize foreign \
	  --out .tmp/eval-freetts --synthesizer freetts --seed 12 --start-date 2026-11-01 --activities 30
	test -d .tmp/eval-flite/catalog || $(BIN)/python -m tools.synthesize foreign \
	  --out .tmp/eval-flite --synthesizer flite --seed 13 --start-date 2026-11-01 --activities 30
	$(BIN)/python -m tools.evaluate $(foreach s,$(EVAL_STORE) $(EVAL_FOREIGN),--store $(s)) \
	  --model-dir $(ASR_MODEL_DIR) --plots bench/out --out bench/out/eval.json

$(CHECKOV):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==3.3.30
	touch $@

# Every overlay and the IAM of each environment, rendered (what checkov and reviewers read).
manifests: $(STAMP)
	$(BIN)/python -m tools.deploy.render --out build/manifests $(OVERLAYS)
	$(BIN)/python -m tools.deploy.iam staging build/iam/staging
	$(BIN)/python -m tools.deploy.iam production build/iam/production

# CycloneDX SBOM of the pinned dependency tree.
sbom: $(STAMP)
	mkdir -p build
	$(BIN)/cyclonedx-py requirements requirements.lock --output-reproducible -o $(CURDIR)/build/sbom.cdx.json
	@echo "wrote build/sbom.cdx.json"

# Known vulnerabilities in requirements.lock; offline it says so in one line and exits 0.
audit: $(STAMP)
	$(BIN)/python -m tools.audit requirements.lock

# After reviewing new findings (all must be false positives), refresh the baseline in place.
secrets-baseline: $(STAMP)
	$(BIN)/detect-secrets scan --baseline .secrets.baseline --exclude-files '$(SECRETS_EXCLUDE)'

clean:
	rm -rf $(VENV) .asr-data .dagster-home .pytest_cache .ruff_cache
