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
profile also records `psi_normal`: the highest PSI that a window of the same length drawn from the training
split itself shows against the whole split. A recent window is unusual when it exceeds that too.
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


def normal_psi(values, profile: dict, rows: int) -> float | None:
    """The highest PSI of a window of `rows` consecutive `values` (non-overlapping, mostly observed) against
    the `profile` made from all of them: how far the series strays from itself in that many rows."""
    v = np.asarray(values, dtype=np.float64)
    found = [psi(profile["shares"], shares(v[i:i + rows], profile["cuts"]))
             for i in range(0, len(v) - rows + 1, rows) if np.isfinite(v[i:i + rows]).sum() >= rows / 2]
    return float(max(found)) if found else None


def reference_profile(train: pd.DataFrame, variables: list[str], targets: list[str], bins: int,
                      tolerance: float, mase_scale: dict[str, float] | None = None,
                      window: int | None = None) -> dict:
    """What a model carries about the rows it was trained on, for monitoring: per variable the PSI bins and
    their shares (with `psi_normal` over windows of `window` rows), the plausible bounds (profiled as
    validation does: [min - t*range, max + t*range]), and per target the in-sample one-step naive MAE that
    scales its MASE. `train`: the training rows, with `timestamp`."""
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
    ts = train["timestamp"]
    return {"train": [str(ts.iloc[0]), str(ts.iloc[-1])] if len(ts) else [None, None], "rows": int(len(train)),
            "bins": int(bins), "mase_scale": {t: float(v) for t, v in mase_scale.items()},
            "window": window, "variables": profiles, "bounds": profile_bounds(train, list(variables), tolerance)}


def drift(recent: pd.DataFrame, profile: dict, bounds: dict[str, list[float]] | None = None) -> dict[str, dict]:
    """Per variable of the profile: PSI of the `recent` rows against the training shares, the training
    split's own `psi_normal` for windows of as many rows (None when the profile has none for that length),
    the share of recent values outside `bounds` (default: the profile's own), how many values were compared."""
    bounds = bounds or profile.get("bounds") or {}
    out = {}
    for var, ref in (profile.get("variables") or {}).items():
        if var not in recent.columns or not ref.get("n"):
            continue
        v = _finite(recent[var])
        row = {"n": int(len(v)), "psi": psi(ref["shares"], shares(v, ref["cuts"])) if len(v) else float("nan"),
               "psi_normal": ref.get("psi_normal") if profile.get("window") == len(recent) else None,
               "outside": float("nan"), "bounds": None}
        if var in bounds:
            row["bounds"] = [float(b) for b in bounds[var]]
            row["outside"] = outside_share(v, bounds[var])
        out[var] = row
    return out
