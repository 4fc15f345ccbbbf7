"""Calendar features: what is known about any timestamp, past or future. The only importer of `holidays`.

Parts (params.yaml `calendar.parts`):
  tod      time of day as sin/cos (sub-daily series only: a daily series has one time of day)
  dow      day of week as sin/cos, continuous over the week (Monday 06:00 lies between Monday and Tuesday)
  doy      day of year as sin/cos (useful where training spans several years)
  holiday  1 on a public holiday of `calendar.country` (and `calendar.subdiv`), else 0; the `holidays` package
           ships its tables, so no network is needed
`parts: auto` (the default) is resolved once, when the windows are built, from the frequency and the span of the
training rows (`resolve_parts`): tod below daily steps, dow for steps up to a day, doy once the training rows span
two years (a yearly cycle seen once cannot be told from a trend), holiday only where `calendar.country` is set (and
steps are at most a day). The resolved list is what the windows, the model and its metadata carry.
Cyclical encodings put the last hour of a cycle beside its first. The same function computes the features for
the training rows and for a forecast's horizon, from the timestamps alone: whoever forecasts (the batch forecast,
the service) computes them, and the model's ONNX metadata says which parts and which country.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError

PARTS = ("tod", "dow", "doy", "holiday")
CALENDAR = "calendar"  # the kind of a future column computed from timestamps
USER = "user"  # ... and of one whose values a user supplies (ingest --future-features)
STATIC = "static"  # ... and of a panel's value constant per series (ingest --static): the model's metadata holds it


def _get(cal: Any, key: str):
    return cal.get(key) if isinstance(cal, dict) else getattr(cal, key, None)


def as_dict(cal: Any) -> dict:
    """A calendar configuration (CalendarConfig or its dict) as the plain dict the metadata carries."""
    if cal is None:
        return {"parts": [], "country": None, "subdiv": None, "timezone": None}
    parts = _get(cal, "parts")
    return {
        "parts": parts if parts == "auto" else list(parts or []),
        "country": _get(cal, "country"),
        "subdiv": _get(cal, "subdiv"),
        "timezone": _get(cal, "timezone"),
    }


def sub_daily(freq: str) -> bool:
    off = pd.tseries.frequencies.to_offset(freq)
    try:
        return pd.Timedelta(off) < pd.Timedelta("1D")
    except (ValueError, TypeError):  # calendar offsets (business days, months): a day or longer
        return False


def up_to_daily(freq: str) -> bool:
    """Steps of at most a day: sub-daily, daily, business or custom business days."""
    off = pd.tseries.frequencies.to_offset(freq)
    if isinstance(off, (pd.offsets.BusinessDay, pd.offsets.CustomBusinessDay)):
        return off.n == 1
    try:
        return pd.Timedelta(off) <= pd.Timedelta("1D")
    except (ValueError, TypeError):  # weeks anchored on a weekday, months, quarters, years
        return False


def yearly_or_longer(freq: str) -> bool:
    off = pd.tseries.frequencies.to_offset(freq)
    return isinstance(off, (pd.offsets.YearBegin, pd.offsets.YearEnd, pd.offsets.BYearBegin, pd.offsets.BYearEnd))


MIN_DOY_SPAN = pd.Timedelta(days=730)  # training rows spanning two years: day of year is learnable, not a trend


def resolve_parts(parts, freq: str, span: pd.Timedelta | None = None, country: str | None = None) -> list[str]:
    """The calendar parts a series gets: an explicit list as it is; 'auto' from the frequency and `span`, the time
    the training rows cover (module docstring). Pure: the same inputs give the same parts."""
    if parts != "auto":
        return list(parts or [])
    out = []
    if sub_daily(freq):
        out.append("tod")
    if up_to_daily(freq):
        out.append("dow")
    if span is not None and pd.Timedelta(span) >= MIN_DOY_SPAN and not yearly_or_longer(freq):
        out.append("doy")
    if country and up_to_daily(freq):
        out.append("holiday")
    return out


def resolved(cal: Any, freq: str, span: pd.Timedelta | None = None) -> dict:
    """as_dict(cal) with its parts resolved (resolve_parts) for a series of frequency `freq` whose training rows
    cover `span`."""
    d = as_dict(cal)
    d["parts"] = resolve_parts(d["parts"], freq, span, d["country"])
    return d


def column_names(freq: str, cal: Any) -> list[str]:
    """The columns `calendar_features` gives for `cal` at frequency `freq`, in order."""
    parts = _get(cal, "parts") or []
    if parts == "auto":
        raise ValueError("calendar parts 'auto' must be resolved for the series first (calendar.resolved)")
    names = []
    if "tod" in parts and sub_daily(freq):
        names += ["tod_sin", "tod_cos"]
    if "dow" in parts:
        names += ["dow_sin", "dow_cos"]
    if "doy" in parts:
        names += ["doy_sin", "doy_cos"]
    if "holiday" in parts:
        names.append("holiday")
    return names


def _local(ts, zone: str | None) -> pd.DatetimeIndex:
    t = pd.DatetimeIndex(pd.to_datetime(ts))
    if zone:
        try:
            t = (t.tz_localize("UTC") if t.tz is None else t).tz_convert(zone).tz_localize(None)
        except Exception as e:  # an unknown zone name
            raise ConfigError(f"calendar.timezone '{zone}': not a time zone ({str(e).splitlines()[0][:80]})") from None
    elif t.tz is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t


def holiday_dates(country: str, subdiv: str | None, years) -> np.ndarray:
    """The public holidays of `country` / `subdiv` in `years`, as datetime64[D]."""
    import holidays  # here: light, but only a calendar with holidays needs it

    try:
        table = holidays.country_holidays(country, subdiv=subdiv, years=sorted({int(y) for y in years}))
    except NotImplementedError as e:
        what = (
            f"calendar.subdiv '{subdiv}'" if subdiv and "subdiv" in str(e).lower() else f"calendar.country '{country}'"
        )
        raise ConfigError(f"{what}: not known to the holidays package ({str(e).splitlines()[0][:120]})") from None
    return np.array(sorted(table.keys()), dtype="datetime64[D]")


def calendar_features(timestamps, freq: str, cal: Any) -> tuple[np.ndarray, list[str]]:
    """(rows, F) float32 calendar features of `timestamps` and their names (column_names)."""
    names = column_names(freq, cal)
    n = len(timestamps)
    if not names:
        return np.zeros((n, 0), np.float32), []
    t = _local(timestamps, _get(cal, "timezone"))
    cols = []
    secs = (t.hour * 3600 + t.minute * 60 + t.second).to_numpy(dtype=np.float64)
    for name in names:
        if name == "tod_sin":
            a = 2 * np.pi * secs / 86400.0
            cols += [np.sin(a), np.cos(a)]
        elif name == "dow_sin":
            a = 2 * np.pi * (t.day_of_week.to_numpy(dtype=np.float64) + secs / 86400.0) / 7.0
            cols += [np.sin(a), np.cos(a)]
        elif name == "doy_sin":
            a = 2 * np.pi * (t.day_of_year.to_numpy(dtype=np.float64) - 1 + secs / 86400.0) / 365.25
            cols += [np.sin(a), np.cos(a)]
        elif name == "holiday":
            days = t.normalize().to_numpy().astype("datetime64[D]")
            years = pd.unique(t.year) if n else []
            cols.append(np.isin(days, holiday_dates(_get(cal, "country"), _get(cal, "subdiv"), years)).astype(float))
    return np.stack(cols, axis=1).astype(np.float32), names
