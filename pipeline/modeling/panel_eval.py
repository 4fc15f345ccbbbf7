"""A panel scored per series: each series' test windows (a cold-start series: its cold-start windows) against its own
baselines (naive, seasonal naive at each natural season that its history holds), then aggregated across series.

A panel's values are per-series scaled by the MASE denominator (data/panel_windows.py, PanelWindowSet), so a series'
MASE is its mean absolute scaled error over its observed targets. The aggregate is over the series with their own splits
(status ok): mean and median MASE, the share of series where the model beats the strongest of its baselines, the
best and the worst series; cold-start series are reported beside it (never trained or selected on, and with too
little history for some baselines, they would blur the comparison).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.panel_windows import COLD, PanelWindowSet
from .evaluate import baseline_names, metrics, seasonal_naive


def series_table(ws: PanelWindowSet, pred: dict[str, np.ndarray], seasons: list[int]) -> pd.DataFrame:
    """One row per series: series_id, status, windows, mase (the model), each baseline's MASE, the strongest
    baseline and its MASE, `beats` (model < strongest). `pred`: split ('test' / 'cold') -> forecasts (n, H, T) of
    ws.starts[split] in scaled units, in that order."""
    rows = []
    for split in ("test", COLD):
        starts = ws.starts.get(split, np.zeros(0, np.int64))
        if len(starts):
            rows += series_rows(ws, split, starts, pred[split], seasons)
    return pd.DataFrame(rows)


def series_rows(ws: PanelWindowSet, split: str, starts: np.ndarray, pred: np.ndarray, seasons: list[int]) -> list[dict]:
    """series_table's rows of the series whose `split` windows are at `starts` (whole series), `pred` their
    forecasts in that order: a part of the panel scored as in the whole table."""
    ones = np.ones(len(ws.meta.targets))
    rows = []
    idx = ws.series_index(starts)
    order = np.argsort(idx, kind="stable")
    # one series' windows at a time: its targets and baselines gathered, never every series' at once
    for sel in np.split(order, np.flatnonzero(np.diff(idx[order])) + 1):
        at = starts[sel]
        y, mk = ws.targets(at), ws.target_mask(at)
        sid = ws.series_ids[int(idx[sel[0]])]
        mase = metrics(y, pred[sel], ones, mk)["mase"]
        row: dict[str, object] = {
            "series_id": sid,
            "status": "ok" if split == "test" else "cold_start",
            "windows": len(sel),
            "mase": mase,
        }
        base: dict[str, float] = {}
        for name, m in baseline_names(seasons).items():
            p = seasonal_naive(ws, at, m)
            if np.isfinite(p).all():  # a baseline the series' history does not hold is no bar for it
                base[name] = metrics(y, p, ones, mk)["mase"]
            row[f"mase_{name}"] = base.get(name, np.nan)
        best = min(base, key=lambda k: base[k]) if base else None
        row.update(
            strongest_baseline=best,
            strongest_mase=base[best] if best else np.nan,
            beats=bool(best is not None and mase < base[best]),
        )
        rows.append(row)
    return rows


def aggregate(table: pd.DataFrame) -> dict:
    """Across the series with their own splits: mean and median MASE (the model and the strongest baseline), the
    share of series improved, the best, median and worst series; cold-start series counted apart."""
    ok = table[table["status"] == "ok"].sort_values("mase", kind="stable")
    cold = table[table["status"] == "cold_start"]
    if not len(ok):
        return {"series": 0, "cold_start_series": int(len(cold))}
    mid = ok.iloc[(len(ok) - 1) // 2]
    return {
        "series": int(len(ok)),
        "mean_mase": float(ok["mase"].mean()),
        "median_mase": float(ok["mase"].median()),
        "mean_strongest_baseline_mase": float(ok["strongest_mase"].mean()),
        "median_strongest_baseline_mase": float(ok["strongest_mase"].median()),
        "improved": int(ok["beats"].sum()),
        "share_improved": float(ok["beats"].mean()),
        "best_series": str(ok.iloc[0]["series_id"]),
        "best_mase": float(ok.iloc[0]["mase"]),
        "median_series": str(mid["series_id"]),
        "worst_series": str(ok.iloc[-1]["series_id"]),
        "worst_mase": float(ok.iloc[-1]["mase"]),
        "worst_strongest_baseline_mase": float(ok.iloc[-1]["strongest_mase"]),
        "cold_start_series": int(len(cold)),
        "cold_start_mean_mase": float(cold["mase"].mean()) if len(cold) else None,
    }


def describe(agg: dict) -> str:
    """The aggregate in one sentence (the promotion decision carries it)."""
    if not agg.get("series"):
        return "no series with its own test windows"
    text = (
        f"across {agg['series']} series it beats each series' strongest baseline on {agg['improved']} "
        f"({agg['share_improved']:.0%}); MASE mean {agg['mean_mase']:.3f}, median {agg['median_mase']:.3f}; "
        f"worst series '{agg['worst_series']}' (MASE {agg['worst_mase']:.3f} against "
        f"{agg['worst_strongest_baseline_mase']:.3f})"
    )
    if agg.get("cold_start_series"):
        text += f"; {agg['cold_start_series']} cold-start series (MASE mean {agg['cold_start_mean_mase']:.3f})"
    return text
