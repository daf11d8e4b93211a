# Quick start: `make demo` runs the whole asset graph on the bundled study; `make test` runs the tests.
# Both create .venv on first use and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
export CT_HOME ?= $(CURDIR)/.ct

.PHONY: install demo test dev clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9
	$(UV) pip install --quiet --python $(PY) -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m ct_assets.demo

test: install
	$(VENV)/bin/ruff check ct_assets spark tests benchmarks
	$(PY) -m pytest

dev: install
	mkdir -p $(CT_HOME)/dagster && DAGSTER_HOME=$(CT_HOME)/dagster $(PY) -m ct_assets.pools
	DAGSTER_HOME=$(CT_HOME)/dagster $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf $(CT_HOME)
