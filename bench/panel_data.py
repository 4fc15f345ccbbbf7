"""A panel at scale: ingest + validate time and peak memory of a synthetic, realistic panel.

1,000 series x 8,760 hourly steps by default: daily and weekly seasonality of random strength and phase, noise,
level shifts, a temperature feature, series starting up to 60 days apart, 2% of readings missing at random and
a few outages of 2-12 hours (longer than ingest.max_fill_steps: breaks), and a handful of series with an
infinite reading (dropped by the policy). Written as Parquet (and CSV with --csv). Each stage runs in a fresh
process (its peak resident memory is its own): ingest, validate in one process (partition by partition), and
validate fanned out over a local Dask cluster of --workers processes.

    .venv/bin/python bench/panel_data.py [--series 1000] [--steps 8760] [--csv] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
N_BAD = 5  # series given one infinite reading


# the panel's columns as ingest_file reads them (synthetic_panel's frame, and panel_scale's of the same shape)
INGEST_COLUMNS = {"time_col": "ts", "targets": ["load"], "features": ["temp"], "id_cols": ["sensor"]}


def synthetic_panel(n_series: int, steps: int, seed: int = 0) -> pd.DataFrame:
    """The long frame: sensor, ts, load, temp (float64), rows of each series in time order."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    offsets = rng.integers(0, 60 * 24, n_series)  # series start up to 60 days apart
    base = pd.Timestamp("2023-01-01").value
    frames = []
    for i in range(n_series):
        hours = t + offsets[i]
        day = rng.uniform(0.5, 3) * np.sin(2 * np.pi * (hours / 24 + rng.uniform()))
        week = rng.uniform(0, 2) * np.sin(2 * np.pi * (hours / 168 + rng.uniform()))
        level = rng.uniform(5, 50) + np.cumsum(np.where(rng.random(steps) < 2 / steps, rng.normal(0, 5, steps), 0))
        y = level + day + week + rng.normal(0, 0.3 + 0.05 * abs(level.mean()) / 10, steps)
        temp = (
            10
            + 8 * np.sin(2 * np.pi * hours / 8760)
            + 3 * np.sin(2 * np.pi * (hours - 15) / 24)
            + rng.normal(0, 1, steps)
        )
        keep = rng.random(steps) >= 0.02  # 2% of readings never arrive
        for _ in range(rng.integers(0, 4)):  # outages of 2-12 hours
            a = int(rng.integers(0, steps - 12))
            keep[a : a + int(rng.integers(2, 13))] = False
        keep[0] = keep[-1] = True
        if i < N_BAD:
            y[steps // 2] = np.inf
        ts = base + hours[keep].astype(np.int64) * 3_600_000_000_000
        frames.append(
            pd.DataFrame(
                {"sensor": f"s{i:05d}", "ts": ts.astype("datetime64[ns]"), "load": y[keep], "temp": temp[keep]}
            )
        )
    return pd.concat(frames, ignore_index=True)


STAGE = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})

def peak_mib():
    # VmHWM: this process's own peak (getrusage's ru_maxrss keeps the parent's RSS at fork across exec)
    with open("/proc/self/status") as f:
        return round(int(f.read().split("VmHWM:")[1].split()[0]) / 1024, 1)

os.chdir({work!r})
from cellcast.pipeline.config import load_params
stage, arg = sys.argv[1], sys.argv[2]
s = load_params().for_dataset("bench")
s = s.model_copy(update={{"ingest": s.ingest.model_copy(update={{"long_gaps": "segment", "bad_series": "drop"}})}})
t0 = time.perf_counter()
out = {{}}
if stage == "ingest":
    from cellcast.pipeline.data.ingest import ingest_file
    fmt = "csv" if arg.endswith(".csv") else "parquet"
    r = ingest_file(arg, time_col="ts", targets=["load"], features=["temp"], id_cols=["sensor"], fmt=fmt,
                    settings=s)
    out = {{"rows": r.meta.rows, "series": len(r.meta.panel["series"]), "row_groups": r.meta.panel["row_groups"],
            "freq": r.meta.freq}}
else:
    from cellcast.pipeline.data.panel_validation import client_mapper
    from cellcast.pipeline.data.validation import validate_dataset
    if arg == "0":
        rep = validate_dataset(s)
        workers = []
    else:
        import distributed
        with distributed.LocalCluster(n_workers=int(arg), threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=50) as cluster, distributed.Client(cluster) as client:
            t0 = time.perf_counter()     # the cluster's start is not validation
            rep = validate_dataset(s, mapper=client_mapper(client))
            workers = [w * 1024 for w in client.run(peak_mib).values()]
    p = rep.panel
    out = {{"rows_in": rep.rows_in, "rows_out": rep.rows_out, "series_in": p["series_in"], "kept": p["kept"],
            "dropped": p["dropped"], "cold_start": p["cold_start"], "breaks": p["breaks"], "filled": p["filled"],
            "partitions": len(p["partitions"]), "worker_peak_mib": [round(w / 1024, 1) for w in workers],
            "partition_seconds": round(sum(x["seconds"] for x in p["partitions"]), 2)}}
out["seconds"] = round(time.perf_counter() - t0, 2)
out["peak_mib"] = peak_mib()
print("RESULT " + json.dumps(out))
"""


def run_result(cmd: list[str], what: str) -> dict:
    """Run a stage in a process of its own (its peak memory is its own) and read the `RESULT {json}` line it prints,
    with the process's wall seconds; a failed stage stops the bench with its output's tail."""
    # this checkout first; what the caller put on PYTHONPATH after it (a sitecustomize, say)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "GX_ANALYTICS_ENABLED": "False"}
    wall = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{what} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    line = next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line[7:]), "process_seconds": round(time.perf_counter() - wall, 2)}


def run_stage(work: Path, stage: str, arg: str) -> dict:
    code = STAGE.format(root=str(ROOT), work=str(work))
    return run_result([sys.executable, "-c", code, stage, arg], f"{stage} {arg}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=8760)
    ap.add_argument("--csv", action="store_true", help="ingest from CSV too (Parquet always)")
    ap.add_argument(
        "--workers", type=int, default=2, help="Dask worker processes for the fanned-out validation (0: skip)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 30 series x 2,000 steps, no results file")
    args = ap.parse_args()
    n, steps = (30, 2000) if args.quick else (args.series, args.steps)
    work = Path(tempfile.mkdtemp(prefix="cellcast-panel-bench-"))
    try:
        shutil.copy(ROOT / "params.yaml", work / "params.yaml")
        t0 = time.perf_counter()
        df = synthetic_panel(n, steps)
        gen = time.perf_counter() - t0
        pq_path = work / "panel.parquet"
        df.to_parquet(pq_path, index=False)
        inputs = [pq_path]
        if args.csv:
            df.to_csv(work / "panel.csv", index=False)
            inputs.append(work / "panel.csv")
        sizes = {p.suffix[1:]: round(p.stat().st_size / 2**20, 1) for p in inputs}
        print(
            f"{n} series x {steps} steps: {len(df):,} readings generated in {gen:.1f} s; files MiB {sizes}", flush=True
        )
        del df
        common = {
            "bench": "panel_data",
            "series": n,
            "steps": steps,
            "machine": platform.node(),
            "cpus": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        lines = []
        for src in inputs:
            r = run_stage(work, "ingest", str(src))
            lines.append({**common, "stage": f"ingest ({src.suffix[1:]})", "input_mib": sizes[src.suffix[1:]], **r})
            print(json.dumps(lines[-1]), flush=True)
        for workers in [0] + ([args.workers] if args.workers else []):
            r = run_stage(work, "validate", str(workers))
            label = "validate (1 process)" if workers == 0 else f"validate (Dask, {workers} worker processes)"
            lines.append({**common, "stage": label, **r})
            print(json.dumps(lines[-1]), flush=True)
        print("\n| stage | seconds | peak MiB (process) | notes |\n| --- | ---: | ---: | --- |")
        for x in lines:
            notes = (
                f"{x['rows']:,} rows, {x['series']} series, {x['row_groups']} row groups"
                if "rows" in x
                else f"{x['series_in']} series in, {x['kept']} kept, {x['dropped']} dropped, "
                f"{x['cold_start']} cold start, "
                f"{x['breaks']} breaks, {x['filled']:,} filled, {x['partitions']} partitions"
                + (f"; workers' peak MiB {x['worker_peak_mib']}" if x["worker_peak_mib"] else "")
            )
            print(f"| {x['stage']} | {x['seconds']:.1f} | {x['peak_mib']:,.0f} | {notes} |")
        if not args.quick:
            RESULTS.mkdir(parents=True, exist_ok=True)
            with open(RESULTS / "panel-data-cpu.jsonl", "a") as f:
                f.writelines(json.dumps(x) + "\n" for x in lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
