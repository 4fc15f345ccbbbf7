"""One forecaster, the recurrent cell a parameter.

The network is self-contained: it takes raw observations (batch, time, variables) in the units of
the data and returns forecasts (batch, horizon, targets) in the same units. Scaling and its inverse
are buffers inside the module, so the exported ONNX graph needs nothing beside it.

Optionally (`anchor_season`) the network learns the residual over a seasonal-naive forecast
with that season (1 = the naive forecast): the head starts at zero, so an untrained model *is*
the baseline and training can only move away from it where that lowers the validation loss.
The cell reads the last `rnn_steps` steps of the scaled inputs plus, when anchored, the
seasonal differences of the targets over those steps (how this week differs from last week).
A difference needs the value one season earlier, so the differences are read only when the
lookback holds more than one season; a lookback of exactly one season (a week of half-hours,
seven days) reads the scaled inputs alone and is still anchored on that season.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class CellSpec:
    """What a recurrent cell is and what it supports."""

    module: type[nn.Module]
    state_tensors: int          # 1 for RNN/GRU (h), 2 for LSTM (h, c)
    onnx_op: str                # the native ONNX operator the TorchScript exporter emits
    layer_fn: Callable | None = None   # one layer as a function of its weights (what nn.RNN/LSTM/GRU call)
    dynamic_sequence: bool = True


CELLS: dict[str, CellSpec] = {
    "rnn": CellSpec(nn.RNN, 1, "RNN", torch.rnn_tanh),
    "lstm": CellSpec(nn.LSTM, 2, "LSTM", torch.lstm),
    "gru": CellSpec(nn.GRU, 1, "GRU", torch.gru),
}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a Forecaster (stored beside its weights and in ONNX metadata)."""

    cell: str
    n_vars: int
    target_idx: list[int]
    lookback: int
    horizon: int
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0
    rnn_steps: int = 48
    anchor_season: int | None = None        # None: no residual; 1: naive; m: seasonal naive with season m
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell: '{self.cell}' is not one of {', '.join(CELLS)}")
        for name in ("lookback", "horizon", "hidden_size", "num_layers", "rnn_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} is not a positive number")
        if self.anchor_season is not None and not 1 <= self.anchor_season <= self.lookback:
            raise ValueError(f"anchor_season {self.anchor_season} is not within 1..lookback {self.lookback}")

    @property
    def n_targets(self) -> int:
        return len(self.target_idx)

    @property
    def seasonal_diffs(self) -> bool:
        """Whether the cell reads seasonal differences: only when the lookback holds a step before its last season."""
        return self.anchor_season is not None and self.lookback > self.anchor_season

    @property
    def steps(self) -> int:
        """Steps the cell actually reads: rnn_steps, shortened to the lookback, or to the steps whose seasonal
        difference the lookback holds."""
        room = self.lookback - self.anchor_season if self.seasonal_diffs else self.lookback
        return max(1, min(self.rnn_steps, room))

    def to_dict(self) -> dict:
        return asdict(self)


class Forecaster(nn.Module):
    """`generator`: initialise the weights from it (else from torch's global RNG). `dropout_generator`
    (an attribute, set by the trainer): the masks of inter-layer dropout are drawn from it. Candidates
    trained at once in threads must not share torch's process-global RNG: who draws first would decide
    their weights."""

    def __init__(self, spec: ModelSpec, generator: torch.Generator | None = None):
        super().__init__()
        self.spec = spec
        self.dropout_generator: torch.Generator | None = None
        n_in = spec.n_vars + (spec.n_targets if spec.seasonal_diffs else 0)
        cell = CELLS[spec.cell].module
        self.rnn = cell(n_in, spec.hidden_size, spec.num_layers, batch_first=True,
                        dropout=spec.dropout if spec.num_layers > 1 else 0.0)
        self.head = nn.Linear(spec.hidden_size, spec.horizon * spec.n_targets)
        mean = torch.tensor(spec.mean or [0.0] * spec.n_vars, dtype=torch.float32)
        std = torch.tensor(spec.std or [1.0] * spec.n_vars, dtype=torch.float32)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        tidx = torch.tensor(spec.target_idx, dtype=torch.long)
        self.register_buffer("target_idx", tidx, persistent=False)
        if generator is not None:
            self.init_weights(generator)
        if spec.anchor_season:
            s = spec.anchor_season
            # seasonal naive for step h reads the last season's value at position h mod s
            self.register_buffer("base_idx", torch.arange(spec.horizon) % s, persistent=False)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """PyTorch's default initialisation of the cell and the head, in its order, drawn from `generator`."""
        bound = 1.0 / math.sqrt(self.spec.hidden_size)
        for w in self.rnn.parameters():
            nn.init.uniform_(w, -bound, bound, generator=generator)
        nn.init.kaiming_uniform_(self.head.weight, a=math.sqrt(5), generator=generator)
        fan_in = self.head.weight.shape[1]
        nn.init.uniform_(self.head.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)

    def _layerwise(self, seq: torch.Tensor, p: float) -> torch.Tensor:
        """The stacked cell one layer at a time, with dropout `p` between layers drawn from
        `dropout_generator` (nn.RNN's built-in dropout draws from the global RNG). Same weights, same
        parameter names: the exported graph and the checkpoints do not change."""
        rnn, fn = self.rnn, CELLS[self.spec.cell].layer_fn
        out = seq
        for layer in range(rnn.num_layers):
            if layer and p > 0:
                keep = torch.empty_like(out).bernoulli_(1 - p, generator=self.dropout_generator)
                out = out * keep / (1 - p)
            weights = [getattr(rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h0 = out.new_zeros(1, out.shape[0], rnn.hidden_size)
            state = (h0, h0) if self.spec.cell == "lstm" else h0
            out = fn(out, state, weights, True, 1, 0.0, self.training, False, True)[0]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        z = (x - self.mean) / self.std
        zt = z.index_select(2, self.target_idx)
        k = spec.steps
        seq = z[:, -k:, :]
        if spec.seasonal_diffs:
            s = spec.anchor_season
            seq = torch.cat([seq, zt[:, -k:, :] - zt[:, -k - s:-s, :]], dim=2)
        if self.training and self.rnn.dropout > 0 and self.rnn.num_layers > 1:
            out = self._layerwise(seq, self.rnn.dropout)
        else:
            out, _ = self.rnn(seq)
        delta = self.head(out[:, -1, :]).view(-1, spec.horizon, spec.n_targets)
        if spec.anchor_season:
            base = zt[:, -spec.anchor_season:, :].index_select(1, self.base_idx)
            delta = base + delta.to(base.dtype)
        mean_t = self.mean.index_select(0, self.target_idx)
        std_t = self.std.index_select(0, self.target_idx)
        return delta.float() * std_t + mean_t

    def target_scale(self) -> torch.Tensor:
        return self.std.index_select(0, self.target_idx)


def build(spec: ModelSpec, generator: torch.Generator | None = None) -> Forecaster:
    return Forecaster(spec, generator)


def save(model: Forecaster, path) -> None:
    torch.save({"spec": model.spec.to_dict(), "state_dict": model.state_dict()}, path)


def load(path, map_location="cpu") -> Forecaster:
    blob = torch.load(path, map_location=map_location, weights_only=True)
    model = Forecaster(ModelSpec(**blob["spec"]))
    model.load_state_dict(blob["state_dict"])
    return model
