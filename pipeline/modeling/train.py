"""The training loop: one candidate (cell x size) on one window set.

The series lives on the training device and batches are gathered there from `unfold` views, so a GPU
never waits on a DataLoader. On CUDA: bf16 autocast and a fused Adam. Everywhere: gradient clipping,
a plateau learning-rate schedule, early stopping on validation loss with the best weights restored,
a checkpoint after every epoch (an interrupted run resumes where it stopped), and seeds that make a
CPU run repeatable. Loss is the MAE in scaled units, the quantity MASE ranks candidates by.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..config import Settings
from ..data import window as _window
from ..errors import ConfigError, TrainingError
from . import model as _model
from .device import exact_fp32
from .model import Forecaster, ModelSpec
from ..data.window import WindowSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    cell: str
    hidden_size: int
    num_layers: int

    @property
    def name(self) -> str:
        return f"{self.cell}-h{self.hidden_size}-l{self.num_layers}"


def candidates(settings: Settings) -> list[Candidate]:
    return [Candidate(**c) for c in settings.train.grid()]


@dataclass
class TrainResult:
    candidate: Candidate
    model: Forecaster                       # on the CPU, best weights
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    initial_val_loss: float = math.inf      # before any step: the anchor baseline when residual
    stopped: str = ""
    seconds: float = 0.0
    windows_per_s: float = 0.0
    device: str = "cpu"
    resumed_from: int | None = None


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' was asked for but no CUDA device is available")
        return torch.device("cuda")
    if preference == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_threads(settings: Settings, device: torch.device | str) -> int | None:
    """Intra-op threads per candidate on the CPU: `train.threads`, or with 'auto' the cores shared out
    among `train.parallel` candidates (None: torch's default). CPU training is bitwise repeatable for a
    given thread count; BLAS splits some products by it, so compare runs at the same count."""
    t = settings.train
    if torch.device(device).type != "cpu":
        return None
    if t.threads != "auto":
        return int(t.threads)
    return max(1, (os.cpu_count() or 1) // t.parallel) if t.parallel > 1 else None


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


def model_spec(ws: WindowSet, cand: Candidate, settings: Settings, anchor_season: int | None) -> ModelSpec:
    m = ws.meta
    t = settings.train
    return ModelSpec(cell=cand.cell, n_vars=len(m.variables), target_idx=m.target_idx, lookback=m.lookback,
                     horizon=m.horizon, hidden_size=cand.hidden_size, num_layers=cand.num_layers,
                     dropout=t.dropout, rnn_steps=t.rnn_steps,
                     anchor_season=anchor_season if t.residual else None, mean=m.mean, std=m.std)


# The source that decides which weights a run ends with: the network, this loop (loss, sampling, schedule)
# and the window batches it reads. A change in any of them must not resume an old checkpoint.
WEIGHT_SOURCES = (Path(_model.__file__), Path(__file__), Path(_window.__file__))
# train settings that bound or place the work without changing the weights it produces (a checkpoint stays
# valid when they change: a run cut short by the time budget continues under a larger one)
NOT_WEIGHTS = {"time_budget_s", "parallel", "threads", "task_runner", "dask_address", "device"}


def code_hash(paths=WEIGHT_SOURCES) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """cellcast's version + a hash of the source that shapes the weights, e.g. '0.1.0+3f2a9c1d4e5b'."""
    return f"{__version__}+{code_hash()}"


def _fingerprint(spec: ModelSpec, settings: Settings, data_md5: str | None, device: torch.device) -> str:
    """What a checkpoint must match to be resumed: model, weight-shaping settings, data, code, torch, device."""
    train = {k: v for k, v in settings.train.model_dump(mode="json").items() if k not in NOT_WEIGHTS}
    body = {"spec": spec.to_dict(), "train": train, "data": data_md5, "code": code_version(),
            "torch": torch.__version__, "device": device.type}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of `err` over the observed targets (mask 1); filled ones (mask 0) count for nothing."""
    return err.mean() if mask is None else (err * mask).sum() / mask.sum().clamp(min=1)


def _val_loss(model: Forecaster, tw, starts: torch.Tensor, scale: torch.Tensor, amp: bool, batch: int) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), torch.autocast(tw.device.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(0, len(starts), batch):
            idx = starts[i:i + batch]
            x, y = tw.batch(idx)
            err = ((model(x).float() - y) / scale).abs()
            mask = tw.target_mask(idx)
            total += float(err.sum() if mask is None else (err * mask).sum())
            n += err.numel() if mask is None else int(mask.sum())
    model.train()
    return total / max(n, 1)


def train_candidate(ws: WindowSet, cand: Candidate, settings: Settings, anchor_season: int | None = None, *,
                    device: torch.device | str | None = None, checkpoint_dir: Path | None = None,
                    progress: bool = False, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    t = settings.train
    device = torch.device(device) if device is not None else pick_device(t.device)
    exact_fp32(device)  # no TF32 on a GPU: fp32 work there matches the CPU and ONNX Runtime
    if len(ws.starts["train"]) == 0 or len(ws.starts["val"]) == 0:
        raise TrainingError(f"{ws.meta.name}: no train or validation windows to train {cand.name} on")
    # every draw from a generator of this candidate's own, none from torch's global RNG: candidates
    # trained at once in threads stay exactly what they are when trained one after another
    spec = model_spec(ws, cand, settings, anchor_season)
    model = Forecaster(spec, generator=torch.Generator().manual_seed(t.seed)).to(device)
    model.dropout_generator = torch.Generator(device=device).manual_seed(t.seed + 1)
    cuda = device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=cuda or None)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=t.lr_factor, patience=t.lr_patience)
    tw = ws.to_torch(device)
    scale = model.target_scale().to(device)
    gen = torch.Generator(device=device).manual_seed(t.seed)
    batch = min(t.batch_size, t.max_batch_size)
    train_starts, val_starts = tw.starts["train"], tw.starts["val"]
    per_epoch = min(t.max_train_windows, len(train_starts))

    fp = _fingerprint(spec, settings, ws.meta.data_md5, device)
    ckpt = Path(checkpoint_dir) / f"{cand.name}.pt" if checkpoint_dir else None
    history: list[dict] = []
    start_epoch, best_epoch, bad_epochs, resumed = 1, 0, 0, None
    best_state = copy.deepcopy(model.state_dict())
    initial = best = _val_loss(model, tw, val_starts, scale, cuda, max(batch, 1024))
    stopped = "max epochs"
    if ckpt and ckpt.is_file():
        blob = torch.load(ckpt, map_location=device, weights_only=False)
        if blob.get("fingerprint") == fp:
            model.load_state_dict(blob["model"]); opt.load_state_dict(blob["opt"]); sched.load_state_dict(blob["sched"])
            gen.set_state(blob["gen"].cpu())  # generator states are CPU byte tensors, also for CUDA generators
            model.dropout_generator.set_state(blob["dropout_gen"].cpu())
            history, best, best_epoch, bad_epochs = blob["history"], blob["best"], blob["best_epoch"], blob["bad_epochs"]
            best_state, initial = blob["best_state"], blob["initial"]
            start_epoch = resumed = blob["epoch"] + 1
            log.info("%s: resuming after epoch %d from %s", cand.name, blob["epoch"], ckpt)
            if blob.get("done"):
                start_epoch, stopped = t.epochs + 1, blob.get("stopped", stopped)

    seen, busy = 0, 0.0
    t_start = time.perf_counter()
    for epoch in range(start_epoch, t.epochs + 1):
        model.train()
        order = train_starts[torch.randperm(len(train_starts), generator=gen, device=device)[:per_epoch]]
        n_batches = math.ceil(per_epoch / batch)
        losses = torch.zeros((), device=device)
        t0 = time.perf_counter()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n_batches, desc=f"{cand.name} epoch {epoch}", leave=False, unit="batch")
        for i in range(n_batches):
            idx = order[i * batch:(i + 1) * batch]
            x, y = tw.batch(idx)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = masked_mean(((model(x).float() - y) / scale).abs(), tw.target_mask(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad_norm)
            opt.step()
            losses += loss.detach()
            if bar is not None:
                bar.update(1)
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss):.4f}")
        if cuda:
            torch.cuda.synchronize()
        busy += time.perf_counter() - t0
        seen += per_epoch
        if bar is not None:
            bar.close()
        train_loss = float(losses) / n_batches
        if not math.isfinite(train_loss):
            raise TrainingError(f"{cand.name}: training loss became {train_loss} at epoch {epoch} "
                                f"(try a lower train.lr than {t.lr})")
        val = _val_loss(model, tw, val_starts, scale, cuda, max(batch, 1024))
        sched.step(val)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val, "lr": opt.param_groups[0]["lr"],
               "seconds": time.perf_counter() - t0}
        history.append(row)
        if val < best - 1e-6:
            best, best_epoch, bad_epochs = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        log.debug("%s epoch %d: train %.4f val %.4f lr %.2g", cand.name, epoch, train_loss, val, row["lr"])
        if bad_epochs >= t.patience:
            stopped = f"early stop: no val improvement for {t.patience} epochs"
        elif time.perf_counter() - t_start > t.time_budget_s:
            stopped = f"time budget {t.time_budget_s:g}s spent"
        # done: the run ended as the settings say it should; one cut short by the clock is resumed by a rerun
        done = stopped.startswith("early stop") or epoch == t.epochs
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"fingerprint": fp, "epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "gen": gen.get_state(),
                        "dropout_gen": model.dropout_generator.get_state(), "history": history, "best": best,
                        "best_epoch": best_epoch, "bad_epochs": bad_epochs, "best_state": best_state,
                        "initial": initial, "done": done, "stopped": stopped}, tmp)
            tmp.replace(ckpt)  # atomic: a crash mid-write leaves the previous checkpoint
        if on_epoch:
            on_epoch(row)
        if stopped != "max epochs":
            break
    model.load_state_dict(best_state)
    model.dropout_generator = None   # the trained model carries no training state (it is copied and exported)
    model = model.cpu().eval()
    return TrainResult(candidate=cand, model=model, history=history, best_epoch=best_epoch, best_val_loss=best,
                       initial_val_loss=initial, stopped=stopped, seconds=time.perf_counter() - t_start,
                       windows_per_s=seen / busy if busy else 0.0, device=str(device), resumed_from=resumed)


def predictor(model: Forecaster, device: str | torch.device = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """numpy in, numpy out, for evaluation code that also runs ONNX sessions."""
    exact_fp32(device)
    model = model.to(device).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)).cpu().numpy()

    return run
