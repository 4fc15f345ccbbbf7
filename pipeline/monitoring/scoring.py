"""Accuracy of the forecasts written earlier on the actuals that arrived since: the points, rolling MASE against
the champion's test scale and seasonal naive, bias, interval coverage from the quantile columns."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.seasonal import naive_offsets

log = logging.getLogger(__name__)


QUANTILE_COLUMN = re.compile(r"^(?P<target>.+)_q(?P<q>0?\.\d+)$")


def read_forecasts(folder: Path, version: int, since: pd.Timestamp) -> list[tuple[str, pd.DataFrame]]:
    """The forecasts of model `version` reaching into the window (time >= since), newest first, one per
    origin (a rerun on unchanged data forecasts the same steps again: the newest counts)."""
    files = sorted(Path(folder).glob("*.parquet"), reverse=True)  # UTC stamps: newest first
    out, origins = [], set()
    for f in files:
        try:
            df = pd.read_parquet(f)
        except Exception as e:  # noqa: BLE001 - a damaged file is skipped, and said so
            log.warning("%s: not readable as a forecast (%s): skipped", f, str(e).splitlines()[0][:120])
            continue
        if df.empty or "timestamp" not in df.columns:
            continue
        if df["timestamp"].max() < since:
            break  # written before every forecast still in the window
        if "model_version" not in df.columns or str(df["model_version"].iloc[0]) != str(version):
            continue
        first = df["timestamp"].min()
        if first in origins:
            continue
        origins.add(first)
        out.append((f.name, df.sort_values("timestamp").reset_index(drop=True)))
    return out


def quantile_columns(frame: pd.DataFrame, target: str) -> tuple[str | None, str | None, float]:
    """The outermost quantile pair of `target` around the median, and its nominal coverage."""
    qs = {}
    for c in frame.columns:
        m = QUANTILE_COLUMN.match(str(c))
        if m and m["target"] == target:
            qs[float(m["q"])] = c
    lo = [q for q in qs if q < 0.5]
    hi = [q for q in qs if q > 0.5]
    if not lo or not hi:
        return None, None, float("nan")
    return qs[min(lo)], qs[max(hi)], max(hi) - min(lo)


def score_points(
    forecasts: list[tuple[str, pd.DataFrame]],
    actuals: pd.DataFrame,
    targets: list[str],
    season: int,
    since: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One row per (forecast, step, target) whose actual has arrived: the forecast, the actual, the seasonal
    naive forecast of the same origin (the latest value `season` steps back that was observed then), the
    interval bounds when the forecast has quantiles. `actuals`: the validated frame, on its regular grid."""
    ts = actuals["timestamp"].to_numpy()
    cols = []
    for fname, fc in forecasts:
        stamps = fc["timestamp"].to_numpy()
        pos = int(np.searchsorted(ts, stamps[0]))
        if pos == 0 or pos >= len(ts) or ts[pos] != stamps[0]:
            continue  # not arrived yet, or not on the series' grid
        h = np.arange(len(stamps))
        rows = pos + h
        ok = rows < len(ts)
        ok[ok] = ts[rows[ok]] == stamps[ok]
        if since is not None:
            ok &= stamps >= np.datetime64(since)
        if not ok.any():
            continue
        src = pos + naive_offsets(len(stamps), season)  # always before `pos`: observed at forecast time
        for t in targets:
            if t not in fc.columns or t not in actuals.columns:
                continue
            y = actuals[t].to_numpy(dtype=np.float64)
            observed = np.isfinite(y)
            filled = f"filled:{t}"  # a cell the gap policy filled is no observation
            if filled in actuals.columns:
                observed &= ~actuals[filled].fillna(False).to_numpy(dtype=bool)
            keep = ok.copy()
            keep[ok] = observed[rows[ok]]
            if not keep.any():
                continue
            lo_col, hi_col, nominal = quantile_columns(fc, t)
            k = np.flatnonzero(keep)
            naive = np.where(src[k] >= 0, y[np.clip(src[k], 0, None)], np.nan)
            cols.append(
                pd.DataFrame(
                    {
                        "forecast_file": fname,
                        "origin": ts[pos - 1],
                        "timestamp": stamps[k],
                        "step": h[k] + 1,
                        "target": t,
                        "forecast": fc[t].to_numpy(dtype=np.float64)[k],
                        "actual": y[rows[k]],
                        "naive": naive,
                        "lower": fc[lo_col].to_numpy(dtype=np.float64)[k] if lo_col else np.nan,
                        "upper": fc[hi_col].to_numpy(dtype=np.float64)[k] if hi_col else np.nan,
                        "nominal": nominal,
                        "model_version": str(fc["model_version"].iloc[0]) if "model_version" in fc.columns else "",
                    }
                )
            )
    if not cols:
        return pd.DataFrame(
            columns=[
                "forecast_file",
                "origin",
                "timestamp",
                "step",
                "target",
                "forecast",
                "actual",
                "naive",
                "lower",
                "upper",
                "nominal",
                "model_version",
            ]
        )
    return pd.concat(cols, ignore_index=True)


def accuracy(points: pd.DataFrame, scale: dict[str, float], targets: list[str]) -> dict:
    """The window's figures: MASE (on the champion's test scale), the seasonal naive's on the same points,
    bias, interval coverage. Points whose naive forecast is missing (a break) are left out of both."""
    p = points[np.isfinite(points["naive"].astype(float))] if len(points) else points
    out = {
        "points": int(len(p)),
        "forecasts": int(p["forecast_file"].nunique()) if len(p) else 0,
        "mase": float("nan"),
        "naive_mase": float("nan"),
        "relative_mase": float("nan"),
        "bias_scaled": float("nan"),
        "coverage": float("nan"),
        "coverage_nominal": float("nan"),
    }
    for t in targets:
        out[f"bias.{t}"] = float("nan")
    if not len(p):
        return out
    s = p["target"].map(lambda t: scale.get(t, 1.0)).to_numpy(dtype=np.float64)
    err = (p["forecast"] - p["actual"]).to_numpy(dtype=np.float64)
    naive_err = (p["naive"] - p["actual"]).to_numpy(dtype=np.float64)
    out["mase"] = float(np.mean(np.abs(err) / s))
    out["naive_mase"] = float(np.mean(np.abs(naive_err) / s))
    out["relative_mase"] = out["mase"] / out["naive_mase"] if out["naive_mase"] > 0 else float("nan")
    out["bias_scaled"] = float(np.mean(err / s))
    for t in targets:
        sel = (p["target"] == t).to_numpy()
        if sel.any():
            out[f"bias.{t}"] = float(err[sel].mean())
    band = p[np.isfinite(p["lower"].astype(float)) & np.isfinite(p["upper"].astype(float))]
    if len(band):
        inside = (band["actual"] >= band["lower"]) & (band["actual"] <= band["upper"])
        out["coverage"] = float(inside.mean())
        out["coverage_nominal"] = float(band["nominal"].mean())
    return out


def _scale_before(frame: pd.DataFrame, targets: list[str], since) -> dict[str, float]:
    # a model with no recorded reference: the rows before the window stand in for its training rows
    before = frame[frame["timestamp"] < since]
    out = {}
    for t in targets:
        d = np.abs(np.diff(before[t].to_numpy(dtype=np.float64)))
        d = d[np.isfinite(d)]
        out[t] = float(d.mean()) if len(d) and d.mean() > 1e-12 else 1.0
    return out
