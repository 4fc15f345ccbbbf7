"""Readings at irregular times put on a regular grid (ingest --freq F --agg A), per series.

Each reading falls in the grid interval that holds it, labelled as pandas labels it (`[t, t + step)` -> t for
fixed steps; a calendar frequency as `resample` bins it, e.g. month ends close on the right). Per interval
and variable: mean | sum | last | max of the readings that have a value (`last`: the latest in time; `sum`
of none is missing, never 0). An interval with no reading is not made up: it stays a gap for the
validation policy. What was merged is counted (readings in, grid points out) for the metadata.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..catalog import SERIES_ID
from ..errors import ConfigError

AGGS = ("mean", "sum", "last", "max")


def check_agg(agg: str | None, freq: str | None) -> None:
    if agg is None:
        return
    if agg not in AGGS:
        raise ConfigError(f"--agg '{agg}': must be one of {', '.join(AGGS)}")
    if not freq:
        raise ConfigError(f"--agg {agg}: needs --freq, the grid the readings are aggregated onto")


def _bins(ts: pd.Series, freq: str) -> pd.Series | pd.Grouper:
    off = pd.tseries.frequencies.to_offset(freq)
    day = pd.Timedelta(days=1)
    if isinstance(off, pd.offsets.Tick) and day % pd.Timedelta(off) == pd.Timedelta(0):
        return ts.dt.floor(off)  # a step that divides the day: floor is resample's binning, ten times faster
    return pd.Grouper(key="timestamp", freq=off)


def to_grid(
    frame: pd.DataFrame, freq: str, agg: str, variables: list[str], id_cols: list[str] | None = None
) -> tuple[pd.DataFrame, dict]:
    """A canonical frame (a panel sorted by series_id, timestamp, or one series sorted by time) -> one row per
    series and grid point, and {freq, agg, readings, grid_points, merged_points, most_per_point, series}."""
    keys = [SERIES_ID] if id_cols else []
    extra = [c for c in (id_cols or []) if c != SERIES_ID]
    bins = _bins(frame["timestamp"], freq)
    by = keys + [bins.rename("timestamp") if isinstance(bins, pd.Series) else bins]
    g = frame.groupby(by, sort=True)
    values = g[variables]
    out = {"mean": values.mean, "max": values.max, "last": values.last, "sum": lambda: values.sum(min_count=1)}[agg]()
    size = g.size()
    out = out.reset_index()
    if extra:  # id columns are fixed within a series: the first of each series
        first = frame.groupby(SERIES_ID, sort=True)[extra].first()
        out = out.merge(first, left_on=SERIES_ID, right_index=True, how="left")
    out["timestamp"] = out["timestamp"].astype("datetime64[ns]")
    out = out[[*keys, *extra, "timestamp", *variables]]
    counts = size.to_numpy()
    info = {
        "freq": freq,
        "agg": agg,
        "readings": int(len(frame)),
        "grid_points": int(len(out)),
        "merged_points": int((counts > 1).sum()),
        "most_per_point": int(counts.max()) if len(counts) else 0,
    }
    if keys:
        per = pd.DataFrame(
            {
                "readings": frame.groupby(SERIES_ID, sort=True).size(),
                "grid_points": size.groupby(level=0, sort=True).size(),
            }
        )
        info["series"] = {
            str(k): {"readings": int(r), "grid_points": int(p)}
            for k, r, p in zip(per.index, per["readings"], per["grid_points"])
        }
    for c in variables:
        out[c] = out[c].astype(np.float64)
    return out, info
