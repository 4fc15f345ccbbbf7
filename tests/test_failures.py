"""Faults a user meets, tried for real through the `cellcast` command in processes of its own: a training
run killed (kill -9) while it tracks, the tracking server stopped mid-flow and absent from the start.
A real `mlflow server` and a real Prefect server; nothing lost, one line per failure, bounded waits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import onnx
import pytest
import yaml
from mlflow import MlflowClient
from mlflow_server import free_port, mlflow_server
from plant import write_plant_csv

pytestmark = pytest.mark.integration

RETRY_SECONDS = 2  # params.yaml registry.retry_seconds here: one immediate retry, then one after 2 s


@pytest.fixture
def plant(project, tiny_params):
    """A small hourly series ingested as dataset 'plant'; one candidate (gru) so a run takes seconds."""
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.ingest import ingest_file

    p = yaml.safe_load(tiny_params.read_text())
    p["train"]["cells"] = ["gru"]
    p["registry"]["retry_seconds"] = RETRY_SECONDS
    tiny_params.write_text(yaml.safe_dump(p, sort_keys=False))
    write_plant_csv(project / "plant.csv")
    ingest_file(
        project / "plant.csv",
        time_col="when",
        targets=["kw"],
        features=["temp"],
        settings=load_params(tiny_params).for_dataset("plant"),
    )
    return project


def cellcast(cwd, *args, env: dict, out_name: str) -> subprocess.Popen:
    """`python -m cellcast ARGS` in its own process group, output to a file (read while it runs)."""
    with open(cwd / out_name, "w") as out:  # the child holds its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "cellcast", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def finish(proc: subprocess.Popen, path, timeout=420) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, path.read_text()


def wait_until(cond, what: str, timeout=300.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def runs(client: MlflowClient, status: str | None = None):
    exp = client.get_experiment_by_name("cellcast/plant")
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"attributes.status = '{status}'" if status else "")


def decided(client: MlflowClient, version: str) -> None:
    """The version carries its promotion decision, and the champion alias agrees with it (whether tiny
    training earns a champion is the promotion policy's business, not these faults')."""
    v = client.get_model_version("plant-forecaster", version)
    assert v.tags.get("promotion.decision") in ("promoted", "rejected"), v.tags
    if v.tags["promotion.decision"] == "promoted":
        assert {"champion", "previous"} & set(v.aliases), v.aliases


def prefect_runs(flow: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as c:
        return c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])))


def test_killed_runs_end_killed_server_down_is_one_line_and_the_rerun_registers(prefect_api, plant, tmp_path):
    before = (plant / "plant.csv").read_bytes()
    work, port = tmp_path / "mlflow", free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    client = MlflowClient(tracking_uri=url, registry_uri=url)

    with mlflow_server(work, port=port):
        server = mlflow_server.process
        # 1. kill -9 while the run tracks its candidates: the parent run and its children stay RUNNING
        p1 = cellcast(plant, "train", "plant", env=env, out_name="run1.txt")
        parent = wait_until(
            lambda: [r for r in runs(client, "RUNNING") if "mlflow.parentRunId" not in r.data.tags],
            "a RUNNING parent run",
            proc=p1,
        )[0]
        os.killpg(p1.pid, signal.SIGKILL)
        p1.wait()
        orphans = {r.info.run_id for r in runs(client, "RUNNING")}
        assert parent.info.run_id in orphans
        assert parent.data.tags["cellcast.pid"] == str(p1.pid)

        # 2. the rerun ends them KILLED with the reason before it trains; then the server goes away
        p2 = cellcast(plant, "train", "plant", env=env, out_name="run2.txt")
        wait_until(lambda: not runs(client, "RUNNING"), "the orphaned runs to be ended", proc=p2)
        for rid in orphans:
            r = client.get_run(rid)
            assert r.info.status == "KILLED"
            assert f"process {p1.pid} on " in r.data.tags["cellcast.ended_reason"]
        killed = [r for r in prefect_runs("cellcast-train") if f"cellcast.pid={p1.pid}" in r.tags]
        assert len(killed) == 1 and killed[0].state.is_crashed(), killed  # Prefect's copy of the run too
        assert f"process {p1.pid} on " in killed[0].state.message
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        code, out = finish(p2, plant / "run2.txt")

    # training went on; tracking gave up after the stated retries: one line, exit 2, what was kept
    assert code == 2, out
    assert "Traceback" not in out and "MlflowException" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:") or "ERROR" in ln]
    assert len(errors) == 1 and errors[0].startswith("error: tracking server " + url), errors
    assert f"gave up after 2 retries over {RETRY_SECONDS} s" in errors[0]
    assert "the trained candidates are kept" in errors[0] and "rerun `cellcast train plant`" in errors[0]
    assert f"tracking server {url}: connection refused; retry 1/2 in 0 s" in out
    assert f"retry 2/2 in {RETRY_SECONDS} s" in out
    assert "gru-h8-l1: resuming after epoch" in out  # run 1's finished candidate, reused

    # 3. the server back (same database): the rerun resumes from the checkpoints and registers one version
    with mlflow_server(work, port=port):
        # Prefect's run loggers at INFO, as a user has them (the test session's server runs quieter)
        code, out = finish(
            cellcast(plant, "train", "plant", env={**env, "PREFECT_LOGGING_LEVEL": "INFO"}, out_name="run3.txt"),
            plant / "run3.txt",
        )
        assert code == 0, out
        assert "INFO cellcast.pipeline.modeling.train: gru-h8-l1: resuming after epoch" in out  # a library line
        assert "baselines (test MASE)" in out  # the flow's logger
        assert f"MLflow UI: {url}" in out and "sqlite" not in out  # not the embedded store
        versions = client.search_model_versions("name = 'plant-forecaster'")
        assert [int(v.version) for v in versions] == [1]
        decided(client, "1")
        assert not runs(client, "RUNNING")
        assert {r.info.status for r in runs(client)} == {"KILLED", "FINISHED"}
        # the champion's ONNX file carries its grid's phase, which the service checks requests against
        source = client.get_model_version("plant-forecaster", "1").source
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, tracking_uri=url, dst_path=str(tmp_path / "champion")
        )
        meta = {p.key: p.value for p in onnx.load(str(next(Path(local).rglob("*.onnx")))).metadata_props}
        assert json.loads(meta["grid_origin"]) == "2024-03-01T00:00:00"

    # 4. no server at all: the check before training fails in seconds, nothing trained
    dead = f"http://127.0.0.1:{free_port()}"
    code, out = finish(
        cellcast(plant, "train", "plant", env={**env, "MLFLOW_TRACKING_URI": dead}, out_name="run4.txt"),
        plant / "run4.txt",
    )
    assert code == 2 and "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:") or "ERROR" in ln]
    assert len(errors) == 1 and f"tracking server {dead} unreachable (connection refused)" in errors[0]
    assert "nothing was trained or registered" in errors[0]
    assert "epoch" not in out
    assert (plant / "plant.csv").read_bytes() == before


def test_two_trains_of_one_dataset_at_once_take_turns(prefect_api, plant):
    """A new project (its MLflow store not created yet) and two `cellcast train plant` started together: before,
    one died in MLflow's table creation (alembic) with a traceback; now the second waits for the first."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [cellcast(plant, "train", "plant", env=env, out_name=f"twin{i}.txt") for i in (1, 2)]
    results = [finish(p, plant / f"twin{i}.txt") for i, p in zip((1, 2), procs)]
    for code, out in results:
        assert code == 0 and "Traceback" not in out, out
    waited = [out for _, out in results if "plant is being trained by process" in out]
    assert len(waited) == 1 and "waiting for it to finish" in waited[0]
    store = f"sqlite:///{plant / '.cellcast' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'plant-forecaster'"))
    assert versions == [1, 2]  # one after the other, each decided
    decided(client, "1")
    decided(client, "2")
    assert {r.info.status for r in runs(client)} == {"FINISHED"}


def test_a_lock_is_held_across_processes_and_released_when_its_holder_is_killed(tmp_path):
    from cellcast.pipeline.files import exclusive

    lock = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom cellcast.pipeline.files import exclusive\n"
            f"with exclusive({str(lock)!r}):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    seen = []

    def waiting(who):
        seen.append(who)
        os.kill(holder.pid, signal.SIGKILL)  # the holder dies mid-block: the kernel releases its lock

    with exclusive(lock, waiting=waiting):
        assert lock.read_text().startswith(f"process {os.getpid()} on ")
    holder.wait()
    assert len(seen) == 1 and seen[0].startswith(f"process {holder.pid} on ")
