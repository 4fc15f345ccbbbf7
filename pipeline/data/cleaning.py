"""The missing / gap / duplicate policy of `settings.ingest`, applied to a canonical frame:
  duplicated timestamps  reject | first | last | mean
  clock drift            timestamps snapped to the nearest point of the regular grid
  gaps and NaN cells     runs up to `max_fill_steps` interpolated linearly (the grid is regular, so
                         this is time-wise) and marked in a `filled:<column>` column (not observed:
                         no window's origin lies on one, no loss or metric scores one); longer runs:
                         reject, or segment (kept as NaN rows that mark a break: no window crosses them)
What it did is written into the ValidationReport; a refusal is a RuleFailure."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..catalog import filled_column
from ..config import Settings
from .findings import RuleFailure, ValidationReport
from .frequency import grid_positions


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _dedupe(df: pd.DataFrame, mode: str, cols: list[str]) -> tuple[pd.DataFrame, dict]:
    dup = df["timestamp"].duplicated(keep=False)
    info = {"mode": mode, "duplicated_rows": int(df["timestamp"].duplicated().sum()),
            "timestamps": int(df.loc[dup, "timestamp"].nunique())}
    if not info["duplicated_rows"]:
        return df, info
    g = df.groupby("timestamp", sort=True)[cols]
    # first/last of the rows as they came (NaN cells kept), mean of the values present
    out = {"first": lambda: g.nth(0).set_index(df.loc[~df["timestamp"].duplicated(), "timestamp"]),
           "last": lambda: g.nth(-1).set_index(df.loc[~df["timestamp"].duplicated(keep="last"), "timestamp"]),
           "mean": lambda: g.mean()}[mode]()
    return out.sort_index().rename_axis("timestamp").reset_index(), info


def _regularise(df: pd.DataFrame, freq: str, cols: list[str]) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """Snap to the grid (merging collisions by mean) and reindex: returns the frame, counts, inserted-row mask."""
    grid, pos, off_grid = grid_positions(df["timestamp"], freq)
    merged = 0
    vals = df[cols].copy()
    vals.index = pos
    if off_grid:
        merged = int(pd.Index(pos).duplicated().sum())
        vals = vals.groupby(level=0).mean() if merged else vals
    lo, hi = int(vals.index.min()), int(vals.index.max())
    full = vals.reindex(np.arange(lo, hi + 1))
    inserted = ~np.isin(full.index.to_numpy(), vals.index.to_numpy())
    full.insert(0, "timestamp", grid[lo:hi + 1])
    return full.reset_index(drop=True), {"off_grid": off_grid, "merged": merged}, inserted



def apply_policy(df: pd.DataFrame, rep: ValidationReport, cols: list[str], settings: Settings) -> pd.DataFrame:
    pol = settings.ingest
    df = df.sort_values("timestamp", kind="stable", ignore_index=True)
    df, rep.dedupe = _dedupe(df, pol.dedupe, cols)
    df, rep.snapped, inserted = _regularise(df, rep.freq, cols)
    rep.inserted_rows = int(inserted.sum())

    # leading/trailing rows with a missing value cannot be interpolated: trim them
    complete = df[cols].notna().all(axis=1).to_numpy()
    if not complete.any():
        raise RuleFailure(cols[0], "not_null", len(df), [], "no row has every value")
    first, last = int(np.argmax(complete)), len(complete) - int(np.argmax(complete[::-1]))
    rep.trimmed_rows = int(len(df) - (last - first))
    df, inserted = df.iloc[first:last].reset_index(drop=True), inserted[first:last]

    k = pol.max_fill_steps
    ts = df["timestamp"]
    long_rows = np.zeros(len(df), dtype=bool)
    filled = {}
    for c in cols:
        miss = df[c].isna().to_numpy()
        if not miss.any():
            continue
        runs = _runs(miss)
        short = np.zeros(len(df), dtype=bool)
        for a, b in runs:
            if b - a <= k:
                short[a:b] = True
            else:
                # a run made only of missing grid points is a gap in time; otherwise the column's cells are empty
                rep.long_runs.append({"column": "timestamp" if inserted[a:b].all() else c, "value_column": c,
                                      "start": str(ts.iloc[a]), "end": str(ts.iloc[b - 1]), "steps": b - a})
                long_rows[a:b] = True
        if short.any():
            values = df[c].interpolate(method="linear", limit_area="inside")
            df.loc[short, c] = values[short]
            rep.filled[c] = int(short.sum())
            filled[c] = short

    if rep.long_runs:
        worst = max(rep.long_runs, key=lambda r: r["steps"])
        n = len({(r["start"], r["end"]) for r in rep.long_runs})
        if pol.long_gaps == "reject":
            raise RuleFailure(worst["column"], "long_gap", n,
                          [f"{worst['steps']} missing steps from {worst['start']} to {worst['end']}"],
                          f"runs longer than max_fill_steps={k}: {n}")
        # segment: the whole row becomes a break, so no window reads half a row
        for c in cols:
            blank = long_rows & df[c].notna().to_numpy()
            if blank.any():
                rep.dropped[c] = int(blank.sum())
        df.loc[long_rows, cols] = np.nan
        rep.breaks = [{"start": str(ts.iloc[a]), "end": str(ts.iloc[b - 1]), "steps": b - a}
                      for a, b in _runs(long_rows)]
    for c in cols:
        df[filled_column(c)] = filled.get(c, np.zeros(len(df), dtype=bool)) & ~long_rows
    return df
