"""The `cellcast` command as a new user meets it: their own CSV in, a champion and a forecast out."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellcast.cli import app

pytestmark = pytest.mark.integration


def run(*args):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def shell(cwd, *args):
    """The real command in a process of its own, as a user runs it (Prefect configures logging per process)."""
    r = subprocess.run([sys.executable, "-m", "cellcast", *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ}, timeout=600)
    return r.returncode, r.stdout + r.stderr


def test_help_on_every_command():
    code, out = run("--help")
    assert code == 0
    for cmd in ("datasets", "ingest", "validate", "window", "train", "run", "evaluate", "models", "rollback",
                "forecast", "serve", "ui", "doctor"):
        assert cmd in out
        c, o = run(cmd, "--help")
        assert c == 0 and "Usage" in o, cmd


def test_own_csv_to_champion_to_forecast(prefect_api, project, tiny_params):
    rng = np.random.default_rng(0)
    n = 2000    # a test split with 12 forecast origins a day apart: enough evidence to promote (min 10)
    t = np.arange(n)
    pd.DataFrame({"when": pd.date_range("2024-03-01", periods=n, freq="h").strftime("%Y-%m-%dT%H:%M:%S"),
                  "kw": 50 + 10 * np.sin(2 * np.pi * t / 24) + np.cumsum(rng.standard_normal(n)),
                  "temp": 15 + 5 * np.sin(2 * np.pi * t / 24 + 1)}).to_csv(project / "plant.csv", sep=";", index=False)
    before = (project / "plant.csv").read_bytes()

    code, out = shell(project, "ingest", "--csv", "plant.csv", "--time-col", "when", "--target", "kw", "--features", "temp",
                    "--name", "plant")
    assert code == 0, out
    code, out = shell(project, "train", "plant")
    assert code == 0, out
    code, out = shell(project, "models", "plant")
    assert code == 0 and "champion" in out, out
    code, out = shell(project, "evaluate", "plant")
    assert code == 0 and '"mase"' in out, out
    assert (project / "reports/plant/metrics.json").is_file()
    code, out = shell(project, "forecast", "plant")
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
