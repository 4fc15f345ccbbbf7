"""Run one prototype configuration on one or more datasets; a JSONL row per run.

    PYTHONPATH=$PWD .venv/bin/python bench/research/experiment.py --datasets elecdemand chicago \
        --tag linear-cal --set anchor=linear future=calendar cells=gru,lstm,rnn

`--set key=value` overrides DEFAULTS (below). `cells` with several cells trains one member per cell and also
scores their mean (the ensemble). Scores: the test split's non-overlapping origins (every horizon), the same
windows as classical.py and current.py; stride 1 as well.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import proto  # noqa: E402

# the pipeline's choices today: anchor season = the best seasonal naive on validation (current.py prints it)
PIPELINE_ANCHOR = {"elecdemand": 336, "chicago": 7, "glucose": 1, "sp500": 1}
MAIN_SEASON = {"elecdemand": 336, "chicago": 7, "glucose": 288, "sp500": 5}
HOLIDAYS = {"elecdemand": ("AU", "VIC"), "chicago": ("US", "IL"), "glucose": (None, None), "sp500": ("US", None)}
# calendar parts per dataset: day of year only where training spans several years (elecdemand is one year:
# its test months are never seen in training)
CAL_PARTS = {
    "elecdemand": ("tod", "dow", "holiday"),
    "chicago": ("dow", "doy", "holiday"),
    "glucose": ("tod", "dow"),
    "sp500": ("dow", "holiday"),
}
# user-supplied columns that are known in advance (WorkDay is a calendar fact) vs oracle (observed weather)
KNOWN = {"elecdemand": ["WorkDay"], "chicago": [], "glucose": [], "sp500": []}
ORACLE = {
    "elecdemand": ["Temperature"],
    "chicago": ["temp", "percip", "humidity", "weather_rain", "weather_snow"],
    "glucose": [],
    "sp500": [],
}

DEFAULTS = {
    "cells": "gru",
    "hidden": 64,
    "layers": 1,
    "rnn_steps": 48,
    "lookback": 0,  # 0: the pipeline's lookback
    "anchor": "snaive",
    "anchor_season": 0,
    "profile_k": 3,
    "level_steps": 0,  # 0: the pipeline's anchor
    "diff_season": -1,  # -1: the anchor's season
    "linear_all_vars": False,
    "linear_future": True,
    "linear_trainable": False,
    "future": "none",  # none | calendar | known (calendar + known columns) | oracle (+ weather)
    "head_future": True,
    "head_anchor": True,
    "cell_future_past": False,
    "epochs": 10,
    "batch_size": 256,
    "max_train_windows": 8000,
    "lr": 3e-3,
    "patience": 4,
    "seed": 42,
    "dow_onehot": False,
    "decoder": False,
    "crossfit": 0,
}


def parse_sets(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, v = it.split("=", 1)
        if k not in DEFAULTS:
            raise SystemExit(f"--set {k}: unknown key (one of {', '.join(DEFAULTS)})")
        d = DEFAULTS[k]
        out[k] = (v.lower() in ("1", "true", "yes")) if isinstance(d, bool) else type(d)(v)
    return out


def series(d: harness.Data, cfg: dict) -> proto.Series:
    L = cfg["lookback"] or d.L
    fut, names = None, []
    if cfg["future"] != "none":
        country, sub = HOLIDAYS[d.name]
        parts = CAL_PARTS[d.name] + (("dow_onehot",) if cfg["dow_onehot"] else ())
        fut, names = proto.calendar_features(d.timestamps, d.freq, country, sub, parts)
        cols = KNOWN[d.name] + (ORACLE[d.name] if cfg["future"] == "oracle" else [])
        if cfg["future"] in ("known", "oracle") and cols:
            idx = [d.meta["variables"].index(c) for c in cols]
            v = d.values[:, idx]
            tr = v[: d.val_start]
            mu, sd = np.nanmean(tr, 0), np.nanstd(tr, 0)
            sd = np.where(sd < 1e-8, 1.0, sd)
            fut = np.concatenate([fut, ((v - mu) / sd).astype(np.float32)], 1)
            names += cols
        fut = np.nan_to_num(fut).astype(np.float32)
    return proto.Series(d.name, d.values, d.tidx, L, d.H, d.val_start, d.test_start, fut, names)


def build(d: harness.Data, ser: proto.Series, cfg: dict, cell: str) -> proto.ProtoForecaster:
    mean, std = ser.train_stats()
    m = cfg["anchor_season"] or PIPELINE_ANCHOR[d.name]
    diff = cfg["diff_season"]
    diff = (m if m > 1 else None) if diff < 0 else (diff or None)
    spec = proto.ProtoSpec(
        cell=cell,
        n_vars=ser.values.shape[1],
        target_idx=ser.target_idx,
        lookback=ser.lookback,
        horizon=ser.horizon,
        hidden_size=cfg["hidden"],
        num_layers=cfg["layers"],
        rnn_steps=cfg["rnn_steps"],
        diff_season=diff,
        anchor=cfg["anchor"],
        anchor_season=m,
        profile_k=cfg["profile_k"],
        level_steps=cfg["level_steps"],
        linear_all_vars=cfg["linear_all_vars"],
        linear_future=cfg["linear_future"],
        linear_trainable=cfg["linear_trainable"],
        n_future=ser.n_future,
        head_future=cfg["head_future"],
        head_anchor=cfg["head_anchor"],
        cell_future_past=cfg["cell_future_past"],
        decoder=cfg["decoder"],
        mean=[float(x) for x in mean],
        std=[float(x) for x in std],
    )
    return proto.ProtoForecaster(spec)


def score_all(d: harness.Data, ser: proto.Series, model, starts_h: np.ndarray) -> dict:
    out = {}
    for stride, starts in (("horizon", starts_h), (1, d.starts_for("test", 1))):
        orig = d.origins(starts)
        if ser.lookback > d.L:  # a longer lookback: only origins whose longer window is complete
            ok = np.isin(orig, ser.origins("test"))
            starts, orig = starts[ok], orig[ok]
        pred = proto.predict(model, ser, orig)
        out[f"stride_{stride}"] = d.score(pred, starts)
        if stride == "horizon":
            out["_pred"] = pred
            out["by_step"] = harness.mase_by_step(d.targets(starts), pred, d.mase_scale())
        else:
            out["_pred1"] = (starts, pred)
    return out


def run(name: str, cfg: dict, tag: str, out: str, log=print) -> dict:
    d = harness.Data(name)
    ser = series(d, cfg)
    starts_h = d.starts_for("test")
    members, rows = [], []
    for cell in cfg["cells"].split(","):
        model = build(d, ser, cfg, cell)
        extra = {}
        t0 = time.perf_counter()
        if cfg["anchor"] == "linear":
            extra = proto.fit_linear_anchor(model, ser, crossfit=cfg["crossfit"])
        fit_s = time.perf_counter() - t0
        anchor_scores = score_all(d, ser, model, starts_h)  # head zero: the anchor alone
        res = proto.train(
            model,
            ser,
            proto.TrainCfg(
                epochs=cfg["epochs"],
                batch_size=cfg["batch_size"],
                max_train_windows=cfg["max_train_windows"],
                lr=cfg["lr"],
                patience=cfg["patience"],
                seed=cfg["seed"],
            ),
        )
        sc = score_all(d, ser, model, starts_h)
        pred = sc.pop("_pred")
        anchor_scores.pop("_pred"), anchor_scores.pop("_pred1")
        harness.save_forecasts(f"{tag}-{cell}-s{cfg['seed']}", name, starts_h, pred)
        harness.save_forecasts(f"{tag}-{cell}-s{cfg['seed']}-stride1", name, *sc.pop("_pred1"))
        row = {
            "dataset": name,
            "tag": tag,
            "cell": cell,
            "cfg": cfg,
            "future_names": ser.future_names,
            "anchor_only": {k: v for k, v in anchor_scores.items() if k.startswith("stride")},
            **sc,
            **extra,
            "anchor_fit_s": round(fit_s, 2),
            "train_s": res["train_s"],
            "total_s": round(fit_s + res["train_s"], 1),
            "best_epoch": res["best_epoch"],
            "epochs_run": res["epochs_run"],
            "initial_val": res["initial_val"],
            "best_val": res["best_val"],
            "params": int(sum(p.numel() for p in model.parameters())),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            "machine": "2-core CPU VM (shared), torch 2 threads",
        }
        harness.append(out, row)
        rows.append(row)
        members.append(model)
        log(
            f"{name:11s} {tag:28s} {cell:4s} MASE {row['stride_horizon']['mase']:.3f} (anchor alone "
            f"{row['anchor_only']['stride_horizon']['mase']:.3f}; stride 1 {row['stride_1']['mase']:.3f}) "
            f"{row['total_s']}s"
        )
    if len(members) > 1:
        ens = proto.Ensemble(members)
        sc = score_all(d, ser, ens, starts_h)
        pred = sc.pop("_pred")
        harness.save_forecasts(f"{tag}-ens-s{cfg['seed']}", name, starts_h, pred)
        harness.save_forecasts(f"{tag}-ens-s{cfg['seed']}-stride1", name, *sc.pop("_pred1"))
        row = {
            "dataset": name,
            "tag": tag,
            "cell": "ensemble",
            "cfg": cfg,
            **sc,
            "total_s": round(sum(r["total_s"] for r in rows), 1),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            "machine": "2-core CPU VM (shared), torch 2 threads",
        }
        harness.append(out, row)
        log(
            f"{name:11s} {tag:28s} ens  MASE {row['stride_horizon']['mase']:.3f} (stride 1 "
            f"{row['stride_1']['mase']:.3f}) {row['total_s']}s"
        )
    return {"members": members, "rows": rows, "series": ser, "data": d}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["elecdemand", "chicago"])
    ap.add_argument("--tag", required=True)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--seeds", nargs="+", type=int, default=None)
    ap.add_argument("--out", default="experiments.jsonl")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = {**DEFAULTS, **parse_sets(a.set)}
    for seed in a.seeds or [cfg["seed"]]:
        for name in a.datasets:
            run(name, {**cfg, "seed": seed}, a.tag, a.out)


if __name__ == "__main__":
    main()
