"""Validation: the GX suite, the duplicate/gap/missing policy, the window rule, reports and quarantine."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cellcast.pipeline.data.ingest import ingest_bundled, ingest_file
from cellcast.pipeline.data.validation import min_rows_for_windows, validate_dataset, validate_frame
from cellcast.pipeline.errors import DataValidationError

SMALL = {"window": {"lookback": 24, "horizon": 6}}
META = {"targets": ["y"], "features": ["x"], "freq": "h"}


def frame(n: int = 300) -> pd.DataFrame:
    t = np.arange(n, dtype="float64")
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="h"),
            "y": 10 + np.sin(2 * np.pi * t / 24),
            "x": t / n,
        }
    )


def ingest_frame(df: pd.DataFrame, project: Path, settings):
    """Write a frame as CSV and ingest it, as a user would (freq declared so gaps do not confuse inference)."""
    p = project / f"{settings.dataset}.csv"
    df.to_csv(p, index=False)
    ingest_file(p, time_col="timestamp", targets=["y"], features=["x"], freq="h", settings=settings)
    return p


def _snap(p: Path):
    return p.read_bytes(), p.stat().st_mtime_ns


# every refusal names its remedy
REMEDY = {
    "finite": "fix or blank those cells",
    "unique": "--dedupe first|last|mean",
    "long_gap": "--long-gaps segment",
    "in_range": "widen validate.bounds",
    "min_rows": "supply more rows",
    "min_windows": "supply more rows",
}


def assert_rejected(project: Path, name: str, err: DataValidationError, column: str, rule: str, count: int | None):
    msg = str(err)
    assert REMEDY[rule] in msg, msg
    if rule in ("min_rows", "min_windows"):  # table-level: says what is too short and what to change
        assert "\n" not in msg and f"too short ({rule}): {count} rows, need at least" in msg, msg
        assert "window.lookback" in msg, msg
    else:
        assert "\n" not in msg and f"column '{column}': {rule} failed for" in msg, msg
        if count is not None:
            assert f"failed for {count} rows" in msg, msg
    assert msg.startswith(str(Path("data") / name / "raw.parquet"))
    # report and Data Docs kept, data and report in quarantine, nothing validated written
    rep = json.loads((project / "reports" / name / "validation.json").read_text())
    assert rep["success"] is False and rep["error"] == msg
    assert any(f["column"] == column and f["rule"] == rule for f in rep["failures"])
    assert (project / "reports" / name / "data_docs" / "index.html").is_file()
    q = Path(err.quarantine_path)
    assert q.parent == Path("quarantine") and q.name.startswith(f"{name}-")
    assert json.loads((q / "report.json").read_text())["error"] == msg
    assert len(pd.read_parquet(q / "data.parquet")) == rep["rows_in"]
    assert not (project / "data" / name / "validated.parquet").exists()


def test_clean_series_passes_and_writes_everything(project, settings_for):
    s = settings_for("syn", **SMALL)
    src = ingest_frame(frame(), project, s)
    raw = project / "data/syn/raw.parquet"
    before, before_src = _snap(raw), _snap(src)
    rep = validate_dataset(s)
    assert rep.success and rep.rows_out == 300 and rep.filled == {} and rep.breaks == []
    assert rep.gx["success"] and rep.gx["evaluated"] >= 10 and rep.failures == []
    assert rep.windows["lookback"] == 24 and min(rep.windows[k] for k in ("train", "val", "test")) >= 1
    vpq, vjs = project / "data/syn/validated.parquet", project / "data/syn/validated.json"
    meta = json.loads(vjs.read_text())
    assert meta["data_md5"] == hashlib.md5(vpq.read_bytes()).hexdigest()
    assert meta["report"]["success"]
    # no range is profiled from the frame it would check (it could never fail): only declared ones are checked
    assert meta["bounds"] == {} and rep.bounds == {}
    assert (project / "reports/syn/validation.json").is_file()
    html = list((project / "reports/syn/data_docs").rglob("*.html"))
    assert (project / "reports/syn/data_docs/index.html") in html and len(html) >= 2
    assert _snap(raw) == before and _snap(src) == before_src
    pd.testing.assert_frame_equal(pd.read_parquet(vpq), rep.frame)


def test_inf_is_rejected(project, settings_for):
    df = frame()
    df.loc[[10, 20], "x"] = np.inf
    s = settings_for("inf", **SMALL)
    ingest_frame(df, project, s)
    before = _snap(project / "data/inf/raw.parquet")
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s)
    assert_rejected(project, "inf", ei.value, "x", "finite", 2)
    assert "inf" in str(ei.value)
    assert _snap(project / "data/inf/raw.parquet") == before


def test_duplicates_rejected_by_default(project, settings_for):
    df = pd.concat([frame(), frame().iloc[[5]]]).sort_values("timestamp", kind="stable")
    s = settings_for("dup", **SMALL)
    ingest_frame(df, project, s)
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s)
    assert_rejected(project, "dup", ei.value, "timestamp", "unique", 2)


@pytest.mark.parametrize("mode,expected", [("first", 1.0), ("last", 3.0), ("mean", 2.0)])
def test_dedupe_modes(mode, expected, project, settings_for):
    df = frame()
    extra = df.iloc[[5, 5]].copy()
    df.loc[5, "y"], extra["y"] = 1.0, [2.0, 3.0]
    df = pd.concat([df, extra]).sort_values("timestamp", kind="stable", ignore_index=True)
    s = settings_for("dd", ingest={"dedupe": mode}, **SMALL)
    rep = validate_frame(df, META, s)
    assert rep.frame.loc[5, "y"] == expected and rep.rows_out == 300
    assert rep.dedupe == {"mode": mode, "duplicated_rows": 2, "timestamps": 1}
    assert not Path("quarantine").exists()


def test_short_gaps_and_missing_cells_are_interpolated(project, settings_for):
    df = frame().drop(index=[50, 51, 52])  # a 3-step gap in time
    df.loc[100, "y"] = np.nan  # a missing cell
    df.loc[200:203, "x"] = np.nan  # 4 missing cells = max_fill_steps
    s = settings_for("gap", **SMALL)
    ingest_frame(df, project, s)
    rep = validate_dataset(s)
    assert rep.inserted_rows == 3 and rep.rows_out == 300
    assert rep.filled == {"y": 4, "x": 7}
    out = rep.frame
    assert out["timestamp"].diff().iloc[1:].eq(pd.Timedelta("1h")).all() and out[["y", "x"]].notna().all().all()
    ref = frame()
    # linear between the neighbours of each run
    assert out.loc[51, "y"] == pytest.approx(ref.loc[49, "y"] + 2 / 4 * (ref.loc[53, "y"] - ref.loc[49, "y"]))
    assert out.loc[100, "y"] == pytest.approx((ref.loc[99, "y"] + ref.loc[101, "y"]) / 2)
    assert out.loc[201, "x"] == pytest.approx(ref.loc[201, "x"])  # x is linear in time: exact
    saved = json.loads((project / "reports/gap/validation.json").read_text())
    assert saved["filled"] == {"y": 4, "x": 7} and saved["inserted_rows"] == 3


def test_long_gap_rejected(project, settings_for):
    df = frame().drop(index=range(100, 110))
    s = settings_for("long", **SMALL)
    ingest_frame(df, project, s)
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s)
    assert_rejected(project, "long", ei.value, "timestamp", "long_gap", 1)
    assert "10 missing steps from 2024-01-05 04:00:00" in str(ei.value)
    # a long run of empty cells names its column
    df = frame()
    df.loc[30:40, "x"] = np.nan
    with pytest.raises(DataValidationError, match="column 'x': long_gap failed for 1 rows"):
        validate_frame(df, META, s)


def test_long_gap_segment_keeps_a_break(project, settings_for):
    df = frame(400).drop(index=range(200, 210))
    s = settings_for("seg", ingest={"long_gaps": "segment"}, **SMALL)
    rep = validate_frame(df, META, s)
    assert rep.breaks == [{"start": "2024-01-09 08:00:00", "end": "2024-01-09 17:00:00", "steps": 10}]
    assert rep.rows_out == 400 and rep.frame[["y", "x"]].isna().all(axis=1).sum() == 10
    whole = validate_frame(frame(400), META, s)
    # no window crosses the break: exactly the windows overlapping the 10 NaN rows disappear
    lost = sum(whole.windows[k] for k in ("train", "val", "test")) - sum(
        rep.windows[k] for k in ("train", "val", "test")
    )
    assert lost == 10 + 24 + 6 - 1


def test_out_of_range(project, settings_for):
    df = frame()
    df.loc[7, "y"] = 50.0
    s = settings_for("rng", validate={"bounds": {"y": (0.0, 20.0)}}, **SMALL)
    ingest_frame(df, project, s)
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s)
    assert_rejected(project, "rng", ei.value, "y", "in_range", 1)
    assert "outside [0, 20] (validate.bounds)" in str(ei.value) and "widen validate.bounds" in str(ei.value)
    # forecast time: new data checked against given bounds (a model's, profiled on its training rows)
    new = frame(50)
    new.loc[3, "x"] = 7.0
    with pytest.raises(
        DataValidationError,
        match=r"column 'x': in_range failed for 1 rows \(e.g. 7.0\): outside "
        r"\[0, 1\] \(the model's\)",
    ):
        validate_frame(
            new,
            META,
            settings_for("rng2", **SMALL),
            bounds={"x": [0, 1]},
            bounds_origin="the model's",
            require_windows=False,
        )
    # a value far outside every other is not in range merely because the frame itself was profiled
    wild = frame()
    wild.loc[7, "y"] = 1e9
    assert validate_frame(wild, META, settings_for("rng3", **SMALL)).bounds == {}


def test_too_short_for_one_window(project, settings_for):
    s = settings_for("short", **SMALL)
    need = min_rows_for_windows(s, 24, 6)
    ingest_frame(frame(need - 1), project, s)
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s)
    assert_rejected(project, "short", ei.value, "timestamp", "min_rows", need - 1)
    # the batch-forecast path validates recent data without the window rule
    rep = validate_frame(frame(need - 1), META, s, require_windows=False, quarantine=False)
    assert rep.success and rep.windows == {}
    assert validate_frame(frame(need), META, s).success


def test_off_grid_timestamps_are_snapped(project, settings_for):
    df = frame()
    df.loc[[10, 11, 12], "timestamp"] += pd.Timedelta("4min")  # a drifting clock
    rep = validate_frame(df, META, settings_for("snap", **SMALL))
    assert rep.snapped == {"off_grid": 3, "merged": 0} and rep.rows_out == 300
    assert rep.frame["timestamp"].equals(frame()["timestamp"])


def test_real_bundled_data(project, settings_for):
    s = settings_for("sp500")
    ingest_bundled(s)
    rep = validate_dataset(s)
    # market holidays are the gaps: filled (at most 4 business days in a row, after 11 September 2001)
    assert rep.success and rep.inserted_rows == 185 and rep.filled == {"adj_close": 185} and rep.seconds < 10
    assert rep.frame["timestamp"].iloc[-1] == pd.Timestamp("2018-12-31")
    g = settings_for("glucose", ingest={"dedupe": "reject", "long_gaps": "segment"})
    ingest_bundled(g)
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(g)
    assert_rejected(project, "glucose", ei.value, "timestamp", "unique", 6)


def test_cli_validate(project, settings_for):
    from cellcast.commands.data import register

    app = typer.Typer()
    register(app)
    run = CliRunner()
    df = pd.concat([frame(), frame().iloc[[5]]]).sort_values("timestamp", kind="stable")
    (project / "params.yaml").write_text(
        (project / "params.yaml")
        .read_text()
        # the test split kept at its share (test_fraction_max: no growth), so promotion could not decide on it
        .replace(
            "datasets:\n", "datasets:\n  dup:\n    window: {lookback: 24, horizon: 6, test_fraction_max: 0.15}\n", 1
        )
    )
    ingest_frame(df, project, settings_for("dup"))
    before = _snap(project / "data/dup/raw.parquet")
    r = run.invoke(app, ["validate", "dup"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "column 'timestamp': unique failed for 2 rows" in lines[0]
    assert "run `cellcast validate dup --dedupe first|last|mean`" in lines[0] and "NAME" not in lines[0], lines[0]
    r = run.invoke(app, ["validate", "dup", "--dedupe", "mean"])
    assert r.exit_code == 0 and "1 duplicates resolved" in r.output, r.output
    # a test split the data rule accepts but promotion's statistical test cannot decide on: said before any training
    import re

    origins = int(re.search(r"\((\d+) non-overlapping test windows\)", r.output).group(1))
    assert (
        origins < 10
        and "fewer than evaluate.min_decision_paths 10: a model trains and registers but cannot be promoted" in r.output
    ), r.output
    assert _snap(project / "data/dup/raw.parquet") == before
    r = run.invoke(app, ["validate", "dup", "--dedupe", "median"])
    assert r.exit_code == 2 and "--dedupe 'median'" in r.output
    r = run.invoke(app, ["validate", "nothing"])
    assert r.exit_code == 2 and "not ingested" in r.output


def test_a_five_row_series_is_refused_saying_how_many_rows_it_needs(project, settings_for):
    s = settings_for("tiny")  # params.yaml as shipped: auto window, default test rule
    ingest_frame(frame(5), project, s)
    with pytest.raises(DataValidationError) as ei:
        validate_dataset(s)
    need = min_rows_for_windows(s, 2, 1)  # a 5-row hourly series resolves to lookback 2, horizon 1
    assert need > 5
    assert_rejected(project, "tiny", ei.value, "timestamp", "min_rows", 5)
    msg = str(ei.value)
    assert f"5 rows, need at least {need}" in msg and "lookback 2, horizon 1" in msg, msg
    need_test = s.ingest.min_test_horizons
    assert f"{need_test} non-overlapping test windows" in msg and "ingest.min_test_horizons" in msg, msg


def test_too_few_non_overlapping_test_windows_after_the_policy(project, settings_for):
    # 60 test rows give 55 test windows of horizon 6: 10 non-overlapping; a break there leaves 4
    s = settings_for("brk", ingest={"long_gaps": "segment", "min_test_horizons": 8}, **SMALL)
    df = frame(400).drop(index=range(365, 375))
    with pytest.raises(
        DataValidationError,
        match=r"too short \(min_test_horizons\): 400 rows leave 4 non-overlapping "
        r"test window\(s\) of horizon 6, need 8",
    ) as ei:
        validate_frame(df, META, s)
    assert "ingest.min_test_horizons" in str(ei.value)
    ok = validate_frame(frame(400), META, s)
    assert ok.windows["test_origins"] == 10


def test_cli_long_gaps_option_and_the_refusal_that_names_it(project, settings_for):
    from cellcast.commands.data import register

    app = typer.Typer()
    register(app)
    run = CliRunner()
    (project / "params.yaml").write_text(
        (project / "params.yaml")
        .read_text()
        .replace("datasets:\n", "datasets:\n  gappy:\n    window: {lookback: 24, horizon: 6}\n", 1)
    )
    ingest_frame(frame(400).drop(index=range(200, 210)), project, settings_for("gappy"))
    r = run.invoke(app, ["validate", "gappy"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "long_gap failed" in lines[0], r.output
    assert "cellcast validate gappy --long-gaps segment" in lines[0] and "ingest.max_fill_steps" in lines[0], r.output
    assert "NAME" not in lines[0], r.output  # the remedy names this dataset, nothing generic
    r = run.invoke(app, ["validate", "gappy", "--long-gaps", "segment"])
    assert r.exit_code == 0 and "1 breaks" in r.output, r.output
    # a test split the data rule accepts but promotion's test cannot decide on is said before any training
    import re

    origins = int(re.search(r"\((\d+) non-overlapping test windows\)", r.output).group(1))
    assert origins == 10 and "min_decision_paths" not in r.output, r.output  # enough: nothing to say
    r = run.invoke(app, ["validate", "gappy", "--long-gaps", "bridge"])
    assert r.exit_code == 2 and "--long-gaps 'bridge': must be one of reject, segment" in r.output, r.output

    # the policy given is kept for the dataset: a later validation (train, a scheduled refresh) applies it, as does
    # the forecast's check of the latest rows, though params.yaml still says reject
    from cellcast.pipeline.data.validation import recorded_policy, validate_dataset, with_recorded_policy

    s = settings_for("gappy")
    assert s.ingest.long_gaps == "reject" and recorded_policy(s) == {"long_gaps": "segment"}
    assert with_recorded_policy(s).ingest.long_gaps == "segment"
    assert len(validate_dataset(s).breaks) == 1
    r = run.invoke(app, ["validate", "gappy", "--long-gaps", "reject"])  # given again: replaced
    assert r.exit_code == 2 and recorded_policy(s) == {"long_gaps": "reject"}, r.output
