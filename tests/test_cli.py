"""The `cellcast` command as a new user meets it: their own CSV in, a champion and a forecast out."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import one_cell
from typer.testing import CliRunner

from cellcast.cli import app

pytestmark = pytest.mark.integration


def run(*args):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def shell(cwd, *args):
    """The real command in a process of its own, as a user runs it (Prefect configures logging per process)."""
    r = subprocess.run(
        [sys.executable, "-m", "cellcast", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=600,
    )
    return r.returncode, r.stdout + r.stderr


def test_help_on_every_command():
    code, out = run("--help")
    assert code == 0
    for cmd in (
        "datasets",
        "ingest",
        "validate",
        "window",
        "train",
        "run",
        "backtest",
        "evaluate",
        "models",
        "rollback",
        "forecast",
        "serve",
        "ui",
        "doctor",
    ):
        assert cmd in out
        c, o = run(cmd, "--help")
        assert c == 0 and "Usage" in o, cmd


def test_own_csv_to_champion_to_forecast(prefect_api, project, tiny_params):
    one_cell(tiny_params)
    rng = np.random.default_rng(0)
    n = 2000  # a test split with 12 forecast origins a day apart: enough evidence to promote (min 10)
    t = np.arange(n)
    pd.DataFrame(
        {
            "when": pd.date_range("2024-03-01", periods=n, freq="h").strftime("%Y-%m-%dT%H:%M:%S"),
            "kw": 50 + 10 * np.sin(2 * np.pi * t / 24) + np.cumsum(rng.standard_normal(n)),
            "temp": 15 + 5 * np.sin(2 * np.pi * t / 24 + 1),
        }
    ).to_csv(project / "plant.csv", sep=";", index=False)
    before = (project / "plant.csv").read_bytes()

    code, out = run(
        "ingest",
        "--csv",
        "plant.csv",
        "--time-col",
        "when",
        "--target",
        "kw",
        "--features",
        "temp",
        "--name",
        "plant",
    )
    assert code == 0, out
    # the entry point as a user runs it, in a process of its own (Prefect sets up its logging per process); the steps
    # before and after it run in this process
    code, out = shell(project, "train", "plant")
    assert code == 0, out
    code, out = run("models", "plant")
    assert code == 0 and "champion" in out, out
    code, out = run("evaluate", "plant")
    assert code == 0 and '"mase"' in out, out
    assert (project / "reports/plant/metrics.json").is_file()
    code, out = run("forecast", "plant")
    assert code == 0, out
    files = list((project / "forecasts/plant").glob("*.parquet"))
    assert len(files) == 1 and len(pd.read_parquet(files[0])) == 24
    assert (project / "plant.csv").read_bytes() == before


def test_unknown_dataset_and_bad_option_are_one_line_errors(project):
    code, out = run("train", "nosuch")
    assert code == 2 and "dataset 'nosuch'" in out and "Traceback" not in out
    code, out = run("train", "elecdemand", "--device", "tpu")
    assert code == 2 and "--device" in out
    code, out = run("forecast", "nosuch")
    assert code == 2 and "Traceback" not in out


def test_known_future_columns_from_ingest_to_a_forecast_with_intervals(prefect_api, project, tiny_params):
    """A promotion planned ahead (--future-features) and the calendar: the rows after the last observation carry the
    promotion for the horizon; the forecast has quantile columns; a --future file missing a value is refused, one line
    naming the column and the first timestamp without one. Through the CLI in this process: the process is the test
    above's."""
    import yaml

    p = yaml.safe_load(tiny_params.read_text())
    p["datasets"]["shop"] = {"calendar": {"parts": ["tod", "dow"]}, "train": {"anchor": "linear", "cells": ["gru"]}}
    tiny_params.write_text(yaml.safe_dump(p, sort_keys=False))
    rng = np.random.default_rng(0)
    n, ahead = 2000, 30
    t = np.arange(n + ahead)
    promo = (rng.random(n + ahead) < 0.15).astype(int)
    kw = 50 + 10 * np.sin(2 * np.pi * t / 24) + np.cumsum(rng.standard_normal(n + ahead)) + 8 * promo
    stamps = pd.date_range("2024-03-01", periods=n + ahead, freq="h")
    pd.DataFrame(
        {"when": stamps.strftime("%Y-%m-%dT%H:%M:%S"), "kw": np.r_[kw[:n], [np.nan] * ahead], "promo": promo}
    ).to_csv(project / "shop.csv", index=False)

    code, out = run(
        "ingest",
        "--csv",
        "shop.csv",
        "--time-col",
        "when",
        "--target",
        "kw",
        "--future-features",
        "promo",
        "--name",
        "shop",
    )
    assert code == 0 and "known ahead: promo (30 rows after the last observation)" in out, out
    code, out = run("train", "shop")
    assert code == 0, out
    code, out = run("models", "shop")
    assert code == 0 and "champion" in out, out
    code, out = run("forecast", "shop")
    assert code == 0, out
    fc = pd.read_parquet(next((project / "forecasts/shop").glob("*.parquet")))
    assert list(fc.columns) == [
        "timestamp",
        "kw",
        "kw_q0.05",
        "kw_q0.1",
        "kw_q0.9",
        "kw_q0.95",
        "model_name",
        "model_version",
    ]
    assert list(fc["timestamp"]) == list(stamps[n : n + 24])
    assert (fc["kw_q0.05"] <= fc["kw_q0.1"]).all() and (fc["kw_q0.9"] <= fc["kw_q0.95"]).all()
    code, out = run("evaluate", "shop")
    assert code == 0 and '"coverage_90"' in out and '"winkler_90"' in out, out

    gap = pd.DataFrame({"timestamp": stamps[n : n + 24].strftime("%Y-%m-%d %H:%M"), "promo": promo[n : n + 24]})
    gap = gap.drop(index=5)
    gap.to_csv(project / "plan.csv", index=False)
    code, out = run("forecast", "shop", "--future", "plan.csv")
    lines = [ln for ln in out.splitlines() if ln.startswith("error")]
    assert code == 2 and len(lines) == 1, out
    assert f"plan.csv: known-future column 'promo': no value for {stamps[n + 5]}" in lines[0], out
