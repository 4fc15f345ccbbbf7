"""What a window set is: a series with its splits, read through strided views (one series; a panel's
series side by side: data/panel_windows.py `PanelWindowSet`).

A window starting at row `s` reads inputs `[s, s+lookback)` and targets `[s+lookback, s+lookback+horizon)`;
where the windows lie (sizes, splits, which windows a split keeps, scalers): data/splits.py. The window stage
that builds and stores a set: data/window.py.

Windows are never materialised: `WindowSet.view()` is a `sliding_window_view` of the series (no copy),
and a batch gathers only the rows it needs, on the CPU from numpy or on a GPU from a device-resident
series (`TorchWindows`).

Known-future inputs (docs/forecasting.md): a table aligned with the rows, `future` (rows, F), holds what is
known about each row ahead of time: calendar features of its timestamp (data/calendar.py) and the values of
the columns ingested as known ahead (`ingest --future-features`). The window at `s` reads its rows
[s+lookback, s+lookback+horizon), the horizon, as its future block (B, horizon, F): a view, like the windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import calendar as _calendar

SPLITS = ("train", "val", "test")


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
        # per row, per target: filled (True) or observed; a view of the fill mask where the targets are neighbouring
        # columns (they come first in `variables`): a mapped panel's mask is not copied (1 byte a row) per set
        self._filled_targets = None if self.filled is None else _columns(self.filled, meta.target_idx)

    @property
    def _observed(self) -> np.ndarray | None:
        """(rows, T) bool: each row's targets observed (True) or filled; None when no cell was filled. Made whole
        when asked (a device-resident copy, the observations only), not kept."""
        return None if self._filled_targets is None else ~self._filled_targets

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
                cols.append(_calendar_column(cal, got, n, self.meta.freq))
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
        scaled = (_calendar.USER, _calendar.STATIC)
        # a panel's training rows are a mask of every row: made only when a column is scaled
        rows = self._future_train_rows() if any(k in scaled for k in self.meta.future_kinds) else None
        mean, std = [], []
        for j, kind in enumerate(self.meta.future_kinds):
            # one column's training rows at a time, and none of a calendar column's (it is not scaled)
            col = self.future[:, j][rows].astype(np.float64) if kind in scaled else None
            v = np.zeros(0) if col is None else col[np.isfinite(col)]
            user = kind in scaled and len(v)
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
        if self._filled_targets is None:
            return None
        v = np.lib.stride_tricks.sliding_window_view(self._filled_targets, self.meta.horizon, axis=0)  # (n, T, H)
        return ~v[np.asarray(starts) + self.meta.lookback].transpose(0, 2, 1)  # the gathered windows' cells only

    def series_floor(self, starts: np.ndarray) -> np.ndarray:
        """The first row of the series each window lies in (0 here; a panel's series start at their offsets)."""
        return np.zeros(len(starts), dtype=np.int64)

    def target_series(self) -> np.ndarray:
        return self.values[:, self.meta.target_idx]

    def observed_target_series(self) -> np.ndarray:
        """The targets with filled cells as NaN: observations only."""
        y = self.target_series()
        return y if self._filled_targets is None else np.where(self._filled_targets, np.nan, y)

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
        observed = ws._observed if self.device.type != "cpu" else None  # a CPU batch gathers from the set's mask
        self.observed = (
            None if observed is None else torch.from_numpy(observed).to(self.device).unfold(0, ws.meta.horizon, 1)
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
        if self.ws._filled_targets is None:
            return None
        if self.device.type == "cpu":
            import torch

            return torch.from_numpy(np.ascontiguousarray(self.ws.target_mask(idx.numpy()), dtype=np.float32))
        return self.device_target_mask(idx)

    def device_target_mask(self, idx):
        """target_mask gathered from the device-resident unfold view (the GPU path; runs on any device)."""
        if self.observed is None:  # on a CPU, made when first asked
            import torch

            observed = self.ws._observed
            if observed is None:
                return None
            self.observed = torch.from_numpy(observed).to(self.device).unfold(0, self.ws.meta.horizon, 1)
        return self.observed[idx + self.ws.meta.lookback].transpose(1, 2).float()


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
            cols.append(_calendar_column(cal, got, n, freq))
        else:
            cols.append(np.asarray((user or {})[n], dtype=np.float32))
    return np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((len(stamps), 0), np.float32)


def _calendar_column(cal: np.ndarray, got: list[str], name: str, freq: str) -> np.ndarray:
    """Calendar feature `name` from calendar_features' table `cal` (columns `got`); ValueError when the frequency has
    no such feature."""
    if name not in got:
        raise ValueError(f"calendar column '{name}' does not exist at frequency {freq}")
    return cal[:, got.index(name)]


def _columns(a: np.ndarray, idx: list[int]) -> np.ndarray:
    """a[:, idx]: a view when `idx` are neighbouring columns in order, else a copy."""
    if len(idx) and list(idx) == list(range(idx[0], idx[0] + len(idx))):
        return a[:, idx[0] : idx[0] + len(idx)]
    return a[:, idx]


def spread(n: int, most: int | None) -> np.ndarray:
    """Indices of `n` windows, at most `most` of them evenly spread (every series, every season); all when `most` is
    0 or None or not exceeded."""
    if not most or n <= most:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))
