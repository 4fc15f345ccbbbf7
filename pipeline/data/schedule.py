"""Schedules: the steps a series is observed at, when it keeps opening hours (a car park read 08:00-16:30, a call
centre on weekdays, a market's trading days). A schedule is a weekly mask over the grid of the frequency: for each
weekday, which times of day (grid slots) are open. A series on a schedule lives on its open steps only: the grid
is those steps, a closed night is neither a gap nor a break, windows and seasons count open steps, and forecasts
are stamped with the next open steps. A series that keeps none (24/7) has no schedule (None) and is unchanged.

Detection (ingest, `ingest.schedule: auto`): a weekday is open when readings occur on it on at least _DAY_SHARE as
many days as on the busiest weekday; a slot of an open weekday is open when readings occur there on at least
_OPEN_SHARE of that weekday's days with readings (a day with no reading at all, an outage, does not count against
its hours; a panel counts each series' days). With fewer than _MIN_WEEKS of some open weekday, the hours are told
from all open days together (the same every open day). Readings at closed slots are counted and reported as off
the schedule (then left out of the grid), never a reason to refuse. Too few days to tell (_MIN_DAYS) or every slot
open: no schedule.
Applies to steps that divide a day (hours per weekday) and to daily steps (days per week: trading days).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ConfigError

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_OPEN_SHARE = 0.5  # a slot is open when read on at least this share of its weekday's days with readings
_DAY_SHARE = 0.5  # a weekday is open when it has at least this share of the busiest weekday's days with readings
_MIN_DAYS = 14  # dates with readings needed before a schedule is told from chance gaps (two of each weekday)
_MIN_WEEKS = 4  # dates of each open weekday needed to tell its own hours (fewer: the same hours every open day)
_HHMM = re.compile(r"^(\d{1,2}):(\d\d)$")


def slots_per_day(freq: str) -> int | None:
    """Grid slots per day: 24 for hourly, 1 for daily; None for steps a schedule does not apply to (a step that
    does not divide the day, business days, weeks, months)."""
    off = pd.tseries.frequencies.to_offset(freq)
    if isinstance(off, pd.offsets.Day) and off.n == 1:
        return 1
    if not isinstance(off, pd.offsets.Tick):
        return None
    step, day = pd.Timedelta(off), pd.Timedelta(days=1)
    if step > day or day % step != pd.Timedelta(0):
        return None
    return int(day // step)


def _hhmm(t: pd.Timedelta) -> str:
    s = int(t.total_seconds())
    return f"{s // 3600 % 24:02d}:{s // 60 % 60:02d}"


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _day_list(days: list[int]) -> str:
    """[0, 1, 2, 3, 4] -> 'Mon-Fri'; [0, 2] -> 'Mon, Wed'."""
    mask = np.zeros(7, bool)
    mask[days] = True
    return ", ".join(DAYS[a] if b - a == 1 else f"{DAYS[a]}-{DAYS[b - 1]}" for a, b in _runs(mask))


@dataclass(frozen=True, eq=False)
class Schedule:
    freq: str
    mask: np.ndarray  # (7, slots per day) bool: open (weekday, slot)
    phase: pd.Timedelta = pd.Timedelta(0)  # the grid's offset from midnight (readings at :15 past on a 30min grid)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Schedule)
            and self.freq == other.freq
            and self.phase == other.phase
            and np.array_equal(self.mask, other.mask)
        )

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(days=1) / self.mask.shape[1]

    @property
    def daily(self) -> bool:
        return self.mask.shape[1] == 1

    @property
    def week_steps(self) -> int:
        return int(self.mask.sum())

    def day_steps(self) -> int:
        """Open steps of a day: the most common count among the open days (the longer on a tie)."""
        counts = [int(c) for c in self.mask.sum(axis=1) if c]
        return max(set(counts), key=lambda c: (counts.count(c), c))

    def seasons(self) -> list[int]:
        """Natural seasons in open steps: a day (the usual open day's steps; a shorter Saturday shifts the day
        season there) and a week."""
        day = None if self.daily else self.day_steps()
        return [m for m in (day, self.week_steps) if m and m > 1]

    # --- timestamps -------------------------------------------------------------------------------------
    def _slot(self, ts: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weekday, slot, on the grid's phase) of each timestamp."""
        rel = (ts - ts.normalize()) - self.phase
        k = rel // self.step
        on_phase = np.asarray(rel - k * self.step == pd.Timedelta(0))
        k = np.asarray(k)
        day = np.asarray(ts.day_of_week) + np.floor_divide(k, self.mask.shape[1])  # a negative phase: the day before
        return np.mod(day, 7).astype(int), np.mod(k, self.mask.shape[1]).astype(int), on_phase

    def is_open(self, ts) -> np.ndarray:
        """True where a timestamp is an open step (on the grid's phase, at an open slot of its weekday)."""
        idx = pd.DatetimeIndex(ts)
        if not len(idx):
            return np.zeros(0, bool)
        d, s, on = self._slot(idx)
        return on & self.mask[d, s]

    def snap(self, ts) -> pd.DatetimeIndex:
        """Timestamps moved to the nearest point of the full grid (clock drift)."""
        idx = pd.DatetimeIndex(ts)
        base = idx.normalize() + self.phase
        return base + ((idx - base) / self.step).round().astype(np.int64) * self.step

    def grid(self, first, last) -> pd.DatetimeIndex:
        """The open steps from `first` to `last` (both on the grid), in order."""
        full = pd.date_range(first, last, freq=self.step, unit="ns")
        return full[self.is_open(full)]

    def next_steps(self, last, n: int) -> pd.DatetimeIndex:
        """The `n` open steps after `last`."""
        if n <= 0:
            return pd.DatetimeIndex([])
        per_week = self.week_steps
        periods = (n // per_week + 2) * 7 * self.mask.shape[1] + 1
        full = pd.date_range(pd.Timestamp(last), periods=periods, freq=self.step, unit="ns")[1:]
        return full[self.is_open(full)][:n]

    def first_closed(self, ts) -> int | None:
        """The position of the first timestamp that is not an open step, or None."""
        bad = np.flatnonzero(~self.is_open(ts))
        return int(bad[0]) if len(bad) else None

    # --- words and JSON ---------------------------------------------------------------------------------
    def hours(self) -> dict[str, list[str]]:
        """Open hours per open weekday, e.g. {'Mon': ['08:00-16:30']}: first to last open step, both included."""
        if self.daily:
            return {DAYS[d]: [] for d in range(7) if self.mask[d, 0]}
        out = {}
        for d in range(7):
            if self.mask[d].any():
                out[DAYS[d]] = [
                    f"{_hhmm(self.phase + a * self.step)}-{_hhmm(self.phase + (b - 1) * self.step)}"
                    for a, b in _runs(self.mask[d])
                ]
        return out

    def describe(self) -> str:
        """'08:00-16:30, 18 steps a day, 7 days a week' (or per group of weekdays when they differ)."""
        open_days = [d for d in range(7) if self.mask[d].any()]
        if self.daily:
            return f"{_day_list(open_days)}, {len(open_days)} days a week"
        groups: dict[tuple[str, ...], list[int]] = {}
        hours = self.hours()
        for d in open_days:
            groups.setdefault(tuple(hours[DAYS[d]]), []).append(d)
        if len(groups) == 1:
            ((h, days),) = groups.items()
            when = "" if len(days) == 7 else f"{_day_list(days)} "
            return f"{when}{', '.join(h)}, {self.day_steps()} steps a day, {len(days)} days a week"
        parts = [f"{_day_list(days)} {', '.join(h)}" for h, days in groups.items()]
        return f"{'; '.join(parts)}; {self.week_steps} steps a week"

    def to_dict(self) -> dict:
        return {
            "freq": self.freq,
            "phase": _hhmm(self.phase) if self.phase else "00:00",
            "hours": self.hours(),
            "steps_a_week": self.week_steps,
            "summary": self.describe(),
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> Schedule | None:
        if not d:
            return None
        n = slots_per_day(d["freq"])
        if n is None:
            raise ConfigError(f"schedule: frequency '{d['freq']}' does not divide a day")
        phase = _parse_hhmm(d.get("phase") or "00:00", "schedule.phase")
        step = pd.Timedelta(days=1) / n
        mask = np.zeros((7, n), bool)
        for day, ranges in (d.get("hours") or {}).items():
            i = _day_index(day)
            if n == 1:
                mask[i, 0] = True
                continue
            for r in ranges:
                a, b = (_parse_hhmm(x, "schedule.hours") for x in r.split("-"))
                mask[i, _slots_between(a, b, step, phase, n)] = True
        return cls(d["freq"], mask, phase)


def as_schedule(d: dict | None) -> Schedule | None:
    """A schedule from its JSON form (raw.json, the model's metadata); None for none."""
    return Schedule.from_dict(d)


def _parse_hhmm(s: str, where: str) -> pd.Timedelta:
    m = _HHMM.match(str(s).strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ConfigError(f"{where}: '{s}' is not a time of day HH:MM")
    return pd.Timedelta(hours=int(m.group(1)), minutes=int(m.group(2)))


def _day_index(day: str) -> int:
    key = str(day).strip()[:3].title()
    if key not in DAYS:
        raise ConfigError(f"schedule: '{day}' is not a weekday ({', '.join(DAYS)})")
    return DAYS.index(key)


def _slots_between(a: pd.Timedelta, b: pd.Timedelta, step: pd.Timedelta, phase: pd.Timedelta, n: int) -> list[int]:
    """Slots from time a to time b, both included (b before a: across midnight)."""
    first, last = (a - phase) / step, (b - phase) / step
    if not (float(first).is_integer() and float(last).is_integer()):
        raise ConfigError(f"schedule: {_hhmm(a)}-{_hhmm(b)} does not lie on the {_hhmm(step)} grid")
    first, last = int(first) % n, int(last) % n
    return list(range(first, last + 1)) if first <= last else list(range(first, n)) + list(range(0, last + 1))


def _days(spec: str | list | None) -> list[int]:
    """'Mon-Fri', 'Mon,Wed', ['Mon', 'Tue'], None (every day) -> weekday numbers."""
    if spec is None:
        return list(range(7))
    items = spec if isinstance(spec, list) else str(spec).split(",")
    out: list[int] = []
    for item in items:
        item = str(item).strip()
        if "-" in item:
            a, b = (_day_index(x) for x in item.split("-"))
            out += list(range(a, b + 1)) if a <= b else list(range(a, 7)) + list(range(0, b + 1))
        elif item:
            out.append(_day_index(item))
    return sorted(set(out))


def declared(spec, freq: str, where: str = "ingest.schedule") -> Schedule | None | str:
    """A declared schedule: 'auto' (returned as is: detect it), 'none' (None: 24/7), a mapping {days, open, close}
    (close: the last open step, included) or the same as words: 'Mon-Fri 08:00-16:30', '08:00-16:30', 'Mon-Fri'
    (whole days: trading days of a daily series). ConfigError naming `where` for anything else."""
    if spec is None or spec == "auto":
        return "auto"
    if spec == "none":
        return None
    n = slots_per_day(freq)
    if n is None:
        raise ConfigError(f"{where}: a schedule needs a step that divides a day or a daily step; the grid is {freq}")
    if isinstance(spec, str):
        words = spec.split()
        times = [w for w in words if "-" in w and ":" in w]
        day_words = [w for w in words if w not in times]
        if len(times) > 1 or (not times and not day_words):
            raise ConfigError(f"{where}: '{spec}' is not 'auto', 'none' or like 'Mon-Fri 08:00-16:30'")
        spec = {"days": ",".join(day_words) or None}
        if times:
            spec["open"], spec["close"] = times[0].split("-", 1)
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected auto, none or {{days, open, close}}, got {spec!r}")
    try:
        days = _days(spec.get("days"))
    except ConfigError as e:
        raise ConfigError(f"{where}: {str(e).removeprefix('schedule: ')}") from None
    mask = np.zeros((7, n), bool)
    step = pd.Timedelta(days=1) / n
    phase = pd.Timedelta(0)
    if n == 1 or spec.get("open") is None:
        if spec.get("open") is not None or spec.get("close") is not None:
            raise ConfigError(f"{where}: hours need a grid finer than a day; the grid is {freq}")
        mask[days, :] = True
    else:
        a = _parse_hhmm(spec["open"], f"{where}.open")
        b = _parse_hhmm(spec.get("close") or "23:59", f"{where}.close")
        phase = a - (a // step) * step
        try:
            slots = _slots_between(a, b, step, phase, n)
        except ConfigError as e:
            raise ConfigError(f"{where}: {str(e).removeprefix('schedule: ')}") from None
        for d in days:
            mask[d, slots] = True
    if not mask.any():
        raise ConfigError(f"{where}: no open step")
    return None if mask.all() else Schedule(to_alias(freq), mask, phase)


def to_alias(freq: str) -> str:
    return pd.tseries.frequencies.to_offset(freq).freqstr


def detect(ts, freq: str, series=None) -> Schedule | None:
    """The schedule the timestamps keep (module docstring), None when they keep none or cannot tell.
    `series`: each timestamp's series (a panel): a day with readings is counted per series."""
    n = slots_per_day(freq)
    idx = pd.DatetimeIndex(ts)
    if n is None or not len(idx):
        return None
    step = pd.Timedelta(days=1) / n
    rel = idx - idx.normalize()
    # the grid's phase (readings at :15 past on a 30min grid): the circular mean of the offsets from a whole step
    # (to the minute, or the second for steps under 5 minutes): readings a few minutes either side do not move it
    phase = pd.Timedelta(0)
    if n > 1:
        angle = 2 * np.pi * np.asarray((rel % step).total_seconds()) / step.total_seconds()
        mean = np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()) % (2 * np.pi)
        unit = 60 if step >= pd.Timedelta(minutes=5) else 1  # to the minute where readings are minutes apart
        phase = pd.Timedelta(int(round(mean / (2 * np.pi) * step.total_seconds() / unit)) * unit, unit="s") % step
    probe = Schedule(to_alias(freq), np.ones((7, n), bool), phase)
    snapped = probe.snap(idx)
    day, slot, _ = probe._slot(snapped)
    date = np.asarray(snapped.normalize().asi8 if n > 1 else idx.normalize().asi8)
    key = pd.DataFrame({"s": 0 if series is None else np.asarray(series), "date": date, "day": day, "slot": slot})
    dates = key.drop_duplicates("date")
    if len(dates) < _MIN_DAYS:
        return None
    days = key.drop_duplicates(["s", "date"])  # a day with readings, per series
    active = np.bincount(days["day"].to_numpy(), minlength=7)
    open_day = active >= _DAY_SHARE * active.max()
    cells = key.drop_duplicates(["s", "date", "slot"])
    counts = np.zeros((7, n), np.int64)
    np.add.at(counts, (cells["day"].to_numpy(), cells["slot"].to_numpy()), 1)
    weeks = np.bincount(dates["day"].to_numpy(), minlength=7)
    if weeks[open_day].min() >= _MIN_WEEKS:  # enough of each weekday to tell its own hours
        mask = (counts >= _OPEN_SHARE * np.maximum(active, 1)[:, None]) & open_day[:, None]
    else:  # the same hours every open day, from all of them
        hours = counts[open_day].sum(axis=0) >= _OPEN_SHARE * active[open_day].sum()
        mask = open_day[:, None] & hours[None, :]
    if mask.all() or not mask.any():
        return None
    return Schedule(to_alias(freq), mask, phase)


def off_schedule(ts, schedule: Schedule | None, series=None) -> dict:
    """Readings that fall on closed steps: {count, first} (none: count 0); with `series` (each reading's series, a
    panel), also {series: {id: count}} for the series that have any, most first: a series that keeps other hours."""
    if schedule is None or not len(ts):
        return {"count": 0, "first": None}
    idx = pd.DatetimeIndex(ts)
    closed = ~schedule.is_open(schedule.snap(idx))
    i = np.flatnonzero(closed)
    out: dict = {"count": int(len(i)), "first": str(idx[i[0]]) if len(i) else None}
    if series is not None and len(i):
        per = pd.Series(np.asarray(series)[closed]).value_counts()
        out["series"] = {str(k): int(v) for k, v in per.items()}
    return out
