"""Panels through the model: windows across series (one array, per-series offsets, splits and scales; cold start
kept apart), the sampler, one global model trained on all series, evaluation per series, the panel forecast and the
service's many-series requests, through the real flow (Prefect, MLflow, GX, DVC)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_panels import ingest_panel, mixed_panel, write_csv

from cellcast.pipeline.data.panel_windows import COLD, PanelWindowSet
from cellcast.pipeline.data.validation import validate_dataset
from cellcast.pipeline.data.window import load_windows, window_dataset
from cellcast.pipeline.errors import DataValidationError
from cellcast.pipeline.modeling.evaluate import seasonal_naive

SMALL = {"window": {"lookback": 24, "horizon": 6}}


def windowed_mixed(project, settings_for, **window):
    s = settings_for(
        "city", ingest={"bad_series": "drop", "partition_rows": 500}, window={"lookback": 24, "horizon": 6, **window}
    )
    ingest_panel(write_csv(mixed_panel(), project / "city.csv"), s, freq="h")
    validate_dataset(s)
    return window_dataset(s), s


def validated_mixed(tmp_path_factory) -> tuple[Path, object]:
    """The mixed panel ingested and validated in a folder of its own, row groups of up to 500 rows: (folder,
    settings)."""
    import shutil

    from conftest import ROOT

    from cellcast.pipeline.config import load_params

    work = tmp_path_factory.mktemp("mixed")
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.delenv("CELLCAST_PARAMS", raising=False)
        s = load_params(work / "params.yaml").for_dataset("city")
        s = s.model_copy(
            update={
                "ingest": s.ingest.model_copy(update={"bad_series": "drop", "partition_rows": 500}),
                "window": s.window.model_copy(update={"lookback": 24, "horizon": 6}),
                # the lookback only: these tests read the panel's windows and scales, not the calendar
                "calendar": s.calendar.model_copy(update={"parts": []}),
            }
        )
        ingest_panel(write_csv(mixed_panel(), work / "city.csv"), s, freq="h")
        validate_dataset(s)
    return work, s


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The mixed panel windowed once for the tests that only read it: (window set, settings)."""
    work, s = validated_mixed(tmp_path_factory)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        return window_dataset(s), s


def weighted(ws, weighting: str):
    """The same window set, sampled with another window.panel_weighting."""
    from dataclasses import replace

    out = ws.with_starts()
    out.meta = replace(ws.meta, panel={**ws.meta.panel, "weighting": weighting})
    return out


def test_panel_windows_stay_inside_their_series_with_own_splits_scales_and_cold_start(project, settings_for):
    ws, s = windowed_mixed(project, settings_for)
    assert isinstance(ws, PanelWindowSet) and ws.series_ids == ["A", "B", "D"]
    assert ws.meta.panel["status"] == {"A": "ok", "B": "ok", "D": "cold_start"}
    # one array: each series then one break row; nothing copied per window
    assert list(ws.offsets) == [0, 401, 702] and list(ws.lengths) == [400, 300, 60]
    assert len(ws.values) == 400 + 300 + 60 + 3 and np.isnan(ws.values[[400, 701, 762]]).all()
    assert np.shares_memory(ws.view(), ws.values)
    span = ws.span
    for split in ("train", "val", "test", COLD):
        st = ws.starts[split]
        floor = ws.series_floor(st)
        end = floor + ws.lengths[ws.series_index(st)]
        assert ((st >= floor) & (st + span <= end)).all(), split  # never across a series boundary
    # each series' own chronological split: A's 400 rows -> train ends at row 280, its test targets from row 340
    a = {k: v for k, v in ((k, ws.series_starts(k).get("A")) for k in ("train", "val", "test"))}
    assert a["train"].max() + span <= 280 and a["val"].min() + 24 >= 280 and a["test"].min() + 24 >= 340
    assert set(ws.series_starts("train")) == {"A", "B"} and set(ws.series_starts(COLD)) == {"D"}
    assert len(ws.starts[COLD]) == 60 - span + 1 and not set(ws.starts[COLD]) & set(ws.starts["test"])
    # per-series scaling fitted on the series' own training rows: there the scaled target has mean 0 and a mean
    # absolute one-step difference of 1 (the MASE denominator)
    for i, sid in enumerate(ws.series_ids):
        o, e = ws.offsets[i], ws.train_end[i]
        y = ws.values[o : o + e, 0].astype(np.float64)
        assert abs(y.mean()) < 1e-4 and abs(np.abs(np.diff(y)).mean() - 1) < 1e-4, sid
    raw = mixed_panel()
    b = raw[raw.sensor == "B"].sort_values("ts")["flow"].to_numpy()
    mean, scale = ws.scaler("B")
    assert np.allclose(ws.values[401:701, 0] * scale[0] + mean[0], b, atol=1e-4)
    # the window set on disk is the same panel
    back = load_windows(s)
    assert isinstance(back, PanelWindowSet) and back.meta.panel == ws.meta.panel
    assert all(np.array_equal(back.starts[k], ws.starts[k]) for k in ws.starts)


def test_seasonal_naive_never_reads_the_series_before(mixed):
    ws, _ = mixed
    first_b = ws.series_starts("train")["B"][:1]  # B's first window: 24 rows of history
    assert np.isnan(seasonal_naive(ws, first_b, 48)).all()  # two days back lies in A: no forecast
    assert np.isfinite(seasonal_naive(ws, first_b, 24)).all()


def test_the_sampler_draws_across_series_uniformly_or_each_series_alike(mixed):
    import torch

    from cellcast.pipeline.modeling.train import panel_sampler

    for weighting, want in (("per_series", [0.5, 0.5]), ("uniform", None)):
        ws = weighted(mixed[0], weighting)
        train = torch.from_numpy(ws.starts["train"])
        got = panel_sampler(ws, train, "cpu")(20000, torch.Generator().manual_seed(0)).numpy()
        assert np.isin(got, ws.starts["train"]).all()  # training windows only
        share = np.bincount(ws.series_index(got), minlength=3) / len(got)
        counts = np.bincount(ws.series_index(ws.starts["train"]), minlength=3)
        want = want or (counts / counts.sum())[:2]  # uniform: A has more windows, weighs more
        assert np.allclose(share[:2], want, atol=0.02) and share[2] == 0, (weighting, share)


def test_the_most_recent_calibration_windows_of_a_panel_are_taken_across_its_series(mixed):
    from cellcast.pipeline.modeling.train import calibration_starts

    ws, s = mixed
    s = s.model_copy(update={"evaluate": s.evaluate.model_copy(update={"calibration_windows": 40})})
    got = calibration_starts(ws, s)
    when = ws.timestamps[ws.starts["val"] + 24]
    assert len(got) == 40 and set(ws.series_index(got)) == {0, 1}  # not only the last series' windows
    assert ws.timestamps[got + 24].min() >= np.sort(when)[-40]


@pytest.mark.integration
def test_local_models_train_one_per_series_over_a_local_dask_cluster(mixed):
    from distributed import Client, LocalCluster

    from cellcast.pipeline.data.panel_validation import client_mapper
    from cellcast.pipeline.modeling.local import local_comparison, series_set

    ws, s = mixed
    one = series_set(ws, 1)  # B alone: views of the panel's arrays
    assert one.series_ids == ["B"] and np.shares_memory(one.values, ws.values)
    assert np.array_equal(one.batch(one.starts["test"])[1], ws.batch(ws.series_starts("test")["B"])[1])
    s = s.model_copy(
        update={
            "train": s.train.model_copy(
                update={"cells": ["gru"], "epochs": 2, "hidden_size": 8, "rnn_steps": 12, "max_train_windows": 256}
            )
        }
    )
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        fanned = local_comparison(ws, s, 24, mapper=client_mapper(client))
    here = local_comparison(ws, s, 24)
    c = fanned["gru-h8-l1"]
    assert c["models"] == 2 and not c["failed"]  # A and B; D is cold start: no model of its own
    assert [r["series_id"] for r in c["series"]] == ["A", "B"]
    assert c["aggregate"]["series"] == 2 and c["aggregate"]["cold_start_series"] == 0
    # the same models wherever they train (seeded, one thread each)
    assert [r["mase"] for r in c["series"]] == pytest.approx([r["mase"] for r in here["gru-h8-l1"]["series"]], rel=1e-4)


def test_the_epochs_validation_loss_reads_at_most_max_val_windows_evenly_spread(mixed):
    import torch

    from cellcast.pipeline.modeling.train import Candidate, _val_loss, train_candidate

    ws, s = mixed
    s = s.model_copy(
        update={
            "train": s.train.model_copy(
                update={
                    "cells": ["gru"],
                    "epochs": 1,
                    "hidden_size": 8,
                    "rnn_steps": 12,
                    "max_train_windows": 64,
                    "max_val_windows": 9,
                    "residual": True,
                    "anchor": "seasonal_naive",
                }
            ),
            "evaluate": s.evaluate.model_copy(update={"quantiles": []}),
        }
    )
    res = train_candidate(ws, Candidate("gru", 8, 1), s, 24, device="cpu")
    val = ws.starts["val"]
    spread = val[np.linspace(0, len(val) - 1, 9).round().astype(int)]
    assert set(ws.series_index(spread)) == {0, 1}  # both series' validation windows
    untrained = res.model.__class__(res.model.spec)  # head at zero: the anchor's forecast
    tw = ws.to_torch("cpu")
    scale = untrained.target_scale()
    want = _val_loss(untrained, tw, torch.from_numpy(spread), scale, False, 1024)
    assert res.initial_val_loss == pytest.approx(want, rel=1e-6)
    assert res.initial_val_loss != pytest.approx(_val_loss(untrained, tw, tw.starts["val"], scale, False, 1024))


def test_a_panels_linear_anchor_reads_the_span_of_its_lookback_that_forecasts_validation_best(mixed):
    from dataclasses import replace

    from cellcast.pipeline.modeling.anchor import fit_linear_anchor, linear_spans

    ws, s = mixed
    s = s.model_copy(update={"train": s.train.model_copy(update={"rnn_steps": 12})})
    ws = ws.with_starts()
    ws.meta = replace(ws.meta, seasons=[6])  # a season of 6 steps: 6 + 12 is shorter than the lookback of 24
    assert linear_spans(ws, s) == [18, 24]
    lin = fit_linear_anchor(ws, s)
    assert set(lin.by_span) == {"18", "24"} and lin.by_span[str(lin.span)] == min(lin.by_span.values())
    assert lin.val_mae_scaled == pytest.approx(min(lin.by_span.values()))
    assert not lin.weight[:, : 24 - lin.span].any()  # nothing read before its span


def test_a_panel_keeps_its_further_seasons_only_where_the_seasonal_median_beats_every_seasonal_naive(mixed):
    from dataclasses import replace

    from cellcast.pipeline.config import Params
    from cellcast.pipeline.data.panel_windows import one_season_lookback, seasons_pay
    from cellcast.pipeline.modeling.anchor import median_sets, seasonal_median
    from cellcast.pipeline.modeling.evaluate import seasonal_naive

    ws, _ = mixed
    ws = ws.with_starts()
    ws.meta = replace(ws.meta, seasons=[6])
    assert median_sets(ws) == [[6, 12], [6, 12, 18], [6, 12, 18, 24]]
    val = ws.starts["val"]
    _, y = ws.batch(val)
    best_median = min(np.abs(seasonal_median(ws, val, st) - y).mean() for st in median_sets(ws))
    best_naive = min(np.abs(seasonal_naive(ws, val, m) - y).mean() for m in (1, 6))
    assert seasons_pay(ws) == bool(best_median < best_naive)
    # the one-season lookback the window stage falls back to: none when the lookback is set, or one season asked
    meta = {"freq": "h", "panel": {"window": {"median_series_rows": 8760}, "series": {"a": {"rows": 8760}}}}
    s = Params().for_dataset("x")
    assert one_season_lookback(meta, s) == 168 + s.train.rnn_steps
    assert one_season_lookback(meta, Params(window={"lookback": 100}).for_dataset("x")) is None
    assert one_season_lookback(meta, Params(window={"lookback_seasons": 1}).for_dataset("x")) is None


def test_the_batch_forecast_names_the_series_it_cannot_forecast_and_scales_each_series(mixed, tmp_path):
    import torch

    from cellcast.pipeline.engine.inference import OnnxForecaster
    from cellcast.pipeline.engine.onnx_export import export_onnx
    from cellcast.pipeline.modeling.model import Forecaster
    from cellcast.pipeline.modeling.train import Candidate, model_spec
    from cellcast.pipeline.registry.metadata import model_metadata
    from cellcast.pipeline.serving.forecast import forecast_panel_frame

    ws, s = mixed
    model = Forecaster(model_spec(ws, Candidate("gru", 8, 1), s, 24), generator=torch.Generator().manual_seed(0))
    path = export_onnx(
        model.eval(), tmp_path / "m.onnx", model_metadata(ws, s, "gru"), example=ws.inputs(ws.starts["test"][:2])[0]
    )
    eng = OnnxForecaster.from_path(path, device="cpu")
    rows = mixed_panel().rename(columns={"sensor": "series_id", "ts": "timestamp"})
    rows = rows[rows.series_id.isin(["A", "B", "D", "C"])].sort_values(["series_id", "timestamp"])
    rows.loc[rows.series_id == "B", "flow"] = (
        rows.loc[rows.series_id == "B", "flow"].to_numpy()
        * np.r_[np.ones((rows.series_id == "B").sum() - 3), [np.nan, 1, 1]]
    )  # a gap in B's last lookback
    out, _, skipped = forecast_panel_frame(eng, rows)
    assert sorted(out["series_id"].unique()) == ["A", "D"] and len(out) == 2 * 6
    assert set(skipped) == {"B", "C"} and "hold a break" in skipped["B"] and "not in the model" in skipped["C"]
    assert out.groupby("series_id")["status"].first().to_dict() == {"A": "ok", "D": "cold_start"}
    # A's forecast: its last 24 rows in A's scale through the graph, back in A's units
    a = rows[rows.series_id == "A"].iloc[-24:][["flow", "temp"]].to_numpy()
    mean, scale = ws.scaler("A")
    y = eng.predict(((a - mean) / scale)[None].astype(np.float32))[0, :, 0] * scale[0] + mean[0]
    np.testing.assert_allclose(out[out.series_id == "A"]["flow"].to_numpy(), y, rtol=0, atol=1e-4)


def test_a_panel_forecast_by_a_model_that_names_no_frequency_is_refused_in_words(mixed, tmp_path):
    import torch

    from cellcast.pipeline.engine.inference import OnnxForecaster
    from cellcast.pipeline.engine.onnx_export import export_onnx
    from cellcast.pipeline.errors import DataValidationError
    from cellcast.pipeline.modeling.model import Forecaster
    from cellcast.pipeline.modeling.train import Candidate, model_spec
    from cellcast.pipeline.registry.metadata import model_metadata
    from cellcast.pipeline.serving.forecast import forecast_panel_frame

    ws, s = mixed
    model = Forecaster(model_spec(ws, Candidate("gru", 8, 1), s, 24), generator=torch.Generator().manual_seed(0))
    meta = {k: v for k, v in model_metadata(ws, s, "gru").items() if k != "freq"}
    path = export_onnx(model.eval(), tmp_path / "m.onnx", meta, example=ws.inputs(ws.starts["test"][:2])[0])
    eng = OnnxForecaster.from_path(path, device="cpu")
    assert "freq" not in eng.metadata
    rows = mixed_panel().rename(columns={"sensor": "series_id", "ts": "timestamp"})
    rows = rows[rows.series_id == "A"]
    with pytest.raises(DataValidationError, match="names no frequency"):
        forecast_panel_frame(eng, rows)


def test_a_panel_of_cold_start_series_only_is_refused(project, settings_for):
    s = settings_for("city", window={"lookback": 24, "horizon": 6})
    df = mixed_panel()
    ingest_panel(write_csv(df[df.sensor == "D"], project / "d.csv"), s, freq="h")
    validate_dataset(s)
    with pytest.raises(DataValidationError, match="every series is cold start"):
        window_dataset(s)


# --- through the real flow ------------------------------------------------------------------------


def panel_params(project, name: str, **sections):
    """The project's params.yaml (already tiny) with a `datasets: NAME:` entry."""
    import yaml

    p = yaml.safe_load((project / "params.yaml").read_text())
    p.setdefault("datasets", {})[name] = sections
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    from cellcast.pipeline.config import load_params

    return load_params(project / "params.yaml").for_dataset(name)


@pytest.mark.integration
def test_one_global_model_is_trained_on_every_series_scored_per_series_and_registered(
    prefect_api, project, tiny_params
):
    import json

    from mlflow import MlflowClient

    from cellcast.flows.training import run_training
    from cellcast.pipeline.registry import tracking

    s = panel_params(
        project,
        "city",
        ingest={"bad_series": "drop", "partition_rows": 500},
        window={"lookback": 24, "horizon": 6},
        calendar={"parts": ["tod"]},
        train={"cells": ["gru"], "anchor": "linear", "strategy": "local"},
    )
    src = write_csv(mixed_panel(), project / "city.csv")
    before = src.read_bytes()
    out = run_training(
        s,
        source={
            "path": str(src),
            "time_col": "ts",
            "targets": ["flow"],
            "features": ["temp"],
            "id_cols": ["sensor"],
            "freq": "h",
        },
    )
    assert src.read_bytes() == before
    assert out.version == 1, out.decision
    best = out.candidates[0]
    agg = best["panel"]["aggregate"]
    # C, E and G were dropped by the policy (quarantined at validation); A and B scored per series, D as cold start
    rows = {r["series_id"]: r for r in best["panel"]["series"]}
    assert set(rows) == {"A", "B", "D"} and rows["D"]["status"] == "cold_start"
    assert rows["A"]["windows"] == 60 - 6 + 1 and rows["D"]["windows"] == 60 - 30 + 1
    assert (agg["series"], agg["cold_start_series"]) == (2, 1)
    assert agg["worst_series"] in {"A", "B"} and 0 <= agg["share_improved"] <= 1
    assert np.isclose(agg["mean_mase"], np.mean([rows["A"]["mase"], rows["B"]["mase"]]))
    # the decision names the share of series improved and the worst series
    assert f"it beats each series' strongest baseline on {agg['improved']}" in out.decision["reason"]
    assert f"worst series '{agg['worst_series']}'" in out.decision["reason"]
    # MLflow: the aggregate as metrics, the per-series table and the pictures as artifacts
    client = MlflowClient()
    run = client.get_run(best["run_id"])
    assert run.data.metrics["panel_median_mase"] == pytest.approx(agg["median_mase"])
    table = json.loads(Path(client.download_artifacts(best["run_id"], "per_series.json")).read_text())
    assert sorted(r[table["columns"].index("series_id")] for r in table["data"]) == ["A", "B", "D"]
    parent = {a.path for a in client.list_artifacts(out.parent_run_id)}
    assert {"panel_series_forecasts.png", "panel_mase_distribution.png"} <= parent
    # train.strategy: local: one model per series as a comparison run, never registered
    local = client.search_runs([run.info.experiment_id], "tags.`cellcast.kind` = 'comparison'")
    assert len(local) == 1 and local[0].info.run_name == "local-city"
    assert local[0].data.metrics["gru-h8-l1_models"] == 2 and "gru-h8-l1_panel_mean_mase" in local[0].data.metrics
    assert [v.version for v in tracking.list_versions("city-forecaster")] == [1]
    # one registered model for the panel; its graph carries each series' scale
    path, _ = tracking.download_model("city-forecaster", 1)
    from cellcast.pipeline.engine.inference import OnnxForecaster

    meta = OnnxForecaster.from_path(path, device="cpu").metadata
    assert set(meta["panel"]["series"]) == {"A", "B", "D"} and meta["panel"]["id_cols"] == ["sensor"]
    assert meta["panel"]["series"]["D"]["status"] == "cold_start"

    # the batch forecast: one long-format Parquet, every kept series (the cold-start one flagged), a chunk per ONNX call
    from typer.testing import CliRunner

    from cellcast.cli import app

    r = CliRunner().invoke(app, ["forecast", "city"])
    assert r.exit_code == 0, r.output
    assert "3 series (1 cold start) x 6 steps" in r.output
    fc = pd.read_parquet(next((project / "forecasts/city").glob("*.parquet")))
    assert list(fc.columns[:3]) == ["series_id", "sensor", "timestamp"] and "flow_q0.1" in fc.columns
    assert sorted(fc["series_id"].unique()) == ["A", "B", "D"] and len(fc) == 3 * 6
    assert fc.groupby("series_id")["cold_start"].first().to_dict() == {"A": False, "B": False, "D": True}
    frame = pd.read_parquet(project / "data/city/validated.parquet")
    last = frame.groupby("series_id")["timestamp"].max()
    assert (fc.groupby("series_id")["timestamp"].min() == last + pd.Timedelta(hours=1)).all()
    assert fc["flow"].between(7, 13).all()  # each series in its own units (10 + a daily sine)

    # the service: one series or many per request, each with its id; the same numbers as the batch forecast
    import httpx
    from test_serve import Source
    from uvicorn_server import ServerThread

    from cellcast.pipeline.serving.service import create_app

    def instance(sid, **extra):
        rows = frame[frame.series_id == sid].iloc[-24:]
        return {
            "id": sid,
            "values": {v: rows[v].tolist() for v in ("flow", "temp")},
            "timestamps": [t.isoformat() for t in rows["timestamp"]],
            **extra,
        }

    svc = create_app(s, source=Source(path, "1"), device="cpu", poll_seconds=60)
    with ServerThread(svc) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        info = c.get("/model").json()
        assert info["series"] == ["A", "B", "D"] and info["id_cols"] == ["sensor"]
        got = c.post("/v1/forecast", json={"instances": [instance("D"), instance("A")]})
        assert got.status_code == 200, got.text
        for item in got.json()["forecasts"]:
            want = fc[fc.series_id == item["id"]]["flow"].to_numpy()
            np.testing.assert_allclose(item["forecast"]["flow"], want, rtol=0, atol=1e-4)
        one = c.post("/v1/forecast", json=instance("B"))
        assert one.status_code == 200 and one.json()["id"] == "B"
        bad = c.post("/v1/forecast", json={"instances": [instance("A"), instance("Z")]})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("instances[1].id: unknown series 'Z'")
        nameless = instance("A")
        del nameless["id"]
        bad = c.post("/v1/forecast", json=nameless)
        assert bad.status_code == 422 and "body.id: required" in bad.json()["detail"]
        schema = c.get("/openapi.json").json()["components"]["schemas"]["Series"]
        assert "id" in schema["required"] and schema["properties"]["id"]["enum"] == ["A", "B", "D"]
    # the live log (written when the service stops): each answered series under its id, in its own scale
    live = pd.concat(pd.read_parquet(f) for f in (project / "forecasts/city/live").glob("*.parquet"))
    assert live.groupby("id").size().to_dict() == dict.fromkeys(("A", "B", "D"), info["horizon"])
    for sid in ("A", "D"):
        np.testing.assert_allclose(
            live[live.id == sid].sort_values("step")["flow"], fc[fc.series_id == sid]["flow"], rtol=0, atol=1e-4
        )


@pytest.mark.integration
def test_a_real_panel_read_at_irregular_times_is_resampled_trained_and_forecast_through_the_cli(
    prefect_api, project, tiny_params
):
    """Three airports' hourly weather (bundled, real: missing hours, 5 in a row at every airport), each reading
    written at an irregular minute and one airport's split into two readings an hour: `--freq h --agg mean` puts
    them back on the grid, then `cellcast train` and `cellcast forecast` as a user runs them."""
    from typer.testing import CliRunner

    from cellcast.cli import app
    from cellcast.pipeline.data.datasets import load_bundled

    panel_params(
        project,
        "nyc",
        ingest={"long_gaps": "segment"},
        window={"lookback": 24, "horizon": 6},
        calendar={"parts": ["tod"]},
        train={"cells": ["gru"]},
        evaluate={"references": ["mstl", "ets", "theta"]},  # the tiny params leave them out: per airport here
    )
    weather = load_bundled("weather")

    def readings(end: str):
        """The airports' readings up to `end`, as a logger writes them (weather.csv)."""
        w = weather[(weather["timestamp"] >= "2013-10-14") & (weather["timestamp"] < end)]
        rng = np.random.default_rng(0)
        df = pd.DataFrame(
            {
                "airport": w["origin"].to_numpy(),
                "temp": w["temp"].to_numpy(),
                "humid": w["humid"].to_numpy(),
                "time": (w["timestamp"] + pd.to_timedelta(rng.integers(0, 50, len(w)), unit="min")).to_numpy(),
            }
        )
        # LGA reports twice an hour, half a degree either side of the hour's value: the mean is that value
        lga = df[df.airport == "LGA"]
        early, late = lga.copy(), lga.copy()
        early["time"] = early["time"].dt.floor("h") + pd.Timedelta(minutes=5)
        late["time"] = late["time"].dt.floor("h") + pd.Timedelta(minutes=45)
        early["temp"] -= 0.5
        late["temp"] += 0.5
        df = pd.concat([df[df.airport != "LGA"], early, late]).sample(frac=1, random_state=0)
        df["time"] = df["time"].dt.strftime("%Y-%m-%d %H:%M")
        write_csv(df, project / "weather.csv")
        return w

    w = readings("2013-11-05")  # ends a day after its last break
    run = CliRunner().invoke

    def ingest():
        return run(
            app,
            [
                "ingest",
                "--csv",
                "weather.csv",
                "--time-col",
                "time",
                "--id-col",
                "airport",
                "--target",
                "temp",
                "--features",
                "humid",
                "--name",
                "nyc",
                "--freq",
                "h",
                "--agg",
                "mean",
            ],
        )

    r = ingest()
    assert r.exit_code == 0, r.output
    r = run(app, ["train", "nyc"])
    assert r.exit_code == 0, r.output
    summary = json.loads((project / "reports/nyc/train_summary.json").read_text())
    # the classical references per airport, each beside the global model on the same origins
    from cellcast.pipeline.registry.promotion_run import Outcome
    from cellcast.pipeline.registry.summary import reference_lines

    lines = "\n".join(reference_lines(Outcome(**summary)))
    assert "references per series" in lines and "on 3 series" in lines and "the model beats it on" in lines
    for name in ("mstl", "ets", "theta"):
        ref = summary["references"][name]
        assert ref["status"] == "ok" and (ref["series"], ref["series_total"]) == (3, 3), ref
        assert set(ref["per_series"]) == {"EWR", "JFK", "LGA"} and 0 <= ref["share_model_beats"] <= 1
        assert np.isclose(ref["mean_mase"], np.mean(list(ref["per_series"].values())))
    assert summary["version"] == 1 and "across 3 series" in summary["decision"]["reason"], summary["decision"]
    rows = {x["series_id"]: x for x in summary["candidates"][0]["panel"]["series"]}
    assert set(rows) == {"EWR", "JFK", "LGA"} and all(x["status"] == "ok" for x in rows.values())
    # LGA's mean of two readings an hour is the hour's reading again
    frame = pd.read_parquet(project / "data/nyc/validated.parquet")
    got = frame[frame.series_id == "LGA"].set_index("timestamp")["temp"]
    truth = w[w.origin == "LGA"].set_index("timestamp")["temp"]
    both = got.index.intersection(truth.index)
    assert len(both) > 450 and np.allclose(got[both], truth[both])
    r = run(app, ["forecast", "nyc", "--alias", "1"])  # registered; champion or not, the tiny model forecasts
    assert r.exit_code == 0, r.output
    fc = pd.read_parquet(next((project / "forecasts/nyc").glob("*.parquet")))
    assert sorted(fc["airport"].unique()) == ["EWR", "JFK", "LGA"] and len(fc) == 3 * 6
    assert (fc["timestamp"].dt.minute == 0).all() and fc["temp"].between(20, 90).all()
    assert (
        fc.groupby("airport")["timestamp"].min()
        == frame.groupby("series_id")["timestamp"].max() + pd.Timedelta(hours=1)
    ).all()

    # the backtest: folds cut on the shared hours, each airport's figures, the worst one named and drawn
    r = run(app, ["backtest", "nyc", "--folds", "2"])
    assert r.exit_code == 0, r.output
    bt = json.loads((project / "reports/nyc/backtest.json").read_text())
    assert len(bt["folds"]) == 2 and bt["panel"]["series"] == 3
    assert set(bt["folds"][1]["series"]["selected"]) == {"EWR", "JFK", "LGA"}
    assert set(bt["folds"][1]["series"]["ref_mstl"]) == {"EWR", "JFK", "LGA"}
    assert bt["panel"]["worst_series"] in {"EWR", "JFK", "LGA"} and 0 <= bt["panel"]["share_beating_bar"] <= 1
    assert (project / "reports/nyc/backtest.png").stat().st_size > 10_000

    # monitoring: v1 serves, actuals arrive, each airport is scored and the worst is shown
    from mlflow import MlflowClient

    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.monitoring.evaluate import evaluate

    MlflowClient().set_registered_model_alias("nyc-forecaster", "champion", "1")
    r = run(app, ["forecast", "nyc"])
    assert r.exit_code == 0, r.output
    readings("2013-11-05 12:00")  # half a day more: the rolling window (two horizons) holds the forecast's steps
    assert ingest().exit_code == 0
    r = run(app, ["validate", "nyc"])
    assert r.exit_code == 0, r.output
    rep = evaluate(load_params().for_dataset("nyc"))
    assert rep.panel["series"] == 3 and rep.panel["judged"] == 3
    assert rep.accuracy["points"] == 3 * 6 and rep.panel["worst"][0]["points"] == 6
    assert rep.verdict.retrain == (rep.panel["share_past"] > 0.2)
    table = pd.read_parquet(project / "reports/nyc/monitoring/series.parquet")
    assert sorted(table["series_id"]) == ["EWR", "JFK", "LGA"] and table["mase"].notna().all()
    # each airport judged against its own test MASE (the champion's per-series test table)
    best = next(c for c in summary["candidates"] if c["name"] == summary["best"])
    own = {x["series_id"]: x["mase"] for x in best["panel"]["series"]}
    assert table.set_index("series_id")["test_mase"].to_dict() == pytest.approx(own)
    r = run(app, ["monitor", "nyc"])
    assert r.exit_code == 0, r.output
    assert "panel: 3 series, 3 judged" in r.output and f"  {rep.panel['worst'][0]['series_id']}: MASE" in r.output


def test_the_classical_references_run_per_series_in_each_series_units_on_a_sample(mixed):
    """MSTL / ETS / Theta fitted per series on its own rows in its own units, scored per series on its test origins a
    horizon apart and pooled; the same series fitted alone gives the same forecasts; a sample is stated."""
    from cellcast.pipeline.modeling import classical, panel_references
    from cellcast.pipeline.modeling.evaluate import forecast_origins
    from cellcast.pipeline.registry.references import reference_rows

    ws, s = mixed
    # theta: the quick fit (ETS and MSTL's ETS optimise for a fraction of a second a series)
    s = s.model_copy(update={"evaluate": s.evaluate.model_copy(update={"references": ["theta"]})})
    calls = []

    def mapper(fn, parts):  # what the flow's task .map does: each part to a worker
        calls.append([len(p) for p in parts])
        return [fn(p) for p in parts]

    rows = reference_rows(ws, s, mapper=mapper, parts=2)
    assert calls == [[1, 1]]  # A and B (D is cold start: no test split of its own)
    starts = forecast_origins(ws, "test")
    for name in ("theta",):
        row = rows[name]
        assert row["status"] == "ok" and set(row["per_series"]) == {"A", "B"}
        assert (row["series"], row["series_sampled"], row["series_total"]) == (2, 2, 2)
        assert row["windows"] == len(starts)
        assert np.isclose(row["mean_mase"], np.mean(list(row["per_series"].values())))
    # series A alone in its own units (the history of 8 daily cycles): the same forecasts, in the panel's units
    i = ws.series_ids.index("A")
    o, n = int(ws.offsets[i]), int(ws.lengths[i])
    mean, scale = (a[ws.meta.target_idx] for a in ws.scaler("A"))
    raw = ws.values[o : o + n, ws.meta.target_idx].astype(np.float64) * scale + mean
    assert raw.mean() == pytest.approx(10, abs=0.5)  # its own units (10 + a daily sine), not the panel's
    mine = starts[ws.series_index(starts) == i]
    alone = classical.reference_forecasts(raw, mine - o + ws.meta.lookback, ws.meta.horizon, ["theta"], [24], 60, 192)
    _, y = ws.batch(mine)
    want = np.abs((alone["theta"].pred - mean) / scale - y).mean()
    assert rows["theta"]["per_series"]["A"] == pytest.approx(want, rel=1e-6)
    # beside the global model on the same windows: the share of series it beats each reference on
    losses = np.where(ws.series_index(starts) == i, 0.0, 1e9)  # a model perfect on A, hopeless on B
    panel_references.compare_model(rows, ws, starts, losses)
    assert rows["theta"]["model_beats"] == 1 and rows["theta"]["share_model_beats"] == 0.5
    assert "the model beats it on 1 (50%)" in panel_references.describe("theta", rows["theta"])
    # a sample of one series: stated
    s1 = s.evaluate.model_copy(update={"panel_reference_sample": 1})
    one = reference_rows(ws, s.model_copy(update={"evaluate": s1}))
    assert (one["theta"]["series"], one["theta"]["series_total"]) == (1, 2)
    assert "1 of a sample of 1 series (of 2)" in panel_references.describe("theta", one["theta"])


def test_a_panels_backtest_folds_are_cut_on_the_shared_time_axis_each_series_scaled_by_its_own_rows(mixed):
    """Folds cut in time: each series' rows before a fold's validation stamp are its training rows (its scale
    fitted on them alone), a series whose rows hold no window of a block sits that fold out, and a fold never holds
    a row at or past its end; before the test split, no series' own test rows are read."""
    from cellcast.pipeline.data.folds import fold_windowset
    from cellcast.pipeline.data.splits import series_scale
    from cellcast.pipeline.registry.backtest import plan

    ws, s = mixed
    folds = plan(ws, s, k=2)
    assert [f.index for f in folds] == [1, 2] and folds[-1].cuts[2] is None  # the last fold ends with the panel
    assert folds[0].cuts[2] == folds[1].cuts[1]  # test blocks follow each other
    seen = {}
    for fold in folds:
        fws = fold_windowset(ws, fold, s)
        assert fws.is_panel and set(fws.series_ids) <= {"A", "B", "D"}
        val, test = np.datetime64(fold.cuts[0]), np.datetime64(fold.cuts[1])
        for i, sid in enumerate(fws.series_ids):
            o, n, e = int(fws.offsets[i]), int(fws.lengths[i]), int(fws.train_end[i])
            t = fws.timestamps[o : o + n]
            assert (t[:e] < val).all() and (t[e:] >= val).all()
            if fold.cuts[2] is not None:
                assert (t < np.datetime64(fold.cuts[2])).all()
            # its scale: its own training rows of this fold, in its own units
            j = ws.series_ids.index(sid)
            mu, sc = ws.scaler(sid)
            raw = ws.values[ws.offsets[j] : ws.offsets[j] + e].astype(np.float64) * sc + mu
            want = series_scale(raw, None)
            np.testing.assert_allclose(fws.scaler(sid)[1], want[1], rtol=1e-6)
            for split in ("train", "val", "test"):
                st = fws.series_starts(split)[sid]
                first = fws.timestamps[st + fws.meta.lookback]
                assert (first >= (test if split == "test" else val if split == "val" else first.min())).all()
        seen[fold.index] = fws.series_ids
    assert "A" in seen[1] and "A" in seen[2]
    # B ends before the panel does: the last fold's test block holds no window of it
    assert "B" not in seen[2] and "D" not in seen[1]
    # before the test split: every fold ends by the first stamp of any series' own test split
    first_test = min(
        ws.timestamps[ws.offsets[i] + ws.meta.lookback + ws.series_starts("test")[sid][0] - ws.offsets[i]]
        for i, sid in enumerate(ws.series_ids)
        if sid in ws.series_starts("test")
    )
    early = plan(ws, s, k=1, end=0)
    assert np.datetime64(early[-1].cuts[2]) <= first_test


def test_a_panel_backtest_reports_each_series_the_aggregate_and_the_worst(mixed):
    """One fold scored on a panel (the candidates trained a little): pooled scores as for one series, each model's
    MASE per series, the references per series, and the table, summary and picture name the worst series."""
    from conftest import TINY_TRAIN

    from cellcast.pipeline.modeling import plots
    from cellcast.pipeline.registry import backtest as bt

    ws, s = mixed
    s = s.model_copy(
        update={
            "train": s.train.model_copy(update=TINY_TRAIN | {"cells": ["gru"], "epochs": 1, "ensemble": False}),
            "evaluate": s.evaluate.model_copy(update={"references": ["theta"]}),
        }
    )
    result = bt.run_backtest(ws, s, k=1, refit="retrain", end=0)  # before the test split: A and B both sit in
    (rec,) = result.folds
    assert {"selected", "naive", "ref_theta"} <= set(rec.scores) and rec.losses == {}
    assert set(rec.series["selected"]) == {"A", "B"} and set(rec.series["ref_theta"]) == {"A", "B"}
    table = result.series_table()
    assert list(table["series_id"]) == sorted(rec.series["selected"], key=lambda k: -rec.series["selected"][k])
    agg = result.panel_aggregate()
    assert agg["series"] == 2 and agg["worst_series"] == table["series_id"].iloc[0]
    assert np.isclose(agg["mean_mase"], np.mean(list(rec.series["selected"].values())))
    text = bt.summary(result)
    assert f"worst series '{agg['worst_series']}'" in text and "each series trained on its rows before" in text
    fig = bt.picture(result, ["gru-h8-l1"])
    try:
        labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        assert f"{agg['worst_series']}: selected" in labels
    finally:
        plots.close(fig)
    assert result.to_dict()["panel"]["worst_series"] == agg["worst_series"]


def _with_known_temp(ws):
    """The mixed panel as if `temp` were known ahead (a user column): its raw values, series by series."""
    from dataclasses import replace

    j = ws.meta.variables.index("temp")
    raw = np.empty(len(ws.values), np.float32)
    for i, sid in enumerate(ws.series_ids):
        o, n = int(ws.offsets[i]), int(ws.lengths[i])
        mu, sc = ws.scaler(sid)
        raw[o : o + n + 1] = ws.values[o : o + n + 1, j] * sc[j] + mu[j]
        raw[o + n] = raw[o + n - 1]  # the break row repeats the last value (as a panel's future table does)
    meta = replace(ws.meta, future_names=["temp"], future_kinds=["user"], calendar={})
    return PanelWindowSet(
        ws.values,
        ws.timestamps,
        meta,
        ws.starts,
        ws.filled,
        raw[:, None],
        offsets=ws.offsets,
        lengths=ws.lengths,
        train_end=ws.train_end,
    )


def test_known_ahead_columns_are_read_per_series_in_the_batch_forecast_and_the_service(mixed, tmp_path):
    """A panel model that reads a user-supplied column known ahead: the batch forecast takes each series' values
    from a future file keyed by the id column, the service from each instance's `future`; each series' forecast
    moves with its own values only, a series without them is named."""
    import torch
    from fastapi.testclient import TestClient
    from test_serve import Source

    from cellcast.pipeline.engine.inference import OnnxForecaster
    from cellcast.pipeline.engine.onnx_export import export_onnx
    from cellcast.pipeline.errors import DataValidationError
    from cellcast.pipeline.modeling.model import Forecaster
    from cellcast.pipeline.modeling.train import Candidate, model_spec
    from cellcast.pipeline.registry.metadata import model_metadata
    from cellcast.pipeline.serving.forecast import forecast_panel_frame, panel_future
    from cellcast.pipeline.serving.service import create_app

    ws, s = mixed
    ws = _with_known_temp(ws)
    torch.manual_seed(0)
    model = Forecaster(model_spec(ws, Candidate("gru", 8, 1), s, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # an untrained head is zero (the anchor alone): give it weights that read the inputs
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, f = ws.inputs(ws.starts["test"][:2])
    path = export_onnx(model.eval(), tmp_path / "m.onnx", model_metadata(ws, s, "gru"), example=x, future_example=f)
    eng = OnnxForecaster.from_path(path, device="cpu")
    assert eng.future_names == ["temp"] and eng.future_kinds == ["user"]
    rows = mixed_panel().rename(columns={"sensor": "series_id", "ts": "timestamp"})
    rows = rows[rows.series_id.isin(["A", "D"])].sort_values(["series_id", "timestamp"])
    last = rows.groupby("series_id")["timestamp"].max()
    ahead = pd.concat(
        pd.DataFrame({"sensor": sid, "timestamp": pd.date_range(t, periods=7, freq="h")[1:], "temp": 0.5})
        for sid, t in last.items()
    )
    with pytest.raises(DataValidationError, match="future.csv: a panel's known-future rows need the series"):
        panel_future(ahead.drop(columns="sensor"), ["sensor"], "future.csv")
    base, _, _ = forecast_panel_frame(eng, rows, future=panel_future(ahead, ["sensor"], "f"), future_source="f")
    moved = ahead.assign(temp=np.where(ahead.sensor == "A", 0.9, 0.5))
    other, _, _ = forecast_panel_frame(eng, rows, future=panel_future(moved, ["sensor"], "f"), future_source="f")

    def by(fr, sid):
        return fr[fr.series_id == sid]["flow"].to_numpy()

    assert not np.allclose(by(base, "A"), by(other, "A"))  # A's forecast reads A's values
    np.testing.assert_array_equal(by(base, "D"), by(other, "D"))  # D's does not
    with pytest.raises(DataValidationError, match=r"f, series 'D': known-future column 'temp': no value for"):
        forecast_panel_frame(
            eng, rows, future=panel_future(ahead[ahead.sensor == "A"], ["sensor"], "f"), future_source="f"
        )

    # the service: each instance its own `future`; the same numbers as the batch forecast
    def instance(sid, temp):
        r = rows[rows.series_id == sid].iloc[-24:]
        return {
            "id": sid,
            "values": {v: r[v].tolist() for v in ("flow", "temp")},
            "timestamps": [t.isoformat() for t in r["timestamp"]],
            "future": {"temp": [temp] * 6},
        }

    with TestClient(create_app(s, source=Source(path, "1"), device="cpu", poll_seconds=60)) as c:
        got = c.post("/v1/forecast", json={"instances": [instance("D", 0.5), instance("A", 0.9)]})
        assert got.status_code == 200, got.text
        ans = {item["id"]: item["forecast"]["flow"] for item in got.json()["forecasts"]}
        np.testing.assert_allclose(ans["A"], by(other, "A"), atol=1e-4)
        np.testing.assert_allclose(ans["D"], by(other, "D"), atol=1e-4)
        bad = instance("A", 0.5)
        del bad["future"]
        r = c.post("/v1/forecast", json={"instances": [instance("D", 0.5), bad]})
        assert r.status_code == 422 and r.json()["detail"].startswith("instances[1].future"), r.text


def test_the_drift_reference_of_a_large_panel_profiles_an_even_sample_of_whole_series(mixed):
    """Every training row of 10,000 series in one frame took 20 GB: past a cap the reference reads every k-th whole
    series (a distribution, which such a sample estimates); under it, every series' training rows as before."""
    from cellcast.pipeline.registry.metadata import _reference_rows

    ws = mixed[0]
    assert np.array_equal(_reference_rows(ws), ws.train_rows())
    total = int(np.sum(ws.train_end))
    few = _reference_rows(ws, cap=total // 2)
    kept = [i for i, (o, e) in enumerate(zip(ws.offsets, ws.train_end)) if e and few[o : o + e].all()]
    assert kept == list(range(0, len(ws.offsets), 2))  # every other series, each whole
    assert few.sum() == sum(ws.train_end[i] for i in kept) and few.sum() < total
