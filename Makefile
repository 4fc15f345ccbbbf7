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

FUZZ_VENV ?= .venv-schemathesis
SCHEMATHESIS ?= schemathesis==4.32.5

.PHONY: install run test bench clean repro fuzz-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | { $(PIPQ); }
	# torch first: pinned to the build this platform serves without a CUDA download
	$(PY) -m pip install -q torch==2.13.0 2>&1 | { $(PIPQ); }
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

test: install
	$(VENV)/bin/python -m pytest -q

repro: install
	# the stages call `cellcast`: the venv's bin first on PATH
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/dvc repro

bench: install
	$(PY) bench/windows.py

clean:
	rm -rf data reports quarantine forecasts mlruns .cellcast
