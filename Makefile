# The two commands of the quick start: `make demo` and `make test`.
# Everything they need is installed here: a virtual environment from PyPI (pip's cache
# makes the second time fast) and Kafka's jars from Maven Central (cached in ~/.m2 and
# ~/.cache/deeptrust by the first broker start).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test lint typecheck unit integration kafka-up kafka-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/deeptrust demo

test: lint typecheck
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

kafka-up: $(STAMP)
	$(BIN)/deeptrust kafka up

kafka-down: $(STAMP)
	$(BIN)/deeptrust kafka down

clean:
	rm -rf $(VENV) .deeptrust .pytest_cache .mypy_cache .ruff_cache
