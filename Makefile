# emnist-serve: `make install`, then `make test`. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
# PyPI's default Linux torch wheel is CUDA-linked (gigabytes); CPU machines take the CPU build.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

# Training and evaluation knobs (override on the command line: make train ARCH=rcnn EPOCHS=30).
ARCH ?= cnn
PROTOCOL ?= emnist47
EPOCHS ?= 20
SEED ?= 0
RUN ?= runs/$(ARCH)-$(PROTOCOL)-s$(SEED)
TRAIN_ARGS ?=
CHECKPOINT ?= $(RUN)/best.pt
DATA_ROOT ?= data
BENCH_ARGS ?=

# Serving knobs: make archive CHECKPOINT=runs/x/best.pt VERSION=1.0; make serve TOKEN_AUTH=1;
# make register MODEL=emnist-cnn VERSION=2.0. Every listener is bound to 127.0.0.1.
MODEL_NAME ?=
VERSION ?=
MODEL ?= $(MODEL_NAME)
ARCHIVE_ARGS ?=
TS_CONFIG ?= config.properties
LOGS ?= logs
INFERENCE_PORT ?= 8080
MANAGEMENT_PORT ?= 8081
METRICS_PORT ?= 8082
GRPC_INFERENCE_PORT ?= 7070
GRPC_MANAGEMENT_PORT ?= 7071
TOKEN_AUTH ?= 0
CTL := $(PY) -m serving.ctl --logs $(LOGS)

.PHONY: help install test test-fast lint format train evaluate bench bench-sweep bench-train seeds download fonts clean
.PHONY: archive serve stop models register unregister set-default demo webapp
.PHONY: kserve-layout
WEB_PORT ?= 5000

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv and install everything (idempotent)
	@# Serving (make serve, the torchserve tests) needs Java 17+; training does not.
	@v=$$($${JAVA_HOME:+$$JAVA_HOME/bin/}java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then \
		echo "warning: TorchServe 0.12 needs Java 17+ (found: $${v:-none}); make serve and the"; \
		echo "  torchserve tests need it: apt-get install openjdk-17-jre-headless, or set JAVA_HOME"; \
	fi
	@test -x /usr/bin/chromium || echo "note: /usr/bin/chromium not found: the browser tests skip (apt-get install chromium)"

$(VENV)/.installed: requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; Python 3.11 is required (set PYTHON=...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if $(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
		echo "torch $(TORCH_VERSION) already installed"; \
	elif $(PIP) install --quiet --no-index --no-deps "torch==$(TORCH_VERSION)" 2>/dev/null; then \
		$(PIP) install --quiet "torch==$(TORCH_VERSION)"; \
		echo "torch $(TORCH_VERSION) installed from a local wheel (pip find-links)"; \
	elif command -v nvidia-smi >/dev/null; then \
		$(PIP) install --quiet "torch==$(TORCH_VERSION)"; \
	else \
		$(PIP) install --quiet "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX); \
	fi
	@echo "torch==$(TORCH_VERSION)" > $(VENV)/constraints.txt
	$(PIP) install --quiet -r requirements.txt -c $(VENV)/constraints.txt
	@$(PY) -c "import shutil, sys, torch; cuda = torch.version.cuda; \
		sys.exit(f'error: torch {torch.__version__} is a CUDA build but this machine has no GPU; remove $(VENV) and retry' if cuda and not shutil.which('nvidia-smi') else 0)"
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@touch $@
	@echo "installed: $$($(PY) -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"

test: install ## run the test suite (slow end-to-end tests included)
	$(PY) -m pytest

test-fast: install ## the test suite without the slow end-to-end tests
	$(PY) -m pytest -m "not slow"

lint: install ## ruff lint and format check, and the import layers (docs/architecture.md)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: install ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: install ## train ARCH on PROTOCOL for EPOCHS into RUN (extra flags: TRAIN_ARGS="...")
	$(PY) -m training.train --arch $(ARCH) --protocol $(PROTOCOL) --epochs $(EPOCHS) \
		--seed $(SEED) --out $(RUN) $(TRAIN_ARGS)

evaluate: install ## evaluate CHECKPOINT on its protocol's test set
	$(PY) -m training.evaluate $(CHECKPOINT)

bench: install ## serving benchmark suite (~9 min) -> docs/benchmarks/results.{json,md,png} (BENCH_ARGS=...)
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

bench-sweep: install ## workers x threads, batch size and delay of the default CNN (~6 min) -> docs/benchmarks/sweep.{json,md}
	$(PY) -m benchmarks.serving_sweep $(BENCH_ARGS)

bench-train: install ## training throughput (images/s) of every architecture on this machine
	$(PY) benchmarks/train_throughput.py $(BENCH_ARGS)

release: install ## train, evaluate and archive the default models as RELEASE_VERSION (RELEASE_ARGS="...")
	@test -n "$(RELEASE_VERSION)" || { echo "usage: make release RELEASE_VERSION=1.1"; exit 2; }
	$(PY) -m release.recipe --version $(RELEASE_VERSION) $(RELEASE_ARGS)

seeds: install ## the study with three seeds: the release recipe, seeds 0-2, resumable (~6 h on 2 cores) -> docs/seeds.{json,md}
	$(PY) -m benchmarks.seeds $(SEEDS_ARGS)

.PHONY: canvas-realism
canvas-realism: install ## released models on Hershey-font canvas drawings -> runs/canvas-realism/ (CANVAS_ARGS=...)
	$(PY) benchmarks/canvas_realism.py $(CANVAS_ARGS)

fonts: ## install the handwriting fonts training reads (Debian packages; needs root)
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends \
		fonts-dkg-handwriting fonts-breip fonts-bwht fonts-dancingscript fonts-ecolier-court \
		fonts-humor-sans fonts-comic-neue

download: install ## fetch the official EMNIST archive into DATA_ROOT (needs internet)
	$(PY) -m training.download --root $(DATA_ROOT)

archive: install ## package CHECKPOINT as model_store/<MODEL_NAME>-<VERSION>.mar, then check it
	$(PY) -m serving.archive $(CHECKPOINT) $(if $(MODEL_NAME),--name $(MODEL_NAME)) \
		$(if $(VERSION),--version $(VERSION)) $(ARCHIVE_ARGS)

serve: install ## start TorchServe (logs in LOGS/), wait until every model is READY, set defaults
	$(CTL) start --config $(TS_CONFIG) --inference-port $(INFERENCE_PORT) \
		--management-port $(MANAGEMENT_PORT) --metrics-port $(METRICS_PORT) \
		--grpc-inference-port $(GRPC_INFERENCE_PORT) --grpc-management-port $(GRPC_MANAGEMENT_PORT) \
		$(if $(filter 1 yes true,$(TOKEN_AUTH)),--token-auth)

stop: ## stop the TorchServe started by make serve, and its workers
	$(CTL) stop

models: ## list the served models, versions, default versions and workers, and the ledger
	$(CTL) models
	@echo; $(PY) -m release.ledger show | tail -n 10

register: ## register model_store/MODEL-VERSION.mar on the running server (not as default)
	$(CTL) register $(MODEL) $(VERSION)

unregister: ## unregister version VERSION of MODEL (not the default one)
	$(CTL) unregister $(MODEL) $(VERSION)

set-default: ## make MODEL's VERSION the one /predictions/MODEL serves
	$(CTL) set-default $(MODEL) $(VERSION)

demo: install ## TorchServe with model_store/ + the web app on http://127.0.0.1:WEB_PORT until Ctrl-C
	$(PY) -m serving.demo --logs $(LOGS) --config $(TS_CONFIG) --web-port $(WEB_PORT) \
		--inference-port $(INFERENCE_PORT) --management-port $(MANAGEMENT_PORT) \
		--metrics-port $(METRICS_PORT) --grpc-inference-port $(GRPC_INFERENCE_PORT) \
		--grpc-management-port $(GRPC_MANAGEMENT_PORT)

webapp: install ## only the web app (waitress, 127.0.0.1:WEB_PORT) for a TorchServe already running
	$(PY) -m webapp --port $(WEB_PORT) --inference-url http://127.0.0.1:$(INFERENCE_PORT) \
		--management-url http://127.0.0.1:$(MANAGEMENT_PORT) \
		$(if $(filter 1 yes true,$(TOKEN_AUTH)),--token-file $(LOGS)/key_file.json)

# Learning from corrections (docs/serving.md#learning-from-corrections): make learn MODEL=emnist-cnn,
# then make promote MODEL=emnist-cnn VERSION=1.3 (FORCE=1 REASON="..." overrides the gate).
LEARN_ARGS ?=
PROMOTE_ARGS ?=
FORCE ?= 0
REASON ?=
.PHONY: learn promote rollback ledger
learn: install ## fine-tune MODEL's default on people's corrections into a candidate version
	@test -n "$(MODEL)" || { echo "usage: make learn MODEL=emnist-cnn"; exit 2; }
	$(PY) -m release.learn --model $(MODEL) $(LEARN_ARGS)

promote: install ## make MODEL's VERSION the default if it passes the gate (FORCE=1 REASON=...)
	@test -n "$(MODEL)" -a -n "$(VERSION)" || { echo "usage: make promote MODEL=emnist-cnn VERSION=1.3"; exit 2; }
	$(PY) -m release.promote --logs $(LOGS) promote --model $(MODEL) --version $(VERSION) \
		$(if $(filter 1 yes true,$(FORCE)),--force --reason "$(REASON)") $(PROMOTE_ARGS)

rollback: install ## return MODEL to the default before its last promotion
	@test -n "$(MODEL)" || { echo "usage: make rollback MODEL=emnist-cnn"; exit 2; }
	$(PY) -m release.promote --logs $(LOGS) rollback --model $(MODEL)

ledger: install ## the release ledger: every learn, gate, promotion and rollback
	$(PY) -m release.ledger show

# KServe: the storage layout its TorchServe runtime mounts (deploy/kserve/README.md).
# make kserve-layout KSERVE_OUT=build/kserve-cnn2 KSERVE_ARGS="--pin emnist-cnn=2.0"
KSERVE_OUT ?= build/kserve
KSERVE_ARGS ?=
kserve-layout: install ## KServe layout (config/ + model-store/, default versions pinned) in KSERVE_OUT
	$(PY) -m deploy.kserve.assemble $(KSERVE_OUT) $(KSERVE_ARGS)

clean: ## remove caches (keeps .venv, runs/ and model_store/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
