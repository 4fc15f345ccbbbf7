"""Classical reference rows (statsforecast MSTL / AutoETS / AutoTheta) and the naive family, refitted per origin.

Runs in the separate statsforecast venv (bench/research/.venv: statsforecast 2.1.1 pins pandas < 3, the
project venv has pandas 3.1):

    bench/research/.venv/bin/python bench/research/classical.py [--datasets elecdemand chicago] [--models mstl ets theta]

Every origin of the test split (non-overlapping, every `horizon` steps) gets its own fit on the target
history up to that origin only (from the last break, for series with breaks; optionally the last
`history` rows). Results -> results/classical.jsonl, forecasts -> results/forecasts/DATASET--MODEL.npz.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from datetime import UTC, datetime

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# natural seasons per dataset, as the pipeline's seasons_for gives them, and the history each model is given.
# history None = everything before the origin. ETS/Theta on half-hourly data use the daily season and
# 8 weeks of history: with the full 15k rows one AutoETS fit takes ~10 s, 54 origins would be ~9 min.
CONFIG = {
    "elecdemand": {"mstl": ([48, 336], None), "ets": ([48], 336 * 8), "theta": ([48], 336 * 8)},
    "chicago": {"mstl": ([7, 365], None), "ets": ([7], None), "theta": ([7], None)},
    # 5-min CGM: the day season (288) rarely has 2 full cycles before a break; seasons longer than half the
    # history are dropped per origin (MSTL then runs on what is left, ETS/Theta without a season)
    "glucose": {"mstl": ([288], None), "ets": ([1], 288 * 2), "theta": ([1], 288 * 2)},
    "sp500": {"mstl": ([5], None), "ets": ([5], None), "theta": ([5], None)},
}


def make(model: str, seasons: list[int]):
    from statsforecast.models import MSTL, AutoETS, AutoTheta, Naive

    if model == "mstl":
        if not seasons:
            return AutoETS(model="ZZN")  # MSTL's own trend model, the series having no season left
        return MSTL(season_length=seasons if len(seasons) > 1 else seasons[0])  # trend: AutoETS(ZZN) by default
    m = seasons[0] if seasons else 1
    if model == "ets":
        return AutoETS(season_length=m)
    if model == "theta":
        return AutoTheta(season_length=m)
    if model == "naive":
        return Naive()
    raise ValueError(model)


def run(d: harness.Data, model: str, stride="horizon", history_override: int | None = None) -> dict:
    seasons, history = CONFIG[d.name][model]
    history = history_override or history
    starts = d.starts_for("test", stride)
    origins = d.origins(starts)
    preds, fit_s, dropped = [], [], 0
    for o in origins:
        y = d.history(int(o))[:, 0]
        if history:
            y = y[-history:]
        fit = [m for m in seasons if m > 1 and len(y) >= 2 * m]
        dropped += len(fit) < len([m for m in seasons if m > 1])
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = make(model, fit).forecast(y=y.astype(np.float64), h=d.H)["mean"]
        fit_s.append(time.perf_counter() - t0)
        preds.append(np.asarray(f, dtype=np.float64)[:, None])
    pred = np.stack(preds)
    suffix = ("" if history_override is None else f"-h{history}") + ("" if stride == "horizon" else f"-stride{stride}")
    harness.save_forecasts(model + suffix, d.name, starts, pred)
    row = {
        "dataset": d.name,
        "model": model,
        "seasons": seasons,
        "history": history or "all",
        "stride": stride,
        "refit": "per origin",
        "origins": int(len(origins)),
        "origins_season_dropped": int(dropped),
        **d.score(pred, starts),
        "by_step": harness.mase_by_step(d.targets(starts), pred, d.mase_scale()),
        "fit_s_total": round(float(np.sum(fit_s)), 2),
        "fit_s_mean": round(float(np.mean(fit_s)), 3),
        "fit_s_max": round(float(np.max(fit_s)), 3),
    }
    return row


def naive_rows(d: harness.Data) -> list[dict]:
    out = []
    for stride in ("horizon", 1):
        starts = d.starts_for("test", stride)
        for m in [1] + [s for s in d.seasons if s > 1]:
            if m > int(starts.min()) + d.L:  # as usable_seasons: the baseline must exist for every window
                continue
            pred = d.seasonal_naive(starts, m)
            if not np.isfinite(pred).all():
                ok = np.isfinite(pred).all(axis=(1, 2))
                sc = {**harness.metrics(d.targets(starts)[ok], pred[ok], d.mase_scale()), "coverage": float(ok.mean())}
            else:
                sc = {**d.score(pred, starts), "coverage": 1.0}
                if stride == "horizon":
                    harness.save_forecasts("naive" if m == 1 else f"snaive{m}", d.name, starts, pred)
            out.append(
                {"dataset": d.name, "model": "naive" if m == 1 else f"seasonal_naive_{m}", "stride": stride, **sc}
            )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(harness.DATASETS))
    ap.add_argument("--models", nargs="+", default=["mstl", "ets", "theta"])
    ap.add_argument("--out", default="classical.jsonl")
    ap.add_argument("--stride", default="horizon", help="origins every horizon (default) or every N test windows")
    ap.add_argument("--history", type=int, default=None, help="override the history given to each fit (rows)")
    ap.add_argument("--no-naive", action="store_true")
    a = ap.parse_args(argv)
    stride = a.stride if a.stride == "horizon" else int(a.stride)
    import statsforecast

    env = {
        "machine": f"{platform.node()} 2-core CPU VM (shared)",
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "statsforecast": statsforecast.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
    }
    for name in a.datasets:
        d = harness.Data(name)
        for row in [] if a.no_naive else naive_rows(d):
            harness.append(a.out, {**row, **env})
        for model in a.models:
            row = {**run(d, model, stride, a.history), **env}
            harness.append(a.out, row)
            print(
                f"{name:11s} {model:6s} MASE {row['mase']:.3f} sMAPE {row['smape']:.2f} "
                f"fit {row['fit_s_total']:.1f}s total ({row['fit_s_mean']:.2f}s/origin, {row['origins']} origins)",
                flush=True,
            )


if __name__ == "__main__":
    main()
