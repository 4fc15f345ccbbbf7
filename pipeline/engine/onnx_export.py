"""PyTorch -> ONNX, with the model's metadata and a parity gate. The only user of torch.onnx.

The TorchScript exporter (`dynamo=False`, opset 17) is used on purpose: it emits native LSTM / GRU
operators with dynamic batch and sequence length, while the dynamo exporter unrolls recurrent
layers with a fixed length and has exported GRUs with wrong numbers (STACK.md).

Recurrent cells can also be exported unrolled (the Forecaster always runs exactly `spec.steps` steps
of its cell, slicing the last steps relative to the end of the input, so batch and input length stay
dynamic): the vanilla RNN as MatMul + Add + Tanh per step (ORT's native RNN op ran 3x slower than
torch on CPU), LSTM and GRU as per-gate Gemms that ORT fuses with their Sigmoid/Tanh (see
_UnrolledGated). The unrolled graphs have thousands of nodes, which costs milliseconds at batch 1,
so LSTM and GRU default to a "hybrid" graph: an If on the batch size picks the unrolled graph for
large batches and the native operator for small ones. Variants and figures: bench/inference.py.

Inputs and outputs: `x` (batch, time, n_vars), and `future` (batch, horizon, F) when the model reads
known-future inputs; `y` (batch, horizon, n_targets), the point forecast, and `q` (batch, horizon,
n_targets, levels) when it forecasts quantiles. Every variant keeps them: only the encoder cell is
unrolled; a decoder cell over the horizon stays a native operator (its steps read the future block, its
state comes from the encoder), and an ensemble unrolls each member's encoder. The parity gate compares
both outputs on every path through the graph.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..errors import ExportError
from ..modeling.model import Forecaster, QuantileOutput

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "x"
FUTURE_NAME = "future"
OUTPUT_NAME = "y"
QUANTILE_NAME = "q"


class _UnrolledRNN(nn.Module):
    """nn.RNN (batch_first) re-expressed step by step so it traces to plain MatMul/Add/Tanh.

    Returns (out, h) like nn.RNN, except that `out` holds only the last step: the Forecaster
    reads `out[:, -1, :]` and its final state (a decoder starts from it), and skipping the per-step
    outputs of the top layer saves a Concat of every step.
    """

    def __init__(self, rnn: nn.RNNBase, steps: int):
        super().__init__()
        self.steps = steps
        _check_unrollable(rnn, "rnn")
        self.num_layers = rnn.num_layers
        self.act = torch.tanh if rnn.nonlinearity == "tanh" else torch.relu
        for layer in range(rnn.num_layers):
            w_ih, w_hh, (b_ih, b_hh) = _layer_weights(rnn, layer)
            b = b_ih + b_hh
            # stored transposed: x @ W^T becomes a plain MatMul without a Transpose node
            self.register_buffer(f"w_ih{layer}", w_ih.t().contiguous())
            self.register_buffer(f"w_hh{layer}", w_hh.t().contiguous())
            self.register_buffer(f"b{layer}", b)

    def forward(self, seq: torch.Tensor):
        steps = self.steps  # the Forecaster always passes exactly spec.steps steps
        xs = seq
        h: torch.Tensor | None = None
        finals: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b = (getattr(self, f"{n}{layer}") for n in ("w_ih", "w_hh", "b"))
            proj = torch.matmul(xs, w_ih) + b  # every step's input projection at once
            top = layer == self.num_layers - 1
            outs = []
            h = None
            for t in range(steps):
                pre = proj[:, t, :]
                h = self.act(pre if h is None else pre + torch.matmul(h, w_hh))
                if not top:
                    outs.append(h)
            assert h is not None  # steps >= 1 (ModelSpec.steps)
            if not top:
                xs = torch.stack(outs, dim=1)
            finals.append(h)
        assert h is not None  # num_layers >= 1
        return h.unsqueeze(1), torch.stack(finals)


class _UnrolledGated(nn.Module):
    """LSTM / GRU (batch_first) re-expressed step by step so they trace to Gemm + Sigmoid/Tanh/Mul/Add.

    Layers run interleaved, step by step, and every gate has its own Gemm over [the layer's input,
    its h] (batch, in + H) with the stacked weights [[W_ih], [W_hh]] (in + H, H) and summed biases:
    - ONNX Runtime fuses a Gemm with the Sigmoid/Tanh that follows it (FusedGemm), so the activation
      runs while the output is still in cache, and no Split/Slice copies the gates apart;
    - precomputing the input projection of every step in one MatMul (ORT's native op, _UnrolledRNN)
      writes a (batch, steps, 4H) tensor far larger than the cache; per-step Gemms stay cache-sized.
    GRU keeps PyTorch's semantics (ONNX linear_before_reset=1): the reset gate scales W_hn h + b_hn
    alone, so the candidate's x and h parts are two Gemms. Returns (out, state) like the torch
    layer with only the last step in `out` (see _UnrolledRNN).
    """

    def __init__(self, layer_module: nn.RNNBase, steps: int, cell: str):
        super().__init__()
        _check_unrollable(layer_module, cell)
        self.steps, self.num_layers, self.cell = steps, layer_module.num_layers, cell
        H = self.hidden = layer_module.hidden_size
        # PyTorch's gate order: LSTM (i, f, g, o), GRU (r, z, n)
        names = ("i", "f", "g", "o") if cell == "lstm" else ("r", "z")
        for layer in range(layer_module.num_layers):
            w_ih, w_hh, (b_ih, b_hh) = _layer_weights(layer_module, layer)
            n_in = w_ih.shape[1]
            for k, name in enumerate(names):
                rows = slice(k * H, (k + 1) * H)
                w = torch.cat([w_ih[rows].t(), w_hh[rows].t()], 0).contiguous()
                self.register_buffer(f"w{name}{layer}", w)
                self.register_buffer(f"wx{name}{layer}", w[:n_in].contiguous())  # first step: h = 0
                self.register_buffer(f"b{name}{layer}", (b_ih[rows] + b_hh[rows]).contiguous())
            if cell == "gru":
                rows = slice(2 * H, 3 * H)
                self.register_buffer(f"wxn{layer}", w_ih[rows].t().contiguous())
                self.register_buffer(f"bxn{layer}", b_ih[rows].contiguous())
                self.register_buffer(f"whn{layer}", w_hh[rows].t().contiguous())
                self.register_buffer(f"bhn{layer}", b_hh[rows].contiguous())

    def _gate(self, name: str, layer: int, inp, both, act):
        b = getattr(self, f"b{name}{layer}")
        pre = (
            torch.addmm(b, inp, getattr(self, f"wx{name}{layer}"))
            if both is None
            else torch.addmm(b, both, getattr(self, f"w{name}{layer}"))
        )
        return act(pre)

    def forward(self, seq: torch.Tensor):
        L, sig, tanh = self.num_layers, torch.sigmoid, torch.tanh
        h: list[torch.Tensor | None] = [None] * L  # None: the zero state before the first step
        c: list[torch.Tensor | None] = [None] * L
        for t in range(self.steps):
            inp = seq[:, t, :]
            for layer in range(L):
                hl, cl = h[layer], c[layer]
                both = None if hl is None else torch.cat([inp, hl], 1)
                if self.cell == "lstm":
                    i, g, o = (self._gate(n, layer, inp, both, a) for n, a in (("i", sig), ("g", tanh), ("o", sig)))
                    if cl is None:
                        cl = i * g
                    else:
                        cl = self._gate("f", layer, inp, both, sig) * cl + i * g
                    hl = o * tanh(cl)
                else:
                    r, z = (self._gate(n, layer, inp, both, sig) for n in ("r", "z"))
                    xn = torch.addmm(getattr(self, f"bxn{layer}"), inp, getattr(self, f"wxn{layer}"))
                    bhn = getattr(self, f"bhn{layer}")
                    if hl is None:  # h = 0: W_hn h vanishes, b_hn is left
                        n = tanh(xn + r * bhn)
                        hl = n - z * n
                    else:
                        n = tanh(xn + r * torch.addmm(bhn, hl, getattr(self, f"whn{layer}")))
                        hl = n + z * (hl - n)
                h[layer], c[layer] = hl, cl
                inp = hl
        hs = _stepped(h)
        state = (torch.stack(hs), torch.stack(_stepped(c))) if self.cell == "lstm" else torch.stack(hs)
        return hs[-1].unsqueeze(1), state


def _stepped(states: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """Every layer's state after the steps (steps >= 1: each layer has run)."""
    out = [s for s in states if s is not None]
    if len(out) != len(states):
        raise ExportError("unrolled cell: a layer ran no step (steps must be >= 1)")
    return out


def _check_unrollable(layer: nn.RNNBase, cell: str) -> None:
    if not layer.batch_first or layer.bidirectional or layer.proj_size:
        raise ExportError(
            f"{cell}: only unidirectional batch_first layers without projection can be unrolled for export"
        )


def _layer_weights(rnn: nn.RNNBase, layer: int):
    w_ih = getattr(rnn, f"weight_ih_l{layer}").detach()
    w_hh = getattr(rnn, f"weight_hh_l{layer}").detach()
    zeros = torch.zeros(w_ih.shape[0])
    if not rnn.bias:
        return w_ih, w_hh, (zeros, zeros.clone())
    return w_ih, w_hh, (getattr(rnn, f"bias_ih_l{layer}").detach(), getattr(rnn, f"bias_hh_l{layer}").detach())


UNROLLED: dict[str, Callable[[nn.RNNBase, int], nn.Module]] = {
    "rnn": _UnrolledRNN,
    "lstm": lambda m, steps: _UnrolledGated(m, steps, "lstm"),
    "gru": lambda m, steps: _UnrolledGated(m, steps, "gru"),
}


def _forecasters(model: nn.Module) -> list[Forecaster]:
    return [m for m in model.modules() if isinstance(m, Forecaster)]


def export_model(model: QuantileOutput, unroll_rnn: bool = True) -> QuantileOutput:
    """The module that is traced: the model itself (native ONNX RNN/LSTM/GRU operators), or a copy with
    its encoder cells (every member's, for an ensemble) unrolled into plain MatMul/Gemm and activations."""
    if not unroll_rnn:
        return model
    clone = copy.deepcopy(model).cpu().eval()
    for f in _forecasters(clone):
        if not isinstance(f.rnn, nn.RNNBase):
            raise ExportError(f"{f.spec.cell}: the encoder cell is not a torch RNN/LSTM/GRU (unrolled already?)")
        f.rnn = UNROLLED[f.spec.cell](f.rnn, f.spec.steps)
    return clone


class _Graph(nn.Module):
    """What the ONNX graph computes: (x[, future]) -> y[, q]."""

    def __init__(self, model: QuantileOutput):
        super().__init__()
        self.model = model
        self.quantiles = bool(model.quantiles)

    def forward(self, x: torch.Tensor, future: torch.Tensor | None = None):
        if self.quantiles:
            return self.model.forward_all(x, future)
        return self.model(x, future)


def io_names(model: QuantileOutput) -> tuple[list[str], list[str]]:
    """The graph's input and output names for `model`."""
    inputs = [INPUT_NAME] + ([FUTURE_NAME] if model.spec.n_future else [])
    outputs = [OUTPUT_NAME] + ([QUANTILE_NAME] if model.quantiles else [])
    return inputs, outputs


def _example(
    model: QuantileOutput, example: np.ndarray | None, future: np.ndarray | None = None
) -> tuple[torch.Tensor, ...]:
    spec = model.spec
    rng = np.random.default_rng(0)
    if example is None:
        # a batch of 2 at twice the lookback: neither size may become a constant in the graph
        f0 = _forecasters(model)[0]
        mean = f0.mean.detach().cpu().numpy()
        std = f0.std.detach().cpu().numpy()
        example = mean + std * rng.standard_normal((2, spec.lookback, spec.n_vars))
    x = torch.as_tensor(np.ascontiguousarray(example, dtype=np.float32))
    if x.ndim != 3 or x.shape[2] != spec.n_vars or x.shape[1] < spec.lookback:
        raise ExportError(
            f"export example: expected shape (batch, >= {spec.lookback}, {spec.n_vars}), got {tuple(x.shape)}"
        )
    if not spec.n_future:
        return (x,)
    if future is None:
        future = rng.standard_normal((len(x), spec.horizon, spec.n_future))
    f = torch.as_tensor(np.ascontiguousarray(future, dtype=np.float32))
    if f.shape != (len(x), spec.horizon, spec.n_future):
        raise ExportError(
            f"export example: future expected shape ({len(x)}, {spec.horizon}, {spec.n_future}), got {tuple(f.shape)}"
        )
    return x, f


VARIANTS = ("native", "unrolled", "hybrid")
# the variant each cell gets by default: measured in bench/inference.py (2 threads, batch 1024 and 1)
DEFAULT_VARIANT = {"rnn": "unrolled", "lstm": "hybrid", "gru": "hybrid", "ensemble": "hybrid"}
# hybrid: batches of at least this many windows run the unrolled graph, smaller ones the native operator
# (where the two crossed in bench/inference.py at 2 threads, 2 x 128 units, 168 steps)
HYBRID_MIN_BATCH = {"rnn": 16, "lstm": 256, "gru": 64}
# the same switch for CUDA sessions (metadata 'hybrid_min_batch_cuda', applied by the inference engine):
# "never" = the native operator (cuDNN) at every batch size. Expected from the unrolled graph's thousands
# of small kernels per call; bench/gpu_check.py measures both branches on a GPU and prints the value to use.
HYBRID_MIN_BATCH_CUDA = {"rnn": "never", "lstm": "never", "gru": "never"}


def hybrid_min_batch_default(model: QuantileOutput) -> int:
    """The hybrid switch of a model: its cell's, or for an ensemble the largest of its members' (below it every
    member runs its native operator)."""
    return max(HYBRID_MIN_BATCH[f.spec.cell] for f in _forecasters(model))


# one trace at a time in a process: the TorchScript exporter keeps its state in module globals, and the warnings
# filter it is traced under is process-wide (candidates are assessed in threads)
_TRACE_LOCK = threading.Lock()


def _trace(module: QuantileOutput, args: tuple[torch.Tensor, ...], cell: str):
    import onnx

    buf = io.BytesIO()
    inputs, outputs = io_names(module)
    axes = {
        INPUT_NAME: {0: "batch", 1: "time"},
        FUTURE_NAME: {0: "batch"},
        OUTPUT_NAME: {0: "batch"},
        QUANTILE_NAME: {0: "batch"},
    }
    try:
        with _TRACE_LOCK, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(
                _Graph(module),
                args,
                buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to a file object; stubs list paths
                dynamo=False,
                opset_version=OPSET,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes={k: v for k, v in axes.items() if k in inputs + outputs},
            )
    except Exception as e:  # a failed trace is reported as one line; the traceback goes to the log
        log.debug("torch.onnx.export failed", exc_info=True)
        raise ExportError(f"ONNX export of the {cell} model failed: {str(e).splitlines()[0]}") from e
    return onnx.load_from_string(buf.getvalue())


def _hybrid(native, unrolled, min_batch: int):
    """One graph holding both exports: If(batch >= min_batch) runs the unrolled graph, else the native.

    The unrolled graph has thousands of small nodes, so at batch 1 ONNX Runtime's per-node cost
    dominates and the single native operator is faster; at large batches the unrolled graph wins.
    """
    import onnx
    from onnx import TensorProto, helper

    branches = []
    for prefix, m in (("unrolled/", unrolled), ("native/", native)):
        # every name gets the branch prefix except the inputs, which both read from the outer graph
        g = onnx.compose.add_prefix(m, prefix, rename_inputs=False).graph
        branches.append(
            helper.make_graph(
                list(g.node),
                prefix.rstrip("/"),
                [],
                list(g.output),
                initializer=list(g.initializer),
                value_info=list(g.value_info),
            )
        )
    outputs = [o.name for o in native.graph.output]  # y (and q): the If yields what either branch does
    nodes = [
        helper.make_node("Shape", [INPUT_NAME], ["hybrid/shape"], start=0, end=1),
        helper.make_node("Squeeze", ["hybrid/shape"], ["hybrid/batch"]),
        helper.make_node("GreaterOrEqual", ["hybrid/batch", "hybrid/min_batch"], ["hybrid/big"]),
        helper.make_node("If", ["hybrid/big"], outputs, then_branch=branches[0], else_branch=branches[1]),
    ]
    graph = helper.make_graph(
        nodes,
        "cellcast_hybrid",
        list(native.graph.input),
        list(native.graph.output),
        initializer=[helper.make_tensor("hybrid/min_batch", TensorProto.INT64, [], [min_batch])],
    )
    model = helper.make_model(graph, opset_imports=list(native.opset_import))
    model.ir_version = native.ir_version
    onnx.checker.check_model(model)
    return model


def export_onnx(
    model: QuantileOutput,
    path: Path,
    metadata: dict,
    example: np.ndarray | None = None,
    unroll_rnn: bool = True,
    variant: str | None = None,
    hybrid_min_batch: int | None = None,
    hybrid_min_batch_cuda: int | str | None = None,
    future_example: np.ndarray | None = None,
) -> Path:
    """Write `model` as ONNX to `path` with `metadata` (+ the model spec) in metadata_props (JSON values).

    The graph takes `x` (batch, time, n_vars) float32 with time >= lookback (and `future` (batch, horizon, F)
    when the model reads known-future inputs) and returns `y` (batch, horizon, n_targets) in the data's units
    (and `q` (batch, horizon, n_targets, levels) when it forecasts quantiles). variant: "native" (ORT's RNN/LSTM/GRU
    operators), "unrolled" (MatMul/Gemm + activations per step), "hybrid" (both, chosen per call by
    batch size: >= hybrid_min_batch, default HYBRID_MIN_BATCH[cell], unrolled); None is
    DEFAULT_VARIANT for the cell, or "native" when unroll_rnn=False (the same choice as a boolean). The variant is
    recorded in the metadata 'export'. hybrid_min_batch_cuda: the switch on CUDA (a batch size or
    "never"; default HYBRID_MIN_BATCH_CUDA[cell]), recorded as 'hybrid_min_batch_cuda'.
    """
    import onnx  # onnx itself (not torch.onnx) writes the metadata and assembles the hybrid graph

    spec = model.spec
    variant = variant or (DEFAULT_VARIANT[spec.cell] if unroll_rnn else "native")
    hybrid_min_batch = int(hybrid_min_batch or hybrid_min_batch_default(model))
    if variant not in VARIANTS:
        raise ExportError(f"export variant: '{variant}' is not one of {', '.join(VARIANTS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    args = _example(model, example, future_example)
    try:
        if variant == "hybrid":
            proto = _hybrid(
                _trace(model, args, spec.cell),
                _trace(export_model(model, True), args, spec.cell),
                int(hybrid_min_batch),
            )
        else:
            proto = _trace(export_model(model, variant == "unrolled"), args, spec.cell)
    except ExportError as e:
        raise ExportError(f"{path}: {e}") from e

    inputs, outputs = io_names(model)
    meta = {
        "lookback": spec.lookback,
        "horizon": spec.horizon,
        "cell": spec.cell,
        "export": variant,
        "cellcast_version": __version__,
        "opset": OPSET,
        "inputs": inputs,
        "outputs": outputs,
        "quantiles": list(model.quantiles),
        "n_future": spec.n_future,
    }
    if variant == "hybrid":
        meta["hybrid_min_batch"] = int(hybrid_min_batch)
        on_cuda = hybrid_min_batch_cuda or ("never" if spec.cell == "ensemble" else HYBRID_MIN_BATCH_CUDA[spec.cell])
        if on_cuda != "never" and not (isinstance(on_cuda, int) and on_cuda >= 1):
            raise ExportError(f"hybrid_min_batch_cuda: '{on_cuda}' is not a batch size >= 1 or 'never'")
        meta["hybrid_min_batch_cuda"] = on_cuda
    meta.update(metadata or {})
    meta["spec"] = spec.to_dict()
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
class BranchParity:
    """Parity of one path through the exported graph: a hybrid graph answers small batches (a single
    request) with the native operator and large ones with the unrolled graph, each with its own weights'
    layout, so each is checked on the trained model."""

    name: str  # "native", "unrolled" (a hybrid's two), or the variant of a one-path graph
    batches: str  # the batch sizes that take this path, in words
    n: int  # windows compared on it
    max_abs: float
    max_rel_to_scale: float
    ok: bool

    def to_dict(self) -> dict:
        return {
            "batches": self.batches,
            "windows": self.n,
            "max_abs": self.max_abs,
            "max_rel_to_scale": self.max_rel_to_scale,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class ParityResult:
    ok: bool
    max_abs: float
    max_rel_to_scale: float
    n: int
    rtol: float = 1e-3
    branches: tuple[BranchParity, ...] = ()

    @property
    def reason(self) -> str:
        verdict = "within" if self.ok else "NOT within"
        text = (
            f"ONNX Runtime vs PyTorch on {self.n} windows: max |diff| {self.max_abs:.3g} "
            f"= {self.max_rel_to_scale:.3g} of the target scale, {verdict} tolerance {self.rtol:g}"
        )
        if self.branches:
            text += (
                " ("
                + "; ".join(
                    f"{b.name}, {b.batches}: {b.max_rel_to_scale:.3g}" + ("" if b.ok else " FAILED")
                    for b in self.branches
                )
                + ")"
            )
        return text


SINGLE_REQUESTS = 32  # windows sent one at a time (as the service answers a request) in every parity check


def _branch_plan(metadata: dict, batch: int) -> list[tuple[str, str, list[int]]]:
    """(path, its batch sizes in words, the batch sizes to run) for every path through the graph.

    Batch 1 always runs: it is what a single request takes. A hybrid graph switches at `hybrid_min_batch`:
    below it the native operator (batch 1 and the largest batch under the switch), from it the unrolled graph."""
    variant = str(metadata.get("export") or "graph")
    if variant != "hybrid":
        return [(variant, "every batch size", [1, batch])]
    switch = int(metadata["hybrid_min_batch"])
    native = [1] + ([switch - 1] if switch > 2 else [])
    return [("native", f"batch < {switch}", native), ("unrolled", f"batch >= {switch}", [max(switch, batch)])]


def _chunks(n: int, size: int, singles: int) -> list[np.ndarray]:
    """Index arrays covering 0..n-1 in batches of exactly `size` (the last one overlaps its neighbour so it
    takes the same path; windows are repeated when there are fewer than `size`); size 1: `singles` windows
    spread over the set."""
    if size == 1:
        return [np.array([i]) for i in np.unique(np.linspace(0, n - 1, min(n, singles)).astype(int))]
    if n <= size:
        return [np.resize(np.arange(n), size)]
    return [np.arange(i, i + size) if i + size <= n else np.arange(n - size, n) for i in range(0, n, size)]


def _reference(model: QuantileOutput, windows: np.ndarray, future: np.ndarray | None, batch: int):
    ys: list[np.ndarray] = []
    qs: list[np.ndarray] = []  # empty for a model without quantiles (q is None on every batch)
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            f = None if future is None else torch.from_numpy(future[i : i + batch])
            y, q = model.forward_all(torch.from_numpy(windows[i : i + batch]), f)
            ys.append(y.numpy())
            if q is not None:
                qs.append(q.numpy())
    y = np.concatenate(ys).astype(np.float64)
    return y, (np.concatenate(qs).astype(np.float64) if qs else None)


def check_parity(
    model: QuantileOutput,
    onnx_path: Path,
    windows: np.ndarray,
    rtol: float = 1e-3,
    batch: int = 1024,
    device: str = "cpu",
    future: np.ndarray | None = None,
) -> ParityResult:
    """Compare ONNX Runtime with PyTorch on real windows (and their future blocks), on every path through the
    exported graph (see _branch_plan), batch 1 included, on both outputs: the point forecast and the quantiles.
    Differences are measured relative to each target's scale (its training std), so one tolerance fits every
    dataset's units; the result holds each path's figures."""
    from .inference import OnnxForecaster

    windows = np.ascontiguousarray(windows, dtype=np.float32)
    if windows.ndim != 3 or len(windows) == 0:
        raise ExportError(
            f"parity check: expected a non-empty (n, time, vars) array of windows, got shape {windows.shape}"
        )
    if model.spec.n_future and (future is None or len(future) != len(windows)):
        raise ExportError(
            f"parity check: the model reads known-future inputs: pass their block for each of the "
            f"{len(windows)} windows"
        )
    future = None if not model.spec.n_future else np.ascontiguousarray(future, dtype=np.float32)
    model = model.cpu().eval()
    engine = OnnxForecaster.from_path(onnx_path, device=device)
    scale = model.target_scale().detach().cpu().numpy().astype(np.float64)
    n = len(windows)
    ref_y, ref_q = _reference(model, windows, future, batch)
    branches = []
    for name, words, sizes in _branch_plan(engine.metadata, batch):
        max_abs, max_rel, seen = 0.0, 0.0, set()
        for size in sizes:
            for idx in _chunks(n, size, SINGLE_REQUESTS):
                y, q, _ = engine.predict_all(windows[idx], None if future is None else future[idx])
                diffs = [(np.abs(y.astype(np.float64) - ref_y[idx]), scale)]
                if ref_q is not None:
                    if q is None:
                        diffs.append((np.full(1, np.inf), scale))
                    else:
                        diffs.append((np.abs(q.astype(np.float64) - ref_q[idx]), scale[:, None]))
                if not all(np.isfinite(d).all() for d, _ in diffs):
                    max_abs = max_rel = float("inf")
                    break
                max_abs = max(max_abs, *(float(d.max()) for d, _ in diffs))
                max_rel = max(max_rel, *(float((d / sc).max()) for d, sc in diffs))
                seen.update(idx.tolist())
        branches.append(BranchParity(name, words, len(seen), max_abs, max_rel, max_rel <= rtol))
    return ParityResult(
        all(b.ok for b in branches),
        max(b.max_abs for b in branches),
        max(b.max_rel_to_scale for b in branches),
        n,
        rtol,
        tuple(branches),
    )


def export_checked(
    model: QuantileOutput,
    path: Path,
    metadata: dict,
    windows: np.ndarray,
    rtol: float = 1e-3,
    future: np.ndarray | None = None,
) -> tuple[Path, ParityResult]:
    """Export, then gate on parity: a model that fails it is removed and ExportError is raised."""
    two = len(windows) >= 2
    path = export_onnx(
        model,
        path,
        metadata,
        example=windows[:2] if two else None,
        future_example=future[:2] if two and future is not None else None,
    )
    result = check_parity(model, path, windows, rtol=rtol, future=future)
    if not result.ok:
        Path(path).unlink(missing_ok=True)
        raise ExportError(f"{path}: parity gate failed: {result.reason}")
    return path, result
