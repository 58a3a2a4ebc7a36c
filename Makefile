# Two commands do all the set-up on a fresh clone (only Python >= 3.11 and make needed):
#   make serve   create .venv, install, start the server on the embedded store
#   make test    install the test extras, run lint, types and the whole test suite
# make serve honours the FHIR_SERVER_* variables, e.g. FHIR_SERVER_PORT=9000 make serve.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint typecheck unit api-mongo-fake bench corpus-xml130 clean

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

test: lint unit api-mongo-fake

# The XML 130 bridge over a large generated corpus (600 patients, over 1,000 envelopes): every
# envelope imported valid and every mapped field back equal (the suite runs a sample).
corpus-xml130: $(VENV)/.installed-test
	XML130_CORPUS_PATIENTS=600 $(BIN)/python -m pytest -q tests/unit/bridges/test_xml130_corpus.py

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
