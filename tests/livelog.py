"""Live forecast logs as the service writes them (forecasts/NAME/live/*.parquet, one row per request, version,
series and step; docs/operations.md), built from known numbers for the tests of the live monitor."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd


def live_rows(
    actuals: pd.DataFrame,
    origins,
    horizon: int,
    version: str,
    role: str,
    error,
    *,
    target: str = "load",
    requests: list[str] | None = None,
    served: bool = True,
    quantile_halfwidth: float | None = None,
    series: str | None = None,
    freq: str = "h",
    model: str = "x-forecaster",
    dataset: str = "x",
    logged_at: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One request per origin (or the given request ids), answered by `version` in `role`: the forecast of each
    step is the actual (where it has arrived; 100 where it has not) plus error(origin index, step) (a number or a
    function). `quantile_halfwidth`: q0.05 / q0.95 columns that far either side of the point."""
    logged_at = logged_at or pd.Timestamp("2026-12-07", tz="UTC")
    origins = pd.DatetimeIndex(origins)
    k, steps = len(origins), np.arange(1, horizon + 1)
    stamps = (origins.to_numpy()[:, None] + pd.Timedelta(1, freq).to_timedelta64() * steps[None, :]).ravel()
    mine = actuals[actuals["id"] == (series or "")] if "id" in actuals else actuals
    y = mine.set_index("timestamp")[target].reindex(stamps).to_numpy(dtype=np.float64)
    i, s = np.repeat(np.arange(k), horizon), np.tile(steps, k)
    e = np.array([error(a, b) for a, b in zip(i, s)]) if callable(error) else np.full(len(i), float(error))
    point = np.where(np.isfinite(y), y, 100.0) + e
    out = pd.DataFrame(
        {
            "request_id": np.repeat(requests if requests else [uuid.uuid4().hex for _ in range(k)], horizon),
            "logged_at": logged_at + pd.to_timedelta(i, unit="s"),
            "model": model,
            "dataset": dataset,
            "model_version": str(version),
            "role": role,
            "served": served,
            "id": series,
            "origin": np.repeat(origins.to_numpy(), horizon),
            "timestamp": stamps,
            "step": s.astype(np.int32),
            target: point,
        }
    )
    if quantile_halfwidth is not None:
        out[f"{target}_q0.05"] = point - quantile_halfwidth
        out[f"{target}_q0.95"] = point + quantile_halfwidth
    return out


def write_live(folder: Path, *frames: pd.DataFrame, pid: int = 4242) -> list[Path]:
    """Each frame as one file of the writer: `<UTC stamp>-<pid>-<seq>.parquet`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for seq, f in enumerate(frames):
        stamp = (pd.Timestamp("2026-12-07T00:00:00Z") + pd.Timedelta(seconds=seq)).strftime("%Y%m%dT%H%M%S%fZ")
        p = folder / f"{stamp}-{pid}-{seq}.parquet"
        f.to_parquet(p, index=False)
        out.append(p)
    return out
