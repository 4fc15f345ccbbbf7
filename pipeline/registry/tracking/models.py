"""Logged models: the ONNX model (what serves) and the torch model of a run, with signatures whose batch and sequence
dimensions stay free, and the packages they need."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    pass
from .runs import _current_run_id
from .server import _reaching

log = logging.getLogger(__package__)  # one name for the package: what MLflow said, under one logger


# ---------------------------------------------------------------- logged models


def _flexible_spec(example: np.ndarray, name: str | None = None, tail: tuple[int, ...] | None = None) -> TensorSpec:
    """A float32 tensor spec whose batch and sequence dims are -1 (any); only the variable dims are fixed."""
    if tail is None:
        tail = tuple(int(d) for d in example.shape[2:])
    return TensorSpec(np.dtype(np.float32), (-1, -1, *tail), name)


def _check_example(input_example: np.ndarray) -> np.ndarray:
    x = np.asarray(input_example, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"input_example must be (batch, lookback, n_vars), got shape {x.shape}")
    if x.shape[0] < 2:
        # a batch-1 example lets some flavours pin the batch dimension to 1
        x = np.concatenate([x, x], axis=0)
    return x


def _onnx_io(onnx_path: Path) -> tuple[list[tuple[str, tuple]], list[tuple[str, tuple]]]:
    import onnx  # read the graph's declared inputs/outputs; symbolic dims come back as -1

    model = onnx.load(str(onnx_path), load_external_data=False)
    try:
        # the exporter leaves the forecast dims symbolic; inference recovers (horizon, targets)
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - the declared shapes are still a valid (looser) signature
        pass
    graph = model.graph

    def dims(vi):
        return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)

    return [(i.name, dims(i)) for i in graph.input], [(o.name, dims(o)) for o in graph.output]


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements of the installed packages; stated, since MLflow's inference of them
    re-imports the model in a subprocess (~5 s per model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for p in packages:
        try:
            out.append(f"{p}=={version(p).split('+')[0]}")
        except PackageNotFoundError:
            pass
    return out


@_reaching
def log_onnx_model(
    onnx_path: Path,
    input_example: np.ndarray,
    name: str = "onnx_model",
    metadata: dict | None = None,
    future_example: np.ndarray | None = None,
) -> str:
    """Log an ONNX file as an MLflow model of the active run; returns the model URI to register.
    A graph that reads known-future inputs (`future`) gets them in its signature and example; one that forecasts
    quantiles declares its second output (`q`)."""
    _current_run_id()
    onnx_path = Path(onnx_path)
    x = _check_example(input_example)
    inputs, outputs = _onnx_io(onnx_path)
    in_name, _ = inputs[0]
    in_specs: list[ColSpec | TensorSpec] = [_flexible_spec(x, in_name)]
    example = {in_name: x}
    for extra, dims in inputs[1:]:  # the known-future block: (batch, horizon, F)
        f = _future_example(future_example, len(x), dims)
        in_specs.append(TensorSpec(np.dtype(np.float32), (-1, *f.shape[1:]), extra))
        example[extra] = f
    out_specs: list[ColSpec | TensorSpec] = [
        TensorSpec(np.dtype(np.float32), (-1, *[(-1 if d <= 0 else d) for d in dims[1:]]), out) for out, dims in outputs
    ]
    signature = ModelSignature(inputs=Schema(in_specs), outputs=Schema(out_specs))
    info = mlflow.onnx.log_model(
        onnx_model=onnx_path.read_bytes(),
        name=name,
        signature=signature,
        input_example=example,
        metadata={str(k): v for k, v in (metadata or {}).items()} or None,
        # one self-contained .onnx file: what download_model hands to inference
        save_as_external_data=False,
        onnx_execution_providers=["CPUExecutionProvider"],
        pip_requirements=_requirements("onnx", "onnxruntime-gpu", "onnxruntime", "numpy"),
    )
    return info.model_uri


def _future_example(future: np.ndarray | None, batch: int, dims: tuple) -> np.ndarray:
    if future is None:
        raise ValueError("the model reads known-future inputs: pass future_example")
    f = np.asarray(future, dtype=np.float32)
    if f.ndim != 3 or (len(dims) == 3 and any(d > 0 and d != g for d, g in zip(dims[1:], f.shape[1:]))):
        raise ValueError(f"future_example must be (batch, horizon, F) as the graph declares {dims}, got {f.shape}")
    return np.concatenate([f] * -(-batch // len(f)))[:batch] if len(f) < batch else f[:batch]


@_reaching
def log_torch_model(
    model, input_example: np.ndarray, name: str = "pytorch_model", future_example: np.ndarray | None = None
) -> str:
    """Log the trained PyTorch module of the active run; returns its model URI.

    pickle, not the default pt2: torch.export fixes the batch and sequence dims from the example. A module that
    reads known-future inputs takes two tensors, which MLflow's PyTorch flavour cannot feed from one example:
    it is logged with its signature only (the ONNX model, which serves, carries the example)."""
    _current_run_id()
    import torch

    x = _check_example(input_example)
    model.eval()
    n_future = getattr(getattr(model, "spec", None), "n_future", 0)
    f = None if not n_future else _future_example(future_example, len(x), (-1, -1, n_future))
    with torch.no_grad():
        y = model(torch.from_numpy(x), None if f is None else torch.from_numpy(f)).numpy()
    in_specs: list[ColSpec | TensorSpec] = (
        [_flexible_spec(x)]
        if f is None
        else [_flexible_spec(x, "x"), TensorSpec(np.dtype(np.float32), (-1, *f.shape[1:]), "future")]
    )
    signature = ModelSignature(
        inputs=Schema(in_specs), outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *y.shape[1:]))])
    )
    # pickle is a deliberate choice (see above); MLflow warns about it on every call
    mlogger = logging.getLogger("mlflow.pytorch")
    level = mlogger.level
    mlogger.setLevel(logging.ERROR)
    try:
        info = mlflow.pytorch.log_model(
            model,
            name=name,
            signature=signature,
            input_example=x if f is None else None,
            serialization_format="pickle",
            pip_requirements=_requirements("torch", "numpy") + ["cellcast"],
        )
    finally:
        mlogger.setLevel(level)
    return info.model_uri
