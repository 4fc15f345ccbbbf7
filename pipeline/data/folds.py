"""Rolling-origin folds: K expanding-window train | validation | test cuts of one series (`cellcast backtest`), or of
a panel's shared time axis.

Fold k (1 = oldest) ends its test block `K - k` blocks before `end` (the series' end, or the first test row of the
main split when the backtest selects a model and must never read the final test rows). Its validation block comes
right before its test block, and it trains on every row before its validation block: the training rows grow fold
by fold, the test blocks follow each other without overlapping. A fold's window set (`fold_windowset`) holds the
rows up to its test block's end only; its scaler, plausible bounds, anchor and calibration are fitted on its own
train / validation rows exactly as the main split's are (data/splits.py), so nothing a fold fits reads its test rows.

A panel's folds are cut in time (`panel_folds`): the shared time axis is every timestamp any series holds, the
blocks are the median series' validation and test splits long in steps of it, and `end` is the first test stamp of
any series (a selection never reads a series' final test rows) or the last stamp. Each series takes its own rows
before each cut (`panel_fold_windowset`): its training rows before the fold's validation stamp, its scale fitted on
them; a series whose rows hold no window of one of the fold's blocks sits that fold out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..config import Settings
from .panel_windows import COLD, PanelWindowSet
from .splits import declared_bounds, profile_bounds, series_scale, split_for, usable_windows, window_starts
from .windowset import WindowSet


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
    and bounds fitted on its training rows (observed cells only), the windows of each split recomputed. A panel's
    fold (a PanelFold): panel_fold_windowset."""
    if isinstance(ws, PanelWindowSet):
        assert isinstance(fold, PanelFold)
        return panel_fold_windowset(ws, fold, settings)
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
    declared = declared_bounds(m.variables, settings)
    bounds = {
        **profile_bounds(pd.DataFrame(train, columns=m.variables), m.variables, settings.validate_.profile_tolerance),
        **declared,
    }

    def at(i):
        return str(pd.Timestamp(stamps[i]))

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


# --- panels: folds cut on the shared time axis ------------------------------------------------------------------


@dataclass(frozen=True)
class PanelFold(Fold):
    """A fold of a panel: rows are steps of the shared time axis; `cuts` the stamps they stand for (the validation
    block's first, the test block's first, and one past the test block's last: None at the panel's end)."""

    cuts: tuple[str, str, str | None] = ("", "", None)


def time_axis(ws: PanelWindowSet) -> np.ndarray:
    """Every timestamp any series of the panel holds, in order (the break rows repeat a series' last stamp)."""
    return np.unique(ws.timestamps)


def panel_folds(ws: PanelWindowSet, k: int, settings: Settings, before_test: bool = False) -> list[PanelFold]:
    """K folds over the panel's shared time axis (module docstring); `before_test`: ending before any series' own
    test split. ValueError (saying what is short) as make_folds."""
    m = ws.meta
    axis = time_axis(ws)
    ok = [i for i, sid in enumerate(ws.series_ids) if m.panel["status"][sid] == "ok"]
    if not ok:
        raise ValueError("no series holds its own train / validation / test split")
    grown = m.panel.get("test_horizons") or 1  # a set windowed before test splits grew on panels: they did not
    splits = np.asarray([split_for(int(ws.lengths[i]), m.horizon, settings, grown) for i in ok])
    lengths = ws.lengths[ok]
    val_rows = int(np.median(splits[:, 1] - splits[:, 0]))
    test_rows = int(np.median(lengths - splits[:, 1]))
    end = len(axis)
    if before_test:  # the first stamp of any series' own test split
        first = min(ws.timestamps[ws.offsets[i] + te] for i, (_, te) in zip(ok, splits))
        end = int(np.searchsorted(axis, first))
    folds = make_folds(end, m.lookback, m.horizon, k, val_rows, test_rows)

    def at(i):
        return str(pd.Timestamp(axis[i])) if i < len(axis) else None

    return [
        PanelFold(
            f.index,
            f.val_start,
            f.test_start,
            f.test_end,
            (str(at(f.val_start)), str(at(f.test_start)), at(f.test_end)),
        )
        for f in folds
    ]


def panel_fold_windowset(ws: PanelWindowSet, fold: PanelFold, settings: Settings) -> PanelWindowSet:
    """The panel's window set of one fold: each series' rows before the fold's end, split at its validation and
    test stamps, scaled by its own training rows; the series without a window in each block left out."""
    acc = _FoldBlocks()
    for i, sid in enumerate(ws.series_ids):
        _add_fold_series(acc, ws, i, sid, fold)
    if not acc.ids:
        raise ValueError(f"fold {fold.index}: no series holds a window of each of its blocks")
    values = np.concatenate(acc.blocks)
    filled_all = np.concatenate(acc.fblocks) if acc.fblocks else None
    offs, ends = np.asarray(acc.offsets), np.asarray(acc.train_end)
    st = {k: np.concatenate(v).astype(np.int64) for k, v in acc.starts.items()} | {COLD: np.zeros(0, np.int64)}
    ts = np.concatenate(acc.tblocks)
    meta = _panel_fold_meta(ws.meta, acc, values, ts, st, _fold_moments(values, filled_all, offs, ends))
    return PanelWindowSet(
        values,
        ts,
        meta,
        st,
        filled_all,
        np.concatenate(acc.ublocks) if acc.ublocks else None,
        offsets=offs,
        lengths=np.asarray(acc.lengths),
        train_end=ends,
    )


@dataclass
class _FoldBlocks:
    """A panel fold's window set as its series are cut (panel_fold_windowset): the panel's layout, a break row after
    each series."""

    blocks: list = field(default_factory=list)  # values, scaled by the fold's own training rows of each series
    tblocks: list = field(default_factory=list)  # timestamps
    fblocks: list = field(default_factory=list)  # the filled mask
    ublocks: list = field(default_factory=list)  # the known-future table
    starts: dict = field(default_factory=lambda: {"train": [], "val": [], "test": []})
    ids: list = field(default_factory=list)
    offsets: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    train_end: list = field(default_factory=list)
    scales: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    spans: list = field(default_factory=list)  # per series: first/last stamp of each block
    row: int = 0


def _add_fold_series(acc: _FoldBlocks, ws: PanelWindowSet, i: int, sid: str, fold: PanelFold) -> None:
    """Series `i` cut at the fold's stamps, rescaled on its training rows there; left out when one of the fold's
    blocks holds none of its windows."""
    m = ws.meta
    L, H, tidx = m.lookback, m.horizon, m.target_idx
    cut_val, cut_test = np.datetime64(fold.cuts[0]), np.datetime64(fold.cuts[1])
    cut_end = None if fold.cuts[2] is None else np.datetime64(fold.cuts[2])
    o, n = int(ws.offsets[i]), int(ws.lengths[i])
    t = ws.timestamps[o : o + n]
    ne = n if cut_end is None else int(np.searchsorted(t, cut_end))
    vs, te = int(np.searchsorted(t, cut_val)), int(np.searchsorted(t, cut_test))
    mu, sc = ws.scaler(sid)
    raw = ws.values[o : o + ne].astype(np.float64) * sc + mu
    filled = None if ws.filled is None else ws.filled[o : o + ne]
    valid = usable_windows(raw, filled, L, H, tidx)
    own = window_starts(ne, L, H, vs, te, m.stride, valid)
    if not all(len(own[k]) for k in acc.starts):
        return
    mean, scale = series_scale(raw[:vs], None if filled is None else ~filled[:vs])
    acc.blocks += [((raw - mean) / scale).astype(np.float32), np.full((1, len(m.variables)), np.nan, np.float32)]
    acc.tblocks += [t[:ne], t[ne - 1 : ne]]
    if filled is not None:
        acc.fblocks += [filled, np.zeros((1, len(m.variables)), bool)]
    if ws.future is not None:
        acc.ublocks += [ws.future[o : o + ne], ws.future[o + ne - 1 : o + ne]]
    for k in acc.starts:
        acc.starts[k].append(own[k] + acc.row)
    acc.ids.append(sid)
    acc.offsets.append(acc.row)
    acc.lengths.append(ne)
    acc.train_end.append(vs)
    acc.scales[sid] = {"mean": [float(x) for x in mean], "scale": [float(x) for x in scale]}
    acc.counts[sid] = {k: int(len(own[k])) for k in acc.starts}
    acc.spans.append([t[0], t[vs - 1], t[vs], t[te - 1], t[te], t[ne - 1]])
    acc.row += ne + 1


def _fold_moments(
    values: np.ndarray, filled: np.ndarray | None, offsets: np.ndarray, train_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The mean and spread (1 where it vanishes) of every series' training rows in the fold, observed cells only."""
    tmask = np.zeros(len(values), bool)
    for o, e in zip(offsets, train_end):
        tmask[o : o + e] = True
    train = values[tmask].astype(np.float64)
    if filled is not None:
        train = np.where(filled[tmask], np.nan, train)
    with np.errstate(invalid="ignore"):
        gmean, gstd = np.nanmean(train, axis=0), np.nanstd(train, axis=0)
    return gmean, np.where(~np.isfinite(gstd) | (gstd < 1e-8), 1.0, gstd)


def _panel_fold_meta(m, acc: _FoldBlocks, values: np.ndarray, ts: np.ndarray, st: dict, moments):
    """The panel's metadata for the fold: its rows, counts, pooled scaler, split times and the series it keeps."""
    gmean, gstd = moments
    span = np.asarray(acc.spans, dtype="datetime64[ns]")

    def at(x):
        return str(pd.Timestamp(x))

    return replace(
        m,
        rows=int(len(values)),
        counts={k: int(len(v)) for k, v in st.items() if k != COLD},
        mean=[float(x) for x in gmean],
        std=[float(x) for x in gstd],
        start=at(ts.min()),
        end=at(ts.max()),
        split_times={k: [at(span[:, 2 * j].min()), at(span[:, 2 * j + 1].max())] for j, k in enumerate(acc.starts)},
        panel={
            **m.panel,
            "series": {s: m.panel["series"][s] for s in acc.ids},
            "status": {s: "ok" for s in acc.ids},
            "scales": acc.scales,
            "counts": acc.counts,
        },
    )
