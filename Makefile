# `make run` and `make test` work on a fresh clone: they create .venv and install what is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck bench clean system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $@

# The port `make run` serves on (PORT=8001 make run, say, when 8000 is taken).
PORT ?= 8000

run: $(STAMP)
	$(BIN)/bridge serve --host 127.0.0.1 --port $(PORT)

# Some tests drive real programs from the distribution: headless Chromium (the call-log pages),
# sipp (Debian's sip-tester), the baresip softphone (the SIP listener) and Kamailio (the SIP
# dispatcher of infra/kamailio/). Install whichever is missing (as root, or through sudo);
# elsewhere the tests say what is missing and skip.
SYSTEM_PACKAGES := chromium:chromium sipp:sip-tester baresip:baresip kamailio:kamailio

system-packages:
	@missing=; for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; \
	  elif command -v sudo >/dev/null; then sudo=sudo; \
	  else echo "missing:$$missing; install them (apt-get install$$missing) as root" >&2; exit 0; fi; \
	  if command -v apt-get >/dev/null; then \
	    $$sudo apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing and this is not a Debian-like system; install them" >&2; fi; }

test: $(DEV_STAMP) system-packages
	$(BIN)/ruff check bridge tests
	$(BIN)/mypy
	# Three runs: the tests without servers on both cores; the end-to-end tests (real
	# processes, real sockets) two at a time; then those that hold real clocks to tens of
	# milliseconds (marked `timing`) one at a time, with nothing else running.
	$(BIN)/python -m pytest -q -n 2 --ignore=tests/e2e
	$(BIN)/python -m pytest -q -n 2 -m "not timing" tests/e2e
	$(BIN)/python -m pytest -q -m timing tests/e2e

lint: $(DEV_STAMP)
	$(BIN)/ruff check bridge tests
	$(BIN)/ruff format --check bridge tests

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bridge.devtools.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
