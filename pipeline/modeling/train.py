"""The training loop: one candidate (cell x size) on one window set.

The series lives on the training device and batches are gathered there from `unfold` views, so a GPU
never waits on a DataLoader. On CUDA: bf16 autocast and a fused Adam. Everywhere: gradient clipping,
a plateau learning-rate schedule, early stopping on validation loss with the best weights restored,
a checkpoint after every epoch (an interrupted run resumes where it stopped), and seeds that make a
CPU run repeatable. Loss is the MAE in scaled units, the quantity MASE ranks candidates by; with quantile
levels (evaluate.quantiles), twice the pinball loss averaged over the levels (the MAE of the median when it
is the only level). After the loop the quantiles are conformalised on the validation windows (`calibrate`).
`build_ensemble` makes the mean of the trained candidates one more candidate (train.ensemble).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..config import Settings, TrainConfig
from ..data import panel_windows as _panel_windows
from ..data import seasonal as _seasonal
from ..data import splits as _splits
from ..data import windowset as _windowset
from ..data.panel_windows import PanelWindowSet
from ..data.windowset import WindowSet
from ..errors import ConfigError, TrainingError
from . import anchor as _anchor
from . import model as _model
from . import quantiles as _quantiles
from .anchor import AnchorChoice, choose_anchor
from .device import exact_fp32
from .evaluate import (
    evaluate_baselines,
    evaluation_seasons,
    forecast_windows,
    mase_scale,
    metrics,
    season_of,
    seasonal_naive,
    usable_seasons,
)
from .model import Ensemble, Forecaster, ModelSpec, QuantileOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    cell: str
    hidden_size: int
    num_layers: int
    untrained: bool = False  # the anchor alone (anchor_alone): a model of this cell whose residual stays at zero

    @property
    def name(self) -> str:
        if self.cell == "ensemble":
            return "ensemble"
        if self.untrained:
            return "anchor"
        return f"{self.cell}-h{self.hidden_size}-l{self.num_layers}"


def candidates(settings: Settings) -> list[Candidate]:
    return [Candidate(**c) for c in settings.train.grid()]


@dataclass
class TrainResult:
    candidate: Candidate
    model: QuantileOutput  # a Forecaster (or the Ensemble of several) on the CPU, best weights
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    initial_val_loss: float = math.inf  # before any step: the anchor baseline when residual
    stopped: str = ""
    seconds: float = 0.0
    windows_per_s: float = 0.0
    device: str = "cpu"
    resumed_from: int | None = None
    anchor: dict = field(default_factory=dict)  # AnchorChoice.summary(): what the residual is over
    calibration: dict = field(default_factory=dict)  # the conformal shift's windows and size (calibrate)


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' was asked for but no CUDA device is available")
        return torch.device("cuda")
    if preference == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_threads(settings: Settings, device: torch.device | str, at_once: int | None = None) -> int | None:
    """Intra-op threads per candidate on the CPU: `train.threads`, or with 'auto' the cores shared out
    among the `at_once` candidates trained together (default `train.parallel`; None: torch's default). CPU
    training is bitwise repeatable for a given thread count; BLAS splits some products by it, so compare runs
    at the same count."""
    t = settings.train
    if torch.device(device).type != "cpu":
        return None
    if t.threads != "auto":
        return int(t.threads)
    n = t.parallel_count() if at_once is None else at_once
    return max(1, (os.cpu_count() or 1) // n) if n > 1 else None


def set_threads(n: int | None) -> None:
    """torch's intra-op thread count of this process (a training worker's share of the cores; None: torch's
    default)."""
    if n is not None:
        torch.set_num_threads(n)


@contextmanager
def torch_threads(n: int | None):
    """torch's intra-op thread count set to `n` for the block, then put back (it is process-wide)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def use_decoder(setting: bool | str, meta) -> bool:
    """train.decoder for a window set: auto runs the decoder cell when there is something for it to read over the
    horizon (a known-future block) and more than one step to run over; true / false as set."""
    if setting == "auto":
        return meta.n_future > 0 and meta.horizon > 1
    return bool(setting)


def model_spec(ws: WindowSet, cand: Candidate, settings: Settings, anchor: AnchorChoice | int | None) -> ModelSpec:
    m = ws.meta
    t = settings.train
    if not isinstance(anchor, AnchorChoice):  # a season alone: the seasonal-naive anchor
        anchor = AnchorChoice("seasonal_naive" if anchor else "none", anchor)
    fmean, fstd = ws.future_scaler()
    return ModelSpec(
        cell=cand.cell,
        n_vars=len(m.variables),
        target_idx=m.target_idx,
        lookback=m.lookback,
        horizon=m.horizon,
        hidden_size=cand.hidden_size,
        num_layers=cand.num_layers,
        dropout=t.dropout,
        rnn_steps=t.rnn_steps,
        anchor_season=anchor.season if t.residual else None,
        mean=m.mean,
        std=m.std,
        anchor=_spec_anchor(anchor),
        anchor_seasons=list(anchor.seasons) if anchor.kind == "seasonal_median" else [],
        n_future=m.n_future,
        future_mean=fmean,
        future_std=fstd,
        decoder=use_decoder(t.decoder, m),
        quantiles=list(settings.evaluate.quantiles),
    )


# The source that decides which weights a run ends with: the network, this loop (loss, sampling, schedule)
# and the window batches it reads. A change in any of them must not resume an old checkpoint.
WEIGHT_SOURCES = (
    Path(_model.__file__),
    Path(__file__),
    Path(_windowset.__file__),
    Path(_panel_windows.__file__),
    Path(_anchor.__file__),
    Path(_seasonal.__file__),
    Path(_quantiles.__file__),
)
# train settings that bound or place the work without changing the weights it produces (a checkpoint stays
# valid when they change: a run cut short by the time budget continues under a larger one)
NOT_WEIGHTS = {"time_budget_s", "parallel", "threads", "task_runner", "dask_address", "device", "strategy"}


def code_hash(paths=WEIGHT_SOURCES) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """cellcast's version + a hash of the source that shapes the weights, e.g. '0.1.0+3f2a9c1d4e5b'."""
    return f"{__version__}+{code_hash()}"


def _fingerprint(
    spec: ModelSpec,
    settings: Settings,
    data_md5: str | None,
    device: torch.device,
    anchor: AnchorChoice | None = None,
    future_names: list[str] | None = None,
) -> str:
    """What a checkpoint must match to be resumed: model, weight-shaping settings (the calendar, the levels and
    their calibration included), the anchor's weights, data, code, torch, device."""
    train = {k: v for k, v in settings.train.model_dump(mode="json").items() if k not in NOT_WEIGHTS}
    ev = settings.evaluate
    body = {
        "spec": spec.to_dict(),
        "train": train,
        "data": data_md5,
        "code": code_version(),
        "torch": torch.__version__,
        "device": device.type,
        "calendar": settings.calendar.model_dump(mode="json"),
        "future": future_names or [],
        "anchor": anchor.fingerprint() if anchor else None,
        "quantiles": list(ev.quantiles),
        "calibration_windows": ev.calibration_windows,
        "calibration": ev.calibration,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of `err` over the observed targets (mask 1); filled ones (mask 0) count for nothing."""
    return err.mean() if mask is None else (err * mask).sum() / mask.sum().clamp(min=1)


def window_errors(
    model: QuantileOutput,
    x: torch.Tensor,
    f: torch.Tensor | None,
    y: torch.Tensor,
    scale: torch.Tensor,
    levels: torch.Tensor | None,
) -> torch.Tensor:
    """(B, H, T) loss of each forecast target in scaled units: the absolute error, or with quantile levels twice the
    pinball loss averaged over them (the absolute error of the median when it is the only level)."""
    if levels is None:
        return ((model(x, f).float() - y) / scale).abs()
    _, q = model.forward_all(x, f)
    e = (y.unsqueeze(-1) - q.float()) / scale.unsqueeze(-1)
    return (2 * torch.maximum(levels * e, (levels - 1) * e)).mean(-1)


def _val_loss(
    model: QuantileOutput,
    tw,
    starts: torch.Tensor,
    scale: torch.Tensor,
    amp: bool,
    batch: int,
    levels: torch.Tensor | None = None,
) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), torch.autocast(tw.device.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(0, len(starts), batch):
            idx = starts[i : i + batch]
            x, y = tw.batch(idx)
            err = window_errors(model, x, tw.future(idx), y, scale, levels)
            mask = tw.target_mask(idx)
            total += float(err.sum() if mask is None else (err * mask).sum())
            n += err.numel() if mask is None else int(mask.sum())
    model.train()
    return total / max(n, 1)


@torch.no_grad()
def _start_quantile_offsets(model: Forecaster, ws: WindowSet, max_windows: int = 4096) -> None:
    """Start the level offsets at the spread of the untrained model's (the anchor's) residuals on training windows,
    per step and target: the band an untrained model forecasts is then the anchor's own empirical one."""
    spec = model.spec
    levels, m = spec.quantiles, spec.median_index
    assert m is not None  # called for a model with quantiles, whose levels hold the median (ModelSpec)
    starts = ws.starts["train"]
    starts = starts[:: max(1, len(starts) // max_windows)][:max_windows]
    was = model.training
    model.eval()
    x, f = ws.inputs(starts)
    med = (
        model(
            torch.from_numpy(x).to(model.mean.device), None if f is None else torch.from_numpy(f).to(model.mean.device)
        )
        .float()
        .cpu()
        .numpy()
    )
    model.train(was)
    y = ws.targets(starts)
    r = (y - med) / model.target_scale().cpu().numpy()
    mask = ws.target_mask(starts)
    if mask is not None:
        r = np.where(mask, r, np.nan)
    v = np.nanquantile(r.astype(np.float64), levels, axis=0)  # (Q, H, T)
    v = np.nan_to_num(v - v[m], nan=0.0)
    gaps = [v[k] - v[k + 1] if k < m else v[k] - v[k - 1] for k in range(len(levels)) if k != m]
    gaps = np.abs(np.stack(gaps, axis=-1))  # (H, T, Q-1), level order
    model.init_quantile_offsets(torch.from_numpy(gaps.astype(np.float32)))


def panel_sampler(ws: WindowSet, train_starts: torch.Tensor, device) -> Callable | None:
    """A panel's draw of training windows, `draw(n, generator) -> n starts`, in O(n) memory (no permutation of every
    window of every series): uniform over windows, or with window.panel_weighting: per_series a series uniformly then
    one of its windows (each series alike). With replacement: an epoch is `max_train_windows` draws. None for one
    series (its epoch is a permutation, as always)."""
    if not isinstance(ws, PanelWindowSet):
        return None
    st = ws.starts["train"]  # sorted: series after series, each in time order
    first = np.searchsorted(st, ws.offsets)
    counts = np.diff(np.append(first, len(st)))
    keep = counts > 0
    first_t = torch.from_numpy(first[keep].astype(np.int64)).to(device)
    counts_t = torch.from_numpy(counts[keep].astype(np.int64)).to(device)
    per_series = ws.meta.panel.get("weighting") == "per_series"

    def draw(n: int, gen: torch.Generator) -> torch.Tensor:
        if not per_series:
            return train_starts[torch.randint(len(train_starts), (n,), generator=gen, device=device)]
        s = torch.randint(len(first_t), (n,), generator=gen, device=device)
        k = (torch.rand(n, generator=gen, device=device, dtype=torch.float64) * counts_t[s]).long()
        return train_starts[first_t[s] + torch.minimum(k, counts_t[s] - 1)]

    return draw


def epoch_order(n: int, per_epoch: int, gen: torch.Generator) -> torch.Tensor:
    """`per_epoch` indices into `n` training windows: whole permutations one after another (each window as often as
    the others, at most one pass apart), the last cut short. One pass or less is one permutation, as before."""
    passes = -(-per_epoch // n)
    perms = [torch.randperm(n, generator=gen, device=gen.device) for _ in range(passes)]
    return (perms[0] if passes == 1 else torch.cat(perms))[:per_epoch]


def calibration_starts(ws: WindowSet, settings: Settings) -> np.ndarray:
    """The held-out windows the quantiles are conformalised on: the validation windows, or the most recent N."""
    starts = ws.starts["val"]
    n = settings.evaluate.calibration_windows
    if n == "all":
        return starts
    if ws.is_panel:  # the series lie one after another: the most recent by time, across every series
        when = ws.timestamps[starts + ws.meta.lookback]
        return np.sort(starts[np.argsort(when, kind="stable")[-int(n) :]])
    return starts[-int(n) :]


def scale_evidence(ws: WindowSet, settings: Settings) -> dict:
    """evaluate.calibration_scale bar on one series: whether the seasonal-naive bar's misses over every window before
    the test split (training and validation, time order) grow with their level (quantiles.misses_grow_with_level):
    hundreds of windows where the held-out halves hold a few paths. The bar is the baselines' best on validation,
    as the promotion reads it."""
    seasons = evaluation_seasons(settings, ws)
    bar = evaluate_baselines(ws, "val", usable_seasons(ws, seasons, split="val")).best
    L, H = ws.meta.lookback, ws.meta.horizon
    starts = np.sort(np.concatenate([ws.starts["train"], ws.starts["val"]]))
    season = season_of(bar)
    starts = starts[starts + L + _seasonal.naive_offsets(H, season).min() >= 0]  # its naive reads no row before 0
    if len(starts) < 3:
        return {"level": False}
    pred = seasonal_naive(ws, starts, season)
    return _quantiles.misses_grow_with_level(ws.targets(starts), pred, starts, max(season, H), ws.target_mask(starts))


@torch.no_grad()
def calibrate(
    model: QuantileOutput, ws: WindowSet, settings: Settings, seen: tuple[np.ndarray, np.ndarray] | None = None
) -> dict:
    """Conformalise `model`'s quantiles on held-out windows (modeling/quantiles.py): sets its `q_shift`.
    Returns what it was fitted on and the mean shift per level, in units of the target's training std.
    `seen`: (starts, quantiles) the model as it is, uncalibrated, already forecast (choose_residual_gate): used
    when those are the calibration windows, instead of a second pass over them."""
    levels = list(model.quantiles)
    if not levels:
        return {}
    ev = settings.evaluate
    mode = ev.calibration
    model.q_shift.zero_()
    model.q_scale.zero_()
    if mode == "none":
        return {"method": "none: the pinball heads as trained", "windows": 0}
    starts = calibration_starts(ws, settings)
    if seen is not None and np.array_equal(seen[0], starts):
        q: np.ndarray | None = seen[1]
    else:
        _, q = forecast_windows(quantile_predictor(model), ws, starts)  # inputs gathered a batch at a time
    if q is None:  # no windows to forecast
        raise TrainingError(f"{ws.meta.name}: no held-out windows to calibrate the quantiles on")
    y = ws.targets(starts)
    mask = ws.target_mask(starts)
    # consecutive windows share horizon - 1 targets: the rank counts the paths a horizon apart (calibration_rank)
    paths = _splits.test_origins(starts, ws.meta.horizon) if ev.calibration_rank == "paths" else None

    def fit(
        yy: np.ndarray, qq: np.ndarray, mm: np.ndarray | None, part: float = 1.0, per: np.ndarray | None = None
    ) -> np.ndarray:
        return _quantiles.conformal_shift(
            yy, qq, levels, mm, mode, ev.calibration_parts, None if paths is None else paths * part, per=per
        )

    point = q[..., levels.index(0.5)]  # uncalibrated, the median is the point forecast
    evidence: dict = {}
    relative = ev.calibration_scale == "level"
    if ev.calibration_scale == "bar" and not ws.is_panel:  # a panel's windows pool series: the held-out halves decide
        evidence = scale_evidence(ws, settings)
        relative = evidence["level"]
    elif ev.calibration_scale in ("auto", "bar"):
        relative = _quantiles.relative_wins(y, q, point, levels, mask, fit)
    level = _quantiles.forecast_level(point)
    if relative and (level > 0).all():
        shift = fit(y, q, mask, per=level[..., 0])  # in units of each window's level, no copy of q / level
        model.q_scale.copy_(torch.from_numpy(shift))
        scale = np.ones((1, len(ws.meta.targets), 1))
    else:
        relative = False
        shift = fit(y, q, mask)
        model.q_shift.copy_(torch.from_numpy(shift))
        scale = model.target_scale().cpu().numpy()[None, :, None]
    L = ws.meta.lookback
    return {
        "method": f"conformalised quantiles (per step, target, level; {mode})",
        "split": "val",
        "windows": int(len(starts)),
        "paths": paths,
        "scale": "level" if relative else "absolute",
        **({"scale_evidence": {k: v for k, v in evidence.items() if k != "level"}} if evidence else {}),
        "first_target": str(pd.Timestamp(ws.timestamps[starts[0] + L])) if len(starts) else None,
        "last_target": str(pd.Timestamp(ws.timestamps[starts[-1] + L + ws.meta.horizon - 1])) if len(starts) else None,
        "mean_shift_scaled": {f"{lv:g}": float((shift / scale)[..., k].mean()) for k, lv in enumerate(levels)},
    }


def _train_epoch(
    model: QuantileOutput,
    tw,
    order: torch.Tensor,
    batch: int,
    opt: torch.optim.Optimizer,
    params: list,
    clip: float,
    scale: torch.Tensor,
    levels: torch.Tensor | None,
    amp: bool,
    label: str | None,
) -> float:
    """One pass over the windows at `order`, a batch at a time; the mean training loss. `label`: a progress bar."""
    model.train()
    n_batches = math.ceil(len(order) / batch)
    losses = torch.zeros((), device=order.device)
    bar = None
    if label:
        from tqdm import tqdm

        bar = tqdm(total=n_batches, desc=label, leave=False, unit="batch")
    for i in range(n_batches):
        idx = order[i * batch : (i + 1) * batch]
        x, y = tw.batch(idx)
        with torch.autocast(order.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = masked_mean(window_errors(model, x, tw.future(idx), y, scale, levels), tw.target_mask(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        losses += loss.detach()
        if bar is not None:
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
    if amp:
        torch.cuda.synchronize()
    if bar is not None:
        bar.close()
    return float(losses) / n_batches


@dataclass
class Checkpoint:
    """What a candidate's training needs to resume after its last finished epoch, written after each one. A checkpoint
    is used only by the code, data and settings that wrote it (`fingerprint`); `done`: the run ended as its settings
    say (early stop or the last epoch), so a rerun takes the result and trains nothing."""

    fingerprint: str
    epoch: int
    model: dict
    opt: dict
    sched: dict
    gen: torch.Tensor  # the batch sampler's generator state
    dropout_gen: torch.Tensor
    history: list[dict]
    best: float
    best_epoch: int
    bad_epochs: int
    best_state: dict
    initial: float
    done: bool
    stopped: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({f.name: getattr(self, f.name) for f in fields(self)}, tmp)
        tmp.replace(path)  # atomic: a crash mid-write leaves the previous checkpoint

    @classmethod
    def load(cls, path: Path, device: torch.device, fingerprint: str) -> Checkpoint | None:
        """The checkpoint at `path` if this code, data and settings wrote it; None otherwise (trained anew)."""
        if not path.is_file():
            return None
        blob = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(blob, dict) or blob.get("fingerprint") != fingerprint:
            return None
        try:
            return cls(**{f.name: blob[f.name] for f in fields(cls)})
        except KeyError:  # a layout without every field: not this code's
            return None


@dataclass
class _Loop:
    """What one candidate's training loop works with: the model on its device, its optimiser and schedule, the
    windows resident there and the generator that draws each epoch's training windows."""

    model: Forecaster
    params: list  # what the optimiser steps: the linear anchor stays as fitted
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.ReduceLROnPlateau
    tw: _windowset.TorchWindows
    scale: torch.Tensor
    gen: torch.Generator
    dropout_gen: torch.Generator  # the model's dropout masks
    device: torch.device
    batch: int
    train_starts: torch.Tensor
    val_starts: torch.Tensor
    per_epoch: int
    levels: torch.Tensor | None
    draw: Callable | None  # a panel's sampler across its series; None: a permutation of every window

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def val_loss(self) -> float:
        return _val_loss(
            self.model, self.tw, self.val_starts, self.scale, self.cuda, max(self.batch, 1024), self.levels
        )

    def order(self) -> torch.Tensor:
        """The training windows of one epoch, drawn from the loop's own generator."""
        if self.draw is None:
            return self.train_starts[epoch_order(len(self.train_starts), self.per_epoch, self.gen)]
        return self.draw(self.per_epoch, self.gen)  # a panel: across its series without a permutation of every window


@dataclass
class _Progress:
    """Where a candidate's training stands: the epochs run, the best validation loss and its weights, what stopped
    it, and the throughput so far."""

    history: list[dict]
    best: float
    best_epoch: int
    bad_epochs: int
    best_state: dict
    initial: float
    stopped: str = "max epochs"
    start_epoch: int = 1
    resumed: int | None = None
    seen: int = 0
    busy: float = 0.0


def train_candidate(
    ws: WindowSet,
    cand: Candidate,
    settings: Settings,
    anchor_season: int | None = None,
    *,
    anchor: AnchorChoice | None = None,
    device: torch.device | str | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train one candidate. `anchor`: what every candidate of the run is anchored on (anchor.choose_anchor, chosen
    once per run); without it, chosen here from train.anchor with `anchor_season` the seasonal naive's season."""
    t = settings.train
    if anchor is None:
        anchor = choose_anchor(ws, settings, anchor_season)
    device = torch.device(device) if device is not None else pick_device(t.device)
    exact_fp32(device)  # no TF32 on a GPU: fp32 work there matches the CPU and ONNX Runtime
    if len(ws.starts["train"]) == 0 or len(ws.starts["val"]) == 0:
        raise TrainingError(f"{ws.meta.name}: no train or validation windows to train {cand.name} on")
    model = _build_model(ws, cand, settings, anchor, device)
    loop = _prepare_loop(ws, model, settings, device)
    fp = _fingerprint(model.spec, settings, ws.meta.data_md5, device, anchor, ws.meta.future_names)
    if loop.draw is not None:  # the sampler shapes the weights too
        fp = hashlib.sha256(f"{fp}:{ws.meta.panel.get('weighting', 'uniform')}".encode()).hexdigest()[:16]
    ckpt = Path(checkpoint_dir) / f"{cand.name}.pt" if checkpoint_dir else None
    state = _start(loop, ckpt, fp, t.epochs, cand.name)
    t_start = time.perf_counter()
    for epoch in range(state.start_epoch, t.epochs + 1):
        row = _run_epoch(loop, state, epoch, t, cand.name, f"{cand.name} epoch {epoch}" if progress else None)
        if state.bad_epochs >= t.patience:
            state.stopped = f"early stop: no val improvement for {t.patience} epochs"
        elif time.perf_counter() - t_start > t.time_budget_s:
            state.stopped = f"time budget {t.time_budget_s:g}s spent"
        if ckpt:
            # done: the run ended as the settings say it should; one cut short by the clock is resumed by a rerun
            done = state.stopped.startswith("early stop") or epoch == t.epochs
            _checkpoint(loop, state, fp, epoch, done).save(ckpt)
        if on_epoch:
            on_epoch(row)
        if state.stopped != "max epochs":
            break
    model.load_state_dict(state.best_state)
    model.dropout_generator = None  # the trained model carries no training state (it is copied and exported)
    model = model.cpu().eval()
    gate, seen = choose_residual_gate(model, ws, settings)
    calibration = calibrate(model, ws, settings, seen)
    return TrainResult(
        candidate=cand,
        model=model,
        history=state.history,
        best_epoch=state.best_epoch,
        best_val_loss=state.best,
        initial_val_loss=state.initial,
        stopped=state.stopped,
        seconds=time.perf_counter() - t_start,
        windows_per_s=state.seen / state.busy if state.busy else 0.0,
        device=str(device),
        resumed_from=state.resumed,
        anchor=anchor.summary() | ({"residual_gate": gate} if gate else {}),
        calibration=calibration,
    )


def gate_starts(ws: WindowSet, settings: Settings) -> np.ndarray:
    """The validation windows the residual gate is chosen on: all, or train.max_val_windows evenly spread."""
    val = ws.starts["val"]
    return val[_windowset.spread(len(val), settings.train.max_val_windows)]


@torch.no_grad()
def choose_residual_gate(
    model: Forecaster, ws: WindowSet, settings: Settings
) -> tuple[dict, tuple[np.ndarray, np.ndarray] | None]:
    """Set `model.spec.residual_gate` to the share of its learnt point residual (train.residual_gates) whose point
    forecast has the lowest validation MASE, the larger share on a tie. Epochs are kept on the loss of every quantile
    level, so the median's residual can be worse than none (it fits the training windows' noise) while the bands
    improve: the gate lets validation shrink it toward the anchor. Returns the choice and every share's MASE ({} for
    an unanchored model or a single share), and (the windows, their quantiles) as the model now forecasts them when
    the share kept is 0 or 1 (one of the two passes here) and the model is uncalibrated, for calibrate(); else None."""
    gates = sorted(set(settings.train.residual_gates))
    if not model.spec.anchored or gates == [1.0]:
        return {}, None
    starts = gate_starts(ws, settings)
    y = ws.targets(starts)
    mask, scale = ws.target_mask(starts), mase_scale(ws)
    model.spec.residual_gate = 1.0
    full, q_full = forecast_windows(quantile_predictor(model), ws, starts)
    model.spec.residual_gate = 0.0
    anchor, q_anchor = forecast_windows(quantile_predictor(model), ws, starts)
    full, anchor = full.astype(np.float64), anchor.astype(np.float64)
    # the point is linear in the gate: anchor + g * (full - anchor)
    by = {g: metrics(y, anchor + g * (full - anchor), scale, mask)["mase"] for g in gates}
    best = min(by, key=lambda g: (by[g], -g))
    model.spec.residual_gate = float(best)
    q = {1.0: q_full, 0.0: q_anchor}.get(float(best))
    seen = (starts, q) if q is not None and not (model.q_shift.any() or model.q_scale.any()) else None
    return {"gate": float(best), "val_mase": {f"{g:g}": float(v) for g, v in by.items()}}, seen


def _build_model(
    ws: WindowSet, cand: Candidate, settings: Settings, anchor: AnchorChoice, device: torch.device
) -> Forecaster:
    """The candidate's model on `device`, its weights drawn from a generator of its own and its linear anchor fitted."""
    seed = settings.train.seed
    # every draw from a generator of this candidate's own, none from torch's global RNG: candidates
    # trained at once in threads stay exactly what they are when trained one after another
    spec = model_spec(ws, cand, settings, anchor)
    # every weight is drawn from the candidate's own generator (or fitted): the same for any order of building
    model = Forecaster(spec, generator=torch.Generator().manual_seed(seed))
    if anchor.linear is not None:
        with torch.no_grad():
            model.linear.weight.copy_(torch.from_numpy(anchor.linear.weight))
            model.linear.bias.copy_(torch.from_numpy(anchor.linear.bias))
    if spec.quantiles:
        _start_quantile_offsets(model, ws)
    return model.to(device)


def _prepare_loop(ws: WindowSet, model: Forecaster, settings: Settings, device: torch.device) -> _Loop:
    """The optimiser, the plateau schedule, the windows on `device` and the batch sampler of train.* settings."""
    t = settings.train
    model.dropout_generator = dropout_gen = torch.Generator(device=device).manual_seed(t.seed + 1)
    cuda = device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]  # the linear anchor stays as fitted
    opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, fused=cuda or None)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=t.lr_factor, patience=t.lr_patience)
    tw = ws.to_torch(device)
    scale = model.target_scale().to(device)
    gen = torch.Generator(device=device).manual_seed(t.seed)
    train_starts, val_starts = tw.starts["train"], tw.starts["val"]
    if t.max_val_windows and len(val_starts) > t.max_val_windows:  # evenly spread: every series, every season
        keep = _windowset.spread(len(val_starts), t.max_val_windows)
        val_starts = val_starts[torch.from_numpy(keep).to(val_starts.device)]
    # a short series' few windows would give one optimizer step per epoch (ten in a whole training, the cells left at
    # their anchor): an epoch draws at least train.min_epoch_batches batches, passing over its windows several times
    batch = min(t.batch_size, t.max_batch_size)
    return _Loop(
        model=model,
        params=params,
        opt=opt,
        sched=sched,
        tw=tw,
        scale=scale,
        gen=gen,
        dropout_gen=dropout_gen,
        device=device,
        batch=batch,
        train_starts=train_starts,
        val_starts=val_starts,
        per_epoch=min(t.max_train_windows, max(len(train_starts), t.min_epoch_batches * batch)),
        levels=torch.tensor(model.spec.quantiles, device=device) if model.spec.quantiles else None,
        draw=panel_sampler(ws, train_starts, device),
    )


def _start(loop: _Loop, ckpt: Path | None, fp: str, epochs: int, name: str) -> _Progress:
    """The untrained model's validation loss as the best so far, or where the checkpoint at `ckpt` stopped when
    this code, data and settings wrote it (after a finished run: nothing left to train)."""
    best_state = copy.deepcopy(loop.model.state_dict())
    initial = loop.val_loss()
    state = _Progress(history=[], best=initial, best_epoch=0, bad_epochs=0, best_state=best_state, initial=initial)
    ck = Checkpoint.load(ckpt, loop.device, fp) if ckpt else None
    if ck is None:
        return state
    loop.model.load_state_dict(ck.model)
    loop.opt.load_state_dict(ck.opt)
    loop.sched.load_state_dict(ck.sched)
    loop.gen.set_state(ck.gen.cpu())  # generator states are CPU byte tensors, also for CUDA generators
    loop.dropout_gen.set_state(ck.dropout_gen.cpu())
    state.history, state.best, state.best_epoch, state.bad_epochs = ck.history, ck.best, ck.best_epoch, ck.bad_epochs
    state.best_state, state.initial = ck.best_state, ck.initial
    state.start_epoch = state.resumed = ck.epoch + 1
    log.info("%s: resuming after epoch %d from %s", name, ck.epoch, ckpt)
    if ck.done:
        state.start_epoch, state.stopped = epochs + 1, ck.stopped
    return state


def _run_epoch(loop: _Loop, state: _Progress, epoch: int, t: TrainConfig, name: str, label: str | None) -> dict:
    """One epoch: a pass over its training windows, the validation loss, the schedule's step and the best weights
    kept. Its row of the history."""
    t0 = time.perf_counter()
    order = loop.order()
    train_loss = _train_epoch(
        loop.model,
        loop.tw,
        order,
        loop.batch,
        loop.opt,
        loop.params,
        t.clip_grad_norm,
        loop.scale,
        loop.levels,
        loop.cuda,
        label,
    )
    state.busy += time.perf_counter() - t0
    state.seen += loop.per_epoch
    if not math.isfinite(train_loss):
        raise TrainingError(
            f"{name}: training loss became {train_loss} at epoch {epoch} (try a lower train.lr than {t.lr})"
        )
    val = loop.val_loss()
    loop.sched.step(val)
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val,
        "lr": loop.opt.param_groups[0]["lr"],
        "seconds": time.perf_counter() - t0,
    }
    state.history.append(row)
    if val < state.best - 1e-6:
        state.best, state.best_epoch, state.bad_epochs = val, epoch, 0
        state.best_state = copy.deepcopy(loop.model.state_dict())
    else:
        state.bad_epochs += 1
    log.debug("%s epoch %d: train %.4f val %.4f lr %.2g", name, epoch, train_loss, val, row["lr"])
    return row


def _checkpoint(loop: _Loop, state: _Progress, fp: str, epoch: int, done: bool) -> Checkpoint:
    return Checkpoint(
        fingerprint=fp,
        epoch=epoch,
        model=loop.model.state_dict(),
        opt=loop.opt.state_dict(),
        sched=loop.sched.state_dict(),
        gen=loop.gen.get_state(),
        dropout_gen=loop.dropout_gen.get_state(),
        history=state.history,
        best=state.best,
        best_epoch=state.best_epoch,
        bad_epochs=state.bad_epochs,
        best_state=state.best_state,
        initial=state.initial,
        done=done,
        stopped=state.stopped,
    )


def build_ensemble(results: list[TrainResult], ws: WindowSet, settings: Settings) -> TrainResult | None:
    """The mean of the trained candidates as one more candidate (train.ensemble; None with fewer than two), its
    quantiles conformalised on the same held-out windows as theirs. It costs no training of its own."""
    if not settings.train.ensemble or len(results) < 2:
        return None
    members: list[Forecaster] = []
    for r in results:
        if not isinstance(r.model, Forecaster):
            raise TrainingError(f"ensemble: its members are single forecasters, not '{r.candidate.name}'")
        members.append(copy.deepcopy(r.model).cpu().eval())
    ens = Ensemble(members).eval()
    calibration = calibrate(ens, ws, settings)
    tw = ws.to_torch("cpu")
    scale = ens.target_scale()
    levels = torch.tensor(ens.quantiles) if ens.quantiles else None
    val = _val_loss(ens, tw, tw.starts["val"], scale, False, 1024, levels)
    ens.eval()
    first = results[0].candidate
    return TrainResult(
        candidate=Candidate("ensemble", first.hidden_size, first.num_layers),
        model=ens,
        history=[],
        best_epoch=0,
        best_val_loss=val,
        initial_val_loss=min(r.initial_val_loss for r in results),
        stopped=f"the mean of {len(results)} trained candidates ({', '.join(r.candidate.name for r in results)})",
        seconds=sum(r.seconds for r in results),
        device="cpu",
        anchor=results[0].anchor,
        calibration=calibration,
    )


def _spec_anchor(anchor: AnchorChoice) -> str:
    """The anchor a model is built with: a combined anchor is held as a linear one (its weights)."""
    if anchor.kind == "seasonal_median":
        return "seasonal_median"
    return "linear" if anchor.linear is not None else "seasonal_naive"


def anchor_alone(
    results: list[TrainResult], ws: WindowSet, settings: Settings, anchor: AnchorChoice
) -> TrainResult | None:
    """The anchor on its own as one more candidate of a single series (train.anchor_candidate; None without an
    anchor or candidates): the first candidate's model untrained, its residual at zero and its quantile offsets at
    the anchor's residual spread, conformalised like the others. Early stopping keeps an epoch for its validation
    loss (the quantiles' pinball), so a cell can leave its anchor for a better band and a worse point forecast;
    selection by validation MASE then has the anchor itself to choose. It trains nothing."""
    if not settings.train.anchor_candidate or anchor.kind == "none" or not results or ws.is_panel:
        return None  # a panel's candidates are left as they are
    first = results[0].candidate
    if first.untrained or first.cell == "ensemble":
        return None
    cand = Candidate(first.cell, first.hidden_size, first.num_layers, untrained=True)
    model = _build_model(ws, cand, settings, anchor, torch.device("cpu")).eval()
    calibration = calibrate(model, ws, settings)
    tw = ws.to_torch("cpu")
    levels = torch.tensor(model.spec.quantiles) if model.spec.quantiles else None
    val = _val_loss(model, tw, tw.starts["val"], model.target_scale(), False, 1024, levels)
    model.eval()
    return TrainResult(
        candidate=cand,
        model=model,
        history=[],
        best_epoch=0,
        best_val_loss=val,
        initial_val_loss=val,
        stopped=f"not trained: the {anchor.kind} anchor alone (its residual at zero)",
        seconds=0.0,
        device="cpu",
        anchor=anchor.summary(),
        calibration=calibration,
    )


def _tensor(a: np.ndarray | None, device):
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)


def predictor(model: QuantileOutput, device: str | torch.device = "cpu") -> Callable[..., np.ndarray]:
    """numpy in (x, future=None), numpy out (the point forecast), for evaluation code that also runs ONNX sessions."""
    exact_fp32(device)
    model = model.to(device).eval()

    def run(x: np.ndarray, future: np.ndarray | None = None) -> np.ndarray:
        with torch.inference_mode():
            return model(_tensor(x, device), _tensor(future, device)).cpu().numpy()

    return run


def quantile_predictor(
    model: QuantileOutput, device: str | torch.device = "cpu", batch: int = 4096
) -> Callable[..., tuple[np.ndarray, np.ndarray | None]]:
    """numpy in (x, future=None), (point, quantiles or None) out, in batches."""
    exact_fp32(device)
    model = model.to(device).eval()

    def run(x: np.ndarray, future: np.ndarray | None = None):
        ys: list[np.ndarray] = []
        qs: list[np.ndarray] = []  # empty for a model without quantiles (q is None on every batch)
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                y, q = model.forward_all(
                    _tensor(x[i : i + batch], device),
                    None if future is None else _tensor(future[i : i + batch], device),
                )
                ys.append(y.cpu().numpy())
                if q is not None:
                    qs.append(q.cpu().numpy())
        if not ys:
            return np.zeros((0,)), None
        return np.concatenate(ys), (np.concatenate(qs) if qs else None)

    return run
