"""Where a series' windows lie: their lookback and horizon, the chronological splits, which windows each split
keeps, and the scalers and plausible ranges fitted on training rows only (one series and each series of a panel).

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
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..catalog import filled_column
from ..config import Settings
from .frequency import seasons_for

MAX_AUTO_SEASON = 1024  # the longest season an auto lookback spans (resolve_window)


def resolve_window(
    settings: Settings,
    freq: str,
    n_rows: int | None = None,
    schedule: dict | None = None,
    pooled_rows: int | None = None,
    panel: bool = False,
    series_rows: Sequence[int] | None = None,
) -> tuple[int, int]:
    """Lookback and horizon in steps (on a schedule, open steps: data/schedule.py); explicit numbers in params.yaml
    win over 'auto'.

    auto horizon: one day of steps for sub-daily data, else the shortest natural season (a week of days), at most
    what lets the test split (up to `window.test_fraction_max` of the rows) hold `evaluate.min_decision_paths` whole
    horizons: 17 years of months are forecast 6 months ahead, not 12, or no decision could ever be reached on them
    (`decidable_horizon`). A panel (`series_rows`: the rows of each series) is held to the same rule over the paths its
    series pool (promotion pools them): five series of ten years of months keep the year; one such series alone would
    not. A panel given without its series' rows keeps the season.
    auto lookback: the longest natural season that fits the series comfortably (ten lookbacks in its rows) and
    spans at most MAX_AUTO_SEASON steps, plus `train.rnn_steps`, so a model anchored on that season still sees its
    recent dynamics. The cap keeps a week of 5-minute steps (2016) out: the linear anchor's columns would outgrow
    what its training windows support (docs/research.md: four weeks of half-hours fitted worse than eight
    days) and every window read would grow with them; such a series keeps its day.
    A single series cut to a tenth of its rows gets `window.min_lookback_seasons` (3) of its shortest natural season
    where a fifth of its rows holds them: 16 years of months 36 months, not 19, so the anchor's seasonal indices and
    trend see three seasons (modeling/anchor.py weighs its anchors on both lookbacks and keeps the better).
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
        rows = series_rows if series_rows is not None else ([n_rows] if n_rows is not None and not panel else None)
        if rows is not None:
            horizon = min(horizon, decidable_horizon(settings, rows))
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
            # a single series cut to a tenth of its rows: window.min_lookback_seasons of its shortest season, where a
            # fifth of its rows holds them
            least = w.min_lookback_seasons * seasons[0] if seasons and not panel and w.min_lookback_seasons > 1 else 0
            lookback = least if int(lookback) < min(one, least) and least <= n_rows // 5 else lookback
    return int(lookback), int(horizon)


def lookback_seasons(settings: Settings, panel: bool) -> int:
    """How many of its longest natural season an auto lookback holds (window.lookback_seasons; auto: two on a panel,
    whose pooled rows support the longer windows, one on a single series)."""
    k = settings.window.lookback_seasons
    return (2 if panel else 1) if k == "auto" else int(k)


def decidable_horizon(settings: Settings, n_rows: int | Sequence[int]) -> int:
    """The longest horizon whose `evaluate.min_decision_paths` non-overlapping windows fit in the largest test splits
    (`window.test_fraction_max` of `n_rows`; a panel: of each of its series' rows, their paths pooled as promotion
    pools them): the cap on an auto horizon (at least 1)."""
    cap = np.floor(np.atleast_1d(np.asarray(n_rows, dtype=np.float64)) * settings.window.test_fraction_max)
    need = settings.evaluate.min_decision_paths
    lo, hi = 1, max(int(cap.max(initial=0)), 1)
    while lo < hi:  # the pooled paths fall as the horizon grows: the longest horizon that still holds `need`
        mid = (lo + hi + 1) // 2
        if int((cap // mid).sum()) >= need:
            lo = mid
        else:
            hi = mid - 1
    return lo


def test_horizons(settings: Settings, series_rows: Sequence[int], lookback: int, horizon: int) -> int:
    """How many whole horizons each series' test split grows to hold (split_for): the fewest that let the series
    with splits of their own together hold `evaluate.min_decision_paths` of them, the paths promotion weighs (one
    series: all of them). Where even `window.test_fraction_max` of every series falls short, every split grows to
    its largest, as one short series' does."""
    need = settings.evaluate.min_decision_paths
    rows = np.asarray(series_rows, dtype=np.int64)
    if len(rows) <= 1:
        return need
    w = settings.window
    n_val = np.round(rows * w.val_fraction).astype(np.int64)
    for k in range(1, need):
        n_test = _grown_test(rows, np.round(rows * w.test_fraction).astype(np.int64), k * horizon, w.test_fraction_max)
        own = (n_val >= horizon) & (n_test >= horizon) & (rows - n_val - n_test >= lookback + horizon)
        if int((n_test // horizon)[own].sum()) >= need:
            return k
    return need


def series_test_need(settings: Settings, n_series: int) -> int:
    """The non-overlapping test windows a series needs for a split of its own (else it is cold start):
    `ingest.min_test_horizons` for one series; on a panel no more than its share of the
    `evaluate.min_decision_paths` its series pool (five series: 2 each), at least one."""
    mine = settings.ingest.min_test_horizons
    if n_series <= 1:
        return mine
    return max(1, min(mine, math.ceil(settings.evaluate.min_decision_paths / n_series)))


def panel_remedy(settings: Settings, series_rows: Sequence[int], lookback: int, horizon: int) -> str:
    """What lets the longest series of a panel whose every series is cold start hold splits of its own, as a setting
    to change: the longest shorter window.horizon, else the longest shorter window.lookback, else more rows."""
    rows = [int(r) for r in series_rows]
    if not rows:
        return "supply more rows"
    n, need = max(rows), series_test_need(settings, len(rows))

    def own(lb: int, h: int) -> bool:
        v, t = split_for(n, h, settings, test_horizons(settings, rows, lb, h) if len(rows) > 1 else None)
        return window_shortfall(window_starts(n, lb, h, v, t, settings.window.stride), h, settings, need) is None

    for h in range(horizon - 1, 0, -1):
        if own(lookback, h):
            return f"set window.horizon: {h} in params.yaml (the longest series then holds splits of its own)"
    for lb in range(lookback - 1, 1, -1):
        if own(lb, horizon):
            return f"set window.lookback: {lb} in params.yaml (the longest series then holds splits of its own)"
    return f"supply more rows (the longest series has {n})"


def series_rows(meta: dict) -> list[int]:
    """Each series' rows with every value (raw.json; validated.json: its kept rows)."""
    return [int(s.get("observed_rows", s["rows"])) for s in meta["panel"]["series"].values()]


def panel_test_rule(meta: dict, settings: Settings, lookback: int, horizon: int) -> dict:
    """How a panel's series are split and judged (validated.json `panel.window`): `test_horizons`, the horizons each
    series' test split grows to hold, and `test_need`, the non-overlapping test windows a series needs to be `ok`
    (test_horizons, series_test_need): the series pool their paths for promotion's decision. What validation
    recorded wins (the window stage splits as it judged)."""
    known = meta["panel"].get("window") or {}
    if "test_horizons" in known and "test_need" in known and known.get("horizon") == horizon:
        return {"test_horizons": int(known["test_horizons"]), "test_need": int(known["test_need"])}
    rows = series_rows(meta)
    return {
        "test_horizons": test_horizons(settings, rows, lookback, horizon),
        "test_need": series_test_need(settings, len(rows)),
    }


def _grown_test(rows, n_test, want: int, fraction_max: float):
    """Test rows grown to `want` where they hold fewer, up to `fraction_max` of the rows (never shrunk)."""
    grown = np.maximum(n_test, np.minimum(want, np.floor(rows * fraction_max).astype(np.int64)))
    return np.where(n_test < want, grown, n_test)


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


def declared_bounds(variables: list[str], settings: Settings) -> dict[str, list[float]]:
    """The plausible ranges params.yaml declares (validate.bounds) for these variables, in raw units."""
    return {v: [float(x) for x in settings.validate_.bounds[v]] for v in variables if v in settings.validate_.bounds}


def split_for(rows: int, horizon: int, settings: Settings, horizons: int | None = None) -> tuple[int, int]:
    """Where the validation and the test split start. The test split is `window.test_fraction` of the rows, grown (up
    to `window.test_fraction_max`) until it holds `horizons` whole horizons (default `evaluate.min_decision_paths`,
    the paths promotion weighs): on a short series 15% of the rows give too few forecasts for any decision, and no
    decision is no champion. The training rows give way; the validation split keeps its share. A panel's series pool
    their paths: each grows to its share (`test_horizons`)."""
    w = settings.window
    want = (settings.evaluate.min_decision_paths if horizons is None else horizons) * horizon
    n_test = int(_grown_test(np.int64(rows), np.int64(round(rows * w.test_fraction)), want, w.test_fraction_max))
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


def window_shortfall(
    starts: dict[str, np.ndarray], horizon: int, settings: Settings, test_need: int | None = None
) -> tuple[str, str] | None:
    """(rule, what is short) when the splits hold fewer windows than params.yaml `ingest` asks (`test_need`: the
    non-overlapping test windows asked, default `ingest.min_test_horizons`; a panel's series: series_test_need),
    else None."""
    need = settings.ingest.min_windows
    for k, s in starts.items():
        if len(s) < need:
            return "min_windows", f"{len(s)} {k} window(s), need {need} per split"
    origins = test_origins(starts["test"], horizon)
    need = settings.ingest.min_test_horizons if test_need is None else test_need
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
