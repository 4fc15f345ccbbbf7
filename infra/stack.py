"""The whole stack on 127.0.0.1 for a person, started the way its users start each part (`make serve-stack`,
`make stop-stack`; docs/operations.md):

    MLflow server     mlflow server (backend: the project's store .cellcast/mlflow.db, artifacts beside it)
    Prefect server    prefect server start (its own PREFECT_HOME under the stack folder)
    work pool         prefect work-pool create POOL --type process
    deployments       python -m cellcast.flows.deploy NAME --work-pool POOL   (train weekly, retrain when the
                      monitor starts it, forecast hourly; the runs read params.yaml when they start)
    worker            prefect worker start --pool POOL   (runs the flows in the project folder)
    service           cellcast serve NAME   (once the registry has a champion; without one, the stack starts
                      the training deployment through the worker and waits for it)

    python infra/stack.py start [NAME] [--prefect-port 4200 --mlflow-port 5000 --serve-port 8000 ...]
    python infra/stack.py status
    python infra/stack.py stop

Logs, pids and an env file (`source .stack/env` points the CLI at the stack) live in the stack folder
(default `.stack/`, git-ignored). Every process gets its own session: closing the terminal leaves them
running; `stop` ends each process tree (SIGTERM, then SIGKILL after a grace period), newest first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
ORDER = ("mlflow", "prefect", "worker", "service")  # start order; stop goes backwards
BIN = Path(sys.executable).parent


def _project(arg: str | None) -> Path:
    if arg:
        return Path(arg).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").is_file():
            return d
    return here


def _say(msg: str) -> None:
    print(f"stack: {msg}", flush=True)


# ---------------------------------------------------------------- processes


def _pidfile(folder: Path, name: str) -> Path:
    return folder / "pids" / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _running(folder: Path) -> dict[str, int]:
    out = {}
    for name in ORDER:
        p = _pidfile(folder, name)
        if p.is_file():
            pid = int(p.read_text().split()[0])
            if _alive(pid):
                out[name] = pid
    return out


def _spawn(folder: Path, name: str, cmd: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "pids").mkdir(parents=True, exist_ok=True)
    log = open(folder / "logs" / f"{name}.log", "ab")
    log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
    log.flush()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    _pidfile(folder, name).write_text(f"{proc.pid}\n")
    return proc


def _stat(d: Path) -> tuple[int, int] | None:
    """(parent pid, session id) of the process at /proc/PID, None when it is gone or unreadable."""
    try:
        f = (d / "stat").read_text().split(")")[-1].split()
        return int(f[1]), int(f[3])
    except (OSError, ValueError, IndexError):
        return None


def _tree(pid: int) -> list[int]:
    """pid, every descendant, and every process of the session pid leads (each stack process is started in a
    session of its own): a flow run the worker started is found even after the worker is gone and the run was
    handed to init. Read from /proc, so no extra package is needed."""
    kids: dict[int, list[int]] = {}
    session: list[int] = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(d)) is not None:
            kids.setdefault(st[0], []).append(int(d.name))
            if st[1] == pid:
                session.append(int(d.name))
    out, todo = [], [pid, *session]
    while todo:
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo.extend(kids.get(p, []))
    return out


def _signal(procs: list[int], sig: int) -> None:
    for q in procs:
        try:
            os.kill(q, sig)
        except ProcessLookupError:
            pass


def _stop_one(folder: Path, name: str, grace: float) -> str | None:
    p = _pidfile(folder, name)
    if not p.is_file():
        return None
    pid = int(p.read_text().split()[0])
    if not _alive(pid):
        p.unlink()
        return f"{name}: not running"
    procs = _tree(pid)
    _signal(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(q) for q in procs):
        time.sleep(0.3)
        # what a process started while the others stopped (a worker's flow run) is stopped too
        new = [q for q in _tree(pid) if q not in procs]
        _signal(new, signal.SIGTERM)
        procs += new
    killed = [q for q in procs if _alive(q)]
    _signal(killed, signal.SIGKILL)
    p.unlink()
    return f"{name}: stopped (pid {pid}" + (f", {len(killed)} killed after {grace:.0f}s)" if killed else ")")


# ---------------------------------------------------------------- waiting


def _open(req: str | urllib.request.Request, timeout: float) -> tuple[int, bytes]:
    """(status, body) of one HTTP request; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def _get(url: str, timeout: float = 3) -> tuple[int, bytes]:
    return _open(url, timeout)


def _post(url: str, body: dict, timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    return _open(req, timeout)


def _wait(
    what: str,
    check,
    timeout: float,
    procs: Sequence[subprocess.Popen] = (),
    folder: Path | None = None,
    every: float = 0.5,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: the process exited with {proc.returncode}" + _log_hint(folder, what))
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f}s" + _log_hint(folder, what))
        time.sleep(every)


def _log_hint(folder: Path | None, what: str) -> str:
    name = what.split()[0]
    if folder is None or not (folder / "logs" / f"{name}.log").is_file():
        return ""
    tail = (folder / "logs" / f"{name}.log").read_text(errors="replace").strip().splitlines()[-5:]
    return f"; see {folder / 'logs' / (name + '.log')}: " + " | ".join(tail)


def _champion(mlflow_url: str, model: str) -> str | None:
    code, body = _get(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion")
    return json.loads(body)["model_version"]["version"] if code == 200 else None


def _worker_online(api: str, pool: str) -> bool:
    code, body = _post(f"{api}/work_pools/{pool}/workers/filter", {})
    return code == 200 and any(w.get("status") == "ONLINE" for w in json.loads(body))


def _run(cmd: list[str], cwd: Path, env: dict, what: str) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if res.returncode:
        raise RuntimeError(f"{what} failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-800:]}")
    return res.stdout


# ---------------------------------------------------------------- start / stop / status


@dataclass
class _Stack:
    """One `start`: where it runs, the addresses and environments of its parts, and the parts started so far
    (stopped newest first when a later step fails)."""

    a: argparse.Namespace
    project: Path
    folder: Path
    dataset: str
    api: str
    mlflow_url: str
    base: dict  # the servers' environment
    client: dict  # the worker's, the service's and the CLI's: pointed at the two servers
    started: list[str] = field(default_factory=list)
    model: str = ""


def start(a) -> int:
    project = _project(a.project)
    folder = Path(a.dir if Path(a.dir).is_absolute() else project / a.dir)
    up = _running(folder)
    if up:
        _say(f"already running ({', '.join(f'{k} pid {v}' for k, v in up.items())}): `make stop-stack` first")
        return 2
    st = _stack(a, project, folder)
    try:
        _start_servers(st)
        deploy, champion = _deploy(st)
        _crash_unfinished(st)
        wk = _start_worker(st)
        if champion is None:
            if a.no_train:
                _say(
                    f"no champion for {st.model}: the service is not started (run the training deployment, then "
                    f"`make serve-stack` again)"
                )
                _write_env(folder, st.api, st.mlflow_url, None)
                return 0
            _train_first_champion(st, wk, deploy)
        _say(f"champion {st.model} v{_champion(st.mlflow_url, st.model)}")
        _start_service(st)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        _say(f"error: {e}")
        for name in reversed(st.started):
            msg = _stop_one(folder, name, a.grace)
            if msg:
                _say(msg)
        return 1
    _say(f"up. `source {folder / 'env'}` points cellcast, prefect and mlflow at it; `make stop-stack` stops it")
    return 0


def _stack(a, project: Path, folder: Path) -> _Stack:
    """The addresses and environments of one start; the project's store folder made."""
    dataset = a.dataset or _default_dataset(project)
    api = f"http://{HOST}:{a.prefect_port}/api"
    mlflow_url = f"http://{HOST}:{a.mlflow_port}"
    store = project / ".cellcast"
    store.mkdir(parents=True, exist_ok=True)
    base = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(folder / "prefect"),
        "PYTHONUNBUFFERED": "1",
    }
    for k in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):  # the stack's own, below; never another's
        base.pop(k, None)
    client = {**base, "PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": mlflow_url}
    (folder / "prefect").mkdir(parents=True, exist_ok=True)
    return _Stack(a, project, folder, dataset, api, mlflow_url, base, client)


def _start_servers(st: _Stack) -> None:
    """The MLflow and Prefect servers, started together (each takes 10-40 s here), then awaited."""
    a, store = st.a, st.project / ".cellcast"
    backend = a.backend_store_uri or f"sqlite:///{store / 'mlflow.db'}"
    ml = _spawn(
        st.folder,
        "mlflow",
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            HOST,
            "--port",
            str(a.mlflow_port),
            "--workers",
            "1",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(a.artifacts or store / "mlartifacts"),
        ],
        st.project,
        {**st.base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    st.started.append("mlflow")
    # the UI asks the API at the port it really has (else it calls :4200 and shows "Can't connect")
    pf = _spawn(
        st.folder,
        "prefect",
        [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(a.prefect_port)],
        st.project,
        {**st.base, "PREFECT_UI_API_URL": st.api, "PREFECT_SERVER_UI_API_URL": st.api},
    )
    st.started.append("prefect")
    _say(f"MLflow server and Prefect server starting (logs: {st.folder / 'logs'})")
    _wait("mlflow server", lambda: _get(f"{st.mlflow_url}/health")[0] == 200, a.timeout, [ml], st.folder)
    _say(f"MLflow server  {st.mlflow_url}")
    _wait("prefect server", lambda: _get(f"{st.api}/health")[0] == 200, a.timeout, [pf], st.folder)
    _say(f"Prefect server http://{HOST}:{a.prefect_port}")


def _deploy(st: _Stack) -> tuple[list[str], str | None]:
    """The work pool and the dataset's deployments; returns the deploy command and the champion's version, if
    any (without one, the forecast schedule is deployed paused: its runs would have nothing to serve)."""
    a = st.a
    _run(
        [str(BIN / "prefect"), "work-pool", "create", a.pool, "--type", "process", "--overwrite"],
        st.project,
        st.client,
        "prefect work-pool create",
    )
    st.model = f"{st.dataset}{_model_suffix(st.project)}"
    deploy = [
        sys.executable,
        "-m",
        "cellcast.flows.deploy",
        st.dataset,
        "--work-pool",
        a.pool,
        "--train-cron",
        a.train_cron,
        "--project",
        str(st.project),
    ]
    deploy += ["--forecast-every", str(a.forecast_every)] if a.forecast_every else ["--forecast-cron", a.forecast_cron]
    champion = _champion(st.mlflow_url, st.model)
    _run(deploy + ([] if champion else ["--forecast-paused"]), st.project, st.client, "cellcast.flows.deploy")
    _say(
        f"deployments cellcast-train/train-{st.dataset} ({a.train_cron}), cellcast-train/retrain-{st.dataset} "
        f"(the monitor's), cellcast-forecast/forecast-{st.dataset} "
        f"({f'every {a.forecast_every:g} s' if a.forecast_every else a.forecast_cron}"
        f"{'' if champion else ', paused until a champion exists'}) on work pool '{a.pool}'"
    )
    return deploy, champion


def _crash_unfinished(st: _Stack) -> None:
    """Flow runs a previous stack left Pending or Running (stopped, or killed, while they ran: the worker may be
    gone before it reports the crash) marked Crashed, before a worker starts: none of them can be running then.
    Left as they are, each holds its deployment's only concurrency slot and no later run of it starts: no
    forecast, no retrain; marked Crashed, the monitor sees its retrain crashed and starts another when due."""
    code, body = _post(
        f"{st.api}/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING"]}}}}
    )
    if code != 200:
        raise RuntimeError(f"prefect server: flow runs not listed ({code}): {body[:300]!r}")
    runs = json.loads(body)
    for run in runs:
        state = {"type": "CRASHED", "message": "the stack stopped while it ran; marked Crashed by the next start"}
        code, body = _post(f"{st.api}/flow_runs/{run['id']}/set_state", {"state": state, "force": True})
        if code not in (200, 201):
            raise RuntimeError(f"prefect server: flow run {run['name']} not marked Crashed ({code}): {body[:300]!r}")
    if runs:
        _say(
            f"{len(runs)} flow run(s) the last stack left unfinished marked Crashed: "
            + ", ".join(f"{r['name']} ({r['state_name']})" for r in runs)
        )


def _start_worker(st: _Stack) -> subprocess.Popen:
    """A process worker on the pool, running the flows in the project folder; awaited until online."""
    pool = st.a.pool
    wk = _spawn(
        st.folder,
        "worker",
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", f"cellcast-{pool}"],
        st.project,
        st.client,
    )
    st.started.append("worker")
    _wait("worker", lambda: _worker_online(st.api, pool), st.a.timeout, [wk], st.folder, every=1)
    _say(f"worker online on '{pool}', running flows in {st.project}")
    return wk


def _train_first_champion(st: _Stack, wk: subprocess.Popen, deploy: list[str]) -> None:
    """No champion yet: the training deployment run through the worker and awaited, then the forecast schedule
    deployed again, unpaused."""
    a = st.a
    out = _run(
        [
            str(BIN / "prefect"),
            "deployment",
            "run",
            f"cellcast-train/train-{st.dataset}",
            "--params",
            json.dumps({"reason": "no champion yet: the stack's first start"}),
            "--tag",
            "first-champion",
        ],
        st.project,
        st.client,
        "prefect deployment run",
    )
    run_id = next((ln.split()[-1] for ln in out.splitlines() if "UUID" in ln), "?")
    _say(
        f"no champion for {st.model} yet: training through the worker "
        f"(http://{HOST}:{a.prefect_port}/runs/flow-run/{run_id}); waiting up to {a.train_timeout:.0f}s"
    )
    _wait(
        "worker training",
        lambda: _champion(st.mlflow_url, st.model) is not None,
        a.train_timeout,
        [wk],
        st.folder,
        every=3,
    )
    _run(deploy, st.project, st.client, "cellcast.flows.deploy")
    _say(f"forecast schedule of forecast-{st.dataset} resumed")


def _start_service(st: _Stack) -> None:
    """`cellcast serve NAME` on the champion, awaited; then the env file that points the CLI at the stack."""
    a = st.a
    sv = _spawn(
        st.folder,
        "service",
        [sys.executable, "-m", "cellcast", "serve", st.dataset, "--host", HOST, "--port", str(a.serve_port)],
        st.project,
        st.client,
    )
    st.started.append("service")
    serve_url = f"http://{HOST}:{a.serve_port}"
    _wait("service", lambda: _get(f"{serve_url}/health")[0] == 200, a.timeout, [sv], st.folder)
    _say(f"forecasting service {serve_url} (GET /model, POST /v1/forecast)")
    _write_env(st.folder, st.api, st.mlflow_url, serve_url)


def _default_dataset(project: Path) -> str:
    from cellcast.pipeline.config import load_params

    return load_params(project / "params.yaml").dataset


def _model_suffix(project: Path) -> str:
    from cellcast.pipeline.config import load_params

    return load_params(project / "params.yaml").registry.model_suffix


def _write_env(folder: Path, api: str, mlflow_url: str, serve_url: str | None) -> None:
    lines = [
        f"export PREFECT_API_URL={api}",
        f"export MLFLOW_TRACKING_URI={mlflow_url}",
        f"export PREFECT_HOME={folder / 'prefect'}",
    ]
    if serve_url:
        lines.append(f"export CELLCAST_SERVICE_URL={serve_url}")
    (folder / "env").write_text("\n".join(lines) + "\n")


def stop(a) -> int:
    folder = Path(a.dir if Path(a.dir).is_absolute() else _project(a.project) / a.dir)
    said = [m for name in reversed(ORDER) if (m := _stop_one(folder, name, a.grace))]
    for m in said:
        _say(m)
    if not said:
        _say(f"nothing to stop ({folder / 'pids'} is empty)")
    return 0


def status(a) -> int:
    folder = Path(a.dir if Path(a.dir).is_absolute() else _project(a.project) / a.dir)
    up = _running(folder)
    for name in ORDER:
        _say(f"{name}: " + (f"running, pid {up[name]}" if name in up else "not running"))
    return 0 if up else 3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("dataset", nargs="?", default=None, help="default: params.yaml `dataset`")
    p.add_argument("--project", default=None, help="the folder holding params.yaml (default: found from here)")
    p.add_argument("--dir", default=".stack", help="logs, pids, env file (relative: to the project)")
    p.add_argument("--prefect-port", type=int, default=4200)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--serve-port", type=int, default=8000)
    p.add_argument("--pool", default="cellcast", help="the process work pool")
    p.add_argument("--train-cron", default="0 3 * * 1")
    p.add_argument("--forecast-cron", default="5 * * * *")
    p.add_argument("--forecast-every", type=float, default=None, metavar="SECONDS", help="instead of the cron")
    p.add_argument("--backend-store-uri", default=None, help="MLflow's store (default: the project's sqlite file)")
    p.add_argument("--artifacts", default=None, help="MLflow's artifact folder (default: .cellcast/mlartifacts)")
    p.add_argument("--no-train", action="store_true", help="no champion: do not train one, start no service")
    p.add_argument("--timeout", type=float, default=180, help="seconds each server may take to answer")
    p.add_argument("--train-timeout", type=float, default=1800, help="seconds the first training may take")
    p.add_argument("--grace", type=float, default=30, help="seconds between SIGTERM and SIGKILL on stop")
    a = p.parse_args(argv)
    return {"start": start, "stop": stop, "status": status}[a.action](a)


if __name__ == "__main__":
    sys.exit(main())
