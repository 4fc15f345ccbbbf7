"""One forecaster, the recurrent cell a parameter; and the mean of several, as one more forecaster.

The network is self-contained: it takes raw observations `x` (batch, time, variables) in the units of
the data, and, when it reads known-future inputs, `future` (batch, horizon, F) in theirs (calendar
features, columns known ahead), and returns forecasts (batch, horizon, targets) in the target's units.
Scaling and its inverse are buffers inside the module, so the exported ONNX graph needs nothing beside it.

The residual design: the network learns the residual over an *anchor*, and its head starts at zero, so an
untrained model *is* its anchor and training can only move away from it where that lowers the validation
loss. Anchors (`spec.anchor`):
  seasonal_naive  the last season repeated (`anchor_season`; 1 = the naive forecast)
  linear          a linear map from the target's lookback (relative to its last value, NLinear-style) and the
                  known-future block to the horizon, fitted in closed form (ridge, modeling/anchor.py) and frozen
  seasonal_median the median of the seasonal naives over `anchor_seasons` (e.g. a day, a week and two weeks): one
                  odd day or week is outvoted (modeling/anchor.py chooses the seasons on validation)
The cell reads the last `rnn_steps` steps of the scaled inputs plus, when `anchor_season` is set, the
seasonal differences of the targets over those steps (how this week differs from last week); a difference
needs the value one season earlier, so they are read only when the lookback holds more than one season.
The head reads the cell's last state, the known-future block and the anchor. With `decoder`, a second cell
of the same kind starts from the encoder's state and runs over the horizon steps reading [future_h, anchor_h];
a shared zero-initialised layer maps each step's output to that step's residual (nonlinear in the calendar:
a holiday at 18:00 is not a holiday at 03:00). The point residual is scaled by `residual_gate` (0..1, chosen on
validation after training, modeling/train.py): a residual that fits the training windows' noise and forecasts
validation worse than its anchor is shrunk toward it, down to the anchor alone.

Quantiles (`spec.quantiles`, the median among them): every level is the anchor plus its own residual; the
median is the point forecast, and the others are the median plus (above) or minus (below) cumulative
softplus offsets, so they cannot cross by construction. A conformal shift per horizon step, target and level
(`q_shift`, fitted on held-out windows after training: modeling/quantiles.py) is added last, with one in units of
the window's forecast level (`q_scale` times the mean absolute point forecast over the horizon, per target: a band
that grows with the series' level, evaluate.calibration_scale), followed by a running max (min) outward from the
median, which keeps the order after the shift. `forward` returns the point forecast;
`forward_all` returns (point, quantiles (batch, horizon, targets, levels)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import cast

import torch
from torch import nn


@dataclass(frozen=True)
class CellSpec:
    """What a recurrent cell is and what it supports."""

    module: type[nn.RNN | nn.LSTM | nn.GRU]
    state_tensors: int  # 1 for RNN/GRU (h), 2 for LSTM (h, c)
    onnx_op: str  # the native ONNX operator the TorchScript exporter emits
    layer_fn: Callable  # one layer as a function of its weights (what nn.RNN/LSTM/GRU call)
    dynamic_sequence: bool = True


CELLS: dict[str, CellSpec] = {
    "rnn": CellSpec(nn.RNN, 1, "RNN", torch.rnn_tanh),
    "lstm": CellSpec(nn.LSTM, 2, "LSTM", torch.lstm),
    "gru": CellSpec(nn.GRU, 1, "GRU", torch.gru),
}
ANCHORS = ("seasonal_naive", "seasonal_median", "linear")


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
    anchor_season: int | None = None  # None: no seasonal anchor; 1: naive; m: seasonal naive with season m
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    anchor: str = "seasonal_naive"  # seasonal_naive (over anchor_season) | linear (fitted, frozen)
    n_future: int = 0  # known-future inputs per horizon step
    future_mean: list[float] = field(default_factory=list)  # their scaling (calendar features: 0 and 1)
    future_std: list[float] = field(default_factory=list)
    decoder: bool = False  # a cell over the horizon steps reading [future_h, anchor_h]
    quantiles: list[float] = field(default_factory=list)  # levels forecast beside the point (0.5 among them)
    anchor_seasons: list[int] = field(default_factory=list)  # seasonal_median: the seasons of its naives
    residual_gate: float = 1.0  # the share of the learnt point residual added to the anchor (chosen on validation)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell: '{self.cell}' is not one of {', '.join(CELLS)}")
        for name in ("lookback", "horizon", "hidden_size", "num_layers", "rnn_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} is not a positive number")
        if self.anchor_season is not None and not 1 <= self.anchor_season <= self.lookback:
            raise ValueError(f"anchor_season {self.anchor_season} is not within 1..lookback {self.lookback}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor: '{self.anchor}' is not one of {', '.join(ANCHORS)}")
        if self.anchor == "seasonal_median" and (
            len(self.anchor_seasons) < 2 or not all(1 <= m <= self.lookback for m in self.anchor_seasons)
        ):
            raise ValueError(
                f"anchor_seasons {self.anchor_seasons}: seasonal_median needs two or more seasons within 1..lookback "
                f"{self.lookback}"
            )
        if not 0.0 <= self.residual_gate <= 1.0:
            raise ValueError(f"residual_gate: {self.residual_gate} is not within 0..1")
        if self.n_future < 0:
            raise ValueError(f"n_future: {self.n_future} is negative")
        if self.quantiles and 0.5 not in self.quantiles:
            raise ValueError("quantiles: the median (0.5) must be among the levels")
        if any(b <= a for a, b in zip(self.quantiles, self.quantiles[1:])):
            raise ValueError("quantiles: levels must increase")

    @property
    def n_targets(self) -> int:
        return len(self.target_idx)

    @property
    def anchored(self) -> bool:
        """Whether the network forecasts a residual over an anchor (its head starts at zero)."""
        return self.anchor in ("linear", "seasonal_median") or self.anchor_season is not None

    @property
    def seasonal_diffs(self) -> bool:
        """Whether the cell reads seasonal differences: only when the lookback holds a step before its last season."""
        return self.anchor_season is not None and self.lookback > self.anchor_season

    @property
    def steps(self) -> int:
        """Steps the cell actually reads: rnn_steps, shortened to the lookback, or to the steps whose seasonal
        difference the lookback holds."""
        season = self.anchor_season
        room = self.lookback - season if season is not None and self.seasonal_diffs else self.lookback
        return max(1, min(self.rnn_steps, room))

    @property
    def median_index(self) -> int | None:
        return self.quantiles.index(0.5) if self.quantiles else None

    def to_dict(self) -> dict:
        return asdict(self)


def monotone(q: torch.Tensor, m: int, median: torch.Tensor | None = None) -> torch.Tensor:
    """Quantiles (..., Q) made non-decreasing along the last axis by a running max above the median (index m)
    and a running min below it; the median is kept (or set to `median`: the point forecast, whatever a shift
    says). Elementwise Max/Min: exports as plain ONNX ops."""
    cols: list[torch.Tensor] = [q[..., m] if median is None else median] * q.shape[-1]
    for k in range(m + 1, q.shape[-1]):
        cols[k] = torch.maximum(q[..., k], cols[k - 1])
    for k in range(m - 1, -1, -1):
        cols[k] = torch.minimum(q[..., k], cols[k + 1])
    return torch.stack(cols, dim=-1)


class QuantileOutput(nn.Module):
    """What Forecaster and Ensemble share: `raw` forecasts (point, quantiles before calibration), the conformal
    shift buffer `q_shift` (horizon, targets, levels), zero until calibrated, and the calibrated outputs."""

    quantiles: list[float]
    spec: ModelSpec | EnsembleSpec
    q_shift: torch.Tensor  # a buffer
    q_scale: torch.Tensor  # a buffer: the shift in units of the window's forecast level

    def _init_shift(self, horizon: int, n_targets: int, quantiles: list[float]) -> None:
        self.quantiles = list(quantiles)
        self.register_buffer("q_shift", torch.zeros(horizon, n_targets, len(quantiles)))
        self.register_buffer("q_scale", torch.zeros(horizon, n_targets, len(quantiles)))

    def raw(self, x: torch.Tensor, future: torch.Tensor | None = None):
        raise NotImplementedError

    def forward_all(self, x: torch.Tensor, future: torch.Tensor | None = None):
        """(point (B, H, T), quantiles (B, H, T, Q) calibrated and ordered, or None without levels)."""
        y, q = self.raw(x, future)
        if q is None:
            return y, None
        level = y.abs().mean(dim=1, keepdim=True).unsqueeze(-1)  # (B, 1, T, 1): quantiles.forecast_level
        return y, monotone(q + self.q_shift + self.q_scale * level, self.quantiles.index(0.5), y)

    def forward(self, x: torch.Tensor, future: torch.Tensor | None = None) -> torch.Tensor:
        return self.raw(x, future)[0]

    def target_scale(self) -> torch.Tensor:
        """The targets' training std (T,): the scale of their units."""
        raise NotImplementedError


class Forecaster(QuantileOutput):
    """`generator`: initialise the weights from it (else from torch's global RNG). `dropout_generator`
    (an attribute, set by the trainer): the masks of inter-layer dropout are drawn from it. Candidates
    trained at once in threads must not share torch's process-global RNG: who draws first would decide
    their weights."""

    spec: ModelSpec
    rnn: nn.Module  # the encoder cell (nn.RNN/LSTM/GRU; the ONNX export swaps in an unrolled copy)
    dec: nn.RNNBase
    # buffers
    mean: torch.Tensor
    std: torch.Tensor
    fmean: torch.Tensor
    fstd: torch.Tensor
    target_idx: torch.Tensor
    base_idx: torch.Tensor
    median_idx: torch.Tensor

    def __init__(self, spec: ModelSpec, generator: torch.Generator | None = None):
        super().__init__()
        self.spec = s = spec
        self.dropout_generator: torch.Generator | None = None
        H, T, F = s.horizon, s.n_targets, s.n_future
        self.n_q = len(s.quantiles)
        qn = max(self.n_q, 1)
        n_in = s.n_vars + (T if s.seasonal_diffs else 0)
        cell = CELLS[s.cell].module
        self.rnn = cell(
            n_in, s.hidden_size, s.num_layers, batch_first=True, dropout=s.dropout if s.num_layers > 1 else 0.0
        )
        n_head = s.hidden_size + H * F + (H * T if s.anchored else 0)
        self.head = nn.Linear(n_head, H * T * qn)
        if s.decoder:
            self.dec = cell(
                F + T, s.hidden_size, s.num_layers, batch_first=True, dropout=s.dropout if s.num_layers > 1 else 0.0
            )
            self.dec_out = nn.Linear(s.hidden_size, T * qn)
        if s.anchor == "linear":
            self.linear = nn.Linear(s.lookback * T + H * F, H * T)
            self.linear.requires_grad_(False)  # fitted in closed form, then frozen (modeling/anchor.py)
        mean = torch.tensor(s.mean or [0.0] * s.n_vars, dtype=torch.float32)
        std = torch.tensor(s.std or [1.0] * s.n_vars, dtype=torch.float32)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("fmean", torch.tensor(s.future_mean or [0.0] * F, dtype=torch.float32))
        self.register_buffer("fstd", torch.tensor(s.future_std or [1.0] * F, dtype=torch.float32))
        self.register_buffer("target_idx", torch.tensor(s.target_idx, dtype=torch.long), persistent=False)
        if self.n_q:
            # offsets of the levels above the median and below it (nearest first), before their softplus:
            # trained, and started by the trainer at the anchor's residual spread (init_quantile_offsets)
            self.q_bias = nn.Parameter(torch.zeros(H, T, self.n_q - 1))  # levels in order, the median left out
        self._init_shift(H, T, s.quantiles)
        if generator is not None:
            self.init_weights(generator)
        if s.anchor_season:
            # seasonal naive for step h reads the last season's value at position h mod s
            self.register_buffer("base_idx", torch.arange(s.horizon) % s.anchor_season, persistent=False)
        if s.anchor == "seasonal_median":  # row k: the positions seasonal naive k reads in its last season
            idx = torch.stack([torch.arange(s.horizon) % m for m in s.anchor_seasons])
            self.register_buffer("median_idx", idx, persistent=False)
        if s.anchored:
            for layer in (self.head, getattr(self, "dec_out", None), getattr(self, "linear", None)):
                if layer is not None:
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)
        elif s.decoder:
            nn.init.zeros_(self.dec_out.weight)
            nn.init.zeros_(self.dec_out.bias)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """PyTorch's default initialisation of the cells and the head, in its order, drawn from `generator`."""
        bound = 1.0 / math.sqrt(self.spec.hidden_size)
        for w in self.rnn.parameters():
            nn.init.uniform_(w, -bound, bound, generator=generator)
        nn.init.kaiming_uniform_(self.head.weight, a=math.sqrt(5), generator=generator)
        fan_in = self.head.weight.shape[1]
        nn.init.uniform_(self.head.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)
        if self.spec.decoder:
            for w in self.dec.parameters():
                nn.init.uniform_(w, -bound, bound, generator=generator)

    @torch.no_grad()
    def init_quantile_offsets(self, gaps: torch.Tensor) -> None:
        """Start the level offsets at `gaps` (H, T, Q-1) in scaled units (the spread of the anchor's residuals on
        training windows, modeling/train.py): an untrained model then forecasts the anchor with a plausible band."""
        g = gaps.clamp(min=1e-3).to(self.q_bias)
        self.q_bias.copy_(torch.where(g > 20, g, torch.log(torch.expm1(g))))  # softplus^-1

    def _layerwise(self, rnn: nn.RNNBase, seq: torch.Tensor, p: float, state=None):
        """A stacked cell one layer at a time, with dropout `p` between layers drawn from `dropout_generator`
        (nn.RNN's built-in dropout draws from the global RNG). Same weights, same parameter names: the exported
        graph and the checkpoints do not change. Returns (output, final state) like the module."""
        fn, lstm = CELLS[self.spec.cell].layer_fn, self.spec.cell == "lstm"
        out, hs, cs = seq, [], []
        for layer in range(rnn.num_layers):
            if layer and p > 0:
                keep = torch.empty_like(out).bernoulli_(1 - p, generator=self.dropout_generator)
                out = out * keep / (1 - p)
            weights = [getattr(rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if state is None:
                h0 = out.new_zeros(1, out.shape[0], rnn.hidden_size)
                s0 = (h0, h0) if lstm else h0
            else:
                s0 = (state[0][layer : layer + 1], state[1][layer : layer + 1]) if lstm else state[layer : layer + 1]
            res = fn(out, s0, weights, True, 1, 0.0, self.training, False, True)
            out = res[0]
            hs.append(res[1])
            if lstm:
                cs.append(res[2])
        final = (torch.cat(hs), torch.cat(cs)) if lstm else torch.cat(hs)
        return out, final

    def _run(self, rnn: nn.Module, seq: torch.Tensor, state=None):
        if self.training and isinstance(rnn, nn.RNNBase) and rnn.dropout > 0 and rnn.num_layers > 1:
            return self._layerwise(rnn, seq, rnn.dropout, state)
        return rnn(seq) if state is None else rnn(seq, state)

    def anchor(self, zt: torch.Tensor, fz: torch.Tensor | None) -> torch.Tensor | None:
        """The anchor forecast in scaled units (B, H, T); None for an unanchored model."""
        s = self.spec
        B = zt.shape[0]
        if s.anchor == "linear":
            last = zt[:, -1:, :]
            src = [(zt[:, -s.lookback :, :] - last).reshape(B, -1)]
            if s.n_future:
                if fz is None:
                    raise ValueError(f"this model reads {s.n_future} known-future inputs per step: pass `fz`")
                src.append(fz.reshape(B, -1))
            # fp32 under a GPU's bf16 autocast too: the anchor was fitted in float64 and is the forecast's bulk
            with torch.autocast(zt.device.type, enabled=False):
                return self.linear(torch.cat(src, 1).float()).view(B, s.horizon, s.n_targets) + last
        if s.anchor == "seasonal_median":
            naives = torch.stack(
                [zt[:, -m:, :].index_select(1, self.median_idx[k]) for k, m in enumerate(s.anchor_seasons)]
            )
            ranked = torch.sort(naives, dim=0).values  # (K, B, H, T); K is fixed: exports as TopK
            k = len(s.anchor_seasons)
            return ranked[k // 2] if k % 2 else (ranked[k // 2 - 1] + ranked[k // 2]) / 2
        if s.anchor_season:
            return zt[:, -s.anchor_season :, :].index_select(1, self.base_idx)
        return None

    def raw(self, x: torch.Tensor, future: torch.Tensor | None = None):
        s = self.spec
        B = x.shape[0]
        z = (x - self.mean) / self.std
        zt = z.index_select(2, self.target_idx)
        fz: torch.Tensor | None = None
        if s.n_future:
            if future is None:
                raise ValueError(f"this model reads {s.n_future} known-future inputs per step: pass `future`")
            fz = (future - self.fmean) / self.fstd
        base = self.anchor(zt, fz)
        k = s.steps
        seq = z[:, -k:, :]
        if s.anchor_season is not None and s.seasonal_diffs:
            season = s.anchor_season
            seq = torch.cat([seq, zt[:, -k:, :] - zt[:, -k - season : -season, :]], dim=2)
        out, state = self._run(self.rnn, seq)
        hin = [out[:, -1, :]]
        if fz is not None:  # set when s.n_future
            hin.append(fz.reshape(B, -1).to(out.dtype))
        if base is not None:
            hin.append(base.reshape(B, -1).to(out.dtype))
        qn = max(self.n_q, 1)
        delta = self.head(torch.cat(hin, 1)).view(B, s.horizon, s.n_targets, qn)
        if s.decoder:
            d_in = base if base is not None else zt.new_zeros(B, s.horizon, s.n_targets)
            if fz is not None:  # set when s.n_future
                d_in = torch.cat([fz, d_in], 2)
            dout, _ = self._run(self.dec, d_in.to(out.dtype), state)
            delta = delta + self.dec_out(dout).view(B, s.horizon, s.n_targets, qn)
        delta = delta.float()
        mean_t = self.mean.index_select(0, self.target_idx)
        std_t = self.std.index_select(0, self.target_idx)
        gate = s.residual_gate if base is not None else 1.0
        if not self.n_q:
            pt = delta[..., 0] if base is None else base + (delta[..., 0] if gate == 1.0 else gate * delta[..., 0])
            return pt * std_t + mean_t, None
        m = s.median_index
        assert m is not None  # quantiles are set (n_q), so the median is among them
        med = delta[..., m] if base is None else base + (delta[..., m] if gate == 1.0 else gate * delta[..., m])
        off = nn.functional.softplus(torch.cat([delta[..., :m], delta[..., m + 1 :]], -1) + self.q_bias)
        up = med.unsqueeze(-1) + torch.cumsum(off[..., m:], -1)  # levels above, nearest first
        down = med.unsqueeze(-1) - torch.cumsum(off[..., :m].flip(-1), -1)  # levels below, nearest first
        q = torch.cat([down.flip(-1), med.unsqueeze(-1), up], -1)
        return med * std_t + mean_t, q * std_t.unsqueeze(-1) + mean_t.unsqueeze(-1)

    def target_scale(self) -> torch.Tensor:
        return self.std.index_select(0, self.target_idx)


@dataclass
class EnsembleSpec:
    """The mean of several forecasters of one window set (the same inputs, horizon and levels)."""

    members: list[dict]
    cell: str = "ensemble"

    def _m(self, key):
        return self.members[0][key]

    lookback = property(lambda self: max(m["lookback"] for m in self.members))
    horizon = property(lambda self: self._m("horizon"))
    n_vars = property(lambda self: self._m("n_vars"))
    target_idx = property(lambda self: self._m("target_idx"))
    n_targets = property(lambda self: len(self._m("target_idx")))
    n_future = property(lambda self: self._m("n_future"))
    quantiles = property(lambda self: self._m("quantiles"))
    anchor_season = property(lambda self: self._m("anchor_season"))
    anchor_seasons = property(lambda self: self.members[0].get("anchor_seasons", []))
    anchor = property(lambda self: self._m("anchor"))
    decoder = property(lambda self: self._m("decoder"))
    steps = property(lambda self: max(ModelSpec(**m).steps for m in self.members))
    median_index = property(lambda self: self.quantiles.index(0.5) if self.quantiles else None)
    cells = property(lambda self: [m["cell"] for m in self.members])

    def to_dict(self) -> dict:
        first = self.members[0]
        return {
            "cell": self.cell,
            "members": self.members,
            "lookback": self.lookback,
            "horizon": self.horizon,
            "n_vars": self.n_vars,
            "target_idx": self.target_idx,
            "n_future": self.n_future,
            "quantiles": self.quantiles,
            "anchor": self.anchor,
            "anchor_season": self.anchor_season,
            "anchor_seasons": self.anchor_seasons,
            "decoder": self.decoder,
            "mean": first["mean"],
            "std": first["std"],
        }


class Ensemble(QuantileOutput):
    """The mean of its members' point forecasts and of their (uncalibrated) quantiles, with a conformal shift of its
    own: one graph, one more candidate. The mean of non-crossing quantiles does not cross."""

    def __init__(self, members: list[Forecaster]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        first = members[0].spec
        for m in members[1:]:
            same = (m.spec.horizon, m.spec.n_vars, m.spec.target_idx, m.spec.n_future, m.spec.quantiles)
            if same != (first.horizon, first.n_vars, first.target_idx, first.n_future, first.quantiles):
                raise ValueError("ensemble members must read the same inputs and forecast the same horizon and levels")
        self.members = nn.ModuleList(members)
        self.spec = EnsembleSpec([m.spec.to_dict() for m in members])
        self._init_shift(first.horizon, first.n_targets, first.quantiles)

    def forecasters(self) -> list[Forecaster]:
        """The members (nn.ModuleList holds them as plain modules; they are Forecasters by construction)."""
        return [cast(Forecaster, m) for m in self.members]

    def raw(self, x: torch.Tensor, future: torch.Tensor | None = None):
        outs = [m.raw(x, future) for m in self.forecasters()]
        y = torch.stack([o[0] for o in outs]).mean(0)
        if outs[0][1] is None:
            return y, None
        return y, torch.stack([o[1] for o in outs]).mean(0)

    def target_scale(self) -> torch.Tensor:
        return self.forecasters()[0].target_scale()


def build(spec: ModelSpec, generator: torch.Generator | None = None) -> Forecaster:
    return Forecaster(spec, generator)


def save(model: Forecaster, path) -> None:
    torch.save({"spec": model.spec.to_dict(), "state_dict": model.state_dict()}, path)


def load(path, map_location="cpu") -> Forecaster:
    blob = torch.load(path, map_location=map_location, weights_only=True)
    model = Forecaster(ModelSpec(**blob["spec"]))
    state = blob["state_dict"]
    state.setdefault("q_scale", model.q_scale)  # saved before the level-relative shift existed: none
    model.load_state_dict(state)
    return model
