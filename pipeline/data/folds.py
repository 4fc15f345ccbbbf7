"""Rolling-origin folds: K expanding-window train | validation | test cuts of one series (`cellcast backtest`).

Fold k (1 = oldest) ends its test block `K - k` blocks before `end` (the series' end, or the first test row of the
main split when the backtest selects a model and must never read the final test rows). Its validation block comes
right before its test block, and it trains on every row before its validation block: the training rows grow fold
by fold, the test blocks follow each other without overlapping. A fold's window set (`fold_windowset`) holds the
rows up to its test block's end only; its scaler, plausible bounds, anchor and calibration are fitted on its own
train / validation rows exactly as the main split's are (data/window.py), so nothing a fold fits reads its test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..config import Settings
from .window import WindowSet, profile_bounds, usable_windows, window_starts


@dataclass(frozen=True)
class Fold:
    index: int  # 1 = oldest
    val_start: int  # first row not trained on (the validation block's first row)
    test_start: int  # the test block's first row
    test_end: int  # one past its last row: the fold reads no row from here on

    def rows(self) -> dict[str, list[int]]:
        """Each block as [first row, one past the last]."""
        return {
            "train": [0, self.val_start],
            "val": [self.val_start, self.test_start],
            "test": [self.test_start, self.test_end],
        }


def make_folds(end: int, lookback: int, horizon: int, k: int, val_rows: int, test_rows: int) -> list[Fold]:
    """K folds over rows [0, end), oldest first. ValueError (saying what is short) when the first fold would hold
    no training window, or a block is shorter than the horizon."""
    if k < 1:
        raise ValueError(f"{k} folds: need at least one")
    if min(val_rows, test_rows) < horizon:
        raise ValueError(
            f"validation / test blocks of {val_rows} / {test_rows} rows are shorter than the horizon ({horizon})"
        )
    folds = []
    for i in range(k):
        test_end = end - (k - 1 - i) * test_rows
        folds.append(Fold(i + 1, test_end - test_rows - val_rows, test_end - test_rows, test_end))
    if folds[0].val_start < lookback + horizon:
        raise ValueError(
            f"{k} folds of {val_rows} validation + {test_rows} test rows leave the first fold "
            f"{max(folds[0].val_start, 0)} training rows of the {end}, fewer than one window "
            f"(lookback {lookback} + horizon {horizon})"
        )
    return folds


def folds_for(ws: WindowSet, k: int, end: int | None = None) -> list[Fold]:
    """The folds of a window set: blocks the size of its validation and test splits, ending at `end` (default: the
    series' end)."""
    m = ws.meta
    return make_folds(
        m.rows if end is None else end,
        m.lookback,
        m.horizon,
        k,
        m.bounds["test"] - m.bounds["val"],
        m.rows - m.bounds["test"],
    )


def fold_windowset(ws: WindowSet, fold: Fold, settings: Settings) -> WindowSet:
    """The window set of one fold: the rows before `fold.test_end`, split at its validation and test rows, the scaler
    and bounds fitted on its training rows (observed cells only), the windows of each split recomputed."""
    m = ws.meta
    n, vs, ts_ = fold.test_end, fold.val_start, fold.test_start
    values = ws.values[:n]
    filled = None if ws.filled is None else ws.filled[:n]
    future = None if ws.future is None else ws.future[:n]
    stamps = ws.timestamps[:n]
    valid = usable_windows(values, filled, m.lookback, m.horizon, m.target_idx)
    starts = window_starts(n, m.lookback, m.horizon, vs, ts_, m.stride, valid)
    train = values[:vs].astype(np.float64)
    if filled is not None:
        train = np.where(filled[:vs], np.nan, train)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(train, axis=0) if len(train) else np.zeros(len(m.variables))
        std = np.nanstd(train, axis=0) if len(train) else np.ones(len(m.variables))
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(~np.isfinite(std) | (std < 1e-8), 1.0, std)
    declared = {
        v: [float(x) for x in settings.validate_.bounds[v]] for v in m.variables if v in settings.validate_.bounds
    }
    bounds = {
        **profile_bounds(pd.DataFrame(train, columns=m.variables), m.variables, settings.validate_.profile_tolerance),
        **declared,
    }
    at = lambda i: str(pd.Timestamp(stamps[i]))  # noqa: E731
    meta = replace(
        m,
        rows=n,
        bounds={"val": vs, "test": ts_},
        counts={k: int(len(v)) for k, v in starts.items()},
        mean=[float(x) for x in mean],
        std=[float(x) for x in std],
        start=at(0),
        end=at(n - 1),
        split_times={"train": [at(0), at(vs - 1)], "val": [at(vs), at(ts_ - 1)], "test": [at(ts_), at(n - 1)]},
        value_bounds=bounds,
    )
    return WindowSet(values, stamps, meta, starts, filled, future)
