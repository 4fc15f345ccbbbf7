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
    truth = (
        actuals.set_index(["id", "timestamp"])[target] if "id" in actuals else actuals.set_index("timestamp")[target]
    )
    frames = []
    logged_at = logged_at or pd.Timestamp("2026-12-07", tz="UTC")
    for i, origin in enumerate(origins):
        stamps = pd.date_range(origin, periods=horizon + 1, freq=freq)[1:]
        keys = [(series or "", t) for t in stamps] if "id" in actuals else list(stamps)
        y = truth.reindex(keys).to_numpy(dtype=np.float64)
        steps = np.arange(1, horizon + 1)
        e = np.array([error(i, s) for s in steps]) if callable(error) else np.full(horizon, float(error))
        point = np.where(np.isfinite(y), y, 100.0) + e
        f = pd.DataFrame(
            {
                "request_id": (requests[i] if requests else uuid.uuid4().hex),
                "logged_at": logged_at + pd.Timedelta(seconds=i),
                "model": model,
                "dataset": dataset,
                "model_version": str(version),
                "role": role,
                "served": served,
                "id": series,
                "origin": pd.Timestamp(origin),
                "timestamp": stamps,
                "step": steps.astype(np.int32),
                target: point,
            }
        )
        if quantile_halfwidth is not None:
            f[f"{target}_q0.05"] = point - quantile_halfwidth
            f[f"{target}_q0.95"] = point + quantile_halfwidth
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


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
