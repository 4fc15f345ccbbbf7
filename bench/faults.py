"""Faults tried for real, for RELIABILITY.md: the `cellcast` command in processes of its own against a real
Prefect server, the embedded MLflow store or a real `mlflow server`, and the real forecasting service.

    .venv/bin/python bench/faults.py [--only kill,server,onnx,twins,fuzz] [--out bench/results/faults.jsonl]

kill    kill -9 of `cellcast train` as each stage of the training flow begins, then a rerun
server  the tracking server killed as each stage begins (or absent), then restarted and a rerun
onnx    a corrupted ONNX file made champion while `cellcast serve` answers a steady stream of requests
twins   two `cellcast train` of one dataset started together
fuzz    schemathesis against `cellcast serve` of a trained champion (needs .venv-schemathesis)

Each trial prints one JSON line: what was done, what the user saw (exit code, error line), and what was lost
(the input's hash, registered versions, runs left RUNNING).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from mlflow_server import free_port, mlflow_server  # noqa: E402
from prefect_server import prefect_env, prefect_server  # noqa: E402

PY = sys.executable
TINY = {
    "epochs": 3,
    "time_budget_s": 20,
    "hidden_size": 8,
    "batch_size": 64,
    "max_train_windows": 1024,
    "lr": 0.01,
    "rnn_steps": 12,
    "patience": 2,
    "device": "cpu",
    "cells": ["rnn", "gru"],
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_project(base: Path, retry_seconds: float = 4) -> Path:
    import numpy as np
    import pandas as pd
    import yaml

    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.ingest import ingest_file

    base.mkdir(parents=True)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["train"].update(TINY)
    p["registry"]["retry_seconds"] = retry_seconds
    (base / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    n, rng = 1200, np.random.default_rng(0)
    t = np.arange(n)
    pd.DataFrame(
        {
            "when": pd.date_range("2024-03-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M"),
            "kw": 50 + 10 * np.sin(2 * np.pi * t / 24) + np.cumsum(rng.standard_normal(n)),
            "temp": 15 + 5 * np.sin(2 * np.pi * t / 24 + 1),
        }
    ).to_csv(base / "plant.csv", index=False)
    cwd = os.getcwd()
    os.chdir(base)
    try:
        ingest_file(
            base / "plant.csv",
            time_col="when",
            targets=["kw"],
            features=["temp"],
            settings=load_params(base / "params.yaml").for_dataset("plant"),
        )
    finally:
        os.chdir(cwd)
    return base


def start(cwd: Path, args: list[str], env: dict, out: str) -> tuple[subprocess.Popen, Path]:
    path = cwd / out
    f = open(path, "w")
    proc = subprocess.Popen(
        [PY, "-m", "cellcast", *args], cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc.t0 = time.monotonic()
    return proc, path


def finish(proc: subprocess.Popen, path: Path, timeout: float = 600) -> dict:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = path.read_text()
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    return {
        "exit": proc.returncode,
        "seconds": round(time.monotonic() - proc.t0, 1),
        "error": errors[-1] if errors else None,
        "tracebacks": text.count("Traceback"),
        "lines": len(text.splitlines()),
        "resumed": "resuming after epoch" in text,
        "reaped": len(re.findall(r"left RUNNING by a process that is gone", text)),
        "retry_lines": len(re.findall(r"; retry \d+/\d+ in", text)),
        "summary": [ln for ln in text.splitlines() if ln.startswith(("decision:", "best candidate:"))],
    }


def wait_for(cond, proc: subprocess.Popen | None, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def in_output(path: Path, pattern: str):
    rx = re.compile(pattern)
    return lambda: bool(rx.search(path.read_text()))


def store(project: Path, url: str | None = None):
    from mlflow import MlflowClient

    uri = url or f"sqlite:///{project / '.cellcast' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def registry_state(client) -> dict:
    exp = client.get_experiment_by_name("cellcast/plant")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    try:
        versions = sorted(int(v.version) for v in client.search_model_versions("name = 'plant-forecaster'"))
    except Exception:  # noqa: BLE001
        versions = []
    try:
        champion = int(client.get_model_version_by_alias("plant-forecaster", "champion").version)
    except Exception:  # noqa: BLE001
        champion = None
    status = {}
    for r in runs:
        status[r.info.status] = status.get(r.info.status, 0) + 1
    return {"versions": versions, "champion": champion, "runs": status}


def parent_running(client):
    def cond():
        exp = client.get_experiment_by_name("cellcast/plant")
        if exp is None:
            return False
        return any(
            "mlflow.parentRunId" not in r.data.tags
            for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
        )

    return cond


# the moment each stage of the training flow begins, as the output (or the store) shows it
def stage_marker(stage: str, out: Path, client):
    done = r"Task run '{}[^']*' - Finished in state Completed"
    return {
        "check-tracking": in_output(out, r"Beginning flow run"),
        "ingest": in_output(out, done.format("check-tracking")),
        "validate": in_output(out, done.format("ingest")),
        "window": in_output(out, done.format("validate")),
        "baselines": in_output(out, done.format("window")),
        "train": in_output(out, r"epoch 1: train"),
        "assess": in_output(out, done.format("train-")),
        "track-and-promote": parent_running(client),
    }[stage]


STAGES = ["check-tracking", "ingest", "validate", "window", "baselines", "train", "assess", "track-and-promote"]


def trial_kill(work: Path, env: dict, stage: str) -> dict:
    proj = make_project(work / f"kill-{stage}")
    before = sha(proj / "plant.csv")
    client = store(proj)
    proc, out = start(proj, ["train", "plant"], env, "killed.txt")
    hit = wait_for(stage_marker(stage, out, client), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    after_kill = registry_state(client) if (proj / ".cellcast" / "mlflow.db").exists() else {}
    rerun = finish(*start(proj, ["train", "plant"], env, "rerun.txt"))
    state = registry_state(client)
    return {
        "fault": "kill -9",
        "stage": stage,
        "hit": hit,
        "after_kill": after_kill,
        "rerun": rerun,
        "after_rerun": state,
        "prefect_run_of_killed": prefect_state(proc.pid),
        "input_unchanged": sha(proj / "plant.csv") == before,
    }


def prefect_state(pid: int) -> str | None:
    """The state Prefect shows for the flow run of process `pid` (Crashed once a rerun found it gone)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        runs = [r for r in c.read_flow_runs() if f"cellcast.pid={pid}" in r.tags]
    return runs[0].state.type.value if runs else None


def trial_server(work: Path, env: dict, stage: str) -> dict:
    proj = make_project(work / f"server-{stage}")
    before = sha(proj / "plant.csv")
    mwork, port = work / f"mlflow-{stage}", free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "MLFLOW_TRACKING_URI": url}
    client = store(proj, url)
    result = {"fault": "tracking server killed", "stage": stage}
    if stage == "before start":
        first = finish(*start(proj, ["train", "plant"], env, "down.txt"))
        killed_after = None
    else:
        with mlflow_server(mwork, port=port):
            server = mlflow_server.process
            proc, out = start(proj, ["train", "plant"], env, "down.txt")
            result["hit"] = wait_for(stage_marker(stage, out, client), proc)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            killed_at = time.monotonic()
            first = finish(proc, out)
            killed_after = round(time.monotonic() - killed_at, 1)
    result.update({"run": first, "exit_after_kill_s": killed_after})
    with mlflow_server(mwork, port=port):
        result["rerun"] = finish(*start(proj, ["train", "plant"], env, "rerun.txt"))
        result["after_rerun"] = registry_state(client)
    result["input_unchanged"] = sha(proj / "plant.csv") == before
    return result


def trial_twins(work: Path, env: dict) -> dict:
    proj = make_project(work / "twins")
    procs = [start(proj, ["train", "plant"], env, f"twin{i}.txt") for i in (1, 2)]
    res = [finish(*p) for p in procs]
    waited = sum("is being trained by process" in (proj / f"twin{i}.txt").read_text() for i in (1, 2))
    return {
        "fault": "two trains of one dataset at once",
        "runs": res,
        "waited": waited,
        "after": registry_state(store(proj)),
    }


def _load(url: str, body: dict, stop: threading.Event, results: list) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            try:
                r = c.post("/v1/forecast", json=body)
                results.append((r.status_code, r.json().get("model", {}).get("version")))
            except Exception as e:  # noqa: BLE001
                results.append((repr(e), None))


def _serve(proj: Path, env: dict, port: int, out: str):
    proc, path = start(proj, ["serve", "plant", "--port", str(port), "--poll-seconds", "1"], env, out)
    ok = wait_for(lambda: _health(port), proc, timeout=120)
    if not ok:
        raise RuntimeError(path.read_text()[-3000:])
    return proc, path


def _health(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except Exception:  # noqa: BLE001
        return False


def _request_body(proj: Path) -> dict:
    import pandas as pd

    df = pd.read_parquet(proj / "data" / "plant" / "validated.parquet")
    lookback = int(json.loads((proj / "data" / "plant" / "windows.json").read_text())["lookback"])
    rows = df.iloc[-lookback:]
    return {
        "timestamps": [t.isoformat() for t in rows["timestamp"]],
        "values": {c: rows[c].tolist() for c in ("kw", "temp")},
    }


def trial_onnx(work: Path, env: dict) -> dict:
    import httpx

    proj = make_project(work / "onnx")
    first = finish(*start(proj, ["train", "plant"], env, "train1.txt"))
    client = store(proj)
    # a second version of the same model, registered as a new version, then its file corrupted in the store
    v1 = client.get_model_version("plant-forecaster", "1")
    # v2: a copy of v1's artifacts registered as a new version, so corrupting it leaves v1 whole
    src = Path(v1.source.replace("file://", ""))
    dst = src.parent / (src.name + "-v2copy")
    shutil.copytree(src, dst)
    onnx_file = next(dst.rglob("*.onnx"))
    v2 = client.create_model_version("plant-forecaster", source=dst.as_uri(), run_id=v1.run_id)
    port = free_port()
    proc, out = _serve(proj, env, port, "serve.txt")
    body = _request_body(proj)
    results, stop = [], threading.Event()
    threads = [threading.Thread(target=_load, args=(f"http://127.0.0.1:{port}", body, stop, results)) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(3)
    onnx_file.write_bytes(onnx_file.read_bytes()[:200] + b"corrupted" * 10)  # truncated + garbage
    client.set_registered_model_alias("plant-forecaster", "champion", str(v2.version))
    seen = wait_for(
        lambda: "version" in str(httpx.get(f"http://127.0.0.1:{port}/model", timeout=5).json().get("last_error")),
        proc,
        timeout=60,
    )
    model = httpx.get(f"http://127.0.0.1:{port}/model", timeout=5).json()
    time.sleep(3)
    client.set_registered_model_alias("plant-forecaster", "champion", "1")  # the operator rolls back
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    codes = {}
    for code, version in results:
        codes[f"{code} v{version}"] = codes.get(f"{code} v{version}", 0) + 1
    return {
        "fault": "corrupted ONNX made champion while serving",
        "train": first["exit"],
        "noticed": seen,
        "serving_version": model.get("version"),
        "last_error": model.get("last_error"),
        "requests": codes,
        "service_log_errors": [ln[:200] for ln in out.read_text().splitlines() if "not swapped in" in ln],
    }


def trial_fuzz(work: Path, env: dict, examples: int) -> dict:
    st = ROOT / ".venv-schemathesis" / "bin" / "schemathesis"
    if not st.exists():
        return {"fault": "schemathesis", "skipped": "no .venv-schemathesis (make fuzz-venv)"}
    proj = make_project(work / "fuzz")
    finish(*start(proj, ["train", "plant"], env, "train.txt"))
    port = free_port()
    proc, out = _serve(proj, {**env, "CELLCAST_API_TOKEN": "fuzz"}, port, "serve.txt")
    try:
        r = subprocess.run(
            [
                str(st),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "-H",
                "Authorization: Bearer fuzz",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                str(examples),
                "--seed",
                "11",
                "--workers",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=work,
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    text = r.stdout + r.stderr
    m = re.search(r"(\d+) generated, (\d+) passed", text)
    fails = re.findall(r"^\s*❌ (.+)$", text, re.M)
    return {
        "fault": "schemathesis",
        "exit": r.returncode,
        "generated": m and int(m.group(1)),
        "passed": m and int(m.group(2)),
        "failures": fails[:10],
        "server_5xx": text.count("Server error"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="kill,server,onnx,twins,fuzz")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--server-stages", default="before start,ingest,train,track-and-promote")
    ap.add_argument("--fuzz-examples", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "faults.jsonl"))
    a = ap.parse_args()
    only = set(a.only.split(","))
    stages = a.stages.split(",")
    work = Path(tempfile.mkdtemp(prefix="cellcast-faults-"))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with prefect_server(work / "prefect") as api:
        env = {
            **os.environ,
            **prefect_env(work / "client", api),
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(work / "client")})  # this process's queries
        env.pop("MLFLOW_TRACKING_URI", None)
        trials = []
        if "kill" in only:
            trials += [lambda s=s: trial_kill(work, env, s) for s in stages]
        if "server" in only:
            trials += [lambda s=s: trial_server(work, env, s) for s in a.server_stages.split(",")]
        if "twins" in only:
            trials.append(lambda: trial_twins(work, env))
        if "onnx" in only:
            trials.append(lambda: trial_onnx(work, env))
        if "fuzz" in only:
            trials.append(lambda: trial_fuzz(work, env, a.fuzz_examples))
        with open(out, "a") as f:
            for trial in trials:
                try:
                    res = trial()
                except Exception as e:  # noqa: BLE001 - a trial that breaks is a finding too
                    res = {"trial_error": repr(e)[:500]}
                res["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                print(json.dumps(res), flush=True)
                f.write(json.dumps(res) + "\n")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
