"""The timestamps of a request, checked against the model: ISO 8601, increasing, on the model's grid (its step and
phase), the horizon's timestamps computed from them. A fast path for plain ISO strings on a fixed step, the pandas
path for the rest (both give the same answers: tests/test_serve.py)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

from ..data.frequency import future_timestamps
from ..data.schedule import as_schedule
from .problems import BadRequest


@lru_cache(maxsize=64)
def _offset(freq: str | None):
    if not freq:
        return None
    try:
        return pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        return None


# ---- the common case without pandas: ISO strings of the usual shape on a fixed step. pandas costs ~1 ms per
# request here (most of a small model's answer); this path answers the same in ~0.1 ms. It only ever says yes:
# anything it does not handle exactly like the pandas path (another ISO form, a calendar frequency, an error to
# word) goes to that path, which stays the reference.

_ISO_NAIVE = r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?)?"
_NAIVE_LINES = re.compile(rf"(?:{_ISO_NAIVE}\n)*{_ISO_NAIVE}")
_ZONE = re.compile(r"(?:Z|[+-](\d\d):(\d\d))$")
_EPOCH_NAIVE = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
_PANDAS_US = 9_223_372_036_854_775 - 1  # pandas' nanosecond timestamps end about here (years 1677 .. 2262)


@lru_cache(maxsize=64)
def _step_us(freq: str | None) -> int | None:
    """The fixed step of `freq` in microseconds; None for a calendar step (months, business days) or none."""
    off = _offset(freq)
    if off is None:
        return None
    try:
        ns = pd.Timedelta(off).value
    except (ValueError, TypeError):
        return None
    return ns // 1000 if ns > 0 and ns % 1000 == 0 else None


@lru_cache(maxsize=64)
def _origin_us(grid_origin: str | None) -> int | None | bool:
    """The model's grid origin in microseconds (None: none recorded; False: one this path cannot use)."""
    if not grid_origin:
        return None
    try:
        ns = pd.Timestamp(grid_origin).tz_localize(None).value
    except (ValueError, TypeError):
        return None
    return ns // 1000 if ns % 1000 == 0 else False


def _parse_us(raw: list[str]) -> np.ndarray | None:
    """ISO strings of one shape, all without a zone or all with the same one -> UTC microseconds (numpy's
    parser, in C); None for anything else."""
    zone = _ZONE.search(raw[0])
    suffix = zone.group(0) if zone else ""
    if suffix:
        if not all(s.endswith(suffix) for s in raw):
            return None
        raw = [s[: -len(suffix)] for s in raw]
    if not _NAIVE_LINES.fullmatch("\n".join(raw)):
        return None
    try:
        us = np.array(raw, dtype="datetime64[us]").astype(np.int64)
    except (ValueError, OverflowError):  # 2024-02-30, 24:00...: worded by the pandas path
        return None
    if zone and zone.group(1) is not None:
        sign = -1 if suffix[0] == "-" else 1
        us = us - sign * (int(zone.group(1)) * 60 + int(zone.group(2))) * 60_000_000
    return us


def _fast_timestamps(raw: list[str], horizon: int, freq: str | None, grid_origin: str | None) -> list[str] | None:
    if not raw or (ts := _parse_us(raw)) is None:
        return None
    if len(ts) < 2:
        return None
    if freq:
        step = _step_us(freq)
        origin = _origin_us(grid_origin)
        if step is None or origin is False:
            return None
        if (ts != ts[0] + step * np.arange(len(ts))).any():
            return None
        if origin is not None:
            if ((ts[0] - origin) % step) != 0:
                return None
        elif step >= _DAY_US and (ts % _DAY_US != 0).any():
            return None
    else:
        steps = np.diff(ts)
        step = int(steps[0])
        if step <= 0 or (steps != step).any():
            return None
    last = int(ts[-1]) + step * horizon
    if int(ts[0]) < -_PANDAS_US or last > _PANDAS_US:
        return None
    return [(_EPOCH_NAIVE + _US * (int(ts[-1]) + step * k)).isoformat() for k in range(1, horizon + 1)]


def _off_phase(ts: pd.DatetimeIndex, off, origin: pd.Timestamp | None) -> np.ndarray:
    """Positions of timestamps that are off the model's grid: a fixed step counted from `origin` (the
    first timestamp it trained on), or, for a day or longer with no origin known, midnight."""
    try:
        step = pd.Timedelta(off)
    except (ValueError, TypeError):
        step = None  # calendar steps: months, business days...
    if origin is not None and step is not None:
        return np.flatnonzero((ts - origin) % step != pd.Timedelta(0))
    if origin is not None:
        return np.flatnonzero(ts - ts.normalize() != origin - origin.normalize())
    if step is None or step >= pd.Timedelta(days=1):
        return np.flatnonzero(ts != ts.normalize())
    return np.array([], dtype=int)  # sub-daily with no origin: any phase


def _on_schedule(ts: pd.DatetimeIndex, where: str, horizon: int, schedule: dict) -> list[str]:
    """Timestamps of a model with opening hours: each an open step, one after the other (a closed night between
    two days is no gap), continued with the next open steps."""
    hours = as_schedule(schedule)
    assert hours is not None
    closed = hours.first_closed(ts)
    if closed is not None:
        n = int((~hours.is_open(ts)).sum())
        raise BadRequest(
            422,
            f"{where}[{closed}]: {ts[closed]} is outside the model's schedule ({hours.describe()}; "
            f"{n} timestamps outside it): send the observations at open steps only",
        )
    grid = hours.grid(ts[0], ts[-1])
    n = min(len(grid), len(ts))
    differ = np.flatnonzero(grid[:n] != ts[:n])
    if len(differ) or len(grid) != len(ts):
        i = int(differ[0]) if len(differ) else n
        raise BadRequest(
            422,
            f"{where}[{i}]: {ts[i]} does not follow {ts[i - 1]} on the model's schedule ({hours.describe()}): "
            f"expected {grid[i]}",
        )
    return [t.isoformat() for t in hours.next_steps(ts[-1], horizon)]


def check_timestamps(
    raw: list[str],
    where: str,
    length: int,
    horizon: int,
    freq: str | None,
    grid_origin: str | None = None,
    schedule: dict | None = None,
) -> list[str]:
    """Check the request's timestamps (one per observation, regular, on the model's grid) and continue them
    `horizon` steps.

    With the model's frequency known, the timestamps must lie on its grid (business days and months
    included) at its phase (a daily model is not asked at 06:30); without it, they must have one
    constant step. A model with opening hours (`schedule`) takes its open steps only, in order."""
    if len(raw) != length:
        raise BadRequest(
            422, f"{where}: expected a list of {length} date-time strings (one per observation), got {len(raw)} items"
        )
    fast = None if schedule else _fast_timestamps(raw, horizon, freq, grid_origin)
    if fast is not None:
        return fast
    ts = _parse(raw, where)
    steps = ts[1:] - ts[:-1]
    off = _offset(freq)
    if len(steps) and (steps <= pd.Timedelta(0)).any():
        i = int(np.flatnonzero(steps <= pd.Timedelta(0))[0]) + 1
        raise BadRequest(422, f"{where}[{i}]: {ts[i]} does not come after {ts[i - 1]}; timestamps must increase")
    if schedule:
        return _on_schedule(ts, where, horizon, schedule)
    if off is not None and freq is not None:  # a known offset comes from a frequency
        future = _on_frequency(ts, steps, where, horizon, freq, off, grid_origin)
    else:
        future = _one_step(ts, steps, where, horizon)
    return [t.isoformat() for t in future]


def _parse(raw: list[str], where: str) -> pd.DatetimeIndex:
    """ISO 8601 strings as tz-naive UTC, the project's convention (a zone in the request is converted)."""
    try:
        return pd.DatetimeIndex(pd.to_datetime(pd.Series(raw), utc=True, format="ISO8601")).tz_localize(None)
    except (ValueError, TypeError, OverflowError) as e:
        raise BadRequest(422, f"{where}: not ISO 8601 date-times ({str(e).splitlines()[0][:120]})") from None


def _on_frequency(
    ts: pd.DatetimeIndex, steps, where: str, horizon: int, freq: str, off, grid_origin: str | None
) -> pd.DatetimeIndex:
    """Timestamps of a model with a frequency: on its grid from the first, at its phase (counted from
    `grid_origin`, else midnight); returns the `horizon` steps after the last."""
    try:
        grid = pd.date_range(ts[0], periods=len(ts), freq=off)
        future = future_timestamps(ts[-1], freq, horizon)
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        raise BadRequest(
            422,
            f"{where}: {ts[0]} .. {ts[-1]} continued {horizon} steps of {freq} leaves "
            "the calendar pandas can represent",
        ) from None
    off_grid = np.flatnonzero(grid != ts)
    if len(off_grid):
        if len(set(steps)) == 1:
            raise BadRequest(422, f"{where}: step {steps[0]} does not match the model's frequency {freq}")
        i = int(off_grid[0])
        raise BadRequest(
            422,
            f"{where}[{i}]: {ts[i]} breaks the regular {freq} steps from {ts[0]} (expected "
            f"{grid[i]}; {len(off_grid)} timestamps off the grid)",
        )
    try:
        origin = pd.Timestamp(grid_origin).tz_localize(None) if grid_origin else None
    except (ValueError, TypeError):
        origin = None
    phase = _off_phase(ts, off, origin)
    if len(phase):
        i = int(phase[0])
        anchor = f"counted from {origin}" if origin is not None else "at midnight"
        raise BadRequest(
            422,
            f"{where}[{i}]: {ts[i]} is off the model's {freq} grid ({anchor}; "
            f"{len(phase)} timestamps off it): send the observations' own timestamps",
        )
    return future


def _one_step(ts: pd.DatetimeIndex, steps, where: str, horizon: int) -> pd.DatetimeIndex:
    """Timestamps of a model with no frequency: one constant step; returns the `horizon` steps after the last."""
    if not len(steps):
        raise BadRequest(422, f"{where}: cannot tell the step from one timestamp and the model has no frequency")
    irregular = np.flatnonzero(steps != steps[0])
    if len(irregular):
        i = int(irregular[0]) + 1
        raise BadRequest(
            422,
            f"{where}[{i}]: step {steps[i - 1]} breaks the regular step {steps[0]} ({len(irregular)} irregular steps)",
        )
    try:
        return pd.DatetimeIndex([ts[-1] + steps[0] * (k + 1) for k in range(horizon)])
    except (OverflowError, pd.errors.OutOfBoundsDatetime):
        raise BadRequest(
            422, f"{where}: continuing {ts[-1]} {horizon} steps leaves the calendar pandas can represent"
        ) from None
