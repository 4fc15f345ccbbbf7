"""How far recent inputs moved from the training split: the reference profile recorded with a model, the
population stability index (PSI) per variable and the share of values outside the trained bounds.

The profile holds, per variable, the cut points of `bins` quantile bins of the training rows and the share
of those rows in each bin (a variable with few distinct values, a 0/1 flag, gets fewer bins: cut points
are unique). PSI = sum over bins of (recent - train) * ln(recent / train), shares floored at PSI_FLOOR so an
empty bin counts as rare, not infinite. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a shift.
Its sampling noise on n recent values is about (bins - 1) / n: compare enough rows.

Those rules of thumb assume independent draws. A few weeks of a seasonal or trending series differ from a
year of it by far more than 0.25 (measured on the bundled series: 0.3-2 for the weekly ridership, 1-2 for
half-hourly temperature, 1-2.4 for glucose sensor currents, none of it a change in the process). So the
profile also records, per variable, how far the training split strays from itself in windows of the recent
window's length: `psi_windows`, the highest PSI over *every* window of that many consecutive training rows (not a
few non-overlapping ones: their max is a noisy bound), and `psi_normal`, the max over non-overlapping windows
(what a model whose profile has no `psi_windows` is judged by). The monitor's limit is a margin above
`psi_windows` (monitoring/verdict.py).

Raw levels still move with a season the training split never covered (a year of half-hourly demand trained on
January-September meets December), so the profile also holds `residual`: the same bins, shares and `psi_windows`
for the seasonal differences y_t - y_(t-s) (the seasonal naive's errors at the series' shortest natural season
s). They leave the seasonal level out and keep what a model has to live with: their spread grows when the series
becomes noisier or changes shape, and a level shift shows in them for s steps. Variables with few distinct
values (a 0/1 flag: fewer cut points than bins) get no residual profile: differences of a flag are events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PSI_FLOOR = 1e-4


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def bin_profile(values, bins: int) -> dict:
    """Cut points (quantiles of `values`, unique) and the share of `values` in each of the bins they make."""
    v = _finite(values)
    if not len(v):
        return {"cuts": [], "shares": [], "n": 0}
    # observed values as cut points (no interpolation): a 0/1 flag is cut at 0 and 1, not at 0.7
    cuts = np.unique(np.quantile(v, np.arange(1, bins) / bins, method="inverted_cdf")) if bins > 1 else np.array([])
    return {"cuts": [float(c) for c in cuts], "shares": shares(v, cuts).tolist(), "n": int(len(v))}


def shares(values, cuts) -> np.ndarray:
    """The share of finite `values` in each bin: (-inf, c0), [c0, c1), ..., [c_last, inf)."""
    v = _finite(values)
    cuts = np.asarray(cuts, dtype=np.float64)
    counts = np.bincount(np.searchsorted(cuts, v, side="right"), minlength=len(cuts) + 1)
    return counts / max(len(v), 1)


def psi(expected, actual) -> float:
    """Population stability index of the shares `actual` against the shares `expected` (same bins)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def outside_share(values, bounds) -> float:
    """The share of finite `values` outside [lo, hi] (NaN when there are none)."""
    v = _finite(values)
    if not len(v):
        return float("nan")
    lo, hi = bounds
    return float(((v < lo) | (v > hi)).mean())


def window_rows(drift_rows: int | str, lookback: int, bins: int) -> int:
    """The recent rows compared with the training split: params.yaml `monitor.drift_rows`; auto: the
    lookback, and at least 10 per bin (sampling noise about 0.1)."""
    return max(int(lookback), 10 * int(bins)) if drift_rows == "auto" else int(drift_rows)


def residual_season(freq: str | None, n_rows: int | None = None, schedule: dict | None = None) -> int:
    """The lag of the seasonal differences: the frequency's shortest natural season (a day of steps for
    sub-daily data, a week of days; on a schedule, of open steps), 1 (the naive's errors) when it has none."""
    from .frequency import seasons_for

    seasons = seasons_for(freq, n_rows, schedule) if freq else []
    return int(seasons[0]) if seasons else 1


def normal_psi(values, profile: dict, rows: int) -> float | None:
    """The highest PSI of a window of `rows` consecutive `values` (non-overlapping, mostly observed) against
    the `profile` made from all of them: how far the series strays from itself in that many rows."""
    v = np.asarray(values, dtype=np.float64)
    found = [
        psi(profile["shares"], shares(v[i : i + rows], profile["cuts"]))
        for i in range(0, len(v) - rows + 1, rows)
        if np.isfinite(v[i : i + rows]).sum() >= rows / 2
    ]
    return float(max(found)) if found else None


# windows window_psis counts at a time: the bin counts of a part are (part + rows, bins), never every row's
PSI_PART = 1 << 16


def window_psis(values, profile: dict, rows: int, part: int = PSI_PART) -> np.ndarray:
    """The PSI against `profile` of every window of `rows` consecutive `values` (stride 1) in which at least
    half the values are finite; counted with cumulative bin counts, so a year of half-hourly rows takes
    milliseconds, `part` windows at a time (a panel's reference frames millions of rows: every row's cumulative
    counts at once were ~1 GB); the counts are whole numbers, so each window's PSI is the same in any part."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if rows < 1 or len(v) < rows:
        return np.array([])
    ok = np.isfinite(v)
    cuts = np.asarray(profile["cuts"], dtype=np.float64)
    idx = np.searchsorted(cuts, np.where(ok, v, 0.0), side="right")
    e = np.maximum(np.asarray(profile["shares"], dtype=np.float64), PSI_FLOOR)
    out = []
    for a in range(0, len(v) - rows + 1, part):
        b = min(a + part, len(v) - rows + 1)  # windows a..b-1 read rows a..b-1+rows
        onehot = np.zeros((b - a + rows, len(cuts) + 1))
        sel = ok[a : b - 1 + rows]
        onehot[1:][sel, idx[a : b - 1 + rows][sel]] = 1.0
        cum = np.cumsum(onehot, axis=0)
        counts = cum[rows:] - cum[:-rows]
        n = counts.sum(axis=1)
        keep = n >= rows / 2
        p = np.maximum(counts[keep] / n[keep, None], PSI_FLOOR)
        out.append(((p - e) * np.log(p / e)).sum(axis=1))
    return np.concatenate(out)


def seasonal_residuals(values, season: int) -> np.ndarray:
    """y_t - y_(t-season): the seasonal naive's one-step errors (NaN for the first `season` rows)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    out = np.full(len(v), np.nan)
    if 0 < season < len(v):
        out[season:] = v[season:] - v[:-season]
    return out


def _highest(psis: np.ndarray) -> float | None:
    return float(psis.max()) if len(psis) else None


def reference_profile(
    train: pd.DataFrame,
    variables: list[str],
    targets: list[str],
    bins: int,
    tolerance: float,
    mase_scale: dict[str, float] | None = None,
    window: int | None = None,
    season: int | None = None,
) -> dict:
    """What a model carries about the rows it was trained on, for monitoring: per variable the PSI bins and
    their shares (with `psi_windows` and `psi_normal` over windows of `window` rows, and the same for the
    seasonal differences at lag `season` when given), the plausible bounds (profiled as validation does:
    [min - t*range, max + t*range]), and per target the in-sample one-step naive MAE that scales its MASE.
    `train`: the training rows of one series in time order, with `timestamp`."""
    from .validation import profile_bounds

    if mase_scale is None:
        mase_scale = {}
        for t in targets:
            d = np.abs(np.diff(train[t].to_numpy(dtype=np.float64)))
            d = d[np.isfinite(d)]
            mase_scale[t] = float(d.mean()) if len(d) and d.mean() > 1e-12 else 1.0
    profiles = {v: bin_profile(train[v], bins) for v in variables}
    for v, prof in profiles.items():
        prof["psi_normal"] = normal_psi(train[v], prof, window) if window and prof["n"] else None
        prof["psi_windows"] = _highest(window_psis(train[v], prof, window)) if window and prof["n"] else None
        if season and window and prof["n"] and len(prof["cuts"]) == bins - 1:
            res = seasonal_residuals(train[v], season)
            rp = bin_profile(res, bins)
            if rp["n"]:
                rp["psi_windows"] = _highest(window_psis(res, rp, window))
                prof["residual"] = rp
    ts = train["timestamp"]
    return {
        "train": [str(ts.iloc[0]), str(ts.iloc[-1])] if len(ts) else [None, None],
        "rows": int(len(train)),
        "bins": int(bins),
        "mase_scale": {t: float(v) for t, v in mase_scale.items()},
        "window": window,
        "season": season if season and window else None,
        "variables": profiles,
        "bounds": profile_bounds(train, list(variables), tolerance),
    }


def drift(
    recent: pd.DataFrame,
    profile: dict,
    bounds: dict[str, list[float]] | None = None,
    before: pd.DataFrame | None = None,
) -> dict[str, dict]:
    """Per variable of the profile: PSI of the `recent` rows against the training shares, the training
    split's own `psi_windows` and `psi_normal` for windows of as many rows (None when the profile has none for
    that length), the share of recent values outside `bounds` (default: the profile's own), how many values
    were compared; and where the profile has a residual profile, `residual_psi` of the recent seasonal
    differences (their lag reaches into `before`, the rows just before `recent`) with its `residual_windows`."""
    bounds = bounds or profile.get("bounds") or {}
    same = profile.get("window") == len(recent)
    season = profile.get("season")
    out = {}
    for var, ref in (profile.get("variables") or {}).items():
        if var not in recent.columns or not ref.get("n"):
            continue
        v = _finite(recent[var])
        row = {
            "n": int(len(v)),
            "psi": psi(ref["shares"], shares(v, ref["cuts"])) if len(v) else float("nan"),
            "psi_normal": ref.get("psi_normal") if same else None,
            "psi_windows": ref.get("psi_windows") if same else None,
            "outside": float("nan"),
            "bounds": None,
        }
        rp = ref.get("residual")
        if rp and season:
            full = recent[var] if before is None or var not in before.columns else pd.concat([before[var], recent[var]])
            res = _finite(seasonal_residuals(full, season)[-len(recent) :])
            row["residual_psi"] = psi(rp["shares"], shares(res, rp["cuts"])) if len(res) else float("nan")
            row["residual_windows"] = rp.get("psi_windows") if same else None
        if var in bounds:
            row["bounds"] = [float(b) for b in bounds[var]]
            row["outside"] = outside_share(v, bounds[var])
        out[var] = row
    return out
