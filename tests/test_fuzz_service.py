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

import httpx
import pytest
import torch
from test_serve import metrics  # Prometheus text -> samples
from uvicorn_server import ServerThread

from cellcast.pipeline.config import Settings
from cellcast.pipeline.engine.onnx_export import export_onnx
from cellcast.pipeline.modeling.model import ModelSpec, build
from cellcast.pipeline.serving.service import create_app

pytestmark = pytest.mark.integration  # schemathesis against a real uvicorn

ROOT = Path(__file__).resolve().parents[1]
SCHEMATHESIS = ROOT / ".venv-schemathesis" / "bin" / "schemathesis"
# examples per operation: 75 ran every check over each route (the three runs took 400 s at load 12 with 150)
EXAMPLES, SEED = 75, 7
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


def toy_model(
    d: Path, known_future: bool, dataset: str = "toy", lookback: int = 8, seed: int = 0, quantiles: bool = False
) -> Path:
    """A daily model with training bounds and a grid origin: every refusal path of the service is reachable; with
    known_future it reads the calendar and a column known ahead for the horizon and answers quantiles."""
    extra = (
        dict(n_future=3, quantiles=[0.1, 0.5, 0.9], future_mean=[0, 0, 0.5], future_std=[1, 1, 0.5])
        if known_future
        else {"quantiles": [0.1, 0.5, 0.9]}
        if quantiles
        else {}
    )
    spec = ModelSpec(
        cell="gru",
        n_vars=3,
        target_idx=[0],
        lookback=lookback,
        horizon=3,
        hidden_size=4,
        rnn_steps=4,
        mean=[50.0, 15.0, 0.5],
        std=[10.0, 5.0, 0.5],
        **extra,
    )
    torch.manual_seed(seed)
    meta = {
        "variables": ["load", "temp", "promo"],
        "targets": ["load"],
        "freq": "D",
        "dataset": dataset,
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
    return export_onnx(build(spec), d / f"{dataset}-{lookback}-{seed}.onnx", meta)


def run_schemathesis(schemathesis: Path, url: str, cwd: Path) -> tuple[str, int]:
    """schemathesis over every operation of the service at `url`; its output and the number of requests it
    generated (all passed: asserted here)."""
    out = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{url}/openapi.json",
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
        cwd=cwd,
        env=dict(os.environ),
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    m = re.search(r"(\d+) generated, (\d+) passed", text)
    assert m and int(m.group(1)) >= EXAMPLES and m.group(1) == m.group(2), text[-2000:]
    return text, int(m.group(1))


def no_failure(text: str) -> None:
    # a model reading the calendar needs timestamps on its grid, which has no JSON Schema: schemathesis warns that
    # most generated bodies are refused (422) -- rightly; what matters is that none failed a check
    assert "Failures:" not in text and "5xx" not in text.split("Test cases:")[-1], text[-3000:]


@pytest.mark.parametrize("known_future", [False, True], ids=["point", "future-and-quantiles"])
def test_the_service_holds_up_under_schemathesis(schemathesis, tmp_path, known_future):
    path = toy_model(tmp_path, known_future)
    info = SimpleNamespace(version="1", name="toy-forecaster", run_id="run1")
    app = create_app(
        Settings(dataset="toy", paths={"forecasts": tmp_path / "forecasts"}),
        source=lambda: (path, info),
        device="cpu",
        poll_seconds=3600,
        token="fuzz-token",
    )
    with ServerThread(app) as srv:
        text, n = run_schemathesis(schemathesis, srv.url, tmp_path)
    if known_future:
        no_failure(text)
    else:
        assert "No issues found" in text, text[-3000:]
    print(f"schemathesis: {n} requests, all passed")


def test_a_service_of_two_models_holds_up_under_schemathesis(schemathesis, tmp_path):
    # two models on one port, each on its own path with its own body (/v1/models/NAME/forecast), the generic
    # /v1/models/{name}/forecast and /v1/models/{name} beside them, and the one-model routes refusing (400); the
    # second has a challenger as a canary on half its requests, whose lookback differs from its champion's: a
    # request the challenger cannot read is answered by the champion; the first has one that reads what its
    # champion reads and answers quantiles too, in shadow and as a canary
    def source(path: Path, name: str, version: str):
        return lambda: (path, SimpleNamespace(version=version, name=name, run_id=f"run{version}"))

    plain, future = toy_model(tmp_path, False, "plain"), toy_model(tmp_path, True, "future")
    quantiles = toy_model(tmp_path, False, "plain", seed=1, quantiles=True)
    longer = toy_model(tmp_path, True, "future", lookback=12, seed=1)
    forecasts = tmp_path / "forecasts"
    app = create_app(
        [
            Settings(dataset="plain", paths={"forecasts": forecasts}, serve={"canary": 0.5, "shadow": True}),
            Settings(dataset="future", paths={"forecasts": forecasts}, serve={"canary": 0.5}),
        ],
        sources={
            "plain": {
                "champion": source(plain, "plain-forecaster", "1"),
                "challenger": source(quantiles, "plain-forecaster", "2"),
            },
            "future": {
                "champion": source(future, "future-forecaster", "1"),
                "challenger": source(longer, "future-forecaster", "2"),
            },
        },
        device="cpu",
        poll_seconds=3600,
        token="fuzz-token",
    )
    with ServerThread(app) as srv:
        paths = httpx.get(f"{srv.url}/openapi.json").json()["paths"]
        assert {"/v1/models/plain/forecast", "/v1/models/future/forecast", "/v1/models/{name}/forecast"} <= set(paths)
        text, n = run_schemathesis(schemathesis, srv.url, tmp_path)
        scraped = httpx.get(f"{srv.url}/metrics").text
    no_failure(text)
    m = metrics(scraped)
    # the model routes were exercised: at least the examples of each of the three forecast paths (one label)
    asked = {
        dict(k)["status"]: v
        for k, v in m["cellcast_requests_total"].items()
        if dict(k)["path"] == "/v1/models/{name}/forecast"
    }
    assert sum(asked.values()) >= 3 * EXAMPLES and not any(s.startswith("5") for s in asked), asked
    # and the canary answered some requests of the first model, its champion the others
    served = {
        (dict(k)["name"], dict(k)["role"]): v
        for k, v in m["cellcast_forecasts_total"].items()
        if dict(k)["served"] == "true"
    }
    assert served[("plain-forecaster", "champion")] > 0 and served[("plain-forecaster", "challenger")] > 0, served
    print(f"schemathesis: {n} requests over two models, all passed")
