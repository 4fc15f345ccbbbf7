"""A panel's windows (docs/architecture.md, "Panels"): its series side by side in one array (PanelWindowSet), built a
partition at a time without copying series x lookback, and how many seasons its auto lookback keeps (`window_panel`).

Layout: one values array holds every kept series one after another in validated.parquet's order, each followed by
one NaN row (a break: a diff or a window that ran from one series into the next would meet it), and
`offsets[i]` is the first row of series i. Window starts are rows of that array, chosen per series and per split
exactly as for one series (its own chronological train | validation | test by `window.val_fraction` /
`test_fraction` of its own rows, never crossing a break), so `WindowSet.view()` / `batch()` / the trainer and
the evaluation read a panel as they read one series: a batch gathers its rows, nothing else is materialised.

Scaling is per series: each series' values are stored as `(raw - mean) / scale`, with `mean` and `scale` fitted
on the observed cells of that series' own training rows, `scale` the mean absolute one-step difference there (the
MASE denominator; the standard deviation where that is zero). So one scaled error is a MASE contribution of that
series: pooled metrics are the window-weighted mean of per-series MASE, and one global model sees series of any
level and unit alike. The model's own scaler (ModelSpec mean / std) is then fitted on the pooled scaled training
cells. The per-series `mean` and `scale` travel with the model (ONNX metadata `panel`): a forecast scales a series'
lookback with them and unscales the output.

Cold start (validated.json status `cold_start`): a series too short for its own splits is scaled on its first
`lookback` rows (history before any target it is scored on) and all its windows are kept apart (`starts["cold"]`):
never trained or selected on, scored and reported per series, forecast like the others, and left out of the pooled
test windows the promotion weighs.

Sampling (`window.panel_weighting`, modeling/train.panel_sampler): `uniform` draws training windows uniformly (a
long series weighs more); `per_series` draws a series uniformly, then one of its windows, so each counts alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import SERIES_ID, panel_partitions, read_partition, validated_paths
from ..config import Settings
from ..errors import DataValidationError
from . import calendar as _calendar
from .frequency import seasons_for
from .seasonal import median_sets, naive_offsets, seasonal_median
from .splits import (
    declared_bounds,
    filled_mask,
    lookback_seasons,
    panel_remedy,
    panel_test_rule,
    resolve_window,
    series_rows,
    series_scale,
    split_for,
    test_origins,
    usable_windows,
    window_shortfall,
    window_starts,
)
from .windowset import WindowMeta, WindowSet, future_table, spread

COLD = "cold"  # the starts key of cold-start series' windows


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

    def independent_paths(self, starts: np.ndarray) -> int:
        """The forecast paths among `starts` that share no target: within each series its windows a horizon apart
        (test_origins), summed over the series; no two series share a target."""
        starts = np.sort(np.asarray(starts, dtype=np.int64))
        idx = self.series_index(starts)
        cuts = np.flatnonzero(np.diff(idx)) + 1
        return sum(test_origins(s, self.meta.horizon) for s in np.split(starts, cuts) if len(s))

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
    test_horizons: int | None = None  # horizons each series' test split grows to hold (splits.panel_test_rule)
    test_need: int | None = None  # non-overlapping test windows a series needs for splits of its own
    spans: list = field(default_factory=list)  # per series with splits: first/last stamp of each split
    # each split's window starts, a block per series (the validation and test ones are every step: 8 bytes a window)
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
            self.starts = {k: _Spill(self.spill / f"starts-{k}.bin") for k in self.starts}


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


def _rows(blocks) -> int:
    """How many rows the blocks of a _PanelBlocks field hold."""
    return blocks.rows if isinstance(blocks, _Spill) else sum(len(b) for b in blocks)


def _joined_starts(blocks) -> np.ndarray:
    """One split's window starts as one int64 array (mapped from their file when spilled; empty when none)."""
    if isinstance(blocks, _Spill):
        return blocks.array() if blocks.rows else np.zeros(0, np.int64)
    return (np.concatenate(blocks) if blocks else np.zeros(0, np.int64)).astype(np.int64)


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
    rule = panel_test_rule(meta, settings, lookback, horizon)
    acc = _PanelBlocks(
        targets + list(meta.get("features") or []),
        targets,
        list(meta.get("future_features") or []),
        lookback,
        horizon,
        list((meta.get("static") or {}).get("columns") or []),
        (meta.get("static") or {}).get("values") or {},
        spill=spill,
        test_horizons=rule["test_horizons"],
        test_need=rule["test_need"],
    )
    for part in [frame] if isinstance(frame, pd.DataFrame) else frame:
        _add_series(acc, part, meta, name, settings)
    if not acc.ids:
        raise DataValidationError(
            f"{name}: none of its {acc.seen} series holds a whole window of lookback "
            f"{lookback} + horizon {horizon}: use a shorter window.lookback / window.horizon"
        )
    if not _rows(acc.starts["train"]):
        raise DataValidationError(
            f"{name}: every series is cold start (too short for its own train / validation / "
            f"test windows): a global model needs at least one series with its own splits; "
            f"{panel_remedy(settings, series_rows(meta), lookback, horizon)}"
        )
    return _assemble_panel(acc, meta, name, settings)


def window_panel(meta: dict, settings: Settings, spill: Path | None = None) -> PanelWindowSet:
    """A validated panel's window set, read one partition at a time: the auto lookback's further seasons kept only
    where they pay (`seasons_pay`), else one season. With `spill` (a folder) its arrays are built in files there and
    mapped (build_panel_windows), so memory does not grow with the series; the files must outlive the set."""
    pq = validated_paths(settings)[0]

    def parts():  # one partition in memory at a time
        return (read_partition(pq, [i]) for i in range(panel_partitions(pq)))

    panel = build_panel_windows(parts(), meta, settings=settings, spill=None if spill is None else spill / "a")
    one = one_season_lookback(meta, settings)
    if one is not None and one < panel.meta.lookback and not seasons_pay(panel):
        # the further seasons cost each series its first windows and buy nothing: one season, as before
        del panel
        panel = build_panel_windows(
            parts(), meta, settings=_with_lookback(settings, one), spill=None if spill is None else spill / "b"
        )
    return panel


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
        vs, te = split_for(n, horizon, settings, acc.test_horizons)
        own = window_starts(n, lookback, horizon, vs, te, w.stride, valid)
        validated = (info["series"].get(s_id) or {}).get("status", "ok")
        short = (
            window_shortfall(own, horizon, settings, acc.test_need)
            if validated == "ok"
            else ("cold_start", "validated as such")
        )
        if short is None:
            kind, end = "ok", vs
            for k in ("train", "val", "test"):
                acc.starts[k].append((own[k] + acc.row).astype(np.int64, copy=False))
            t = ts_all[a:b]
            acc.spans.append([t[0], t[vs - 1], t[vs], t[te - 1], t[te], t[-1]])
        else:  # too short for its own splits: every whole window is a cold-start test window
            kind, end = "cold_start", lookback
            acc.starts[COLD].append((np.flatnonzero(valid) + acc.row).astype(np.int64, copy=False))
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
    st = {k: _joined_starts(v) for k, v in acc.starts.items()}
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

    def at(t):
        return str(pd.Timestamp(t))

    span_a = np.asarray(acc.spans, dtype="datetime64[ns]")  # per series with splits: first/last stamp of each split
    split_times = {
        k: [at(span_a[:, 2 * j].min()), at(span_a[:, 2 * j + 1].max())] for j, k in enumerate(("train", "val", "test"))
    }
    declared = declared_bounds(variables, settings)
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
            "test_horizons": acc.test_horizons,
            "test_need": acc.test_need,
            **({"static": {s: svals[s] for s in acc.ids}} if acc.static_cols else {}),
            "scaling": "per series: (value - mean) / mean |one-step difference| of its own training rows",
        },
    )


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
    ks = {1, *(int(s) for s in m.seasons if 1 < s <= L), *sum(sets, [])}
    naive = {k: xt[:, L + naive_offsets(H, k), :] for k in ks}
    mask = ws.target_mask(val)
    obs = np.ones(y.shape, bool) if mask is None else mask.astype(bool)

    def mae(p: np.ndarray) -> float:
        return float(np.abs(p - y)[obs].mean())

    plain = min(mae(naive[k]) for k in naive if k == 1 or k in m.seasons)
    return min(mae(seasonal_median([naive[k] for k in st])) for st in sets) < plain
