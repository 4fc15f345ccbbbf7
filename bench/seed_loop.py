"""The seed tutorial's training loop, the baseline bench/train.py and bench/gpu_check.py measure the trainer
against: a per-item Dataset (a numpy slice and two new tensors per window), DataLoader(shuffle, no workers),
plain Adam in fp32, the trainer's loss (MAE scaled by the target's scale). Imports torch and the model only, so
the GPU check can use it with the services made unimportable."""

from __future__ import annotations

import torch

from cellcast.pipeline.config import Settings
from cellcast.pipeline.data.windowset import WindowSet
from cellcast.pipeline.modeling.model import Forecaster
from cellcast.pipeline.modeling.train import Candidate, model_spec


class SeedWindows(torch.utils.data.Dataset):
    """The seed's pattern over the train windows: a numpy slice and two new tensors per item."""

    def __init__(self, ws: WindowSet):
        self.values, self.starts = ws.values, ws.starts["train"]
        self.L, self.H, self.tidx = ws.meta.lookback, ws.meta.horizon, ws.meta.target_idx

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = int(self.starts[i])
        x = self.values[s : s + self.L]
        y = self.values[s + self.L : s + self.L + self.H][:, self.tidx]
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


class SeedLoop:
    """DataLoader(batch, shuffle, no workers), plain Adam in fp32, the trainer's loss (scaled MAE), on `dev`."""

    def __init__(self, ws: WindowSet, cand: Candidate, settings: Settings, dev: torch.device, batch: int):
        torch.manual_seed(settings.train.seed)
        self.dev = dev
        self.model = Forecaster(model_spec(ws, cand, settings, None)).to(dev)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=settings.train.lr)
        self.scale = self.model.target_scale().to(dev)
        self.loader = torch.utils.data.DataLoader(SeedWindows(ws), batch_size=batch, shuffle=True, num_workers=0)
        self.it = iter(self.loader)

    def step(self) -> int:
        """One optimiser step; the number of windows it read."""
        try:
            x, y = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            x, y = next(self.it)
        x, y = x.to(self.dev), y.to(self.dev)
        loss = ((self.model(x) - y) / self.scale).abs().mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return len(x)
