"""Promotion on live evidence and the version nobody decided, against a real embedded MLflow store: `cellcast promote
NAME --live` moves the aliases with its reason tags (and rollback undoes it); a process killed (kill -9) between
registering a version and deciding it leaves a version the next look at the registry marks abandoned, while the
version of a process still alive is left alone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from livelog import live_rows, write_live
from plant import write_plant_csv
from typer.testing import CliRunner

pytestmark = pytest.mark.integration  # an MLflow store, subprocesses that import cellcast

H = 4


def _onnx(path, seed: int):
    """A small real ONNX model (its numbers are not what the live log holds: the log is made of known errors)."""
    from cellcast.pipeline.modeling.model import Forecaster, ModelSpec

    torch.manual_seed(seed)
    spec = ModelSpec(cell="gru", n_vars=2, target_idx=[0], lookback=24, horizon=H, hidden_size=4, rnn_steps=12)
    m = Forecaster(spec).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation
        torch.onnx.export(
            m,
            (torch.randn(2, 24, 2),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["forecast"],
            dynamic_axes={"x": {0: "batch"}, "forecast": {0: "batch"}},
        )
    return path


@pytest.fixture
def plant(project, monkeypatch):
    """Dataset 'plant' (hourly kw + temp) ingested and validated; the project's embedded MLflow store."""
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.ingest import ingest_file
    from cellcast.pipeline.data.validation import validate_dataset
    from cellcast.pipeline.registry import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_plant_csv(project / "plant.csv", 600)
    settings = load_params(project / "params.yaml").for_dataset("plant")
    ingest_file(project / "plant.csv", time_col="when", targets=["kw"], features=["temp"], settings=settings)
    validate_dataset(settings)
    tracking.configure(project)
    return settings


def _register(model: str, onnx_path, decision) -> int:
    from cellcast.pipeline.registry import tracking

    with tracking.parent_run("plant"):
        with tracking.candidate_run("gru") as rid:
            uri = tracking.log_onnx_model(onnx_path, np.zeros((2, 24, 2), np.float32))
    version = tracking.register_version(model, uri, rid)
    tracking.apply_decision(model, version, decision)
    return version


def test_promote_live_moves_the_alias_with_its_reason_and_rollback_undoes_it(plant, project, tmp_path):
    from cellcast.cli import app
    from cellcast.pipeline.catalog import live_dir, read_validated
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision

    model = plant.model_name
    v1 = _register(model, _onnx(tmp_path / "a.onnx", 1), Decision(True, "v1 beats the bar on its test split", {}))
    v2 = _register(model, _onnx(tmp_path / "b.onnx", 2), Decision(False, "v2 not significantly better on test", {}))
    assert (tracking.get_alias(model, "champion").version, tracking.get_alias(model, "challenger").version) == (1, 2)

    frame, _ = read_validated(plant)
    a = frame.assign(id="")
    rng = np.random.default_rng(3)
    noise = rng.normal(size=(200, H + 1))
    origins = list(a["timestamp"].iloc[400:520])
    reqs = [f"r{i}" for i in range(len(origins))]
    shadow = dict(target="kw", model=model, dataset="plant")

    def champ(o, r):
        return live_rows(a, o, H, v1, "champion", lambda i, s: 2 * noise[i, s], requests=r, **shadow)

    def chall(o, r):
        return live_rows(a, o, H, v2, "challenger", lambda i, s: 0.5 * noise[i, s], requests=r, served=False, **shadow)

    run = CliRunner()

    # too few paired forecasts: one line, exit 1, nothing recorded
    write_live(live_dir(plant), champ(origins[:12], reqs[:12]), chall(origins[:12], reqs[:12]))
    r = run.invoke(app, ["promote", "plant", "--live"])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        f"{model}: v2 not promoted: 12 paired live forecasts of the 30 needed (monitor.live_min_forecasts; "
        "scored: 12 of the challenger, 12 of the champion)"
    ], r.output
    assert tracking.get_version(model, v2).tags["promotion.decision"] == "rejected"

    # the rest of the traffic arrives, in more files of the writer
    write_live(live_dir(plant), champ(origins, reqs), chall(origins, reqs), pid=4343)
    shown = run.invoke(app, ["monitor", "plant"])
    assert shown.exit_code == 0, shown.output
    table = shown.output.splitlines()
    assert "champion v1 against challenger v2" in table[1]
    v1_row = next(line.split() for line in table if line.strip().startswith("v1 "))
    v2_row = next(line for line in table if line.strip().startswith("v2 "))
    assert v1_row[:3] == ["v1", "champion", "120"] and "better: DM -" in v2_row and "challenger" in v2_row

    r = run.invoke(app, ["promote", "plant", "--live"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"{model}: champion v1 -> v2: v2 live MASE ") and "promoted on live evidence" in r.output
    assert tracking.get_alias(model, "champion").version == v2 and tracking.get_alias(model, "previous").version == v1
    tags = tracking.get_version(model, v2).tags
    assert tags["promotion.decision"] == "promoted" and tags["promotion.evidence"] == "live"
    assert tags["promotion.reason"] in r.output and tags["promotion.replaced"] == "1"
    assert tags["promotion.live_paired"] == "120" and tags["promotion.live_first_origin"] == str(origins[0])
    assert tags["promotion.live_last_origin"] == str(origins[-1]) and float(tags["promotion.champion_dm"]) < 0
    assert float(tags["promotion.champion_p_value"]) < 0.05 and tags["promotion.champion_version"] == "1"
    assert tags["promotion.split_decision"] == "rejected" and tags["promotion.split_reason"].startswith("v2 not")

    r = run.invoke(app, ["promote", "plant", "--live"])
    assert (
        r.exit_code == 1 and r.output.strip() == f"{model}: not promoted: no challenger: the challenger is champion v2"
    )
    assert run.invoke(app, ["promote", "plant"]).exit_code == 2

    r = run.invoke(app, ["rollback", "plant"])
    assert r.exit_code == 0 and tracking.get_alias(model, "champion").version == v1, r.output
    assert tracking.get_alias(model, "previous").version == v2


REGISTER_AND_BLOCK = textwrap.dedent(
    """
    import sys, time
    from cellcast.pipeline.registry import tracking

    tracking.configure(sys.argv[1])
    with tracking.parent_run("plant") as rid:
        version = tracking.register_version("plant-forecaster", f"runs:/{rid}/onnx_model", rid)
        print(version, flush=True)
        time.sleep(600)  # where a training run weighs the version against the champion before deciding
    """
)


def _blocked(project) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen(
        [sys.executable, "-c", REGISTER_AND_BLOCK, str(project)],
        cwd=project,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()  # blocks until the version exists
    assert line.strip().isdigit(), f"the registering process said {line!r} (exit {p.poll()})"
    return p, int(line)


def test_a_version_whose_process_was_killed_before_deciding_is_marked_abandoned_and_a_live_ones_is_not(
    project, monkeypatch
):
    from cellcast.cli import app
    from cellcast.pipeline.registry import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure(project)
    killed, v_killed = _blocked(project)
    alive, v_alive = _blocked(project)
    try:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        assert "promotion.decision" not in tracking.get_version("plant-forecaster", v_killed).tags  # nobody decided

        r = CliRunner().invoke(app, ["models", "plant"])  # the next look at the registry finds it
        assert r.exit_code == 0, r.output
        tags = tracking.get_version("plant-forecaster", v_killed).tags
        assert tags["promotion.decision"] == "abandoned"
        assert tags["promotion.reason"].startswith(
            f"its training process {killed.pid}@{socket.gethostname()} ended before deciding (killed?)"
        )
        row = next(line for line in r.output.splitlines() if line.startswith(f"v{v_killed} "))
        assert "abandoned" in row and tracking.get_version("plant-forecaster", v_killed).aliases == []
        assert "promotion.decision" not in tracking.get_version("plant-forecaster", v_alive).tags  # still deciding
        assert tracking.end_undecided("plant-forecaster") == []  # marked once
    finally:
        os.killpg(alive.pid, signal.SIGKILL)
        alive.wait(timeout=30)
    time.sleep(0.1)
    assert tracking.end_undecided("plant-forecaster") == [v_alive]  # once its process is gone too


def test_the_forecast_flow_applies_the_live_rule_after_monitoring(prefect_api, project, tiny_params, monkeypatch):
    """A trained champion (tiny settings), a challenger registered beside it, a live log where the challenger is
    better: with monitor.live_promotion on, the scheduled forecast run (refresh) monitors, then promotes it."""
    import yaml

    from cellcast.cli import app
    from cellcast.flows.forecasting import forecast_flow
    from cellcast.flows.training import run_training
    from cellcast.pipeline.catalog import live_dir, read_validated
    from cellcast.pipeline.config import load_params
    from cellcast.pipeline.data.ingest import ingest_file
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = yaml.safe_load(tiny_params.read_text())
    p["train"]["cells"] = ["gru"]
    p["monitor"]["live_promotion"] = True
    tiny_params.write_text(yaml.safe_dump(p, sort_keys=False))
    write_plant_csv(project / "plant.csv")
    s = load_params(tiny_params).for_dataset("plant")
    ingest_file(project / "plant.csv", time_col="when", targets=["kw"], features=["temp"], settings=s)
    out = run_training(s)
    model = s.model_name
    if out.champion_after is None:  # whether tiny training earns a champion is the policy's business, not this test's
        tracking.apply_decision(model, out.version, Decision(True, "champion for this test", {}))
    v1 = tracking.get_alias(model, "champion")
    v2 = tracking.register_version(model, v1.source, v1.run_id, tags={"candidate": "again"})
    tracking.apply_decision(model, v2, Decision(False, "not significantly better on its test split", {}))

    frame, _ = read_validated(s)
    a = frame.assign(id="")
    noise = np.random.default_rng(5).normal(size=(100, H + 1))
    origins = list(a["timestamp"].iloc[-150:-50])
    kw = dict(target="kw", model=model, dataset="plant", requests=[f"r{i}" for i in range(100)])
    write_live(
        live_dir(s),
        live_rows(a, origins, H, v1.version, "champion", lambda i, k: 2 * noise[i, k], **kw),
        live_rows(a, origins, H, v2, "challenger", lambda i, k: 0.5 * noise[i, k], served=False, **kw),
    )

    forecast_flow("plant", s, refresh=True)
    assert tracking.get_alias(model, "champion").version == v2
    assert tracking.get_alias(model, "previous").version == v1.version
    tags = tracking.get_version(model, v2).tags
    assert tags["promotion.decision"] == "promoted" and tags["promotion.evidence"] == "live"
    assert tags["promotion.live_paired"] == "100" and tags["promotion.reason"].endswith("promoted on live evidence")

    shown = CliRunner().invoke(app, ["monitor", "plant"])  # the batch section, then the live one on the same scale
    assert shown.exit_code == 0, shown.output
    assert f"champion v{v1.version}, evaluation 1" in shown.output
    # the registry's champion now, and the version the logged rows were answered by
    assert f"champion v{v2}, on the actuals that arrived" in shown.output
    assert f"answered by champion v{v1.version}: the alias moved since" in shown.output
    assert "(the champion's MASE scale; a forecast: one series from one origin)" in shown.output
