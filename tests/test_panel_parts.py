"""A panel larger than `ingest.partition_rows`, brought as Parquet, is ingested a part at a time: the same raw.parquet
and the same per-series description as a whole read, whole series per row group; series that do not keep to one
part in order are read whole; the window set and the batch forecast read the validated panel a partition at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cellcast.pipeline.catalog import read_raw
from cellcast.pipeline.data.ingest import ingest_file
from cellcast.pipeline.errors import IngestError


def series(sid: str, n: int, start: str = "2024-01-01", seed: int = 0, capacity: float = 100.0) -> pd.DataFrame:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "sensor": sid,
            "ts": pd.date_range(start, periods=n, freq="h"),
            "flow": 10 + np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.1, n),
            "temp": t / n,
            "capacity": capacity,
        }
    )


def panel(n: int = 12) -> pd.DataFrame:
    parts = [series(f"S{i:02d}", 150 + 10 * i, f"2024-01-0{1 + i % 3}", seed=i, capacity=50.0 + i) for i in range(n)]
    df = pd.concat(parts, ignore_index=True)
    df.loc[df["sensor"] == "S03", "flow"] = df.loc[df["sensor"] == "S03", "flow"].where(lambda x: x.index % 17 != 0)
    return df


def ingest(path, settings, features=("temp", "capacity"), fmt="parquet", **kw):
    return ingest_file(
        path,
        time_col="ts",
        targets=["flow"],
        features=list(features),
        id_cols=["sensor"],
        fmt=fmt,
        settings=settings,
        **kw,
    )


def folder_of(df: pd.DataFrame, root, per_file: int, order=None):
    root.mkdir()
    ids = sorted(df["sensor"].unique())
    chunks = [ids[i : i + per_file] for i in range(0, len(ids), per_file)]
    for k, chunk in enumerate(chunks if order is None else [chunks[j] for j in order]):
        df[df["sensor"].isin(chunk)].to_parquet(root / f"part-{k:03d}.parquet", index=False)
    return root


def same_as_whole(project, settings_for, src, name: str, fmt: str = "parquet") -> dict:
    whole = ingest(src, settings_for(name + "_whole"), fmt=fmt)
    parted = ingest(src, settings_for(name, ingest={"partition_rows": 500}), fmt=fmt)
    a, ma = read_raw(settings_for(name + "_whole"))
    b, mb = read_raw(settings_for(name))
    assert whole.meta.panel.get("read") is None
    assert a.equals(b) and list(b.columns) == ["series_id", "sensor", "timestamp", "flow", "temp"]
    assert mb["panel"]["series"] == ma["panel"]["series"] and mb["static"] == ma["static"]
    for k in ("rows", "start", "end", "gaps", "duplicates", "columns", "freq", "features", "schedule", "unsorted"):
        assert mb[k] == ma[k], k
    assert mb["static"]["columns"] == ["capacity"] and mb["static"]["values"]["S05"] == {"capacity": 55.0}
    # whole series per row group, up to 500 rows each
    f = pq.ParquetFile(project / f"data/{name}/raw.parquet")
    assert f.metadata.num_row_groups == mb["panel"]["row_groups"] > 1
    groups = [f.read_row_group(i).column("series_id").to_pylist() for i in range(f.metadata.num_row_groups)]
    firsts = [g[0] for g in groups]
    assert len(set(firsts)) == len(firsts) and all(len(g) <= 500 or len(set(g)) == 1 for g in groups)
    assert sum(len(set(g)) for g in groups) == 12
    assert parted.meta.rows == len(b) and len(parted.frame) == 0
    return mb


def test_a_folder_of_parquet_files_is_ingested_part_by_part_as_if_read_whole(project, settings_for):
    src = folder_of(panel(), project / "panel", per_file=2)
    meta = same_as_whole(project, settings_for, src, "folder")
    # 2 series per file (310-490 rows): files are taken together until a part holds 500 rows
    assert meta["panel"]["read"]["parts"] == 3


def test_one_parquet_file_whose_row_groups_cut_series_is_read_by_row_groups(project, settings_for):
    src = project / "panel.parquet"
    pq.write_table(pa.Table.from_pandas(panel(), preserve_index=False), src, row_group_size=333)
    assert pq.ParquetFile(src).metadata.num_row_groups > 6
    meta = same_as_whole(project, settings_for, src, "file")
    assert meta["panel"]["read"]["parts"] > 1  # a series cut by a row group is carried into the next part


def test_a_csv_panel_is_read_in_blocks_of_rows_as_if_read_whole(project, settings_for):
    """A CSV over ingest.partition_rows is parsed 500 rows at a time (series cut by a block carried into the next):
    the same raw.parquet and description as the whole read, and the dialect it found."""
    src = project / "panel.csv"
    df = panel()
    df["flow"] = df["flow"].round(6)
    df.to_csv(src, sep=";", index=False)
    meta = same_as_whole(project, settings_for, src, "csv", fmt="csv")
    assert meta["panel"]["read"]["parts"] > 1 and meta["delimiter"] == ";" and meta["encoding"] == "utf-8"
    # a block that breaks the parser's rule (a row with a cell too many) is named as the whole read names it
    with open(src, "a") as f:
        f.write("S99;2024-01-01 00:00:00;1;2;3;4\n")
    with pytest.raises(IngestError, match=r"panel.csv: rows do not split like the header with delimiter ';'"):
        ingest(src, settings_for("csv_bad", ingest={"partition_rows": 500}), fmt="csv")
    # a refusal in a later block names the line of the file, as the whole read does
    df["ts"] = df["ts"].astype(str)
    df.loc[1700, "ts"] = "not a date"
    df.to_csv(src, index=False)
    with pytest.raises(IngestError, match=r"first 'not a date' at line 1702, series 'S08'"):
        ingest(src, settings_for("csv_date", ingest={"partition_rows": 500}), fmt="csv")


def test_files_whose_series_come_out_of_order_are_read_whole(project, settings_for):
    src = folder_of(panel(), project / "panel", per_file=3, order=[1, 0, 2, 3])
    res = ingest(src, settings_for("shuffled", ingest={"partition_rows": 500}))
    out, meta = read_raw(settings_for("shuffled"))
    assert "read" not in meta["panel"] and len(res.frame) == len(out) == len(panel())
    assert out["series_id"].is_monotonic_increasing


def test_a_refusal_in_a_later_part_names_the_column_and_the_series(project, settings_for):
    df = panel()
    df.loc[(df["sensor"] == "S09") & (df.index % 2 == 0), "capacity"] = 999.0
    src = folder_of(df, project / "panel", per_file=2)
    with pytest.raises(IngestError, match=r"column 'capacity' is not constant within series 'S09' \(59 and 999;"):
        ingest(src, settings_for("bad", ingest={"partition_rows": 500}), ["temp"], static=["capacity"])
    assert (project / "quarantine").is_dir() and not (project / "data/bad/raw.parquet").exists()


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    """The mixed panel (test_panels) ingested and validated in row groups of up to 500 rows: (work dir, settings)."""
    from test_panel_model import validated_mixed

    return validated_mixed(tmp_path_factory)


@pytest.fixture(scope="module")
def windowed(validated):
    """`validated` with its window set built (data/city/windows.npz): (work dir, settings)."""
    from cellcast.pipeline.data.window import window_dataset

    work, s = validated
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        window_dataset(s)
    return validated


def test_the_window_set_read_partition_by_partition_is_the_one_read_whole(validated, monkeypatch):
    from cellcast.pipeline.catalog import panel_partitions, read_validated_panel, validated_paths
    from cellcast.pipeline.data.panel_windows import build_panel_windows
    from cellcast.pipeline.data.window import window_dataset

    work, s = validated
    monkeypatch.chdir(work)
    assert panel_partitions(validated_paths(s)[0]) >= 3
    parted = window_dataset(s)
    frame, meta = read_validated_panel(s)
    whole = build_panel_windows(frame, meta, settings=s)
    assert parted.meta == whole.meta and parted.series_ids == whole.series_ids
    for a, b in ((parted.values, whole.values), (parted.future, whole.future), (parted.timestamps, whole.timestamps)):
        np.testing.assert_array_equal(a, b)
    for k in whole.starts:
        np.testing.assert_array_equal(parted.starts[k], whole.starts[k])
    np.testing.assert_array_equal(parted.offsets, whole.offsets)
    assert _mapped(parted.values) and _mapped(parted.timestamps) and not _mapped(whole.values)
    # the stage run again (other windows, so other scales) while a set is mapped from windows.npz: a new file is put
    # in place, and the mapped one reads on as it was
    before = np.array(parted.values)
    other = window_dataset(s.model_copy(update={"window": s.window.model_copy(update={"horizon": 12})}))
    assert not np.array_equal(np.asarray(other.values), before, equal_nan=True)
    np.testing.assert_array_equal(parted.values, before)
    window_dataset(s)  # the module's window set as the other tests read it


def _mapped(a) -> bool:
    """Whether `a` reads its memory from a mapped file (np.memmap), not from memory of its own."""
    import mmap

    while a is not None and not isinstance(a, mmap.mmap):
        a = getattr(a, "base", None) if isinstance(a, np.ndarray) else getattr(a, "obj", None)
    return a is not None


def test_the_window_set_built_in_files_is_the_one_built_in_memory(validated, monkeypatch, tmp_path):
    """Spilled to files as the series come (the window stage's flat route): the same arrays, known-future columns
    and static columns included, and the same window starts of every split, mapped from the files."""
    import copy

    from cellcast.pipeline.catalog import panel_partitions, read_partition, read_validated_panel, validated_paths
    from cellcast.pipeline.data.panel_windows import build_panel_windows

    work, s = validated
    monkeypatch.chdir(work)
    _, meta = read_validated_panel(s)
    meta = copy.deepcopy(meta)
    meta["future_features"] = ["temp"]
    ids = list(meta["panel"]["series"])
    meta["static"] = {"columns": ["capacity"], "values": {sid: {"capacity": 10.0 + i} for i, sid in enumerate(ids)}}
    pq = validated_paths(s)[0]
    parts = [read_partition(pq, [i]) for i in range(panel_partitions(pq))]
    whole = build_panel_windows(iter(parts), meta, settings=s)
    spilled = build_panel_windows(iter(parts), meta, settings=s, spill=tmp_path / "spill")
    assert spilled.meta == whole.meta and spilled.meta.future_names[-2:] == ["temp", "capacity"]
    for a, b in (
        (spilled.values, whole.values),
        (spilled.future, whole.future),
        (spilled.timestamps, whole.timestamps),
    ):
        np.testing.assert_array_equal(a, b)
        assert _mapped(a)
    np.testing.assert_array_equal(spilled.filled, whole.filled)
    for k in whole.starts:
        np.testing.assert_array_equal(spilled.starts[k], whole.starts[k])
        assert spilled.starts[k].dtype == np.int64
    assert all(_mapped(spilled.starts[k]) for k in ("train", "val", "test"))


@pytest.mark.parametrize("width", [1, 2, 3])
def test_the_panel_moments_summed_a_series_at_a_time_are_numpys_over_all_rows(width):
    """The model's input scaling (WindowMeta mean / std): numpy's nanmean / nanstd over every series' training rows,
    to the bit, with one series' rows in memory at a time."""
    import warnings

    from cellcast.pipeline.data.panel_windows import _train_moments

    rng = np.random.default_rng(width)
    lengths = rng.integers(20, 3000, 40)
    offsets = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    n = int(offsets[-1] + lengths[-1] + 1)
    values = (rng.normal(0, 1, (n, width)) * rng.lognormal(0, 2, width)).astype(np.float32)
    values[rng.random((n, width)) < 0.02] = np.nan
    filled = rng.random((n, width)) < 0.05
    train_end = (lengths * 0.7).astype(int)
    rows = np.zeros(n, bool)
    for o, e in zip(offsets, train_end):
        rows[o : o + e] = True
    for f in (None, filled):
        train = values[rows] if f is None else np.where(f[rows], np.nan, values[rows])
        mean, std = _train_moments(values, f, offsets, train_end)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert np.array_equal(mean, np.nanmean(train, axis=0)) and mean.dtype == np.float32
            assert np.array_equal(std, np.nanstd(train, axis=0)) and std.dtype == np.float32


def test_the_batch_forecast_written_two_series_at_a_time_is_the_one_batch_forecast(windowed, monkeypatch, tmp_path):
    """The batch forecast reads a partition at a time and forecasts a chunk of series per model call, each chunk a row
    group of the file: the file holds the rows of one model call over every series (the whole panel read at once)."""
    import pyarrow.parquet as pq
    import torch

    from cellcast.pipeline.catalog import SERIES_ID, panel_partitions, read_validated_panel, validated_paths
    from cellcast.pipeline.data.window import load_windows
    from cellcast.pipeline.engine.inference import OnnxForecaster
    from cellcast.pipeline.engine.onnx_export import export_onnx
    from cellcast.pipeline.modeling.model import Forecaster
    from cellcast.pipeline.modeling.train import Candidate, model_spec
    from cellcast.pipeline.registry.metadata import model_metadata
    from cellcast.pipeline.serving.forecast import forecast_panel_frame, forecast_validated_panel

    work, s = windowed
    monkeypatch.chdir(work)
    ws = load_windows(s)
    model = Forecaster(model_spec(ws, Candidate("gru", 8, 1), s, 24), generator=torch.Generator().manual_seed(0))
    meta = model_metadata(ws, s, "gru")
    path = export_onnx(model.eval(), tmp_path / "m.onnx", meta, example=ws.inputs(ws.starts["test"][:2])[0])
    eng = OnnxForecaster.from_path(path, device="cpu")
    frame, _ = read_validated_panel(s)
    ref, _, ref_skipped = forecast_panel_frame(
        eng, frame, version=3, model_name="m", id_frame=frame[[SERIES_ID, "sensor"]]
    )
    for chunk in (2, 1000):
        done = forecast_validated_panel(s, eng, tmp_path / f"f{chunk}.parquet", version=3, model_name="m", chunk=chunk)
        out = pd.read_parquet(done.path)
        pd.testing.assert_frame_equal(out, ref)
        assert done.skipped == ref_skipped and (done.series, done.rows) == (ref["series_id"].nunique(), len(ref))
        assert (done.first, done.last) == (ref["timestamp"].min(), ref["timestamp"].max())
        assert done.cold_start == ref.loc[ref["cold_start"], "series_id"].nunique()
        groups = pq.ParquetFile(done.path).metadata.num_row_groups
        assert (done.series / 2 <= groups < done.series) if chunk == 2 else groups == 1  # a row group per call
    assert done.series >= 3 and panel_partitions(validated_paths(s)[0]) > 1 and set(out["model_version"]) == {"3"}


def test_the_per_series_scores_taken_a_series_at_a_time_are_those_of_every_window_gathered_at_once(
    windowed, monkeypatch
):
    """panel_eval.series_table gathers one series' targets and baselines at a time; the scores are those of the
    targets and baselines of every test and cold-start window gathered at once, picked out per series."""
    from cellcast.pipeline.data.panel_windows import COLD
    from cellcast.pipeline.data.window import load_windows
    from cellcast.pipeline.modeling.evaluate import metrics, seasonal_naive
    from cellcast.pipeline.modeling.panel_eval import series_table

    work, s = windowed
    monkeypatch.chdir(work)
    ws = load_windows(s)
    rng = np.random.default_rng(0)
    pred = {k: rng.normal(size=(len(ws.starts[k]), ws.meta.horizon, len(ws.meta.targets))) for k in ("test", COLD)}
    table = series_table(ws, pred, [24])
    assert len(table) >= 3 and set(table["status"]) == {"ok", "cold_start"}
    ones = np.ones(len(ws.meta.targets))
    for split, status in (("test", "ok"), (COLD, "cold_start")):
        starts = ws.starts[split]
        idx, y, mask = ws.series_index(starts), ws.targets(starts), ws.target_mask(starts)
        naive = seasonal_naive(ws, starts, 24)
        for i in np.unique(idx):
            sel = idx == i
            mk = None if mask is None else mask[sel]
            row = table[(table["series_id"] == ws.series_ids[int(i)]) & (table["status"] == status)].iloc[0]
            assert row["windows"] == sel.sum() and row["mase"] == metrics(y[sel], pred[split][sel], ones, mk)["mase"]
            want = metrics(y[sel], naive[sel], ones, mk)["mase"] if np.isfinite(naive[sel]).all() else np.nan
            np.testing.assert_equal(row["mase_seasonal_naive_24"], want)


def test_the_known_future_table_made_a_slice_of_rows_at_a_time_is_the_whole_one():
    from cellcast.pipeline.data.panel_windows import _future_table_by_rows
    from cellcast.pipeline.data.windowset import future_table

    ts = pd.date_range("2024-12-20", periods=500, freq="h").to_numpy()
    cal = {"parts": ["tod", "dow", "doy", "holiday"], "country": "GB", "timezone": None}
    user = {"price": np.arange(500, dtype=np.float32)}
    whole, names, kinds = future_table(ts, "h", cal, user)
    sliced, names2, kinds2 = _future_table_by_rows(ts, "h", cal, user, rows=77)
    assert names == names2 and kinds == kinds2 and whole.shape == (500, 8) and whole[:, 6].any()
    np.testing.assert_array_equal(sliced, whole)


def test_a_window_stage_killed_midway_leaves_no_build_folder_past_the_next_one(tmp_path):
    """The panel's window set is built in `.windows-<pid>-*` beside windows.npz; a stage killed midway leaves its
    folder, which the next stage removes, while a live process's folder (mid-build) is left alone."""
    import os
    import subprocess
    import sys

    from cellcast.pipeline.data.window import SPILL_PREFIX, remove_dead_spills

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = tmp_path / f"{SPILL_PREFIX}{p.pid}-abc"
    (dead / "a").mkdir(parents=True)
    (dead / "a" / "values.bin").write_bytes(b"\0" * 64)
    live = tmp_path / f"{SPILL_PREFIX}{os.getpid()}-xyz"
    live.mkdir()
    other = tmp_path / f"{SPILL_PREFIX}notapid"
    other.mkdir()
    kept = tmp_path / "windows.npz"
    kept.write_bytes(b"x")

    assert remove_dead_spills(tmp_path) == [dead]
    assert not dead.exists() and live.is_dir() and other.is_dir() and kept.read_bytes() == b"x"


def test_a_panel_scored_a_few_series_at_a_time_is_scored_as_with_every_window_at_once(windowed, monkeypatch):
    """assessment.score_panel forecasts whole series a part at a time: the per-series rows, the aggregate and the
    crossings are those of every window forecast at once; the split's means and per-step means pooled from the parts
    agree with the means over every window to a float64 sum's rounding (the same to the bit in one part)."""
    from cellcast.pipeline.data.panel_windows import COLD
    from cellcast.pipeline.data.window import load_windows
    from cellcast.pipeline.modeling import panel_eval
    from cellcast.pipeline.modeling.evaluate import evaluate_forecasts, forecast_windows, quantiles_by_step
    from cellcast.pipeline.modeling.quantiles import crossings
    from cellcast.pipeline.registry.assessment import score_panel

    work, s = windowed
    monkeypatch.chdir(work)
    ws = load_windows(s)
    H, j = ws.meta.horizon, [ws.meta.variables.index(t) for t in ws.meta.targets]
    levels = [0.1, 0.5, 0.9]

    def run(x, f):  # each window's forecast from its own inputs only, whatever the batch: its last value, a band
        last = x[:, -1:, j].astype(np.float32)
        point = np.repeat(last, H, axis=1) + 0.01 * np.arange(H, dtype=np.float32)[None, :, None]
        spread = np.abs(x[:, -H:, j]).astype(np.float32)
        return point, np.stack([point - spread, point, point + 0.5 * spread - 0.2], axis=-1)

    yv, qv = forecast_windows(run, ws, ws.starts["val"])
    yt, qt = forecast_windows(run, ws, ws.starts["test"])
    val, _ = evaluate_forecasts(ws, "val", yv, qv, levels)
    test, by_step = evaluate_forecasts(ws, "test", yt, qt, levels)
    steps = quantiles_by_step(ws, "test", qt, levels)
    seasons = [24]
    table = panel_eval.series_table(ws, {"test": yt, COLD: forecast_windows(run, ws, ws.starts[COLD])[0]}, seasons)
    s.evaluate.seasons = seasons
    n = len(ws.series_ids)
    assert n >= 3 and len(ws.starts[COLD]) and crossings(qt) > 0
    for per in (1, 2, n):
        got = score_panel(run, ws, s, levels, series=per)
        assert got.panel["series"] == table.to_dict(orient="records")
        assert got.panel["aggregate"] == panel_eval.aggregate(table) and got.crossings == crossings(qt)
        assert set(got.val) == set(val) and set(got.test) == set(test) and set(got.steps) == set(steps)
        if per == n:  # one part: the same sums, the same numbers
            assert (got.val, got.test, got.by_step, got.steps) == (val, test, by_step, steps)
        for a, b in ((got.val, val), (got.test, test), ({"mase": got.by_step}, {"mase": by_step}), (got.steps, steps)):
            for k in b:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=0, err_msg=f"{per} series a part: {k}")


def test_the_per_window_losses_made_a_part_at_a_time_are_those_of_every_window_at_once(windowed, monkeypatch):
    """champion.losses_by_part (the promotion's per-window losses: the candidate, the bar, the champion) forecasts a
    part of the windows at a time: the same losses to the bit, and a baseline that reads into a break is told."""
    from cellcast.pipeline.data.window import load_windows
    from cellcast.pipeline.modeling.evaluate import seasonal_naive, window_losses
    from cellcast.pipeline.registry.champion import losses_by_part

    work, s = windowed
    monkeypatch.chdir(work)
    ws = load_windows(s)
    starts = ws.starts["test"][:3000]
    for m in (1, 24):
        whole = seasonal_naive(ws, starts, m)
        want = window_losses(ws, starts, whole)
        for part in (1000, 77, len(starts)):
            got, finite = losses_by_part(ws, starts, lambda at, m=m: seasonal_naive(ws, at, m), part=part)
            np.testing.assert_array_equal(got, want)
            assert finite == bool(np.isfinite(whole).all())
    ahead = int(ws.meta.lookback + 2 * ws.meta.horizon)  # a season longer than any window's history at a series' start
    assert not losses_by_part(ws, starts, lambda at: seasonal_naive(ws, at, 10 * ahead), part=50)[1]


def test_the_baselines_the_anchors_and_the_bars_band_scored_a_few_series_at_a_time_are_scored_as_at_once(
    windowed, monkeypatch
):
    """evaluate_baselines, the anchor's validation MASE (split_mase) and the interval-score gate's bar
    (empirical_interval_scores) take whole series a part at a time: pooled by observed cells they agree with the
    scores of every window gathered at once to a float64 sum's rounding, and are the same numbers in one part."""
    from cellcast.pipeline.data.window import load_windows
    from cellcast.pipeline.modeling import evaluate as E
    from cellcast.pipeline.modeling.anchor import seasonal_median
    from cellcast.pipeline.modeling.quantiles import quantile_scores

    work, s = windowed
    monkeypatch.chdir(work)
    ws = load_windows(s)
    levels = [0.05, 0.1, 0.5, 0.9, 0.95]
    scale = E.mase_scale(ws)

    def at_once(split: str, seasons: list[int]) -> tuple[dict, dict]:  # every window gathered at once, as before
        st = ws.starts[split]
        y, mask = ws.targets(st), ws.target_mask(st)
        scores, steps = {}, {}
        for name, m in E.baseline_names(seasons).items():
            pred = E.seasonal_naive(ws, st, m)
            ok = np.isfinite(pred).all(axis=(1, 2))
            if ok.any():
                mk = None if mask is None else mask[ok]
                scores[name] = {**E.metrics(y[ok], pred[ok], scale, mk), "coverage": float(ok.mean())}
                steps[name] = E.mae_by_step(y[ok], pred[ok], scale, mk).tolist()
        return scores, steps

    seasons = [24, 168]
    val = ws.starts["val"]
    median = lambda st: seasonal_median(ws, st, [24, 168])  # noqa: E731
    mase_at_once = E.metrics(ws.targets(val), median(val), scale, ws.target_mask(val))["mase"]
    band = {"rank": "paths", "scale": "level"}
    q = E.empirical_band(ws, 24, levels, **band)
    assert q is not None
    st = ws.starts["test"]
    bar = quantile_scores(ws.targets(st), q, levels, scale, ws.target_mask(st))[0]
    n = len(ws.series_ids)
    assert n >= 3
    for per in (1, 2, n):  # series a part (PANEL_WINDOWS set so that each part holds `per` series' windows)
        monkeypatch.setattr(E, "PANEL_WINDOWS", max(1, per * min(len(ws.starts[k]) for k in ("val", "test")) // n))
        parts = E.window_parts(ws, ws.starts["test"])
        assert len(parts) > 1 if per < n else len(parts) == 1
        for split in ("val", "test"):
            want, want_steps = at_once(split, seasons)
            got = E.evaluate_baselines(ws, split, seasons)
            assert set(got.scores) == set(want) and got.best == min(want, key=lambda k: want[k]["mase"])
            if len(parts) == 1:  # the same sums, the same numbers
                assert (got.scores, got.by_step) == (want, want_steps)
            for name in want:
                for k, v in want[name].items():
                    assert got.scores[name][k] == pytest.approx(v, rel=1e-12, abs=0), (per, split, name, k)
                np.testing.assert_allclose(got.by_step[name], want_steps[name], rtol=1e-12, atol=0)
        got_mase = E.split_mase(ws, val, median)
        assert got_mase == mase_at_once if len(parts) == 1 else got_mase == pytest.approx(mase_at_once, rel=1e-12)
        got_bar = E.empirical_interval_scores(ws, 24, levels, **band)
        assert set(got_bar) == set(bar) and (got_bar == bar or len(parts) > 1)
        for k, v in bar.items():
            assert got_bar[k] == pytest.approx(v, rel=1e-12, abs=0), (per, k)


@pytest.mark.parametrize("part", [1, 7, 500, 1 << 16])
def test_the_window_psis_counted_a_part_of_the_windows_at_a_time_are_those_of_every_row_counted_at_once(part):
    """drift.window_psis (a panel's drift reference: millions of rows) counts `part` windows at a time: the counts
    are whole numbers, so every window's PSI is the one of every row's cumulative counts made at once, to the bit."""
    from cellcast.pipeline.data import drift as D

    rng = np.random.default_rng(3)
    y = np.sin(np.arange(2000) / 7.0) + rng.normal(0, 0.3, 2000)
    y[100:300] = np.nan  # windows with under half their values observed are skipped
    y[rng.integers(0, 2000, 50)] = np.nan
    prof, rows = D.bin_profile(y, 10), 168
    ok = np.isfinite(y)  # every row's cumulative counts at once, as window_psis made them before
    idx = np.searchsorted(np.asarray(prof["cuts"]), np.where(ok, y, 0.0), side="right")
    onehot = np.zeros((len(y) + 1, len(prof["cuts"]) + 1))
    onehot[1:][ok, idx[ok]] = 1.0
    cum = np.cumsum(onehot, axis=0)
    counts = cum[rows:] - cum[:-rows]
    n = counts.sum(axis=1)
    keep = n >= rows / 2
    e = np.maximum(np.asarray(prof["shares"]), D.PSI_FLOOR)
    a = np.maximum(counts[keep] / n[keep, None], D.PSI_FLOOR)
    want = ((a - e) * np.log(a / e)).sum(axis=1)
    got = D.window_psis(y, prof, rows, part=part)
    assert 0 < len(got) < len(y) - rows + 1 and np.array_equal(got, want)
    assert len(D.window_psis(y[:rows], prof, rows, part=part)) == 1 and not len(D.window_psis(y[:10], prof, rows))
