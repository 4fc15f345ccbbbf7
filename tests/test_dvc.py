"""DVC end to end on a fresh copy of the repository: the real `dvc` CLI, the real `cellcast` stages.

One module-scoped copy runs ingest -> validate -> window for elecdemand once; tests that change
params or delete data work on their own copy of it. The full pipeline (train + evaluate through
Prefect and MLflow) runs once, with tiny training settings, in the integration test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cellcast.pipeline.data.versioning import data_hash, lock_hash, read_lock, status

pytestmark = pytest.mark.integration  # dvc repro / push / pull in a throwaway repository

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAME = "elecdemand"
TARGET = f"window@{NAME}"
DATA = [
    f"data/{NAME}/{f}"
    for f in (
        "raw.parquet",
        "raw.json",
        "validated.parquet",
        "validated.json",
        "future.parquet",
        "windows.npz",
        "windows.json",
    )
]
# what a fresh clone holds of DVC besides the tracked code (listed in case they are not committed yet)
DVC_FILES = ["dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".dvc/plots/timeseries.json"]


def _source_files() -> list[str]:
    """The files a clone of this repository has: git's tracked files (dvc.lock excluded: the copy starts
    with no pipeline run), plus the DVC files."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = {f for f in out.split("\0") if f} | set(DVC_FILES)
    return sorted(f for f in files if f != "dvc.lock" and (ROOT / f).is_file())


def _env(repo: Path) -> dict:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_HOME": str(repo / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    # the copy's own stores: params.yaml found from the working directory, MLflow under <copy>/.cellcast; the flows
    # report to the session's Prefect server where a test has one (an ephemeral server of their own, started in each
    # `cellcast train` process on a new PREFECT_HOME, cost 16 CPU seconds of migrations and startup)
    for k in ("CELLCAST_PARAMS", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    return env


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def edit_params(repo: Path, change) -> None:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    change(p)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def copy_repo(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def ran(p: subprocess.CompletedProcess) -> set[str]:
    """Stages a `dvc repro` ran (not skipped)."""
    return {line.split("'")[1] for line in p.stdout.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """A fresh copy of the repository (git init, no data, no dvc.lock, no cache)."""
    repo = tmp_path_factory.mktemp("clone") / "cellcast"
    for f in _source_files():
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, repo / f)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


@pytest.fixture(scope="module")
def reproduced(fresh, tmp_path_factory) -> Path:
    """`dvc repro window@elecdemand` run once in a copy of the fresh clone."""
    repo = copy_repo(fresh, tmp_path_factory.mktemp("repro") / "cellcast")
    p = dvc(repo, "repro", TARGET)
    assert ran(p) == {f"ingest@{NAME}", f"validate@{NAME}", TARGET}, p.stdout
    return repo


def test_repro_records_every_output_and_the_dataset_hash(reproduced):
    repo = reproduced
    stages = read_lock(repo)
    assert set(stages) == {f"ingest@{NAME}", f"validate@{NAME}", TARGET}
    for f in DATA:
        assert lock_hash(f, repo) == data_hash(repo / f), f
    # the hash validation writes (and training tags models with) is the one dvc.lock holds
    meta = json.loads((repo / f"data/{NAME}/validated.json").read_text())
    assert meta["data_md5"] == lock_hash(f"data/{NAME}/validated.parquet", repo)
    assert json.loads((repo / f"data/{NAME}/windows.json").read_text())["data_md5"] == meta["data_md5"]
    # an absolute path names the same output; something that is no output has no hash
    assert lock_hash(repo / f"data/{NAME}/validated.parquet", repo) == meta["data_md5"]
    assert lock_hash("params.yaml", repo) is None
    # the params each stage declared were recorded with their values
    assert stages[TARGET]["params"]["params.yaml"][f"datasets.{NAME}"]["calendar"]["country"] == "AU"
    assert (repo / f"reports/{NAME}/validation.json").is_file()


def test_status_clean_and_repro_is_a_no_op(reproduced):
    assert status([TARGET], reproduced) == {}
    assert "up to date" in dvc(reproduced, "status", "--with-deps", TARGET).stdout
    p = dvc(reproduced, "repro", TARGET)
    assert ran(p) == set(), p.stdout
    assert p.stdout.count("didn't change, skipping") == 3


def test_a_changed_param_reruns_the_stages_that_read_it(reproduced, tmp_path):
    repo = copy_repo(reproduced, tmp_path / "cellcast")
    before = {f: data_hash(repo / f) for f in DATA}

    # another dataset's overrides are not elecdemand's params: nothing of elecdemand is stale
    edit_params(repo, lambda p: p["datasets"]["glucose"]["window"].update(lookback=300))
    assert status([TARGET], repo) == {}

    edit_params(repo, lambda p: p["window"].update(stride=2))
    stale = status([TARGET], repo)
    assert set(stale) == {f"validate@{NAME}", TARGET}
    assert {"changed deps": {"params.yaml": {"window": "modified"}}} in stale[TARGET]
    p = dvc(repo, "repro", TARGET)
    assert ran(p) == {f"validate@{NAME}", TARGET}, p.stdout
    assert json.loads((repo / f"data/{NAME}/windows.json").read_text())["stride"] == 2
    after = {f: data_hash(repo / f) for f in DATA}
    # the stride changes the window set, not the data it is cut from
    assert after[f"data/{NAME}/windows.json"] != before[f"data/{NAME}/windows.json"]
    assert after[f"data/{NAME}/raw.parquet"] == before[f"data/{NAME}/raw.parquet"]
    assert after[f"data/{NAME}/validated.parquet"] == before[f"data/{NAME}/validated.parquet"]
    assert lock_hash(f"data/{NAME}/windows.json", repo) == after[f"data/{NAME}/windows.json"]
    assert status([TARGET], repo) == {}


def test_push_then_pull_restores_identical_bytes(reproduced, tmp_path):
    repo = copy_repo(reproduced, tmp_path / "cellcast")
    remote = repo / "dvc-storage"  # the default remote of .dvc/config, inside the checkout
    assert not remote.exists()
    before = {f: (repo / f).read_bytes() for f in DATA}
    distinct = len({data_hash(repo / f) for f in DATA})  # the remote stores identical files once
    p = dvc(repo, "push", TARGET, "--with-deps")
    assert f"{distinct} files pushed" in p.stdout, p.stdout
    # a folder remote stores each file under its md5: files/md5/<2 chars>/<rest>
    md5 = lock_hash(f"data/{NAME}/validated.parquet", repo)
    assert (remote / "files" / "md5" / md5[:2] / md5[2:]).read_bytes() == before[f"data/{NAME}/validated.parquet"]

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    assert set(status([TARGET], repo)) == {f"ingest@{NAME}", f"validate@{NAME}", TARGET}
    p = dvc(repo, "pull", TARGET, "--with-deps")
    assert f"{len(DATA)} files added" in p.stdout, p.stdout
    assert {f: (repo / f).read_bytes() for f in DATA} == before
    assert status([TARGET], repo) == {}
    assert ran(dvc(repo, "repro", TARGET)) == set()


def test_a_bundled_panel_runs_through_the_ingest_validate_and_window_stages(fresh, tmp_path):
    repo = copy_repo(fresh, tmp_path / "cellcast")
    p = dvc(repo, "repro", "window@weather")
    assert ran(p) == {"ingest@weather", "validate@weather", "window@weather"}, p.stdout
    windows = json.loads((repo / "data/weather/windows.json").read_text())
    assert sorted(windows["panel"]["series"]) == ["EWR", "JFK", "LGA"] and windows["counts"]["train"] > 0
    meta = json.loads((repo / "data/weather/validated.json").read_text())
    assert meta["panel"]["series_in"] == meta["panel"]["kept"] == 3 and meta["panel"]["id_cols"] == ["origin"]
    # the hash validation records is the one dvc.lock holds, and the stage recorded the panel's own params
    assert meta["data_md5"] == lock_hash("data/weather/validated.parquet", repo)
    stages = read_lock(repo)
    assert stages["validate@weather"]["params"]["params.yaml"]["datasets.weather"]["ingest"]["long_gaps"] == "segment"
    assert stages["ingest@weather"]["params"]["params.yaml"]["ingest.partition_rows"] > 0
    assert status(["window@weather"], repo) == {}


def test_full_pipeline_trains_evaluates_and_reports_metrics(reproduced, tmp_path, prefect_api):
    """ingest -> ... -> train -> evaluate via `dvc repro`, with seconds-long training."""
    repo = copy_repo(reproduced, tmp_path / "cellcast")

    def tiny(p):
        p["train"].update(cells=["gru"], epochs=1, time_budget_s=5, hidden_size=8, max_train_windows=1024, device="cpu")
        p["evaluate"].update(references=[])  # nothing here reads the classical reference rows (seconds per origin)

    edit_params(repo, tiny)
    p = dvc(repo, "repro", "evaluate")
    # the data stages did not depend on train.cells / epochs: only train and evaluate ran
    assert ran(p) == {"train", "evaluate"}, p.stdout
    rep = repo / "reports" / NAME
    metrics = json.loads((rep / "metrics.json").read_text())
    mase = metrics["model"]["mase"]
    assert mase > 0 and metrics["best_baseline"] in metrics["baselines"]
    summary = json.loads((rep / "train_summary.json").read_text())
    assert metrics["model"]["version"] == summary["version"]
    for plot, x in (("error_by_horizon.csv", "step"), ("forecast_vs_actual.csv", "timestamp")):
        lines = (rep / "plots" / plot).read_text().splitlines()
        assert lines[0].split(",")[:2] in ([x, "model"], [x, "actual"]) and len(lines) > 48, plot

    shown = dvc(repo, "metrics", "show", "--json").stdout
    model = json.loads(shown)[""]["data"][f"reports/{NAME}/metrics.json"]["data"]["model"]
    assert model["mase"] == pytest.approx(mase)
    # the quantiles' scores: interval coverage and width at 80% and 90%, Winkler, pinball, CRPS
    assert {"coverage_80", "coverage_90", "width_90", "winkler_90", "pinball", "crps"} <= set(model)
    assert 0 < model["coverage_90"] <= 1 and metrics["model"]["quantiles"] == [0.05, 0.1, 0.5, 0.9, 0.95]
    assert f"{mase:.5f}"[:5] in dvc(repo, "metrics", "show").stdout
    plots = json.loads(dvc(repo, "plots", "show", "--json").stdout)["data"]
    assert set(plots) == {f"reports/{NAME}/plots/error_by_horizon.csv", f"reports/{NAME}/plots/forecast_vs_actual.csv"}
    err = plots[f"reports/{NAME}/plots/error_by_horizon.csv"][0]["content"]
    assert err["encoding"]["x"]["field"] == "step" and '"field": "model"' in json.dumps(err["layer"])
    fva = plots[f"reports/{NAME}/plots/forecast_vs_actual.csv"][0]["content"]["encoding"]
    assert fva["x"] == {"field": "timestamp", "type": "temporal", "title": "timestamp"}  # our template
    assert fva["strokeDash"]["scale"]["domain"] == ["actual", "model"]

    # the registered model carries the hash dvc.lock holds for the validated data it was trained on
    from mlflow import MlflowClient

    store = f"sqlite:///{repo / '.cellcast' / 'mlflow.db'}"  # the copy's own store, read without configuring ours
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    tag = client.get_model_version_by_alias(f"{NAME}-forecaster", "challenger").tags["data_md5"]
    assert tag == lock_hash(f"data/{NAME}/validated.parquet", repo)

    assert status(None, repo).keys().isdisjoint({"train", "evaluate", TARGET})
    assert ran(dvc(repo, "repro", "evaluate")) == set()
