# Quick start: `make demo` runs the whole asset graph on the bundled study; `make test` runs the tests.
# Both create .venv on first use and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW3_VENV ?= .venv-airflow3
AIRFLOW ?= 2
export CT_HOME ?= $(CURDIR)/.ct
# uv trusts the system's certificate store (a proxy's CA there), as pip does, even from a bare environment.
export UV_NATIVE_TLS ?= 1

.PHONY: install airflow-install demo test test-fast lint dev airflow serve rules-doc clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The legacy Airflow 2.11 deployment has its own venv (Airflow 2 pins SQLAlchemy 1.4).
$(AIRFLOW_VENV)/.installed: airflow_compat/requirements.txt | $(VENV)/.installed
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(AIRFLOW_VENV)/bin/python -r airflow_compat/requirements.txt
	touch $@

# Airflow 3 (the supported line) in a venv of its own: Airflow 3.3 and Dagster's GraphQL client.
$(AIRFLOW3_VENV)/.installed: airflow_compat/requirements3.txt | $(VENV)/.installed
	test -x $(AIRFLOW3_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW3_VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(AIRFLOW3_VENV)/bin/python -r airflow_compat/requirements3.txt
	touch $@

airflow-install: $(AIRFLOW_VENV)/.installed $(AIRFLOW3_VENV)/.installed

demo: install
	$(PY) -m ct_assets.demo

# The static checks: ruff, the layer contract (import-linter, pyproject.toml) and the main code location's
# definitions (dg check defs loads them as `dagster dev` does).
lint: install
	$(VENV)/bin/ruff check ct_assets spark tests benchmarks airflow_compat kfp
	$(VENV)/bin/lint-imports --no-cache
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/dg check defs

# The unit tier: no services, a few minutes.
test-fast: lint
	$(PY) -m pytest tests/unit

# Both tiers (CI: .ci/run): the static checks and the unit tier (make test-fast), then the integration tier
# against real services started locally.
test: test-fast airflow-install
	$(PY) -m pytest tests/integration

dev: install
	umask 077 && mkdir -p $(CT_HOME)/dagster && DAGSTER_HOME=$(CT_HOME)/dagster $(PY) -m ct_assets.defs.pools
	DAGSTER_HOME=$(CT_HOME)/dagster $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $${CT_DAGSTER_PORT:-3000}

# The legacy Airflow UI on 127.0.0.1:8085 over DAGs emitted from the Dagster definitions:
# Airflow 2.11 by default, Airflow 3 with `make airflow AIRFLOW=3` (same DAG files).
airflow: install airflow-install
	$(PY) -m airflow_compat emit --out $(CT_HOME)/airflow/dags
	$(if $(filter 3,$(AIRFLOW)),$(AIRFLOW3_VENV),$(AIRFLOW_VENV))/bin/python -m airflow_compat start --dags $(CT_HOME)/airflow/dags

# The champion (and challenger at 10 % of subjects) of adverse-event-predictor on 127.0.0.1:8000.
serve: install
	$(PY) -m ct_assets.serving --port $${CT_SERVING_PORT:-8000}

# docs/rules.md from the rules catalogue (ct_assets/core/rules.py); a unit test fails when it is stale.
rules-doc: install
	$(PY) -m ct_assets.core.rules > docs/rules.md

clean:
	rm -rf $(CT_HOME)
