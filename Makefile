# Two commands for a fresh machine: `make run` and `make test`. Both set up .venv on first use
# and do nothing more when pyproject.toml has not changed since.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cellcast-installed
PIPQ := grep -v -e "is ignored: it is neither" -e "^Processing /opt" || true

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

# a CUDA build of torch on a GPU machine, e.g. `make install TORCH_INDEX=https://download.pytorch.org/whl/cu130`
# (README.md, 'On a GPU'); empty: what pip resolves for torch==2.13.0 here
TORCH_INDEX ?=

FUZZ_VENV ?= .venv-schemathesis
SCHEMATHESIS ?= schemathesis==4.32.5

.PHONY: install run test test-fast test-integration lint bench clean repro gpu-bundle serve-stack stop-stack stack-status fuzz-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | { $(PIPQ); }
	# torch first: pinned to the build this platform serves without a CUDA download
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) 2>&1 | { $(PIPQ); }
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | { $(PIPQ); }
	$(PY) -m pip check
	touch $(STAMP)

# tests/test_fuzz_service.py runs schemathesis from here: its own venv, not one of cellcast's dependencies
fuzz-venv: $(FUZZ_VENV)/.installed

$(FUZZ_VENV)/.installed:
	test -x $(FUZZ_VENV)/bin/python || python3 -m venv $(FUZZ_VENV)
	$(FUZZ_VENV)/bin/pip install -q '$(SCHEMATHESIS)' 2>&1 | { $(PIPQ); }
	touch $@

run: install
	$(VENV)/bin/cellcast run
	# then a panel: three airports' hourly weather, one global model, a forecast for every series
	$(VENV)/bin/cellcast run weather

# TEST_WORKERS: processes the test files are shared over (pytest-xdist; each process starts the servers its files
# need). Most of an integration test is waiting on servers and subprocesses, so two keep two cores busy.
# Three cost the integration tier 112 CPU s more and were no faster on 2 busy cores (tests/README.md, 'A third look').
TEST_WORKERS ?= 2

test: install
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# the quick tier (tests/README.md): no servers, no training flows, no browser; its files shared over two processes
test-fast: install
	$(VENV)/bin/python -m pytest -q -m "not integration" -n $(TEST_WORKERS) --dist loadfile

# the rest of `make test`: what the quick tier leaves out (.ci/run runs the two one after the other)
test-integration: install
	$(VENV)/bin/python -m pytest -q -m integration -n $(TEST_WORKERS) --dist loadfile

# ruff (lint and format) and mypy, settings in pyproject.toml
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

repro: install
	# the stages call `cellcast`: the venv's bin first on PATH
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/dvc repro

bench: install
	$(PY) bench/windows.py

# what a lent GPU machine needs for bench/gpu_check.py (wheels into the git-ignored .whl/ and .ortgpu-parts/),
# and the device calls that run it (bench/README.md, 'The GPU check')
# (no install step: it reads the versions of pydantic & co. from the venv there is)
gpu-bundle:
	PY=$(PY) bash bench/gpu_bundle.sh

# the whole stack on 127.0.0.1 (docs/operations.md): MLflow server, Prefect server, work pool, deployments,
# worker, forecasting service; logs and pids in .stack/. e.g. `make serve-stack DATASET=chicago STACK_ARGS=--serve-port=8001`
DATASET ?=
STACK_ARGS ?=
serve-stack: install
	$(PY) infra/stack.py start $(DATASET) $(STACK_ARGS)

stop-stack:
	$(PY) infra/stack.py stop

stack-status:
	$(PY) infra/stack.py status

clean:
	rm -rf data reports quarantine forecasts mlruns .cellcast
