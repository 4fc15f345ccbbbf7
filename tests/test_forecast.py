"""Batch forecasts: the core on a frame, then the whole path through a real sqlite MLflow registry."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

from cellcast.commands.serving import register
from cellcast.pipeline.engine.inference import OnnxForecaster
from cellcast.pipeline.engine.onnx_export import export_onnx
from cellcast.pipeline.errors import DataValidationError
from cellcast.pipeline.modeling.model import ModelSpec, build
from cellcast.pipeline.serving.forecast import forecast_frame

VARS = ["Demand", "Temperature", "WorkDay"]


def export(path, frame: pd.DataFrame, lookback: int, horizon: int, seed: int = 0):
    x = frame[VARS].to_numpy(np.float32)
    spec = ModelSpec(
        cell="lstm",
        n_vars=3,
        target_idx=[0],
        lookback=lookback,
        horizon=horizon,
        hidden_size=8,
        rnn_steps=24,
        anchor_season=48,
        mean=x.mean(0).tolist(),
        std=x.std(0).tolist(),
    )
    torch.manual_seed(seed)
    model = build(spec)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    return export_onnx(
        model, path, {"variables": VARS, "targets": ["Demand"], "freq": "30min", "dataset": "elecdemand"}
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    from cellcast.pipeline.data.datasets import load_bundled

    return load_bundled("elecdemand")


def test_forecast_frame_core(tmp_path, frame):
    engine = OnnxForecaster.from_path(export(tmp_path / "m.onnx", frame, 96, 12), device="cpu")
    part = frame.iloc[:5000]
    shuffled = part.sample(frac=1.0, random_state=0)  # row order must not matter: sorted by time
    out, used = forecast_frame(engine, shuffled, version=7, model_name="elecdemand-forecaster")
    assert list(out.columns) == ["timestamp", "Demand", "model_name", "model_version"]
    last = part["timestamp"].iloc[-1]
    assert list(out["timestamp"]) == [last + pd.Timedelta(minutes=30) * (i + 1) for i in range(12)]
    expected = engine.predict(part[VARS].to_numpy(np.float32)[-96:][None])[0, :, 0]
    np.testing.assert_allclose(out["Demand"].to_numpy(), expected, atol=1e-6)
    assert set(out["model_version"]) == {"7"} and used == "CPUExecutionProvider"

    holed = part.copy()
    holed.loc[holed.index[-3], "Temperature"] = np.nan
    with pytest.raises(
        DataValidationError, match="1 missing or non-finite values in the last 96 rows \\(columns Temperature\\)"
    ):
        forecast_frame(engine, holed)
    with pytest.raises(DataValidationError, match="50 rows, the model needs the last 96 .*; ingest more history"):
        forecast_frame(engine, part.iloc[:50])
    with pytest.raises(DataValidationError, match="column\\(s\\) WorkDay missing.*--target / --features"):
        forecast_frame(engine, part.drop(columns=["WorkDay"]))


@pytest.mark.integration
def test_forecast_latest_through_the_registry(project, monkeypatch, frame):
    from cellcast.pipeline.catalog import validated_paths
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.ingest import ingest_bundled
    from cellcast.pipeline.data.validation import validate_dataset
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_params(project / "params.yaml").for_dataset("elecdemand")
    ingest_bundled(settings)
    validate_dataset(settings)
    validated, _ = validated_paths(settings)
    md5_before = hashlib.md5(validated.read_bytes()).hexdigest()
    tracking.configure(project)

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    # no champion yet: one line, exit 2
    r = runner.invoke(app, ["forecast", "elecdemand", "--device", "cpu"])
    assert r.exit_code == 2 and "no champion" in r.output and "Traceback" not in r.output

    from cellcast.pipeline.data.splits import resolve_window

    lookback, horizon = resolve_window(settings, "30min", 17520)  # what the window stage resolves: 384, 48
    onnx_path = export(project / "model.onnx", frame, lookback, horizon)
    with tracking.parent_run("elecdemand"):
        with tracking.candidate_run("lstm") as rid:
            uri = tracking.log_onnx_model(onnx_path, frame[VARS].to_numpy(np.float32)[None, :lookback])
    version = tracking.register_version(settings.model_name, uri, rid)
    tracking.apply_decision(settings.model_name, version, Decision(True, "promoted by this test", {}))

    r = runner.invoke(app, ["forecast", "elecdemand", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    files = sorted((project / "forecasts" / "elecdemand").glob("*.parquet"))
    assert len(files) == 1 and str(files[0].name) in r.output
    out = pd.read_parquet(files[0])
    data = pd.read_parquet(validated)
    last = data["timestamp"].iloc[-1]
    assert list(out["timestamp"]) == [last + pd.Timedelta(minutes=30) * (i + 1) for i in range(horizon)]
    engine = OnnxForecaster.from_path(onnx_path, device="cpu")
    expected = engine.predict(data[VARS].to_numpy(np.float32)[-lookback:][None])[0, :, 0]
    np.testing.assert_allclose(out["Demand"].to_numpy(), expected, atol=1e-5)
    assert set(out["model_version"]) == {str(version)}
    # logged to MLflow: the same file is in the artifact store
    logged = list((project / ".cellcast" / "mlartifacts").rglob(files[0].name))
    assert len(logged) == 1 and logged[0].read_bytes() == files[0].read_bytes()
    assert hashlib.md5(validated.read_bytes()).hexdigest() == md5_before  # the input is untouched

    # `cellcast serve` against the same registry: a real subprocess answers what the batch path wrote
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import typer; from cellcast.commands.serving import register; app = typer.Typer(); register(app); app()"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "elecdemand", "--port", str(port), "--device", "cpu", "--token", "t0k"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer t0k"}
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "cellcast serve did not start"
            time.sleep(0.3)
        info = httpx.get(f"{url}/model", headers=auth).json()
        assert info["version"] == str(version) and info["name"] == settings.model_name and info["variables"] == VARS
        rows = data.iloc[-lookback:]
        req = {"timestamps": [t.isoformat() for t in rows["timestamp"]], "values": {v: rows[v].tolist() for v in VARS}}
        r = httpx.post(f"{url}/v1/forecast", json=req, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["forecast"]["Demand"], out["Demand"].to_numpy(), atol=1e-5)
        assert r.json()["timestamps"] == [t.isoformat() for t in out["timestamp"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_forecast_frame_refuses_values_outside_the_models_bounds(tmp_path, frame):
    x = frame[VARS].to_numpy(np.float32)
    spec = ModelSpec(
        cell="gru",
        n_vars=3,
        target_idx=[0],
        lookback=96,
        horizon=12,
        hidden_size=8,
        rnn_steps=24,
        mean=x.mean(0).tolist(),
        std=x.std(0).tolist(),
    )
    path = export_onnx(
        build(spec),
        tmp_path / "b.onnx",
        {
            "variables": VARS,
            "targets": ["Demand"],
            "freq": "30min",
            "bounds": {"Demand": [3.0, 12.0], "Temperature": [-5, 45]},
        },
    )
    engine = OnnxForecaster.from_path(path, device="cpu")
    part = frame.iloc[:5000].copy()
    forecast_frame(engine, part)  # the real data lies inside
    part.loc[part.index[-5:-2], "Demand"] = 30.0
    with pytest.raises(DataValidationError) as ei:
        forecast_frame(engine, part, source="recent.parquet")
    msg = str(ei.value)
    assert (
        "\n" not in msg and msg.startswith("recent.parquet: column 'Demand': 3 values outside [3, 12]") and "30" in msg
    )
    assert "validate.profile_tolerance" in msg, msg  # the remedy


@pytest.mark.integration
def test_the_batch_forecast_checks_the_latest_rows_against_the_models_bounds(project, monkeypatch):
    """The bounds travel with the model (profiled on its training rows); new rows far outside them are refused,
    even though a profile of the data that holds them would contain them."""
    from cellcast.pipeline.catalog import validated_paths
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.ingest import ingest_file
    from cellcast.pipeline.data.validation import validate_dataset
    from cellcast.pipeline.data.window import window_dataset
    from cellcast.pipeline.modeling.train import Candidate, model_spec
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.metadata import onnx_metadata
    from cellcast.pipeline.registry.promotion import Decision
    from cellcast.pipeline.serving.forecast import forecast_latest

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    n = 720
    t = np.arange(n)
    df = pd.DataFrame(
        {
            "time": pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M"),
            "y": 10 + np.sin(2 * np.pi * t / 24),
            "x": np.cos(2 * np.pi * t / 24),
        }
    )
    src = project / "s.csv"
    df.to_csv(src, index=False)
    base = load_params(project / "params.yaml").for_dataset("s")
    s = base.model_copy(  # no calendar: this model reads the lookback only (bounds are the point here)
        update={
            "window": base.window.model_copy(update={"lookback": 48, "horizon": 12}),
            "calendar": base.calendar.model_copy(update={"parts": []}),
        }
    )
    ingest_file(src, time_col="time", targets=["y"], features=["x"], settings=s)
    validate_dataset(s)
    ws = window_dataset(s)
    assert set(ws.meta.value_bounds) == {"y", "x"}
    tracking.configure(project)
    torch.manual_seed(0)
    model = build(model_spec(ws, Candidate("gru", 8, 1), s, None))
    meta = onnx_metadata(ws, s)
    assert meta["bounds"] == ws.meta.value_bounds
    onnx_path = export_onnx(model, project / "m.onnx", meta)
    with tracking.parent_run("s"):
        with tracking.candidate_run("gru") as rid:
            uri = tracking.log_onnx_model(onnx_path, ws.batch(ws.starts["test"][:2])[0])
    version = tracking.register_version(s.model_name, uri, rid)
    tracking.apply_decision(s.model_name, version, Decision(True, "promoted by this test", {}))
    assert forecast_latest(s, device="cpu", log_to_mlflow=False).frame["y"].notna().all()

    df.loc[n - 6 : n - 3, "y"] = 60.0  # a sensor gone wild in the newest rows
    df.to_csv(src, index=False)
    ingest_file(src, time_col="time", targets=["y"], features=["x"], settings=s)
    validate_dataset(s)  # the data stage has no model range to check against
    pq, _ = validated_paths(s)
    with pytest.raises(DataValidationError) as ei:
        forecast_latest(s, device="cpu", log_to_mlflow=False)
    msg = str(ei.value)
    lo, hi = ws.meta.value_bounds["y"]
    assert "\n" not in msg and "column 'y': in_range failed for 4 rows (e.g. 60.0)" in msg, msg
    assert f"outside [{lo:.6g}, {hi:.6g}]" in msg and "model" in msg, msg
    assert ei.value.quarantine_path and not list((project / "forecasts").glob("s/*.parquet"))[1:]

    # a refresh that reads the file on another grid is refused before the model sees it
    df.loc[n - 6 : n - 3, "y"] = 10.0
    df.to_csv(src, index=False)
    ingest_file(src, time_col="time", targets=["y"], features=["x"], freq="30min", settings=s)
    validate_dataset(s)
    with pytest.raises(
        DataValidationError,
        match=r"on a 30min grid, s-forecaster v1 was trained on h: re-ingest with "
        r"--freq h",
    ):
        forecast_latest(s, device="cpu", log_to_mlflow=False)


def test_a_batch_forecast_reads_the_known_future_rows_and_writes_quantile_columns(tmp_path, frame):
    """Calendar columns are computed for the horizon, WorkDay is looked up in the rows after the last observation;
    a missing value is refused naming the column and the first timestamp; quantiles become `Demand_q<level>`."""
    from cellcast.pipeline.data.windowset import future_block
    from cellcast.pipeline.modeling.model import Forecaster
    from cellcast.pipeline.serving.forecast import read_future_file

    names, kinds = ["tod_sin", "tod_cos", "holiday", "WorkDay"], ["calendar", "calendar", "calendar", "user"]
    calendar = {"parts": ["tod", "holiday"], "country": "AU", "subdiv": "VIC"}
    x = frame[VARS].to_numpy(np.float32)
    spec = ModelSpec(
        cell="lstm",
        n_vars=3,
        target_idx=[0],
        lookback=96,
        horizon=12,
        hidden_size=8,
        rnn_steps=24,
        anchor_season=48,
        n_future=4,
        quantiles=[0.1, 0.5, 0.9],
        mean=x.mean(0).tolist(),
        std=x.std(0).tolist(),
    )
    torch.manual_seed(0)
    model = Forecaster(spec)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    path = export_onnx(
        model,
        tmp_path / "m.onnx",
        {
            "variables": VARS,
            "targets": ["Demand"],
            "freq": "30min",
            "future_names": names,
            "future_kinds": kinds,
            "calendar": calendar,
        },
    )
    engine = OnnxForecaster.from_path(path, device="cpu")
    history, ahead = frame.iloc[:5000], frame.iloc[5000:5020][["timestamp", "WorkDay"]]
    out, _ = forecast_frame(engine, history, version=3, future=ahead)
    assert list(out.columns) == ["timestamp", "Demand", "Demand_q0.1", "Demand_q0.9", "model_name", "model_version"]
    stamps = pd.DatetimeIndex(out["timestamp"])
    block = future_block(names, kinds, calendar, "30min", stamps, {"WorkDay": ahead["WorkDay"].to_numpy()[:12]})
    y, q, _ = engine.predict_all(x[4904:5000][None], block[None])
    np.testing.assert_allclose(out["Demand"], y[0, :, 0], atol=1e-6)
    np.testing.assert_allclose(out["Demand_q0.9"], q[0, :, 0, 2], atol=1e-6)
    assert (out["Demand_q0.1"] <= out["Demand"]).all() and (out["Demand"] <= out["Demand_q0.9"]).all()

    holed = ahead.copy()
    holed.loc[holed.index[7], "WorkDay"] = np.nan
    with pytest.raises(
        DataValidationError,
        match=f"known-future column 'WorkDay': no value for {stamps[7]} "
        r"\(1 of the 12 horizon steps have none\); known-future values are "
        "never filled",
    ):
        forecast_frame(engine, history, future=holed)
    with pytest.raises(DataValidationError, match=f"no value for {stamps[10]} \\(2 of the 12"):
        forecast_frame(engine, history, future=ahead.iloc[:10])
    with pytest.raises(
        DataValidationError,
        match=f"known-future column 'WorkDay' missing: the model needs its values for the 12 steps from {stamps[0]}",
    ):
        forecast_frame(engine, history)

    # the same values from a file (`cellcast forecast --future FILE`): timestamps with a zone become UTC
    f = tmp_path / "ahead.csv"
    pd.DataFrame(
        {
            "timestamp": (stamps.tz_localize("UTC").tz_convert("Australia/Melbourne")).astype(str),
            "WorkDay": ahead["WorkDay"].to_numpy()[:12],
        }
    ).to_csv(f, index=False)
    again, _ = forecast_frame(engine, history, version=3, future=read_future_file(f))
    pd.testing.assert_frame_equal(again, out)
