"""Run a real server process for tests: start it in its own process group, wait for its health URL,
stop it (SIGTERM, then SIGKILL) afterwards. Used by the MLflow and Prefect server fixtures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def background_service(
    name: str,
    cmd: list[str],
    health_url: str,
    workdir: Path,
    env: dict,
    startup_timeout: float = 120,
    stop_timeout: float = 25,
) -> Iterator[subprocess.Popen]:
    """Yield the running process once `health_url` answers 200; its output goes to workdir/server.log."""
    from tiers import require_integration

    require_integration(f"a {name} server")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "server.log", "wb")
    # own process group: a server's worker processes die with it
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {workdir / 'server.log'}")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {health_url} in {startup_timeout:.0f}s")
            time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
