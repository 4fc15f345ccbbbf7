"""The fleet end to end, on a real embedded MLflow registry: one service for two datasets, the challenger of one in
shadow; live requests answered by the champion while the challenger answers beside it; the actuals of those hours
arrive (the longer export ingested and validated again); `cellcast promote NAME --live` then moves the alias with
its reason, and the service's poll swaps the new champion in."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from plant import write_plant_csv
from typer.testing import CliRunner

pytestmark = pytest.mark.integration  # an MLflow store, the registry-following service

LOOKBACK, H = 48, 6
TRAINED_ROWS, ALL_ROWS = 480, 600


def _export(path, *, anchored: bool, dataset: str):
    """A real, untrained model: with the seasonal-naive anchor (its head starts at zero, so it forecasts yesterday's
    values: a fair forecast of this daily cycle) or without (a random recurrent net around the mean: a poor one)."""
    from cellcast.pipeline.engine.onnx_export import export_onnx
    from cellcast.pipeline.modeling.model import ModelSpec, build

    torch.manual_seed(0)
    spec = ModelSpec(
        cell="gru",
        n_vars=2,
        target_idx=[0],
        lookback=LOOKBACK,
        horizon=H,
        hidden_size=8,
        rnn_steps=12,
        mean=[50.0, 15.0],
        std=[10.0, 5.0],
        anchor_season=24 if anchored else None,
    )
    meta = {"variables": ["kw", "temp"], "targets": ["kw"], "freq": "h", "dataset": dataset}
    return export_onnx(build(spec), path, meta)


def _register(model: str, onnx_path, decision) -> int:
    from cellcast.pipeline.registry import tracking

    with tracking.parent_run(model.removesuffix("-forecaster")):
        with tracking.candidate_run("gru") as rid:
            uri = tracking.log_onnx_model(onnx_path, np.zeros((2, LOOKBACK, 2), np.float32))
    version = tracking.register_version(model, uri, rid)
    tracking.apply_decision(model, version, decision)
    return version


def _ingest(project, rows: int, settings) -> None:
    from cellcast.pipeline.data.ingest import ingest_file
    from cellcast.pipeline.data.validation import validate_dataset

    full = pd.read_csv(project / "plant-all.csv")
    path = project / f"{settings.dataset}.csv"
    full.iloc[:rows].to_csv(path, index=False)
    ingest_file(path, time_col="when", targets=["kw"], features=["temp"], settings=settings)
    validate_dataset(settings)


def test_one_service_two_datasets_a_shadow_challenger_promoted_on_live_evidence(project, monkeypatch, tmp_path):
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision
    from cellcast.pipeline.serving.service import create_app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["serve"].update(poll_seconds=0.5, live_log_flush_s=0.5)
    p["datasets"]["plant"] = {"serve": {"shadow": True}}
    p["datasets"]["yard"] = {}
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    params = load_params(project / "params.yaml")
    plant, yard = params.for_dataset("plant"), params.for_dataset("yard")
    write_plant_csv(project / "plant-all.csv", ALL_ROWS)
    for s in (plant, yard):
        _ingest(project, TRAINED_ROWS, s)  # the data the models were made for: the first 480 hours
    tracking.configure(project)

    # plant: a poor champion (v1) and a better challenger (v2); yard: a champion only
    v1 = _register(
        plant.model_name,
        _export(tmp_path / "poor.onnx", anchored=False, dataset="plant"),
        Decision(True, "v1 beat the bar on its test split", {}),
    )
    v2 = _register(
        plant.model_name,
        _export(tmp_path / "fair.onnx", anchored=True, dataset="plant"),
        Decision(False, "v2 not significantly better on its test split", {}),
    )
    _register(
        yard.model_name,
        _export(tmp_path / "yard.onnx", anchored=True, dataset="yard"),
        Decision(True, "yard's champion", {}),
    )
    assert tracking.get_alias(plant.model_name, "challenger").version == v2

    # live traffic: a request every hour for the 60 hours after the validated data ends (the client holds the
    # newest readings; the pipeline's file lags), each forecasting 6 hours ahead
    full = pd.read_csv(project / "plant-all.csv")
    stamps = pd.to_datetime(full["when"])
    origins = range(TRAINED_ROWS, TRAINED_ROWS + 60)

    def request(end: int) -> dict:
        rows = full.iloc[end - LOOKBACK + 1 : end + 1]
        return {
            "values": {"kw": rows["kw"].tolist(), "temp": rows["temp"].tolist()},
            "timestamps": [t.isoformat() for t in stamps.iloc[end - LOOKBACK + 1 : end + 1]],
        }

    with TestClient(create_app([plant, yard], device="cpu")) as c:
        listed = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert listed["plant"]["shadow"] and listed["plant"]["challenger"]["version"] == str(v2)
        assert not listed["yard"]["shadow"]
        for end in origins:
            for name in ("plant", "yard"):
                r = c.post(f"/v1/models/{name}/forecast", json=request(end))
                assert r.status_code == 200, r.text
                assert r.json()["model"] == {"name": f"{name}-forecaster", "version": "1", "alias": "champion"}
        # the shadow answers are written off the request path: wait for the challenger's rows of every request
        folder = project / "forecasts" / "plant" / "live"
        deadline = time.monotonic() + 60
        while True:
            files = sorted(folder.glob("*.parquet"))
            rows = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame({"model_version": []})
            if (rows["model_version"] == str(v2)).sum() == len(origins) * H:
                break
            assert time.monotonic() < deadline, "the challenger's shadow rows did not all reach the live log"
            time.sleep(0.2)

        run = CliRunner()
        # before the actuals of those hours arrive, nothing can be scored
        r = run.invoke(_cli(), ["promote", "plant", "--live"])
        assert r.exit_code == 1 and "0 paired live forecasts of the 30 needed" in r.output, r.output
        assert tracking.get_alias(plant.model_name, "champion").version == v1

        # the actuals arrive: the next export holds 120 more hours
        _ingest(project, ALL_ROWS, plant)
        shown = run.invoke(_cli(), ["monitor", "plant"])
        assert f"champion v{v1} against challenger v{v2}" in shown.output, shown.output
        r = run.invoke(_cli(), ["promote", "plant", "--live"])
        assert r.exit_code == 0, r.output
        assert f"champion v{v1} -> v{v2}" in r.output and "promoted on live evidence" in r.output
        assert tracking.get_alias(plant.model_name, "champion").version == v2
        tags = tracking.get_version(plant.model_name, v2).tags
        assert tags["promotion.decision"] == "promoted" and tags["promotion.evidence"] == "live"
        assert tags["promotion.reason"] in r.output and int(tags["promotion.live_paired"]) == len(origins)
        assert float(tags["promotion.champion_p_value"]) < plant.evaluate.significance
        assert tags["promotion.split_decision"] == "rejected"  # what its test split said, kept beside
        # the monitor names the registry's champion now, not the log's last rows (answered before the promotion)
        shown = run.invoke(_cli(), ["monitor", "plant"]).output
        assert f"champion v{v2}, on the actuals" in shown and "against challenger" not in shown, shown
        assert f"answered by champion v{v1}: the alias moved since" in shown, shown

        # the service follows the alias: the next plant request is answered by v2, yard's champion is unchanged
        deadline = time.monotonic() + 30
        while c.get("/v1/models/plant").json()["version"] != str(v2):
            assert time.monotonic() < deadline, "the service did not swap in the new champion"
            time.sleep(0.2)
        answer = c.post("/v1/models/plant/forecast", json=request(ALL_ROWS - 1)).json()
        assert answer["model"] == {"name": "plant-forecaster", "version": str(v2), "alias": "champion"}
        assert c.get("/v1/models/yard").json()["version"] == "1"


def _cli():
    from cellcast.cli import app

    return app
