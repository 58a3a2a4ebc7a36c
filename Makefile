# Two commands do all the set-up on a fresh clone (only Python >= 3.11 and make needed):
#   make serve   create .venv, install, start the server on the embedded store
#   make test    install the test extras (and Debian's chromium when missing, as root), run
#                lint, types and the whole test suite
# make serve honours the FHIR_SERVER_* variables, e.g. FHIR_SERVER_PORT=9000 make serve.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint typecheck unit api-mongo-fake browser conformance-examples bench corpus-xml130 clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/fhir-server serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check fhir_server tests scripts benchmarks
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

# The API suite once more, against the MongoDB adapter over its in-process stand-in.
api-mongo-fake: $(VENV)/.installed-test
	FHIR_SERVER_TEST_API_STORAGE=mongo-fake $(BIN)/python -m pytest -q tests/api

# The SMART App Launch end-to-end test drives Debian's Chromium (tests/system/
# test_app_launch_browser.py). Installed here when missing and we are root with apt-get (CI runs
# as root on a clean machine); elsewhere that test skips and says why.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "chromium is missing and cannot be installed here: the browser test will skip"; \
	  fi; \
	fi

test: lint browser unit api-mongo-fake

# Every one of the 5,305 official R4 examples (the suite runs a fixed sample of them).
conformance-examples: $(VENV)/.installed-test
	FHIR_SERVER_TEST_R4_EXAMPLES=all $(BIN)/python -m pytest -q tests/conformance/test_r4_examples.py

# The XML 130 bridge over a large generated corpus (600 patients, over 1,000 envelopes): every
# envelope imported valid and every mapped field back equal (the suite runs a sample).
corpus-xml130: $(VENV)/.installed-test
	XML130_CORPUS_PATIENTS=600 $(BIN)/python -m pytest -q tests/unit/bridges/test_xml130_corpus.py

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
