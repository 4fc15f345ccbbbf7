"""Panels (many series in long format): ingest with id columns and aggregation onto a grid, validation per series
with the real Great Expectations suite, the bad-series policy, cold start, off-hours breaks, partitions read
back with pyarrow datasets, and validation fanned out over a local Dask cluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from cellcast.pipeline.catalog import (
    panel_partitions,
    read_panel,
    read_partition,
    read_raw,
    read_validated,
    read_validated_panel,
)
from cellcast.pipeline.data.datasets import load_bundled
from cellcast.pipeline.data.ingest import ingest_file, source_of
from cellcast.pipeline.data.panel_validation import client_mapper
from cellcast.pipeline.data.splits import usable_windows
from cellcast.pipeline.data.validation import validate_dataset
from cellcast.pipeline.errors import ConfigError, DataValidationError, IngestError
from cellcast.pipeline.serving.forecast import panel_future

SMALL = {"window": {"lookback": 24, "horizon": 6}}


def series(sid: str, n: int, start: str = "2024-01-01", seed: int = 0, freq: str = "h") -> pd.DataFrame:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "sensor": sid,
            "ts": pd.date_range(start, periods=n, freq=freq),
            "flow": 10 + np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.1, n),
            "temp": t / n,
        }
    )


def mixed_panel() -> pd.DataFrame:
    """A and B clean (B starts and ends later), C with an inf, D too short for its own splits (cold start),
    E too short for one window, G with a 10-hour gap (long_gaps: reject)."""
    c = series("C", 400, seed=2)
    c.loc[50, "flow"] = np.inf
    g = series("G", 300, seed=5)
    g = g.drop(index=range(100, 110))
    parts = [
        series("A", 400, seed=0),
        series("B", 300, "2024-01-03 05:00", seed=1),
        c,
        series("D", 60, seed=3),
        series("E", 20, seed=4),
        g,
    ]
    # rows of the series interleaved and out of order, as a logger might write them
    return pd.concat(parts, ignore_index=True).sample(frac=1, random_state=0).reset_index(drop=True)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def ingest_panel(path: Path, settings, **kw):
    return ingest_file(
        path, time_col="ts", targets=["flow"], features=["temp"], id_cols=["sensor"], settings=settings, **kw
    )


def test_a_panel_is_ingested_sorted_whole_series_per_row_group_and_read_back_by_series(project, settings_for):
    s = settings_for("city", ingest={"partition_rows": 500})
    src = write_csv(mixed_panel(), project / "city.csv")
    before = src.read_bytes()
    res = ingest_panel(src, s, freq="h")
    assert src.read_bytes() == before
    raw = project / "data/city/raw.parquet"
    df, meta = read_raw(s)
    assert list(df.columns) == ["series_id", "sensor", "timestamp", "flow", "temp"]
    assert str(df["timestamp"].dtype) == "datetime64[ns]" and df["series_id"].tolist() == df["sensor"].tolist()
    assert df.equals(df.sort_values(["series_id", "timestamp"], ignore_index=True)) and meta["unsorted"] is True
    # whole series per row group, groups up to 500 rows (A alone: 400 + 300 would pass it)
    groups = panel_partitions(raw)
    assert groups == meta["panel"]["row_groups"] == pq.ParquetFile(raw).metadata.num_row_groups >= 3
    seen = [set(read_partition(raw, [i])["series_id"]) for i in range(groups)]
    assert sum(len(x) for x in seen) == 6 and set().union(*seen) == set("ABCDEG")  # no series split across groups
    assert all(len(read_partition(raw, [i])) <= 500 or len(seen[i]) == 1 for i in range(groups))
    b = read_panel(raw, ["B"])
    assert set(b["series_id"]) == {"B"} and len(b) == 300 and b["timestamp"].is_monotonic_increasing
    # reading one series reads one row group: the filter is answered from the row groups' statistics
    import pyarrow.dataset as ds

    fragment = next(iter(ds.dataset(raw, format="parquet").get_fragments()))
    assert len(fragment.split_by_row_group(ds.field("series_id").isin(["B"]))) == 1
    # series start and end at different times; each is described on its own
    per = meta["panel"]["series"]
    assert per["B"]["start"] == "2024-01-03 05:00:00" and per["A"]["start"] == "2024-01-01 00:00:00"
    assert per["B"]["rows"] == 300 and per["G"]["gaps"] == {
        "count": 1,
        "missing_steps": 10,
        "longest_steps": 10,
        "off_grid": 0,
    }
    assert meta["rows"] == len(df) == res.meta.rows and meta["panel"]["id_cols"] == ["sensor"]
    assert source_of(s)["id_cols"] == ["sensor"]


def test_a_parquet_dataset_partitioned_by_series_is_ingested_through_pyarrow(project, settings_for):
    import pyarrow as pa

    s = settings_for("hive")
    df = pd.concat([series("A", 50), series("B", 40, "2024-01-02")], ignore_index=True)
    root = project / "by_sensor"
    pq.write_to_dataset(pa.Table.from_pandas(df, preserve_index=False), root, partition_cols=["sensor"])
    assert sorted(p.name for p in root.iterdir()) == ["sensor=A", "sensor=B"]
    res = ingest_file(
        root,
        time_col="ts",
        targets=["flow"],
        features=["temp"],
        id_cols=["sensor"],
        fmt="parquet",
        settings=s,
    )
    out, meta = read_raw(s)
    assert sorted(meta["panel"]["series"]) == ["A", "B"] and len(out) == 90 and meta["format"] == "parquet"
    assert meta["input_sha256"] == res.meta.input_sha256 and len(meta["input_sha256"]) == 64
    with pytest.raises(IngestError) as ei:  # a folder is a dataset only for a panel read as Parquet
        ingest_file(root, time_col="ts", targets=["flow"], settings=s)
    assert "is a directory" in str(ei.value) and "--parquet DIR with --id-col" in str(ei.value)
    with pytest.raises(IngestError) as ei:
        ingest_file(root, time_col="ts", targets=["flow"], id_cols=["station"], fmt="parquet", settings=s)
    assert "id column 'station' not found" in str(ei.value)
    assert any((q / "by_sensor" / "sensor=A").is_dir() for q in (project / "quarantine").iterdir())


def test_a_panel_frequency_is_inferred_from_each_series_not_their_union(project, settings_for):
    s = settings_for("half")
    # hourly series on different phases: their union steps every 30 minutes
    a, b = series("A", 100), series("B", 100, "2024-01-01 00:30")
    ingest_panel(write_csv(pd.concat([a, b]), project / "half.csv"), s)
    assert read_raw(s)[1]["freq"] == "h"


def test_several_id_columns_make_one_key_and_a_collision_is_refused(project, settings_for):
    s = settings_for("grid")
    df = pd.concat([series("x", 50).assign(site="north"), series("y", 50).assign(site="south")])
    ingest_file(
        write_csv(df, project / "grid.csv"),
        time_col="ts",
        targets=["flow"],
        id_cols=["site", "sensor"],
        settings=s,
    )
    out, meta = read_raw(s)
    assert list(out.columns[:4]) == ["series_id", "site", "sensor", "timestamp"]
    assert sorted(meta["panel"]["series"]) == ["north/x", "south/y"]
    assert meta["panel"]["series"]["north/x"]["ids"] == {"site": "north", "sensor": "x"}
    clash = pd.concat([series("b/c", 10).assign(site="a"), series("c", 10).assign(site="a/b")])
    with pytest.raises(IngestError) as ei:
        ingest_file(
            write_csv(clash, project / "clash.csv"),
            time_col="ts",
            targets=["flow"],
            id_cols=["site", "sensor"],
            settings=s,
        )
    assert "same series id 'a/b/c'" in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize("case", ["no_id_column", "empty_ids", "bad_dates_in_one_series", "bad_number_in_one_series"])
def test_malformed_panel_files_get_one_line_naming_the_series(case, project, settings_for):
    s = settings_for("bad")
    df = pd.concat([series("A", 30), series("B", 30), series("C", 30)], ignore_index=True)
    df["ts"] = df["ts"].dt.strftime("%Y-%m-%d %H:%M")
    kw = {}
    if case == "no_id_column":
        kw = {"id_cols": ["station"]}
        want = ["id column 'station' not found", "columns found: sensor, ts, flow, temp", "--id-col"]
    elif case == "empty_ids":
        df.loc[[40, 45], "sensor"] = ""
        want = ["id column 'sensor': 2 rows have no value", "first at line 42"]
    elif case == "bad_dates_in_one_series":
        df.loc[[33, 35], "ts"] = ["2024-02-30 01:00", "soon"]
        want = ["time column 'ts': 2 values are not dates", "first '2024-02-30 01:00' at line 35, series 'B'"]
    else:
        df["flow"] = df["flow"].astype(object)
        df.loc[70, "flow"] = "n/a?"
        want = ["column 'flow': 1 non-numeric values", "at line 72, series 'C'"]
    src = write_csv(df, project / "bad.csv")
    before = src.read_bytes()
    with pytest.raises(IngestError) as ei:
        ingest_file(
            src,
            time_col="ts",
            targets=["flow"],
            features=["temp"],
            **({"id_cols": ["sensor"]} | kw),
            settings=s,
        )
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(src)) and all(w in msg for w in want), msg
    assert src.read_bytes() == before and not (project / "data/bad/raw.parquet").exists()
    (q,) = (project / "quarantine").iterdir()
    assert json.loads((q / "report.json").read_text())["error"] == msg and (q / "bad.csv").read_bytes() == before


def test_id_columns_that_clash_with_other_options_are_refused(project, settings_for):
    s = settings_for("x")
    src = write_csv(series("A", 30), project / "x.csv")
    for kw, want in (
        ({"id_cols": ["ts"]}, "is the time column"),
        ({"id_cols": ["flow"]}, "also a target"),
        ({"id_cols": ["sensor"], "agg": "mean"}, "needs --freq"),
        ({"id_cols": ["sensor"], "agg": "median", "freq": "h"}, "must be one of mean, sum, last, max"),
    ):
        with pytest.raises(ConfigError) as ei:
            ingest_file(src, time_col="ts", targets=["flow"], settings=s, **kw)
        assert want in str(ei.value)


def irregular() -> pd.DataFrame:
    """Readings at irregular times: P every 20 minutes (+ jitter), Q three readings in one hour then a silent hour."""
    p = pd.DataFrame(
        {
            "sensor": "P",
            "ts": pd.date_range("2024-01-01", periods=12, freq="20min")
            + pd.to_timedelta([0, 3, 7, 1, 0, 9, 2, 2, 2, 5, 0, 1], unit="min"),
            "flow": np.arange(12, dtype=float),
        }
    )
    q = pd.DataFrame(
        {
            "sensor": "Q",
            "ts": pd.to_datetime(
                ["2024-01-01 00:05", "2024-01-01 00:59", "2024-01-01 00:30", "2024-01-01 02:10", "2024-01-01 03:00"]
            ),
            "flow": [1.0, 5.0, np.nan, 2.0, 7.0],
        }
    )
    return pd.concat([p, q], ignore_index=True)


def test_irregular_readings_without_a_grid_are_refused_naming_a_series_and_the_way_out(project, settings_for):
    s = settings_for("irr")
    src = write_csv(irregular(), project / "irr.csv")
    with pytest.raises(IngestError) as ei:
        ingest_file(src, time_col="ts", targets=["flow"], id_cols=["sensor"], settings=s)
    msg = str(ei.value)
    assert "series 'P'" in msg and "cannot infer a regular frequency" in msg and "--freq with --agg" in msg, msg


def test_an_id_column_named_series_id_is_the_key_itself(project, settings_for):
    s = settings_for("sid")
    df = pd.concat([series("A", 30), series("B", 30)]).rename(columns={"sensor": "series_id"})
    ingest_file(
        write_csv(df, project / "sid.csv"),
        time_col="ts",
        targets=["flow"],
        id_cols=["series_id"],
        settings=s,
    )
    out, meta = read_raw(s)
    assert list(out.columns) == ["series_id", "timestamp", "flow"] and meta["panel"]["series"]["A"]["ids"] == {
        "series_id": "A"
    }
    with pytest.raises(ConfigError):
        ingest_file(project / "sid.csv", time_col="ts", targets=["flow"], id_cols=["series_id", "ts2"], settings=s)


@pytest.mark.parametrize("agg", ["mean", "sum", "last", "max"])
def test_irregular_readings_are_aggregated_onto_the_grid_per_series(agg, project, settings_for):
    s = settings_for("irr")
    raw_in = irregular()
    ingest_file(
        write_csv(raw_in, project / "irr.csv"),
        time_col="ts",
        targets=["flow"],
        id_cols=["sensor"],
        freq="h",
        agg=agg,
        settings=s,
    )
    out, meta = read_raw(s)
    # the truth, computed independently: each reading in [hour, hour + 1h)
    raw_in = raw_in.sort_values(["sensor", "ts"], kind="stable")
    raw_in["hour"] = raw_in["ts"].dt.floor("h")
    want = raw_in.groupby(["sensor", "hour"])["flow"].agg(
        {
            "mean": "mean",
            "max": "max",
            "sum": lambda v: v.sum(min_count=1),
            "last": lambda v: v.dropna().iloc[-1] if v.notna().any() else np.nan,
        }[agg]
    )
    got = out.set_index(["series_id", "timestamp"])["flow"]
    assert list(got.index) == list(want.index) and np.allclose(got.to_numpy(), want.to_numpy(), equal_nan=True)
    assert (out["timestamp"].dt.minute == 0).all()
    # Q's silent hour (01:00) is not made up: it stays a gap for the validation policy
    assert pd.Timestamp("2024-01-01 01:00") not in set(out.loc[out["series_id"] == "Q", "timestamp"])
    r = meta["resample"]
    assert r == {"freq": "h", "agg": agg, "readings": 17, "grid_points": 7, "merged_points": 5, "most_per_point": 3}
    assert meta["panel"]["series"]["Q"]["readings"] == 5 and meta["panel"]["series"]["Q"]["grid_points"] == 3
    assert source_of(s)["agg"] == agg


def test_one_series_can_be_aggregated_too_and_stays_one_series(project, settings_for):
    s = settings_for("one")
    ingest_file(
        write_csv(irregular().query("sensor == 'P'").drop(columns="sensor"), project / "one.csv"),
        time_col="ts",
        targets=["flow"],
        freq="h",
        agg="mean",
        settings=s,
    )
    out, meta = read_raw(s)
    assert list(out.columns) == ["timestamp", "flow"] and "panel" not in meta
    assert out["flow"].tolist() == [1.0, 4.0, 7.0, 10.0] and meta["resample"]["readings"] == 12


def test_a_single_series_ingest_writes_what_it_always_did(project, settings_for):
    s = settings_for("solo")
    ingest_file(
        write_csv(series("A", 100).drop(columns="sensor"), project / "solo.csv"),
        time_col="ts",
        targets=["flow"],
        features=["temp"],
        settings=s,
    )
    meta = json.loads((project / "data/solo/raw.json").read_text())
    assert (
        "panel" not in meta and "resample" not in meta and list(read_raw(s)[0].columns) == ["timestamp", "flow", "temp"]
    )


def _validate_mixed(project, settings_for, policy: str):
    s = settings_for("city", ingest={"bad_series": policy, "partition_rows": 500}, **SMALL)
    ingest_panel(write_csv(mixed_panel(), project / "city.csv"), s, freq="h")
    return s


def test_bad_series_are_dropped_into_quarantine_short_ones_kept_as_cold_start(project, settings_for):
    s = _validate_mixed(project, settings_for, "drop")
    raw = project / "data/city/raw.parquet"
    before = raw.read_bytes()
    rep = validate_dataset(s)
    assert raw.read_bytes() == before
    p = rep.panel
    assert (p["series_in"], p["kept"], p["dropped"], p["cold_start"]) == (6, 3, 3, 1)
    assert {k: (v["rule"], v["column"]) for k, v in p["dropped_series"].items()} == {
        "C": ("finite", "flow"),
        "E": ("too_short", "timestamp"),
        "G": ("long_gap", "timestamp"),
    }
    assert p["dropped_series"]["C"]["count"] == 1 and p["dropped_series"]["C"]["examples"] == ["inf"]
    assert {k: v["status"] for k, v in p["series"].items()} == {"A": "ok", "B": "ok", "D": "cold_start"}
    assert "non-overlapping test window" in p["series"]["D"]["cold_start"]
    # validated.parquet holds the kept series only, each on its own grid; validated.json is the contract
    frame, meta = read_validated_panel(s)
    assert sorted(frame["series_id"].unique()) == ["A", "B", "D"]
    assert list(frame.columns) == ["series_id", "sensor", "timestamp", "flow", "temp", "filled:flow", "filled:temp"]
    assert meta["panel"]["series"]["B"] == p["series"]["B"]
    assert (meta["panel"]["series"]["B"]["start"], meta["panel"]["series"]["B"]["end"]) == (
        "2024-01-03 05:00:00",
        "2024-01-15 16:00:00",
    )
    assert meta["panel"]["id_cols"] == ["sensor"] and meta["rows"] == len(frame) == rep.rows_out
    assert set(meta["panel"]["dropped_series"]) == {"C", "E", "G"} and meta["panel"]["window"]["lookback"] == 24
    one, _ = read_validated_panel(s, series=["D"])
    assert len(one) == 60 and set(one["series_id"]) == {"D"}
    # the dropped series' raw rows and their report are in quarantine; the summary names them
    q = Path(rep.quarantine_path)
    assert sorted(pd.read_parquet(q / "data.parquet")["series_id"].unique()) == ["C", "E", "G"]
    assert set(json.loads((q / "report.json").read_text())["panel"]["dropped_series"]) == {"C", "E", "G"}
    on_disk = json.loads((project / "reports/city/validation.json").read_text())
    assert on_disk["success"] and on_disk["panel"]["series_in"] == 6 and len(on_disk["panel"]["partitions"]) >= 3
    assert (project / "reports/city/data_docs/index.html").is_file()
    with pytest.raises(ConfigError) as ei:  # a stage that reads one series is not handed a panel
        read_validated(s)
    assert "is a panel of 3 series" in str(ei.value)


def test_a_panel_with_known_future_columns_keeps_each_series_rows_after_its_last_observation(project, settings_for):
    """future.parquet of a panel: every kept series' own rows after its last observation (series end at different
    times and lie in different partitions), keyed by series; a dropped series' rows are not there."""
    s = settings_for("city", ingest={"bad_series": "drop", "partition_rows": 500}, **SMALL)
    df = mixed_panel()
    ends = {"A": 394, "B": 290, "C": 390, "D": 57}  # rows from here on carry temp only
    for sid, at in ends.items():
        rows = df.index[df["sensor"] == sid][df.loc[df["sensor"] == sid, "ts"].rank().to_numpy() > at]
        df.loc[rows, "flow"] = np.nan
    ingest_panel(write_csv(df, project / "city.csv"), s, freq="h", future_features=["temp"])
    rep = validate_dataset(s)
    assert rep.panel["kept"] == 3 and len(rep.panel["partitions"]) >= 3
    ahead = pd.read_parquet(project / "data/city/future.parquet")
    frame, _ = read_validated_panel(s)
    assert list(ahead.columns) == ["series_id", "sensor", "timestamp", "temp"]
    for sid, n in (("A", 6), ("B", 10), ("D", 3)):
        mine = ahead[ahead["series_id"] == sid]
        raw = df[df["sensor"] == sid].sort_values("ts")
        assert len(mine) == n and (mine["sensor"] == sid).all()
        assert mine["timestamp"].min() > frame.loc[frame["series_id"] == sid, "timestamp"].max()
        assert mine["temp"].tolist() == raw["temp"].iloc[-n:].tolist()
    assert set(ahead["series_id"]) == {"A", "B", "D"}
    # what the batch forecast makes of it: rows keyed by series
    assert panel_future(ahead, ["sensor"], "f")["series_id"].tolist() == ahead["series_id"].tolist()


def test_reject_fails_the_dataset_naming_the_series_and_the_rule(project, settings_for):
    s = _validate_mixed(project, settings_for, "reject")
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(Path("data/city/raw.parquet")))
    assert "3 of 6 series broke a rule: series 'C': column 'flow': finite failed for 1 rows (inf)" in msg, msg
    assert "'E' (too_short)" in msg and "'G' (long_gap)" in msg and "ingest.bad_series: drop" in msg
    assert (
        not (project / "data/city/validated.parquet").exists() and not (project / "data/city/validated.json").exists()
    )
    rep = json.loads((project / "reports/city/validation.json").read_text())
    assert rep["success"] is False and rep["error"] == msg and rep["panel"]["bad"] == 3
    assert {f["series"] for f in rep["failures"]} == {"C", "E", "G"}
    q = Path(ei.value.quarantine_path)
    assert json.loads((q / "report.json").read_text())["error"] == msg


def test_duplicates_are_judged_per_series_by_the_gx_suite(project, settings_for):
    s = settings_for("dup", **SMALL)
    a, b = series("A", 200), series("B", 200)
    b = pd.concat([b, b.iloc[[10, 11]]])  # two repeated timestamps in B only
    ingest_panel(write_csv(pd.concat([a, b]), project / "dup.csv"), s)
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s)
    assert "1 of 2 series broke a rule: series 'B': column 'timestamp': unique failed for 4 rows" in str(ei.value)
    assert "--dedupe first|last|mean" in str(ei.value)
    s2 = settings_for("dup", ingest={"dedupe": "mean"}, **SMALL)
    rep = validate_dataset(s2)
    assert rep.panel["series"]["B"]["duplicates"] == 2 and rep.panel["series"]["B"]["rows"] == 200


def business_hours(days: int = 20) -> pd.DataFrame:
    """Hourly readings 08:00-17:00 on every day, one reading missing at noon and one at 08:00."""
    ts = pd.date_range("2024-03-01", periods=24 * days, freq="h")
    ts = ts[(ts.hour >= 8) & (ts.hour <= 17)]
    df = pd.DataFrame({"sensor": "shop", "ts": ts, "flow": 5 + np.cos(ts.hour.to_numpy() / 3), "temp": 1.0})
    return df[~df["ts"].isin([pd.Timestamp("2024-03-05 12:00"), pd.Timestamp("2024-03-07 08:00")])]


def test_a_series_that_reports_part_of_the_day_gets_breaks_not_interpolated_nights(project, settings_for):
    # long_gaps stays reject: a night is the series' schedule, not a fault
    s = settings_for("shop", window={"lookback": 4, "horizon": 2})
    full = series("full", 24 * 20, "2024-03-01")
    ingest_panel(write_csv(pd.concat([business_hours(), full]), project / "shop.csv"), s)
    rep = validate_dataset(s)
    shop = rep.panel["series"]["shop"]
    assert (
        shop["status"] == "ok" and shop["schedule"] == ["08:00-18:00"] and "schedule" not in rep.panel["series"]["full"]
    )
    assert shop["breaks"] == shop["off_hours_breaks"] == 19 and shop["filled"] == 1 * 2  # noon, in both variables
    frame, _ = read_validated_panel(s, series=["shop"])
    night = ~frame["timestamp"].dt.hour.between(8, 17)
    assert frame.loc[night, ["flow", "temp"]].isna().all().all() and not frame.loc[night, "filled:flow"].any()
    # the missed 08:00 beside a night joins the break; the missed noon is filled and marked
    at = frame.set_index("timestamp")
    assert np.isnan(at.loc["2024-03-07 08:00", "flow"]) and at.loc["2024-03-05 12:00", "filled:flow"]
    # no window crosses a night
    vals = frame[["flow", "temp"]].to_numpy()
    valid = usable_windows(vals, frame[["filled:flow", "filled:temp"]].to_numpy(), 4, 2, [0])
    for st in np.flatnonzero(valid):
        assert not np.isnan(vals[st : st + 6]).any()
    assert valid.any()


def test_a_weather_subset_real_panel_ingests_and_validates(project, settings_for):
    """Three airports, three weeks around the end of DST 2013: real missing hours, 5 of them in a row."""
    w = load_bundled("weather")
    w = w[(w["timestamp"] >= "2013-10-20") & (w["timestamp"] < "2013-11-10")]
    # as a user would have it: the UTC instant written with its zone, the airport as the id
    df = pd.DataFrame(
        {
            "airport": w["origin"],
            "time": w["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "temp": w["temp"],
            "humid": w["humid"],
            "wind_speed": w["wind_speed"],
        }
    )
    src = write_csv(df.sample(frac=1, random_state=1), project / "weather.csv")
    s = settings_for("nyc", ingest={"long_gaps": "segment"}, **SMALL)
    ingest_file(
        src,
        time_col="time",
        targets=["temp"],
        features=["humid", "wind_speed"],
        id_cols=["airport"],
        settings=s,
    )
    raw, meta = read_raw(s)
    assert (
        meta["freq"] == "h" and meta["timezone"] == "UTC" and sorted(meta["panel"]["series"]) == ["EWR", "JFK", "LGA"]
    )
    assert all(v["gaps"]["longest_steps"] == 5 for v in meta["panel"]["series"].values())
    rep = validate_dataset(s)
    p = rep.panel
    assert (p["series_in"], p["kept"], p["dropped"]) == (3, 3, 0)
    for sid, r in p["series"].items():
        assert r["status"] == "ok" and r["breaks"] >= 1 and r["filled"] > 0 and r["rows"] == 504, (sid, r)
    frame, _ = read_validated_panel(s, series=["JFK"])
    assert frame.set_index("timestamp").loc["2013-10-26 00:00":"2013-10-26 04:00", "temp"].isna().all()
    # the same file with long gaps rejected and bad series dropped: nothing is left, and that is one line
    s2 = settings_for("nyc", ingest={"bad_series": "drop"}, **SMALL)
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s2)
    assert "3 of 3 series broke a rule" in str(ei.value) and "no series is left" in str(ei.value)


def test_the_local_clock_of_the_weather_repeats_an_hour_and_the_suite_names_each_airport(project, settings_for):
    w = load_bundled("weather")
    w = w[(w["timestamp"] >= "2013-10-20") & (w["timestamp"] < "2013-11-10")]
    local = w["timestamp"].dt.tz_localize("UTC").dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d %H:%M")
    df = pd.DataFrame({"origin": w["origin"], "local": local, "temp": w["temp"]})
    s = settings_for("nyc", **SMALL)
    ingest_file(
        write_csv(df, project / "local.csv"),
        time_col="local",
        targets=["temp"],
        id_cols=["origin"],
        freq="h",
        settings=s,
    )
    assert read_raw(s)[1]["duplicates"] == 3  # 01:00 on 2013-11-03, at each airport
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s)
    assert "3 of 3 series broke a rule: series 'EWR': column 'timestamp': unique failed for 2 rows" in str(ei.value)


def test_the_bundled_us_employment_panel_keeps_its_window_trains_its_young_series_folds_by_month_and_refs_a_sample(
    project,
):
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.ingest import ingest_bundled

    s = load_params(project / "params.yaml").for_dataset("us_employment")
    res = ingest_bundled(s)
    assert len(res.meta.panel["series"]) == 148 and res.meta.dataset["series"] == 148
    rep = validate_dataset(s)
    p = rep.panel
    assert (p["series_in"], p["kept"], p["dropped"], p["cold_start"]) == (148, 148, 0, 0)
    # the year ahead and each series' own 15% test split, as before: 148 series pool the decision's paths with
    # one test year each, so the two series begun in 2001 (two test years of their own) train with the others
    assert {k: p["window"][k] for k in ("horizon", "test_horizons", "test_need")} == {
        "horizon": 12,
        "test_horizons": 1,
        "test_need": 1,
    }
    young = sorted(k for k, v in p["series"].items() if v["start"] == "2001-01-01 00:00:00")
    assert len(young) == 2 and all(p["series"][k]["rows"] == 225 for k in young)
    assert all(p["series"][k]["status"] == "ok" and p["series"][k]["windows"]["test_origins"] == 2 for k in young)
    # series begin when the industry was first counted: leading empty months are trimmed, not filled
    assert min(v["rows"] for v in p["series"].values()) == 225 and max(v["rows"] for v in p["series"].values()) == 969
    assert p["filled"] == 0

    # its backtest folds cut on the shared months: each industry's own rows before each cut, none past a fold's end
    from cellcast.pipeline.data.folds import fold_windowset
    from cellcast.pipeline.data.window import window_dataset
    from cellcast.pipeline.modeling import panel_references
    from cellcast.pipeline.modeling.evaluate import forecast_origins
    from cellcast.pipeline.registry.backtest import plan

    ws = window_dataset(s)
    folds = plan(ws, s, k=2)
    for fold in folds:
        fws = fold_windowset(ws, fold, s)
        assert 140 <= len(fws.series_ids) <= 148
        ends = fws.timestamps[fws.offsets + fws.lengths - 1]
        assert fold.cuts[2] is None or (ends < np.datetime64(fold.cuts[2])).all()
        firsts_val = fws.timestamps[fws.offsets + fws.train_end]
        assert (firsts_val >= np.datetime64(fold.cuts[0])).all()
    # the references on a stated sample of its industries (Theta: the quick fit)
    ev = s.evaluate.model_copy(update={"references": ["theta"], "panel_reference_sample": 5})
    row = panel_references.reference_rows(ws, forecast_origins(ws, "test"), s.model_copy(update={"evaluate": ev}))[
        "theta"
    ]
    assert row["status"] == "ok" and (row["series"], row["series_sampled"], row["series_total"]) == (5, 5, 148)
    assert np.isfinite(row["mase"]) and len(row["per_series"]) == 5


@pytest.mark.integration
def test_validation_fans_out_over_a_local_dask_cluster(project, settings_for):
    distributed = pytest.importorskip("distributed")
    s = _validate_mixed(project, settings_for, "drop")
    here = validate_dataset(s)
    frame_here = pd.read_parquet(project / "data/city/validated.parquet")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        rep = validate_dataset(s, mapper=client_mapper(client))
    parts = rep.panel["partitions"]
    assert len(parts) >= 3 and len({p["worker"] for p in parts}) == 2  # two processes did the work
    assert {p["worker"].split(":")[1] for p in parts}.isdisjoint({str(__import__("os").getpid())})
    assert rep.panel["series"] == here.panel["series"] and rep.panel["dropped_series"] == here.panel["dropped_series"]
    assert pd.read_parquet(project / "data/city/validated.parquet").equals(frame_here)


def test_cli_ingests_a_panel_with_aggregation_and_validates_it_dropping_a_series(project):
    import yaml

    from cellcast.cli import app

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["window"].update(lookback=24, horizon=6)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    assert isinstance(app, typer.Typer)
    runner = CliRunner()
    df = pd.concat([series("A", 200), series("B", 200, seed=1), series("C", 200, seed=2)])
    df.loc[df["sensor"] == "C", "flow"] = np.where(np.arange(200) == 7, np.inf, df.loc[df["sensor"] == "C", "flow"])
    df["ts"] = df["ts"] + pd.to_timedelta(np.random.default_rng(0).integers(0, 50, len(df)), unit="min")
    write_csv(df, project / "s.csv")
    r = runner.invoke(
        app,
        [
            "ingest",
            "--csv",
            "s.csv",
            "--time-col",
            "ts",
            "--id-col",
            "sensor",
            "--target",
            "flow",
            "--features",
            "temp",
            "--name",
            "city",
            "--freq",
            "h",
            "--agg",
            "mean",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        "panel of 3 series (id sensor; 1 row group)" in r.output and "600 readings aggregated (mean) into" in r.output
    )
    r = runner.invoke(app, ["validate", "city", "--bad-series", "drop"])
    assert r.exit_code == 0, r.output
    assert (
        "valid panel, 3 series in, 2 kept (0 cold start" in r.output
        and "1 dropped ('C': finite; kept in quarantine/city-" in r.output
    )
    # the window stage cuts each series on its own (tests/test_panel_model.py)
    r = runner.invoke(app, ["window", "city"])
    assert r.exit_code == 0 and "a panel of 2 series (0 cold start)" in r.output, r.output
    r = runner.invoke(app, ["validate", "city"])  # the policy given is kept for the dataset
    assert r.exit_code == 0 and "1 dropped ('C'" in r.output, r.output
    r = runner.invoke(app, ["validate", "city", "--bad-series", "reject"])
    assert r.exit_code == 2 and "error:" in r.output and "series 'C'" in r.output
    r = runner.invoke(app, ["datasets"])
    assert "148 (Series_ID)" in r.output and "3 (origin)" in r.output


@pytest.mark.integration
def test_a_short_real_panel_from_a_european_csv_trains_to_a_decision_through_the_cli(prefect_api, project, tiny_params):
    """Five stock prices by month (vega_datasets `stocks`: 123 months each, GOOG 68), written as a European user
    has them (';', decimal commas, day-first dates). One such series alone would be forecast 3 months ahead; the
    five pool the decision's paths, so the year is kept, each test split grows to 3 years and each series needs its
    share of the paths: a decision is reached (here a refusal, with its evidence), not a cold-start exit."""
    from conftest import one_cell
    from vega_datasets import local_data  # dev dependency: the data ships in the package

    from cellcast.cli import app

    one_cell(tiny_params)
    df = local_data.stocks()
    assert df.groupby("symbol").size().to_dict() == {"AAPL": 123, "AMZN": 123, "GOOG": 68, "IBM": 123, "MSFT": 123}
    df["date"] = df["date"].dt.strftime("%d.%m.%Y")
    df["price"] = df["price"].map(lambda x: f"{x:.2f}".replace(".", ","))
    df.to_csv(project / "stocks.csv", index=False, sep=";")
    run = CliRunner().invoke
    r = run(
        app,
        ["ingest", "--csv", "stocks.csv", "--name", "stocks", "--time-col", "date", "--target", "price"]
        + ["--id-col", "symbol"],
    )
    assert r.exit_code == 0 and "panel of 5 series" in r.output and "dates read day-first" in r.output, r.output
    r = run(app, ["validate", "stocks"])
    assert r.exit_code == 0, r.output
    assert "5 kept (1 cold start" in r.output and "judged on lookback 12 + horizon 12" in r.output, r.output
    assert (
        "test splits grown to hold 3 horizons a series (2 needed); 12 non-overlapping test windows pooled" in r.output
    )
    p = json.loads((project / "data/stocks/validated.json").read_text())["panel"]
    ok = {k: v["windows"] for k, v in p["series"].items() if v["status"] == "ok"}
    assert sorted(ok) == ["AAPL", "AMZN", "IBM", "MSFT"] and all(w["test_origins"] == 3 for w in ok.values())
    assert p["series"]["GOOG"]["cold_start"] == "0 val window(s), need 1 per split"  # 68 months: no validation year
    r = run(app, ["train", "stocks"])
    assert r.exit_code == 0, r.output
    summary = json.loads((project / "reports/stocks/train_summary.json").read_text())
    d = summary["decision"]
    assert summary["version"] == 1 and "(DM " in d["reason"], d  # the test was run: its statistic is the evidence
    # the evidence the policy weighed: each series' 3 test years, pooled, enough for a decision either way
    m = d["metrics"]
    assert m["baseline_paths"] == 12 >= m["min_decision_paths"] and "baseline_p_value" in m, d
    assert "too few for a decision" not in d["reason"] and "across 4 series" in d["reason"], d
    # the first 40 months of each, asked a year ahead in params.yaml: no series can hold splits of its own, and both
    # commands name the setting that fixes it, in one line
    import yaml

    params = yaml.safe_load(tiny_params.read_text())
    params["datasets"] = {**(params.get("datasets") or {}), "short": {"window": {"horizon": 12}}}
    tiny_params.write_text(yaml.safe_dump(params, sort_keys=False))
    local_data.stocks().groupby("symbol").head(40).to_csv(project / "short.csv", index=False)
    r = run(
        app,
        ["ingest", "--csv", "short.csv", "--name", "short", "--time-col", "date", "--target", "price"]
        + ["--id-col", "symbol"],
    )
    assert r.exit_code == 0, r.output
    fix = "set window.horizon: 6 in params.yaml (the longest series then holds splits of its own)"
    r = run(app, ["validate", "short"])
    assert r.exit_code == 0 and "5 kept (5 cold start" in r.output, r.output
    assert f"no series holds splits of its own, so no model can train: {fix}" in r.output
    r = run(app, ["train", "short"])
    assert r.exit_code != 0 and "every series is cold start" in r.output and fix in r.output, r.output
