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


# `pytest -n 2 --dist loadfile` hands each worker a file at a time; the run ends when the last file does. Files
# that share a session fixture too costly to make twice go to one worker together (the name of their group), and
# the costliest files go first so the quick ones fill the gaps at the end. Seconds of the integration tier's
# files (their tests and the session fixtures they start, as far as the 40 slowest of the run show them),
# measured at load 5-11 on 2 cores on 2026-12-08 (the others, unlisted, follow in xdist's own order). A stale
# figure costs balance, never a test.
SHARED_WORKER = {
    # trained_on_postgres: PostgreSQL, an MLflow server on it and a training run
    "tests/test_browser.py": "trained_on_postgres",
    "tests/test_postgres.py": "trained_on_postgres",
    "tests/test_fleet.py": "trained_on_postgres",
}
FILE_SECONDS = {
    "tests/test_failures.py": 315,
    "tests/test_operations.py": 300,
    "tests/test_flows.py": 250,
    "tests/test_data_versions.py": 190,
    "tests/test_dvc.py": 190,
    "tests/test_deployments.py": 180,
    "tests/test_fuzz_service.py": 150,
    "trained_on_postgres": 120,
    "tests/test_panel_model.py": 110,
    "tests/test_cli.py": 90,
    "tests/test_signals.py": 60,
    "tests/test_tracking.py": 60,
    "tests/test_backtest.py": 55,
    "tests/test_forecast.py": 50,
    "tests/test_live_promotion.py": 45,
    "tests/test_ingest_fuzz.py": 45,
    "tests/test_gpu_check.py": 40,
}


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with SHARED_WORKER's groups and the costliest file first (FILE_SECONDS)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class CostliestFileFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return SHARED_WORKER.get(file, file)

        def _assign_work_unit(self, node) -> None:
            # xdist takes the queue's first unit: put the costliest there (ties keep xdist's order)
            costliest = max(self.workqueue, key=lambda scope: FILE_SECONDS.get(scope, 0))
            self.workqueue.move_to_end(costliest, last=False)
            super()._assign_work_unit(node)

    return CostliestFileFirst(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the test's fixtures are made: tell the server helpers which tier the test is in (tests/tiers.py)."""
    from tiers import ENV

    os.environ[ENV] = "1" if item.get_closest_marker("integration") else "0"


@pytest.fixture(autouse=True)
def _tracking_uri_left_as_found():
    """mlflow.set_tracking_uri (tracking.configure) exports MLFLOW_TRACKING_URI into this process's environment. Left
    there after a test, the next test's `cellcast` subprocesses inherit that test's store as if a user had named it:
    a `cellcast train` then registers into another project's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(autouse=True)
def _log_handlers_on_open_streams():
    """Prefect's console log handler (on the root logger once a flow ran in this process) keeps the stream
    it was created with; a CliRunner invocation closes its captured stream afterwards. A real process
    never closes its stderr: point such handlers back at it so one test's capture can't leak into the next."""
    import logging
    import sys

    loggers = [logging.getLogger()] + [
        v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger)
    ]
    for lg in loggers:
        for h in lg.handlers:
            console = getattr(h, "console", None)
            if console is not None and getattr(console.file, "closed", False):
                console.file = sys.__stderr__
            elif isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False):
                h.stream = sys.__stderr__  # not setStream: it flushes the closed one
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
    with prefect_server(work, ui=True) as api:  # the UI too: tests/test_browser.py opens it
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


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster (Debian's binaries) for the session: its SQLAlchemy URL."""
    from postgres_server import REQUIRE_ENV, postgres_bin, postgres_server

    if postgres_bin() is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail("PostgreSQL server binaries not found (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL server binaries not found: apt-get install postgresql")
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_on_postgres(postgres_url, tmp_path_factory):
    """A real `mlflow server` whose tracking and registry store is that PostgreSQL database, its artifacts in a
    shared folder (the one it was given): the URL. Tests point MLFLOW_TRACKING_URI at it."""
    from mlflow_server import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow-pg"), backend_store_uri=postgres_url) as url:
        yield url


@pytest.fixture(scope="session")
def trained_on_postgres(prefect_api, mlflow_on_postgres, tmp_path_factory):
    """One training flow run of dataset `pgload` (an hourly series, 2000 rows of 2072 written: the rest arrive
    later) in its own project folder, through the session's Prefect server, tracked on the PostgreSQL-backed
    MLflow server; v1 is champion (promoted by hand when the policy kept the tiny model out). Tests that use it
    read it and add versions; they never delete. A namespace: project, csv, full (the whole series), settings,
    outcome, v1, mlflow, experiment, prefect (UI address), flow_run."""
    from types import SimpleNamespace

    import pandas as pd
    import yaml
    from mlflow import MlflowClient
    from test_flows import write_series

    from cellcast.flows.training import run_training
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision

    project = tmp_path_factory.mktemp("pg-project")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(TINY_TRAIN)
    params["evaluate"].update(references=[])  # the classical reference rows: none of its readers looks at them
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        mp.delenv("CELLCAST_PARAMS", raising=False)
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_on_postgres)
        tracking.configure()
        source = write_series(project / "full.csv", n=2072)
        full = pd.read_csv(project / "full.csv")
        csv = project / "pgload.csv"
        full.iloc[:2000].to_csv(csv, index=False)
        source["path"] = str(csv)
        settings = load_params().for_dataset("pgload")
        out = run_training(settings, source=source)
        model = settings.model_name
        if out.champion_after != 1:
            tracking.apply_decision(model, 1, Decision(True, "promoted by the fixture", {}), expected_champion=None)
        client = MlflowClient()
        exp = client.get_experiment_by_name(tracking.experiment_name("pgload")).experiment_id
        flow_run = client.get_run(out.parent_run_id).data.tags["flow_run_id"]
        v1 = tracking.get_version(model, 1)
    yield SimpleNamespace(
        project=project,
        csv=csv,
        full=full,
        settings=settings,
        outcome=out,
        v1=v1,
        model=model,
        mlflow=mlflow_on_postgres,
        experiment=exp,
        prefect=prefect_api.removesuffix("/api"),
        flow_run=flow_run,
    )


TINY_TRAIN = {
    "epochs": 3,
    "time_budget_s": 10,
    "hidden_size": 8,
    "batch_size": 64,
    "max_train_windows": 1024,
    "lr": 0.01,
    "rnn_steps": 12,
    "patience": 2,
    "device": "cpu",
    "parallel": 1,  # no worker processes to start (seconds each); tests that train at once set it
}

# Intervals conformalised on a few hundred validation windows of a small synthetic series (a random-walk level:
# a dozen independent days) miss nominal by more than the 5 points a real run is held to; these tests are about
# the pipeline, not calibration (test_promotion.py and test_flows.py hold the gate to its default).
TINY_EVALUATE = {
    "coverage_tolerance": 0.3,
    # the classical references refit per origin (seconds each): tests/test_backtest.py runs them
    "references": [],
}


@pytest.fixture
def tiny_params(project):
    """params.yaml in the project folder rewritten for seconds-long training (same keys, small numbers)."""
    import yaml

    p = yaml.safe_load((project / "params.yaml").read_text())
    p["train"].update(TINY_TRAIN)
    p["evaluate"].update(TINY_EVALUATE)
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return project / "params.yaml"


def one_cell(params_path: Path, cell: str = "rnn") -> None:
    """params.yaml trains one candidate (the RNN: the quickest cell), for tests about what a run registers, decides
    or serves rather than about the candidates: on the tests' seasonal hourly series a tiny RNN becomes champion."""
    import yaml

    p = yaml.safe_load(params_path.read_text())
    p["train"]["cells"] = [cell]
    params_path.write_text(yaml.safe_dump(p, sort_keys=False))
