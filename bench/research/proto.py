"""Prototype of a stronger recurrent forecaster for issue 12: anchors, known-future inputs, ensembles.

Lift-able parts (plain torch, exports with the TorchScript exporter, opset 17):

- `ProtoForecaster`: raw observations (B, L, V) [+ known-future inputs (B, H, F)] -> (B, H, T) in the data's
  units. Scaling inside. Output = anchor + residual; the residual head is zero-initialised, so an untrained
  model *is* its anchor (the pipeline's residual design).
- anchors (all fixed index gathers / a linear layer: they export):
  `snaive`   seasonal naive with season m (today's anchor);
  `profile`  the mean of the last K seasons at the same phase, shifted by the recent level difference;
  `linear`   a linear map from the lookback (targets, optionally all variables) and the known-future block
             to the horizon, fitted in closed form (ridge, on the training windows) and then frozen or
             trained on with the rest (NLinear/DLinear-style: it reads the lookback relative to its last value).
- the cell reads the last `rnn_steps` steps of the scaled inputs + seasonal differences; the head reads the
  cell's last state, the anchor forecast and the known-future block (concatenated: the horizon is short).
- `Ensemble`: the mean of several ProtoForecasters (e.g. one per cell), one graph.

Data: `Series` holds the values, the known-future feature rows, and origins per split. A window with origin o
reads inputs [o-L, o) and forecasts [o, o+H); future inputs are rows [o, o+H) of the feature table.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


# --- data ---------------------------------------------------------------------------------------------


def calendar_features(
    ts: np.ndarray,
    freq: str,
    country: str | None = None,
    subdiv: str | None = None,
    parts: tuple[str, ...] = ("tod", "dow", "doy", "holiday"),
) -> tuple[np.ndarray, list[str]]:
    """Cyclical calendar encodings known for any future timestamp, and public holidays (the `holidays`
    package ships its data: no network). Sub-daily series get time of day; every series day of week and
    day of year; the holiday flag is 1 on a public holiday of `country`/`subdiv`."""
    t = pd.DatetimeIndex(ts)
    cols, names = [], []
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq)) if freq[0].isdigit() or freq in ("h", "min") else None
    if "tod" in parts and step is not None and step < pd.Timedelta("1D"):
        frac = (t.hour * 3600 + t.minute * 60 + t.second) / 86400.0
        cols += [np.sin(2 * np.pi * frac), np.cos(2 * np.pi * frac)]
        names += ["tod_sin", "tod_cos"]
    if "dow" in parts:
        w = (t.dayofweek + (t.hour * 60 + t.minute) / 1440.0) / 7.0
        cols += [np.sin(2 * np.pi * w), np.cos(2 * np.pi * w)]
        names += ["dow_sin", "dow_cos"]
    if "dow_onehot" in parts:
        for k in range(7):
            cols.append((t.dayofweek == k).astype(float))
            names.append(f"dow{k}")
    if "doy" in parts:
        y = (t.dayofyear - 1) / 365.25
        cols += [np.sin(2 * np.pi * y), np.cos(2 * np.pi * y)]
        names += ["doy_sin", "doy_cos"]
    if "holiday" in parts and country:
        import holidays

        years = sorted(set(t.year))
        hol = holidays.country_holidays(country, subdiv=subdiv, years=years)
        days = pd.DatetimeIndex(t.normalize())
        cols.append(np.array([d.date() in hol for d in days], dtype=float))
        names.append("holiday")
    return np.stack(cols, axis=1).astype(np.float32), names


@dataclass
class Series:
    """A series with its split bounds and the known-future feature table (rows aligned with values)."""

    name: str
    values: np.ndarray  # (rows, V) float32, NaN rows = breaks
    target_idx: list[int]
    lookback: int
    horizon: int
    val_start: int
    test_start: int
    future: np.ndarray | None = None  # (rows, F) float32, already scaled (calendar in [-1, 1])
    future_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        bad = np.isnan(self.values).any(axis=1).astype(np.int64)
        self._bad = np.concatenate([[0], np.cumsum(bad)])

    def origins(self, split: str) -> np.ndarray:
        L, H, n = self.lookback, self.horizon, len(self.values)
        o = np.arange(L, n - H + 1)
        if split == "train":
            o = o[o + H <= self.val_start]
        elif split == "val":
            o = o[(o >= self.val_start) & (o + H <= self.test_start)]
        else:
            o = o[o >= self.test_start]
        ok = (self._bad[o + H] - self._bad[o - L]) == 0
        return o[ok]

    def batch(self, origins: np.ndarray):
        L, H = self.lookback, self.horizon
        x = self.values[origins[:, None] + np.arange(-L, 0)[None, :]]
        y = self.values[origins[:, None] + np.arange(H)[None, :]][:, :, self.target_idx]
        f = self.future[origins[:, None] + np.arange(H)[None, :]] if self.future is not None else None
        return x, y, f

    @property
    def n_future(self) -> int:
        return 0 if self.future is None else self.future.shape[1]

    def train_stats(self):
        tr = self.values[: self.val_start]
        mean, std = np.nanmean(tr, axis=0), np.nanstd(tr, axis=0)
        return mean, np.where(~np.isfinite(std) | (std < 1e-8), 1.0, std)


# --- model --------------------------------------------------------------------------------------------


@dataclass
class ProtoSpec:
    cell: str
    n_vars: int
    target_idx: list[int]
    lookback: int
    horizon: int
    hidden_size: int = 64
    num_layers: int = 1
    rnn_steps: int = 48
    diff_season: int | None = None  # seasonal differences fed to the cell (today: the anchor season)
    anchor: str = "snaive"  # none | snaive | profile | linear
    anchor_season: int = 1
    profile_k: int = 3  # profile: seasons averaged
    level_steps: int = 0  # profile: steps of recent level matched (0: no level shift)
    linear_all_vars: bool = False  # linear: read every variable's lookback, not only the targets
    linear_future: bool = True  # linear: also read the known-future block
    linear_trainable: bool = False
    n_future: int = 0  # known-future inputs per horizon step
    head_future: bool = True  # the residual head reads the known-future block
    head_anchor: bool = True  # ... and the anchor forecast
    cell_future_past: bool = False  # the cell also reads the known features of the lookback steps
    quantiles: list[float] = field(default_factory=list)  # non-empty: the head forecasts these (pinball loss)
    decoder: bool = False  # a second cell runs over the horizon steps reading (future_h, anchor_h)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @property
    def n_targets(self) -> int:
        return len(self.target_idx)


class ProtoForecaster(nn.Module):
    def __init__(self, spec: ProtoSpec):
        super().__init__()
        self.spec = s = spec
        T, H, L = s.n_targets, s.horizon, s.lookback
        self.register_buffer("mean", torch.tensor(s.mean or [0.0] * s.n_vars, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(s.std or [1.0] * s.n_vars, dtype=torch.float32))
        self.register_buffer("target_idx", torch.tensor(s.target_idx, dtype=torch.long), persistent=False)
        self.k = min(s.rnn_steps, L - (s.diff_season or 0))
        n_in = s.n_vars + (T if s.diff_season else 0) + (s.n_future if s.cell_future_past else 0)
        self.rnn = CELLS[s.cell](n_in, s.hidden_size, s.num_layers, batch_first=True)
        n_head = (
            s.hidden_size + (H * s.n_future if s.head_future and s.n_future else 0) + (H * T if s.head_anchor else 0)
        )
        self.n_q = len(s.quantiles)
        self.head = nn.Linear(n_head, H * T * max(self.n_q, 1))
        if s.decoder:
            # seq2seq: the encoder's final state starts a decoder cell over the horizon; per step it reads the
            # known-future inputs and the anchor there, and a shared zero-initialised layer maps its output to
            # the residual of that step (nonlinear in the future inputs, unlike the flat head)
            self.dec = CELLS[s.cell](s.n_future + T, s.hidden_size, s.num_layers, batch_first=True)
            self.dec_out = nn.Linear(s.hidden_size, T * max(self.n_q, 1))
            nn.init.zeros_(self.dec_out.weight)
            nn.init.zeros_(self.dec_out.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        h = torch.arange(H)
        if s.anchor in ("snaive", "profile"):
            m = s.anchor_season
            K = s.profile_k if s.anchor == "profile" else 1
            # step h reads row L + h - m*(h//m + k): the same phase k whole seasons before the origin
            idx = torch.stack([L + h - m * (h // m + k) for k in range(1, K + 1)])  # (K, H)
            if int(idx.min()) < 0:
                raise ValueError(f"anchor: {K} seasons of {m} do not fit the lookback {L}")
            self.register_buffer("anchor_idx", idx.reshape(-1), persistent=False)
            self.K = K
            if s.anchor == "profile" and s.level_steps:
                d = s.level_steps
                lvl = torch.stack([torch.arange(L - d, L) - m * k for k in range(1, K + 1)])  # (K, d)
                if int(lvl.min()) < 0:
                    raise ValueError("anchor: the level window does not fit the lookback")
                self.register_buffer("level_idx", lvl.reshape(-1), persistent=False)
        if s.anchor == "linear":
            n_lin = L * (s.n_vars if s.linear_all_vars else T) + (H * s.n_future if s.linear_future else 0)
            self.linear = nn.Linear(n_lin, H * T)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
            self.linear.requires_grad_(s.linear_trainable)

    # the anchor in scaled units, (B, H, T)
    def anchor(self, z: torch.Tensor, zt: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
        s = self.spec
        B = z.shape[0]
        if s.anchor in ("snaive", "profile"):
            g = zt.index_select(1, self.anchor_idx).reshape(B, self.K, s.horizon, s.n_targets).mean(1)
            if s.anchor == "profile" and s.level_steps:
                recent = zt[:, -s.level_steps :, :].mean(1, keepdim=True)
                past = zt.index_select(1, self.level_idx).mean(1, keepdim=True)
                g = g + (recent - past)
            return g
        if s.anchor == "linear":
            last = zt[:, -1:, :]
            # relative to each variable's last value (NLinear): the map reads shape, the level stays put
            src = (z - z[:, -1:, :]) if s.linear_all_vars else (zt - last)
            parts = [src.reshape(B, -1)]
            if s.linear_future and s.n_future:
                parts.append(f.reshape(B, -1))
            out = self.linear(torch.cat(parts, 1)).view(B, s.horizon, s.n_targets)
            return out + last
        return torch.zeros(B, s.horizon, s.n_targets, dtype=z.dtype, device=z.device)

    def forward(
        self, x: torch.Tensor, f: torch.Tensor | None = None, anchor_override: torch.Tensor | None = None
    ) -> torch.Tensor:
        s = self.spec
        z = (x - self.mean) / self.std
        zt = z.index_select(2, self.target_idx)
        B = z.shape[0]
        # training only: a cross-fitted (out-of-fold) anchor for the training windows, in scaled units
        base = self.anchor(z, zt, f) if anchor_override is None else anchor_override
        k = self.k
        parts = [z[:, -k:, :]]
        if s.diff_season:
            m = s.diff_season
            parts.append(zt[:, -k:, :] - zt[:, -k - m : -m, :])
        seq = torch.cat(parts, 2)
        out, state = self.rnn(seq)
        hin = [out[:, -1, :]]
        if s.head_future and s.n_future:
            hin.append(f.reshape(B, -1))
        if s.head_anchor:
            hin.append(base.reshape(B, -1))
        mean_t = self.mean.index_select(0, self.target_idx)
        std_t = self.std.index_select(0, self.target_idx)
        extra = None
        if s.decoder:
            dec_in = torch.cat([f, base], 2) if s.n_future else base
            dout, _ = self.dec(dec_in, state)
            extra = self.dec_out(dout)  # (B, H, T*Q)
        if self.n_q:  # (B, H, T, Q): every quantile is the anchor plus its own residual
            delta = self.head(torch.cat(hin, 1)).view(B, s.horizon, s.n_targets, self.n_q)
            if extra is not None:
                delta = delta + extra.view(B, s.horizon, s.n_targets, self.n_q)
            return (base.unsqueeze(-1) + delta) * std_t.unsqueeze(-1) + mean_t.unsqueeze(-1)
        delta = self.head(torch.cat(hin, 1)).view(B, s.horizon, s.n_targets)
        if extra is not None:
            delta = delta + extra.view(B, s.horizon, s.n_targets)
        return (base + delta) * std_t + mean_t


class Ensemble(nn.Module):
    """The mean forecast of several members: still one recurrent forecaster graph."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.spec = members[0].spec

    def forward(self, x, f=None):
        return torch.stack([m(x, f) for m in self.members]).mean(0)


# --- the closed-form linear anchor ----------------------------------------------------------------------


def fit_linear_anchor(
    model: ProtoForecaster,
    ser: Series,
    lambdas=(0.1, 1.0, 10.0, 100.0, 1000.0),
    max_windows: int = 20000,
    seed: int = 0,
    crossfit: int = 0,
) -> dict:
    """Ridge from the anchor's inputs to the horizon (scaled units, relative to the last value), on the
    training windows; the penalty is chosen on the validation windows by MAE. Writes the linear layer."""
    s = model.spec
    rng = np.random.default_rng(seed)
    tr = ser.origins("train")
    if len(tr) > max_windows:
        tr = np.sort(rng.choice(tr, max_windows, replace=False))
    va = ser.origins("val")

    def design(orig):
        x, y, f = ser.batch(orig)
        with torch.no_grad():
            z = (torch.from_numpy(x) - model.mean) / model.std
            zt = z.index_select(2, model.target_idx)
            last = zt[:, -1:, :]
            src = (z - z[:, -1:, :]) if s.linear_all_vars else (zt - last)
            parts = [src.reshape(len(orig), -1)]
            if s.linear_future and s.n_future:
                parts.append(torch.from_numpy(f).reshape(len(orig), -1))
            X = torch.cat(parts, 1).double().numpy()
            yt = (torch.from_numpy(y) - model.mean[model.target_idx]) / model.std[model.target_idx] - last
        return X, yt.reshape(len(orig), -1).double().numpy(), last.double().numpy()

    X, Y, _ = design(tr)
    Xv, Yv, _ = design(va)
    mu_x, mu_y = X.mean(0), Y.mean(0)
    Xc, Yc = X - mu_x, Y - mu_y
    G = Xc.T @ Xc
    R = Xc.T @ Yc
    best = None
    for lam in lambdas:
        W = np.linalg.solve(G + lam * len(X) * 1e-3 * np.eye(G.shape[0]), R)
        b = mu_y - mu_x @ W
        err = np.abs(Xv @ W + b - Yv).mean()
        if best is None or err < best[0]:
            best = (err, lam, W, b)
    err, lam, W, b = best
    if crossfit:  # out-of-fold anchors for the training windows: K contiguous blocks, each fitted without itself
        oof = np.empty_like(Y)
        for idx in np.array_split(np.arange(len(X)), crossfit):
            keep = np.ones(len(X), bool)
            keep[idx] = False
            mx, my = X[keep].mean(0), Y[keep].mean(0)
            Xk, Yk = X[keep] - mx, Y[keep] - my
            Wk = np.linalg.solve(Xk.T @ Xk + lam * keep.sum() * 1e-3 * np.eye(X.shape[1]), Xk.T @ Yk)
            oof[idx] = X[idx] @ Wk + (my - mx @ Wk)
        _, _, last_tr = design(tr)
        model.oof = {
            int(o): (oof[i].reshape(s.horizon, s.n_targets) + last_tr[i, 0]).astype(np.float32)
            for i, o in enumerate(tr)
        }
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(W.T).float())
        model.linear.bias.copy_(torch.from_numpy(b).float())
    return {"ridge_lambda": lam, "ridge_val_mae_scaled": float(err), "ridge_windows": int(len(X))}


# --- training -------------------------------------------------------------------------------------------


@dataclass
class TrainCfg:
    epochs: int = 10
    batch_size: int = 256
    max_train_windows: int = 8000
    lr: float = 3e-3
    clip: float = 1.0
    patience: int = 4
    lr_factor: float = 0.5
    lr_patience: int = 2
    seed: int = 42
    loss: str = "mae"  # mae | pinball
    quantiles: tuple[float, ...] = ()


def _tensors(ser: Series, orig: np.ndarray):
    x, y, f = ser.batch(orig)
    return (
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(np.ascontiguousarray(y)),
        None if f is None else torch.from_numpy(np.ascontiguousarray(f)),
    )


def predict(model: nn.Module, ser: Series, orig: np.ndarray, batch: int = 2048) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(orig), batch):
            x, _, f = _tensors(ser, orig[i : i + batch])
            out.append(model(x, f).numpy())
    return np.concatenate(out)


def train(model: ProtoForecaster, ser: Series, cfg: TrainCfg, log=None) -> dict:
    """Adam on the scaled MAE, plateau LR schedule, clipping, early stopping with the best weights kept;
    the same loop as pipeline/modeling/train.py (epochs x sampled windows bound the work, not a clock)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience)
    scale = model.std.index_select(0, model.target_idx)
    tr, va = ser.origins("train"), ser.origins("val")
    per_epoch = min(cfg.max_train_windows, len(tr))

    qs = torch.tensor(list(model.spec.quantiles), dtype=torch.float32)

    def loss_fn(p, y):
        if len(qs):  # pinball, scaled units; at q=0.5 it is half the MAE
            e = (y.unsqueeze(-1) - p) / scale.unsqueeze(-1)
            return torch.maximum(qs * e, (qs - 1) * e).mean()
        return ((p - y) / scale).abs().mean()

    def val_loss():
        p = torch.from_numpy(predict(model, ser, va))
        _, y, _ = _tensors(ser, va)
        return float(loss_fn(p, y))

    best = initial = val_loss()
    best_state, best_epoch, bad = copy.deepcopy(model.state_dict()), 0, 0
    hist = []
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = tr[torch.randperm(len(tr), generator=gen)[:per_epoch].numpy()]
        tot = 0.0
        nb = math.ceil(per_epoch / cfg.batch_size)
        for i in range(nb):
            ob = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x, y, f = _tensors(ser, ob)
            oof = getattr(model, "oof", None)
            if oof is not None:
                loss = loss_fn(model(x, f, torch.from_numpy(np.stack([oof[int(o)] for o in ob]))), y)
            else:
                loss = loss_fn(model(x, f), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            tot += float(loss.detach())
        v = val_loss()
        sched.step(v)
        hist.append({"epoch": epoch, "train": tot / nb, "val": v})
        if log:
            log(f"  epoch {epoch}: train {tot / nb:.4f} val {v:.4f} ({time.perf_counter() - t0:.0f}s)")
        if v < best - 1e-6:
            best, best_epoch, bad, best_state = v, epoch, 0, copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return {
        "initial_val": initial,
        "best_val": best,
        "best_epoch": best_epoch,
        "epochs_run": len(hist),
        "train_s": round(time.perf_counter() - t0, 1),
        "history": hist,
    }


def spec_dict(spec: ProtoSpec) -> dict:
    d = asdict(spec)
    d.pop("mean"), d.pop("std")
    return d
