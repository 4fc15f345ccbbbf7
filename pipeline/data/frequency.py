"""Frequencies of time series: checking and inferring them, the regular grid and its gaps, the
natural seasons of a frequency, and the steps that follow a timestamp on it."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..errors import ConfigError, IngestError
from .schedule import Schedule, as_schedule

_MIN_STEP_SHARE = 0.5  # the most common step must cover this share of steps to be taken as the frequency


def to_freq(freq, where: str = "--freq") -> str:
    """A pandas alias checked and normalised ('30T' style legacy aliases are refused by pandas 3)."""
    try:
        return pd.tseries.frequencies.to_offset(freq).freqstr
    except (ValueError, TypeError):
        raise ConfigError(
            f"{where} '{freq}': not a pandas frequency alias (e.g. 5min, 30min, h, D, B, W-SUN, MS)"
        ) from None


def infer_freq(ts: pd.Series | pd.DatetimeIndex, source: str = "input") -> str:
    """The regular step of a (possibly gappy, unsorted, duplicated) time index.

    pd.infer_freq needs a gap-free index, so it is only the fast path; otherwise the most common
    positive step is the frequency when it covers at least half of the steps. Daily data with no
    weekend timestamps is business-daily ('B'), so that weekends are not counted as gaps.
    """
    idx = pd.DatetimeIndex(ts).dropna().unique().sort_values()
    if len(idx) < 3:
        raise IngestError.broken(
            "frequency", f"{source}: cannot infer a frequency from {len(idx)} distinct timestamps; pass --freq"
        )
    try:
        with warnings.catch_warnings():  # pandas 3 warns that infer_freq will return an offset: either works below
            warnings.simplefilter("ignore")
            f = pd.infer_freq(idx)
    except (ValueError, TypeError):
        f = None
    if f:
        return to_freq(f)
    steps = pd.Series(idx[1:] - idx[:-1])
    counts = steps.value_counts()
    step, n = counts.index[0], int(counts.iloc[0])
    if n / len(steps) < _MIN_STEP_SHARE:
        raise IngestError.broken(
            "frequency",
            f"{source}: cannot infer a regular frequency: the most common step {step} covers only "
            f"{n}/{len(steps)} steps; pass --freq",
        )
    day = pd.Timedelta(days=1)
    if step == day:
        return "D" if (idx.day_of_week >= 5).any() else "B"
    if step == 7 * day:
        return to_freq(f"W-{idx[0].day_name()[:3].upper()}")
    if pd.Timedelta(days=28) <= step <= pd.Timedelta(days=31):
        if (idx.day == 1).all():
            return "MS"
        if idx.is_month_end.all():
            return "ME"
    if pd.Timedelta(days=365) <= step <= pd.Timedelta(days=366):
        if ((idx.month == 1) & (idx.day == 1)).all():
            return "YS"
        if idx.is_year_end.all():
            return "YE"
    return pd.tseries.frequencies.to_offset(step).freqstr


def grid_positions(
    ts: pd.Series | pd.DatetimeIndex, freq: str, schedule: Schedule | None = None
) -> tuple[pd.DatetimeIndex, np.ndarray, int]:
    """The regular grid from the first to the last timestamp, each timestamp's nearest grid position,
    and how many timestamps were not exactly on the grid (clock drift; snapped to the nearest point).
    On a schedule the grid holds the open steps only, and a timestamp at a closed step gets position -1."""
    idx = pd.DatetimeIndex(ts)
    if schedule is not None:
        snapped = schedule.snap(idx)
        on = schedule.is_open(snapped)
        grid = schedule.grid(snapped[on].min(), snapped[on].max()) if on.any() else pd.DatetimeIndex([], dtype="M8[ns]")
        pos = np.where(on, grid.get_indexer(snapped), -1)
        return grid, pos, int((snapped[on] != idx[on]).sum())
    off = pd.tseries.frequencies.to_offset(freq)
    first, last = idx.min(), idx.max()
    grid = pd.date_range(off.rollback(first), off.rollforward(last), freq=off)
    pos = grid.get_indexer(idx, method="nearest")
    off_grid = int((grid[pos] != idx).sum())
    return grid, pos, off_grid


def gap_stats(ts: pd.Series | pd.DatetimeIndex, freq: str, schedule: Schedule | None = None) -> dict:
    """Gaps of a sorted time index measured in steps of freq (on a schedule: in open steps, a closed night is
    no gap): count, missing steps, longest."""
    idx = pd.DatetimeIndex(ts).dropna()
    if len(idx) < 2:
        return {"count": 0, "missing_steps": 0, "longest_steps": 0, "off_grid": 0}
    _, pos, off_grid = grid_positions(idx, freq, schedule)
    pos = pos[pos >= 0]
    d = np.diff(np.sort(pos)) - 1
    d = d[d > 0]
    return {
        "count": int(len(d)),
        "missing_steps": int(d.sum()),
        "longest_steps": int(d.max()) if len(d) else 0,
        "off_grid": off_grid,
    }


def seasons_for(freq: str, n_rows: int | None = None, schedule: Schedule | dict | None = None) -> list[int]:
    """Natural seasons of a frequency, in steps: a day and a week for sub-daily data, a week (and a
    year, when the series holds several) for daily data, 5 for business days, 12 for months...
    On a schedule, in open steps: a day is the open steps of a day, a week those of a week."""
    from pandas.tseries.frequencies import to_offset

    off = to_offset(freq)
    sched = as_schedule(schedule) if isinstance(schedule, dict) else schedule
    if sched is not None:
        out = sched.seasons()
    elif isinstance(off, (pd.offsets.Tick, pd.offsets.Day)):  # fixed steps: seconds .. days
        step = pd.Timedelta(off)
        day, week, year = pd.Timedelta("1D"), pd.Timedelta("7D"), pd.Timedelta("365D")
        out = []
        for period in (day, week) if step < day else (week, year):
            k = period / step
            if k > 1 and float(k).is_integer():
                out.append(int(k))
    else:
        name = off.rule_code.upper()
        calendar = {"B": [5], "C": [5], "W": [52], "M": [12], "S": [12], "Q": [4]}
        key = "Q" if "Q" in name else ("W" if name.startswith("W") else name[0])
        if name.startswith(("BQ", "BM", "BY", "BA")):
            key = name[1]
        out = [] if key in ("A", "Y") else calendar.get(key, [])
        out = [m // off.n for m in out if off.n and m % off.n == 0 and m // off.n > 1]
    if n_rows is not None:
        out = [m for m in out if m * 3 <= n_rows]
    return out


def future_timestamps(
    last: pd.Timestamp, freq: str, horizon: int, schedule: Schedule | dict | None = None
) -> pd.DatetimeIndex:
    """The `horizon` steps after `last` on the series' frequency (calendar frequencies included); on a schedule,
    the next open steps."""
    sched = as_schedule(schedule) if isinstance(schedule, dict) else schedule
    if sched is not None:
        return sched.next_steps(last, horizon)
    return pd.date_range(start=last, periods=horizon + 1, freq=freq)[1:]
