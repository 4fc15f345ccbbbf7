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

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class CellSpec:
    """What a recurrent cell is and what it supports."""

    module: type[nn.Module]
    state_tensors: int          # 1 for RNN/GRU (h), 2 for LSTM (h, c)
    onnx_op: str                # the native ONNX operator the TorchScript exporter emits
    dynamic_sequence: bool = True


CELLS: dict[str, CellSpec] = {
    "rnn": CellSpec(nn.RNN, 1, "RNN"),
    "lstm": CellSpec(nn.LSTM, 2, "LSTM"),
    "gru": CellSpec(nn.GRU, 1, "GRU"),
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
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
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
        if spec.anchor_season:
            s = spec.anchor_season
            # seasonal naive for step h reads the last season's value at position h mod s
            self.register_buffer("base_idx", torch.arange(spec.horizon) % s, persistent=False)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        z = (x - self.mean) / self.std
        zt = z.index_select(2, self.target_idx)
        k = spec.steps
        seq = z[:, -k:, :]
        if spec.seasonal_diffs:
            s = spec.anchor_season
            seq = torch.cat([seq, zt[:, -k:, :] - zt[:, -k - s:-s, :]], dim=2)
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


def build(spec: ModelSpec) -> Forecaster:
    return Forecaster(spec)


def save(model: Forecaster, path) -> None:
    torch.save({"spec": model.spec.to_dict(), "state_dict": model.state_dict()}, path)


def load(path, map_location="cpu") -> Forecaster:
    blob = torch.load(path, map_location=map_location, weights_only=True)
    model = Forecaster(ModelSpec(**blob["spec"]))
    model.load_state_dict(blob["state_dict"])
    return model
