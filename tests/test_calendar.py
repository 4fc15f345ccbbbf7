"""Calendar features: cyclical encodings, public holidays of the configured country, one-line refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellcast.pipeline.config import CalendarConfig, Params
from cellcast.pipeline.data.calendar import calendar_features, column_names, resolve_parts, resolved
from cellcast.pipeline.errors import ConfigError


def _at(values, names, stamps, when, column):
    return float(values[list(stamps).index(pd.Timestamp(when)), names.index(column)])


def test_holidays_are_present_for_the_configured_country_and_subdivision():
    days = pd.date_range("2014-10-01", "2015-01-10", freq="D")
    vic, names = calendar_features(days, "D", {"parts": ["holiday"], "country": "AU", "subdiv": "VIC"})
    assert names == ["holiday"]
    for day in ("2014-11-04", "2014-12-25", "2014-12-26", "2015-01-01"):  # Melbourne Cup is Victoria's own
        assert _at(vic, names, days, day, "holiday") == 1.0, day
    assert _at(vic, names, days, "2014-11-05", "holiday") == 0.0
    nsw, _ = calendar_features(days, "D", {"parts": ["holiday"], "country": "AU", "subdiv": "NSW"})
    assert _at(nsw, names, days, "2014-11-04", "holiday") == 0.0  # not a holiday in New South Wales
    assert _at(nsw, names, days, "2014-10-06", "holiday") == 1.0  # Labour Day, New South Wales only
    assert _at(vic, names, days, "2014-10-06", "holiday") == 0.0
    assert int(vic.sum()) == 4 and int(nsw.sum()) == 4

    us, _ = calendar_features(
        pd.date_range("2015-11-20", periods=10, freq="D"),
        "D",
        CalendarConfig(parts=["holiday"], country="US", subdiv="IL"),
    )
    assert us[:, 0].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]  # Thanksgiving, 26 November 2015


def test_cyclical_encodings_and_the_parts_each_frequency_gets():
    stamps = pd.date_range("2024-01-01 00:00", periods=96, freq="30min")  # a Monday
    f, names = calendar_features(stamps, "30min", {"parts": ["tod", "dow", "doy"]})
    assert names == ["tod_sin", "tod_cos", "dow_sin", "dow_cos", "doy_sin", "doy_cos"] and f.dtype == np.float32
    assert _at(f, names, stamps, "2024-01-01 06:00", "tod_sin") == pytest.approx(1.0)
    assert _at(f, names, stamps, "2024-01-01 12:00", "tod_cos") == pytest.approx(-1.0)
    # day of week is continuous: Monday 12:00 lies half a day into the week
    assert _at(f, names, stamps, "2024-01-01 12:00", "dow_sin") == pytest.approx(np.sin(2 * np.pi * 0.5 / 7), abs=1e-6)
    assert np.allclose(np.hypot(f[:, 0], f[:, 1]), 1, atol=1e-6)  # every point on the circle
    # a daily series has one time of day: no tod columns
    assert column_names("D", {"parts": ["tod", "dow"]}) == ["dow_sin", "dow_cos"]
    assert calendar_features(stamps, "30min", {"parts": []})[0].shape == (96, 0)


def test_the_calendar_is_read_in_its_time_zone():
    # 14:00 UTC on Christmas Eve is 01:00 on Christmas Day in Melbourne (UTC+11)
    stamps = pd.DatetimeIndex(["2014-12-24 12:00", "2014-12-24 14:00"])
    utc, _ = calendar_features(stamps, "h", {"parts": ["holiday"], "country": "AU", "subdiv": "VIC"})
    mel, _ = calendar_features(
        stamps, "h", {"parts": ["holiday"], "country": "AU", "subdiv": "VIC", "timezone": "Australia/Melbourne"}
    )
    assert utc[:, 0].tolist() == [0, 0] and mel[:, 0].tolist() == [0, 1]


@pytest.mark.parametrize(
    "cal,needle",
    [
        ({"parts": ["holiday"], "country": "XX"}, "calendar.country 'XX': not known to the holidays package"),
        ({"parts": ["holiday"], "country": "AU", "subdiv": "ZZ"}, "calendar.subdiv 'ZZ': not known"),
        ({"parts": ["tod"], "timezone": "Mars/Olympus"}, "calendar.timezone 'Mars/Olympus': not a time zone"),
    ],
)
def test_an_unknown_country_subdivision_or_zone_is_one_line(cal, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        calendar_features(pd.date_range("2020-01-01", periods=3, freq="h"), "h", cal)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "cal,needle",
    [
        ({"parts": ["holiday"]}, "datasets.x.calendar: parts: 'holiday' needs a country"),
        ({"parts": ["dow", "dow"]}, "'dow' is listed more than once"),
        ({"parts": ["week"]}, "calendar.parts.0"),
        ({"subdiv": "VIC"}, "needs a country"),
    ],
)
def test_calendar_settings_that_cannot_work_are_refused(cal, needle):
    with pytest.raises(ConfigError, match=needle):
        Params(datasets={"x": {"calendar": cal}})


YEAR, TWO_YEARS = pd.Timedelta(days=365), pd.Timedelta(days=730)


@pytest.mark.parametrize(
    "freq,span,country,parts",
    [
        ("30min", YEAR, None, ["tod", "dow"]),  # below daily: time of day; up to daily: day of week
        ("5min", pd.Timedelta(days=60), None, ["tod", "dow"]),
        ("h", TWO_YEARS, None, ["tod", "dow", "doy"]),  # two years of training rows: day of year
        ("h", TWO_YEARS - pd.Timedelta(hours=1), None, ["tod", "dow"]),
        ("h", YEAR, "AU", ["tod", "dow", "holiday"]),  # holidays only where a country is known
        ("D", 10 * YEAR, "US", ["dow", "doy", "holiday"]),
        ("D", YEAR, None, ["dow"]),
        ("B", 10 * YEAR, None, ["dow", "doy"]),  # business days: a week of five
        ("W-SUN", 10 * YEAR, "US", ["doy"]),  # weeks: no day of week, no holiday flag
        ("MS", 10 * YEAR, "US", ["doy"]),
        ("YS", 50 * YEAR, "US", []),  # a yearly series: every row is the same day of year
        ("D", None, None, ["dow"]),  # span unknown: no day of year
    ],
)
def test_auto_parts_follow_the_frequency_the_training_span_and_the_country(freq, span, country, parts):
    assert resolve_parts("auto", freq, span, country) == parts


def test_explicit_parts_are_kept_and_auto_is_resolved_before_any_feature_is_computed():
    assert resolve_parts(["doy"], "30min", pd.Timedelta(days=3), None) == ["doy"]
    assert resolve_parts([], "h", TWO_YEARS, "US") == []
    cal = resolved(CalendarConfig(country="AU", subdiv="VIC"), "30min", YEAR)
    assert cal == {"parts": ["tod", "dow", "holiday"], "country": "AU", "subdiv": "VIC", "timezone": None}
    assert CalendarConfig().parts == "auto"
    with pytest.raises(ValueError, match="must be resolved"):
        column_names("h", {"parts": "auto"})
