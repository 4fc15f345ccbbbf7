"""Twenty models in one service process against one process per model: memory, and p50/p99 latency at
concurrency 1 and 4. Bounded: a few minutes on 2 cores.

    .venv/bin/python bench/fleet.py [--models 20] [--requests 600] [--out bench/results/fleet-cpu.jsonl]

The models: distinct small recurrent models (GRU / LSTM / RNN, hidden 8-40, lookback 24-96, 1-3 variables,
horizon 6-24), exported to ONNX from freshly initialised weights: what a forecast costs and what a loaded model
holds do not depend on the weights' values. Each side serves them on 127.0.0.1 with the real app (create_app on
local files, no registry; the live log on, as by default, in a temporary folder):
- fleet: one process, `create_app([20 settings])`, every model loaded at start (serve.load: eager);
- single: 20 processes, `create_app(settings)` each, one port each.
Then the same client (keep-alive sockets, prepared bodies: bench/serve_load.py's Conn) sends `--requests`
forecasts at concurrency 1, then 4, round-robin over the models, and records each request's time. Memory: each
server process's RSS and PSS (/proc/PID/smaps_rollup: shared pages divided among the processes sharing them)
after the load. The two sides run one after the other, never at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_load import Conn, free_port, request_body  # noqa: E402  # the path above first

CELLS = ("gru", "lstm", "rnn")


def make_models(d: Path, n: int) -> list[dict]:
    """n distinct small models -> [{dataset, path, lookback, variables, freq}]."""
    import torch

    from cellcast.pipeline.engine.onnx_export import export_onnx
    from cellcast.pipeline.modeling.model import ModelSpec, build

    out = []
    for i in range(n):
        n_vars = 1 + i % 3
        lookback, horizon = (24, 48, 72, 96)[i % 4], (6, 12, 24)[i % 3]
        spec = ModelSpec(
            cell=CELLS[i % 3],
            n_vars=n_vars,
            target_idx=[0],
            lookback=lookback,
            horizon=horizon,
            hidden_size=8 + 8 * (i % 5),
            rnn_steps=min(24, lookback),
            mean=[10.0] * n_vars,
            std=[2.0] * n_vars,
        )
        torch.manual_seed(i)
        variables = [f"v{j}" for j in range(n_vars)]
        dataset = f"fleet{i:02d}"
        path = export_onnx(
            build(spec), d / f"{dataset}.onnx", {"variables": variables, "targets": variables[:1], "freq": "h"}
        )
        out.append({"dataset": dataset, "path": str(path), "lookback": lookback, "variables": variables, "freq": "h"})
    return out


def serve(models: list[dict], port: int) -> None:
    """The subprocess side: the real app on uvicorn, serving `models` from their files."""
    import uvicorn

    from cellcast.pipeline.config import Settings
    from cellcast.pipeline.serving.service import create_app

    def source(m):
        return lambda: (Path(m["path"]), SimpleNamespace(name=f"{m['dataset']}-forecaster", version="1"))

    every = [Settings(dataset=m["dataset"]) for m in models]
    sources = {m["dataset"]: {"champion": source(m)} for m in models}
    app = create_app(every if len(every) > 1 else every[0], sources=sources, device="cpu", poll_seconds=3600)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start(models: list[dict], work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    spec = work / f"models-{port}.json"
    spec.write_text(json.dumps(models))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(spec), "--port", str(port)],
        cwd=work,  # the live log's forecasts/ folder lands here
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"serve-{port}.log", "wb"),  # noqa: SIM115  # the child holds its own copy
    )
    return proc, port


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"a server on port {port} did not start in {timeout:.0f} s")


def memory(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                out[key.lower() + "_mb"] = int(rest.split()[0]) / 1024
    return out


def reported_memory(port: int) -> dict:
    """What the service's /metrics says its models hold (cellcast_model_memory_bytes), summed by kind, in MB."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "cellcast_model_memory_bytes":
            for s in fam.samples:
                key = f"reported_{s.labels['kind']}_mb"
                out[key] = out.get(key, 0.0) + s.value / 2**20
    return {k: round(v, 2) for k, v in out.items()}


def load(targets: list[tuple[int, str, bytes]], requests: int, concurrency: int) -> dict:
    """targets: (port, path, body) per model; requests sent round-robin over them by `concurrency` threads, each
    with one keep-alive connection per port. Latency per request, client side."""
    times: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker():
        conns: dict[int, Conn] = {}
        mine = []
        for i in counter:
            port, path, body = targets[i % len(targets)]
            c = conns.get(port) or conns.setdefault(port, Conn(f"http://127.0.0.1:{port}"))
            req = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            t0 = time.perf_counter()
            status, _ = c.exchange(req)
            mine.append(time.perf_counter() - t0)
            if status != 200:
                with lock:
                    errors[0] += 1
        with lock:
            times.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(times) * 1e3
    return {
        "concurrency": concurrency,
        "requests": len(times),
        "errors": errors[0],
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "rps": round(len(times) / wall, 1),
    }


def measure(side: str, models: list[dict], work: Path, requests: int) -> list[dict]:
    if side == "fleet":
        servers = [start(models, work)]
        ports = {m["dataset"]: servers[0][1] for m in models}
        paths = {m["dataset"]: f"/v1/models/{m['dataset']}/forecast" for m in models}
    else:
        servers = [start([m], work) for m in models]
        ports = {m["dataset"]: port for m, (_, port) in zip(models, servers, strict=True)}
        paths = {m["dataset"]: "/v1/forecast" for m in models}
    t0 = time.perf_counter()
    try:
        for proc, port in servers:
            wait_ready(port, proc)
        ready_s = time.perf_counter() - t0
        targets = [(ports[m["dataset"]], paths[m["dataset"]], request_body(m)) for m in models]
        load(targets, 2 * len(models), 1)  # warm-up: every model answers once on each side
        rows = []
        for conc in (1, 4):
            r = load(targets, requests, conc)
            rows.append(
                {"side": side, "processes": len(servers), "models": len(models), "start_s": round(ready_s, 1), **r}
            )
        mem = [memory(p.pid) for p, _ in servers]
        total = {k: round(sum(m[k] for m in mem), 1) for k in ("rss_mb", "pss_mb")}
        total |= reported_memory(servers[0][1])
        for r in rows:
            r.update(total)
        return rows
    finally:
        for proc, _ in servers:
            proc.terminate()
        for proc, _ in servers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--requests", type=int, default=600, help="forecasts per concurrency level and side")
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat both sides, the order alternating (a busy machine drifts)"
    )
    ap.add_argument("--out", type=Path, default=None, help="append the rows (JSON lines) to this file")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(json.loads(a.serve.read_text()), a.port)
        return
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    machine = f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cellcast-fleet-") as tmp:
        work = Path(tmp)
        models = make_models(work, a.models)
        rows = []
        for i in range(a.rounds):
            for side in ("fleet", "single") if i % 2 == 0 else ("single", "fleet"):
                rows += [{**r, "round": i + 1} for r in measure(side, models, work, a.requests)]
    for r in rows:
        r.update({"date": stamp, "machine": machine, "load_before": [round(x, 2) for x in load_before]})
        r["load_after"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(r))
    if a.out:
        with a.out.open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    for i in range(1, a.rounds + 1):
        summary(a.models, [r for r in rows if r["round"] == i])


def summary(n: int, rows: list[dict]) -> None:
    fleet = {r["concurrency"]: r for r in rows if r["side"] == "fleet"}
    single = {r["concurrency"]: r for r in rows if r["side"] == "single"}
    print(
        f"\n{n} models: one process RSS {fleet[1]['rss_mb']:.0f} MB (PSS {fleet[1]['pss_mb']:.0f}) vs "
        f"{n} processes RSS {single[1]['rss_mb']:.0f} MB (PSS {single[1]['pss_mb']:.0f}): "
        f"{single[1]['pss_mb'] / fleet[1]['pss_mb']:.1f}x the memory; the fleet's /metrics: ONNX files "
        f"{fleet[1].get('reported_onnx_file_mb')} MB, RSS deltas at load {fleet[1].get('reported_rss_delta_mb')} MB"
    )
    for c in (1, 4):
        print(
            f"concurrency {c}: p50 {fleet[c]['p50_ms']} vs {single[c]['p50_ms']} ms, "
            f"p99 {fleet[c]['p99_ms']} vs {single[c]['p99_ms']} ms (one process vs one per model)"
        )


if __name__ == "__main__":
    main()
