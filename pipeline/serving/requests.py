"""A forecast request, checked: the JSON body -> model input windows and the forecast's timestamps.
Every refusal is a BadRequest with the HTTP status and one line naming the field and the rule."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.frequency import future_timestamps
from ..engine.inference import OnnxForecaster


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _number_list(values: Any, where: str, length: int) -> np.ndarray:
    if not isinstance(values, list):
        raise BadRequest(422, f"{where}: expected a list of {length} numbers, got {type(values).__name__}")
    if len(values) != length:
        raise BadRequest(422, f"{where}: expected {length} observations (the model's lookback), got {len(values)}")
    bad = [(i, v) for i, v in enumerate(values)
           if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        i, v = bad[0]
        kind = "null" if v is None else type(v).__name__
        raise BadRequest(422, f"{where}[{i}]: expected a number, got {kind} ({len(bad)} such values)")
    arr = np.asarray(values, dtype=np.float64)
    nonfinite = int((~np.isfinite(arr)).sum())
    if nonfinite:
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise BadRequest(422, f"{where}[{i}]: NaN or infinite values are not allowed ({nonfinite} such values)")
    if np.abs(arr).max(initial=0) > np.finfo(np.float32).max:
        raise BadRequest(422, f"{where}: values beyond the float32 range")
    return arr


def _offset(freq: str | None):
    if not freq:
        return None
    try:
        return pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        return None


def check_timestamps(raw: Any, where: str, length: int, horizon: int, freq: str | None) -> list[str]:
    """Check the request's timestamps (one per observation, regular) and continue them `horizon` steps.

    With the model's frequency known, the timestamps must lie on its grid (business days and months
    included); without it, they must have one constant step."""
    if not isinstance(raw, list) or len(raw) != length:
        got = f"{len(raw)} items" if isinstance(raw, list) else type(raw).__name__
        raise BadRequest(422, f"{where}: expected a list of {length} date-time strings (one per observation), got {got}")
    for i, v in enumerate(raw):
        if not isinstance(v, str):
            raise BadRequest(422, f"{where}[{i}]: expected an ISO 8601 date-time string, got {type(v).__name__}")
    try:
        # the project's convention: tz-naive UTC (a zone in the request is converted)
        ts = pd.DatetimeIndex(pd.to_datetime(pd.Series(raw), utc=True, format="ISO8601")).tz_localize(None)
    except (ValueError, TypeError) as e:
        raise BadRequest(422, f"{where}: not ISO 8601 date-times ({str(e).splitlines()[0][:120]})") from None
    steps = ts[1:] - ts[:-1]
    off = _offset(freq)
    if len(steps) and (steps <= pd.Timedelta(0)).any():
        i = int(np.flatnonzero(steps <= pd.Timedelta(0))[0]) + 1
        raise BadRequest(422, f"{where}[{i}]: {ts[i]} does not come after {ts[i - 1]}; timestamps must increase")
    if off is not None:
        grid = pd.date_range(ts[0], periods=length, freq=off)
        off_grid = np.flatnonzero(grid != ts)
        if len(off_grid):
            if len(set(steps)) == 1:
                raise BadRequest(422, f"{where}: step {steps[0]} does not match the model's frequency {freq}")
            i = int(off_grid[0])
            raise BadRequest(422, f"{where}[{i}]: {ts[i]} breaks the regular {freq} steps from {ts[0]} (expected "
                                  f"{grid[i]}; {len(off_grid)} timestamps off the grid)")
        future = future_timestamps(ts[-1], freq, horizon)
    else:
        if not len(steps):
            raise BadRequest(422, f"{where}: cannot tell the step from one timestamp and the model has no frequency")
        irregular = np.flatnonzero(steps != steps[0])
        if len(irregular):
            i = int(irregular[0]) + 1
            raise BadRequest(422, f"{where}[{i}]: step {steps[i - 1]} breaks the regular step {steps[0]} "
                                  f"({len(irregular)} irregular steps)")
        future = pd.DatetimeIndex([ts[-1] + steps[0] * (k + 1) for k in range(horizon)])
    return [t.isoformat() for t in future]


def parse_instance(obj: Any, engine: OnnxForecaster, where: str = "body"):
    """One series from JSON -> (window (lookback, n_vars) float32, forecast timestamps or None)."""
    if not isinstance(obj, dict):
        raise BadRequest(422, f"{where}: expected a JSON object with 'values' (and optional 'timestamps'), "
                              f"got {type(obj).__name__}")
    unknown = sorted(set(obj) - {"values", "timestamps"})
    if unknown:
        raise BadRequest(422, f"{where}: unknown field(s) {', '.join(unknown)}; expected 'values' and optional 'timestamps'")
    values = obj.get("values")
    if not isinstance(values, dict):
        raise BadRequest(422, f"{where}.values: expected an object mapping each variable to its last "
                              f"{engine.lookback} observations ({', '.join(engine.variables)})")
    missing = [v for v in engine.variables if v not in values]
    extra = sorted(set(values) - set(engine.variables))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(extra)}"] if extra else [])
        raise BadRequest(422, f"{where}.values: {'; '.join(parts)} (the model needs {', '.join(engine.variables)})")
    cols = [_number_list(values[v], f"{where}.values.{v}", engine.lookback) for v in engine.variables]
    window = np.stack(cols, axis=1).astype(np.float32)
    future = None
    if obj.get("timestamps") is not None:
        future = check_timestamps(obj["timestamps"], f"{where}.timestamps", engine.lookback, engine.horizon,
                                   engine.metadata.get("freq"))
    return window, future


def parse_request(payload: Any, engine: OnnxForecaster):
    """-> (batch (n, lookback, n_vars), [future timestamps or None], single?)"""
    if isinstance(payload, dict) and "instances" in payload:
        if set(payload) != {"instances"}:
            raise BadRequest(422, "body: 'instances' cannot be combined with other fields")
        items = payload["instances"]
        if not isinstance(items, list) or not items:
            raise BadRequest(422, "body.instances: expected a non-empty list of {'values': ..., 'timestamps': ...} objects")
        parsed = [parse_instance(o, engine, f"instances[{i}]") for i, o in enumerate(items)]
        single = False
    else:
        parsed = [parse_instance(payload, engine)]
        single = True
    return np.stack([p[0] for p in parsed]), [p[1] for p in parsed], single


def forecast_json(y: np.ndarray, stamps: list[str] | None, targets: list[str]) -> dict:
    return {"timestamps": stamps, "forecast": {t: [float(v) for v in y[:, j]] for j, t in enumerate(targets)}}
