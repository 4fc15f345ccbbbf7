"""ONNX Runtime engine: providers actually used, GPU requests on a CPU host, input checks, smoke test."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cellcast.pipeline.errors import CellcastError, NotFoundError
from cellcast.pipeline.engine.inference import (CPU, GpuUnavailableError, InferenceInputError, ModelLoadError, OnnxForecaster,
                                _gpu_present)
from cellcast.pipeline.modeling.model import ModelSpec, build
from cellcast.pipeline.engine.onnx_export import export_onnx

VARS = ["Demand", "Temperature"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    spec = ModelSpec(cell="lstm", n_vars=2, target_idx=[0], lookback=48, horizon=6, hidden_size=8, rnn_steps=12,
                     mean=[4.0, 15.0], std=[0.8, 5.0])
    torch.manual_seed(0)
    model = build(spec).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx",
                       {"variables": VARS, "targets": ["Demand"], "freq": "30min"})
    return model, path


def test_cpu_engine_predicts_like_torch_and_reads_metadata(exported):
    model, path = exported
    engine = OnnxForecaster.from_path(path, device="cpu", threads=1)
    assert engine.provider == CPU and engine.cpu_batch_threshold == 0
    assert (engine.lookback, engine.horizon, engine.n_vars) == (48, 6, 2)
    assert engine.variables == VARS and engine.targets == ["Demand"] and engine.metadata["freq"] == "30min"
    x = engine.synthetic_input(5)
    y, used = engine.predict_with_provider(x)
    assert used == CPU and engine.last_provider == CPU
    with torch.no_grad():
        np.testing.assert_allclose(y, model(torch.from_numpy(x)).numpy(), atol=1e-5)
    # a single window (time, vars) is accepted as a batch of one
    np.testing.assert_allclose(engine.predict(x[0]), y[:1], atol=1e-6)
    smoke = engine.smoke_test()
    assert smoke.shape == (1, 6, 1) and np.isfinite(smoke).all()


@pytest.mark.skipif(_gpu_present(), reason="checks the fallback of a host without a GPU")
def test_gpu_request_without_gpu_is_loud_or_an_error(exported, caplog):
    _, path = exported
    with caplog.at_level(logging.WARNING, logger="cellcast.pipeline.engine.inference"):
        engine = OnnxForecaster.from_path(path, device="cuda")
    assert engine.provider == CPU  # the provider ORT actually used, not the one asked for
    assert any("asked for a GPU" in r.getMessage() for r in caplog.records)
    with pytest.raises(GpuUnavailableError, match="asked for a GPU") as e:
        OnnxForecaster.from_path(path, device="auto", require_gpu=True)
    assert isinstance(e.value, CellcastError)
    # auto on a host without a GPU: CPU, quietly
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cellcast.pipeline.engine.inference"):
        assert OnnxForecaster.from_path(path).provider == CPU
    assert not caplog.records


def test_bad_inputs_are_one_line_errors(exported):
    _, path = exported
    engine = OnnxForecaster.from_path(path, device="cpu")
    with pytest.raises(InferenceInputError, match=r"expected shape \(batch, >= 48, 2\), got \(1, 47, 2\)"):
        engine.predict(np.zeros((1, 47, 2), np.float32))
    with pytest.raises(InferenceInputError, match="got \\(3, 48, 3\\)"):
        engine.predict(np.zeros((3, 48, 3), np.float32))
    x = engine.synthetic_input(2)
    x[1, 5, 0] = np.nan
    with pytest.raises(InferenceInputError, match="1 values are NaN"):
        engine.predict(x)


def test_missing_or_corrupt_files(tmp_path):
    with pytest.raises(NotFoundError, match="not found"):
        OnnxForecaster.from_path(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelLoadError, match="could not load"):
        OnnxForecaster.from_path(bad)
    with pytest.raises(CellcastError, match="device: 'tpu'"):
        OnnxForecaster.from_path(bad, device="tpu")
