"""The GPU check: cellcast's own trainer and ONNX Runtime's CUDA provider on one GPU, in one command.

    python3 bench/gpu_check.py --out DIR                          # on a GPU machine (under 8 minutes on an H100)
    .venv/bin/python bench/gpu_check.py --out DIR --device cpu --quick   # the dry run (tests/test_gpu_check.py)

Writes DIR/gpu_check.jsonl, one JSON object per line, flushed as it goes (a run cut short keeps what it
measured), and DIR/gpu_check.md, the tables for BENCHMARKS.md. It needs only the core of cellcast (config,
window, model, train, evaluate, onnx_export, inference, doctor, serving.requests): torch, numpy, pandas, onnx,
pyyaml, pydantic and onnxruntime(-gpu); never MLflow, Prefect, Great Expectations, DVC, and FastAPI only if
it is there. The data: a synthetic hourly series (--rows x --vars: daily and weekly cycles, a persistent AR(1)
component, noise; the first variable is the target), lookback 168, horizon 24, cells of 2 x 128.

Sections (--sections; default all, in this order):
  doctor  `cellcast doctor`'s report for the device (torch, cuDNN, TF32, ONNX Runtime, CUDA libraries)
  train   windows/s of train_candidate (series resident on the device, bf16 autocast, fused Adam) for each
          cell at each --batch, against the seed tutorial's per-item loop (a Dataset slicing numpy and
          building tensors per item, DataLoader(batch 64, shuffle)) on the same device, same network
  ttq     time to a fixed validation loss (--target-frac x the seasonal-naive loss on the validation
          windows, scaled MAE), both loops, each within --ttq-budget seconds
  infer   export (the variant that ships, and the hybrid graph), then ONNX Runtime on the device against
          torch eager there: parity with torch (CPU, fp32) at batch 1 and --infer-batch, batch-1 p50/p99,
          --infer-batch windows/s; both branches of the hybrid graph on the device, with the switch they
          suggest for `hybrid_min_batch_cuda`; ONNX Runtime on the CPU (threads swept at batch 1)
  serve   the service's per-request path at batch 1 with the engine as it serves (calibrated CPU/CUDA
          choice): JSON body -> parse_request -> engine -> JSON answer; over HTTP (in-process ASGI client)
          when FastAPI is installed
Targets (from the issue; each a `target` record): LSTM >= 268k, GRU >= 160k, RNN >= 800k windows/s, each
>= 15x the seed loop; ORT CUDA batch 4096 >= 2x torch eager; served batch-1 p50 <= 1 ms.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see bench/README.md
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from seed_loop import SeedLoop  # noqa: E402  (bench/: the seed tutorial's loop)

from cellcast.pipeline.config import Params, Settings  # noqa: E402
from cellcast.pipeline.data.window import build_windows  # noqa: E402
from cellcast.pipeline.data.windowset import WindowSet  # noqa: E402
from cellcast.pipeline.modeling.device import exact_fp32, tf32_settings  # noqa: E402
from cellcast.pipeline.modeling.evaluate import seasonal_naive  # noqa: E402
from cellcast.pipeline.modeling.model import Forecaster  # noqa: E402
from cellcast.pipeline.modeling.train import Candidate, _val_loss, model_spec, train_candidate  # noqa: E402

SECTIONS = ("doctor", "train", "ttq", "infer", "serve")
CELLS = ("lstm", "gru", "rnn")
# windows/s the trainer should reach per cell (H200 reference, ../shared/bench/) and the factor over the seed loop
TRAIN_TARGETS = {"lstm": 268_000, "gru": 160_000, "rnn": 800_000}
SEED_FACTOR = 15
ORT_VS_TORCH = 2.0
SERVED_P50_MS = 1.0
SEASON = 24  # the synthetic series is hourly: a day


# --- output --------------------------------------------------------------------------------------


class Out:
    """Records to DIR/gpu_check.jsonl (flushed per line) and to stdout."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "gpu_check.jsonl"
        self.fh = self.path.open("w")
        self.rows: list[dict] = []

    def emit(self, kind: str, **kw) -> dict:
        row = {"kind": kind, **kw}
        line = json.dumps(row, default=_plain)
        self.fh.write(line + "\n")
        self.fh.flush()
        print(line if len(line) < 400 else line[:400] + " ...", flush=True)
        self.rows.append(json.loads(line))
        return row

    def error(self, section: str, e: BaseException, **where) -> None:
        self.emit(
            "error",
            section=section,
            **where,
            error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500],
            trace=traceback.format_exc(limit=4)[-1500:],
        )


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return str(v)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def latency(fn, n: int, warm: int = 10, budget: float = 5.0) -> tuple[float, float]:
    """p50, p99 in ms of n calls after warm ones; fewer (at least 20) when they would take over `budget` s
    (an unrolled graph on a GPU can take tens of ms a call)."""
    for _ in range(warm):
        fn()
    t: list[float] = []
    start = time.perf_counter()
    while len(t) < n and (len(t) < 20 or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return round(1e3 * float(np.percentile(t, 50)), 4), round(1e3 * float(np.percentile(t, 99)), 4)


def throughput(fn, batch: int, budget: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < budget:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0)


# --- data and settings -----------------------------------------------------------------------------


def synthetic_frame(rows: int, n_vars: int):
    """Hourly: a daily and a weekly cycle per variable (own phase and amplitude), an AR(1) component with
    phi 0.98 (what a model can read from the recent past and seasonal naive cannot), and noise."""
    import pandas as pd

    rng = np.random.default_rng(0)
    t = np.arange(rows)[:, None]
    shocks = 0.2 * rng.standard_normal((rows, n_vars))
    ar = np.empty_like(shocks)
    ar[0] = shocks[0]
    for i in range(1, rows):  # ~0.5 s for 200k rows
        ar[i] = 0.98 * ar[i - 1] + shocks[i]
    phase = rng.uniform(0, 2 * np.pi, n_vars)
    amp = rng.uniform(0.5, 1.5, n_vars)
    x = (
        10
        + amp * np.sin(2 * np.pi * t / 24 + phase)
        + 0.5 * np.sin(2 * np.pi * t / 168 + phase / 2)
        + ar
        + 0.05 * rng.standard_normal((rows, n_vars))
    )
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"v{i}" for i in range(n_vars)])
    frame.insert(0, "timestamp", pd.date_range("2020-01-01", periods=rows, freq="h"))
    return frame


def make_settings(args, **train) -> Settings:
    base = {
        "cells": list(CELLS),
        "hidden_size": args.hidden,
        "num_layers": args.layers,
        "rnn_steps": args.lookback,
        "residual": False,
        "lr": args.lr,
        "batch_size": args.batch[0],
        "device": args.device,
        "epochs": 1,
        "max_train_windows": 1024,
        "patience": 10**6,
        "time_budget_s": 1e9,
    }
    # past inputs only, as the seed tutorial's loop reads them: no calendar block (the default adds one)
    return Params(
        window={"lookback": args.lookback, "horizon": args.horizon},
        calendar={"parts": []},
        train={**base, **train},
        serve={"live_log": False},  # the check times the service, not the live forecast log's files
    ).for_dataset("synthetic")


def window_set(args) -> WindowSet:
    frame = synthetic_frame(args.rows, args.vars)
    names = [c for c in frame.columns if c != "timestamp"]
    return build_windows(frame, variables=names, targets=names[:1], freq="h", settings=make_settings(args))


# --- sections --------------------------------------------------------------------------------------


def section_doctor(out: Out, args) -> None:
    from cellcast.pipeline.engine.doctor import diagnose

    d = diagnose(args.device)
    out.emit("doctor", **d.to_dict())


def section_train(out: Out, args, ws: WindowSet, dev: torch.device, models: dict) -> None:
    for cell in args.cells:
        cand = Candidate(cell, args.hidden, args.layers)
        settings = make_settings(args)
        seed = None
        try:
            loop = SeedLoop(ws, cand, settings, dev, args.seed_batch)
            for _ in range(3):
                loop.step()
            sync(dev)
            n, t0 = 0, time.perf_counter()
            while n == 0 or time.perf_counter() - t0 < args.seed_budget:
                n += loop.step()
            sync(dev)
            seed = n / (time.perf_counter() - t0)
            out.emit("train", cell=cell, loop="seed", batch=args.seed_batch, windows_per_s=round(seed), windows=n)
        except Exception as e:
            out.error("train", e, cell=cell, loop="seed")
        best = 0.0
        for b in args.batch:
            try:
                s = make_settings(args, batch_size=b, epochs=args.train_epochs, max_train_windows=args.steps * b)
                warm = make_settings(args, batch_size=b, epochs=1, max_train_windows=2 * b)
                train_candidate(ws, cand, warm, device=dev)  # cuDNN plans, allocator, autocast caches
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                r = train_candidate(ws, cand, s, device=dev)
                peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
                models[cell] = r.model
                best = max(best, r.windows_per_s)
                out.emit(
                    "train",
                    cell=cell,
                    loop="cellcast",
                    batch=b,
                    windows_per_s=round(r.windows_per_s),
                    vs_seed=round(r.windows_per_s / seed, 2) if seed else None,
                    epochs=len(r.history),
                    windows=args.train_epochs * min(args.steps * b, len(ws.starts["train"])),
                    val_loss=round(r.best_val_loss, 5),
                    peak_mib=peak and round(peak),
                    bf16=dev.type == "cuda",
                    fused_adam=dev.type == "cuda",
                    device=r.device,
                )
            except Exception as e:
                out.error("train", e, cell=cell, batch=b)
        if best and dev.type == "cuda":  # the targets are GPU figures
            goal = TRAIN_TARGETS.get(cell)
            out.emit(
                "target",
                name=f"train-{cell}",
                value=round(best),
                goal=goal,
                unit="windows/s",
                met=best >= goal,
                device=str(dev),
            )
            if seed:
                out.emit(
                    "target",
                    name=f"train-{cell}-vs-seed",
                    value=round(best / seed, 2),
                    goal=SEED_FACTOR,
                    unit="x seed loop",
                    met=best / seed >= SEED_FACTOR,
                    device=str(dev),
                )


class _Reached(Exception):
    pass


def seasonal_naive_loss(ws: WindowSet) -> float:
    """The seasonal-naive (a day) forecast's validation loss in the trainer's units (MAE / target std)."""
    starts = ws.starts["val"]
    _, y = ws.batch(starts)
    pred = seasonal_naive(ws, starts, SEASON)
    scale = np.asarray(ws.meta.std, dtype=np.float64)[ws.meta.target_idx]
    return float((np.abs(y - pred) / scale).mean())


def section_ttq(out: Out, args, ws: WindowSet, dev: torch.device) -> None:
    base = seasonal_naive_loss(ws)
    target = args.target_frac * base
    out.emit(
        "ttq-target",
        seasonal_naive_val_loss=round(base, 5),
        target_frac=args.target_frac,
        target_val_loss=round(target, 5),
        budget_s=args.ttq_budget,
        every_windows=args.ttq_every,
    )
    tw = ws.to_torch(dev)
    for cell in args.cells:
        cand = Candidate(cell, args.hidden, args.layers)
        settings = make_settings(args)
        try:  # the seed loop, validated every ttq_every windows with the trainer's validation (fp32)
            loop = SeedLoop(ws, cand, settings, dev, args.seed_batch)
            curve, seen, since, reached = [], 0, 0, None
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.ttq_budget:
                k = loop.step()
                seen, since = seen + k, since + k
                if since >= args.ttq_every:
                    since = 0
                    v = _val_loss(loop.model, tw, tw.starts["val"], loop.scale, False, 4096)
                    curve.append((round(time.perf_counter() - t0, 3), round(v, 5)))
                    if v <= target:
                        reached = curve[-1][0]
                        break
            out.emit(
                "ttq",
                cell=cell,
                loop="seed",
                batch=args.seed_batch,
                target_val_loss=round(target, 5),
                reached_s=reached,
                best_val_loss=min((v for _, v in curve), default=None),
                windows=seen,
                curve=curve,
            )
        except Exception as e:
            out.error("ttq", e, cell=cell, loop="seed")
        for batch in args.ttq_batch:  # the trainer: an epoch = ttq_every windows, the seed loop's cadence
            try:
                s = make_settings(
                    args,
                    batch_size=batch,
                    epochs=10**6,
                    max_train_windows=args.ttq_every,
                    time_budget_s=args.ttq_budget,
                )
                curve = []
                t0 = time.perf_counter()

                def on_epoch(row):
                    curve.append((round(time.perf_counter() - t0, 3), round(row["val_loss"], 5)))
                    if row["val_loss"] <= target:
                        raise _Reached

                reached = None
                try:
                    train_candidate(ws, cand, s, device=dev, on_epoch=on_epoch)
                except _Reached:
                    reached = curve[-1][0]
                out.emit(
                    "ttq",
                    cell=cell,
                    loop="cellcast",
                    batch=batch,
                    target_val_loss=round(target, 5),
                    reached_s=reached,
                    best_val_loss=min((v for _, v in curve), default=None),
                    windows=len(curve) * min(args.ttq_every, len(ws.starts["train"])),
                    curve=curve,
                    note="validation under bf16 autocast on CUDA" if dev.type == "cuda" else None,
                )
            except Exception as e:
                out.error("ttq", e, cell=cell, loop="cellcast", batch=batch)


def _engine_figures(
    eng, x1: np.ndarray, xb: np.ndarray, ref1: np.ndarray, refb: np.ndarray, scale: np.ndarray, args
) -> dict:
    y1, used1 = eng.predict_with_provider(x1)
    yb, usedb = eng.predict_with_provider(xb)
    rel = lambda y, r: float((np.abs(y.astype(np.float64) - r) / scale).max())  # noqa: E731
    p50, p99 = latency(lambda: eng.predict(x1), args.n_latency)
    return {
        "provider": eng.provider,
        "used_batch1": used1,
        "used_batch": usedb,
        "parity_rel_batch1": rel(y1, ref1),
        "parity_rel_batch": rel(yb, refb),
        "p50_ms": p50,
        "p99_ms": p99,
        "windows_per_s": round(throughput(lambda: eng.predict(xb), len(xb), args.infer_budget)),
        "export": eng.metadata.get("export"),
        "hybrid_min_batch": eng.hybrid_switch(),
    }


def section_infer(out: Out, args, ws: WindowSet, dev: torch.device, models: dict, tmp: Path, shipped: dict) -> None:
    from cellcast.pipeline.engine.inference import CUDA, OnnxForecaster, pick_threshold
    from cellcast.pipeline.engine.onnx_export import export_onnx

    starts = ws.starts["test"]
    n = min(args.infer_batch, len(starts))
    reps = int(math.ceil(args.infer_batch / n))
    xb, _ = ws.batch(np.tile(starts[:n], reps)[: args.infer_batch])
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    x1 = xb[:1].copy()
    meta = {"variables": ws.meta.variables, "targets": ws.meta.targets, "freq": "h", "dataset": "synthetic"}
    ort_device = "cuda" if dev.type == "cuda" else "cpu"
    for cell in args.cells:
        model = models.get(cell)
        if model is None:  # training was skipped or failed: random weights still tell speed and parity
            torch.manual_seed(0)
            model = Forecaster(model_spec(ws, Candidate(cell, args.hidden, args.layers), make_settings(args), None))
        model = model.cpu().eval()
        scale = model.target_scale().numpy().astype(np.float64)
        with torch.inference_mode():
            ref1 = model(torch.from_numpy(x1)).numpy().astype(np.float64)
            refb = model(torch.from_numpy(xb)).numpy().astype(np.float64)
        try:
            t0 = time.perf_counter()
            path = export_onnx(model, tmp / f"{cell}.onnx", meta, example=xb[:2])
            seconds = time.perf_counter() - t0
            shipped[cell] = path
            eng_meta = OnnxForecaster.from_path(path, device="cpu").metadata
            out.emit(
                "export",
                cell=cell,
                variant=eng_meta.get("export"),
                seconds=round(seconds, 2),
                bytes=path.stat().st_size,
                hybrid_min_batch=eng_meta.get("hybrid_min_batch"),
                hybrid_min_batch_cuda=eng_meta.get("hybrid_min_batch_cuda"),
            )
            if eng_meta.get("export") == "hybrid":
                hybrid = path
            else:
                t0 = time.perf_counter()
                hybrid = export_onnx(model, tmp / f"{cell}-hybrid.onnx", meta, example=xb[:2], variant="hybrid")
                out.emit(
                    "export",
                    cell=cell,
                    variant="hybrid",
                    seconds=round(time.perf_counter() - t0, 2),
                    bytes=hybrid.stat().st_size,
                    purpose="branch measurement only",
                )
        except Exception as e:
            out.error("infer", e, cell=cell, step="export")
            continue

        # torch eager on the device, fp32 without TF32 (as cellcast evaluates)
        torch_tput = None
        try:
            exact_fp32(dev)
            m = copy.deepcopy(model).to(dev).eval()
            t1, tb = torch.from_numpy(x1).to(dev), torch.from_numpy(xb).to(dev)

            def run(t):
                with torch.inference_mode():
                    y = m(t).cpu()
                return y

            rel = float((np.abs(run(tb).numpy().astype(np.float64) - refb) / scale).max())
            p50, p99 = latency(lambda t1=t1: run(t1), args.n_latency)
            torch_tput = throughput(lambda tb=tb: run(tb), len(xb), args.infer_budget)
            out.emit(
                "infer",
                cell=cell,
                engine=f"torch-eager-{dev.type}",
                provider=None,
                parity_rel_batch=rel,
                p50_ms=p50,
                p99_ms=p99,
                batch=len(xb),
                windows_per_s=round(torch_tput),
                tf32=tf32_settings(),
            )
            m = None  # free the device's copy
        except Exception as e:
            out.error("infer", e, cell=cell, engine="torch-eager")

        # ONNX Runtime on the device: the file that ships (with its per-device branch), then each branch
        figures = {}
        for name, file, switch in (
            ("ort-shipped", path, None),
            ("ort-hybrid-native", hybrid, "never"),
            ("ort-hybrid-unrolled", hybrid, 1),
        ):
            try:
                t0 = time.perf_counter()
                eng = OnnxForecaster.from_path(file, device=ort_device, cpu_batch_threshold=0, hybrid_min_batch=switch)
                load_s = time.perf_counter() - t0
                f = _engine_figures(eng, x1, xb, ref1, refb, scale, args)
                figures[name] = f
                out.emit(
                    "infer",
                    cell=cell,
                    engine=f"{name}-{ort_device}",
                    batch=len(xb),
                    load_s=round(load_s, 2),
                    vs_torch=round(f["windows_per_s"] / torch_tput, 2) if torch_tput else None,
                    parity_ok=max(f["parity_rel_batch1"], f["parity_rel_batch"]) <= args.parity_rtol,
                    **f,
                )
                del eng
            except Exception as e:
                out.error("infer", e, cell=cell, engine=name)
        if ort_device == "cuda" and "ort-shipped" in figures and torch_tput:
            f = figures["ort-shipped"]
            out.emit(
                "target",
                name=f"ort-cuda-{cell}-batch{len(xb)}-vs-torch",
                value=round(f["windows_per_s"] / torch_tput, 2),
                goal=ORT_VS_TORCH,
                unit="x torch eager",
                met=f["provider"] == CUDA and f["windows_per_s"] / torch_tput >= ORT_VS_TORCH,
                device=str(dev),
            )

        # which branch the device wants, by batch size: unrolled vs native at a few sizes
        try:
            engines = {
                b: OnnxForecaster.from_path(hybrid, device=ort_device, cpu_batch_threshold=0, hybrid_min_batch=b)
                for b in ("never", 1)
            }
            sizes = [b for b in args.branch_batches if b <= len(xb)]
            timings, rows = [], []
            for b in sizes:
                x = xb[:b]
                unrolled, native = engines[1], engines["never"]
                t_unrolled = len(x) / throughput(lambda x=x: unrolled.predict(x), len(x), args.infer_budget / 2)
                t_native = len(x) / throughput(lambda x=x: native.predict(x), len(x), args.infer_budget / 2)
                timings.append((b, t_unrolled, t_native))
                rows.append(
                    {"batch": b, "unrolled_ms": round(1e3 * t_unrolled, 4), "native_ms": round(1e3 * t_native, 4)}
                )
            switch = pick_threshold(timings)
            suggest = "never" if switch > sizes[-1] else switch
            out.emit(
                "branch-choice",
                cell=cell,
                device=ort_device,
                provider=engines[1].provider,
                timings=rows,
                suggested_hybrid_min_batch=suggest,
                exported=(engines[1].metadata.get(f"hybrid_min_batch{'_cuda' if ort_device == 'cuda' else ''}")),
            )
            engines = {}
        except Exception as e:
            out.error("infer", e, cell=cell, step="branch-choice")

        # ONNX Runtime on the CPU of this machine (measured above when the device is the CPU), and batch-1
        # latency by thread count: the small requests a GPU host sends to its CPU session
        try:
            if ort_device != "cpu":
                eng = OnnxForecaster.from_path(path, device="cpu")
                f = _engine_figures(eng, x1, xb, ref1, refb, scale, args)
                out.emit(
                    "infer",
                    cell=cell,
                    engine="ort-shipped-cpu",
                    batch=len(xb),
                    threads="default",
                    parity_ok=max(f["parity_rel_batch1"], f["parity_rel_batch"]) <= args.parity_rtol,
                    **f,
                )
            sweep = []
            for k in args.cpu_threads:
                e1 = OnnxForecaster.from_path(path, device="cpu", threads=k or None)
                p50, p99 = latency(lambda e1=e1: e1.predict(x1), args.n_latency)
                sweep.append({"threads": k or "default", "p50_ms": p50, "p99_ms": p99})
            out.emit("cpu-threads", cell=cell, batch=1, sweep=sweep, cpus=os.cpu_count())
        except Exception as e:
            out.error("infer", e, cell=cell, engine="ort-cpu")


def section_serve(out: Out, args, ws: WindowSet, dev: torch.device, shipped: dict) -> None:
    import pandas as pd

    from cellcast.pipeline.engine.inference import OnnxForecaster
    from cellcast.pipeline.serving.requests import forecast_json, parse_request

    ort_device = "cuda" if dev.type == "cuda" else "cpu"
    s = ws.starts["test"][0]
    L = ws.meta.lookback
    window = ws.values[s : s + L]
    stamps = [t.isoformat() for t in pd.DatetimeIndex(ws.timestamps[s : s + L])]
    for cell in args.cells:
        path = shipped.get(cell)
        if path is None:
            out.emit("serve", cell=cell, skipped="no export (the infer section did not run or failed)")
            continue
        try:
            t0 = time.perf_counter()
            eng = OnnxForecaster.from_path(path, device=ort_device)  # as the service loads it: calibrated
            load_s = time.perf_counter() - t0
            out.emit(
                "serve-engine",
                cell=cell,
                load_s=round(load_s, 2),
                **{
                    k: v
                    for k, v in eng.describe().items()
                    if k in ("provider", "cpu_batch_threshold", "calibration", "export", "hybrid_min_batch")
                },
                batch1_engine=eng.engine_for(1),
            )
            x1 = window[None].astype(np.float32)
            p50, p99 = latency(lambda eng=eng, x1=x1: eng.predict(x1), args.n_latency)
            out.emit(
                "serve",
                cell=cell,
                path="engine",
                engine_used=eng.engine_for(1),
                p50_ms=p50,
                p99_ms=p99,
                n=args.n_latency,
            )
            if ort_device == "cuda":
                out.emit(
                    "target",
                    name=f"served-batch1-p50-{cell}",
                    value=p50,
                    goal=SERVED_P50_MS,
                    unit="ms",
                    met=p50 <= SERVED_P50_MS,
                    device=str(dev),
                    engine_used=eng.engine_for(1),
                )
            for with_time in (False, True):
                payload = {"values": {v: window[:, j].tolist() for j, v in enumerate(eng.variables)}}
                if with_time:
                    payload["timestamps"] = stamps
                body = json.dumps(payload)

                def request():
                    batch, whens, single, future = parse_request(json.loads(body), eng)[:4]
                    y, used = eng.predict_with_provider(batch, future)
                    return json.dumps({"provider": used, **forecast_json(y[0], whens[0], eng.targets)})

                p50, p99 = latency(request, args.n_latency)
                out.emit(
                    "serve",
                    cell=cell,
                    path="parse+engine",
                    timestamps=with_time,
                    engine_used=eng.last_provider,
                    p50_ms=p50,
                    p99_ms=p99,
                    n=args.n_latency,
                    body_bytes=len(body),
                )
            _serve_http(out, args, cell, path, body, ort_device, eng.cpu_batch_threshold)
        except Exception as e:
            out.error("serve", e, cell=cell)


def _serve_http(out: Out, args, cell: str, path: Path, body: str, device: str, threshold: int) -> None:
    """The FastAPI app itself through an in-process ASGI client (httpx): where FastAPI is installed."""
    try:
        from fastapi.testclient import TestClient

        from cellcast.pipeline.serving.service import create_app
    except ImportError as e:
        out.emit("serve", cell=cell, path="http-asgi", skipped=f"FastAPI not installed ({e.name})")
        return
    app = create_app(
        make_settings(args),
        source=lambda: (path, "gpu-check"),
        device=device,
        poll_seconds=3600,
        cpu_batch_threshold=threshold,
    )
    server_ms = []
    with TestClient(app) as client:

        def request():
            r = client.post("/v1/forecast", content=body, headers={"content-type": "application/json"})
            r.raise_for_status()
            server_ms.append(r.json()["latency_ms"])

        p50, p99 = latency(request, args.n_latency)
    out.emit(
        "serve",
        cell=cell,
        path="http-asgi",
        p50_ms=p50,
        p99_ms=p99,
        n=args.n_latency,
        engine_p50_ms=round(float(np.median(server_ms)), 4),
        note="in-process ASGI client: includes the client's own cost, no network",
    )


# --- the summary -----------------------------------------------------------------------------------


def summary(rows: list[dict]) -> str:
    env = next((r for r in rows if r["kind"] == "env"), {})
    lines = [
        f"# GPU check: {env.get('gpu') or 'CPU'} · {env.get('date')} · torch {env.get('torch')} · "
        f"{env.get('ort_package')} {env.get('ort_version')} · `{env.get('command')}`",
        "",
    ]
    train = [r for r in rows if r["kind"] == "train"]
    if train:
        batches = sorted({r["batch"] for r in train if r["loop"] == "cellcast"})
        lines += [
            "## Training windows/s (the trainer vs the seed loop, same device and network)",
            "",
            "| cell | seed loop (batch 64) | "
            + " | ".join(f"cellcast b{b}" for b in batches)
            + " | best vs seed | target |",
            "| --- | ---: | " + " | ".join("---:" for _ in batches) + " | ---: | --- |",
        ]
        for cell in dict.fromkeys(r["cell"] for r in train):
            seed = next((r["windows_per_s"] for r in train if r["cell"] == cell and r["loop"] == "seed"), None)
            got = {r["batch"]: r["windows_per_s"] for r in train if r["cell"] == cell and r["loop"] == "cellcast"}
            best = max(got.values(), default=0)
            goal = TRAIN_TARGETS.get(cell)
            met = bool(seed) and best >= goal and best / seed >= SEED_FACTOR
            lines.append(
                f"| {cell} | {f'{seed:,}' if seed else '-'} | "
                + " | ".join(f"{got[b]:,}" if b in got else "-" for b in batches)
                + f" | {f'{best / seed:.1f}x' if seed and best else '-'} | >= {goal:,} and >= {SEED_FACTOR}x: "
                f"{'met' if met else 'not met'} |"
            )
        lines.append("")
    ttq = [r for r in rows if r["kind"] == "ttq"]
    if ttq:
        tgt = next((r for r in rows if r["kind"] == "ttq-target"), {})
        lines += [
            f"## Time to a validation loss of {tgt.get('target_val_loss')} ({tgt.get('target_frac')} x seasonal "
            f"naive's {tgt.get('seasonal_naive_val_loss')}), budget {tgt.get('budget_s')} s",
            "",
            "| cell | loop | batch | reached at | best in budget |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for r in ttq:
            lines.append(
                f"| {r['cell']} | {r['loop']} | {r['batch']} | "
                f"{'not reached' if r['reached_s'] is None else str(r['reached_s']) + ' s'} | {r['best_val_loss']} |"
            )
        lines.append("")
    infer = [r for r in rows if r["kind"] == "infer"]
    if infer:
        lines += [
            "## Inference (parity: max |diff| / target scale vs torch fp32 on the CPU)",
            "",
            "| cell | engine | provider | parity b1 / batch | p50 ms | p99 ms | windows/s | vs torch |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in infer:
            par = (
                f"{r.get('parity_rel_batch1', 0):.1e} / {r.get('parity_rel_batch', 0):.1e}"
                if "parity_rel_batch1" in r
                else f"- / {r.get('parity_rel_batch', 0):.1e}"
            )
            lines.append(
                f"| {r['cell']} | {r['engine']} | {r.get('provider') or '-'} | {par} | {r['p50_ms']} | "
                f"{r['p99_ms']} | {r['windows_per_s']:,} | {r.get('vs_torch') or '-'} |"
            )
        lines.append("")
    for r in (r for r in rows if r["kind"] == "branch-choice"):
        lines.append(
            f"- {r['cell']} hybrid branches on {r['device']} ({r['provider']}): "
            + ", ".join(
                f"b{t['batch']}: unrolled {t['unrolled_ms']} ms / native {t['native_ms']} ms" for t in r["timings"]
            )
            + f" -> suggested switch `{r['suggested_hybrid_min_batch']}` (exported: `{r['exported']}`)"
        )
    serve = [r for r in rows if r["kind"] == "serve" and "p50_ms" in r]
    if serve:
        lines += [
            "",
            "## Served batch 1",
            "",
            "| cell | path | engine | p50 ms | p99 ms |",
            "| --- | --- | --- | ---: | ---: |",
        ]
        for r in serve:
            path = r["path"] + (" (with timestamps)" if r.get("timestamps") else "")
            lines.append(f"| {r['cell']} | {path} | {r.get('engine_used') or '-'} | {r['p50_ms']} | {r['p99_ms']} |")
    targets = [r for r in rows if r["kind"] == "target"]
    if targets:
        lines += ["", "## Targets", ""] + [
            f"- {r['name']}: {r['value']} {r['unit']} (goal {r['goal']}): **{'met' if r['met'] else 'not met'}**"
            for r in targets
        ]
    errors = [r for r in rows if r["kind"] == "error"]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {r['section']} {r.get('cell', '')}: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------------


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.jsonl and gpu_check.md")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and budgets: the dry run (seconds)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--vars", type=int, default=7)
    ap.add_argument("--lookback", type=int, default=168)
    ap.add_argument("--horizon", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3, help="both loops (params.yaml's train.lr)")
    ap.add_argument("--batch", type=int, nargs="+", default=[4096, 8192, 16384], help="trainer batch sizes (cap 16384)")
    ap.add_argument("--steps", type=int, default=16, help="optimizer steps per measured epoch")
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--seed-batch", type=int, default=64)
    ap.add_argument("--seed-budget", type=float, default=4.0, help="seconds of seed-loop steps for its windows/s")
    ap.add_argument(
        "--ttq-budget", type=float, default=10.0, help="seconds per loop, batch and cell for time to quality"
    )
    ap.add_argument(
        "--ttq-batch", type=int, nargs="+", default=[1024, 4096], help="trainer batch sizes for time to quality"
    )
    ap.add_argument("--ttq-every", type=int, default=32768, help="windows between validations (both loops)")
    ap.add_argument("--target-frac", type=float, default=0.8, help="target = this x the seasonal-naive val loss")
    ap.add_argument("--infer-batch", type=int, default=4096)
    ap.add_argument("--branch-batches", type=int, nargs="+", default=[16, 256, 1024, 4096])
    ap.add_argument("--n-latency", type=int, default=200)
    ap.add_argument("--infer-budget", type=float, default=2.0, help="seconds per throughput figure")
    ap.add_argument(
        "--cpu-threads", type=int, nargs="+", default=[1, 2, 4, 0], help="ORT CPU threads at batch 1 (0: default)"
    )
    ap.add_argument("--parity-rtol", type=float, default=1e-3, help="registry.parity_atol's default")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.lookback, args.horizon, args.hidden, args.layers = 3000, 48, 12, 8, 1
        args.batch, args.steps, args.train_epochs, args.seed_budget = [64, 128], 2, 1, 0.2
        args.ttq_budget, args.ttq_batch, args.ttq_every = 1.0, [64], 256
        args.infer_batch, args.branch_batches, args.n_latency, args.infer_budget = 64, [1, 64], 10, 0.1
        args.cpu_threads = [1, 0]
    args.batch = [min(b, 16384) for b in args.batch]  # cuDNN's LSTM crashed at 32768 (params.yaml max_batch_size)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    dev = torch.device(args.device)
    exact_fp32(dev)  # the project's setting on a GPU (the trainer sets it too): fp32 without TF32 everywhere
    out = Out(args.out)
    t_start = time.perf_counter()
    ort_info = {}
    try:
        from cellcast.pipeline.engine.inference import package_info

        ort_info = package_info()
    except Exception as e:
        ort_info = {"package": "onnxruntime", "version": None, "error": str(e).splitlines()[0]}
    gpu = torch.cuda.is_available()
    out.emit(
        "env",
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        host=socket.gethostname(),
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if gpu else None,
        gpu=torch.cuda.get_device_name() if gpu else None,
        gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if gpu else None,
        cpus=os.cpu_count(),
        device=str(dev),
        ort_package=ort_info.get("package"),
        ort_version=ort_info.get("version"),
        ort_providers=ort_info.get("providers"),
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        quick=args.quick,
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    )
    if "doctor" in args.sections:
        try:
            section_doctor(out, args)
        except Exception as e:
            out.error("doctor", e)
    try:
        ws = window_set(args)
    except Exception as e:
        out.error("data", e)
        return finish(out, args, t_start, 1)
    out.emit(
        "config",
        rows=ws.meta.rows,
        vars=len(ws.meta.variables),
        lookback=ws.meta.lookback,
        horizon=ws.meta.horizon,
        hidden=args.hidden,
        layers=args.layers,
        windows={k: int(len(v)) for k, v in ws.starts.items()},
        cells=args.cells,
        batches=args.batch,
        seed_batch=args.seed_batch,
    )
    models: dict = {}
    shipped: dict = {}
    with tempfile.TemporaryDirectory(prefix="cellcast-gpu-check-") as tmp:
        for name, fn in (
            ("train", lambda: section_train(out, args, ws, dev, models)),
            ("ttq", lambda: section_ttq(out, args, ws, dev)),
            ("infer", lambda: section_infer(out, args, ws, dev, models, Path(tmp), shipped)),
            ("serve", lambda: section_serve(out, args, ws, dev, shipped)),
        ):
            if name in args.sections:
                t0 = time.perf_counter()
                try:
                    fn()
                except Exception as e:
                    out.error(name, e)
                out.emit("section", name=name, seconds=round(time.perf_counter() - t0, 1))
    return finish(out, args, t_start, 0)


def finish(out: Out, args, t_start: float, code: int) -> int:
    out.emit("end", seconds=round(time.perf_counter() - t_start, 1), errors=sum(r["kind"] == "error" for r in out.rows))
    (args.out / "gpu_check.md").write_text(summary(out.rows))
    out.fh.close()
    print(f"\nwrote {out.path} and {args.out / 'gpu_check.md'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
