"""Loopback load generator for the forecasting service: requests/s, p50/p99 latency, errors, and
zero errors across a hot swap. Bounded in request count and in time.

Against a running service:
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000 [--token T]
Self-contained (default): exports two versions of a model, starts the real service in a subprocess
(uvicorn on 127.0.0.1, a free port) following a pointer file, moves the pointer to the other version
halfway through each load and checks that every request succeeded and that both versions answered.
It also measures, in this process, the engine's own batch-1 p50 on the same model file, and a GET
/health round trip (what HTTP on loopback costs before any forecast).

    .venv/bin/python bench/serve_load.py --concurrency 1 4 --against main [--rounds 2] [--out FILE]

--against REV: the service as it was at git revision REV (its tree exported to a temporary folder) is
started beside this one and loaded in turn, round-robin, with the same client, models and requests:
on a shared machine compare the two within one run, not across runs.
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
from datetime import UTC, datetime
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

    app = create_app(
        # the live log (on, as by default) beside the pointer, in the bench's temporary folder
        Settings(dataset="bench", paths={"forecasts": pointer.parent / "forecasts"}),
        source=pointer_source(pointer),
        device="cpu",
        poll_seconds=0.2,
        threads=threads,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def make_models(
    d: Path,
    lookback: int,
    horizon: int,
    n_vars: int,
    hidden: int,
    cell: str = "gru",
    layers: int = 1,
    rnn_steps: int = 48,
) -> list[Path]:
    import torch

    from cellcast.pipeline.engine.onnx_export import export_onnx
    from cellcast.pipeline.modeling.model import ModelSpec, build

    paths = []
    for seed in (1, 2):
        spec = ModelSpec(
            cell=cell,
            n_vars=n_vars,
            target_idx=[0],
            lookback=lookback,
            horizon=horizon,
            hidden_size=hidden,
            num_layers=layers,
            rnn_steps=rnn_steps,
            mean=[10.0] * n_vars,
            std=[2.0] * n_vars,
        )
        torch.manual_seed(seed)
        paths.append(
            export_onnx(build(spec), d / f"v{seed}.onnx", {"variables": [f"v{i}" for i in range(n_vars)], "freq": "h"})
        )
    return paths


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_body(info: dict) -> bytes:
    """The request every worker sends: each variable's last `lookback` values (and hourly timestamps when the
    model is hourly), encoded once: the client's JSON encoding is not what is measured."""
    t = np.arange(info["lookback"])
    values = {v: (10 + 2 * np.sin(2 * np.pi * (t + i) / 24)).tolist() for i, v in enumerate(info["variables"])}
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    payload = {"values": values}
    if info.get("freq") == "h":
        payload["timestamps"] = [datetime.fromtimestamp(start + 3600 * i, UTC).isoformat() for i in t]
    return json.dumps(payload).encode()


class Conn:
    """A keep-alive HTTP/1.1 connection that sends prepared bytes and reads one response: a load generator's
    client must cost the machine little, or it measures itself (httpx costs ~0.5 ms of CPU per request)."""

    def __init__(self, url: str):
        import socket
        from urllib.parse import urlsplit

        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        status = int(self.file.readline().split(b" ", 2)[1])
        length = 0
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, self.file.read(length)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def prepared(url: str, path: str, body: bytes, token: str | None) -> bytes:
    from urllib.parse import urlsplit

    host = urlsplit(url).netloc
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def load(url: str, token: str | None, requests: int, duration: float, concurrency: int, on_half=None) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        info = c.get("/model").json()
    request = prepared(url, "/v1/forecast", request_body(info), token)
    lat, errors, versions = [], [], {}
    lock = threading.Lock()
    issued = [0]
    t_end = time.monotonic() + duration
    halfway = threading.Event()

    def worker():
        conn = Conn(url)
        try:
            while time.monotonic() < t_end:
                with lock:
                    if issued[0] >= requests:
                        return
                    issued[0] += 1
                    if issued[0] == requests // 2:
                        halfway.set()
                t0 = time.perf_counter()
                try:
                    status, got = conn.exchange(request)
                    ok = status == 200
                    got = json.loads(got)
                except Exception as e:  # counted, never hidden
                    ok, got = False, {"detail": repr(e)}
                    conn.close()
                    conn = Conn(url)
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        lat.append(dt)
                        v = got["model"]["version"]
                        versions[v] = versions.get(v, 0) + 1
                    else:
                        errors.append(str(got.get("detail"))[:200])
        finally:
            conn.close()

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
    return {
        "kind": "serve_load",
        "requests": len(lat) + len(errors),
        "errors": len(errors),
        "first_errors": errors[:3],
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "requests_per_s": round((len(lat) + len(errors)) / wall, 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
        "versions": versions,
        "lookback": info["lookback"],
        "variables": len(info["variables"]),
    }


def http_floor(url: str, n: int = 300) -> float:
    """p50 ms of GET /health with the same client: loopback HTTP and the framework, no forecast."""
    from urllib.parse import urlsplit

    request = f"GET /health HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\n\r\n".encode()
    conn = Conn(url)
    try:
        for _ in range(20):
            conn.exchange(request)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.exchange(request)
            lat.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return round(1e3 * float(np.median(lat)), 3)


def engine_p50(path: Path, lookback: int, n_vars: int, threads: int | None, n: int = 500) -> float:
    """The engine's own batch-1 p50 (ms) on the model file the service loads, as the service loads it."""
    from cellcast.pipeline.engine.inference import OnnxForecaster

    eng = OnnxForecaster.from_path(path, device="cpu", threads=threads)
    x = (10 + np.random.default_rng(0).standard_normal((1, lookback, n_vars))).astype(np.float32)
    f = eng.synthetic_future(1)  # a model with known-future inputs needs them (None otherwise)
    for _ in range(20):
        eng.predict(x, f)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        eng.predict(x, f)
        lat.append(time.perf_counter() - t0)
    return round(1e3 * float(np.median(lat)), 3)


def export_tree(rev: str, dst: Path) -> Path:
    """The project's files at git revision `rev`, in `dst` (git archive: committed files only)."""
    dst.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the service at {url} did not start")
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running service; default: start one here (see the module docstring)")
    ap.add_argument("--token", default=os.environ.get("CELLCAST_API_TOKEN"))
    ap.add_argument("--requests", type=int, default=3000, help="per load run")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds, at most, per load run")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4])
    ap.add_argument("--rounds", type=int, default=1, help="self-contained: load runs per side and concurrency")
    ap.add_argument(
        "--against",
        help="self-contained: also the service as it was at this git revision (or in "
        "this folder, another copy of the project)",
    )
    ap.add_argument(
        "--against-plain",
        action="store_true",
        help="with --against: that revision also as it ran before httptools and uvloop were installed "
        "(uvicorn's pure-Python h11 parser and asyncio's loop; both hidden from its process)",
    )
    ap.add_argument("--lookback", type=int, default=168)
    ap.add_argument("--horizon", type=int, default=24)
    ap.add_argument("--vars", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--cell", default="gru")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--rnn-steps", type=int, default=48, help="steps of the lookback the cell reads")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads of the started service")
    ap.add_argument("--out", help="append the JSON lines here too")
    ap.add_argument("--serve-pointer", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.serve_pointer:  # we are the service subprocess
        run_service(Path(args.serve_pointer), args.port, args.threads)
        return
    out = open(args.out, "a") if args.out else None

    def emit(rec: dict) -> None:
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    emit(
        {
            "kind": "env",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "load_1min": load_avg,
            "command": " ".join(sys.argv),
        }
    )
    if args.url:
        for conc in args.concurrency:
            emit(load(args.url, args.token, args.requests, args.duration, conc))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = make_models(
            tmp, args.lookback, args.horizon, args.vars, args.hidden, args.cell, args.layers, args.rnn_steps
        )
        model = {
            "cell": args.cell,
            "hidden": args.hidden,
            "layers": args.layers,
            "rnn_steps": args.rnn_steps,
            "lookback": args.lookback,
            "vars": args.vars,
            "horizon": args.horizon,
        }
        sides = {"now": ROOT}
        hide = {}
        if args.against:
            # a folder holding another copy of the project (a variant being tried), or a git revision
            sides[args.against] = (
                Path(args.against).resolve()
                if Path(args.against, "bench").is_dir()
                else export_tree(args.against, tmp / "against")
            )
            if args.against_plain:
                plain = f"{args.against} (h11, asyncio)"
                sides[plain] = sides[args.against]
                hide[plain] = tmp / "hidden"
                hide[plain].mkdir()
                for mod in ("httptools", "uvloop"):  # uvicorn's "auto" falls back when the import fails
                    (hide[plain] / f"{mod}.py").write_text(f"raise ImportError('{mod} hidden by the benchmark')\n")
        procs, urls, pointers = {}, {}, {}
        try:
            for side, tree in sides.items():
                pointers[side] = tmp / f"champion-{len(pointers)}.json"
                pointers[side].write_text(json.dumps({"path": str(models[0]), "version": "1"}))
                port = free_port()
                cmd = [
                    sys.executable,
                    str(tree / "bench" / "serve_load.py"),
                    "--serve-pointer",
                    str(pointers[side]),
                    "--port",
                    str(port),
                ]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, filter(None, [hide.get(side), tree])))}
                procs[side] = subprocess.Popen(cmd, cwd=tree, env=env)
                urls[side] = f"http://127.0.0.1:{port}"
            for side in sides:
                wait_healthy(urls[side], procs[side])
            emit(
                {
                    "kind": "engine",
                    "model": model,
                    "batch1_p50_ms": engine_p50(models[0], args.lookback, args.vars, args.threads),
                }
            )
            for side in sides:
                emit({"kind": "http_floor", "side": side, "health_p50_ms": http_floor(urls[side])})

            rows = []
            for conc in args.concurrency:
                for rnd in range(args.rounds):
                    for side in sides:  # round-robin: both sides under the same load of the machine
                        ptr = pointers[side]
                        now = json.loads(ptr.read_text())["version"]
                        nxt = "2" if now == "1" else "1"

                        def swap(ptr=ptr, nxt=nxt):
                            tmp_ptr = ptr.with_suffix(".tmp")
                            tmp_ptr.write_text(json.dumps({"path": str(models[int(nxt) - 1]), "version": nxt}))
                            os.replace(tmp_ptr, ptr)

                        res = load(urls[side], None, args.requests, args.duration, conc, on_half=swap)
                        res.update(
                            side=side,
                            round=rnd,
                            model=model,
                            hot_swap=f"{now} -> {nxt}",
                            load_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                        )
                        res["swap_ok"] = res["errors"] == 0 and set(res["versions"]) == {"1", "2"}
                        emit(res)
                        rows.append(res)
            print(
                "\n| side | concurrency | round | requests | errors | req/s | p50 ms | p99 ms | versions answered |\n"
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
            )
            for r in rows:
                print(
                    f"| {r['side']} | {r['concurrency']} | {r['round']} | {r['requests']} | {r['errors']} | "
                    f"{r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['versions']} |"
                )
            if not all(r["swap_ok"] for r in rows):
                raise SystemExit("errors or a missing version across a hot swap")
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                proc.wait(timeout=30)
            if out:
                out.close()


if __name__ == "__main__":
    main()
