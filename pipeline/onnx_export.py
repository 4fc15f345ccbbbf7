"""PyTorch -> ONNX, with the model's metadata and a parity gate. The only user of torch.onnx.

The TorchScript exporter (`dynamo=False`, opset 17) is used on purpose: it emits native LSTM / GRU
operators with dynamic batch and sequence length, while the dynamo exporter unrolls recurrent
layers with a fixed length and has exported GRUs with wrong numbers (STACK.md).

The vanilla RNN is the exception: ONNX Runtime's native `RNN` operator ran 3x slower than torch
on CPU. The Forecaster always runs exactly `spec.steps` steps of its cell (it slices the last steps
relative to the end of the input), so the cell is exported unrolled: one MatMul for the input
projection of every step at once, then per step MatMul + Add + Tanh. Batch and input length stay
dynamic because the unrolled loop only depends on `spec.steps`.
"""
from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import ExportError
from .model import Forecaster

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "y"


class _UnrolledRNN(nn.Module):
    """nn.RNN (batch_first) re-expressed step by step so it traces to plain MatMul/Add/Tanh.

    Returns (out, h) like nn.RNN, except that `out` holds only the last step: the Forecaster
    reads `out[:, -1, :]` and nothing else, and skipping the per-step outputs of the top layer
    saves a Concat of every step.
    """

    def __init__(self, rnn: nn.RNN, steps: int):
        super().__init__()
        self.steps = steps
        if not rnn.batch_first or rnn.bidirectional or getattr(rnn, "proj_size", 0):
            raise ExportError("rnn: only unidirectional batch_first RNN layers can be unrolled for export")
        self.num_layers = rnn.num_layers
        self.act = torch.tanh if rnn.nonlinearity == "tanh" else torch.relu
        for layer in range(rnn.num_layers):
            w_ih = getattr(rnn, f"weight_ih_l{layer}").detach()
            w_hh = getattr(rnn, f"weight_hh_l{layer}").detach()
            b = torch.zeros(w_ih.shape[0])
            if rnn.bias:
                b = (getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")).detach()
            # stored transposed: x @ W^T becomes a plain MatMul without a Transpose node
            self.register_buffer(f"w_ih{layer}", w_ih.t().contiguous())
            self.register_buffer(f"w_hh{layer}", w_hh.t().contiguous())
            self.register_buffer(f"b{layer}", b)

    def forward(self, seq: torch.Tensor):
        steps = self.steps  # the Forecaster always passes exactly spec.steps steps
        xs = seq
        h = None
        for layer in range(self.num_layers):
            w_ih, w_hh, b = (getattr(self, f"{n}{layer}") for n in ("w_ih", "w_hh", "b"))
            proj = torch.matmul(xs, w_ih) + b           # every step's input projection at once
            top = layer == self.num_layers - 1
            outs = []
            h = None
            for t in range(steps):
                pre = proj[:, t, :]
                h = self.act(pre if h is None else pre + torch.matmul(h, w_hh))
                if not top:
                    outs.append(h)
            if not top:
                xs = torch.stack(outs, dim=1)
        return h.unsqueeze(1), h.unsqueeze(0)


def export_model(model: Forecaster, unroll_rnn: bool = True) -> nn.Module:
    """The module that is traced: the model itself, or a copy with its RNN cell unrolled."""
    if model.spec.cell != "rnn" or not unroll_rnn:
        return model
    clone = copy.deepcopy(model).cpu().eval()
    clone.rnn = _UnrolledRNN(clone.rnn, model.spec.steps)
    return clone


def _example(model: Forecaster, example: np.ndarray | None) -> torch.Tensor:
    spec = model.spec
    if example is None:
        # a batch of 2 at twice the lookback: neither size may become a constant in the graph
        rng = np.random.default_rng(0)
        mean = model.mean.detach().cpu().numpy()
        std = model.std.detach().cpu().numpy()
        example = (mean + std * rng.standard_normal((2, spec.lookback, spec.n_vars)))
    x = torch.as_tensor(np.ascontiguousarray(example, dtype=np.float32))
    if x.ndim != 3 or x.shape[2] != spec.n_vars or x.shape[1] < spec.lookback:
        raise ExportError(f"export example: expected shape (batch, >= {spec.lookback}, {spec.n_vars}), "
                          f"got {tuple(x.shape)}")
    return x


def export_onnx(model: Forecaster, path: Path, metadata: dict, example: np.ndarray | None = None,
                unroll_rnn: bool = True) -> Path:
    """Write `model` as ONNX to `path` with `metadata` (+ the model spec) in metadata_props (JSON values).

    The graph takes `x` (batch, time, n_vars) float32 with time >= lookback and returns
    `y` (batch, horizon, n_targets) in the data's units. unroll_rnn=False keeps ORT's native RNN
    operator for the vanilla cell (slower on CPU; kept for comparison in bench/inference.py).
    """
    import onnx  # onnx itself (not torch.onnx) is only needed to write the metadata

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    module = export_model(model, unroll_rnn)
    x = _example(model, example)
    spec = model.spec
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch", 1: "time"}, OUTPUT_NAME: {0: "batch"}})
    except Exception as e:  # a failed trace is reported as one line; the traceback goes to the log
        log.debug("torch.onnx.export failed", exc_info=True)
        raise ExportError(f"{path}: ONNX export of the {spec.cell} model failed: {str(e).splitlines()[0]}") from e

    meta = {"lookback": spec.lookback, "horizon": spec.horizon, "cell": spec.cell,
            "export": "unrolled" if spec.cell == "rnn" and unroll_rnn else "native",
            "cellcast_version": __version__, "opset": OPSET}
    meta.update(metadata or {})
    meta["spec"] = spec.to_dict()
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key = str(key)
        entry.value = json.dumps(value, default=str)
    proto.producer_name = "cellcast"
    proto.producer_version = __version__
    onnx.save(proto, str(path))
    return path


@dataclass(frozen=True)
class ParityResult:
    ok: bool
    max_abs: float
    max_rel_to_scale: float
    n: int
    rtol: float = 1e-3

    @property
    def reason(self) -> str:
        verdict = "within" if self.ok else "NOT within"
        return (f"ONNX Runtime vs PyTorch on {self.n} windows: max |diff| {self.max_abs:.3g} "
                f"= {self.max_rel_to_scale:.3g} of the target scale, {verdict} tolerance {self.rtol:g}")


def check_parity(model: Forecaster, onnx_path: Path, windows: np.ndarray, rtol: float = 1e-3,
                 batch: int = 1024) -> ParityResult:
    """Compare ONNX Runtime (CPU) with PyTorch on real windows; differences are measured relative
    to each target's scale (its training std), so one tolerance fits every dataset's units."""
    from .inference import OnnxForecaster

    windows = np.ascontiguousarray(windows, dtype=np.float32)
    if windows.ndim != 3 or len(windows) == 0:
        raise ExportError(f"parity check: expected a non-empty (n, time, vars) array of windows, got shape "
                          f"{windows.shape}")
    model = model.cpu().eval()
    engine = OnnxForecaster.from_path(onnx_path, device="cpu")
    scale = model.target_scale().detach().cpu().numpy().astype(np.float64)
    max_abs, max_rel = 0.0, 0.0
    for i in range(0, len(windows), batch):
        chunk = windows[i:i + batch]
        with torch.no_grad():
            ref = model(torch.from_numpy(chunk)).numpy().astype(np.float64)
        got = engine.predict(chunk).astype(np.float64)
        diff = np.abs(ref - got)
        if not np.isfinite(diff).all():
            return ParityResult(False, float("inf"), float("inf"), len(windows), rtol)
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / scale).max()))
    return ParityResult(max_rel <= rtol, max_abs, max_rel, len(windows), rtol)


def export_checked(model: Forecaster, path: Path, metadata: dict, windows: np.ndarray,
                   rtol: float = 1e-3) -> tuple[Path, ParityResult]:
    """Export, then gate on parity: a model that fails it is removed and ExportError is raised."""
    path = export_onnx(model, path, metadata, example=windows[:2] if len(windows) >= 2 else None)
    result = check_parity(model, path, windows, rtol=rtol)
    if not result.ok:
        Path(path).unlink(missing_ok=True)
        raise ExportError(f"{path}: parity gate failed: {result.reason}")
    return path, result
