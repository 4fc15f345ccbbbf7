"""Loopback load generator for the forecasting service: requests/s, p50/p99 latency, errors, and
zero errors across a hot swap. Bounded in request count and in time.

Against a running service:
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000 [--token T]
Self-contained (default): exports two small GRU versions, starts the real service in a subprocess
(uvicorn on 127.0.0.1, a free port) following a pointer file, moves the pointer to version 2 halfway
through the load and checks that every request succeeded and that both versions answered.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pointer_source(pointer: Path):
    """A model source reading {"path", "version"} from a file: a registry alias stand-in across processes."""

    def source():
        d = json.loads(pointer.read_text())
        return Path(d["path"]), SimpleNamespace(name="bench-forecaster", version=d["version"])

    return source


def run_service(pointer: Path, port: int, threads: int | None) -> None:
    """The subprocess side: the real app on uvicorn, following the pointer file."""
    import uvicorn

    from cellcast.pipeline.config import Settings
    from cellcast.pipeline.serving.service import create_app

    app = create_app(Settings(dataset="bench"), source=pointer_source(pointer), device="cpu", poll_seconds=0.2,
                     threads=threads)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def make_models(d: Path, lookback: int, horizon: int, n_vars: int, hidden: int) -> list[Path]:
    import torch

    from cellcast.pipeline.modeling.model import ModelSpec, build
    from cellcast.pipeline.engine.onnx_export import export_onnx

    paths = []
    for seed in (1, 2):
        spec = ModelSpec(cell="gru", n_vars=n_vars, target_idx=[0], lookback=lookback, horizon=horizon,
                         hidden_size=hidden, rnn_steps=48, mean=[10.0] * n_vars, std=[2.0] * n_vars)
        torch.manual_seed(seed)
        paths.append(export_onnx(build(spec), d / f"v{seed}.onnx",
                                 {"variables": [f"v{i}" for i in range(n_vars)], "freq": "h"}))
    return paths


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, token: str | None, requests: int, duration: float, concurrency: int, on_half=None) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        info = c.get("/model").json()
    t = np.arange(info["lookback"])
    values = {v: (10 + 2 * np.sin(2 * np.pi * (t + i) / 24)).tolist() for i, v in enumerate(info["variables"])}
    start = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
    payload = {"values": values}
    if info.get("freq") == "h":
        payload["timestamps"] = [datetime.fromtimestamp(start + 3600 * i, timezone.utc).isoformat() for i in t]
    lat, errors, versions = [], [], {}
    lock = threading.Lock()
    issued = [0]
    t_end = time.monotonic() + duration
    halfway = threading.Event()

    def worker():
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            while time.monotonic() < t_end:
                with lock:
                    if issued[0] >= requests:
                        return
                    issued[0] += 1
                    if issued[0] == requests // 2:
                        halfway.set()
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/forecast", json=payload)
                    ok = r.status_code == 200
                    body = r.json()
                except Exception as e:  # counted, never hidden
                    ok, body = False, {"detail": repr(e)}
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        lat.append(dt)
                        v = body["model"]["version"]
                        versions[v] = versions.get(v, 0) + 1
                    else:
                        errors.append(str(body.get("detail"))[:200])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    if on_half is not None:
        halfway.wait(timeout=duration)
        on_half()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat_ms = 1e3 * np.asarray(lat) if lat else np.asarray([np.nan])
    return {"kind": "serve_load", "requests": len(lat) + len(errors), "errors": len(errors),
            "first_errors": errors[:3], "concurrency": concurrency, "seconds": round(wall, 2),
            "requests_per_s": round((len(lat) + len(errors)) / wall, 1),
            "p50_ms": round(float(np.percentile(lat_ms, 50)), 2), "p99_ms": round(float(np.percentile(lat_ms, 99)), 2),
            "versions": versions, "lookback": info["lookback"], "variables": len(info["variables"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running service; default: start one here (see the module docstring)")
    ap.add_argument("--token", default=os.environ.get("CELLCAST_API_TOKEN"))
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds, at most")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--lookback", type=int, default=168)
    ap.add_argument("--horizon", type=int, default=24)
    ap.add_argument("--vars", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads of the started service")
    ap.add_argument("--serve-pointer", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.serve_pointer:  # we are the service subprocess
        run_service(Path(args.serve_pointer), args.port, args.threads)
        return
    env = {"kind": "env", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "cpus": os.cpu_count(), "command": " ".join(sys.argv)}
    print(json.dumps(env), flush=True)
    if args.url:
        print(json.dumps(load(args.url, args.token, args.requests, args.duration, args.concurrency)), flush=True)
        return

    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        v1, v2 = make_models(Path(tmp), args.lookback, args.horizon, args.vars, args.hidden)
        pointer = Path(tmp) / "champion.json"
        pointer.write_text(json.dumps({"path": str(v1), "version": "1"}))
        port = free_port()
        cmd = [sys.executable, __file__, "--serve-pointer", str(pointer), "--port", str(port)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.Popen(cmd, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the service did not start")
                time.sleep(0.2)

            def swap():
                tmp_ptr = pointer.with_suffix(".tmp")
                tmp_ptr.write_text(json.dumps({"path": str(v2), "version": "2"}))
                os.replace(tmp_ptr, pointer)

            res = load(url, None, args.requests, args.duration, args.concurrency, on_half=swap)
            res["hot_swap"] = "1 -> 2"
            res["swap_ok"] = res["errors"] == 0 and set(res["versions"]) == {"1", "2"}
            print(json.dumps(res), flush=True)
            print(f"\n| requests | errors | concurrency | req/s | p50 ms | p99 ms | versions answered |\n"
                  f"| ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
                  f"| {res['requests']} | {res['errors']} | {res['concurrency']} | {res['requests_per_s']} | "
                  f"{res['p50_ms']} | {res['p99_ms']} | {res['versions']} |")
            if not res["swap_ok"]:
                raise SystemExit("errors or a missing version across the hot swap")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
