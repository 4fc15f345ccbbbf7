"""schemathesis against the real forecasting service (uvicorn on 127.0.0.1), from the service's own
OpenAPI schema: bounded, seeded examples, zero 5xx, every answer as the schema declares it.

schemathesis lives in its own virtualenv (.venv-schemathesis, made by .ci/run or `make fuzz-venv`), never in
cellcast's dependencies."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from uvicorn_server import ServerThread

from cellcast.pipeline.config import Settings
from cellcast.pipeline.engine.onnx_export import export_onnx
from cellcast.pipeline.modeling.model import ModelSpec, build
from cellcast.pipeline.serving.service import create_app

pytestmark = pytest.mark.integration  # schemathesis against a real uvicorn

ROOT = Path(__file__).resolve().parents[1]
SCHEMATHESIS = ROOT / ".venv-schemathesis" / "bin" / "schemathesis"
EXAMPLES, SEED = 150, 7
# positive_data_acceptance is left out: the grid of the timestamps (steps, phase) has no JSON Schema, so a
# schema-valid body with random date-times is rightly refused (422); every other check runs
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


@pytest.fixture(scope="module")
def schemathesis() -> Path:
    if not SCHEMATHESIS.exists():
        from postgres_server import REQUIRE_ENV

        if os.environ.get(REQUIRE_ENV) or os.environ.get("CI"):  # .ci/run sets the first, CI the second
            pytest.fail(f"{SCHEMATHESIS} missing: .ci/run makes it (`make fuzz-venv`)")
        pytest.skip("schemathesis not installed here: `make fuzz-venv` (or .ci/run) makes .venv-schemathesis")
    return SCHEMATHESIS


@pytest.mark.parametrize("known_future", [False, True], ids=["point", "future-and-quantiles"])
def test_the_service_holds_up_under_schemathesis(schemathesis, tmp_path, known_future):
    # a daily model with training bounds and a grid origin: every refusal path of the service is reachable; the
    # second reads the calendar and a column known ahead for the horizon and answers quantiles
    extra = (
        dict(n_future=3, quantiles=[0.1, 0.5, 0.9], future_mean=[0, 0, 0.5], future_std=[1, 1, 0.5])
        if known_future
        else {}
    )
    spec = ModelSpec(
        cell="gru",
        n_vars=3,
        target_idx=[0],
        lookback=8,
        horizon=3,
        hidden_size=4,
        rnn_steps=4,
        mean=[50.0, 15.0, 0.5],
        std=[10.0, 5.0, 0.5],
        **extra,
    )
    torch.manual_seed(0)
    meta = {
        "variables": ["load", "temp", "promo"],
        "targets": ["load"],
        "freq": "D",
        "dataset": "toy",
        "grid_origin": "2024-01-01T00:00:00",
        "bounds": {"load": [0.0, 200.0], "promo": [0.0, 1.0]},
    }
    if known_future:
        meta.update(
            {
                "future_names": ["dow_sin", "dow_cos", "promo"],
                "future_kinds": ["calendar", "calendar", "user"],
                "calendar": {"parts": ["dow"]},
            }
        )
    path = export_onnx(build(spec), tmp_path / "m.onnx", meta)
    info = SimpleNamespace(version="1", name="toy-forecaster", run_id="run1")
    app = create_app(
        Settings(dataset="toy", paths={"forecasts": tmp_path / "forecasts"}),
        source=lambda: (path, info),
        device="cpu",
        poll_seconds=3600,
        token="fuzz-token",
    )
    with ServerThread(app) as srv:
        out = subprocess.run(
            [
                str(schemathesis),
                "run",
                f"{srv.url}/openapi.json",
                "-H",
                "Authorization: Bearer fuzz-token",
                *CHECKS,
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                str(SEED),
                "--workers",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=dict(os.environ),
        )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    m = re.search(r"(\d+) generated, (\d+) passed", text)
    assert m and int(m.group(1)) >= EXAMPLES and m.group(1) == m.group(2), text[-2000:]
    if known_future:
        # its timestamps are required and must lie on the model's grid, which has no JSON Schema: schemathesis warns
        # that most generated bodies are refused (422) -- rightly; what matters is that none failed a check
        assert "Failures:" not in text and "5xx" not in text.split("Test cases:")[-1], text[-3000:]
    else:
        assert "No issues found" in text, text[-3000:]
    print(f"schemathesis: {m.group(1)} requests, all passed")
