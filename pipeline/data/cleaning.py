"""The missing / gap / duplicate policy of `settings.ingest`, applied to a canonical frame:
  duplicated timestamps  reject | first | last | mean
  clock drift            timestamps snapped to the nearest point of the regular grid
  gaps and NaN cells     runs up to `max_fill_steps` interpolated linearly (the grid is regular, so
                         this is time-wise) and marked in a `filled:<column>` column (not observed:
                         no window's origin lies on one, no loss or metric scores one); longer runs:
                         reject, or segment (kept as NaN rows that mark a break: no window crosses them)
  a schedule             (raw.json `schedule`, data/schedule.py) the grid is the open steps only: closed hours are
                         no rows at all, readings at them are left out and counted (`snapped.off_schedule`)
  off-hours (panels)     with no schedule recorded, a sub-daily series that never reports at some times of day gets
                         a break over them, not interpolated nights; a gap there is its schedule, not a fault
What it did is written into the ValidationReport; a refusal is a RuleFailure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..catalog import filled_column
from ..config import Settings
from .findings import RuleFailure, ValidationReport
from .frequency import grid_positions
from .schedule import Schedule

_ON_SHARE = 0.1  # a time of day is on a series' schedule when it reports there this often, relative to its busiest
_SCHEDULE_DAYS = 3  # days of readings needed before a schedule is told from chance gaps


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _dedupe(df: pd.DataFrame, mode: str, cols: list[str]) -> tuple[pd.DataFrame, dict]:
    dup = df["timestamp"].duplicated(keep=False)
    info = {
        "mode": mode,
        "duplicated_rows": int(df["timestamp"].duplicated().sum()),
        "timestamps": int(df.loc[dup, "timestamp"].nunique()),
    }
    if not info["duplicated_rows"]:
        return df, info
    g = df.groupby("timestamp", sort=True)[cols]
    # first/last of the rows as they came (NaN cells kept), mean of the values present
    out = {
        "first": lambda: g.nth(0).set_index(df.loc[~df["timestamp"].duplicated(), "timestamp"]),
        "last": lambda: g.nth(-1).set_index(df.loc[~df["timestamp"].duplicated(keep="last"), "timestamp"]),
        "mean": lambda: g.mean(),
    }[mode]()
    return out.sort_index().rename_axis("timestamp").reset_index(), info


def _regularise(
    df: pd.DataFrame, freq: str, cols: list[str], hours: Schedule | None = None
) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """Snap to the grid (merging collisions by mean) and reindex: returns the frame, counts, inserted-row mask.
    On a schedule the grid is its open steps: rows at closed steps are left out (counted as `off_schedule`)."""
    grid, pos, off_grid = grid_positions(df["timestamp"], freq, hours)
    merged = 0
    vals = df[cols].copy()
    vals.index = pos
    stray = pos < 0
    if stray.any():
        vals = vals[~stray]
    if not len(vals):
        raise RuleFailure("timestamp", "schedule", int(stray.sum()), [], "no reading at an open step of the schedule")
    if off_grid:
        merged = int(pd.Index(pos).duplicated().sum())
        vals = vals.groupby(level=0).mean() if merged else vals
    lo, hi = int(vals.index.min()), int(vals.index.max())
    full = vals.reindex(np.arange(lo, hi + 1))
    inserted = ~np.isin(full.index.to_numpy(), vals.index.to_numpy())
    full.insert(0, "timestamp", grid[lo : hi + 1])
    counts = {"off_grid": off_grid, "merged": merged, **({"off_schedule": int(stray.sum())} if hours else {})}
    return full.reset_index(drop=True), counts, inserted


def day_slots(freq: str) -> int | None:
    """Grid points per day of a fixed step that divides the day (hourly: 24); None for daily and calendar steps."""
    off = pd.tseries.frequencies.to_offset(freq)
    if not isinstance(off, pd.offsets.Tick):
        return None
    step, day = pd.Timedelta(off), pd.Timedelta(days=1)
    if step >= day or day % step != pd.Timedelta(0):
        return None
    return int(day // step)


def _slot(ts: pd.Series, freq: str) -> np.ndarray:
    return ((ts - ts.dt.normalize()) // pd.Timedelta(pd.tseries.frequencies.to_offset(freq))).to_numpy(dtype=np.int64)


def detect_schedule(ts: pd.Series, freq: str) -> np.ndarray | None:
    """Which times of day (grid slots) a series reports at, from the timestamps of its observed rows: a slot is
    on its schedule when it reports there at least _ON_SHARE as often as at its busiest slot. None when every
    slot is on it, the step is a day or more, or the series spans too few days to tell."""
    n = day_slots(freq)
    if n is None or ts.dt.normalize().nunique() < _SCHEDULE_DAYS:
        return None
    counts = np.bincount(_slot(ts, freq) % n, minlength=n)
    on = counts >= _ON_SHARE * counts.max()
    return None if on.all() else on


def describe_schedule(on: np.ndarray, freq: str) -> list[str]:
    """The slots on a schedule as time-of-day ranges, e.g. ['08:00-18:00']."""
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))

    def fmt(k: int) -> str:
        s = (k * step).total_seconds()
        return f"{int(s // 3600) % 24:02d}:{int(s // 60) % 60:02d}"

    return [f"{fmt(a)}-{fmt(b)}" for a, b in _runs(on)]


def apply_policy(
    df: pd.DataFrame,
    rep: ValidationReport,
    cols: list[str],
    settings: Settings,
    schedule: bool = False,
    hours: Schedule | None = None,
) -> pd.DataFrame:
    """The policy on one series. `hours`: the schedule it keeps (raw.json `schedule`): the grid is its open steps,
    so a closed night is neither a gap nor a break and an outage in open hours is a gap like any other.
    Without one, `schedule` (a panel's series): missing runs over the times of day the series never reports at
    (detect_schedule) become breaks whatever `long_gaps` says, with the few missed readings beside them (up to
    max_fill_steps); longer runs there are gaps like any other."""
    pol = settings.ingest
    df, inserted, on = _on_grid(df, rep, cols, pol.dedupe, schedule, hours)
    df, inserted = _trim(df, rep, cols, inserted)
    off = None if on is None else ~on[_slot(df["timestamp"], rep.freq) % len(on)]
    filled, long_rows, off_rows = _fill_short_runs(df, rep, cols, pol.max_fill_steps, inserted, off)
    breaks = _mark_breaks(df, rep, cols, pol.long_gaps, pol.max_fill_steps, long_rows, off_rows)
    for c in cols:
        df[filled_column(c)] = filled.get(c, np.zeros(len(df), dtype=bool)) & ~breaks
    return df


def _on_grid(
    df: pd.DataFrame, rep: ValidationReport, cols: list[str], dedupe: str, schedule: bool, hours: Schedule | None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """Sorted, deduplicated and snapped onto the grid; returns the frame, its inserted-row mask and, for a panel's
    series without a recorded schedule, the times of day it reports at (detect_schedule)."""
    df = df.sort_values("timestamp", kind="stable", ignore_index=True)
    df, rep.dedupe = _dedupe(df, dedupe, cols)
    df, rep.snapped, inserted = _regularise(df, rep.freq, cols, hours)
    rep.inserted_rows = int(inserted.sum())
    on = (
        detect_schedule(df.loc[~inserted & df[cols].notna().any(axis=1).to_numpy(), "timestamp"], rep.freq)
        if schedule and hours is None
        else None
    )
    if on is not None:
        rep.schedule = describe_schedule(on, rep.freq)
    return df, inserted, on


def _trim(
    df: pd.DataFrame, rep: ValidationReport, cols: list[str], inserted: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """Leading/trailing rows with a missing value cannot be interpolated: trimmed."""
    complete = df[cols].notna().all(axis=1).to_numpy()
    if not complete.any():
        raise RuleFailure(cols[0], "not_null", len(df), [], "no row has every value")
    first, last = int(np.argmax(complete)), len(complete) - int(np.argmax(complete[::-1]))
    rep.trimmed_rows = int(len(df) - (last - first))
    return df.iloc[first:last].reset_index(drop=True), inserted[first:last]


def _fill_short_runs(
    df: pd.DataFrame, rep: ValidationReport, cols: list[str], k: int, inserted: np.ndarray, off: np.ndarray | None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Runs of missing cells up to `k` steps interpolated in place (returned per column as the cells filled);
    longer runs recorded in rep.long_runs; runs over off-hours (`off`, a detected schedule) with at most `k` open
    steps missed left for breaks. Returns (filled, rows in long runs, rows of off-hours breaks)."""
    ts = df["timestamp"]
    long_rows = np.zeros(len(df), dtype=bool)
    off_rows = np.zeros(len(df), dtype=bool)  # breaks over off-hours (a schedule)
    filled = {}
    for c in cols:
        miss = df[c].isna().to_numpy()
        if not miss.any():
            continue
        short = np.zeros(len(df), dtype=bool)
        for a, b in _runs(miss):
            if off is not None and off[a:b].any() and int((~off[a:b]).sum()) <= k:
                off_rows[a:b] = True
            elif b - a <= k:
                short[a:b] = True
            else:
                # a run made only of missing grid points is a gap in time; otherwise the column's cells are empty
                rep.long_runs.append(
                    {
                        "column": "timestamp" if inserted[a:b].all() else c,
                        "value_column": c,
                        "start": str(ts.iloc[a]),
                        "end": str(ts.iloc[b - 1]),
                        "steps": b - a,
                    }
                )
                long_rows[a:b] = True
        if short.any():
            values = df[c].interpolate(method="linear", limit_area="inside")
            df.loc[short, c] = values[short]
            rep.filled[c] = int(short.sum())
            filled[c] = short
    return filled, long_rows, off_rows


def _mark_breaks(
    df: pd.DataFrame,
    rep: ValidationReport,
    cols: list[str],
    long_gaps: str,
    k: int,
    long_rows: np.ndarray,
    off_rows: np.ndarray,
) -> np.ndarray:
    """Long runs refused (long_gaps: reject), else every row of a long run or an off-hours break blanked whole (no
    window reads half a row) and listed in rep.breaks. Returns the rows that are breaks."""
    if rep.long_runs and long_gaps == "reject":
        worst = max(rep.long_runs, key=lambda r: r["steps"])
        n = len({(r["start"], r["end"]) for r in rep.long_runs})
        raise RuleFailure(
            worst["column"],
            "long_gap",
            n,
            [f"{worst['steps']} missing steps from {worst['start']} to {worst['end']}"],
            f"runs longer than max_fill_steps={k}: {n}",
        )
    if not (rep.long_runs or off_rows.any()):
        return long_rows
    ts = df["timestamp"]
    breaks = long_rows | off_rows
    for c in cols:
        blank = breaks & df[c].notna().to_numpy()
        if blank.any():
            rep.dropped[c] = int(blank.sum())
    df.loc[breaks, cols] = np.nan
    rep.breaks = [
        {
            "start": str(ts.iloc[a]),
            "end": str(ts.iloc[b - 1]),
            "steps": b - a,
            **({"off_hours": True} if not long_rows[a:b].any() else {}),
        }
        for a, b in _runs(breaks)
    ]
    return breaks


def known_future_rows(raw: pd.DataFrame, meta: dict, last: pd.Timestamp) -> pd.DataFrame:
    """The rows after the last validated one (`last`) with the columns known ahead (`future_features`): what the
    batch forecast reads for the horizon. Values are kept as they are (a missing one is refused at forecast time,
    naming it, never filled)."""
    cols = list(meta.get("future_features") or [])
    later = raw[raw["timestamp"] > last] if cols else raw.iloc[:0]
    out = later[["timestamp", *cols]].sort_values("timestamp", kind="stable")
    return out.drop_duplicates("timestamp", keep="last").reset_index(drop=True)
