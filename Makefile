# `make run` and `make test` work on a fresh clone: they create .venv and install what is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck bench clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $@

run: $(STAMP)
	$(BIN)/bridge serve --host 127.0.0.1 --port 8000

# The call-log page tests drive a real headless Chromium: install the distribution's package
# where it is missing (as root, or through sudo). Elsewhere the tests say what is missing.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; \
	  elif command -v sudo >/dev/null; then sudo=sudo; \
	  else echo "chromium is missing; install it (apt-get install chromium) as root" >&2; exit 0; fi; \
	  if command -v apt-get >/dev/null; then \
	    $$sudo apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing and this is not a Debian-like system; install it" >&2; fi; }

test: $(DEV_STAMP) browser
	$(BIN)/ruff check bridge tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check bridge tests
	$(BIN)/ruff format --check bridge tests

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bridge.devtools.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
