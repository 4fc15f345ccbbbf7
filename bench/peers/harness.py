"""The evaluation harness shared by the classical (statsforecast venv) and neural (project venv) scripts.

Pure numpy + json: it reads the window stage's own output (`data/NAME/windows.npz` + `windows.json`,
written by `cellcast window NAME` in a scratch project folder with the repository's params.yaml), so both
virtualenvs score exactly the same windows with exactly the pipeline's metric:

- MASE: MAE divided by the in-sample one-step naive MAE on the training rows (NaN breaks ignored), as
  pipeline/modeling/evaluate.py `mase_scale` / `metrics` compute it; sMAPE in percent.
- origins: the test split's windows, every `horizon`-th one (non-overlapping targets: starts are strictly
  increasing, so s[i+H] - s[i] >= H), or every window (stride 1, as BENCHMARKS.md scores).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

SCRATCH = Path(os.environ.get("RESEARCH_SCRATCH", "/tmp/rs"))
RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("elecdemand", "chicago", "glucose", "sp500")
EPS = 1e-12


class Data:
    """One dataset's series, splits and test origins, as the window stage wrote them."""

    def __init__(self, name: str, root: Path = SCRATCH):
        self.name = name
        d = root / "data" / name
        self.meta = json.loads((d / "windows.json").read_text())
        with np.load(d / "windows.npz") as z:
            self.values = z["values"].astype(np.float32)
            self.timestamps = z["timestamps"].astype("datetime64[ns]")
            self.starts = {k: z[f"starts_{k}"] for k in ("train", "val", "test")}
        self.L, self.H = int(self.meta["lookback"]), int(self.meta["horizon"])
        self.tidx = [self.meta["variables"].index(t) for t in self.meta["targets"]]
        self.seasons = list(self.meta["seasons"])
        self.freq = self.meta["freq"]
        self.val_start, self.test_start = self.meta["bounds"]["val"], self.meta["bounds"]["test"]

    # --- windows ---------------------------------------------------------------------------------
    def y(self) -> np.ndarray:
        """Target series (rows, targets), float64."""
        return self.values[:, self.tidx].astype(np.float64)

    def starts_for(self, split: str = "test", stride: str | int = "horizon") -> np.ndarray:
        s = self.starts[split]
        step = self.H if stride == "horizon" else int(stride)
        return s[::step]

    def targets(self, starts: np.ndarray) -> np.ndarray:
        """(n, H, T) actuals of the windows starting at `starts`."""
        rows = starts[:, None] + self.L + np.arange(self.H)[None, :]
        return self.y()[rows]

    def inputs(self, starts: np.ndarray) -> np.ndarray:
        rows = starts[:, None] + np.arange(self.L)[None, :]
        return self.values[rows]

    def origins(self, starts: np.ndarray) -> np.ndarray:
        """The row of the first forecast step of each window (everything before it is observed)."""
        return starts + self.L

    # --- metric ----------------------------------------------------------------------------------
    def mase_scale(self) -> np.ndarray:
        y = self.y()[: self.val_start]
        scale = np.nanmean(np.abs(np.diff(y, axis=0)), axis=0)
        return np.where(np.isfinite(scale) & (scale > EPS), scale, 1.0)

    def score(self, pred: np.ndarray, starts: np.ndarray) -> dict:
        return metrics(self.targets(starts), pred, self.mase_scale())

    def seasonal_naive(self, starts: np.ndarray, season: int) -> np.ndarray:
        """As pipeline/modeling/evaluate.py seasonal_naive: the latest observed row whole seasons back."""
        h = np.arange(self.H)
        src = starts[:, None] + self.L + h[None, :] - season * (h[None, :] // season + 1)
        return self.y()[np.clip(src, 0, None)]

    def history(self, origin: int) -> np.ndarray:
        """Targets observed before `origin`, back to the last break (NaN row) if there is one."""
        y = self.y()[:origin]
        bad = np.flatnonzero(np.isnan(y).any(axis=1))
        return y[bad[-1] + 1 :] if len(bad) else y


def metrics(y_true: np.ndarray, y_pred: np.ndarray, scale: np.ndarray) -> dict:
    yt, yp = y_true.astype(np.float64), y_pred.astype(np.float64)
    ae = np.abs(yp - yt)
    denom = np.abs(yt) + np.abs(yp)
    smape = np.where(denom > EPS, 2.0 * ae / np.maximum(denom, EPS), 0.0)
    return {
        "mase": float((ae / scale).mean()),
        "smape": float(100 * smape.mean()),
        "mae": float(ae.mean()),
        "rmse": float(np.sqrt(((yp - yt) ** 2).mean())),
        "n_windows": int(len(yt)),
    }


def mase_by_step(y_true, y_pred, scale) -> list[float]:
    return (np.abs(y_pred - y_true) / scale).mean(axis=(0, 2)).tolist()


def append(path: str | Path, row: dict) -> None:
    path = Path(path)
    if not path.is_absolute():
        path = RESULTS / path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_absolute():
        path = RESULTS / path
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_forecasts(tag: str, dataset: str, starts: np.ndarray, pred: np.ndarray) -> Path:
    """Forecasts kept beside the results (small: non-overlapping origins), so ensembles and
    comparisons can be scored later on exactly the same windows."""
    out = RESULTS / "forecasts" / f"{dataset}--{tag}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, starts=starts, pred=pred.astype(np.float32))
    return out


def load_forecasts(tag: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(RESULTS / "forecasts" / f"{dataset}--{tag}.npz") as z:
        return z["starts"], z["pred"]
