"""Chronological splits, a train-only scaler, and windows as strided views.

A window starting at row `s` reads inputs `[s, s+lookback)` and targets `[s+lookback, s+lookback+horizon)`.
Rows are split in time order into train | validation | test. A window belongs to a split when all of
its targets lie inside it; train windows lie wholly inside train, so nothing a model is fit or scaled
on comes from later rows. Validation and test windows may read inputs from earlier splits: that is
history a forecaster would have at that time, not leakage.

Cells the gap policy filled (validated.parquet `filled:<variable>`) are interpolated from the
observations on both sides. A window reads a fill from after its origin (its last input row) only
when the origin itself lies in the filled run, so no window's origin is a filled row: every input is
then known at the origin. Filled targets are not observations: `target_mask` leaves them out of the
loss and the metrics, and a window with no observed target is dropped. The scaler and the plausible
bounds are fitted on observed training cells only.

Windows are never materialised: `WindowSet.view()` is a `sliding_window_view` of the series (no copy),
and a batch gathers only the rows it needs, on the CPU from numpy or on a GPU from a device-resident
series (`TorchWindows`).

A panel (many series, docs/architecture.md "Panels"): PanelWindowSet, its series one after another in one
array with per-series offsets, splits and scales (the section "panels" below).

Known-future inputs (docs/forecasting.md): a table aligned with the rows, `future` (rows, F), holds what is
known about each row ahead of time: calendar features of its timestamp (data/calendar.py) and the values of
the columns ingested as known ahead (`ingest --future-features`). The window at `s` reads its rows
[s+lookback, s+lookback+horizon), the horizon, as its future block (B, horizon, F): a view, like the windows.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import (
    SERIES_ID,
    filled_column,
    is_panel,
    panel_partitions,
    read_partition,
    read_validated,
    read_validated_meta,
    validated_paths,
    window_paths,
)
from ..config import Settings
from ..errors import DataValidationError, NotFoundError
from . import calendar as _calendar
from .frequency import seasons_for

SPLITS = ("train", "val", "test")
MAX_AUTO_SEASON = 1024  # the longest season an auto lookback spans (resolve_window)


def resolve_window(
    settings: Settings,
    freq: str,
    n_rows: int | None = None,
    schedule: dict | None = None,
    pooled_rows: int | None = None,
    panel: bool = False,
) -> tuple[int, int]:
    """Lookback and horizon in steps (on a schedule, open steps: data/schedule.py); explicit numbers in params.yaml
    win over 'auto'.

    auto horizon: one day of steps for sub-daily data, else the shortest natural season (a week of days), at most
    what lets the test split (up to `window.test_fraction_max` of the rows) hold `evaluate.min_decision_paths` whole
    horizons: 17 years of months are forecast 6 months ahead, not 12, or no decision could ever be reached on them
    (`decidable_horizon`). A panel's series keep the season: promotion pools their paths.
    auto lookback: the longest natural season that fits the series comfortably (ten lookbacks in its rows) and
    spans at most MAX_AUTO_SEASON steps, plus `train.rnn_steps`, so a model anchored on that season still sees its
    recent dynamics. The cap keeps a week of 5-minute steps (2016) out: the linear anchor's columns would outgrow
    what its training windows support (docs/research.md: four weeks of half-hours fitted worse than eight
    days) and every window read would grow with them; such a series keeps its day.
    A panel (`pooled_rows`: the rows of all its series, whose windows one model is fitted on) fits a season in its
    pooled rows, the tenth-of-a-series cap still applying to `n_rows` (the median series): thirty car parks of
    eleven weeks see last week, which one of them alone could not fit ten times.
    A panel's auto lookback holds two of that season (`window.lookback_seasons`) where a quarter of its median series
    holds them (else one, as above): the last two weeks side by side are what the seasonal-median anchor
    compares (modeling/anchor.py), one odd week outvoted; the car parks' weekly seasonal naive gave way to it. The
    window stage keeps them only where that median forecasts the validation windows better than every seasonal naive
    (`seasons_pay`), else windows the panel on one season: each further season costs every series its first windows
    (the weather panel's only January weeks, which its December test needed).
    """
    w = settings.window
    seasons = seasons_for(freq, n_rows, schedule)
    horizon = w.horizon
    if horizon == "auto":
        horizon = seasons[0] if seasons else 1
        if n_rows is not None and not panel:
            horizon = min(horizon, decidable_horizon(settings, n_rows))
    lookback = w.lookback
    basis = pooled_rows if pooled_rows is not None else n_rows
    if lookback == "auto":
        k = lookback_seasons(settings, panel)
        fit = [
            m
            for m in seasons
            if m <= MAX_AUTO_SEASON and (basis is None or (m + settings.train.rnn_steps) * 10 <= basis)
        ]
        one = (max(fit) if fit else 0) + settings.train.rnn_steps
        lookback = one + (k - 1) * (max(fit) if fit else 0)
        if n_rows is not None:  # a short series: a tenth of it at most, so every split keeps windows
            # further seasons only where a tenth of the series (a panel: a quarter of its median series) holds them
            more = one < lookback <= n_rows // (4 if panel else 10)
            lookback = lookback if more else max(2, min(one, n_rows // 10))
    return int(lookback), int(horizon)


def lookback_seasons(settings: Settings, panel: bool) -> int:
    """How many of its longest natural season an auto lookback holds (window.lookback_seasons; auto: two on a panel,
    whose pooled rows support the longer windows, one on a single series)."""
    k = settings.window.lookback_seasons
    return (2 if panel else 1) if k == "auto" else int(k)


def decidable_horizon(settings: Settings, n_rows: int) -> int:
    """The longest horizon whose `evaluate.min_decision_paths` non-overlapping windows fit in the largest test split
    (`window.test_fraction_max` of `n_rows`): the cap on an auto horizon (at least 1)."""
    return max(1, int(n_rows * settings.window.test_fraction_max) // settings.evaluate.min_decision_paths)


@dataclass
class WindowMeta:
    name: str
    variables: list[str]
    targets: list[str]
    freq: str
    lookback: int
    horizon: int
    stride: int
    rows: int
    bounds: dict[str, int]  # first row of val and of test
    counts: dict[str, int]
    mean: list[float]
    std: list[float]
    start: str
    end: str
    split_times: dict[str, list[str]]  # first and last timestamp of each split's rows
    data_md5: str | None = None
    seasons: list[int] = field(default_factory=list)
    # plausible range of each variable: declared (validate.bounds) or profiled on the observed training
    # cells; travels with the model (ONNX metadata `bounds`) and checks new data at forecast and serve time
    value_bounds: dict[str, list[float]] = field(default_factory=dict)
    # the known-future block: column names in order, each "calendar" (computed from timestamps) or "user"
    # (a column ingested as known ahead), and the calendar settings that computed the first kind
    future_names: list[str] = field(default_factory=list)
    future_kinds: list[str] = field(default_factory=list)
    calendar: dict = field(default_factory=dict)
    # a panel's series (PanelWindowSet): ids in order, status, per-series scales, window counts; {}: one series
    panel: dict = field(default_factory=dict)
    # the opening hours the rows keep (data/schedule.py): steps count open steps; None: every step of the grid
    schedule: dict | None = None

    @property
    def target_idx(self) -> list[int]:
        return [self.variables.index(t) for t in self.targets]

    @property
    def n_future(self) -> int:
        return len(self.future_names)


def _owned(a: np.ndarray, dtype) -> np.ndarray:
    """A contiguous array this set may hand to torch: pandas 3 gives read-only views (copy-on-write), which
    torch.from_numpy warns about (it could write through them); those are copied once, the rest are kept."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


class WindowSet:
    """A series with its splits. `values` may hold NaN rows where a long gap was kept as a break;
    `filled` (rows, variables) marks the cells the gap policy filled (None: every cell observed).
    A panel's series in one array: PanelWindowSet (below)."""

    is_panel = False

    def __init__(
        self,
        values: np.ndarray,
        timestamps: np.ndarray,
        meta: WindowMeta,
        starts: dict[str, np.ndarray],
        filled: np.ndarray | None = None,
        future: np.ndarray | None = None,
    ):
        self.values = _owned(values, np.float32)
        self.timestamps = timestamps
        self.meta = meta
        self.starts = {k: _owned(v, np.int64) for k, v in starts.items()}
        self.filled = _owned(filled, bool) if filled is not None and filled.any() else None
        # (rows, F) known-future table aligned with `values`; None when the model reads no future inputs
        self.future = _owned(future, np.float32) if future is not None and future.shape[1] else None
        if self.future is not None and len(self.future) != len(self.values):
            raise ValueError(f"future table: {len(self.future)} rows for {len(self.values)} rows of values")
        # per row, per target: observed (True) or filled; the view target_mask() windows over
        self._observed = None if self.filled is None else ~self.filled[:, meta.target_idx]

    # --- views and batches -------------------------------------------------------------------
    @property
    def span(self) -> int:
        return self.meta.lookback + self.meta.horizon

    def view(self) -> np.ndarray:
        """All windows as a read-only strided view (n_windows, lookback+horizon, n_vars): no copy."""
        v = np.lib.stride_tricks.sliding_window_view(self.values, self.span, axis=0)  # (n, V, span)
        return v.transpose(0, 2, 1)

    def batch(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (B, lookback, V) and targets (B, horizon, T) for the windows starting at `starts`."""
        w = self.view()[starts]
        L = self.meta.lookback
        return w[:, :L, :], w[:, L:, :][:, :, self.meta.target_idx]

    def targets(self, starts: np.ndarray) -> np.ndarray:
        """(B, horizon, T) the targets batch() gives for the windows at `starts`, without gathering their lookback
        rows (a tenth of the memory at a lookback of 216 + 24)."""
        rows = np.asarray(starts)[:, None] + self.meta.lookback + np.arange(self.meta.horizon)
        return self.values[rows][:, :, self.meta.target_idx]

    def future_batch(self, starts: np.ndarray, table: np.ndarray | None = None) -> np.ndarray | None:
        """(B, horizon, F) known-future inputs of the windows at `starts` (their horizon rows) from this set's table
        (or `table`, aligned with its rows: another model's, future_table_for); None without any."""
        table = self.future if table is None else table
        if table is None:
            return None
        v = np.lib.stride_tricks.sliding_window_view(table, self.meta.horizon, axis=0)  # (n, F, H), a view
        return v[np.asarray(starts) + self.meta.lookback].transpose(0, 2, 1)

    def future_table_for(self, names: list[str], kinds: list[str], calendar: dict | None) -> np.ndarray | None:
        """The known-future table a model with these columns reads, for this series' rows (a model trained with
        other calendar settings or columns, e.g. the champion): calendar columns computed from the timestamps,
        user columns taken from this set's table or its variables. ValueError naming a column it cannot give."""
        if not names:
            return None
        if (
            list(names) == self.meta.future_names
            and list(kinds) == self.meta.future_kinds
            and _calendar.as_dict(calendar) == _calendar.as_dict(self.meta.calendar or None)
        ):
            return self.future
        cal, got = _calendar.calendar_features(self.timestamps, self.meta.freq, calendar or {})
        cols = []
        for n, k in zip(names, kinds):
            if k == _calendar.CALENDAR:
                if n not in got:
                    raise ValueError(f"calendar column '{n}' does not exist at frequency {self.meta.freq}")
                cols.append(cal[:, got.index(n)])
            elif (
                self.future is not None
                and n in self.meta.future_names
                and self.meta.future_kinds[self.meta.future_names.index(n)] == k
            ):
                cols.append(self.future[:, self.meta.future_names.index(n)])
            elif n in self.meta.variables:
                cols.append(self.values[:, self.meta.variables.index(n)])
            else:
                raise ValueError(f"known-future column '{n}' is not in this data")
        return np.stack(cols, axis=1).astype(np.float32)

    def future_scaler(self) -> tuple[list[float], list[float]]:
        """Mean and std of each known-future column for the model's scaling: a column a user supplies is scaled
        like the variables (its training rows); calendar features are left as they are (already in [-1, 1])."""
        if self.future is None:
            return [], []
        rows = self._future_train_rows()
        mean, std = [], []
        for j, kind in enumerate(self.meta.future_kinds):
            # one column's training rows at a time, and none of a calendar column's (it is not scaled)
            col = self.future[:, j][rows].astype(np.float64) if kind in (_calendar.USER, _calendar.STATIC) else None
            v = np.zeros(0) if col is None else col[np.isfinite(col)]
            user = kind in (_calendar.USER, _calendar.STATIC) and len(v)
            mean.append(float(v.mean()) if user else 0.0)
            sd = float(v.std()) if user else 1.0
            std.append(sd if np.isfinite(sd) and sd >= 1e-8 else 1.0)
        return mean, std

    def _future_train_rows(self):
        """The rows the future scaler is fitted on: the training split's."""
        return slice(0, self.meta.bounds["val"])

    def inputs(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """What a model reads for the windows at `starts`: the lookback (B, L, V) and the future block (or None),
        contiguous float32."""
        x, _ = self.batch(starts)
        f = self.future_batch(starts)
        return np.ascontiguousarray(x), None if f is None else np.ascontiguousarray(f)

    def target_mask(self, starts: np.ndarray) -> np.ndarray | None:
        """(B, horizon, T) bool: which targets of the windows at `starts` were observed (False: filled, not to
        be scored). None when no cell was filled."""
        if self._observed is None:
            return None
        v = np.lib.stride_tricks.sliding_window_view(self._observed, self.meta.horizon, axis=0)  # (n, T, H), a view
        return v[np.asarray(starts) + self.meta.lookback].transpose(0, 2, 1)

    def series_floor(self, starts: np.ndarray) -> np.ndarray:
        """The first row of the series each window lies in (0 here; a panel's series start at their offsets)."""
        return np.zeros(len(starts), dtype=np.int64)

    def target_series(self) -> np.ndarray:
        return self.values[:, self.meta.target_idx]

    def observed_target_series(self) -> np.ndarray:
        """The targets with filled cells as NaN: observations only."""
        y = self.target_series()
        return y if self._observed is None else np.where(self._observed, y, np.nan)

    def with_starts(self, **starts: np.ndarray) -> WindowSet:
        """The same series (values, fill mask, known-future table) with some splits' windows replaced."""
        return WindowSet(self.values, self.timestamps, self.meta, {**self.starts, **starts}, self.filled, self.future)

    def to_torch(self, device="cpu") -> TorchWindows:
        return TorchWindows(self, device)


class TorchWindows:
    """The series resident on a device; windows are `unfold` views and batches are gathered there."""

    def __init__(self, ws: WindowSet, device="cpu"):
        import torch  # here: validation imports this module and needs no torch

        self.ws = ws
        self.device = torch.device(device)
        self.series = torch.from_numpy(ws.values).to(self.device)
        self.windows = self.series.unfold(0, ws.span, 1)  # (n, V, span), a view
        self.target_idx = torch.tensor(ws.meta.target_idx, device=self.device)
        self.starts = {k: torch.from_numpy(v).to(self.device) for k, v in ws.starts.items()}
        self.observed = (
            None
            if ws._observed is None
            else torch.from_numpy(ws._observed).to(self.device).unfold(0, ws.meta.horizon, 1)
        )  # (n, T, H), a view
        self.future_windows = (
            None if ws.future is None else torch.from_numpy(ws.future).to(self.device).unfold(0, ws.meta.horizon, 1)
        )  # (n, F, H), a view

    def batch(self, idx):
        L = self.ws.meta.lookback
        if self.device.type == "cpu":
            import torch

            # numpy's gather on the sliding view is ~3x faster than torch indexing an unfold view on a CPU
            x, y = self.ws.batch(idx.numpy())
            return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))
        w = self.windows[idx].transpose(1, 2)  # (B, span, V): copies the batch only
        return w[:, :L, :], w[:, L:, :].index_select(2, self.target_idx)

    def future(self, idx):
        """(B, horizon, F) known-future inputs of the windows `idx`; None when the set has none."""
        if self.future_windows is None:
            return None
        if self.device.type == "cpu":
            import torch

            return torch.from_numpy(np.ascontiguousarray(self.ws.future_batch(idx.numpy())))
        return self.future_windows[idx + self.ws.meta.lookback].transpose(1, 2)

    def target_mask(self, idx):
        """(B, horizon, T) float, 1 where a target was observed, 0 where filled; None when nothing was filled."""
        if self.observed is None:
            return None
        if self.device.type == "cpu":
            import torch

            return torch.from_numpy(np.ascontiguousarray(self.ws.target_mask(idx.numpy()), dtype=np.float32))
        return self.device_target_mask(idx)

    def device_target_mask(self, idx):
        """target_mask gathered from the device-resident unfold view (the GPU path; runs on any device)."""
        return self.observed[idx + self.ws.meta.lookback].transpose(1, 2).float()


# --- building ------------------------------------------------------------------------------------


def profile_bounds(df: pd.DataFrame, columns: list[str], tolerance: float) -> dict[str, list[float]]:
    """[min - t*range, max + t*range] of each column's finite values (a constant column gets +-t*|value| or +-t).
    Profile rows other than those it will check: a range drawn from the values it judges cannot fail."""
    out = {}
    for c in columns:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype="float64")
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        lo, hi = float(v.min()), float(v.max())
        span = (hi - lo) or (abs(hi) or 1.0)
        out[c] = [lo - tolerance * span, hi + tolerance * span]
    return out


def split_for(rows: int, horizon: int, settings: Settings, panel: bool = False) -> tuple[int, int]:
    """Where the validation and the test split start. The test split is `window.test_fraction` of the rows, grown (up
    to `window.test_fraction_max`) until it holds the `evaluate.min_decision_paths` whole horizons promotion weighs:
    on a short series 15% of the rows give too few forecasts for any decision, and no decision is no champion. The
    training rows give way; the validation split keeps its share. A panel's series keep `test_fraction`: promotion
    pools the paths of every series."""
    w = settings.window
    n_test = int(round(rows * w.test_fraction))
    want = 0 if panel else settings.evaluate.min_decision_paths * horizon
    if n_test < want:
        n_test = max(n_test, min(want, int(rows * w.test_fraction_max)))
    n_val = int(round(rows * w.val_fraction))
    return rows - n_val - n_test, rows - n_test


def window_starts(
    rows: int,
    lookback: int,
    horizon: int,
    val_start: int,
    test_start: int,
    stride: int = 1,
    valid: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Start rows of the windows of each split. `valid[s]` False drops the window at s (it crosses a break)."""
    s = np.arange(max(rows - lookback - horizon + 1, 0))
    first_target, end = s + lookback, s + lookback + horizon
    masks = {
        "train": end <= val_start,
        "val": (first_target >= val_start) & (end <= test_start),
        "test": first_target >= test_start,
    }
    out = {}
    for k, m in masks.items():
        if valid is not None:
            m = m & valid[: len(s)]
        idx = s[m]
        out[k] = idx[::stride] if k == "train" else idx
    return out


def test_origins(starts: np.ndarray, horizon: int) -> int:
    """How many windows among sorted `starts` have horizons that do not overlap: origins at least a horizon
    apart, taken greedily from the first (what a test of independent forecasts can count)."""
    n, i, k = 0, 0, len(starts)
    while i < k:
        n += 1
        i = int(np.searchsorted(starts, starts[i] + horizon))
    return n


def window_shortfall(starts: dict[str, np.ndarray], horizon: int, settings: Settings) -> tuple[str, str] | None:
    """(rule, what is short) when the splits hold fewer windows than params.yaml `ingest` asks, else None."""
    need = settings.ingest.min_windows
    for k, s in starts.items():
        if len(s) < need:
            return "min_windows", f"{len(s)} {k} window(s), need {need} per split"
    origins, need = test_origins(starts["test"], horizon), settings.ingest.min_test_horizons
    if origins < need:
        return "min_test_horizons", f"{origins} non-overlapping test window(s) of horizon {horizon}, need {need}"
    return None


def complete_windows(values: np.ndarray, span: int) -> np.ndarray:
    """valid[s] is True when the window starting at s holds no NaN (a cumulative count, no window copies)."""
    bad = np.isnan(values).any(axis=1).astype(np.int64)
    c = np.concatenate([[0], np.cumsum(bad)])
    n = max(len(values) - span + 1, 0)
    return (c[span : span + n] - c[:n]) == 0


def usable_windows(
    values: np.ndarray, filled: np.ndarray | None, lookback: int, horizon: int, target_idx: list[int]
) -> np.ndarray:
    """valid[s]: the window at s crosses no break, its origin (row s+lookback-1) is observed in every variable
    (a fill there was drawn from a later observation), and at least one of its targets is observed."""
    valid = complete_windows(values, lookback + horizon)
    if filled is None or not filled.any():
        return valid
    n = len(valid)
    origin_filled = np.asarray(filled.any(axis=1))[lookback - 1 : lookback - 1 + n]
    seen = (~filled[:, target_idx]).any(axis=1).astype(np.int64)  # rows with an observed target
    c = np.concatenate([[0], np.cumsum(seen)])
    s = np.arange(n)
    return valid & ~origin_filled & (c[s + lookback + horizon] - c[s + lookback] > 0)


def filled_mask(frame: pd.DataFrame, variables: list[str]) -> np.ndarray | None:
    """(rows, variables) bool from a validated frame's `filled:` columns; None when it has none."""
    cols = [filled_column(v) for v in variables]
    if not any(c in frame.columns for c in cols):
        return None
    return np.stack(
        [frame[c].to_numpy(dtype=bool) if c in frame.columns else np.zeros(len(frame), bool) for c in cols], axis=1
    )


def future_table(
    timestamps, freq: str, calendar, columns: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray | None, list[str], list[str]]:
    """The known-future table of a series: calendar features of `timestamps` (data/calendar.py), then the
    user-supplied `columns` (name -> values, one per row). -> (rows, F) float32 or None, names, kinds."""
    cal, names = _calendar.calendar_features(timestamps, freq, calendar)
    kinds = [_calendar.CALENDAR] * len(names)
    parts = [cal]
    for c, v in (columns or {}).items():
        parts.append(np.asarray(v, dtype=np.float32).reshape(-1, 1))
        names.append(c)
        kinds.append(_calendar.USER)
    if not names:
        return None, [], []
    return np.concatenate(parts, axis=1).astype(np.float32), names, kinds


def future_block(
    names: list[str],
    kinds: list[str],
    calendar: dict | None,
    freq: str,
    stamps,
    user: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """One forecast's known-future block (H, F) for the horizon timestamps `stamps`: calendar columns computed from
    them, user columns from `user` (name -> H values, checked by the caller: never filled here)."""
    cal, got = _calendar.calendar_features(stamps, freq, calendar or {})
    cols = []
    for n, k in zip(names, kinds):
        if k == _calendar.CALENDAR:
            if n not in got:
                raise ValueError(f"calendar column '{n}' does not exist at frequency {freq}")
            cols.append(cal[:, got.index(n)])
        else:
            cols.append(np.asarray((user or {})[n], dtype=np.float32))
    return np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((len(stamps), 0), np.float32)


def build_windows(
    frame: pd.DataFrame,
    *,
    variables: list[str],
    targets: list[str],
    freq: str,
    settings: Settings,
    data_md5: str | None = None,
    future_features: list[str] | None = None,
    schedule: dict | None = None,
) -> WindowSet:
    name = settings.dataset
    lookback, horizon = resolve_window(settings, freq, len(frame), schedule)
    w = settings.window
    values = frame[variables].to_numpy(dtype=np.float32)
    filled = filled_mask(frame, variables)
    rows = len(values)
    val_start, test_start = split_for(rows, horizon, settings)
    target_idx = [variables.index(t) for t in targets]
    valid = usable_windows(values, filled, lookback, horizon, target_idx)
    starts = window_starts(rows, lookback, horizon, val_start, test_start, w.stride, valid)
    short = window_shortfall(starts, horizon, settings)
    if short:
        rule, what = short
        raise DataValidationError(
            f"{name}: {rows} rows give {what} (lookback {lookback}, horizon {horizon}): use a longer series, "
            f"a shorter window.lookback / window.horizon or a lower ingest.{rule} in params.yaml"
        )
    train = values[:val_start]
    observed = frame[variables].iloc[:val_start]
    if filled is not None:  # observed cells only
        train = np.where(filled[:val_start], np.nan, train)
        observed = observed.mask(filled[:val_start])
    declared = {
        v: [float(x) for x in settings.validate_.bounds[v]] for v in variables if v in settings.validate_.bounds
    }
    value_bounds = {**profile_bounds(observed, variables, settings.validate_.profile_tolerance), **declared}
    mean = np.nanmean(train, axis=0)
    std = np.nanstd(train, axis=0)
    std = np.where(~np.isfinite(std) | (std < 1e-8), 1.0, std)  # a constant column scales by 1
    ts = frame["timestamp"].to_numpy()
    missing = [c for c in (future_features or []) if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{name}: known-future column(s) {', '.join(missing)} not in the data: re-ingest "
            f"with them (--future-features)"
        )
    # calendar.parts auto: from the frequency and the time the training rows cover
    cal = _calendar.resolved(settings.calendar, freq, pd.Timestamp(ts[val_start - 1]) - pd.Timestamp(ts[0]))
    future, fnames, fkinds = future_table(
        ts, freq, cal, {c: frame[c].to_numpy(np.float32) for c in (future_features or [])}
    )
    at = lambda i: str(pd.Timestamp(ts[i]))  # noqa: E731  (readable stamps in windows.json and messages)
    meta = WindowMeta(
        name=name,
        variables=list(variables),
        targets=list(targets),
        freq=freq,
        lookback=lookback,
        horizon=horizon,
        stride=w.stride,
        rows=rows,
        bounds={"val": int(val_start), "test": int(test_start)},
        counts={k: int(len(v)) for k, v in starts.items()},
        mean=[float(x) for x in mean],
        std=[float(x) for x in std],
        start=at(0),
        end=at(-1),
        split_times={
            "train": [at(0), at(val_start - 1)],
            "val": [at(val_start), at(test_start - 1)],
            "test": [at(test_start), at(-1)],
        },
        data_md5=data_md5,
        seasons=seasons_for(freq, rows, schedule),
        value_bounds=value_bounds,
        future_names=fnames,
        future_kinds=fkinds,
        calendar=cal if fnames else {},
        schedule=schedule,
    )
    return WindowSet(values, ts, meta, starts, filled, future)


# --- panels: many series in one array -----------------------------------------------------------
# Windows across the series of a panel (docs/architecture.md, "Panels"), without copying series x lookback.
#
# Layout: one values array holds every kept series one after another in validated.parquet's order, each followed by
# one NaN row (a break: a diff or a window that ran from one series into the next would meet it), and
# `offsets[i]` is the first row of series i. Window starts are rows of that array, chosen per series and per split
# exactly as for one series (its own chronological train | validation | test by `window.val_fraction` /
# `test_fraction` of its own rows, never crossing a break), so `WindowSet.view()` / `batch()` / the trainer and
# the evaluation read a panel as they read one series: a batch gathers its rows, nothing else is materialised.
#
# Scaling is per series: each series' values are stored as `(raw - mean) / scale`, with `mean` and `scale` fitted
# on the observed cells of that series' own training rows, `scale` the mean absolute one-step difference there (the
# MASE denominator; the standard deviation where that is zero). So one scaled error is a MASE contribution of that
# series: pooled metrics are the window-weighted mean of per-series MASE, and one global model sees series of any
# level and unit alike. The model's own scaler (ModelSpec mean / std) is then fitted on the pooled scaled training
# cells. The per-series `mean` and `scale` travel with the model (ONNX metadata `panel`): a forecast scales a series'
# lookback with them and unscales the output.
#
# Cold start (validated.json status `cold_start`): a series too short for its own splits is scaled on its first
# `lookback` rows (history before any target it is scored on) and all its windows are kept apart (`starts["cold"]`):
# never trained or selected on, scored and reported per series, forecast like the others, and left out of the pooled
# test windows the promotion weighs.
#
# Sampling (`window.panel_weighting`, modeling/train.panel_sampler): `uniform` draws training windows uniformly (a
# long series weighs more); `per_series` draws a series uniformly, then one of its windows, so each counts alike.

COLD = "cold"  # the starts key of cold-start series' windows


def series_scale(values: np.ndarray, observed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per variable: the mean and the mean absolute one-step difference of the observed cells of `values`
    (rows, V); a difference counts only between two observed neighbours. Where that is zero or missing: the
    standard deviation, then 1."""
    v = values.astype(np.float64)
    if observed is not None:
        v = np.where(observed, v, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: handled below
        mean = np.nanmean(v, axis=0) if len(v) else np.zeros(v.shape[1])
        d = np.nanmean(np.abs(np.diff(v, axis=0)), axis=0) if len(v) > 1 else np.full(v.shape[1], np.nan)
        sd = np.nanstd(v, axis=0) if len(v) else np.full(v.shape[1], np.nan)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.where(np.isfinite(d) & (d > 1e-8), d, np.where(np.isfinite(sd) & (sd > 1e-8), sd, 1.0))
    return mean, scale


class PanelWindowSet(WindowSet):
    """A panel's series in one array (module docstring). `meta.panel` names the series in order with their
    status, scale and window counts; `offsets`, `lengths` and `train_end` (rows of each series' own training
    split) locate them."""

    is_panel = True

    def __init__(
        self,
        values,
        timestamps,
        meta: WindowMeta,
        starts,
        filled=None,
        future=None,
        *,
        offsets: np.ndarray,
        lengths: np.ndarray,
        train_end: np.ndarray,
    ):
        super().__init__(values, timestamps, meta, starts, filled, future)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.train_end = np.asarray(train_end, dtype=np.int64)

    # --- which series a window belongs to --------------------------------------------------------
    @property
    def series_ids(self) -> list[str]:
        return list(self.meta.panel["series"])

    def series_index(self, starts: np.ndarray) -> np.ndarray:
        """The position (in series_ids) of the series each window start lies in."""
        return np.searchsorted(self.offsets, np.asarray(starts), side="right") - 1

    def series_floor(self, starts: np.ndarray) -> np.ndarray:
        """The first row of each window's series: nothing before it belongs to that series."""
        return self.offsets[self.series_index(starts)]

    def series_starts(self, split: str) -> dict[str, np.ndarray]:
        """Each series' windows of `split` (or 'cold'): series id -> starts (empty series left out)."""
        starts = self.starts.get(split, np.zeros(0, np.int64))
        idx = self.series_index(starts)
        ids = self.series_ids
        cuts = np.flatnonzero(np.diff(idx)) + 1
        return {ids[int(g[0])]: s for g, s in zip(np.split(idx, cuts), np.split(starts, cuts)) if len(s)}

    def train_rows(self) -> np.ndarray:
        """bool (rows,): the rows of every series' own training split (a cold-start series: its first lookback)."""
        m = np.zeros(len(self.values), dtype=bool)
        for o, e in zip(self.offsets, self.train_end):
            m[o : o + e] = True
        return m

    def _future_train_rows(self):
        return self.train_rows()  # every series' own training rows

    def with_starts(self, **starts: np.ndarray) -> PanelWindowSet:
        return PanelWindowSet(
            self.values,
            self.timestamps,
            self.meta,
            {**self.starts, **starts},
            self.filled,
            self.future,
            offsets=self.offsets,
            lengths=self.lengths,
            train_end=self.train_end,
        )

    # --- per-series scaling ----------------------------------------------------------------------
    def scaler(self, series_id: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.meta.panel["scales"][series_id]
        return np.asarray(s["mean"], np.float64), np.asarray(s["scale"], np.float64)

    def unscale_targets(self, y: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """(B, H, T[, Q]) forecasts or targets of the windows at `starts`, back in each series' own units."""
        mu, sc = self._target_scales()
        i = self.series_index(starts)
        shape = (len(i), 1, -1) + (1,) * (y.ndim - 3)
        return y * sc[i].reshape(shape) + mu[i].reshape(shape)

    def _target_scales(self) -> tuple[np.ndarray, np.ndarray]:
        tidx = self.meta.target_idx
        mu = np.stack([self.scaler(s)[0][tidx] for s in self.series_ids])
        sc = np.stack([self.scaler(s)[1][tidx] for s in self.series_ids])
        return mu, sc


def panel_window_meta(meta: dict, settings: Settings) -> tuple[int, int]:
    """The lookback and horizon of a panel's windows: what validation judged the statuses on (params.yaml's
    numbers, else 'auto' resolved for the median series)."""
    w = (meta.get("panel") or {}).get("window") or {}
    lb, hz = settings.window.lookback, settings.window.horizon
    return int(lb if lb != "auto" else w["lookback"]), int(hz if hz != "auto" else w["horizon"])


@dataclass
class _PanelBlocks:
    """The window set of a panel as its series are read, a partition at a time (build_panel_windows)."""

    variables: list[str]
    targets: list[str]
    future_features: list[str]
    lookback: int
    horizon: int
    static_cols: list[str]
    static_values: dict
    ids: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    train_end: list[int] = field(default_factory=list)
    scales: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    spans: list = field(default_factory=list)  # per series with splits: first/last stamp of each split
    starts: dict = field(default_factory=lambda: {"train": [], "val": [], "test": [], COLD: []})
    blocks: list | _Spill = field(
        default_factory=list
    )  # values, scaled per series, float32; a break row after each series
    fblocks: list | _Spill = field(default_factory=list)  # the filled mask, laid out alike
    tblocks: list | _Spill = field(default_factory=list)  # timestamps
    sblocks: list | _Spill = field(default_factory=list)  # static values on each row
    ublocks: dict = field(default_factory=dict)  # known-future columns, laid out alike
    seen: int = 0  # series read
    row: int = 0
    spill: Path | None = None  # a folder: the blocks go to files there as they come, not into memory

    def __post_init__(self) -> None:
        if self.spill is not None:
            self.blocks, self.fblocks, self.tblocks, self.sblocks = (
                _Spill(self.spill / f"{k}.bin") for k in ("values", "filled", "timestamps", "static")
            )
            self.ublocks = {c: _Spill(self.spill / f"future-{i}.bin") for i, c in enumerate(self.future_features)}


class _Spill:
    """Blocks of rows of one dtype and width appended to a file, not kept in memory; `array()` maps them back as one
    array (what np.concatenate of the blocks would be). Stands in for a _PanelBlocks list of blocks."""

    def __init__(self, path: Path):
        self.path, self.blocks, self.rows = path, 0, 0
        self.dtype: np.dtype | None = None
        self.tail: tuple = ()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block)
        self.dtype, self.tail = block.dtype, block.shape[1:]
        with open(self.path, "ab") as f:
            block.tofile(f)
        self.blocks, self.rows = self.blocks + 1, self.rows + len(block)

    def extend(self, blocks: Iterable[np.ndarray]) -> None:
        for b in blocks:
            self.append(b)

    def clear(self) -> None:
        """(the list's clear(): the blocks stay on disk until array() has mapped them)"""

    def __len__(self) -> int:
        return self.blocks

    def array(self) -> np.ndarray:
        assert self.dtype is not None  # array() is called on spills that were written to
        # copy-on-write: writable as a set's arrays must be (WindowSet._owned), the file never changed
        return (
            np.memmap(self.path, self.dtype, "c", shape=(self.rows, *self.tail))
            if self.rows
            else np.zeros((0, *self.tail), self.dtype)
        )


def _joined(blocks) -> np.ndarray:
    """The blocks of a _PanelBlocks field as one array: concatenated, or mapped from their file."""
    return blocks.array() if isinstance(blocks, _Spill) else np.concatenate(blocks)


def build_panel_windows(
    frame: pd.DataFrame | Iterable[pd.DataFrame], meta: dict, *, settings: Settings, spill: Path | None = None
) -> PanelWindowSet:
    """validated.parquet's rows (sorted by series, then time; or its partitions of whole series, one after another)
    and validated.json -> the panel's window set. Read by partitions, only the window set grows with the panel;
    with `spill` (a folder) not even that: its arrays are written there as the series come and mapped from there
    (the files must outlive the set)."""
    name = settings.dataset
    targets = list(meta["targets"])
    lookback, horizon = panel_window_meta(meta, settings)
    acc = _PanelBlocks(
        targets + list(meta.get("features") or []),
        targets,
        list(meta.get("future_features") or []),
        lookback,
        horizon,
        list((meta.get("static") or {}).get("columns") or []),
        (meta.get("static") or {}).get("values") or {},
        spill=spill,
    )
    for part in [frame] if isinstance(frame, pd.DataFrame) else frame:
        _add_series(acc, part, meta, name, settings)
    if not acc.ids:
        raise DataValidationError(
            f"{name}: none of its {acc.seen} series holds a whole window of lookback "
            f"{lookback} + horizon {horizon}: use a shorter window.lookback / window.horizon"
        )
    if not any(len(x) for x in acc.starts["train"]):
        raise DataValidationError(
            f"{name}: every series is cold start (too short for its own train / validation / "
            f"test windows): a global model needs at least one series with its own splits"
        )
    return _assemble_panel(acc, meta, name, settings)


def _add_series(acc: _PanelBlocks, frame: pd.DataFrame, meta: dict, name: str, settings: Settings) -> None:
    """Each series of a partition of the validated panel: its windows, splits and scale, its rows scaled."""
    missing = [c for c in acc.future_features if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{name}: known-future column(s) {', '.join(missing)} not in the data: re-ingest "
            f"with them (--future-features)"
        )
    info, w = meta["panel"], settings.window
    lookback, horizon, variables = acc.lookback, acc.horizon, acc.variables
    target_idx = [variables.index(t) for t in acc.targets]
    sid = frame[SERIES_ID].to_numpy()
    cuts = np.flatnonzero(sid[1:] != sid[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [len(frame)]]).astype(np.int64) if len(frame) else np.zeros(1, np.int64)
    raw = frame[variables].to_numpy(dtype=np.float64)
    fill = filled_mask(frame, variables)
    ts_all = frame["timestamp"].to_numpy().astype("datetime64[ns]")
    for a, b in zip(bounds[:-1], bounds[1:]):
        s_id = str(sid[a])
        n = int(b - a)
        acc.seen += 1
        vals = raw[a:b]
        f = None if fill is None else fill[a:b]
        valid = usable_windows(vals, f, lookback, horizon, target_idx)
        if not valid.any():
            acc.skipped[s_id] = f"{n} rows hold no whole window of lookback {lookback} + horizon {horizon}"
            continue
        vs, te = split_for(n, horizon, settings, panel=True)
        own = window_starts(n, lookback, horizon, vs, te, w.stride, valid)
        validated = (info["series"].get(s_id) or {}).get("status", "ok")
        short = window_shortfall(own, horizon, settings) if validated == "ok" else ("cold_start", "validated as such")
        if short is None:
            kind, end = "ok", vs
            for k in ("train", "val", "test"):
                acc.starts[k].append(own[k] + acc.row)
            t = ts_all[a:b]
            acc.spans.append([t[0], t[vs - 1], t[vs], t[te - 1], t[te], t[-1]])
        else:  # too short for its own splits: every whole window is a cold-start test window
            kind, end = "cold_start", lookback
            acc.starts[COLD].append(np.flatnonzero(valid) + acc.row)
        observed = None if f is None else ~f[:end]
        mean, scale = series_scale(vals[:end], observed)
        acc.ids.append(s_id)
        acc.offsets.append(acc.row)
        acc.lengths.append(n)
        acc.train_end.append(end)
        acc.status[s_id] = kind if short is None or validated != "ok" else f"cold_start ({short[1]})"
        acc.scales[s_id] = {"mean": [float(x) for x in mean], "scale": [float(x) for x in scale]}
        acc.counts[s_id] = (
            {k: int(len(own[k])) for k in ("train", "val", "test")} if kind == "ok" else {COLD: int(valid.sum())}
        )
        acc.blocks.append(((vals - mean) / scale).astype(np.float32))
        acc.blocks.append(np.full((1, len(variables)), np.nan, np.float32))  # the break after each series
        if acc.static_cols:  # the series' static values on each of its rows and its break
            row = np.asarray([acc.static_values[s_id][c] for c in acc.static_cols], np.float32)
            acc.sblocks.append(np.tile(row, (n + 1, 1)))
        acc.tblocks.append(ts_all[a:b])
        acc.tblocks.append(ts_all[b - 1 : b])  # the break row repeats the last stamp
        for c in acc.future_features:  # the break row repeats the last value
            col = frame[c].to_numpy(np.float32)
            acc.ublocks.setdefault(c, []).extend([col[a:b], col[b - 1 : b]])
        if f is not None:
            acc.fblocks.append(f)
            acc.fblocks.append(np.zeros((1, len(variables)), bool))
        acc.row += n + 1


def _assemble_panel(acc: _PanelBlocks, meta: dict, name: str, settings: Settings) -> PanelWindowSet:
    """The blocks of every series as one window set, with its known-future table and metadata."""
    values = _joined(acc.blocks)
    acc.blocks.clear()
    ts = _joined(acc.tblocks)
    filled = _joined(acc.fblocks) if acc.fblocks else None
    st = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)).astype(np.int64) for k, v in acc.starts.items()}
    freq = meta["freq"]
    # calendar.parts auto: from the frequency and the longest time a series' training rows cover
    train_span = max((pd.Timestamp(sp[1]) - pd.Timestamp(sp[0]) for sp in acc.spans), default=None)
    cal = _calendar.resolved(settings.calendar, freq, train_span)
    user = {c: _joined(acc.ublocks[c]) for c in acc.future_features}
    static = _joined(acc.sblocks) if acc.static_cols else None
    fut, fnames, fkinds = _future_table_by_rows(ts, freq, cal, user, static=static, spill=acc.spill)
    if acc.static_cols:
        fnames, fkinds = fnames + acc.static_cols, fkinds + [_calendar.STATIC] * len(acc.static_cols)
    offsets_a, train_a = np.asarray(acc.offsets), np.asarray(acc.train_end)
    gmean, gstd = _train_moments(values, filled, offsets_a, train_a)
    wmeta = _panel_window_meta(acc, meta, name, settings, values, ts, st, (gmean, gstd), (fnames, fkinds, cal))
    return PanelWindowSet(
        values, ts, wmeta, st, filled, fut, offsets=offsets_a, lengths=np.asarray(acc.lengths), train_end=train_a
    )


def _future_table_by_rows(
    ts: np.ndarray,
    freq: str,
    cal,
    user: dict[str, np.ndarray],
    rows: int = 1 << 20,
    static: np.ndarray | None = None,
    spill: Path | None = None,
):
    """future_table of a panel's rows, `rows` at a time into one float32 table: the calendar's float64 working
    columns exist for one slice, not for every row of the panel (each row's features are its own timestamp's).
    `static` (rows, S) columns go on its right; with `spill` the table is a file there, mapped."""
    out = None
    names: list[str] = []
    kinds: list[str] = []
    for a in range(0, max(len(ts), 1), rows):
        part, names, kinds = future_table(ts[a : a + rows], freq, cal, {c: v[a : a + rows] for c, v in user.items()})
        if static is not None:
            block = np.asarray(static[a : a + rows], np.float32)
            part = block if part is None else np.concatenate([part, block], axis=1)
        if part is None:
            return None, [], []
        if len(ts) <= rows and spill is None:
            return part, names, kinds
        if out is None:
            shape = (len(ts), part.shape[1])
            out = (
                np.empty(shape, np.float32)
                if spill is None
                else np.memmap(spill / "future.bin", np.float32, "w+", shape=shape)
            )
        out[a : a + len(part)] = part
    return out, names, kinds


def _train_moments(values: np.ndarray, filled, offsets: np.ndarray, train_end: np.ndarray):
    """The mean and spread of every series' training rows (observed values only), per variable: numpy's nanmean and
    nanstd over those rows together, the sums carried a series at a time in the same row order (numpy sums the rows
    of a (rows, V > 1) float32 array one after another), so only one series' rows are in memory."""
    if values.shape[1] == 1:  # a single column numpy sums pairwise, which a series at a time cannot repeat: gathered
        tmask = np.zeros(len(values), bool)
        for o, e in zip(offsets, train_end):
            tmask[o : o + e] = True
        train_vals = np.where(filled[tmask], np.nan, values[tmask]) if filled is not None else values[tmask]
        gmean, gstd = np.nanmean(train_vals, axis=0), np.nanstd(train_vals, axis=0)
        return gmean, np.where(~np.isfinite(gstd) | (gstd < 1e-8), 1.0, gstd)

    def rows():  # each series' training rows, NaN (and filled cells) as 0, with where they were
        for o, e in zip(offsets, train_end):
            v = np.asarray(values[o : o + e])
            gap = np.isnan(v) if filled is None else np.asarray(filled[o : o + e]) | np.isnan(v)
            yield np.where(gap, np.float32(0), v).astype(values.dtype, copy=False), gap

    def carried(total: np.ndarray, block: np.ndarray) -> np.ndarray:
        return np.add.reduce(np.concatenate([total, block]), axis=0, keepdims=True)

    width = values.shape[1]
    total, count = np.zeros((1, width), values.dtype), np.zeros(width, np.intp)
    for v, gap in rows():
        total = carried(total, v)
        count += np.sum(~gap, axis=0, dtype=np.intp)
    with np.errstate(invalid="ignore", divide="ignore"):
        gmean = np.divide(total[0], count, out=total[0].copy(), casting="unsafe")
        squares = np.zeros((1, width), values.dtype)
        for v, gap in rows():
            d = np.subtract(v, gmean, dtype=values.dtype)
            d[gap] = 0
            squares = carried(squares, d * d)
        gstd = np.sqrt(np.divide(squares[0], count, out=squares[0].copy(), casting="unsafe"))
    return gmean, np.where(~np.isfinite(gstd) | (gstd < 1e-8), 1.0, gstd)


def _panel_window_meta(acc: _PanelBlocks, meta, name, settings, values, ts, st, moments, future) -> WindowMeta:
    gmean, gstd = moments
    fnames, fkinds, cal = future
    info, variables, freq = meta["panel"], acc.variables, meta["freq"]
    at = lambda t: str(pd.Timestamp(t))  # noqa: E731
    span_a = np.asarray(acc.spans, dtype="datetime64[ns]")  # per series with splits: first/last stamp of each split
    split_times = {
        k: [at(span_a[:, 2 * j].min()), at(span_a[:, 2 * j + 1].max())] for j, k in enumerate(("train", "val", "test"))
    }
    declared = {
        v: [float(x) for x in settings.validate_.bounds[v]] for v in variables if v in settings.validate_.bounds
    }
    svals = acc.static_values
    return WindowMeta(
        name=name,
        variables=variables,
        targets=acc.targets,
        freq=freq,
        lookback=acc.lookback,
        horizon=acc.horizon,
        stride=settings.window.stride,
        rows=int(len(values)),
        bounds={"val": 0, "test": 0},
        counts={k: int(len(v)) for k, v in st.items()},
        mean=[float(x) for x in gmean],
        std=[float(x) for x in gstd],
        start=at(ts.min()),
        end=at(ts.max()),
        split_times=split_times,
        data_md5=meta.get("data_md5"),
        seasons=seasons_for(freq, int(np.median(acc.lengths)), meta.get("schedule")),
        # per-series scales make profiled ranges per series; only the declared ranges (raw units) travel
        value_bounds=declared,
        future_names=fnames,
        future_kinds=fkinds,
        calendar=cal if fnames else {},
        schedule=meta.get("schedule"),
        panel={
            "id_cols": list(info.get("id_cols") or []),
            "series": {s: (info["series"].get(s) or {}).get("ids", {}) for s in acc.ids},
            "status": acc.status,
            "scales": acc.scales,
            "counts": acc.counts,
            "not_windowed": acc.skipped,
            "weighting": settings.window.panel_weighting,
            **({"static": {s: svals[s] for s in acc.ids}} if acc.static_cols else {}),
            "scaling": "per series: (value - mean) / mean |one-step difference| of its own training rows",
        },
    )


# --- storage -------------------------------------------------------------------------------------


def save_windows(ws: WindowSet, settings: Settings) -> tuple[Path, Path]:
    settings.check_dataset(ws.meta.name)
    npz, js = window_paths(settings)
    npz.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if ws.filled is None else {"filled": ws.filled}
    if ws.future is not None:
        extra["future"] = ws.future
    if isinstance(ws, PanelWindowSet):
        extra.update(series_offsets=ws.offsets, series_lengths=ws.lengths, series_train_end=ws.train_end)
    stamps = ws.timestamps.astype("datetime64[ns]", copy=False).view(np.int64)  # no copy of a mapped set
    arrays = {"values": ws.values, "timestamps": stamps, **{f"starts_{k}": v for k, v in ws.starts.items()}, **extra}
    # a new file put in place, not the old one rewritten: a process that maps the old set (load_windows) keeps it
    tmp = npz.with_name(f".{npz.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as its allow_pickle flag
    os.replace(tmp, npz)
    js.write_text(json.dumps(asdict(ws.meta), indent=2))
    return npz, js


def load_windows(settings: Settings) -> WindowSet:
    name = settings.dataset
    npz, js = window_paths(settings)
    if not npz.is_file() or not js.is_file():
        raise NotFoundError(f"{npz}: no window set for dataset '{name}': run `cellcast window {name}` first")
    meta = WindowMeta(**json.loads(js.read_text()))
    if meta.panel:
        return _mapped_panel(npz, meta)
    with np.load(npz) as z:
        values = z["values"]
        ts = z["timestamps"].astype("datetime64[ns]")
        starts = {k: z[f"starts_{k}"] for k in SPLITS}
        filled = z["filled"] if "filled" in z.files else None
        future = z["future"] if "future" in z.files else None
    return WindowSet(values, ts, meta, starts, filled, future)


def _mapped_panel(npz: Path, meta: WindowMeta) -> PanelWindowSet:
    """A panel's window set with its arrays memory-mapped from windows.npz (np.savez stores them uncompressed), not
    read into memory: a batch reads the rows it gathers, and the pages stay the kernel's page cache."""
    z = _npz_arrays(npz)
    return PanelWindowSet(
        z["values"],
        z["timestamps"].view("datetime64[ns]"),
        meta,
        {k: z[f"starts_{k}"] for k in (*SPLITS, COLD)},
        z.get("filled"),
        z.get("future"),
        offsets=np.array(z["series_offsets"]),
        lengths=np.array(z["series_lengths"]),
        train_end=np.array(z["series_train_end"]),
    )


def _npz_arrays(npz: Path) -> dict[str, np.ndarray]:
    """Every array of an uncompressed .npz, memory-mapped copy-on-write (writable, as a set's arrays must be; the
    file is never changed); a compressed member is read whole."""
    import zipfile

    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(npz) as zf, open(npz, "rb") as f:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as member:
                    out[key] = np.lib.format.read_array(member)
                continue
            f.seek(info.header_offset)
            local = f.read(30)  # the local file header: its name and extra field lengths at bytes 26-29
            f.seek(
                info.header_offset
                + 30
                + int.from_bytes(local[26:28], "little")
                + int.from_bytes(local[28:30], "little")
            )
            version = np.lib.format.read_magic(f)
            header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, fortran, dtype = header[version](f) if version in header else ((), False, np.dtype(object))
            if dtype.hasobject or not shape or 0 in shape:
                f.seek(info.header_offset)
                with zf.open(info) as member:
                    out[key] = np.lib.format.read_array(member)
                continue
            at = f.tell()
            out[key] = (
                np.memmap(npz, dtype, "c", offset=at, shape=shape, order="F")
                if fortran
                else np.memmap(npz, dtype, "c", offset=at, shape=shape)
            )
    return out


def median_sets(lookback: int, seasons: list[int]) -> list[list[int]]:
    """The season sets a seasonal median may take, each sorted: with M the longest natural season the lookback holds
    twice, the last j seasons (M, 2M, .., jM; j >= 2) and each of those (j >= 1) with the shorter natural seasons
    beside them (a day: yesterday). None where no season fits twice."""
    natural = sorted({int(m) for m in seasons if 1 < m <= lookback})
    twice = [m for m in natural if 2 * m <= lookback]
    if not twice:
        return []
    longest = twice[-1]
    shorter = [m for m in natural if m < longest]
    sets = []
    for j in range(1, lookback // longest + 1):
        last = [longest * i for i in range(1, j + 1)]
        if j >= 2:
            sets.append(last)
        if shorter:
            sets.append(sorted(shorter + last))
    return sets


def one_season_lookback(meta: dict, settings: Settings) -> int | None:
    """The auto lookback a panel would have with one season (window.lookback_seasons: 1); None when the lookback is
    set in params.yaml or auto asks for one season anyway."""
    w = settings.window
    if w.lookback != "auto" or lookback_seasons(settings, True) == 1:
        return None
    info = meta.get("panel") or {}
    rows = [int(s.get("observed_rows", s.get("rows", 0))) for s in (info.get("series") or {}).values()]
    basis = int((info.get("window") or {}).get("median_series_rows") or (np.median(rows) if rows else 0))
    one = _with_lookback(settings, None)
    return resolve_window(one, meta["freq"], basis, meta.get("schedule"), sum(rows), panel=True)[0]


def _with_lookback(settings: Settings, lookback: int | None) -> Settings:
    """`settings` with window.lookback set (None: auto with one season)."""
    update = {"lookback": lookback} if lookback is not None else {"lookback_seasons": 1}
    return settings.model_copy(update={"window": settings.window.model_copy(update=update)})


def spread(n: int, most: int | None) -> np.ndarray:
    """Indices of `n` windows, at most `most` of them evenly spread (every series, every season); all when `most` is
    0 or None or not exceeded."""
    if not most or n <= most:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))


def seasons_pay(ws: WindowSet, max_windows: int = 20000) -> bool:
    """Whether a lookback of several seasons earns its cost: on (at most `max_windows`, evenly spread) validation
    windows, the best seasonal median (`median_sets`) has a lower MAE than the best seasonal naive (the naive among
    them), each step read from the window's own lookback. The seasonal-median anchor is the one that needs them."""
    m = ws.meta
    L, H = m.lookback, m.horizon
    sets = median_sets(L, list(m.seasons))
    val = ws.starts["val"]
    if not sets or not len(val):
        return False
    val = val[spread(len(val), max_windows)]
    x, y = ws.batch(val)
    xt = x[:, :, m.target_idx].astype(np.float64)
    h = np.arange(H)
    naive = {k: xt[:, L - k + h % k, :] for k in {1, *(int(s) for s in m.seasons if 1 < s <= L), *sum(sets, [])}}
    mask = ws.target_mask(val)
    obs = np.ones(y.shape, bool) if mask is None else mask.astype(bool)

    def mae(p: np.ndarray) -> float:
        return float(np.abs(p - y)[obs].mean())

    plain = min(mae(naive[k]) for k in naive if k == 1 or k in m.seasons)
    return min(mae(np.median(np.stack([naive[k] for k in st]), axis=0)) for st in sets) < plain


def window_dataset(settings: Settings) -> WindowSet:
    """The window stage: data/NAME/validated.parquet -> data/NAME/windows.npz + windows.json (a panel: its
    series side by side, PanelWindowSet)."""
    if is_panel(read_validated_meta(settings)):
        meta = read_validated_meta(settings)
        pq = validated_paths(settings)[0]

        def parts():  # one partition in memory at a time
            return (read_partition(pq, [i]) for i in range(panel_partitions(pq)))

        # the set is built in files beside windows.npz (flat memory in the number of series), then read from it
        with tempfile.TemporaryDirectory(dir=window_paths(settings)[0].parent, prefix=".windows-") as spill:
            panel = build_panel_windows(parts(), meta, settings=settings, spill=Path(spill, "a"))
            one = one_season_lookback(meta, settings)
            if one is not None and one < panel.meta.lookback and not seasons_pay(panel):
                # the further seasons cost each series its first windows and buy nothing: one season, as before
                del panel
                panel = build_panel_windows(
                    parts(), meta, settings=_with_lookback(settings, one), spill=Path(spill, "b")
                )
            save_windows(panel, settings)
            del panel
        return load_windows(settings)
    frame, meta = read_validated(settings)
    variables = list(meta["targets"]) + list(meta.get("features") or [])
    ws = build_windows(
        frame,
        variables=variables,
        targets=list(meta["targets"]),
        freq=meta["freq"],
        settings=settings,
        data_md5=meta.get("data_md5"),
        future_features=list(meta.get("future_features") or []),
        schedule=meta.get("schedule"),
    )
    save_windows(ws, settings)
    return ws
