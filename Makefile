# trackemb developer entry points. Everything runs inside .venv, created on first use
# from the pinned requirements.txt (the same install the Dockerfiles and CI use).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
RUNS   ?= runs/demo
DEMO_CFG ?= examples/demo.toml
CORPUS_DIR ?= $(or $(TRACKEMB_CORPUS_DIR),$(HOME)/.cache/trackemb/corpus)
QUALITY_CFG ?=
QUALITY_RUNS ?= runs/quality

.PHONY: venv test test-fast lint demo bench corpus quality clean-demo help
help:           ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

venv: $(VENV)/.installed  ## create .venv with the pinned dependencies (about 2 minutes the first time)
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

test: venv      ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest

test-fast: venv ## unit tests only (skips tests marked slow)
	$(BIN)/python -m pytest -m "not slow"

lint: venv      ## ruff + hadolint
	$(BIN)/ruff check trackemb tests bench examples
	$(BIN)/hadolint docker/Dockerfile docker/Dockerfile.cuda

demo: venv      ## the sample clips end to end: harvest, inspect, train (short CPU schedule), export, embed, cluster, evaluate
	$(BIN)/trackemb harvest examples/videos --store $(RUNS)/patches.lmdb --config $(DEMO_CFG)
	$(BIN)/trackemb inspect $(RUNS)/patches.lmdb --montage $(RUNS)/pairs.png
	$(BIN)/trackemb train $(RUNS)/patches.lmdb --run-dir $(RUNS)/train --config $(DEMO_CFG) --resume
	$(BIN)/trackemb export $(RUNS)/train --out $(RUNS)/export --store $(RUNS)/patches.lmdb --config $(DEMO_CFG)
	$(BIN)/trackemb embed $(RUNS)/export $(RUNS)/patches.lmdb
	$(BIN)/trackemb cluster $(RUNS)/export --config $(DEMO_CFG)
	$(BIN)/trackemb evaluate $(RUNS)/train --store $(RUNS)/patches.lmdb --out $(RUNS)/export
	@echo
	@echo "demo outputs:"
	@echo "  store + pair montage   $(RUNS)/patches.lmdb, $(RUNS)/pairs.png"
	@echo "  training run           $(RUNS)/train   (tensorboard --logdir $(RUNS))"
	@echo "  exported encoder       $(RUNS)/export/encoder.ts, encoder.safetensors, encoder.onnx, model_card.json"
	@echo "  embeddings + clusters  $(RUNS)/export/embeddings.npy, patches.csv, cluster_montages/"
	@echo "  evaluation             $(RUNS)/export/evaluation.md, report.html (open it in a browser)"
	@echo "  downstream             $(BIN)/python examples/finetune.py $(RUNS)/export"

bench: venv     ## benchmarks: prints a table of measured ratios, writes bench/results/*.json
	$(BIN)/python -m bench

corpus: venv    ## fetch the real clips of bench/corpus.toml (pip/apt clients) into $(CORPUS_DIR): train/ + heldout/
	TRACKEMB_CORPUS_DIR=$(CORPUS_DIR) $(BIN)/python -m bench.corpus fetch

quality: venv   ## corpus -> harvest train scenes -> train (QUALITY_CFG) -> export -> evaluate vs random init + pixels
	TRACKEMB_CORPUS_DIR=$(CORPUS_DIR) $(BIN)/python -m bench.quality run --runs $(QUALITY_RUNS) $(if $(QUALITY_CFG),--config $(QUALITY_CFG))

clean-demo:     ## remove the demo outputs
	rm -rf $(RUNS)
