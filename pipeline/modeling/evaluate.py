"""Forecast accuracy and the baselines every candidate must beat.

MASE divides the MAE by the in-sample MAE of the one-step naive forecast on the training split
(per target), the convention Darts and NeuralForecast use by default, so figures compare with theirs.
sMAPE is in percent, 0..200. Baselines are read from the full series, so a seasonal naive with a
season longer than the lookback (a year of days, say) is still a fair bar. Targets the gap policy
filled are not observations: every score leaves them out (`WindowSet.target_mask`), and the MASE
scale counts only steps between two observed points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data.seasonal import naive_offsets
from ..data.splits import test_origins
from ..data.windowset import WindowSet

if TYPE_CHECKING:
    from ..config import Settings
    from ..data.panel_windows import PanelWindowSet

EPS = 1e-12


def mase_scale(ws: WindowSet) -> np.ndarray:
    """Per target: mean |y_t - y_{t-1}| over the training rows (NaN breaks and filled points ignored). A panel's
    values are already divided by this per series (data/panel_windows.py PanelWindowSet): its scale is 1."""
    if ws.is_panel:
        return np.ones(len(ws.meta.targets))
    y = ws.observed_target_series()[: ws.meta.bounds["val"]].astype(np.float64)
    d = np.abs(np.diff(y, axis=0))
    scale = np.nanmean(d, axis=0)
    return np.where(np.isfinite(scale) & (scale > EPS), scale, 1.0)


def _mean(a: np.ndarray, mask: np.ndarray | None, axis=None):
    if mask is None:
        return a.mean(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):  # a step with no observed target: NaN
        return np.where(mask, a, 0.0).sum(axis=axis) / mask.sum(axis=axis)


def metrics(
    y_true: np.ndarray, y_pred: np.ndarray, scale: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """y arrays (n, horizon, targets). Averages over windows, steps and targets; `mask` (same shape, bool)
    keeps the observed targets only (WindowSet.target_mask)."""
    yt, yp = y_true.astype(np.float64), y_pred.astype(np.float64)
    err = yp - yt
    ae = np.abs(err)
    denom = np.abs(yt) + np.abs(yp)
    smape = np.where(denom > EPS, 2.0 * ae / np.maximum(denom, EPS), 0.0)
    return {
        "mae": float(_mean(ae, mask)),
        "rmse": float(np.sqrt(_mean(err**2, mask))),
        "smape": float(100.0 * _mean(smape, mask)),
        "mase": float(_mean(ae / scale, mask)),
    }


def mae_by_step(
    y_true: np.ndarray, y_pred: np.ndarray, scale: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Scaled absolute error by horizon step (MASE per step), averaged over windows and (observed) targets."""
    return _mean(np.abs(y_pred.astype(np.float64) - y_true) / scale, mask, axis=(0, 2))


def seasonal_naive(ws: WindowSet, starts: np.ndarray, season: int) -> np.ndarray:
    """The forecast of each window repeating the last observed season (season 1: the naive forecast).

    Step h of the window at s forecasts row s+L+h with row s+L+h - season*(h//season + 1),
    the latest row one or more whole seasons back that is already observed.
    """
    L, H = ws.meta.lookback, ws.meta.horizon
    src = starts[:, None] + L + naive_offsets(H, season)[None, :]
    # the rows it reads, gathered (not a copy of the whole target column: a panel's is every series')
    out = ws.values[np.clip(src, 0, None)][:, :, ws.meta.target_idx]
    if ws.is_panel:  # a row before the window's own series is none of its history: no forecast (NaN)
        before = src < ws.series_floor(starts)[:, None]
        out = np.where(before[:, :, None], np.nan, out)
    return out


def baseline_names(seasons: list[int]) -> dict[str, int]:
    out = {"naive": 1}
    out.update({f"seasonal_naive_{m}": m for m in seasons if m > 1})
    return out


def evaluation_seasons(settings: Settings, ws: WindowSet) -> list[int]:
    """The seasons the seasonal-naive bar is built from: params `evaluate.seasons`, or the window set's own (auto)."""
    seasons = settings.evaluate.seasons
    return list(ws.meta.seasons if seasons == "auto" else seasons)


def usable_seasons(ws: WindowSet, seasons: list[int] | None = None, split: str = "train") -> list[int]:
    """Seasons whose baseline exists for every window of `split` (its earliest window must see one
    season back): a yearly season is no bar for train windows at the start, but is for test windows."""
    seasons = ws.meta.seasons if seasons is None else seasons
    starts = ws.starts[split]
    first = int((starts - ws.series_floor(starts)).min()) if len(starts) else 0
    return [m for m in seasons if 1 < m <= first + ws.meta.lookback]


@dataclass
class BaselineReport:
    split: str
    scores: dict[str, dict[str, float]]  # baseline name -> metrics
    best: str
    by_step: dict[str, list[float]] = field(default_factory=dict)

    @property
    def best_mase(self) -> float:
        return self.scores[self.best]["mase"]


def evaluate_baselines(ws: WindowSet, split: str, seasons: list[int]) -> BaselineReport:
    """Every baseline on a split's windows. A baseline that reads into a break (a long gap kept as NaN)
    is scored on the windows where it exists, with `coverage` < 1, and cannot be the bar: the bar
    must be scored on exactly the windows the models are. A panel's windows are scored a part of the series at a
    time (window_parts), the means pooled from the parts' (the same to the bit in one part)."""
    starts = ws.starts[split]
    scale = mase_scale(ws)
    names = baseline_names(seasons)
    parts: dict[str, list] = {name: [] for name in names}
    by_step: dict[str, list] = {name: [] for name in names}
    kept = dict.fromkeys(names, 0)
    for part in window_parts(ws, starts):
        at = starts[part]
        y, mask = ws.targets(at), ws.target_mask(at)
        for name, m in names.items():
            pred = seasonal_naive(ws, at, m)
            ok = np.isfinite(pred).all(axis=(1, 2))
            kept[name] += int(ok.sum())
            if not ok.any():
                continue
            mk = None if mask is None else mask[ok]
            per_step = np.full(ws.meta.horizon, int(ok.sum()) * y.shape[-1]) if mk is None else mk.sum(axis=(0, 2))
            parts[name].append((metrics(y[ok], pred[ok], scale, mk), observed_cells(ws, at[ok], mk)))
            by_step[name].append(({"mae": mae_by_step(y[ok], pred[ok], scale, mk).tolist()}, per_step))
    scores, steps = {}, {}
    for name in names:
        if parts[name]:  # a baseline that exists on no window is none
            scores[name] = {**pooled(parts[name]), "coverage": kept[name] / len(starts)}
            steps[name] = pooled_steps(by_step[name])["mae"]
    complete = [k for k, v in scores.items() if v["coverage"] == 1.0] or list(scores)
    best = min(complete, key=lambda k: scores[k]["mase"])
    return BaselineReport(split=split, scores=scores, best=best, by_step=steps)


def series_parts(ws: PanelWindowSet, starts: np.ndarray, series: int) -> list[slice]:
    """Slices of `starts` (ascending: a series' windows follow each other) of `series` whole series each."""
    cuts = np.unique(np.searchsorted(starts, ws.offsets))  # where each series' windows begin
    cuts = np.union1d(cuts[(cuts > 0) & (cuts < len(starts))], [0, len(starts)]).astype(np.int64)
    if len(starts) == 0:
        return []
    return [slice(int(cuts[i]), int(cuts[min(i + series, len(cuts) - 1)])) for i in range(0, len(cuts) - 1, series)]


def observed_cells(ws: WindowSet, starts: np.ndarray, mask: np.ndarray | None) -> int:
    """The cells the means of the windows at `starts` average (their observed targets): pooled()'s weight."""
    return len(starts) * ws.meta.horizon * len(ws.meta.targets) if mask is None else int(mask.sum())


def pooled(parts: list[tuple[dict, int]]) -> dict:
    """Means over every window from the means of parts of them, each weighted by the observed cells it averaged
    (`parts`: (name -> mean, cells)); `rmse` pooled as a root of mean squares, `nominal_*` carried. One part is
    returned as it is; more agree with the means taken at once to the rounding of a float64 sum (~1e-15 relative),
    not to the bit (numpy sums an array pairwise)."""
    if len(parts) == 1:
        return dict(parts[0][0])
    n = sum(c for _, c in parts)
    out: dict = {}
    for k in parts[0][0] if parts else []:
        if k.startswith("nominal_"):
            out[k] = parts[0][0][k]
            continue
        sq = k == "rmse"
        total = sum((p[k] ** 2 if sq else p[k]) * c for p, c in parts if c)
        mean = total / n if n else float("nan")
        out[k] = float(np.sqrt(mean) if sq else mean)
    return out


def pooled_steps(parts: list[tuple[dict[str, list[float]], np.ndarray]]) -> dict[str, list[float]]:
    """pooled() per horizon step: (name -> mean per step, observed cells per step) of each part."""
    if len(parts) == 1:
        return dict(parts[0][0])
    n = sum(c for _, c in parts)
    out: dict[str, list[float]] = {}
    for k in parts[0][0] if parts else []:
        total = sum(np.where(c > 0, np.asarray(p[k], np.float64), 0.0) * c for p, c in parts)
        with np.errstate(invalid="ignore", divide="ignore"):  # a step no part observed: NaN, as at once
            out[k] = (total / n).tolist()
    return out


# windows a part of a panel's scoring holds at most (whole series: more when one series has more); the targets and
# a forecast of a part, float64, are ~0.2 KB a window at horizon 24
PANEL_WINDOWS = 1 << 16


def window_parts(ws: WindowSet, starts: np.ndarray, series: int | None = None) -> list[slice]:
    """Slices of `starts` to score one after another: a panel's of `series` whole series each (default: about
    PANEL_WINDOWS windows a part; series_parts), a single series' in one part."""
    if not ws.is_panel:
        return [slice(0, len(starts))]
    per = series or max(1, PANEL_WINDOWS * len(ws.series_ids) // max(len(starts), 1))  # type: ignore[attr-defined]
    return series_parts(ws, starts, per)  # type: ignore[arg-type]


def split_mase(ws: WindowSet, starts: np.ndarray, forecast: Callable[[np.ndarray], np.ndarray]) -> float:
    """The MASE of `forecast(starts) -> (n, H, T)` on the windows at `starts` (observed targets only), a part at a
    time (window_parts): the same to the bit as metrics() on every window at once in one part, to a float64 sum's
    rounding in more."""
    scale = mase_scale(ws)
    parts = []
    for part in window_parts(ws, starts):
        at = starts[part]
        mask = ws.target_mask(at)
        mase = metrics(ws.targets(at), forecast(at), scale, mask)["mase"]
        parts.append(({"mase": mase}, observed_cells(ws, at, mask)))
    return pooled(parts)["mase"] if parts else float("nan")


def season_of(baseline: str) -> int:
    return 1 if baseline == "naive" else int(baseline.rsplit("_", 1)[1])


def predict_windows(
    predict, ws: WindowSet, split: str, batch: int = 4096, table: np.ndarray | None = None
) -> np.ndarray:
    """Run `predict(x[, future]) -> (B, H, T)` (torch module wrapper or ONNX session) over every window of a split;
    the future block comes from the set's known-future table (or `table`, WindowSet.future_table_for)."""
    return forecast_windows(
        lambda x, f: (predict(x) if f is None else predict(x, f), None), ws, ws.starts[split], batch, table
    )[0]


def forecast_windows(
    predict_all, ws: WindowSet, starts: np.ndarray, batch: int = 4096, table: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run `predict_all(x, future) -> (point (B, H, T), quantiles (B, H, T, Q) or None)` over the windows at
    `starts`, in batches, written into arrays of every window's forecasts as they come (not joined from a list of
    batches at the end: one copy of the forecasts at the peak, not two)."""
    n = len(starts)
    out: np.ndarray | None = None
    qout: np.ndarray | None = None  # None when predict_all forecasts no quantiles (q is None on every batch)
    for i in range(0, n, batch):
        s = starts[i : i + batch]
        x, _ = ws.batch(s)
        f = ws.future_batch(s, table)
        y, q = predict_all(np.ascontiguousarray(x), None if f is None else np.ascontiguousarray(f))
        y = np.asarray(y)
        if out is None:
            out = np.empty((n, *y.shape[1:]), y.dtype)
        out[i : i + len(y)] = y
        if q is not None:
            q = np.asarray(q)
            if qout is None:
                qout = np.empty((n, *q.shape[1:]), q.dtype)
            qout[i : i + len(q)] = q
    if out is None:
        return np.zeros((0, ws.meta.horizon, len(ws.meta.targets)), np.float32), None
    return out, qout


def evaluate_forecasts(
    ws: WindowSet,
    split: str,
    pred: np.ndarray,
    q: np.ndarray | None = None,
    levels: list[float] | None = None,
    starts: np.ndarray | None = None,
) -> tuple[dict[str, float], list[float]]:
    """Point metrics (and, given quantiles `q` at `levels`, the quantile scores of modeling/quantiles.py) of the
    forecasts of a split's windows (or of the windows at `starts`), and the MASE per horizon step."""
    from .quantiles import quantile_scores

    starts = ws.starts[split] if starts is None else starts
    y = ws.targets(starts)
    mask = ws.target_mask(starts)
    scale = mase_scale(ws)
    out = metrics(y, pred, scale, mask)
    if q is not None and levels:
        out.update(quantile_scores(y, q, list(levels), scale, mask)[0])
    return out, mae_by_step(y, pred, scale, mask).tolist()


def quantiles_by_step(ws: WindowSet, split: str, q: np.ndarray, levels: list[float]) -> dict[str, list[float]]:
    """Coverage and width of each interval, and the CRPS approximation, per horizon step (modeling/quantiles.py)."""
    from .quantiles import quantile_scores

    starts = ws.starts[split]
    y = ws.targets(starts)
    return quantile_scores(y, q, list(levels), mase_scale(ws), ws.target_mask(starts))[1]


# --- evidence for a decision: one loss per forecast origin ---------------------------------------


def targets_after(ws: WindowSet, starts: np.ndarray, after) -> np.ndarray:
    """Mask of the windows whose every target comes after time `after` (e.g. the last row a model was
    trained or selected on)."""
    if not len(starts):
        return np.zeros(0, dtype=bool)
    first_target = ws.timestamps[np.asarray(starts) + ws.meta.lookback].astype("datetime64[ns]")
    return first_target > np.datetime64(pd.Timestamp(after).tz_localize(None), "ns")


def forecast_origins(ws: WindowSet, split: str = "test", chunk: int = 1 << 20) -> np.ndarray:
    """Starts of the `split` windows a horizon apart, so no two share a target row (stride-1 windows repeat
    each other's errors: counted as independent they overstate the evidence). The starts are walked `chunk` at a
    time as Python ints (~36 bytes each: a panel's every-step starts whole would be ~420 MB at 10,000 series-years)."""
    starts = ws.starts[split]
    keep, nxt = [], -1
    for i in range(0, len(starts), chunk):
        for s in starts[i : i + chunk].tolist():
            if s >= nxt:
                keep.append(s)
                nxt = s + ws.meta.horizon
    return np.asarray(keep, dtype=starts.dtype)


def window_losses(ws: WindowSet, starts: np.ndarray, pred: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Each window's scaled absolute error (its MASE), averaged over its observed targets: (n,).
    Filled targets are not scored (every window keeps at least one observed target). Read `batch` windows at a
    time: every test origin of a long panel is millions of windows."""
    scale = mase_scale(ws)
    out = np.empty(len(starts), np.float64)
    for i in range(0, len(starts), batch):
        s = starts[i : i + batch]
        y = ws.targets(s)
        err = np.abs(pred[i : i + batch].astype(np.float64) - y) / scale
        mask = ws.target_mask(s)
        if mask is None:
            out[i : i + batch] = err.mean(axis=(1, 2))
        else:
            out[i : i + batch] = (err * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
    return out


def walk_forward_quantiles(
    ws: WindowSet,
    fit: np.ndarray,
    q_fit: np.ndarray,
    test: np.ndarray,
    q_test: np.ndarray,
    levels: list[float],
    shift: Callable[..., np.ndarray],
    rank: str = "paths",
    windows: int | None = None,
    level: tuple[np.ndarray, np.ndarray] | None = None,
    adapt: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The test windows' quantiles recalibrated as actuals arrive (quantiles.walk_forward), one series: each test
    window at `test` gets `shift(y, q, mask, paths) -> (H, T, Q)` of the misses of the held-out windows at `fit`
    (quantiles `q_fit`) and of the earlier test windows whose whole horizon ended before its origin, added to its own
    quantiles `q_test` and put back in order. `rank`: evaluate.calibration_rank (paths counts the windows a horizon
    apart among those misses); `windows`: only the most recent N windows' misses; `level`: (the held-out windows', the
    test windows') forecast levels (quantiles.forecast_level), the misses calibrated in their units and each window's
    shift multiplied by its own. `adapt` (evaluate.calibration_update: adaptive): each origin's ranks are read at the
    levels that correct how the nominal rule's bands covered the test windows observed before it
    (quantiles.adapted_levels), by the share of the evidence those windows are (their paths over theirs and the
    held-out windows'): `shift(y, q, mask, paths, at)`. Returns (the test quantiles, the shift of every miss,
    held-out and test, in the misses' units: what the served model carries)."""
    from .quantiles import adapted_levels, ordered, walk_forward

    starts = np.concatenate([fit, test])
    y = np.concatenate([ws.targets(fit), ws.targets(test)])
    q = np.concatenate([q_fit, q_test]).astype(np.float64)
    lv_test = np.ones((len(test), 1, y.shape[-1], 1)) if level is None else level[1]
    if level is not None:  # in units of each window's level
        lv = np.concatenate(level)
        y, q = y / lv[..., 0], q / lv
    mask = ws.target_mask(starts)
    L, H = ws.meta.lookback, ws.meta.horizon

    def shift_of(idx: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        idx = idx[-windows:] if windows else idx  # pooled in time order: held-out windows, then test windows
        paths = test_origins(starts[idx], H) if rank == "paths" else None
        m = None if mask is None else mask[idx]
        return np.asarray(shift(y[idx], q[idx], m, paths) if at is None else shift(y[idx], q[idx], m, paths, at))

    nf, held_paths = len(fit), test_origins(fit, H)

    def levels_at(seen: np.ndarray, per: np.ndarray) -> np.ndarray:
        band = ordered(q[nf + seen] + per, list(levels))  # the nominal bands, in the misses' units
        p = test_origins(test[seen], H)
        m = None if mask is None else mask[nf + seen]
        return adapted_levels(y[nf + seen], band, list(levels), m, p / (p + held_paths))

    # a window is observed once its last target is: row positions order one series' windows in time
    per, final = walk_forward(starts + L + H - 1, test + L, shift_of, adapt=levels_at if adapt else None)
    return ordered(q_test.astype(np.float64) + per * lv_test, list(levels)), final


def empirical_interval_scores(
    ws: WindowSet, season: int, levels: list[float], split: str = "test", **band: Any
) -> dict[str, float]:
    """The seasonal naive of `season` with empirical intervals (`empirical_band`, which reads `band`: fit, rank, walk,
    scale, adapt), scored as a candidate's quantiles are: the quantile scores (coverage_P, width_P, winkler_P, ...;
    modeling/quantiles.py) on the `split` windows, in MASE units; {} without levels, or when the baseline does not
    exist on every window of both splits. Not walked forward, the band is made and scored a part of a panel's series
    at a time (window_parts), the means pooled from the parts' (the same to the bit in one part)."""
    from .quantiles import quantile_scores

    ts = ws.starts[split]
    if band.get("walk"):  # each test window's band reads the test windows before it: one series, whole
        q = empirical_band(ws, season, levels, split=split, **band)
        if q is None:
            return {}
        return quantile_scores(ws.targets(ts), q, list(levels), mase_scale(ws), ws.target_mask(ts))[0]
    fit, rank, scale = band.get("fit", "val"), band.get("rank", "windows"), band.get("scale", "absolute")
    fitted = _band_shift(ws, season, levels, fit, split, rank, scale)
    if fitted is None:
        return {}
    parts = []
    for part in window_parts(ws, ts):
        at = ts[part]
        mask = ws.target_mask(at)
        q = _band_of(ws, at, season, levels, *fitted)
        scores = quantile_scores(ws.targets(at), q, list(levels), mase_scale(ws), mask)[0]
        parts.append((scores, observed_cells(ws, at, mask)))
        del q
    return pooled(parts)


def empirical_band(
    ws: WindowSet,
    season: int,
    levels: list[float],
    fit: str = "val",
    split: str = "test",
    rank: str = "windows",
    walk: bool = False,
    scale: str = "absolute",
    adapt: bool = False,
) -> np.ndarray | None:
    """The quantiles (n, H, T, Q) of the seasonal naive of `season` on the `split` windows, with empirical
    intervals: its quantile at level tau for step k and target j is its point forecast plus the tau-quantile of its
    own errors at step k on the `fit` split's windows (free, deterministic: the interval a planner gets with no
    model), read at the same finite-sample rank as the candidates' conformal shift (`rank`: evaluate.calibration_rank,
    "paths" counting the windows a horizon apart): the bar's band and the candidate's are calibrated by one rule on
    the same windows, so the interval-score gate compares forecasts, not two ways of reading a quantile. `walk`: read
    walk-forward as the candidates' are (evaluate.calibration_update): each `split` window's band from the errors of
    the `fit` windows and of the earlier `split` windows whose horizon ended before its origin. `scale`: "level" reads
    the errors in units of each window's forecast level (quantiles.forecast_level), as a candidate calibrated so;
    `adapt`: the walk-forward's levels adapted as a candidate's are (walk_forward_quantiles). None without levels, or
    when the baseline does not exist on every window of both splits."""
    if not levels:
        return None
    if walk:
        return _walked_band(ws, season, list(levels), fit, split, rank, scale, adapt)
    fitted = _band_shift(ws, season, levels, fit, split, rank, scale)
    return None if fitted is None else _band_of(ws, ws.starts[split], season, list(levels), *fitted)


def _spread(p: np.ndarray, levels: list[float]) -> np.ndarray:
    """A point forecast (n, H, T) as every level's quantile (n, H, T, Q), float64."""
    return np.repeat(p.astype(np.float64)[..., None], len(levels), axis=-1)


def _band_checks(ws: WindowSet, starts: np.ndarray, season: int) -> tuple[bool, bool]:
    """(the seasonal naive exists on every window at `starts`, its forecast level is above 0 on every one), read a
    part of a panel's series at a time."""
    from .quantiles import forecast_level

    finite = positive = True
    for part in window_parts(ws, starts):
        p = seasonal_naive(ws, starts[part], season)
        finite = finite and bool(np.isfinite(p).all())
        positive = positive and bool((forecast_level(p) > 0).all())
    return finite, positive


def _band_shift(
    ws: WindowSet, season: int, levels: list[float], fit: str, split: str, rank: str, scale: str
) -> tuple[np.ndarray, bool] | None:
    """empirical_band's shift (H, T, Q) of the seasonal naive's misses on the `fit` windows, not walked forward, and
    whether it is in units of each window's level; None without levels or windows, or when the baseline does not
    exist on every window of both splits. Every `fit` window's misses are held (the rank reads them sorted); the
    point forecast is not copied per level (a read-only view repeats it)."""
    from .quantiles import forecast_level, rank_shift

    fs, ts = ws.starts[fit], ws.starts[split]
    if not levels or not len(fs) or not len(ts):
        return None
    pf = seasonal_naive(ws, fs, season)
    finite, positive = _band_checks(ws, ts, season)
    if not (np.isfinite(pf).all() and finite):
        return None
    levels = list(levels)
    lf = forecast_level(pf)
    relative = scale == "level" and bool((lf > 0).all() and positive)
    paths = test_origins(fs, ws.meta.horizon) if rank == "paths" else None
    yf, mask = ws.targets(fs), ws.target_mask(fs)
    if relative:  # (H, T, Q) in units of the level; 0 at the median
        q = np.broadcast_to(pf.astype(np.float64)[..., None] / lf, (*pf.shape, len(levels)))
        return rank_shift(yf / lf[..., 0], q, levels, mask, paths), True
    q = np.broadcast_to(pf.astype(np.float64)[..., None], (*pf.shape, len(levels)))
    return rank_shift(yf, q, levels, mask, paths), False


def _band_of(
    ws: WindowSet, starts: np.ndarray, season: int, levels: list[float], shift: np.ndarray, relative: bool
) -> np.ndarray:
    """The band (n, H, T, Q) of the windows at `starts`: the seasonal naive plus `shift` (times each window's level
    where `relative`)."""
    from .quantiles import forecast_level

    pt = seasonal_naive(ws, starts, season)
    if relative:
        return _spread(pt, levels) + shift[None] * forecast_level(pt)
    return _spread(pt, levels) + shift[None]


def _walked_band(
    ws: WindowSet, season: int, levels: list[float], fit: str, split: str, rank: str, scale: str, adapt: bool
) -> np.ndarray | None:
    """empirical_band walked forward (one series): each `split` window's band from the misses before its origin."""
    from .quantiles import forecast_level, rank_shift

    fs, ts = ws.starts[fit], ws.starts[split]
    if not len(fs) or not len(ts):
        return None
    pf = seasonal_naive(ws, fs, season)
    pt = seasonal_naive(ws, ts, season)
    if not (np.isfinite(pf).all() and np.isfinite(pt).all()):
        return None
    lf, lt = forecast_level(pf), forecast_level(pt)
    relative = scale == "level" and bool((lf > 0).all() and (lt > 0).all())
    q, _ = walk_forward_quantiles(
        ws,
        fs,
        _spread(pf, levels),
        ts,
        _spread(pt, levels),
        levels,
        lambda y, q, m, p, at=None: rank_shift(y, q, levels, m, p, at),
        rank,
        level=(lf, lt) if relative else None,
        adapt=adapt,
    )
    return q
