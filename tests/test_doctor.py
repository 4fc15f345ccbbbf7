"""`cellcast doctor` and the torch device helpers: what a machine can run on, judged without a GPU here."""

from __future__ import annotations

import json

import pytest
import torch
from gpu_machine import run_without_services

from cellcast.pipeline.engine.doctor import DeviceUnavailableError, _judge, diagnose, render
from cellcast.pipeline.errors import CellcastError
from cellcast.pipeline.modeling.device import exact_fp32, gpu_present, tf32_settings

CPU_ONLY = not torch.cuda.is_available() and not gpu_present()


@pytest.fixture
def tf32_restored():
    """exact_fp32 changes process-wide torch flags: put them back for the other tests."""
    b = torch.backends
    saved = (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision)
    yield
    b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision = saved


def test_exact_fp32_turns_tf32_off_on_cuda_only(tf32_restored):
    b = torch.backends
    b.cudnn.rnn.fp32_precision = "tf32"  # cuDNN's default: RNNs in TF32
    exact_fp32("cpu")
    assert tf32_settings()["cudnn.rnn"] == "tf32"
    exact_fp32(torch.device("cuda"))  # setting the flags needs no GPU
    assert tf32_settings() == {"cuda.matmul": "ieee", "cudnn.conv": "ieee", "cudnn.rnn": "ieee"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host where .to('cuda') fails")
def test_the_trainer_and_the_predictor_turn_tf32_off_before_using_a_gpu(tf32_restored):
    """Wiring: both set exact fp32 before the model reaches the device (here the move then fails: no GPU)."""
    import numpy as np
    import pandas as pd

    from cellcast.pipeline.config import Params
    from cellcast.pipeline.data.window import build_windows
    from cellcast.pipeline.modeling.model import ModelSpec, build
    from cellcast.pipeline.modeling.train import Candidate, predictor, train_candidate

    b = torch.backends
    b.cudnn.rnn.fp32_precision = "tf32"
    with pytest.raises((RuntimeError, AssertionError)):
        predictor(build(ModelSpec(cell="gru", n_vars=1, target_idx=[0], lookback=8, horizon=2)), "cuda")
    assert tf32_settings()["cudnn.rnn"] == "ieee"
    b.cudnn.rnn.fp32_precision = "tf32"
    n = 200
    df = pd.DataFrame({"timestamp": pd.date_range("2022-01-01", periods=n, freq="h"), "y": np.sin(np.arange(n) / 4)})
    settings = Params(window={"lookback": 8, "horizon": 2}, train={"device": "cpu"}).for_dataset("syn")
    ws = build_windows(df, variables=["y"], targets=["y"], freq="h", settings=settings)
    with pytest.raises((RuntimeError, AssertionError)):
        train_candidate(ws, Candidate("gru", 4, 1), settings, device="cuda")
    assert tf32_settings()["cudnn.rnn"] == "ieee"


@pytest.mark.skipif(not CPU_ONLY, reason="judges a host without a GPU")
def test_on_a_host_without_a_gpu():
    d = diagnose("cpu")
    assert d.ok and d.resolved == "cpu" and "run on the CPU" in d.reason
    assert d.torch["installed"] and d.onnxruntime["installed"] and "CPUExecutionProvider" in d.onnxruntime["providers"]
    d.raise_unless_ok()
    auto = diagnose("auto")
    assert auto.ok and auto.resolved == "cpu" and "no NVIDIA GPU" in auto.reason
    cuda = diagnose("cuda")
    assert not cuda.ok and cuda.resolved == "cuda" and "\n" not in cuda.reason
    assert "CPU-only build" in cuda.reason or "cannot use it" in cuda.reason
    with pytest.raises(DeviceUnavailableError, match="device cuda: ") as e:
        cuda.raise_unless_ok()
    assert isinstance(e.value, CellcastError) and e.value.exit_code == 2
    text = render(cuda)
    assert "verdict      NOT OK" in text and "TF32" in text and "threads" in text and "providers" in text
    with pytest.raises(CellcastError, match="device 'tpu'"):
        diagnose("tpu")


# The verdict on reports of GPU machines: torch's and ONNX Runtime's findings as dicts.
TORCH_OK = {
    "installed": True,
    "version": "2.11.0+cu130",
    "cuda_build": "13.0",
    "cuda_available": True,
    "gpu": "NVIDIA H100 80GB HBM3",
    "gpu_memory_gib": 79.2,
    "smoke": "ok: LSTM step",
}
ORT_OK = {
    "installed": True,
    "package": "onnxruntime-gpu",
    "version": "1.31.1",
    "cuda_build": "13.0",
    "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "cuda_session": {"ok": True, "provider": "CUDAExecutionProvider", "missing": [], "error": None},
}


@pytest.mark.parametrize(
    "device, gpu, torch_over, ort_over, ok, words",
    [
        ("cuda", True, {}, {}, True, "run on NVIDIA H100"),
        ("auto", True, {}, {}, True, "run on NVIDIA H100"),
        ("auto", False, {}, {}, True, "no NVIDIA GPU"),
        ("cpu", True, {}, {}, True, "is cpu"),
        (
            "auto",
            True,
            {"cuda_build": None, "version": "2.13.0+cpu"},
            {},
            False,
            "a GPU is present (/dev/nvidia*) but torch 2.13.0+cpu is a CPU-only build",
        ),
        (
            "cuda",
            True,
            {"cuda_available": False, "cuda_error": "driver too old"},
            {},
            False,
            "cannot use it: driver too old",
        ),
        (
            "cuda",
            True,
            {"smoke": None, "cuda_error": "CUDNN_STATUS_NOT_INITIALIZED"},
            {},
            False,
            "training step on the GPU failed: CUDNN_STATUS_NOT_INITIALIZED",
        ),
        (
            "cuda",
            True,
            {},
            {"package": "onnxruntime", "providers": ["CPUExecutionProvider"], "cuda_session": None},
            False,
            "onnxruntime 1.31.1 has no CUDA provider",
        ),
        (
            "cuda",
            True,
            {},
            {
                "cuda_session": {
                    "ok": False,
                    "provider": "CPUExecutionProvider",
                    "missing": ["libcublasLt.so.13", "libcudnn.so.9"],
                    "error": None,
                }
            },
            False,
            "CUDA libraries not found: libcublasLt.so.13, libcudnn.so.9",
        ),
        (
            "cuda",
            True,
            {},
            {
                "cuda_session": {
                    "ok": False,
                    "provider": "CPUExecutionProvider",
                    "missing": [],
                    "error": "EP Error: CUDA failure 35",
                }
            },
            False,
            "EP Error: CUDA failure 35",
        ),
        (
            "cuda",
            True,
            {"installed": False, "error": "import torch failed: libc10.so"},
            {},
            False,
            "import torch failed",
        ),
        (
            "cpu",
            False,
            {},
            {"installed": False, "error": "import onnxruntime failed: no module"},
            False,
            "install onnxruntime-gpu",
        ),
    ],
)
def test_the_verdict(device, gpu, torch_over, ort_over, ok, words):
    want_gpu = device == "cuda" or (device == "auto" and gpu)
    got_ok, reason = _judge(device, gpu, want_gpu, {**TORCH_OK, **torch_over}, {**ORT_OK, **ort_over})
    assert got_ok is ok and words in reason and "\n" not in reason, reason


@pytest.mark.integration  # the installed command as a process
def test_the_command_runs_without_the_services(tmp_path):
    """`cellcast doctor` as on the GPU machine (no MLflow, Prefect, GX, DVC or FastAPI): a report, exit 0 when
    the device works, else exit 2 and one line saying why."""
    (tmp_path / "params.yaml").write_text("train:\n  device: cpu\n")
    r = run_without_services("-m cellcast", ["doctor", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["device"] == "cpu" and report["ok"] is True
    assert {"version", "tf32", "threads", "cuda_available"} <= set(report["torch"])
    assert {"package", "version", "providers"} <= set(report["onnxruntime"])
    if CPU_ONLY:
        r = run_without_services("-m cellcast", ["doctor", "--device", "cuda"], cwd=tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "verdict      NOT OK" in r.stdout
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith("error: device cuda: "), r.stderr
    r = run_without_services("-m cellcast", ["doctor", "--device", "tpu"], cwd=tmp_path)
    assert r.returncode == 2 and "--device 'tpu'" in r.stderr


def test_auto_trains_on_the_gpu_when_torch_has_one(monkeypatch):
    """params.yaml's train.device is auto: `make run` on a GPU machine trains there, and anywhere else on the CPU."""
    from cellcast.pipeline.errors import ConfigError
    from cellcast.pipeline.modeling.train import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda" and pick_device("cuda").type == "cuda"
    assert pick_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")
    from gpu_machine import ROOT

    from cellcast.pipeline.config import load_params

    assert load_params(ROOT / "params.yaml").for_dataset().train.device == "auto"  # what `make run` reads
