"""What travels with a model: the ONNX metadata serving and monitoring read without the registry (a
panel's ids and scales, the grid, the bounds), the drift reference profiled on the training rows, and the
rows a version was trained and selected on (tags)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import Settings
from ..data.panel_windows import PanelWindowSet
from ..data.windowset import WindowSet


def onnx_metadata(ws: WindowSet, settings: Settings) -> dict:
    m = ws.meta
    return {
        "dataset": m.name,
        "freq": m.freq,
        # the opening hours (data/schedule.py): forecasts are stamped with open steps, the service refuses others
        "schedule": m.schedule,
        "variables": m.variables,
        "targets": m.targets,
        "lookback": m.lookback,
        "horizon": m.horizon,
        "data_md5": m.data_md5,
        "params_hash": settings.fingerprint(),
        # variable -> [lo, hi]: plausible inputs, profiled on the training rows; forecast and serve check them
        "bounds": m.value_bounds,
        # the phase of the series' grid (readings at :51 past, days from 09:00): the service refuses requests off it
        "grid_origin": str(ws.timestamps[0].astype("datetime64[s]")) if len(ws.timestamps) else None,
        "reference": training_reference(ws, settings),
        # the known-future block in order: each column "calendar" (whoever forecasts computes it from the
        # timestamps, with `calendar`) or "user" (values the forecast's caller must supply)
        "future_names": m.future_names,
        "future_kinds": m.future_kinds,
        "calendar": m.calendar or {},
        **({"panel": panel_metadata(ws)} if isinstance(ws, PanelWindowSet) else {}),
    }


def panel_metadata(ws: PanelWindowSet) -> dict:
    """What a panel model needs to forecast its series without the registry (ONNX metadata `panel`): the id
    columns, and per series its ids, its status (ok | cold_start) and the mean and scale of each variable (the
    graph reads `(value - mean) / scale` and returns targets in those units: the caller unscales)."""
    p = ws.meta.panel
    return {
        "id_cols": p["id_cols"],
        "scaling": p["scaling"],
        "series": {
            s: {
                "ids": p["series"][s],
                "status": p["status"][s].split(" ", 1)[0],
                "mean": p["scales"][s]["mean"],
                "scale": p["scales"][s]["scale"],
                # its columns constant per series (ingest --static): the forecast and the service supply them
                **({"static": p["static"][s]} if p.get("static") else {}),
            }
            for s in ws.series_ids
        },
    }


def model_metadata(ws: WindowSet, settings: Settings, candidate: str) -> dict:
    """What travels inside an exported candidate: onnx_metadata(), its name, and the time span of the rows it
    was trained and selected on (a later promotion scores it only on rows after them)."""
    return onnx_metadata(ws, settings) | {"candidate": candidate, "split_times": ws.meta.split_times}


def split_tags(ws: WindowSet) -> dict:
    """The rows a version was trained (train) and selected (val) on, as registry tags."""
    st = ws.meta.split_times
    return {"train_start": st["train"][0], "train_end": st["train"][1], "val_end": st["val"][1]}


REFERENCE_ROWS = 2_000_000  # a panel's training rows the drift reference profiles at most (whole series, evenly)


def _reference_rows(ws: PanelWindowSet, cap: int = REFERENCE_ROWS) -> np.ndarray:
    """bool (rows,): the training rows of every series, or of every k-th series when all of them exceed `cap`: the
    reference is a distribution, which an even sample of whole series estimates, while every row of 10,000 series
    of a year in one frame took 20 GB."""
    m = np.zeros(len(ws.values), dtype=bool)
    every = max(1, -(-int(np.sum(ws.train_end)) // cap))
    for o, e in list(zip(ws.offsets, ws.train_end))[::every]:
        m[o : o + e] = True
    return m


def training_reference(ws: WindowSet, settings: Settings) -> dict:
    """The training split as monitoring compares recent data with it (data/drift.py), and the scale of the
    model's MASE: recorded with the model (ONNX metadata `reference`)."""
    from ..data.drift import reference_profile, residual_season, window_rows
    from ..modeling.evaluate import mase_scale

    # a panel: every series' own training rows, or an even sample of whole series past REFERENCE_ROWS
    rows = _reference_rows(ws) if isinstance(ws, PanelWindowSet) else slice(0, ws.meta.bounds["val"])
    values = ws.values[rows] if ws.filled is None else np.where(ws.filled[rows], np.nan, ws.values[rows])
    train = pd.DataFrame(values, columns=ws.meta.variables)  # observed cells only: filled ones are NaN
    train.insert(0, "timestamp", pd.to_datetime(ws.timestamps[rows]))
    if ws.is_panel:
        train = train.sort_values("timestamp", kind="stable")
    return reference_profile(
        train,
        ws.meta.variables,
        ws.meta.targets,
        settings.monitor.psi_bins,
        settings.validate_.profile_tolerance,
        dict(zip(ws.meta.targets, mase_scale(ws).tolist())),
        window_rows(settings.monitor.drift_rows, ws.meta.lookback, settings.monitor.psi_bins),
        # seasonal differences need one series in time order: a panel's interleaved rows have none
        season=None if ws.is_panel else residual_season(ws.meta.freq, len(train), ws.meta.schedule),
    )
