"""The peers, side by side (issue 12): Darts, NeuralForecast and statsforecast on cellcast's own test windows.

Runs in its own virtualenv (`bench/peers/setup.sh` -> bench/peers/.venv; never a dependency of cellcast):

    bench/peers/.venv/bin/python bench/peers/run.py                      # everything, every bundled dataset
    bench/peers/.venv/bin/python bench/peers/run.py --datasets chicago --models 'nf-*' sf-mstl
    bench/peers/.venv/bin/python bench/peers/run.py --quick              # smoke run: sp500, tiny budgets
    bench/peers/.venv/bin/python bench/peers/run.py --report             # the markdown table from the JSONL

What it scores, exactly as cellcast does (bench/peers/harness.py, imported, reads the window stage's own
output `data/NAME/windows.npz` + `windows.json` in a scratch project built with the repository's params.yaml;
built here on first use through the project's venv: `cellcast ingest/validate/window`):

- splits: cellcast's. Neural peers train on the training rows and early-stop on the validation rows (the
  library's own validation mechanism), nothing of the test rows; each test window is forecast from the
  observed lookback before its origin (no retraining: Darts `historical_forecasts(retrain=False)`,
  NeuralForecast `cross_validation(refit=False, use_fitted=True)` after `fit(val_size=...)`).
  statsforecast refits per origin on the history before it (`cross_validation(refit=True)`).
- origins: every test window (stride 1) and every `horizon`-th one (non-overlapping targets, the subset
  harness.starts_for gives). Neural peers predict all test windows once; the every-horizon row is that subset.
- metrics: MASE scaled by the in-sample one-step naive MAE of the training rows, sMAPE (%); for models with
  intervals, coverage and mean width of the 80% and 90% intervals and the Winkler score (widths and Winkler
  in MASE units: divided by the same scale).
- budget: 2 threads (torch.set_num_threads, OMP/MKL/numba env), about 2 minutes of fitting per neural model
  (Lightning `max_time`, with the libraries' own step/epoch caps and early stopping); statsforecast
  single-process (n_jobs=1).
"""

from __future__ import annotations

import argparse
import os
import sys

THREADS = int(os.environ.get("PEERS_THREADS", "2"))
for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_k, str(THREADS))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP workers on the shared 2 cores (bench/README)
os.environ.setdefault("PL_DISABLE_FORK", "1")
os.environ.setdefault("NIXTLA_ID_AS_COL", "1")

import fnmatch  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402  (bench/peers/harness.py: the windows and the metric, shared)

RESULTS = HERE / "results"
DATASETS = ("elecdemand", "chicago", "glucose", "sp500")
LEVELS = (80, 90)
SEED = 42

# statsforecast: the natural seasons of each dataset (as cellcast's seasons_for gives them) and the history
# each fit sees (rows before the origin; None = all). Chosen with docs/research.md: MSTL on 8 weeks
# of half-hours is better than on the whole year and 6x cheaper; ETS/Theta on half-hourly data get the daily
# season and 8 weeks; glucose (5-min CGM with breaks) keeps the day season where two full days precede the
# origin (else MSTL's trend model, AutoETS(ZZN), alone) and ETS/Theta without a season on 2 days.
CLASSICAL = {
    "elecdemand": {"mstl": ([48, 336], 336 * 8), "ets": ([48], 336 * 8), "theta": ([48], 336 * 8)},
    "chicago": {"mstl": ([7, 365], None), "ets": ([7], 365 * 3), "theta": ([7], 365 * 3)},
    "glucose": {"mstl": ([288], None), "ets": ([1], 288 * 2), "theta": ([1], 288 * 2)},
    # AutoETS/AutoTheta refitted on 20 years of business days took ~2.5 s an origin here (155 origins): 2 years
    "sp500": {"mstl": ([5], None), "ets": ([5], 504), "theta": ([5], 504)},
}

# cellcast's champion per dataset, from BENCHMARKS.md's quality table (`cellcast run NAME`, 2026-11-27: stride 1)
# and bench/research/results/current*.jsonl (the same models at every-horizon origins). "today": before issue 12's
# model changes; the column is refilled from `cellcast run NAME` once they land.
CELLCAST_TODAY = {
    "elecdemand": {"model": "rnn", "stride1": 2.018, "horizon": 2.002, "smape1": 5.46},
    "chicago": {"model": "rnn", "stride1": 0.288, "horizon": 0.279, "smape1": 9.77},
    "glucose": {"model": "lstm", "stride1": 4.593, "horizon": 4.595, "smape1": 11.32},
    "sp500": {"model": "none (naive)", "stride1": 2.141, "horizon": 2.213, "smape1": 0.90},
}

# cellcast's champion after issue 12 (linear anchor, calendar and known-future inputs, decoder, ensemble, quantiles):
# `cellcast run NAME` with the repository's params.yaml, scored by bench/forecast_quality.py
# (bench/results/forecast-quality-cpu2t.jsonl, 2026-11-28): every test window (stride 1) and the promotion's
# origins a horizon apart (the same origins as the every-horizon rows here). fit_s: the training seconds of every
# candidate (the ensemble needs all three), on the same shared 2-core VM; cov80/cov90 at stride 1.
CELLCAST_CHAMPION = {
    "elecdemand": {
        "model": "ensemble (rnn+lstm+gru)",
        "stride1": 1.578,
        "horizon": 1.748,
        "fit_s": 59.6,
        "cov80": 0.773,
        "cov90": 0.868,
    },
    "chicago": {"model": "gru", "stride1": 0.223, "horizon": 0.220, "fit_s": 15.2, "cov80": 0.806, "cov90": 0.909},
    "glucose": {"model": "gru", "stride1": 4.617, "horizon": 4.586, "fit_s": 39.5, "cov80": 0.803, "cov90": 0.894},
    "sp500": {"model": "none (naive)", "stride1": 2.078, "horizon": None, "fit_s": 2.8, "cov80": None, "cov90": None},
}


# --- the models ------------------------------------------------------------------------------------------


def model_specs() -> dict[str, dict]:
    specs = {}
    for cell in ("lstm", "gru", "rnn"):
        specs[f"darts-rnn-{cell}"] = {"lib": "darts", "cls": "RNNModel", "cell": cell}
        specs[f"darts-block-{cell}"] = {"lib": "darts", "cls": "BlockRNNModel", "cell": cell}
    for cell in ("lstm", "gru", "rnn"):
        specs[f"nf-{cell}"] = {"lib": "nf", "cell": cell, "loss": "mae"}
        specs[f"nf-{cell}-mq"] = {"lib": "nf", "cell": cell, "loss": "mq"}
        specs[f"nf-{cell}-normal"] = {"lib": "nf", "cell": cell, "loss": "normal", "default": False}
    for m in ("mstl", "ets", "theta"):
        specs[f"sf-{m}"] = {"lib": "sf", "model": m}
    specs["baselines"] = {"lib": "naive"}
    return specs


def pick_models(patterns: list[str] | None) -> list[str]:
    specs = model_specs()
    if not patterns:
        return [k for k, v in specs.items() if v.get("default", True)]
    out = [k for k in specs if any(fnmatch.fnmatch(k, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatch(k, p) for k in specs)]
    if unknown:
        raise SystemExit(f"--models: no model matches {unknown}; known: {', '.join(specs)}")
    return out


# --- data --------------------------------------------------------------------------------------------------


def ensure_windows(scratch: Path, name: str) -> None:
    """The window stage's output for NAME in the scratch project, built with the repository's params.yaml."""
    if (scratch / "data" / name / "windows.npz").is_file():
        return
    scratch.mkdir(parents=True, exist_ok=True)
    if not (scratch / "params.yaml").is_file():
        (scratch / "params.yaml").write_text((REPO / "params.yaml").read_text())
    py = REPO / ".venv" / "bin" / "python"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for stage in (["ingest", "--bundled", name], ["validate", name], ["window", name]):
        print(f"[{name}] cellcast {' '.join(stage)} (in {scratch})", flush=True)
        subprocess.run([str(py), "-m", "cellcast", *stage], cwd=scratch, env=env, check=True)


class Task:
    """One dataset as the peers see it: scaled arrays, segments without breaks, origins to score."""

    def __init__(self, d: harness.Data, quick: bool):
        self.d = d
        self.N = len(d.values)
        self.targets = list(d.meta["targets"])
        self.features = [v for v in d.meta["variables"] if v not in self.targets]
        self.fidx = [d.meta["variables"].index(v) for v in self.features]
        self.s1 = d.starts_for("test", 1)
        self.sh = d.starts_for("test", "horizon")
        if quick:  # a smoke run: a few origins of each kind
            self.sh = self.sh[:2]
            self.s1 = self.s1[: 2 * d.H]
        ok = ~np.isnan(d.values).any(axis=1)
        # contiguous runs of complete rows (glucose has breaks; the others are one run)
        edges = np.flatnonzero(np.diff(np.r_[0, ok.astype(np.int8), 0]))
        self.segments = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
        train = d.values[: d.val_start]
        self.mean = np.nanmean(train, axis=0)
        self.std = np.where(np.nanstd(train, axis=0) > 1e-12, np.nanstd(train, axis=0), 1.0)
        self.z = (d.values - self.mean) / self.std

    def pieces(self, lo: int, hi: int, min_len: int) -> list[tuple[int, int]]:
        """Break-free row ranges inside [lo, hi) at least min_len long."""
        out = []
        for a, b in self.segments:
            a2, b2 = max(a, lo), min(b, hi)
            if b2 - a2 >= min_len:
                out.append((a2, b2))
        return out

    def unscale_target(self, z: np.ndarray) -> np.ndarray:
        t = self.d.tidx[0]
        return z * self.std[t] + self.mean[t]


def score(task: Task, starts: np.ndarray, pred: np.ndarray, bands: dict | None) -> dict:
    """cellcast's metric on (n, H, T) forecasts, plus interval coverage / width / Winkler where given."""
    d = task.d
    y = d.targets(starts)
    scale = d.mase_scale()
    row = {k: v for k, v in harness.metrics(y, pred, scale).items() if k in ("mase", "smape", "mae", "n_windows")}
    row["mase_by_step"] = [round(v, 4) for v in harness.mase_by_step(y, pred, scale)]
    for level, (lo, hi) in (bands or {}).items():
        alpha = 1 - level / 100
        inside = (y >= lo) & (y <= hi)
        width = (hi - lo) / scale
        wink = width + (2 / alpha) * (np.maximum(lo - y, 0) + np.maximum(y - hi, 0)) / scale
        row[f"cov{level}"] = float(inside.mean())
        row[f"width{level}"] = float(width.mean())
        row[f"winkler{level}"] = float(wink.mean())
        row[f"crossed{level}"] = float((lo > hi).mean())
    return row


def pick(forecasts: dict[int, np.ndarray], starts: np.ndarray, L: int) -> np.ndarray:
    """(n, H, 1) forecasts of the windows starting at `starts` from {origin row: (H,) forecast}."""
    missing = [int(s + L) for s in starts if int(s + L) not in forecasts]
    if missing:
        raise RuntimeError(f"{len(missing)} test origins have no forecast (first: row {missing[0]})")
    return np.stack([forecasts[int(s + L)] for s in starts])[:, :, None]


# --- Darts --------------------------------------------------------------------------------------------------


def run_darts(task: Task, spec: dict, budget_s: float, quick: bool, work: Path) -> tuple[dict, dict, dict]:
    import pandas as pd
    import torch
    from darts import TimeSeries
    from darts.models import BlockRNNModel, RNNModel
    from pytorch_lightning.callbacks import EarlyStopping

    d, L, H = task.d, task.d.L, task.d.H
    t = d.tidx[0]
    block = spec["cls"] == "BlockRNNModel"
    use_cov = block and bool(task.features)  # RNNModel takes future covariates only: none are known ahead here

    def ts(a, b, cols):
        return TimeSeries.from_times_and_values(pd.RangeIndex(a, b), task.z[a:b][:, cols].astype(np.float32))

    need = L + H + (0 if block else 1)
    train = task.pieces(0, d.val_start, need)
    val = task.pieces(d.val_start - L, d.test_start, need)
    test = task.pieces(int(task.s1.min()), int(task.s1.max()) + L + H, L + H)
    kw = dict(
        input_chunk_length=L,
        model=spec["cell"].upper(),
        loss_fn=torch.nn.L1Loss(),
        random_state=SEED,
        n_epochs=1 if quick else 100,
        model_name=f"{d.name}-{spec['cls']}-{spec['cell']}",
        work_dir=str(work),
        save_checkpoints=True,
        force_reset=True,
        pl_trainer_kwargs={
            "accelerator": "cpu",
            "max_time": {"seconds": budget_s},
            "callbacks": [EarlyStopping(monitor="val_loss", patience=5)],
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
    )
    if block:
        # per-window level removal (Darts' reversible instance norm), as NeuralForecast's default per-window
        # scaler does: sp500 trends far above its training range. RNNModel does not support it.
        model = BlockRNNModel(output_chunk_length=H, use_reversible_instance_norm=True, **kw)
    else:
        model = RNNModel(training_length=L + H, **kw)
    fit_kw = {}
    if use_cov:
        fit_kw = {
            "past_covariates": [ts(a, b, task.fidx) for a, b in train],
            "val_past_covariates": [ts(a, b, task.fidx) for a, b in val],
        }
    if quick:
        fit_kw["max_samples_per_ts"] = 64
    t0 = time.perf_counter()
    model.fit(
        series=[ts(a, b, [t]) for a, b in train], val_series=[ts(a, b, [t]) for a, b in val], verbose=False, **fit_kw
    )
    fit_s = time.perf_counter() - t0
    epochs = int(model.epochs_trained)
    # the best validation epoch's weights (Darts' documented way: checkpoints + load_from_checkpoint(best=True))
    model = type(model).load_from_checkpoint(kw["model_name"], work_dir=str(work), best=True)
    t0 = time.perf_counter()
    hf = model.historical_forecasts(
        series=[ts(a, b, [t]) for a, b in test],
        past_covariates=[ts(a, b, task.fidx) for a, b in test] if use_cov else None,
        forecast_horizon=H,
        stride=1,
        retrain=False,
        last_points_only=False,
        overlap_end=False,
        verbose=False,
    )
    pred_s = time.perf_counter() - t0
    out = {}
    for per_series in hf:
        for f in per_series:
            out[int(f.time_index[0])] = task.unscale_target(f.values()[:, 0].astype(np.float64))
    info = {
        "epochs": epochs,
        "train_series": len(train),
        "val_series": len(val),
        "covariates": task.features if use_cov else [],
        "config": {
            "input_chunk_length": L,
            "output_chunk_length": H if block else 1,
            "training_length": None if block else L + H,
            "hidden_dim": model.model_params.get("hidden_dim"),
            "n_rnn_layers": model.model_params.get("n_rnn_layers"),
            "batch_size": model.batch_size,
            "loss": "L1",
            "early_stopping": "val_loss patience 5 epochs, best checkpoint",
            "scaling": "standardised on training rows" + (" + reversible instance norm" if block else ""),
        },
    }
    return out, {}, {"fit_s": fit_s, "predict_s": pred_s, **info}


# --- NeuralForecast ---------------------------------------------------------------------------------------


def run_nf(task: Task, spec: dict, budget_s: float, quick: bool) -> tuple[dict, dict, dict]:
    import pandas as pd
    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import MAE, DistributionLoss, MQLoss
    from neuralforecast.models import GRU, LSTM, RNN

    d, L, H = task.d, task.d.L, task.d.H
    end = int(task.s1.max()) + L + H
    vals = d.values[:end]
    nan = np.isnan(vals).any(axis=1)
    df = pd.DataFrame({"unique_id": d.name, "ds": np.arange(end), "y": vals[:, d.tidx[0]].astype(np.float64)})
    for name, i in zip(task.features, task.fidx):
        df[name] = vals[:, i].astype(np.float64)
    if nan.any():  # breaks: NeuralForecast's own mechanism, the loss and scalers skip masked rows
        df["available_mask"] = (~nan).astype(np.float64)
        df = df.fillna(0.0)
    loss = {
        "mae": lambda: MAE(),
        "mq": lambda: MQLoss(level=list(LEVELS)),
        "normal": lambda: DistributionLoss(distribution="Normal", level=list(LEVELS)),
    }[spec["loss"]]()
    cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[spec["cell"]]
    model = cls(
        h=H,
        input_size=L,
        loss=loss,
        hist_exog_list=task.features or None,
        random_seed=SEED,
        max_steps=5 if quick else 1000,
        val_check_steps=5 if quick else 50,
        early_stop_patience_steps=-1 if quick else 5,
        accelerator="cpu",
        devices=1,
        max_time={"seconds": budget_s},
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    nf = NeuralForecast(models=[model], freq=1)
    t0 = time.perf_counter()
    nf.fit(df=df[df["ds"] < d.test_start], val_size=d.test_start - d.val_start)
    fit_s = time.perf_counter() - t0
    steps = int(nf.models[0].trainer.global_step) if getattr(nf.models[0], "trainer", None) else None
    first = int(task.s1.min()) + L
    t0 = time.perf_counter()
    cv = nf.cross_validation(df=df, n_windows=None, test_size=end - first, step_size=1, refit=False, use_fitted=True)
    pred_s = time.perf_counter() - t0
    cv = cv.sort_values(["cutoff", "ds"])
    alias = type(model).__name__
    point = f"{alias}-median" if spec["loss"] == "mq" else alias
    origins = cv["cutoff"].to_numpy()[::H] + 1

    def grid(col):
        return cv[col].to_numpy(np.float64).reshape(-1, H)

    pts = grid(point)
    out = {int(o): pts[i] for i, o in enumerate(origins)}
    bands = {}
    if spec["loss"] != "mae":
        for lv in LEVELS:
            lo, hi = grid(f"{alias}-lo-{lv}"), grid(f"{alias}-hi-{lv}")
            bands[lv] = ({int(o): lo[i] for i, o in enumerate(origins)}, {int(o): hi[i] for i, o in enumerate(origins)})
    info = {
        "steps": steps,
        "covariates": task.features,
        "config": {
            "input_size": L,
            "h": H,
            "encoder_hidden_size": model.hparams.get("encoder_hidden_size"),
            "encoder_n_layers": model.hparams.get("encoder_n_layers"),
            "recurrent": False,
            "loss": spec["loss"],
            "scaler_type": "robust (per window)",
            "max_steps": model.max_steps,
            "early_stopping": "val loss every 50 steps, patience 5 (last weights kept)",
            "point": point,
        },
    }
    return out, bands, {"fit_s": fit_s, "predict_s": pred_s, **info}


# --- statsforecast ----------------------------------------------------------------------------------------


def sf_model(kind: str, seasons: list[int]):
    from statsforecast.models import MSTL, AutoETS, AutoTheta

    if kind == "mstl":
        if not seasons:
            return AutoETS(model="ZZN", alias="MSTL")  # MSTL's own trend model when no season fits
        return MSTL(season_length=seasons if len(seasons) > 1 else seasons[0])
    m = seasons[0] if seasons else 1
    return {"ets": AutoETS, "theta": AutoTheta}[kind](season_length=m)


def run_sf(task: Task, spec: dict, stride: str, budget_s: float) -> tuple[dict, dict, dict]:
    """statsforecast on `stride` origins: `horizon` refits per origin; 1 fits once and runs `forward` per window."""
    import pandas as pd
    from statsforecast import StatsForecast

    d, L, H = task.d, task.d.L, task.d.H
    kind = spec["model"]
    seasons, history = CLASSICAL[d.name][kind]
    starts = task.sh if stride == "horizon" else task.s1
    origins = starts + L
    alias = {"mstl": "MSTL", "ets": "AutoETS", "theta": "AutoTheta"}[kind]
    y_all = d.y()[:, 0]
    out, lo_hi = {}, {lv: ({}, {}) for lv in LEVELS}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(task.segments) == 1 and np.all(np.diff(origins) == (H if stride == "horizon" else 1)):
            # one break-free series: the documented rolling-origin evaluation
            end = int(origins[-1]) + H
            df = pd.DataFrame({"unique_id": d.name, "ds": np.arange(end), "y": y_all[:end]})
            sf = StatsForecast(models=[sf_model(kind, [m for m in seasons if m > 1])], freq=1, n_jobs=1)
            cv = sf.cross_validation(
                df=df,
                h=H,
                n_windows=len(origins),
                step_size=H if stride == "horizon" else 1,
                input_size=history,
                level=list(LEVELS),
                refit=stride == "horizon",
            )
            groups = [cv]
        else:
            # breaks (glucose): each origin its own series, its history back to the last break; refit per origin
            groups = []
            by_seasons: dict[tuple, list[int]] = {}
            for o in origins:
                h = d.history(int(o))[:, 0]
                if history:
                    h = h[-history:]
                fit = tuple(m for m in seasons if m > 1 and len(h) >= 2 * m)
                by_seasons.setdefault(fit, []).append(int(o))
            for fit, os_ in by_seasons.items():
                parts = []
                for o in os_:
                    h = d.history(o)[:, 0]
                    if history:
                        h = h[-history:]
                    parts.append(pd.DataFrame({"unique_id": o, "ds": np.arange(o - len(h), o), "y": h}))
                sf = StatsForecast(models=[sf_model(kind, list(fit))], freq=1, n_jobs=1)
                fc = sf.forecast(df=pd.concat(parts), h=H, level=list(LEVELS))
                fc["cutoff"] = fc["unique_id"].astype(int) - 1
                groups.append(fc)
    fit_s = time.perf_counter() - t0
    for g in groups:
        g = g.sort_values(["cutoff", "ds"])
        cut = g["cutoff"].to_numpy()[::H] + 1

        def grid(col):
            return g[col].to_numpy(np.float64).reshape(-1, H)

        pts = grid(alias)
        for i, o in enumerate(cut):
            out[int(o)] = pts[i]
        for lv in LEVELS:
            lo, hi = grid(f"{alias}-lo-{lv}"), grid(f"{alias}-hi-{lv}")
            for i, o in enumerate(cut):
                lo_hi[lv][0][int(o)], lo_hi[lv][1][int(o)] = lo[i], hi[i]
    info = {
        "fit_s": fit_s,
        "predict_s": None,
        "refit": "per origin" if stride == "horizon" else "once, forward per window",
        "fit_s_per_origin": fit_s / len(origins),
        "config": {"seasons": seasons, "history": history or "all", "n_jobs": 1},
    }
    return out, lo_hi, info


# --- the run ------------------------------------------------------------------------------------------------


def env_row(threads: int) -> dict:
    import importlib.metadata as md

    vers = {}
    for p in ("darts", "neuralforecast", "statsforecast", "torch", "pytorch-lightning", "pandas"):
        try:
            vers[p] = md.version(p)
        except md.PackageNotFoundError:
            vers[p] = None
    return {
        "machine": f"{platform.node()} {os.cpu_count()}-core CPU VM (shared)",
        "threads": threads,
        "versions": vers,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "load": round(os.getloadavg()[0], 1),
    }


def emit(out: Path | None, row: dict) -> None:
    brief = {
        k: row.get(k)
        for k in ("dataset", "model", "stride", "mase", "smape", "cov80", "cov90", "fit_s", "predict_s", "error")
    }
    print(
        json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in brief.items() if v is not None}),
        flush=True,
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


def bands_for(bands: dict, starts: np.ndarray, L: int) -> dict:
    return {lv: (pick(lo, starts, L), pick(hi, starts, L)) for lv, (lo, hi) in bands.items()}


def run_one(task: Task, name: str, spec: dict, a, out: Path | None, work: Path) -> None:
    import torch

    d, L = task.d, task.d.L
    base = {"dataset": d.name, "model": name, "lib": spec["lib"], **env_row(a.threads)}
    if spec["lib"] == "naive":
        for stride, starts in (("horizon", task.sh), (1, task.s1)):
            for m in [1] + [s for s in d.seasons if s > 1]:
                pred = d.seasonal_naive(starts, m)
                if not np.isfinite(pred).all():  # a season longer than the history before some windows
                    continue
                emit(
                    out,
                    {
                        **base,
                        "model": "naive" if m == 1 else f"seasonal_naive_{m}",
                        "stride": stride,
                        **score(task, starts, pred, None),
                    },
                )
        return
    torch.set_num_threads(a.threads)
    try:
        if spec["lib"] == "sf":
            strides = ["horizon", 1]
            per_origin = 0.0  # measured on the horizon-stride pass, which runs first
            for stride in strides:
                starts = task.sh if stride == "horizon" else task.s1
                if stride == 1:
                    est = per_origin * len(task.s1)
                    if est > a.sf_stride1_budget:
                        emit(
                            out,
                            {
                                **base,
                                "stride": 1,
                                "skipped": f"estimated {est:.0f} s > --sf-stride1-budget "
                                f"{a.sf_stride1_budget:.0f} s ({len(task.s1)} windows)",
                            },
                        )
                        continue
                fc, bands, info = run_sf(task, spec, stride, a.budget)
                per_origin = info["fit_s_per_origin"]
                emit(
                    out,
                    {
                        **base,
                        "stride": stride,
                        **score(task, starts, pick(fc, starts, L), bands_for(bands, starts, L)),
                        **info,
                    },
                )
            return
        if spec["lib"] == "darts":
            fc, bands, info = run_darts(task, spec, a.budget, a.quick, work)
        else:
            fc, bands, info = run_nf(task, spec, a.budget, a.quick)
        for stride, starts in (("horizon", task.sh), (1, task.s1)):
            emit(
                out,
                {
                    **base,
                    "stride": stride,
                    **score(task, starts, pick(fc, starts, L), bands_for(bands, starts, L)),
                    **info,
                    "predict_windows": len(task.s1),
                    "predict_ms_per_window": 1000 * info["predict_s"] / len(task.s1),
                },
            )
    except Exception as e:  # one peer failing must not stop the others: the row says why
        traceback.print_exc()
        emit(out, {**base, "error": f"{type(e).__name__}: {e}"[:500]})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=None, choices=DATASETS)
    ap.add_argument("--models", nargs="+", default=None, help="names or globs, e.g. 'nf-*' darts-block-lstm sf-mstl")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of fitting per neural model (max_time)")
    ap.add_argument(
        "--sf-stride1-budget",
        type=float,
        default=180.0,
        help="run statsforecast at stride 1 only when (seconds per origin) x windows stays under this",
    )
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--quick", action="store_true", help="smoke run: sp500 unless --datasets, 2 origins, tiny budgets")
    ap.add_argument("--out", default=None, help="JSONL (default results/peers.jsonl; --quick: results/quick.jsonl)")
    ap.add_argument(
        "--scratch",
        default=os.environ.get("PEERS_SCRATCH", "/tmp/peers-scratch"),
        help="scratch cellcast project holding data/NAME/windows.* (built here if missing)",
    )
    ap.add_argument("--report", action="store_true", help="only write results/peers.md from the JSONL")
    a = ap.parse_args(argv)
    out = Path(a.out) if a.out else RESULTS / ("quick.jsonl" if a.quick else "peers.jsonl")
    if a.report:
        write_report(out)
        return
    if a.quick:
        a.budget = min(a.budget, 10.0)
    datasets = a.datasets or (["sp500"] if a.quick else list(DATASETS))
    models = pick_models(a.models)
    specs = model_specs()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    scratch = Path(a.scratch)
    with tempfile.TemporaryDirectory(prefix="peers-") as work:
        for name in datasets:
            ensure_windows(scratch, name)
            task = Task(harness.Data(name, scratch), a.quick)
            print(
                f"[{name}] L={task.d.L} H={task.d.H} test windows {len(task.s1)} (every horizon {len(task.sh)}), "
                f"features {task.features}, segments {len(task.segments)}",
                flush=True,
            )
            for m in models:
                run_one(task, m, specs[m], a, out, Path(work))
    write_report(out)


# --- the table ----------------------------------------------------------------------------------------------


def champion_cell(ds: str) -> str:
    c = CELLCAST_CHAMPION.get(ds)
    if not c:
        return ""
    if c["model"].startswith("none"):
        return f"none: no candidate beats naive ({c['stride1']:.3f} at stride 1 = naive)"
    return (
        f"**{c['model']} {c['horizon']:.3f} / {c['stride1']:.3f}**, fit {c['fit_s']:.0f} s, "
        f"80%/90% cov {100 * c['cov80']:.1f}% / {100 * c['cov90']:.1f}%"
    )


def summary(latest: dict[tuple, dict]) -> list[str]:
    """One line per dataset: the bar, each family's best row, the best peer, cellcast today and a column to fill."""

    def ok(r):
        return r and r.get("mase") is not None and not r.get("error")

    lines = [
        "| dataset | bar (strongest naive, test) | MSTL | AutoETS | AutoTheta | best Darts | best NeuralForecast | "
        "best peer | cellcast today | cellcast champion (issue 12) |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- | ---: | ---: |",
    ]
    for ds in DATASETS:
        h = {k[1]: v for k, v in latest.items() if k[0] == ds and k[2] == "horizon" and ok(v)}
        s1 = {k[1]: v for k, v in latest.items() if k[0] == ds and k[2] == "1" and ok(v)}
        if not h:
            continue

        def cell(m):
            r = h.get(m)
            if not r:
                return ""
            one = s1.get(m)
            return f"{r['mase']:.3f}" + (f" / {one['mase']:.3f}" if one else "")

        base = {m: r for m, r in h.items() if r["lib"] == "naive"}
        bar = min(base, key=lambda m: base[m]["mase"]) if base else None

        def best(pred):
            c = {m: r for m, r in h.items() if pred(m)}
            if not c:
                return ""
            m = min(c, key=lambda m: c[m]["mase"])
            return f"{m} {cell(m)}"

        today = CELLCAST_TODAY[ds]
        # no champion: cellcast forecasts with the baseline it could not beat, scored here on today's windows
        now = (
            f"naive {cell('naive')} (no champion)"
            if today["model"].startswith("none")
            else f"{today['model']} {today['horizon']:.3f} / {today['stride1']:.3f}"
        )
        lines.append(
            f"| {ds} | {bar} {cell(bar) if bar else ''} | {cell('sf-mstl')} | {cell('sf-ets')} | "
            f"{cell('sf-theta')} | {best(lambda m: m.startswith('darts-'))} | "
            f"{best(lambda m: m.startswith('nf-'))} | {best(lambda m: h[m]['lib'] != 'naive')} | "
            f"{now} (today) | {champion_cell(ds)} |"
        )
    lines += [
        "",
        "MASE at every-horizon origins / at stride 1 (where run). cellcast today: BENCHMARKS.md's quality "
        "table (stride 1) and bench/research (every horizon), before issue 12's model changes. cellcast champion: "
        "after issue 12 (CELLCAST_CHAMPION in run.py: bench/results/forecast-quality-cpu2t.jsonl).",
        "",
    ]
    return lines


def write_report(path: Path) -> None:
    # a run split over processes (e.g. --out results/peers-neural.jsonl and peers-classical.jsonl) reads as one
    paths = [path] + sorted(p for p in path.parent.glob(f"{path.stem}-*.jsonl") if p != path)
    rows = [json.loads(x) for p in paths if p.is_file() for x in p.read_text().splitlines() if x.strip()]
    latest: dict[tuple, dict] = {}
    for r in rows:  # the latest row per (dataset, model, stride) wins: reruns replace
        latest[(r["dataset"], r["model"], str(r.get("stride")))] = r
    lines = summary(latest)
    for ds in DATASETS:
        got = {k: v for k, v in latest.items() if k[0] == ds}
        if not got:
            continue
        today = CELLCAST_TODAY[ds]
        lines += [
            f"### {ds}",
            "",
            "| model | MASE (every horizon) | sMAPE | MASE (stride 1) | sMAPE | 80% cov / width | "
            "90% cov / width | fit s | predict s (stride 1) | notes |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        models = sorted({k[1] for k in got}, key=lambda m: (not m.startswith(("naive", "seasonal")), m))
        for m in models:
            h, s = got.get((ds, m, "horizon"), {}), got.get((ds, m, "1"), {})
            r = h or s
            if r.get("error"):
                lines.append(f"| {m} | error | | | | | | | | {r['error'][:120]} |")
                continue

            def f(x, p=3):
                return "" if x is None else f"{x:.{p}f}"

            def cov(row, lv):
                return "" if f"cov{lv}" not in row else f"{100 * row[f'cov{lv}']:.1f}% / {row[f'width{lv}']:.2f}"

            notes = []
            if r.get("epochs") is not None:
                notes.append(f"{r['epochs']} epochs")
            if r.get("steps") is not None:
                notes.append(f"{r['steps']} steps")
            if s.get("skipped"):
                notes.append("stride 1 skipped: " + s["skipped"])
            if r.get("covariates"):
                notes.append("past covariates: " + ", ".join(r["covariates"]))
            if r.get("lib") == "sf":
                notes.append(f"refit per origin, history {r['config']['history']}")
            lines.append(
                f"| {m} | {f(h.get('mase'))} | {f(h.get('smape'), 2)} | {f(s.get('mase'))} | "
                f"{f(s.get('smape'), 2)} | {cov(s or h, 80)} | {cov(s or h, 90)} | "
                f"{f(h.get('fit_s') if h else s.get('fit_s'), 1)} | {f(s.get('predict_s'), 1)} | "
                f"{'; '.join(notes)} |"
            )
        lines.append(
            f"| **cellcast today** ({today['model']}) | {today['horizon']:.3f} | | {today['stride1']:.3f} | "
            f"{today['smape1']:.2f} | | | | | today's champion (BENCHMARKS.md quality table), before issue 12 |"
        )
        c = CELLCAST_CHAMPION.get(ds)
        if c and not c["model"].startswith("none"):
            lines.append(
                f"| **cellcast champion** ({c['model']}) | {c['horizon']:.3f} | | {c['stride1']:.3f} | | "
                f"{100 * c['cov80']:.1f}% | {100 * c['cov90']:.1f}% | {c['fit_s']:.1f} | | after issue 12; "
                f"fit: every candidate's training |"
            )
        lines.append("")
    md = "\n".join(lines)
    (path.with_suffix(".md")).write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
