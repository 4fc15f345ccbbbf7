"""A user's own data under DVC, as a new user meets it: their CSV (outside the repository) ingested, trained on,
replaced by next month's CSV under the same name, trained on again; then data/ and the local DVC cache are gone and
both versions' exact bytes come back through `cellcast data get` from the remote. The real `dvc`, the real `cellcast`
in processes of their own for the ingests, the trainings and the other clone (the reads of the copy after them in this
process), MLflow's store in the copy, the session's Prefect server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_dvc import BIN, _source_files, dvc

from cellcast.pipeline.data.versioning import data_hash, lock_hash, read_lock, read_sources, status

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.integration  # git, DVC and the cellcast command in a copy of the repository


def _series(rows: int, seed: int) -> pd.DataFrame:
    t = pd.date_range("2024-01-01", periods=rows, freq="h")
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"ts": t, "y": 10 + 3 * np.sin(np.arange(rows) * 2 * np.pi / 24) + rng.normal(0, 0.3, rows)})


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A fresh copy of the repository (git init, no data, no dvc.lock, no cache) with seconds-long training."""
    repo = tmp_path / "cellcast"
    for f in _source_files():
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, repo / f)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["train"].update(
        cells=["gru"],
        epochs=1,
        time_budget_s=5,
        hidden_size=8,
        max_train_windows=512,
        rnn_steps=12,
        device="cpu",
        threads=1,
    )
    p["evaluate"].update(references=[], coverage_tolerance=0.3)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    monkeypatch.chdir(repo)
    return repo


def _env(repo: Path) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    for k in ("CELLCAST_PARAMS", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)  # the copy's params.yaml and its own MLflow store (<copy>/.cellcast)
    return env


def cellcast(repo: Path, *args: str, env: dict | None = None) -> str:
    p = subprocess.run(
        [str(BIN / "cellcast"), *args],
        cwd=repo,
        env={**_env(repo), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, (
        f"cellcast {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    )
    return p.stdout + p.stderr


def here(*args: str) -> str:
    """`cellcast ARGS` in this process, on the project in the working directory: the reads that follow the trainings
    (a process of its own would import MLflow and DVC again for each)."""
    from typer.testing import CliRunner

    from cellcast.cli import app

    r = CliRunner().invoke(app, list(args), env={"CELLCAST_PARAMS": None, "MLFLOW_TRACKING_URI": None})
    assert r.exit_code == 0, f"cellcast {' '.join(args)} exited {r.exit_code}:\n{r.output[-3000:]}"
    return r.output


def version_tags(repo: Path, version: int) -> dict:
    """The tags of load-forecaster v<version> in the copy's own MLflow store (<copy>/.cellcast/mlflow.db), read here
    with a client of its own: the test process's tracking URI stays as it was."""
    from mlflow import MlflowClient

    store = f"sqlite:///{repo / '.cellcast' / 'mlflow.db'}"
    return dict(MlflowClient(tracking_uri=store, registry_uri=store).get_model_version("load-forecaster", version).tags)


def test_a_users_csv_versioned_trained_replaced_and_both_versions_restored(repo, tmp_path, prefect_api):
    src = tmp_path / "incoming" / "load.csv"  # outside the repository, as a user's export would be
    src.parent.mkdir()
    _series(1440, 0).to_csv(src, index=False)
    ingest = ["ingest", "--csv", str(src), "--name", "load", "--time-col", "ts", "--target", "y"]

    out = cellcast(repo, *ingest)
    # the dataset joined the pipeline beside the bundled ones: one mechanism, its file a dependency
    entry = read_sources(repo)["load"]
    assert entry["source"] == str(src) and entry["ingest"]["path"] == str(src) and "elecdemand" in read_sources(repo)
    assert f"stage ingest@load, source {src}" in out
    assert read_lock(repo)["ingest@load"]["deps"][0] == {
        "path": str(src),
        "hash": "md5",
        "md5": data_hash(src),
        "size": src.stat().st_size,
    }
    assert "ingest@load" in dvc(repo, "dag").stdout
    assert status(["ingest@load"], repo) == {}

    cellcast(repo, "train", "load")
    v1 = version_tags(repo, 1)
    first = (repo / "data/load/validated.parquet").read_bytes()
    assert v1["data_md5"] == v1["data_version"] == data_hash(repo / "data/load/validated.parquet")
    assert v1["data_get"] == "cellcast data get load --version 1 --out DIR"
    assert v1["data_kept"] == "local DVC cache + DVC remote 'local'"
    # training recorded the stages it ran: dvc.lock holds the hash the model is tagged with
    assert lock_hash("data/load/validated.parquet", repo) == v1["data_md5"]

    # next month: the same file name holds more rows and a corrected value; `dvc status` names the source
    grown = _series(1600, 0)
    grown.loc[5, "y"] += 1.0
    grown.to_csv(src, index=False)
    changed = status(["ingest@load"], repo)
    assert changed == {"ingest@load": [{"changed deps": {str(src): "modified"}}]}
    assert str(src) in dvc(repo, "status", "ingest@load").stdout

    cellcast(repo, *ingest)
    cellcast(repo, "train", "load")
    v2 = version_tags(repo, 2)
    second = (repo / "data/load/validated.parquet").read_bytes()
    assert v2["data_md5"] != v1["data_md5"] and v2["data_md5"] == data_hash(repo / "data/load/validated.parquet")

    # a garbage collection keeps every version a registered model names (v1's data is in no dvc.lock now)
    gc = here("data", "gc", "--cloud")
    assert "kept the data of 2 registered versions (2 data versions)" in gc
    # what nothing names is gone: v1's CSV (pushed at the first ingest) from the remote, v1's raw.parquet locally
    removed = re.search(r"removed (\d+) objects from the local cache and (\d+) from the remote", gc)
    assert removed and int(removed[1]) >= 1 and int(removed[2]) >= 1, gc

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    got = here("data", "get", "load", "--version", "1", "--out", str(tmp_path / "v1"))
    assert f"load-forecaster v1 was trained on (md5 {v1['data_md5']}, checked)" in got
    assert (tmp_path / "v1" / "validated.parquet").read_bytes() == first
    here("data", "get", "load", "--model", "challenger", "--out", str(tmp_path / "v2"))
    assert (tmp_path / "v2" / "validated.parquet").read_bytes() == second
    # the folder remote holds each under its md5, as `dvc push` stores any output
    md5 = v1["data_md5"]
    assert (repo / "dvc-storage" / "files" / "md5" / md5[:2] / md5[2:]).read_bytes() == first

    # another clone that shares the remote and the tracking store gets the same bytes
    clone = tmp_path / "clone"
    for f in _source_files():
        (clone / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, clone / f)
    shutil.copy2(repo / "sources.yaml", clone / "sources.yaml")
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    dvc(clone, "remote", "add", "-d", "shared", str(repo / "dvc-storage"))
    tracking = {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / '.cellcast' / 'mlflow.db'}"}
    # a process of its own: this one exported the copy's store as its own tracking URI, which a new process reads as
    # the user's
    cellcast(clone, "data", "get", "load", "--version", "1", "--out", str(tmp_path / "c1"), env=tracking)
    assert (tmp_path / "c1" / "validated.parquet").read_bytes() == first


def test_data_get_refuses_in_one_line(repo, tmp_path):
    from typer.testing import CliRunner

    from cellcast.cli import app

    r = CliRunner().invoke(app, ["data", "get", "load", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.strip() == "error: data get: give exactly one of --model ALIAS, --version N"
    r = CliRunner().invoke(app, ["data", "get", "x y", "--version", "1", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.startswith("error: dataset name 'x y'")


def test_the_data_goes_to_a_networked_remote_over_ssh(repo, tmp_path, monkeypatch):
    """An SSH remote (DVC's SSH support against a real sshd on loopback) instead of the folder: the source file and
    the validated data pushed there, back after the local cache is gone, byte for byte."""
    from ssh_server import ssh_server, sshd_bin

    from cellcast.pipeline.data import versioning

    if sshd_bin() is None:
        if os.environ.get("CELLCAST_REQUIRE_SERVICES"):
            pytest.fail("OpenSSH server not found (.ci/run installs Debian's openssh-server)")
        pytest.skip("OpenSSH server not found: apt-get install openssh-server")
    with ssh_server(Path("/tmp") / f"cellcast-ssh-{os.getpid()}-{tmp_path.name}") as ssh:
        store = tmp_path / "ssh-store"
        dvc(repo, "remote", "add", "-d", "shared", f"ssh://{ssh.user}@{ssh.host}:{ssh.port}{store}")
        dvc(repo, "remote", "modify", "--local", "shared", "keyfile", str(ssh.keyfile))
        src = tmp_path / "load.csv"
        _series(1440, 1).to_csv(src, index=False)
        cellcast(repo, "ingest", "--csv", str(src), "--name", "load", "--time-col", "ts", "--target", "y")
        md5 = data_hash(src)
        assert (store / "files" / "md5" / md5[:2] / md5[2:]).read_bytes() == src.read_bytes()  # pushed on ingest
        cellcast(repo, "validate", "load")
        kept = versioning.keep(repo / "data/load/validated.parquet", "always", root=repo)
        assert kept.remote == "shared" and kept.cached
        shutil.rmtree(repo / ".dvc" / "cache")
        got = versioning.fetch(kept.md5, tmp_path / "back" / "validated.parquet", root=repo)
        assert got.read_bytes() == (repo / "data/load/validated.parquet").read_bytes()
        assert "Accepted publickey" in ssh.log.read_text()
