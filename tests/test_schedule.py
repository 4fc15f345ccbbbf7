"""Series that keep opening hours (pipeline/data/schedule.py): detected or declared at ingest, the grid of open steps
at validation, windows and seasons in open steps, forecasts and the service at open steps only. Quick tests; the
whole path through the CLI on a real panel is tests/test_schedule_cli.py."""

import json

import numpy as np
import pandas as pd
import pytest

from cellcast.pipeline.catalog import read_raw_meta
from cellcast.pipeline.data import schedule as S
from cellcast.pipeline.data.frequency import future_timestamps, seasons_for
from cellcast.pipeline.data.ingest import ingest_file
from cellcast.pipeline.data.splits import resolve_window
from cellcast.pipeline.data.validation import validate_dataset
from cellcast.pipeline.data.window import window_dataset
from cellcast.pipeline.errors import ConfigError
from cellcast.pipeline.serving.problems import BadRequest
from cellcast.pipeline.serving.timestamps import check_timestamps


def hours(start="2024-01-01", days=42, freq="30min", first="08:00", last="16:30", weekdays=range(7)):
    """The open steps of `days` days: `first`..`last` (both included) on `weekdays`."""
    ts = pd.date_range(start, periods=days * 48 * 2, freq=freq)
    ts = ts[ts < pd.Timestamp(start) + pd.Timedelta(days=days)]
    tod = ts - ts.normalize()
    keep = (tod >= pd.Timedelta(first + ":00")) & (tod <= pd.Timedelta(last + ":00")) & ts.day_of_week.isin(weekdays)
    return ts[keep]


def test_a_series_read_around_the_clock_keeps_no_schedule():
    ts = pd.date_range("2024-01-01", periods=24 * 40, freq="h")
    assert S.detect(ts, "h") is None
    # an outage of whole days and a missing hour here and there: still around the clock
    holes = ts[(ts.day != 10) & (ts.day != 11) & ~((ts.hour == 3) & (ts.day % 5 == 0))]
    assert S.detect(holes, "h") is None
    assert S.detect(ts[: 24 * 10], "h") is None  # ten days: too few to tell a schedule from chance gaps


def test_business_hours_are_detected_per_weekday_and_stated_in_words():
    s = S.detect(hours(), "30min")
    assert s.describe() == "08:00-16:30, 18 steps a day, 7 days a week"
    assert s.seasons() == [18, 126] and s.to_dict()["hours"]["Sun"] == ["08:00-16:30"]
    weekdays = S.detect(hours(weekdays=range(5)), "30min")
    assert weekdays.describe() == "Mon-Fri 08:00-16:30, 18 steps a day, 5 days a week" and weekdays.seasons() == [
        18,
        90,
    ]
    # a shorter Saturday: its own hours, and the week counts them
    ts = hours(weekdays=range(5)).append(hours(first="09:00", last="12:00", weekdays=[5])).sort_values()
    sat = S.detect(ts, "30min")
    assert sat.describe() == "Mon-Fri 08:00-16:30; Sat 09:00-12:00; 97 steps a week" and sat.seasons() == [18, 97]
    # the JSON form (raw.json, the model's metadata) reads back as the same schedule
    assert S.as_schedule(json.loads(json.dumps(sat.to_dict()))) == sat


def test_readings_at_irregular_minutes_and_a_grid_off_the_hour_keep_their_phase():
    ts = hours(start="2024-01-01 00:15", first="07:15", last="17:15", freq="h")
    jitter = pd.to_timedelta(np.random.default_rng(0).integers(-4, 5, len(ts)), unit="min")
    s = S.detect(ts + jitter, "h")
    assert s.hours()["Mon"] == ["07:15-17:15"] and s.day_steps() == 11
    assert list(s.next_steps(pd.Timestamp("2024-01-05 16:15"), 3).strftime("%d %H:%M")) == [
        "05 17:15",
        "06 07:15",
        "06 08:15",
    ]


def test_trading_days_of_a_daily_series_are_a_schedule_and_business_days_need_none():
    days = pd.date_range("2024-01-01", "2024-06-30", freq="D")
    trading = days[days.day_of_week < 5]
    s = S.detect(trading, "D")
    assert s.describe() == "Mon-Fri, 5 days a week" and s.seasons() == [5]
    assert list(s.next_steps(pd.Timestamp("2024-06-28"), 2).strftime("%a %d")) == ["Mon 01", "Tue 02"]
    assert S.detect(trading, "B") is None  # the business-day grid is that schedule already
    assert S.detect(days, "D") is None


def test_stray_readings_off_the_schedule_are_counted_not_a_reason_to_fail():
    ts = hours(weekdays=range(5))
    strays = pd.DatetimeIndex(["2024-01-03 19:00", "2024-01-06 10:00", "2024-01-13 11:30"])  # a night, two Saturdays
    s = S.detect(ts.append(strays).sort_values(), "30min")
    assert s.describe() == "Mon-Fri 08:00-16:30, 18 steps a day, 5 days a week"
    assert S.off_schedule(ts.append(strays), s) == {"count": 3, "first": "2024-01-03 19:00:00"}


def test_a_declared_schedule_in_params_or_words_and_its_refusals():
    words = S.declared("Mon-Fri 08:00-16:30", "30min")
    mapping = S.declared({"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "open": "08:00", "close": "16:30"}, "30min")
    assert words == mapping == S.detect(hours(weekdays=range(5)), "30min")
    assert S.declared("none", "30min") is None and S.declared("auto", "30min") == "auto"
    assert S.declared("Mon-Fri", "D").describe() == "Mon-Fri, 5 days a week"
    assert S.declared("00:00-23:30", "30min") is None  # every step: no schedule
    with pytest.raises(ConfigError, match=r"ingest.schedule: 'Funday' is not a weekday"):
        S.declared("Funday 08:00-16:30", "30min")
    with pytest.raises(ConfigError, match=r"ingest.schedule.close: '25:00' is not a time of day HH:MM"):
        S.declared("08:00-25:00", "30min")
    with pytest.raises(ConfigError, match=r"08:00-16:45 does not lie on the 00:30 grid"):
        S.declared("08:00-16:45", "30min")
    with pytest.raises(ConfigError, match=r"needs a step that divides a day .* the grid is MS"):
        S.declared("Mon-Fri", "MS")


def test_open_steps_count_seasons_and_the_next_steps_skip_the_nights():
    s = S.declared("Mon-Fri 08:00-16:30", "30min")
    assert seasons_for("30min", None, s) == [18, 90] and seasons_for("30min") == [48, 336]
    assert seasons_for("30min", 100, s.to_dict()) == [18]  # a week needs three of them in the rows
    stamps = future_timestamps(pd.Timestamp("2024-01-05 16:00"), "30min", 3, s.to_dict())  # a Friday
    assert list(stamps.strftime("%a %H:%M")) == ["Fri 16:30", "Mon 08:00", "Mon 08:30"]
    assert (s.grid("2024-01-01 08:00", "2024-01-07 23:30").size, s.grid("2024-01-01", "2024-01-02").size) == (90, 18)


def car_park(project, strays: bool = False) -> pd.DataFrame:
    """Five weeks of a car park read 08:00-16:30 a few minutes after each half hour (a daily cycle and a weekly
    one), with a two-day outage in open hours and, optionally, readings off the schedule."""
    ts = hours(days=35)
    rng = np.random.default_rng(1)
    tod = (ts.hour * 60 + ts.minute - 480) / 510
    y = 50 + 40 * np.sin(np.pi * tod) * (1 - 0.3 * (ts.day_of_week >= 5)) + rng.normal(0, 2, len(ts))
    df = pd.DataFrame({"t": ts + pd.to_timedelta(rng.integers(0, 9, len(ts)), unit="min"), "occ": y})
    df = df[~df["t"].dt.strftime("%m-%d").isin(["01-17", "01-18"])]
    if strays:
        df = pd.concat([df, pd.DataFrame({"t": pd.to_datetime(["2024-01-09 21:10", "2024-01-23 02:00"]), "occ": 5.0})])
    df.to_csv(project / "park.csv", index=False)
    return df


def ingest_park(project, settings, **kw):
    """park.csv (car_park) onto its 30-minute grid, the readings of each half hour averaged."""
    return ingest_file(
        project / "park.csv",
        time_col="t",
        targets=["occ"],
        freq="30min",
        agg="mean",
        settings=settings,
        **kw,
    )


def test_a_car_park_is_ingested_on_its_hours_and_validated_without_nightly_breaks(project, settings_for):
    car_park(project, strays=True)
    s = settings_for("park", ingest={"long_gaps": "segment"}, window={"lookback": 40, "horizon": 18})
    res = ingest_park(project, s)
    m = res.meta
    assert m.schedule_source == "detected" and m.schedule["summary"] == "08:00-16:30, 18 steps a day, 7 days a week"
    assert m.off_schedule == {"count": 2, "first": "2024-01-09 21:00:00"}
    assert m.schedule_line().startswith("observed 08:00-16:30, 18 steps a day, 7 days a week (2 readings off it")
    # the outage is the only gap: two days of open steps, not nights
    assert m.gaps["count"] == 1 and m.gaps["longest_steps"] == 36
    rep = validate_dataset(s)
    assert rep.snapped["off_schedule"] == 2
    assert [b["steps"] for b in rep.breaks] == [36]  # the outage; no night is a break
    frame = rep.frame
    assert len(frame) == 35 * 18 and set(frame["timestamp"].dt.strftime("%H:%M")) == {
        f"{h:02d}:{m:02d}" for h in range(8, 17) for m in (0, 30) if (h, m) <= (16, 30)
    }
    ws = window_dataset(s)
    # windows cross the nights: a lookback of 40 open steps spans two and a bit days
    first = pd.Timestamp(ws.timestamps[ws.starts["train"][0]])
    origin = pd.Timestamp(ws.timestamps[ws.starts["train"][0] + 39])
    assert origin - first > pd.Timedelta(days=2) and ws.meta.schedule == m.schedule
    assert ws.meta.seasons == [18, 126]


def test_auto_windows_count_open_steps_and_a_declared_none_keeps_the_old_grid(project, settings_for):
    car_park(project)
    s = settings_for("park")
    ingest_park(project, s)
    meta = read_raw_meta(s)
    lookback, horizon = resolve_window(s, meta["freq"], 11 * 7 * 18, meta["schedule"])  # 11 weeks
    assert horizon == 18 and lookback == 18 + s.train.rnn_steps  # a day of open steps, not 48 half hours
    week = resolve_window(s, meta["freq"], 20 * 7 * 18, meta["schedule"])[0]  # 20 weeks: a week fits ten times
    assert week == 126 + s.train.rnn_steps
    res = ingest_park(project, settings_for("park24"), schedule="none")
    assert res.meta.schedule is None and res.meta.gaps["longest_steps"] > 31  # every night is a gap again
    declared = ingest_park(project, settings_for("parkwd"), schedule="Mon-Fri 08:00-16:30")
    assert declared.meta.schedule_source == "declared" and declared.meta.off_schedule["count"] == 10 * 18  # weekends
    assert declared.meta.extra["schedule"] == "Mon-Fri 08:00-16:30"


def test_the_service_refuses_timestamps_off_the_schedule_naming_the_first():
    sched = S.declared("Mon-Fri 08:00-16:30", "30min").to_dict()
    ok = ["2024-01-05T16:00:00", "2024-01-05T16:30:00", "2024-01-08T08:00:00"]  # Friday afternoon, Monday
    assert check_timestamps(ok, "timestamps", 3, 2, "30min", "2024-01-01T08:00:00", sched) == [
        "2024-01-08T08:30:00",
        "2024-01-08T09:00:00",
    ]
    night = ["2024-01-05T16:30:00", "2024-01-05T17:00:00", "2024-01-05T17:30:00"]
    with pytest.raises(BadRequest, match=r"timestamps\[1\]: 2024-01-05 17:00:00 is outside the model's schedule"):
        check_timestamps(night, "timestamps", 3, 2, "30min", None, sched)
    skipped = ["2024-01-05T16:00:00", "2024-01-08T08:00:00", "2024-01-08T08:30:00"]
    with pytest.raises(
        BadRequest, match=r"timestamps\[1\]: 2024-01-08 08:00:00 does not follow .* expected 2024-01-05"
    ):
        check_timestamps(skipped, "timestamps", 3, 2, "30min", None, sched)
    # a model without a schedule answers as before: the night is just more steps
    assert check_timestamps(night, "t", 3, 1, "30min", None)[0] == "2024-01-05T18:00:00"


def test_a_daily_series_of_trading_days_counts_trading_days_whether_declared_daily_or_business_daily(
    project, settings_for
):
    days = pd.date_range("2023-01-02", "2024-06-28", freq="D")
    trading = days[(days.day_of_week < 5) & ~days.isin(pd.to_datetime(["2023-12-25", "2024-01-01"]))]
    rng = np.random.default_rng(2)
    pd.DataFrame({"day": trading.strftime("%Y-%m-%d"), "close": 100 + rng.normal(0, 1, len(trading)).cumsum()}).to_csv(
        project / "prices.csv", index=False
    )
    s = settings_for("px")
    inferred = ingest_file(project / "prices.csv", time_col="day", targets=["close"], settings=s)
    assert inferred.meta.freq == "B" and inferred.meta.schedule is None  # as before: business days
    sd = settings_for("pxd")
    daily = ingest_file(project / "prices.csv", time_col="day", targets=["close"], freq="D", settings=sd)
    assert daily.meta.schedule["summary"] == "Mon-Fri, 5 days a week" and daily.meta.gaps["count"] == 2  # holidays
    rep = validate_dataset(sd)
    assert rep.frame["timestamp"].dt.day_of_week.max() == 4 and len(rep.frame) == len(trading) + 2  # holidays filled
    assert resolve_window(s, "D", len(rep.frame), daily.meta.schedule)[1] == 5  # a week of trading days


def test_a_panel_keeps_one_schedule_and_names_the_series_that_keep_other_hours(project, settings_for):
    """Five car parks: four keep 08:00-16:30 every day, one opens at 07:00 on weekdays too: the panel's schedule is
    the four's, and the early readings are named with their series."""
    ts = hours(days=28)
    early = hours(days=28, first="07:00", last="07:30", weekdays=range(5))
    rows = [pd.DataFrame({"park": f"P{i}", "t": ts, "occ": 10.0 + i}) for i in range(4)]
    rows.append(pd.DataFrame({"park": "P4", "t": ts.append(early), "occ": 20.0}))
    pd.concat(rows).to_csv(project / "parks.csv", index=False)
    res = ingest_file(
        project / "parks.csv",
        time_col="t",
        targets=["occ"],
        id_cols=["park"],
        settings=settings_for("parks"),
    )
    m = res.meta
    assert m.schedule["summary"] == "08:00-16:30, 18 steps a day, 7 days a week"
    assert m.off_schedule == {"count": 40, "first": "2024-01-01 07:00:00", "series": {"P4": 40}}
    assert "(40 readings off it, first 2024-01-01 07:00:00, most in series 'P4': left out)" in m.schedule_line()
