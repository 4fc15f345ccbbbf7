"""Shared fixtures: keep them small and general."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Subprocesses (the CLI as a user runs it, DVC stages, servers) import this checkout's code,
# whichever checkout the installed package points at.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.fixture(autouse=True)
def _log_handlers_on_open_streams():
    """Prefect's console log handler (on the root logger once a flow ran in this process) keeps the stream
    it was created with; a CliRunner invocation closes its captured stream afterwards. A real process
    never closes its stderr: point such handlers back at it so one test's capture can't leak into the next."""
    import logging
    import sys

    loggers = [logging.getLogger()] + [v for v in logging.root.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            console = getattr(h, "console", None)
            if console is not None and getattr(console.file, "closed", False):
                console.file = sys.__stderr__
            elif isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False):
                h.stream = sys.__stderr__   # not setStream: it flushes the closed one
    yield


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throwaway project folder holding a copy of params.yaml, made the working directory
    (every path in params.yaml is relative to it)."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CELLCAST_PARAMS", raising=False)
    return tmp_path


@pytest.fixture
def settings_for(project):
    """settings_for(name, ingest={...}, window={...}, validate={...}): Settings with section overrides."""
    from cellcast.pipeline.config import load_params

    def make(name: str, **sections):
        s = load_params(project / "params.yaml").for_dataset(name)
        update = {}
        for section, values in sections.items():
            attr = "validate_" if section == "validate" else section
            update[attr] = getattr(s, attr).model_copy(update=values)
        return s.model_copy(update=update)

    return make


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect server for the whole session; flows run in this process report to it."""
    import os

    from prefect_server import prefect_env, prefect_server

    work = tmp_path_factory.mktemp("prefect")
    with prefect_server(work) as api:
        saved = {k: os.environ.get(k) for k in prefect_env(work, api)}
        os.environ.update(prefect_env(work / "client", api))
        try:
            yield api
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


TINY_TRAIN = {"epochs": 3, "time_budget_s": 10, "hidden_size": 8, "batch_size": 64, "max_train_windows": 1024, "lr": 0.01,
              "rnn_steps": 12, "patience": 2, "device": "cpu"}

# Intervals conformalised on a few hundred validation windows of a small synthetic series (a random-walk level:
# a dozen independent days) miss nominal by more than the 5 points a real run is held to; these tests are about
# the pipeline, not calibration (test_promotion.py and test_flows.py hold the gate to its default).
TINY_EVALUATE = {"coverage_tolerance": 0.3}


@pytest.fixture
def tiny_params(project):
    """params.yaml in the project folder rewritten for seconds-long training (same keys, small numbers)."""
    import yaml

    p = yaml.safe_load((project / "params.yaml").read_text())
    p["train"].update(TINY_TRAIN)
    p["evaluate"].update(TINY_EVALUATE)
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return project / "params.yaml"
