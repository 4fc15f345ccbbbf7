"""Deployments the Prefect way: prefect.yaml (made by `cellcast.flows.deploy NAME --prefect-yaml`), `prefect deploy
--all` and `prefect worker start`; the deployments carry the dataset's name and overrides, the runs read params.yaml."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_apply_on_top_of_params_and_are_checked(project):
    from cellcast.pipeline.config import load_params, settings_for_run
    from cellcast.pipeline.errors import ConfigError

    p = load_params()
    s = p.for_dataset("elecdemand", {"train": {"epochs": 2}})
    assert s.train.epochs == 2 and s.calendar.country == "AU"  # the dataset's own overrides stay
    assert s.window.lookback == p.for_dataset("elecdemand").window.lookback
    with pytest.raises(ConfigError, match=r"^overrides\.paths: not a section that can be overridden"):
        p.for_dataset("x", {"paths": {"data": "/tmp"}})
    with pytest.raises(ConfigError, match=r"^overrides\.train\.epochs: "):
        p.for_dataset("x", {"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"^overrides\.train: must be a mapping"):
        p.for_dataset("x", {"train": 3})
    # a run without settings reads params.yaml as it is now
    assert settings_for_run("x").train.epochs == p.train.epochs
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"]["epochs"] = p.train.epochs + 1
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert settings_for_run("x").train.epochs == p.train.epochs + 1
    given = p.for_dataset("x")
    assert settings_for_run("x", given, {"train": {"epochs": 1}}).train.epochs == 1
    with pytest.raises(ConfigError, match="made for dataset 'x', not 'y'"):
        settings_for_run("y", given)


def test_prefect_yaml_entries_are_added_and_updated_keeping_the_others(project):
    from cellcast.flows.deploy import main
    from cellcast.pipeline.errors import ConfigError

    path = project / "prefect.yaml"
    path.write_text(
        yaml.safe_dump({"name": "mine", "deployments": [{"name": "other", "entrypoint": "x.py:f"}]}, sort_keys=False)
    )
    main(["load", "--prefect-yaml", str(path), "--work-pool", "p1"])
    main(["elecdemand", "--prefect-yaml"])  # the one beside params.yaml
    main(["load", "--prefect-yaml", str(path), "--work-pool", "p2", "--overrides", '{"train": {"epochs": 2}}'])
    doc = yaml.safe_load(path.read_text())
    assert doc["name"] == "mine"
    names = [d["name"] for d in doc["deployments"]]
    assert names == [
        "other",
        "train-elecdemand",
        "retrain-elecdemand",
        "forecast-elecdemand",
        "train-load",
        "retrain-load",
        "forecast-load",
    ]
    deps = {d["name"]: d for d in doc["deployments"]}
    assert deps["train-load"]["parameters"] == {"name": "load", "overrides": {"train": {"epochs": 2}}}
    assert deps["forecast-load"]["parameters"]["refresh"] is True and deps["forecast-load"]["work_pool"]["name"] == "p2"
    assert deps["train-elecdemand"]["parameters"] == {"name": "elecdemand"}  # never a copy of params.yaml
    assert deps["retrain-elecdemand"]["schedules"] == [] and deps["train-elecdemand"]["schedules"][0]["cron"]
    before = path.read_text()
    with pytest.raises(ConfigError, match=r"^overrides\.train\.epochs"):
        from cellcast.flows.deploy import yaml_entries

        yaml_entries("load", overrides={"train": {"epochs": -1}})
    with pytest.raises(SystemExit, match="overrides.nope: not a section"):
        main(["load", "--prefect-yaml", str(path), "--overrides", '{"nope": {}}'])
    assert path.read_text() == before  # nothing written on bad input


def test_the_committed_prefect_yaml_is_what_the_command_writes_for_the_default_dataset(project):
    from cellcast.flows.deploy import yaml_entries
    from cellcast.pipeline.config import load_params

    committed = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    dataset = load_params().dataset
    assert committed["deployments"] == yaml_entries(dataset)


def _epochs_logged(project: Path, after: float) -> list[str]:
    """The `epochs` param of the candidate runs started after `after` (the worker's runs, read from the project's
    MLflow store)."""
    from mlflow import MlflowClient

    from cellcast.pipeline.registry import tracking

    tracking.configure()
    client = MlflowClient()
    exp = client.get_experiment_by_name(tracking.experiment_name("load"))
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.start_time > {int(after * 1000)}")
    return sorted(r.data.params["epochs"] for r in runs if "epochs" in r.data.params)


@pytest.mark.integration
def test_prefect_deploy_all_and_a_worker_run_training_with_the_params_of_the_run(prefect_api, project, tiny_params):
    """A temp copy of the project: its prefect.yaml plus a user's dataset written into it by the command,
    `prefect deploy --all`, `prefect worker start`; the training deployment runs with only the dataset's name,
    and an edit of params.yaml after deploying reaches the next run without a redeploy."""
    from test_operations import _flow_runs, _series_csv, _work_pool

    from cellcast.flows.deploy import main
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.ingest import ingest_file

    shutil.copy(ROOT / "prefect.yaml", project / "prefect.yaml")
    p = yaml.safe_load(tiny_params.read_text())
    p["train"].update(cells=["rnn"], epochs=3)
    tiny_params.write_text(yaml.safe_dump(p, sort_keys=False))
    _series_csv(project / "load.csv", n=1200)
    ingest_file(
        settings=load_params().for_dataset("load"),
        path=str(project / "load.csv"),
        time_col="time",
        targets=["load"],
        features=["temp"],
    )
    main(["load", "--prefect-yaml", str(project / "prefect.yaml"), "--work-pool", "deploy-pool"])
    _work_pool("deploy-pool")
    _work_pool("cellcast")  # the committed entries' pool: `prefect deploy --all` deploys them too
    env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_LOGGING_LEVEL": "INFO"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store, where the worker runs the flows
    exe = Path(sys.executable).with_name("prefect")
    done = subprocess.run(
        [str(exe), "--no-prompt", "deploy", "--all"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    deps = {d["name"]: d for d in _deployments(prefect_api)}
    assert {"train-load", "retrain-load", "forecast-load", "train-elecdemand", "forecast-elecdemand"} <= set(deps)
    assert deps["train-load"]["parameters"] == {"name": "load"}
    assert [s["schedule"]["cron"] for s in deps["train-load"]["schedules"]] == ["0 3 * * 1"]

    log = open(project / "worker.log", "wb")
    worker = subprocess.Popen(
        [str(exe), "worker", "start", "--pool", "deploy-pool", "--type", "process"],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        first = _run_and_wait(exe, "cellcast-train/train-load", project, env, prefect_api, worker)
        assert first["parameters"] == {"name": "load"}
        t0 = time.time()
        p["train"]["epochs"] = 2  # edited after deploying; no redeploy
        tiny_params.write_text(yaml.safe_dump(p, sort_keys=False))
        _run_and_wait(exe, "cellcast-train/train-load", project, env, prefect_api, worker)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
    assert len(_flow_runs(prefect_api, "train-load", "COMPLETED")) == 2
    # the second run trained with the edited params.yaml: every candidate logged epochs=2
    assert set(_epochs_logged(project, t0)) == {"2"}, (project / "worker.log").read_text()[-3000:]
    assert "3" in _epochs_logged(project, 0)


def _deployments(api: str) -> list[dict]:
    import urllib.request

    req = urllib.request.Request(
        f"{api}/deployments/filter", data=b"{}", headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _run_and_wait(exe: Path, deployment: str, project: Path, env: dict, api: str, worker, timeout: float = 400):
    """`prefect deployment run` (no parameters) and wait for the worker to finish it; the flow run as JSON."""
    import urllib.request

    out = subprocess.run(
        [str(exe), "deployment", "run", deployment], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = next(ln.split()[-1] for ln in out.stdout.splitlines() if "UUID" in ln)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, (project / "worker.log").read_text()[-3000:]
        with urllib.request.urlopen(f"{api}/flow_runs/{run_id}", timeout=10) as r:
            run = json.loads(r.read())
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert run["state"]["type"] == "COMPLETED", (project / "worker.log").read_text()[-3000:]
            return run
        time.sleep(2)
    raise AssertionError(
        f"flow run {run_id} not finished in {timeout:.0f}s: {(project / 'worker.log').read_text()[-3000:]}"
    )
