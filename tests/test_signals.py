"""A `cellcast` process stopped by a signal (a scheduler's SIGTERM, Ctrl-C) leaves nothing it started running: not
the temporary Prefect server Prefect starts for a flow when no PREFECT_API_URL is set, not a worker. It exits
128 + the signal's number with one line saying so (docs/operations.md "Stopping a command")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import one_cell
from prefect_server import prefect_env

pytestmark = pytest.mark.integration

SERVER = "prefect.server.api.server:create_app"  # the temporary server's uvicorn command line


def _wait_for(what, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    end = time.monotonic() + timeout
    while not what():
        if proc.poll() is not None:
            pytest.fail(f"cellcast exited {proc.returncode} before it was stopped:\n{log.read_text()[-3000:]}")
        if time.monotonic() > end:
            pytest.fail(f"not seen within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _running(p: psutil.Process) -> bool:
    """Not a zombie: an exited child whose parent is gone waits for this machine's init to reap it, holding no
    port and no memory."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:200]}"
    except psutil.Error:
        return str(p.pid)


def _stop_in_flow(project: Path, signum: int) -> tuple[int, str, list[psutil.Process]]:
    """`cellcast train` in a session of its own on an ephemeral Prefect server (a PREFECT_HOME of its own, no
    PREFECT_API_URL); once its flow run began, `signum` to the command's process alone (as `kill PID` or pkill
    would: not to its group). Returns its exit code, its output and the processes it had started, which are
    killed here afterwards whatever the test found (a failing run must not leave them to the next test)."""
    env = {**os.environ, **prefect_env(project / "prefect"), "PREFECT_LOGGING_LEVEL": "INFO"}
    env.pop("PREFECT_API_URL", None)
    log = project / "cellcast.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cellcast", "train", "elecdemand"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    me = psutil.Process(proc.pid)
    tree: list[psutil.Process] = []
    try:
        # the server up (its process a child of the command) and the flow run inside a task (validate, seconds of
        # Great Expectations): Prefect's engine handles SIGTERM itself while a flow runs, and that is where the
        # server used to be left behind. (A signal as a task run starts takes another way out of Prefect.)
        _wait_for(lambda: "Task run 'ingest-" in log.read_text(), 300, proc, log)
        time.sleep(1)
        tree = me.children(recursive=True)
        assert any(SERVER in " ".join(p.cmdline()) for p in tree), [p.cmdline() for p in tree]
        os.kill(proc.pid, signum)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 60 s after {signal.Signals(signum).name}:\n{log.read_text()[-3000:]}")
        # Prefect's atexit stop waits up to 5 s for its server before killing it: the command's exit covers it
        _, alive = psutil.wait_procs(tree, timeout=2)
        return code, log.read_text(), [p for p in alive if _running(p)]
    finally:
        for p in [me, *tree]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_a_stopped_train_leaves_no_process_behind(project, tiny_params, signum):
    one_cell(tiny_params)
    code, out, alive = _stop_in_flow(project, signum)
    name = signal.Signals(signum).name
    assert not alive, f"left running after {name}: {[_describe(p) for p in alive]}"
    assert code == 128 + signum, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith(f"stopped by {name}: `cellcast train`")]
    assert len(lines) == 1, out[-3000:]
