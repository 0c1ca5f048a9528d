# trackemb developer entry points. Everything runs inside .venv, created on first use
# from the pinned requirements.txt (the same install the Dockerfiles and CI use).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
RUNS   ?= runs/demo

.PHONY: venv test test-fast lint demo bench clean-demo help
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

demo: venv      ## harvest the bundled sample clips, train a short CPU schedule, export, cluster, evaluate
	$(BIN)/trackemb harvest examples/videos --store $(RUNS)/patches.lmdb
	$(BIN)/trackemb inspect $(RUNS)/patches.lmdb --montage $(RUNS)/pairs.png

bench: venv     ## benchmarks: prints a table of measured ratios, writes bench/results/*.json
	$(BIN)/python -m bench

clean-demo:     ## remove the demo outputs
	rm -rf $(RUNS)
