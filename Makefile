# `make demo` and `make test` work from a clean clone: they create .venv and install what they need.
PYTHON ?= python3
# torch first and pinned: left to the resolver, `transformers` would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# api/, worker/, shared/, cli/ and testing/ install as smartseg.api, smartseg.worker, ...; sdk/ is smartseg
# itself (pyproject.toml).
# The editable install is strict: build/__editable__*/smartseg/ holds a link per file, which mypy follows.
# Adding or removing a file changes PACKAGE_FILES, and the links are made again.
EDITABLE := --no-deps --no-build-isolation -e . --config-settings editable_mode=strict
PACKAGE_FILES := $(shell find api cli sdk shared testing worker -name '*.py' -o -name '*.lua' -o -name py.typed \
                   -o -path 'api/static/*' -type f | sort | cksum | cut -d' ' -f1)
LINKS := $(VENV)/.links-$(PACKAGE_FILES)

.PHONY: demo test lint unit integration e2e bench bench-models clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=77'
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict > $(VENV)/links.log 2>&1 \
	  || { cat $(VENV)/links.log; exit 1; }
	touch $(STAMP)

$(LINKS): $(STAMP)
	rm -rf $(VENV)/.links-* build/__editable__.smartseg-*
	$(BIN)/python -m pip install --quiet $(EDITABLE) > $(VENV)/links.log 2>&1 || { cat $(VENV)/links.log; exit 1; }
	touch $@

demo: $(LINKS)
	$(BIN)/smartseg demo --out demo-out

test: $(LINKS) lint chromium
	$(BIN)/python -m pytest tests

# The playground's browser test (tests/e2e/test_playground.py) drives Debian's Chromium; without apt it is
# skipped and the rest of the suite still runs.
chromium:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: chromium not installed; the browser test will be skipped" >&2; }

lint: $(LINKS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

unit: $(LINKS)
	$(BIN)/python -m pytest tests/unit

integration: $(LINKS)
	$(BIN)/python -m pytest tests/integration

e2e: $(LINKS)
	$(BIN)/python -m pytest tests/e2e

bench: $(LINKS)
	$(BIN)/python bench/overhead.py

# Random-weight models at the published sizes (built once into ~/.cache/smartseg/bench-models, ~4.4 GB).
bench-models: $(LINKS)
	$(BIN)/python bench/pipeline_cpu.py

clean:
	rm -rf $(VENV) build demo-out .pytest_cache .mypy_cache .ruff_cache
