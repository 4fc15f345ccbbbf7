"""A global model on a panel at scale: windowing memory, training throughput (global vs local models), accuracy
(global vs local vs seasonal naive) and one batch forecast for every series in one ONNX call.

The panel is bench/panel_data.py's synthetic one (1,000 series x 8,760 hourly steps: daily + weekly seasonality,
noise, level shifts, 2% missing, outages; 5 series with an infinite reading, dropped by the policy), ingested and
validated by the library here. Then:

- windowing: the window set of the first 100 and of all series (seconds, resident bytes), and the extra memory of
  drawing and gathering training batches as the trainer does (tracemalloc peak over 50 batches, numpy's and
  torch's CPU allocations): what must stay flat in the number of series;
- training: one global GRU on all series, and local GRUs (same settings per model) on --local-series series,
  windows/s each, the local time extrapolated to every series;
- accuracy: test MASE per series (windows a horizon apart) of the global model, the local models and each series'
  strongest seasonal naive, on the local subset and (global vs baseline) on every series;
- the batch forecast: the global model exported to ONNX, `forecast_panel_frame` over every series (one call: the
  batch is the series), and the ONNX call alone.

    .venv/bin/python bench/panel_model.py [--series 1000] [--steps 8760] [--local-series 10] [--threads 1] [--quick]
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
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
RESULTS = ROOT / "bench" / "results"

from panel_data import INGEST_COLUMNS, synthetic_panel  # noqa: E402

TRAIN = {
    "cells": ["gru"],
    "hidden_size": 64,
    "epochs": 5,
    "max_train_windows": 8000,
    "max_val_windows": 20000,
    "batch_size": 256,
    "patience": 3,
    "device": "cpu",
    "time_budget_s": 600,
}


def settings_for(work: Path, **train):
    from cellcast.pipeline.config import load_params

    s = load_params(work / "params.yaml").for_dataset("bench")
    return s.model_copy(
        update={
            "ingest": s.ingest.model_copy(update={"long_gaps": "segment", "bad_series": "drop"}),
            "train": s.train.model_copy(update={**TRAIN, **train}),
            "evaluate": s.evaluate.model_copy(update={"calibration_windows": 20000}),
        }
    )


def mib(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)


def window_bytes(ws) -> int:
    arrays = [ws.values, *ws.starts.values(), ws.offsets, ws.lengths, ws.train_end]
    arrays += [a for a in (ws.filled, ws.future) if a is not None]
    return int(sum(a.nbytes for a in arrays))


def batch_memory(ws, batches: int = 50, batch: int = 256) -> dict:
    """Peak extra memory (tracemalloc: numpy's and torch's CPU allocations are traced) of drawing and gathering
    `batches` training batches as the trainer does, beyond the window set itself."""
    import torch

    from cellcast.pipeline.modeling.train import panel_sampler

    tw = ws.to_torch("cpu")
    gen = torch.Generator().manual_seed(0)
    tracemalloc.start()
    t0 = time.perf_counter()
    draw = panel_sampler(ws, tw.starts["train"], "cpu")
    for _ in range(batches):
        idx = draw(batch, gen)
        x, y = tw.batch(idx)
        f = tw.future(idx)
        m = tw.target_mask(idx)
        del x, y, f, m
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"batch_peak_mib": mib(peak), "batches": batches, "batch": batch, "batch_seconds": round(seconds, 3)}


def origins(ws):
    """The test windows a horizon apart in each series (none shares a target row)."""
    from cellcast.pipeline.modeling.evaluate import forecast_origins

    return ws.with_starts(test=forecast_origins(ws, "test"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=8760)
    ap.add_argument("--small", type=int, default=100, help="the smaller panel the windowing memory is compared with")
    ap.add_argument("--local-series", type=int, default=10, help="series given a local model each")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for training (on this shared 2-core machine 2 threads trained ~70x slower "
        "than 1: the cores are taken and the second thread waits)",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 series x 2,000 steps, no results file")
    args = ap.parse_args()
    n, steps, small = (40, 2000, 10) if args.quick else (args.series, args.steps, args.small)
    k_local = min(args.local_series, n)
    import torch

    torch.set_num_threads(args.threads)
    from cellcast.pipeline.catalog import read_validated_panel
    from cellcast.pipeline.data.ingest import ingest_file
    from cellcast.pipeline.data.panel_windows import build_panel_windows
    from cellcast.pipeline.data.validation import validate_dataset
    from cellcast.pipeline.engine.inference import OnnxForecaster
    from cellcast.pipeline.engine.onnx_export import export_onnx
    from cellcast.pipeline.modeling import panel_eval
    from cellcast.pipeline.modeling.anchor import choose_anchor
    from cellcast.pipeline.modeling.evaluate import forecast_windows
    from cellcast.pipeline.modeling.local import LocalTask, series_set, train_local
    from cellcast.pipeline.modeling.train import Candidate, predictor, train_candidate
    from cellcast.pipeline.registry.assessment import baselines
    from cellcast.pipeline.registry.metadata import model_metadata
    from cellcast.pipeline.serving.forecast import forecast_panel_frame

    common = {
        "bench": "panel_model",
        "series": n,
        "steps": steps,
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    lines = []

    def emit(**kw):
        lines.append({**common, "load_avg": [round(x, 2) for x in os.getloadavg()], **kw})
        print(json.dumps(lines[-1]), flush=True)

    work = Path(tempfile.mkdtemp(prefix="cellcast-panel-model-"))
    cwd = os.getcwd()
    try:
        shutil.copy(ROOT / "params.yaml", work / "params.yaml")
        os.chdir(work)
        s = settings_for(work)
        df = synthetic_panel(n, steps)
        df.to_parquet(work / "panel.parquet", index=False)
        del df
        t0 = time.perf_counter()
        ingest_file(
            work / "panel.parquet",
            **INGEST_COLUMNS,
            fmt="parquet",
            settings=s,
        )
        t1 = time.perf_counter()
        rep = validate_dataset(s)
        emit(
            stage="ingest + validate",
            ingest_s=round(t1 - t0, 1),
            validate_s=round(time.perf_counter() - t1, 1),
            kept=rep.panel["kept"],
            dropped=rep.panel["dropped"],
            cold_start=rep.panel["cold_start"],
        )

        frame, meta = read_validated_panel(s)
        ids = sorted(frame["series_id"].unique())
        sets = {}
        for label, keep in ((f"{small} series", ids[:small]), (f"{len(ids)} series", ids)):
            part = frame[frame["series_id"].isin(set(keep))] if len(keep) < len(ids) else frame
            t0 = time.perf_counter()
            ws = build_panel_windows(part, meta, settings=s)
            built = time.perf_counter() - t0
            L, H, V = ws.meta.lookback, ws.meta.horizon, len(ws.meta.variables)
            windows = sum(len(v) for v in ws.starts.values())
            emit(
                stage="windows",
                panel=label,
                seconds=round(built, 2),
                rows=len(ws.values),
                windows=windows,
                lookback=L,
                horizon=H,
                window_set_mib=mib(window_bytes(ws)),
                materialised_mib=mib(windows * (L + H) * V * 4),
                **batch_memory(ws),
            )
            sets[label] = ws
        ws = sets[f"{len(ids)} series"]
        del sets, frame

        # training: the global model on every series, local models on a subset, the same settings per model
        base = baselines(ws, s)
        anchor = choose_anchor(ws, s, base.anchor_season)
        cand = Candidate("gru", TRAIN["hidden_size"], 1)
        t0 = time.perf_counter()
        glob = train_candidate(ws, cand, s, anchor=anchor, device="cpu")
        g_seconds = time.perf_counter() - t0
        emit(
            stage="train global",
            model=cand.name,
            epochs=len(glob.history),
            windows_per_s=round(glob.windows_per_s),
            seconds=round(g_seconds, 1),
            windows_drawn=len(glob.history) * TRAIN["max_train_windows"],
            anchor=anchor.kind,
            season=anchor.season,
        )
        own = [i for i, sid in enumerate(ws.series_ids) if ws.meta.panel["counts"][sid].get("train")]
        pick = [own[j] for j in np.linspace(0, len(own) - 1, k_local).round().astype(int)]
        local = [train_local(LocalTask(ws.series_ids[i], series_set(ws, i), cand, s, base.anchor_season)) for i in pick]
        l_seconds = sum(r.seconds for r in local)
        emit(
            stage="train local",
            model=cand.name,
            models=len(local),
            failed=sum(r.pred is None for r in local),
            windows_per_s=round(float(np.mean([r.windows_per_s for r in local]))),
            seconds=round(l_seconds, 1),
            seconds_per_model=round(l_seconds / len(local), 1),
            extrapolated_all_series_s=round(l_seconds / len(local) * len(own)),
        )

        # accuracy on test windows a horizon apart: global vs local vs each series' strongest seasonal naive
        test = origins(ws)
        seasons = [m for m in ws.meta.seasons if m > 1]
        t0 = time.perf_counter()
        pred = forecast_windows(lambda x, f: (predictor(glob.model)(x, f), None), test, test.starts["test"])[0]
        g_table = panel_eval.series_table(test.with_starts(cold=np.zeros(0, np.int64)), {"test": pred}, seasons)
        agg = panel_eval.aggregate(g_table)
        emit(
            stage="accuracy, every series",
            windows=len(test.starts["test"]),
            score_s=round(time.perf_counter() - t0, 1),
            global_mean_mase=round(agg["mean_mase"], 4),
            global_median_mase=round(agg["median_mase"], 4),
            baseline_mean_mase=round(agg["mean_strongest_baseline_mase"], 4),
            baseline_median_mase=round(agg["median_strongest_baseline_mase"], 4),
            share_improved=round(agg["share_improved"], 3),
            worst_series=agg["worst_series"],
            worst_mase=round(agg["worst_mase"], 4),
        )
        rows = []
        for i, r in zip(pick, local):
            sid = ws.series_ids[i]
            one = series_set(ws, i)
            o = origins(one)
            keep = np.isin(one.starts["test"], o.starts["test"])
            g = g_table.set_index("series_id").loc[sid]
            lm = np.nan
            if r.pred is not None:
                lt = panel_eval.series_table(o.with_starts(cold=np.zeros(0, np.int64)), {"test": r.pred[keep]}, seasons)
                lm = float(lt["mase"].iloc[0])
            rows.append({"series": sid, "global": g["mase"], "local": lm, "baseline": g["strongest_mase"]})
        sub = pd.DataFrame(rows)
        emit(
            stage="accuracy, local subset",
            series_compared=len(sub),
            global_mean_mase=round(sub["global"].mean(), 4),
            local_mean_mase=round(sub["local"].mean(), 4),
            baseline_mean_mase=round(sub["baseline"].mean(), 4),
            global_beats_local=int((sub["global"] < sub["local"]).sum()),
            per_series=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
        )

        # one batch forecast for every series: one ONNX call
        path = export_onnx(
            glob.model,
            work / "global.onnx",
            model_metadata(ws, s, cand.name),
            example=ws.inputs(ws.starts["test"][:2])[0],
        )
        eng = OnnxForecaster.from_path(path, device="cpu")
        frame, _ = read_validated_panel(s)
        forecast_panel_frame(eng, frame.head(20000))  # warm-up
        t0 = time.perf_counter()
        out, provider, skipped = forecast_panel_frame(eng, frame, version=1, model_name="bench-forecaster")
        whole = time.perf_counter() - t0
        x = eng.synthetic_input(out["series_id"].nunique())
        f = eng.synthetic_future(len(x))
        eng.predict_all(x, f)
        calls = []
        for _ in range(5):
            t0 = time.perf_counter()
            eng.predict_all(x, f)
            calls.append(time.perf_counter() - t0)
        emit(
            stage="batch forecast",
            series=int(out["series_id"].nunique()),
            not_forecast=len(skipped),
            rows=len(out),
            provider=provider,
            forecast_panel_frame_s=round(whole, 3),
            onnx_call_s_median=round(float(np.median(calls)), 4),
            ort_threads="default (the machine's cores)",
        )
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / "panel-model-cpu.jsonl", "a") as fh:
            fh.writelines(json.dumps(x) + "\n" for x in lines)


if __name__ == "__main__":
    main()
