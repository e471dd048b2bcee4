# `make demo` and `make test` work from a clean clone: they create .venv and install what they need.
PYTHON ?= python3
# torch first and pinned: left to the resolver, `transformers` would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit integration e2e bench bench-models clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/smartseg demo --out demo-out

test: $(STAMP) lint
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e

bench: $(STAMP)
	$(BIN)/python bench/overhead.py

# Random-weight models at the published sizes (built once into ~/.cache/smartseg/bench-models, ~4.4 GB).
bench-models: $(STAMP)
	$(BIN)/python bench/pipeline_cpu.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
