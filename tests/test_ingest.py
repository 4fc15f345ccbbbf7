"""Ingest: canonical output for good files; one clear line, a quarantined copy and an untouched input for bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cellcast.pipeline.catalog import read_raw
from cellcast.pipeline.data.frequency import infer_freq
from cellcast.pipeline.data.ingest import ingest_file
from cellcast.pipeline.errors import ConfigError, IngestError

GOOD = "date,load,temp\n" + "".join(f"2024-01-01 {h:02d}:00,{10 + h},{h / 2}\n" for h in range(24))


def _snapshot(p: Path):
    return (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None


# ---------------------------------------------------------------- the malformed-file corpus
# name -> (file name, bytes or None for "do not create" / "dir" for a directory, ingest kwargs, rule, must-contain)
CORPUS = {
    "empty": ("empty.csv", b"", {}, "empty", ["empty file"]),
    "header_only": (
        "header.csv",
        b"date,load,temp\n",
        {},
        "header_only",
        ["header only", "columns found: date, load, temp"],
    ),
    "no_time_col": (
        "notime.csv",
        GOOD.replace("date", "when").encode(),
        {},
        "time_column",
        ["no time column 'date'", "columns found: when, load, temp"],
    ),
    "bad_dates": (
        "dates.csv",
        (GOOD.replace("2024-01-01 03:00", "yesterday").replace("2024-01-01 07:00", "31/31/2024")).encode(),
        {},
        "time_parse",
        ["time column 'date'", "2 values are not dates", "first 'yesterday' at line 5"],
    ),
    "non_numeric": (
        "nonnum.csv",
        GOOD.replace(",12,", ",twelve,").replace(",15,", ",n/a?,").encode(),
        {},
        "numeric",
        ["column 'load'", "2 non-numeric values", "first 'twelve' at line 4"],
    ),
    "binary": (
        "garbage.csv",
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        {},
        "binary",
        ["binary content"],
    ),
    "wrong_delimiter": (
        "semi.csv",
        GOOD.replace(",", ";").encode(),
        {"delimiter": ","},
        "delimiter",
        ["do not split with delimiter ','", "--delimiter ';'"],
    ),
    "no_delimiter": (
        "spaces.csv",
        GOOD.replace(",", " ").replace("01 ", "01T").encode(),
        {},
        "delimiter",
        ["do not split", "--delimiter"],
    ),
    "ragged_rows": (
        "ragged.csv",
        (GOOD + "2024-01-02 00:00,1,2,3,4\n").encode(),
        {},
        "delimiter",
        ["rows do not split like the header"],
    ),
    "wrong_target": (
        "target.csv",
        GOOD.encode(),
        {"targets": ["Demand"]},
        "column_missing",
        ["target column 'Demand' not found", "columns found: date, load, temp"],
    ),
    "wrong_feature": (
        "feature.csv",
        GOOD.encode(),
        {"features": ["humidity"]},
        "column_missing",
        ["feature column 'humidity' not found"],
    ),
    "fake_parquet": ("fake.parquet", GOOD.encode(), {"fmt": "parquet"}, "parquet", ["not a Parquet file"]),
    "truncated_parquet": ("cut.parquet", "PARQUET", {"fmt": "parquet"}, "parquet", ["Parquet"]),
    "missing_file": ("nowhere.csv", None, {}, "missing_file", ["file not found"]),
    "directory": ("adir.csv", "dir", {}, "directory", ["is a directory"]),
    # found by the fuzz test (test_ingest_fuzz.py): each was a traceback or a message of several lines
    "bom_only": ("bom.csv", b"\xef\xbb\xbf", {}, "empty", ["no header and no rows"]),
    "separator_char_only": ("fs.csv", b"\x1c", {}, "empty", ["no header and no rows"]),
    "dates_beyond_nanoseconds": (
        "old.csv",
        GOOD.replace("2024-01-01 03:00", "0001-01-01 03:00")
        .replace("2024-01-01 09:00", "2024-01-01 09:00")
        .replace("2024-01-01 07:00", "9999-01-01 07:00")
        .encode(),
        {},
        "time_parse",
        ["2 values are not dates", "first '0001-01-01 03:00' at line 5"],
    ),
    "header_with_a_line_break": (
        "nl.csv",
        ('"da\nte",load,temp\n' + GOOD.split("\n", 1)[1]).encode(),
        {},
        "time_column",
        ["columns found: da\\nte, load, temp"],
    ),
    "name_twice": (
        "twice.csv",
        GOOD.replace("date,load,temp", "date,load, load").encode(),
        {},
        "header",
        ["column 'load' appears more than once"],
    ),
    "ragged_but_header_splits": (
        "rag.csv",
        ("date,load,temp\n" + "".join(f"2024-01-01 {h:02d}:00,{h},1{',9' * (h % 2)}\n" for h in range(24))).encode(),
        {},
        "delimiter",
        ["rows do not split like the header with delimiter ','"],
    ),
    "irregular_no_freq": (
        "irregular.csv",
        (
            "date,load,temp\n" + "".join(f"2024-01-01 00:{m:02d},{m},1\n" for m in (0, 1, 3, 7, 12, 20, 31, 45, 58))
        ).encode(),
        {},
        "frequency",
        ["cannot infer a regular frequency", "--freq"],
    ),
}


# every refusal names its remedy: the option or the fix that gets the file in
REMEDY = {
    "empty": "export the series with a header line",
    "header_only": "export the rows below the header",
    "no_time_col": "pass --time-col",
    "bad_dates": "fix or remove those rows, or pass --time-format",
    "non_numeric": "fix or blank those cells",
    "binary": "export the series as CSV text",
    "wrong_delimiter": "try --delimiter ';'",
    "no_delimiter": "pass --delimiter",
    "ragged_rows": "pass --delimiter if the sniffed one is wrong",
    "wrong_target": "pass --target with one of them",
    "wrong_feature": "pass --features with one of them",
    "fake_parquet": "pass --csv for a CSV file",
    "truncated_parquet": "again",
    "missing_file": "check the path",
    "directory": "pass a file in it",
    "bom_only": "export the series with a header line",
    "separator_char_only": "export the series with a header",
    "dates_beyond_nanoseconds": "fix or remove those rows",
    "header_with_a_line_break": "pass --time-col",
    "name_twice": "rename one of them",
    "ragged_but_header_splits": "pass --delimiter if the sniffed one is wrong",
    "irregular_no_freq": "pass --freq",
}


def _make(project: Path, fname: str, content) -> Path:
    p = project / "inputs" / fname
    p.parent.mkdir(exist_ok=True)
    if content == "dir":
        p.mkdir()
    elif content == "PARQUET":  # a real Parquet file cut in half: magic at the start, not at the end
        pd.read_csv(__import__("io").StringIO(GOOD)).to_parquet(p)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif content is not None:
        p.write_bytes(content)
    return p


@pytest.mark.parametrize("case", list(CORPUS))
def test_corpus_gives_one_clear_line(case, project, settings_for):
    fname, content, kw, rule, needles = CORPUS[case]
    path = _make(project, fname, content)
    before = _snapshot(path)
    args = {"time_col": "date", "targets": ["load"], "features": ["temp"], **kw}
    with pytest.raises(IngestError) as ei:
        ingest_file(path, settings=settings_for("bad"), **args)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for n in needles + [REMEDY[case]]:
        assert n in msg, (n, msg)
    # the input is untouched, nothing half-written, and the quarantine holds the copy and the report
    assert _snapshot(path) == before
    assert not (project / "data" / "bad" / "raw.parquet").exists()
    (q,) = list((project / "quarantine").iterdir())
    assert q.name.startswith("bad-")
    report = json.loads((q / "report.json").read_text())
    assert report["rule"] == rule and report["error"] == msg
    if path.is_file():
        assert (q / path.name).read_bytes() == path.read_bytes()
    if rule in ("numeric", "time_parse"):
        assert report["count"] == 2


# ---------------------------------------------------------------- good files


@pytest.mark.parametrize("delim", [",", ";", "\t", "|"])
def test_delimiters_are_sniffed_and_bom_is_ok(delim, project, settings_for):
    p = project / "in.csv"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD.replace(",", delim).encode())
    r = ingest_file(p, time_col="date", targets=["load"], features=["temp"], settings=settings_for("d"))
    assert list(r.frame.columns) == ["timestamp", "load", "temp"]
    assert r.meta.delimiter == delim and r.meta.freq == "h" and r.meta.rows == 24
    assert r.frame["load"].tolist() == [float(10 + h) for h in range(24)]


def test_canonical_output_and_metadata(project, settings_for):
    # unsorted, a duplicate, a 3-step gap, an inf, a NaN and a decimal comma: all kept for validation
    rows = [
        ("2024-01-01 02:00", "3,5", "1"),
        ("2024-01-01 00:00", "1", "1"),
        ("2024-01-01 01:00", "2", ""),
        ("2024-01-01 01:00", "2", "2"),
        ("2024-01-01 03:00", "inf", "1"),
        ("2024-01-01 07:00", "8", "1"),
        ("2024-01-01 08:00", "9", "1"),
    ]
    p = project / "in.csv"
    p.write_text("t;y;x\n" + "".join(";".join(r) + "\n" for r in rows))
    before = _snapshot(p)
    r = ingest_file(p, time_col="t", targets=["y"], features=["x"], settings=settings_for("c"))
    assert _snapshot(p) == before
    df, meta = read_raw(settings_for("c"))
    assert list(df.columns) == ["timestamp", "y", "x"]
    assert str(df["timestamp"].dtype) == "datetime64[ns]" and df["y"].dtype == np.float64
    assert df["timestamp"].is_monotonic_increasing and len(df) == 7
    assert df["y"].iloc[-1] == 9.0 and np.isinf(df["y"]).sum() == 1 and df["x"].isna().sum() == 1
    assert df.loc[df["timestamp"] == "2024-01-01 02:00", "y"].item() == 3.5
    assert meta["unsorted"] is True and meta["duplicates"] == 1 and meta["decimal"] == ","
    assert meta["freq"] == "h" and meta["freq_source"] == "inferred"
    assert meta["gaps"] == {"count": 1, "missing_steps": 3, "longest_steps": 3, "off_grid": 0}
    assert meta["input_sha256"] == __import__("hashlib").sha256(p.read_bytes()).hexdigest()
    assert meta["time_col"] == "t" and meta["targets"] == ["y"] and meta["features"] == ["x"]
    assert meta["start"] == "2024-01-01 00:00:00" and meta["end"] == "2024-01-01 08:00:00"
    assert (project / "data" / "c" / "raw.parquet").is_file() and r.meta_path.is_file()


def test_timezones_become_utc(project, settings_for):
    p = project / "tz.csv"
    # a DST change: offsets differ between rows
    p.write_text(
        "time,v\n2024-03-31T00:00+01:00,1\n2024-03-31T01:00+01:00,2\n2024-03-31T03:00+02:00,3\n"
        "2024-03-31T04:00+02:00,4\n"
    )
    r = ingest_file(p, time_col="time", targets=["v"], settings=settings_for("tz"))
    assert r.frame["timestamp"].dt.tz is None
    assert r.frame["timestamp"].tolist() == list(pd.date_range("2024-03-30 23:00", periods=4, freq="h"))
    assert r.meta.timezone == "UTC" and r.meta.freq == "h"


def test_parquet_with_time_index(project, settings_for):
    idx = pd.date_range("2024-01-01", periods=50, freq="15min", tz="Europe/Paris", name="when")
    src = pd.DataFrame({"a": np.arange(50, dtype="int64"), "b": np.linspace(0, 1, 50)}, index=idx)
    p = project / "in.parquet"
    src.to_parquet(p)
    r = ingest_file(p, time_col="when", targets=["b"], features=["a"], settings=settings_for("pq"))
    assert list(r.frame.columns) == ["timestamp", "b", "a"] and r.frame["a"].dtype == np.float64
    assert r.frame["timestamp"].iloc[0] == pd.Timestamp("2023-12-31 23:00") and r.meta.freq == "15min"


def test_frequency_inference_and_declaration(project, settings_for):
    ts = pd.date_range("2024-01-01", periods=200, freq="30min").delete([5, 6, 7, 50, 120])
    assert infer_freq(ts) == "30min"  # gaps: pd.infer_freq alone gives None
    assert infer_freq(pd.bdate_range("2024-01-01", periods=60).delete([3, 20])) == "B"
    assert infer_freq(pd.date_range("2024-01-01", periods=30, freq="MS").delete([4])) == "MS"
    assert infer_freq(pd.date_range("2024-01-07", periods=30, freq="W-SUN").delete([4])) == "W-SUN"
    p = project / "in.csv"
    p.write_text(GOOD)
    r = ingest_file(p, time_col="date", targets=["load"], freq="30min", settings=settings_for("f"))
    assert r.meta.freq == "30min" and r.meta.freq_source == "declared" and r.meta.gaps["missing_steps"] == 23
    with pytest.raises(ConfigError, match="--freq 'fortnightly'"):
        ingest_file(p, time_col="date", targets=["load"], freq="fortnightly", settings=settings_for("f"))
    with pytest.raises(ConfigError, match="'load' is listed more than once"):
        ingest_file(p, time_col="date", targets=["load"], features=["load"], settings=settings_for("f"))


def test_output_never_overwrites_its_own_input(project, settings_for):
    p = project / "in.csv"
    p.write_text(GOOD)
    r = ingest_file(p, time_col="date", targets=["load"], settings=settings_for("same"))
    before = _snapshot(r.parquet_path)
    with pytest.raises(ConfigError, match="is the output of dataset 'same'"):
        ingest_file(r.parquet_path, time_col="timestamp", targets=["load"], settings=settings_for("same"))
    assert _snapshot(r.parquet_path) == before


# ---------------------------------------------------------------- CLI


@pytest.fixture
def cli():
    from cellcast.commands.data import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_ingest(project, cli):
    p = project / "in.csv"
    p.write_text(GOOD)
    ok = cli("ingest", "--csv", str(p), "--name", "ok", "--time-col", "date", "--target", "load", "--features", "temp")
    assert ok.exit_code == 0, ok.output
    assert "24 rows" in ok.output and "freq h (inferred)" in ok.output
    assert read_raw(__import__("cellcast.pipeline.config", fromlist=["x"]).load_params().for_dataset("ok"))[1][
        "features"
    ] == ["temp"]

    bad = project / "bad.csv"
    bad.write_text(GOOD.replace(",12,", ",oops,"))
    before = _snapshot(bad)
    r = cli("ingest", "--csv", str(bad), "--name", "bad", "--time-col", "date", "--target", "load")
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "non-numeric" in lines[0] and "Traceback" not in r.output
    assert _snapshot(bad) == before and len(list((project / "quarantine").iterdir())) == 1

    r = cli("ingest", "--csv", str(p), "--bundled", "sp500")
    assert r.exit_code == 2 and "exactly one of" in r.output
    r = cli("ingest", "--bundled", "nosuch")
    assert r.exit_code == 2 and "elecdemand" in r.output and "sp500" in r.output
    for cmd in ("ingest", "validate", "datasets"):
        assert cli(cmd, "--help").exit_code == 0


def _daily_csv(project: Path, fname: str, stamps, values) -> Path:
    lines = ["when,value"] + [f"{s},{v}" for s, v in zip(stamps, values)]
    return _make(project, fname, ("\n".join(lines) + "\n").encode())


def test_day_first_dates_are_read_the_way_the_file_steps(project, settings_for):
    days = pd.date_range("2021-01-01", periods=60, freq="D")
    p = _daily_csv(project, "ddmm.csv", days.strftime("%d/%m/%Y"), range(60))
    res = ingest_file(p, time_col="when", targets=["value"], settings=settings_for("ddmm"))
    assert list(res.frame["timestamp"]) == list(days) and res.meta.freq == "D"
    assert res.meta.gaps["count"] == 0


def test_an_explicit_time_format_wins_and_a_mismatch_is_one_line(project, settings_for):
    days = pd.date_range("2021-01-01", periods=40, freq="D")
    p = _daily_csv(project, "fmt.csv", days.strftime("%d.%m.%Y"), range(40))
    res = ingest_file(p, time_col="when", targets=["value"], time_format="%d.%m.%Y", settings=settings_for("fmt"))
    assert list(res.frame["timestamp"]) == list(days)
    with pytest.raises(IngestError, match=r"values are not dates with --time-format '%m\.%d\.%Y'"):
        ingest_file(p, time_col="when", targets=["value"], time_format="%m.%d.%Y", settings=settings_for("fmt2"))


def test_unix_times_need_a_unit_and_then_parse(project, settings_for):
    days = pd.date_range("2021-01-01", periods=30, freq="D")
    secs = (days - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    p = _daily_csv(project, "epoch.csv", secs, range(30))
    with pytest.raises(IngestError, match=r"holds numbers .*pass --time-unit s"):
        ingest_file(p, time_col="when", targets=["value"], settings=settings_for("ep"))
    res = ingest_file(p, time_col="when", targets=["value"], time_unit="s", settings=settings_for("ep"))
    assert list(res.frame["timestamp"]) == list(days)


def test_thousands_separators_are_read(project, settings_for):
    days = pd.date_range("2021-01-01", periods=20, freq="D")
    vals = [f'"{1000 + 37 * i:,}.5"' for i in range(20)]
    p = _daily_csv(project, "th.csv", days.strftime("%Y-%m-%d"), vals)
    res = ingest_file(p, time_col="when", targets=["value"], settings=settings_for("th"))
    np.testing.assert_allclose(res.frame["value"], [1000.5 + 37 * i for i in range(20)])


# ---------------------------------------------------------------- the date order: chosen only when the file says it


def _hourly_csv(project: Path, fname: str, stamps) -> Path:
    return _make(project, fname, ("when,value\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps))).encode())


def test_one_bad_date_among_iso_dates_is_refused_not_absorbed_by_a_day_first_reading(project, settings_for):
    # 800 daily ISO-like stamps: a day-first reading parses every one of them once 2024-13-01 is among them
    stamps = list(pd.date_range("2013-06-01", periods=800, freq="D").strftime("%Y-%m-%d 00:00"))
    stamps[300] = "2024-13-01 00:00"
    p = _hourly_csv(project, "iso.csv", stamps)
    before = _snapshot(p)
    with pytest.raises(IngestError) as ei:
        ingest_file(p, time_col="when", targets=["value"], settings=settings_for("iso"))
    msg = str(ei.value)
    assert "\n" not in msg and ei.value.rule == "time_parse" and ei.value.count == 1, msg
    assert "1 values are not dates" in msg and "first '2024-13-01 00:00' at line 302" in msg, msg
    assert "--time-format" in msg, msg  # the remedy
    assert _snapshot(p) == before and not (project / "data" / "iso" / "raw.parquet").exists()


def test_three_bad_values_are_counted_as_three_and_the_first_is_named(project, settings_for):
    stamps = list(pd.date_range("2014-07-01", periods=200, freq="h").strftime("%Y-%m-%d %H:%M"))
    stamps[3], stamps[20], stamps[150] = "2024-13-01 00:00", "yesterday", "2014-02-30 10:00"
    p = _hourly_csv(project, "three.csv", stamps)
    with pytest.raises(IngestError) as ei:
        ingest_file(p, time_col="when", targets=["value"], settings=settings_for("three"))
    assert ei.value.count == 3 and "3 values are not dates" in str(ei.value), str(ei.value)
    assert "first '2024-13-01 00:00' at line 5" in str(ei.value), str(ei.value)


def test_a_typo_does_not_flip_a_month_first_file_to_day_first(project, settings_for):
    # ten days of hourly month-first stamps (every day <= 12: both orders read them) and one day-first typo
    t = pd.date_range("2024-01-01", periods=240, freq="h")
    stamps = list(t.strftime("%m/%d/%Y %H:%M"))
    stamps[100] = "13/01/2024 04:00"
    p = _hourly_csv(project, "typo.csv", stamps)
    with pytest.raises(IngestError) as ei:
        ingest_file(p, time_col="when", targets=["value"], settings=settings_for("typo"))
    msg = str(ei.value)
    assert ei.value.count == 1 and "first '13/01/2024 04:00' at line 102" in msg and "month-first" in msg, msg
    assert "--dayfirst" in msg, msg


def test_a_file_that_reads_both_ways_needs_the_order_given(project, settings_for):
    # the first of each month, day first: or the first twelve days of January, month first
    stamps = [f"01/{m:02d}/2020" for m in range(1, 13)]
    p = _hourly_csv(project, "amb.csv", stamps)
    with pytest.raises(IngestError) as ei:
        ingest_file(p, time_col="when", targets=["value"], settings=settings_for("amb"))
    msg = str(ei.value)
    assert ei.value.rule == "date_order" and "\n" not in msg, msg
    assert "'01/02/2020'" in msg and "--dayfirst" in msg and "--monthfirst" in msg, msg
    res = ingest_file(p, time_col="when", targets=["value"], dayfirst=True, settings=settings_for("amb"))
    assert list(res.frame["timestamp"]) == list(pd.date_range("2020-01-01", periods=12, freq="MS"))
    assert res.meta.freq == "MS" and res.meta.extra["time_reading"]["order"] == "day-first"
    assert res.meta.extra["time_reading"]["chosen"] == "given" and res.meta.extra["dayfirst"] is True
    res = ingest_file(p, time_col="when", targets=["value"], dayfirst=False, settings=settings_for("amb2"))
    assert list(res.frame["timestamp"]) == list(pd.date_range("2020-01-01", periods=12, freq="D"))
    # a re-run (a scheduled refresh) reads the file the way it was read before
    from cellcast.pipeline.data.ingest import source_of

    assert source_of(settings_for("amb"))["dayfirst"] is True
    assert source_of(settings_for("amb2"))["dayfirst"] is False


def test_the_chosen_reading_is_recorded(project, settings_for):
    days = pd.date_range("2021-01-01", periods=60, freq="D")
    p = _daily_csv(project, "ddmm2.csv", days.strftime("%d/%m/%Y"), range(60))
    res = ingest_file(p, time_col="when", targets=["value"], settings=settings_for("ddmm2"))
    reading = res.meta.extra["time_reading"]
    assert reading["order"] == "day-first" and reading["chosen"] == "detected" and "%d/%m/%Y" in reading["formats"]
    p = _daily_csv(project, "iso2.csv", days.strftime("%Y-%m-%d"), range(60))
    res = ingest_file(p, time_col="when", targets=["value"], settings=settings_for("iso2"))
    assert res.meta.extra["time_reading"]["order"] is None and res.meta.extra["dayfirst"] is None


def test_a_given_order_is_obeyed_and_a_value_against_it_is_refused(project, settings_for):
    days = pd.date_range("2021-01-01", periods=40, freq="D")
    p = _daily_csv(project, "mdy.csv", days.strftime("%m/%d/%Y"), range(40))
    with pytest.raises(IngestError) as ei:
        ingest_file(p, time_col="when", targets=["value"], dayfirst=True, settings=settings_for("mdy"))
    # January 13th to 31st cannot be day-first; the first nine days of February can (and are read so)
    assert "read day-first as --dayfirst asks" in str(ei.value) and ei.value.count == 19, str(ei.value)
    assert "first '01/13/2021' at line 14" in str(ei.value) and "--monthfirst" in str(ei.value)


def test_the_line_named_counts_blank_lines_and_quoted_line_breaks(project, settings_for):
    body = (
        'when,value,note\n\n2024-01-01 00:00,1,a\n2024-01-01 01:00,2,"two\nlines"\n\n'
        "2024-01-01 02:00,3,c\nnot a date,4,d\n2024-01-01 04:00,5,e\n"
    )
    p = _make(project, "lines.csv", body.encode())
    with pytest.raises(IngestError, match="first 'not a date' at line 8"):
        ingest_file(p, time_col="when", targets=["value"], settings=settings_for("lines"))


def test_compact_dates_with_a_time_format_are_dates_not_numbers(project, settings_for):
    days = pd.date_range("2021-01-01", periods=20, freq="D")
    p = _daily_csv(project, "compact.csv", days.strftime("%Y%m%d"), range(20))
    with pytest.raises(IngestError, match=r"--time-format %Y%m%d"):
        ingest_file(p, time_col="when", targets=["value"], settings=settings_for("cp"))
    res = ingest_file(p, time_col="when", targets=["value"], time_format="%Y%m%d", settings=settings_for("cp"))
    assert list(res.frame["timestamp"]) == list(days)


def test_cli_ingest_takes_the_date_order(project, cli):
    p = _hourly_csv(project, "amb.csv", [f"01/{m:02d}/2020" for m in range(1, 13)])
    args = ["ingest", "--csv", str(p), "--name", "amb", "--time-col", "when", "--target", "value"]
    r = cli(*args)
    assert r.exit_code == 2 and "--dayfirst" in r.output, r.output
    r = cli(*args, "--dayfirst")
    assert r.exit_code == 0 and "freq MS" in r.output, r.output
    r = cli(*args, "--monthfirst")
    assert r.exit_code == 0 and "freq D" in r.output, r.output


def test_a_comma_in_a_column_of_decimal_points_is_not_read_as_a_decimal_comma(project, settings_for):
    days = pd.date_range("2021-01-01", periods=20, freq="D").strftime("%Y-%m-%d")
    vals = [f"{1000 + i}.5" for i in range(20)]
    vals[7] = "1,234"  # thousands, or a typo: not 1.234
    p = _make(project, "semi.csv", ("when;value\n" + "".join(f"{d};{v}\n" for d, v in zip(days, vals))).encode())
    with pytest.raises(
        IngestError,
        match=r"1 non-numeric values \(the column writes decimals with '.'\) "
        r"\(first '1,234' at line 9\)",
    ):
        ingest_file(p, time_col="when", targets=["value"], settings=settings_for("semi"))
    # a column of decimal commas still reads as one
    p2 = _make(project, "comma.csv", ("when;value\n" + "".join(f"{d};{i},5\n" for i, d in enumerate(days))).encode())
    res = ingest_file(p2, time_col="when", targets=["value"], settings=settings_for("comma"))
    assert res.meta.decimal == "," and res.frame["value"].iloc[3] == 3.5


def test_a_time_format_with_offsets_keeps_the_zone(project, settings_for):
    t = pd.date_range("2024-03-01", periods=30, freq="h", tz="Europe/Paris")
    p = _daily_csv(project, "tzf.csv", t.strftime("%d/%m/%Y %H:%M%z"), range(30))
    res = ingest_file(
        p, time_col="when", targets=["value"], time_format="%d/%m/%Y %H:%M%z", settings=settings_for("tzf")
    )
    assert res.meta.timezone == "UTC+01:00" and res.frame["timestamp"].iloc[0] == pd.Timestamp("2024-02-29 23:00")


def test_known_future_columns_and_the_rows_after_the_last_observation(project, cli):
    """--future-features: the columns are features too; rows after the last target observation carry their values
    for the horizon, are recorded, kept out of the validated history and written as data/NAME/future.parquet."""
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.validation import validate_dataset

    n = 1000
    stamps = pd.date_range("2024-01-01", periods=n + 5, freq="h")
    load = [f"{10 + np.sin(i / 4):.4f}" for i in range(n)] + [""] * 5
    temp = [f"{i % 7}" for i in range(n)] + [""] * 5
    promo = [str(int(i % 24 < 3)) for i in range(n + 5)]
    p = project / "shop.csv"
    p.write_text(
        "when,load,temp,promo\n"
        + "".join(f"{s},{a},{b},{c}\n" for s, a, b, c in zip(stamps.strftime("%Y-%m-%d %H:%M"), load, temp, promo))
    )
    before = _snapshot(p)
    r = cli(
        "ingest",
        "--csv",
        str(p),
        "--name",
        "shop",
        "--time-col",
        "when",
        "--target",
        "load",
        "--features",
        "temp",
        "--future-features",
        "promo",
    )
    assert r.exit_code == 0, r.output
    assert "known ahead: promo (5 rows after the last observation)" in r.output
    settings = load_params().for_dataset("shop")
    _, meta = read_raw(settings)
    assert meta["features"] == ["temp", "promo"] and meta["future_features"] == ["promo"] and meta["future_rows"] == 5
    assert _snapshot(p) == before

    rep = validate_dataset(settings)
    assert rep.frame["timestamp"].iloc[-1] == stamps[n - 1]  # the history ends at the last observation
    ahead = pd.read_parquet(project / "data" / "shop" / "future.parquet")
    assert list(ahead.columns) == ["timestamp", "promo"] and list(ahead["timestamp"]) == list(stamps[n:])
    assert ahead["promo"].tolist() == [float(c) for c in promo[n:]]

    r = cli(
        "ingest",
        "--csv",
        str(p),
        "--name",
        "bad",
        "--time-col",
        "when",
        "--target",
        "load",
        "--future-features",
        "load",
    )
    assert r.exit_code == 2 and "--future-features: 'load' is a target" in r.output
    r = cli("ingest", "--bundled", "sp500", "--future-features", "x")
    assert r.exit_code == 2 and "datasets.NAME.ingest.future_features" in r.output


def test_a_bundled_dataset_states_its_known_future_values_by_its_sources_rule(project, settings_for):
    """elecdemand's WorkDay is known ahead: the rule its source states reproduces every row of 2014, and ingest adds
    the days after the last row by that rule (so the demo forecast has its known-future inputs)."""
    from cellcast.pipeline.data.datasets import _workday_vic, known_future_columns, load_bundled
    from cellcast.pipeline.data.ingest import ingest_bundled

    e = load_bundled("elecdemand")
    np.testing.assert_array_equal(_workday_vic(pd.DatetimeIndex(e["timestamp"])), e["WorkDay"].to_numpy())
    assert known_future_columns("elecdemand") == ["WorkDay"] and known_future_columns("chicago") == []

    res = ingest_bundled(settings_for("elecdemand", ingest={"future_features": ["WorkDay"]}))
    ahead = res.frame.iloc[len(e) :]
    assert res.meta.future_rows == 336 == len(ahead) and res.meta.future_features == ["WorkDay"]
    assert ahead["Demand"].isna().all() and ahead["Temperature"].isna().all()
    day = ahead.set_index("timestamp")["WorkDay"]
    assert day["2015-01-01 12:00"] == 0 and day["2015-01-02 12:00"] == 1 and day["2015-01-03 12:00"] == 0
    with pytest.raises(ConfigError, match="ingest.future_features: 'Price' is not a feature of the bundled dataset"):
        ingest_bundled(settings_for("elecdemand", ingest={"future_features": ["Price"]}))
    plain = ingest_bundled(settings_for("elecdemand", ingest={"future_features": []}))
    assert len(plain.frame) == len(e) and plain.meta.future_rows == 0


# ---------------------------------------------------------------- columns not named: read from the file


def test_a_two_column_file_needs_no_column_names(project, cli):
    """The first file a user tries is a date and a number ("Month,#Passengers"): its columns are read from it, the
    summary says which, and raw.json keeps them for a re-ingest."""
    p = project / "air.csv"
    p.write_text("Month,#Passengers\n" + "".join(f"19{49 + i // 12}-{i % 12 + 1:02d},{100 + i}\n" for i in range(36)))
    r = cli("ingest", "--csv", str(p), "--name", "air")
    assert r.exit_code == 0, r.output
    assert "time column 'Month' and target '#Passengers' read from the file's columns" in r.output
    assert "36 rows" in r.output and "freq MS" in r.output
    meta = json.loads((project / "data" / "air" / "raw.json").read_text())
    assert (meta["time_col"], meta["targets"]) == ("Month", ["#Passengers"])
    assert meta["extra"]["chosen_columns"] == {"time_col": "Month", "targets": ["#Passengers"]}


def test_the_columns_not_named_are_the_ones_left_by_those_named(project, settings_for):
    """A date column among a text column, an id and numbers: the given parts (features, id) are never chosen; a
    semicolon file with decimal commas holds numbers; a Parquet file's types are read as they are."""
    semi = project / "shop.csv"
    rows = "".join(f"{d:02d}.01.2024;Filiale Nord;{d},5;{d % 3}\n" for d in range(1, 29))
    semi.write_text("Datum;Name;Umsatz;Aktion\n" + rows)
    got = ingest_file(semi, time_col=None, targets=[], features=["Aktion"], settings=settings_for("shop"))
    assert (got.meta.time_col, got.meta.targets, got.meta.features) == ("Datum", ["Umsatz"], ["Aktion"])
    assert got.frame["Umsatz"].iloc[:2].tolist() == [1.5, 2.5]

    saved = project / "saved.csv"  # pandas' to_csv writes the index, unnamed: row numbers, not a series
    pd.DataFrame({"day": pd.date_range("2024-01-01", periods=30).strftime("%Y-%m-%d"), "sales": 3.0}).to_csv(saved)
    got = ingest_file(saved, time_col=None, targets=[], settings=settings_for("saved"))
    assert (got.meta.time_col, got.meta.targets) == ("day", ["sales"])

    pq = project / "loads.parquet"
    t = pd.date_range("2024-01-01", periods=48, freq="h")
    pd.DataFrame({"when": t, "load": np.arange(48.0)}).set_index("when").to_parquet(pq)
    got = ingest_file(pq, time_col=None, targets=[], settings=settings_for("loads"))
    assert (got.meta.time_col, got.meta.targets) == ("when", ["load"])
    got = ingest_file(pq, time_col="when", targets=[], settings=settings_for("loads2"))
    assert got.meta.extra["chosen_columns"] == {"targets": ["load"]}


@pytest.mark.parametrize(
    ("header", "row", "rule", "needles"),
    [
        ("date,load,temp", "2024-01-01 {h:02d}:00,{h}.5,{h}.2", "target", ["2 columns hold ('load', 'temp')"]),
        ("start,end,load", "2024-01-01 {h:02d}:00,2024-01-02 {h:02d}:00,{h}", "time_column", ["2 columns read"]),
        ("step,load", "{h},{h}", "time_column", ["no column reads as dates", "--time-col"]),
    ],
)
def test_columns_the_file_leaves_open_are_refused_naming_the_candidates(project, cli, header, row, rule, needles):
    p = project / "open.csv"
    p.write_text(header + "\n" + "".join(row.format(h=h) + "\n" for h in range(24)))
    before = _snapshot(p)
    r = cli("ingest", "--csv", str(p), "--name", "open")
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {p}"), r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert _snapshot(p) == before
    (q,) = list((project / "quarantine").iterdir())
    assert json.loads((q / "report.json").read_text())["rule"] == rule
