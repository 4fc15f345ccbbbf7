"""Start a real `prefect server` on 127.0.0.1 for tests (its own PREFECT_HOME and sqlite database)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mlflow_server import free_port


def prefect_env(home: Path, api_url: str | None = None) -> dict:
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "PREFECT_UI_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextmanager
def prefect_server(workdir: Path, startup_timeout: float = 180) -> Iterator[str]:
    """Yield the API URL (http://127.0.0.1:PORT/api); the server is stopped afterwards."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    exe = Path(sys.executable).with_name("prefect")
    env = {**os.environ, **prefect_env(workdir / "home")}
    env.pop("PREFECT_API_URL", None)
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen([str(exe), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}; see {workdir / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not answer {api}/health in {startup_timeout:.0f}s")
            time.sleep(0.5)
        yield api
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
