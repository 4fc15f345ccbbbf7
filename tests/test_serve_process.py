"""`cellcast serve` as a person runs it, in its own process, on a registered champion: SIGTERM lets the request
in flight finish; several workers behind one port share the port and the Prometheus metrics."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from services import free_port

from cellcast.pipeline.engine.onnx_export import export_onnx
from cellcast.pipeline.modeling.model import ModelSpec, build

pytestmark = pytest.mark.integration  # the service as a process (SIGTERM, several workers)

VARS, LOOKBACK, HORIZON = ["load", "temp"], 24, 4


@pytest.fixture(scope="module")
def champion_project(tmp_path_factory):
    """A project folder whose embedded registry has a champion for dataset `toy`."""
    from conftest import ROOT

    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision

    d = tmp_path_factory.mktemp("serve-process")
    (d / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        tracking.configure(d)
        spec = ModelSpec(
            cell="gru",
            n_vars=2,
            target_idx=[0],
            lookback=LOOKBACK,
            horizon=HORIZON,
            hidden_size=8,
            rnn_steps=12,
            mean=[10.0, 5.0],
            std=[2.0, 1.0],
        )
        torch.manual_seed(0)
        path = export_onnx(
            build(spec), d / "m.onnx", {"variables": VARS, "targets": ["load"], "freq": "h", "dataset": "toy"}
        )
        with tracking.parent_run("toy"):
            with tracking.candidate_run("gru") as rid:
                uri = tracking.log_onnx_model(path, np.full((2, LOOKBACK, 2), 10, np.float32))
        version = tracking.register_version("toy-forecaster", uri, rid)
        tracking.apply_decision("toy-forecaster", version, Decision(True, "promoted by this test", {}))
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return d


def body() -> bytes:
    import json

    t = np.arange(LOOKBACK)
    return json.dumps(
        {
            "values": {"load": (10 + np.sin(t / 3)).tolist(), "temp": (5 + np.cos(t / 5)).tolist()},
            "timestamps": [f"2024-01-{1 + i // 24:02d}T{i % 24:02d}:00:00" for i in t],
        }
    ).encode()


def start(project, *args, env=None, names=("toy",)):
    """`cellcast serve NAMES --port P ARGS` in `project`, on its embedded store unless `env` names a tracking server;
    returns once /health answers 200: (process, url, port)."""
    port = free_port()
    given = env or {}
    env = {**os.environ, **given}
    if "MLFLOW_TRACKING_URI" not in given:
        env.pop("MLFLOW_TRACKING_URI", None)  # the project's embedded store
    with open(project / f"serve-{port}.log", "wb") as log:  # the child holds its own copy of the file
        proc = subprocess.Popen(
            [sys.executable, "-m", "cellcast", "serve", *names, "--port", str(port), *args],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"cellcast serve did not start: {(project / f'serve-{port}.log').read_text()[-2000:]}")
        time.sleep(0.3)


def samples(text: str) -> list[tuple[str, dict, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return int(head.split()[1]), rest


def test_sigterm_answers_the_request_in_flight_then_exits(champion_project):
    proc, url, port = start(champion_project)
    try:
        payload = body()
        half = len(payload) // 2
        # a slow client: the request is in flight (headers and half the body sent) when SIGTERM comes
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(
            f"POST /v1/forecast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload[:half]
        )
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the port closes: no new requests
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                time.sleep(0.1)
            except OSError:
                break
        else:
            raise AssertionError("the port still accepts connections after SIGTERM")
        assert proc.poll() is None, "exited with a request in flight"
        sock.sendall(payload[half:])
        status, answer = read_response(sock)
        sock.close()
        assert status == 200, answer
        assert b'"forecast"' in answer and b'"version":"1"' in answer
        # after a clean shutdown uvicorn re-raises the signal it handled: the command's stop (cellcast/stopping.py)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        log = (champion_project / f"serve-{port}.log").read_text()
        assert "Application shutdown complete" in log and "Finished server process" in log, log[-2000:]
        assert "stopped by SIGTERM: `cellcast serve`" in log, log[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_several_workers_share_the_port_and_the_metrics(champion_project, tmp_path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    proc, url, _ = start(champion_project, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        n = 12
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(n):  # a new connection each: the kernel spreads them over the workers
                r = httpx.post(f"{url}/v1/forecast", content=body(), headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text
            assert c.post("/v1/forecast", content=b"{", headers={"content-type": "application/json"}).status_code == 400
            pids = set()
            deadline = time.monotonic() + 60
            while len(pids) < 2 and time.monotonic() < deadline:  # each worker loaded the champion itself
                got = samples(httpx.get(f"{url}/metrics", timeout=10).text)
                pids = {
                    lb["pid"]
                    for name, lb, v in got
                    if name == "cellcast_model_info" and lb["version"] == "1" and v == 1
                }
                time.sleep(0.5)
            assert len(pids) == 2, got
            # whichever worker answers /metrics, the counts are every worker's
            for _ in range(3):
                got = samples(httpx.get(f"{url}/metrics", timeout=10).text)
                counts = {
                    lb["status"]: v
                    for name, lb, v in got
                    if name == "cellcast_requests_total" and lb["path"] == "/v1/forecast"
                }
                assert counts == {"200": n, "400": 1}, got
        proc.send_signal(signal.SIGTERM)
        # uvicorn's supervisor takes the signal, ends its workers and returns: the command exits 0
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
