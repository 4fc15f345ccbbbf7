"""Reading a time column: which date format a column holds (day-first or month-first only when the file is
unambiguous, a given `--time-format`, epoch numbers), parsed strictly, with the first unreadable line and the true
count in the refusal. readers.py calls it for every file format."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, IngestError

_TIME_UNITS = ("s", "ms", "us", "ns")
DAY_FIRST, MONTH_FIRST = "day-first", "month-first"
_SAMPLE = 200  # values whose format is guessed (first ones + evenly spaced ones)
_DECISIVE = 0.1  # a reading covers its grid this much better than the other: the steps decide the order


def _format_order(fmt: str) -> str | None:
    """day-first, month-first, or None when the format cannot be confused (month names, year-first, ISO)."""
    d, m = fmt.find("%d"), fmt.find("%m")
    if d < 0 or m < 0 or fmt.startswith(("%Y", "%y")):
        return None
    return DAY_FIRST if d < m else MONTH_FIRST


# formats pandas cannot guess (two-digit years, 12-hour clocks), tried when it guesses none for some values
_EXTRA_FORMATS = [
    f"{d}{t}"
    for sep in "/.-"
    for d in (f"%d{sep}%m{sep}%y", f"%m{sep}%d{sep}%y", f"%d{sep}%m{sep}%Y", f"%m{sep}%d{sep}%Y")
    for t in ("", " %H:%M", " %H:%M:%S", " %I:%M %p", " %I:%M:%S %p")
]


def _absorbs(fmt: str) -> bool:
    """A year-first format with the day before the month: a year-first value is year-month-day, and such a
    reading (pandas guesses it for day-first) would only absorb a bad month (2024-13-01)."""
    return fmt.startswith(("%Y", "%y")) and 0 <= fmt.find("%d") < fmt.find("%m")


def _usable(formats, order: str | None) -> list[str]:
    return sorted(f for f in formats if _format_order(f) in (order, None) and not _absorbs(f))


def _guesses(values) -> tuple[set[str], list]:
    """Formats that read the values (pandas' guesses in either order, else one of _EXTRA_FORMATS), and the
    values no format reads."""
    from pandas.tseries.api import guess_datetime_format

    formats: set[str] = set()
    unguessable: list = []
    for v in values:
        got = []
        for df in (False, True):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "parsing dates in %d/%m/%Y format when dayfirst=False"
                    got.append(guess_datetime_format(str(v), dayfirst=df))
            except (ValueError, TypeError, OverflowError):
                got.append(None)
        if not any(got):
            unguessable.append(v)
        formats.update(f for f in got if f)
    if unguessable:
        rest = pd.Series(unguessable, dtype="string")
        ok = pd.Series(False, index=rest.index)
        for f in _EXTRA_FORMATS:
            hit = _to_datetime(rest, format=f)[0].notna()
            if hit.any():
                formats.add(f)
                ok |= hit
        unguessable = rest[~ok].tolist()
    return formats, unguessable


def _to_datetime(raw: pd.Series, **kw) -> tuple[pd.Series, str | None]:
    """One strict reading (errors become NaT), tz-aware results converted to naive UTC; and the zone seen."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format", "parsing day-first": we choose ourselves
        try:
            t = pd.to_datetime(raw, errors="coerce", **kw)
        except (ValueError, TypeError, OverflowError):
            try:  # offsets that differ between rows (DST): parse to UTC
                t = pd.to_datetime(raw, errors="coerce", utc=True, **kw)
            except (ValueError, TypeError, OverflowError):
                return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]"), None
    tz = None
    if getattr(t.dt, "tz", None) is not None:
        tz = str(t.dt.tz)
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return _ns(t), tz


def _ns(t: pd.Series) -> pd.Series:
    """As datetime64[ns]; an instant outside its range (before 1677, after 2262) becomes NaT: not a date here."""
    if t.dtype != "datetime64[ns]":
        outside = (t < pd.Timestamp.min) | (t > pd.Timestamp.max)
        if outside.any():
            t = t.mask(outside)
    return t.astype("datetime64[ns]")


def _reading(raw: pd.Series, formats: list[str]) -> tuple[pd.Series, str | None, list]:
    """The column read with `formats`, each value by the first that fits (the most used first)
    -> (timestamps, zone, the formats that read values)."""
    parsed = [(f, *_to_datetime(raw, format=f)) for f in formats]
    parsed.sort(key=lambda x: -int(x[1].notna().sum()))
    t = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    tz: str | None = None
    used: list[str] = []
    for f, cand, z in parsed:
        fill = t.isna() & cand.notna()
        if fill.any():
            t[fill], tz, used = cand[fill], tz or z, used + [f]
    return t, tz, used


def _grid_fit(t: pd.Series) -> float:
    """How well the timestamps make a series, 0..1: the share of the regular grid of their most common step
    they cover, times how straight the file walks through them (span / total path in file order: 1 for a
    file in time order, either way). A wrong day/month order scatters the stamps over months, or keeps
    them but sends the file back and forth between them, and scores near 0."""
    v = t.dropna()
    idx = pd.DatetimeIndex(v.unique()).sort_values()
    if len(idx) < 3:
        return 0.0
    step = pd.Series(idx[1:] - idx[:-1]).mode().iloc[0]
    span = idx[-1] - idx[0]
    cover = min(1.0, len(idx) / (span / step + 1))
    ns = v.to_numpy().astype("datetime64[ns]").astype(np.int64)
    path = float(np.abs(np.diff(ns)).sum())
    return cover * (span.value / path if path else 0.0)


def _parse_time(
    path: Path,
    s: pd.Series,
    col: str,
    where,
    time_format: str | None = None,
    time_unit: str | None = None,
    dayfirst: bool | None = None,
) -> tuple[pd.Series, str | None, dict]:
    """The time column as naive UTC timestamps, the zone it had, and how it was read.

    A date order (day-first or month-first) is only chosen when the file is unambiguous about it: one
    order reads values the other cannot and covers the series' steps, or the steps alone tell (the
    other order scatters them). Otherwise it must be given (`dayfirst`, or `time_format`). Values the
    chosen reading cannot parse are refused, counted and the first one named: a bad value never makes
    the other order reinterpret the good ones."""
    raw = s.astype("string").str.strip() if not pd.api.types.is_datetime64_any_dtype(s) else None
    info: dict[str, Any] = {"order": None, "formats": [], "chosen": "unambiguous"}
    given = None
    if raw is None:
        t, info["formats"] = s, ["datetime"]
    elif time_unit:
        if time_unit not in _TIME_UNITS:
            raise ConfigError(f"--time-unit '{time_unit}': one of {', '.join(_TIME_UNITS)}")
        t = pd.to_datetime(pd.to_numeric(raw, errors="coerce"), unit=time_unit, errors="coerce")
        info.update(formats=[f"unix {time_unit}"], chosen="given")
        given = f" as Unix times in {time_unit}"
    elif time_format:
        t, zone = _to_datetime(raw, format=time_format)
        info.update(formats=[time_format], chosen="given", order=_format_order(time_format), tz=zone)
        given = f" with --time-format {time_format!r}"
    elif raw.notna().any() and pd.to_numeric(raw, errors="coerce").notna().all():
        eg = str(raw.dropna().iloc[0])
        compact = eg.isdigit() and len(eg) == 8 and eg[:2] in ("19", "20")
        hint = "for dates like 20240131 pass --time-format %Y%m%d; " if compact else ""
        raise IngestError.broken(
            "time_parse",
            f"{path}: time column '{col}' holds numbers (e.g. {eg!r}), not dates: "
            f"{hint}for Unix times pass --time-unit s (or ms, us, ns)",
        )
    else:
        t, info = _read_dates(path, raw, col, dayfirst)
    tz = info.pop("tz", None)
    if getattr(t.dt, "tz", None) is not None:
        tz = str(t.dt.tz)
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    t = _ns(t)
    bad = t.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        first = raw.iloc[i] if raw is not None else None
        first = "<empty>" if first is None or pd.isna(first) or first == "" else repr(str(first)[:40])
        how = given if given is not None else _how(info)
        raise IngestError.broken(
            "time_parse",
            f"{path}: time column '{col}': {int(bad.sum())} values are not dates{how} "
            f"(first {first} at {where(i)}): fix or remove those rows, "
            f"{_order_remedy(info)}",
            int(bad.sum()),
        )
    return t, tz, info


def _how(info: dict) -> str:
    fmts = [f for f in info["formats"] if f != "mixed"]
    shown = f" ({', '.join(fmts[:3])})" if fmts else ""
    if info["order"] and info["chosen"] == "given":
        flag = "--dayfirst" if info["order"] == DAY_FIRST else "--monthfirst"
        return f" read {info['order']} as {flag} asks{shown}"
    if info["order"]:
        return f" read {info['order']} like the rest of the column{shown}"
    return f" in the column's format{shown}" if fmts else ""


def _order_remedy(info: dict) -> str:
    if info["order"] == MONTH_FIRST:
        return "or pass --dayfirst if the dates are day-first (or --time-format)"
    if info["order"] == DAY_FIRST:
        return "or pass --monthfirst if the dates are month-first (or --time-format)"
    return "or pass --time-format with the dates' strftime format"


def _read_dates(path: Path, raw: pd.Series, col: str, dayfirst: bool | None) -> tuple[pd.Series, dict]:
    """Date strings read by the formats they are written in (the order chosen as _parse_time says)
    -> (timestamps, {order, formats, chosen, tz})."""
    values = raw.dropna().unique()
    formats, unguessable = _guesses(values[_sample(len(values))])
    # dateutil, value by value, only for a column whose values no format reads (it swaps day and month
    # silently where one of them cannot be a month, so it never gets to read a value a format could)
    fallback = (
        bool(unguessable) and _to_datetime(pd.Series(unguessable, dtype="string"), format="mixed")[0].notna().any()
    )
    if dayfirst is not None:
        order = DAY_FIRST if dayfirst else MONTH_FIRST
        t, tz, used = _read_in_order(raw, formats, fallback, order)
        return t, {"order": order, "formats": used, "chosen": "given", "tz": tz}
    if not fallback and not any(_format_order(f) for f in formats):
        # nothing to confuse: ISO, year-first or month names
        t, tz, used = _read_in_order(raw, formats, fallback, None)
        if not any(_format_order(f) for f in used):
            return t, {"order": None, "formats": used, "chosen": "unambiguous", "tz": tz}
    readings = {o: _read_in_order(raw, formats, fallback, o) for o in (DAY_FIRST, MONTH_FIRST)}
    decided = _decided_order(path, col, raw, readings)
    if decided is None:
        t, tz, used = readings[MONTH_FIRST]
        return t, {"order": None, "formats": used, "chosen": "unambiguous", "tz": tz}
    t, tz, used = readings[decided]
    return t, {"order": decided, "formats": used, "chosen": "detected", "tz": tz}


def _sample(n: int) -> np.ndarray:
    """Positions of the values whose formats are guessed: the first _SAMPLE and _SAMPLE evenly spread."""
    if not n:
        return np.array([], dtype=int)
    return np.unique(np.concatenate([np.arange(min(n, _SAMPLE)), np.linspace(0, n - 1, min(n, _SAMPLE)).astype(int)]))


def _read_in_order(
    raw: pd.Series, formats: set, fallback: bool, order: str | None
) -> tuple[pd.Series, str | None, list]:
    """`raw` read by the guessed formats usable in `order` (then ISO 8601), the values they leave by rarer formats
    guessed among those, and (`fallback`) what no format reads by dateutil -> (timestamps, tz, formats used)."""
    fmts = _usable(formats, order) + ["ISO8601"]
    t, tz, used = _reading(raw, fmts)
    if t.isna().any():
        # rarer formats among the values not read (a time of day left out at midnight, say)
        more, _ = _guesses(raw[t.isna()].dropna().unique()[:_SAMPLE])
        extra = [f for f in _usable(more, order) if f not in fmts]
        t2, tz2, used2 = _reading(raw[t.isna()], extra)
        if fallback:
            t2, tz2, used2 = _by_dateutil(raw, t, (t2, tz2, used2), formats | more, order)
        t2 = t2[t2.notna()]
        if len(t2):
            t = t.copy()
            t[t2.index] = t2
            tz, used = tz or tz2, used + [f for f in used2 if f not in used]
    return t, tz, used


def _by_dateutil(raw: pd.Series, t: pd.Series, got: tuple, formats: set, order: str | None) -> tuple:
    """`got` (the rarer formats' reading) with the values no format reads, in any order, read by dateutil."""
    t2, tz2, used2 = got
    rest = t.isna() & t2.reindex(t.index).isna() & raw.notna()
    # a value some format reads (in any order, swapped year-first ones included) is not dateutil's
    known = pd.Series(False, index=raw.index)
    for f in formats | {f.replace("%d", "%D").replace("%m", "%d").replace("%D", "%m") for f in formats}:
        known[rest] |= _to_datetime(raw[rest], format=f)[0].notna()
    rest &= ~known
    t3, tz3 = _to_datetime(raw[rest], format="mixed", dayfirst=order == DAY_FIRST)
    t2 = pd.concat([t2[t2.notna()], t3[t3.notna()]])
    return t2, tz2 or tz3, used2 + (["mixed"] if t3.notna().any() else [])


def _decided_order(path: Path, col: str, raw: pd.Series, readings: dict) -> str | None:
    """The date order whose reading fits a regular grid better, else the one that reads more values; None when both
    read the same instants (nothing to decide). IngestError when the file does not tell."""
    td, tm = readings[DAY_FIRST][0], readings[MONTH_FIRST][0]
    both = td.notna() & tm.notna()
    if td.notna().equals(tm.notna()) and (td[both] == tm[both]).all():
        return None  # both orders read the same instants (every day equals its month)
    fit = {o: _grid_fit(readings[o][0]) for o in readings}
    count = {o: int(readings[o][0].notna().sum()) for o in readings}
    if abs(fit[DAY_FIRST] - fit[MONTH_FIRST]) > _DECISIVE:
        return max(fit, key=lambda o: fit[o])  # the other order scatters the series
    if count[DAY_FIRST] != count[MONTH_FIRST]:
        return max(count, key=lambda o: count[o])  # the other order cannot read values this one can
    i = int(np.flatnonzero((td != tm).to_numpy() & both.to_numpy())[0])
    raise IngestError.broken(
        "date_order",
        f"{path}: time column '{col}': dates like {raw.iloc[i]!r} read both "
        f"day-first ({td.iloc[i]:%Y-%m-%d}) and month-first ({tm.iloc[i]:%Y-%m-%d}) and the "
        f"file does not tell which: pass --dayfirst or --monthfirst (or --time-format)",
    )
