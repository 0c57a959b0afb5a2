# Atelier — every target composes; `make dev` and `make test` install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 3000
STAGE ?= dev
PYTEST_WORKERS ?= 2
CODE := functions layers/core infra tests
# checkov pins boto3 and packaging below what the project needs (boto3==1.35.49), so it gets a venv of its own.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV ?= .venv-checkov

.PHONY: help deps dev test test-long unit integration e2e lint format typecheck cfn-lint checkov openapi layer-reqs bench build deploy clean

help:
	@echo "make dev          serve the API offline on 127.0.0.1:$(PORT) (template on moto, full async lifecycle)"
	@echo "make test         lint, type-check, cfn-lint, checkov, then every test suite"
	@echo "make test-long    the model-based tests (ledger, payments) with 1,000+ sequences per model and backend"
	@echo "make bench        cold-start, ledger and lifecycle benchmarks"
	@echo "make openapi      regenerate layers/core/atelier/api/openapi.json"
	@echo "make build        sam build;  make deploy STAGE=dev|prod   sam deploy --config-env STAGE"

# ---------------------------------------------------------------- install
$(VENV)/.installed: pyproject.toml package.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	npm install --no-audit --no-fund --loglevel=error
	touch $@

deps: $(VENV)/.installed

$(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

# ---------------------------------------------------------------- run
dev: deps
	$(PY) -m infra.local --port $(PORT) $(if $(PARAMS),--parameter-overrides $(PARAMS))

# ---------------------------------------------------------------- checks
lint: deps
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)

format: deps
	$(VENV)/bin/ruff check --fix $(CODE)
	$(VENV)/bin/ruff format $(CODE)

typecheck: deps
	$(VENV)/bin/mypy --config-file pyproject.toml

cfn-lint: deps
	$(VENV)/bin/cfn-lint template.yaml

# Settings and the skips that hold for a whole kind of resource are in .checkov.yaml; the others sit next to
# their resource in template.yaml. checkov reads the SAM resource types (AWS::Serverless::Function) as they are.
checkov: $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml -f template.yaml

# Unit and integration tests share a process pool; the e2e suite gets its own process because the
# offline stack points every AWS SDK in its process at its moto server.
unit: deps
	$(PY) -m pytest tests/unit -q

integration: deps
	$(PY) -m pytest tests/integration tests/contract -q -n $(PYTEST_WORKERS)

e2e: deps
	$(PY) -m pytest tests/e2e -q

# -v on the slower suites so the log names what ran (the ledger model and DynamoDB Local concurrency tests).
test: lint typecheck cfn-lint checkov
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest tests/integration tests/contract -v -n $(PYTEST_WORKERS) --durations=10
	$(PY) -m pytest tests/e2e -v --durations=10

# The model-based tests, long: at least 1,000 sequences per model (ledger, payments) and backend (moto, DynamoDB
# Local) instead of make test's short run; ATELIER_TEST_PROFILE picks the profile (tests/hypothesis_profiles.py).
MODEL_TESTS := tests/integration/ledger/test_ledger_model.py tests/integration/payments/test_payments_model.py

test-long: deps
	ATELIER_TEST_PROFILE=long $(PY) -m pytest $(MODEL_TESTS) -v -n $(PYTEST_WORKERS) --durations=10

# ---------------------------------------------------------------- generated files
openapi: deps
	$(PY) -m infra.openapi

layer-reqs: deps
	$(PY) -m infra.layer_requirements

# ---------------------------------------------------------------- measure
bench: deps
	$(PY) -m infra.bench

# ---------------------------------------------------------------- AWS
build:
	sam build

deploy: build
	sam deploy --config-env $(STAGE)

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis
