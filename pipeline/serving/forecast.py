"""Batch forecasts: the registry's champion on the latest validated observations -> Parquet + MLflow.

`forecast_frame` is the core (an engine and a frame in, a forecast frame out); `forecast_latest` adds
the registry, the validation of the input rows and the files. The input rows go through the same
validation suite and policy as the training data, and are checked against the model's own plausible
ranges (ONNX metadata `bounds`, profiled on its training rows), never against a profile of themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Settings
from ..data.frequency import future_timestamps
from ..files import utc_stamp, write_parquet
from ..errors import DataValidationError
from ..engine.inference import OnnxForecaster


@dataclass
class ForecastResult:
    frame: pd.DataFrame
    path: Path | None
    version: int | str | None
    provider: str


def model_input(engine: OnnxForecaster, frame: pd.DataFrame, source: str = "frame") -> tuple[np.ndarray, pd.Timestamp]:
    """The last `lookback` rows in the model's variable order, as one (1, lookback, n_vars) window."""
    missing = [v for v in engine.variables if v not in frame.columns]
    if missing:
        raise DataValidationError(f"{source}: column(s) {', '.join(missing)} missing; the model needs "
                                  f"{', '.join(engine.variables)}: ingest the data with them (--target / --features)")
    if "timestamp" not in frame.columns:
        raise DataValidationError(f"{source}: column 'timestamp' missing; pass a frame `cellcast ingest` wrote (its time "
                                  f"column is 'timestamp')")
    if len(frame) < engine.lookback:
        raise DataValidationError(f"{source}: {len(frame)} rows, the model needs the last {engine.lookback} "
                                  f"(its lookback); ingest more history")
    tail = frame.sort_values("timestamp").iloc[-engine.lookback:]
    x = tail[engine.variables].to_numpy(np.float64)
    bad = int((~np.isfinite(x)).sum())
    if bad:
        cols = [v for v, n in zip(engine.variables, (~np.isfinite(x)).sum(0)) if n]
        raise DataValidationError(f"{source}: {bad} missing or non-finite values in the last {engine.lookback} rows "
                                  f"(columns {', '.join(cols)}); a forecast needs a complete lookback: fill or "
                                  f"re-validate the data (cellcast validate)")
    check_bounds(engine, x, source)
    return x.astype(np.float32)[None], tail["timestamp"].iloc[-1]


def check_bounds(engine: OnnxForecaster, x: np.ndarray, source: str = "frame") -> None:
    """Refuse inputs (time, variables) outside the model's plausible ranges (ONNX metadata `bounds`): one
    line naming the column, the count and an example. A model exported without them checks nothing."""
    bounds = engine.metadata.get("bounds") or {}
    for j, v in enumerate(engine.variables):
        if v not in bounds:
            continue
        lo, hi = bounds[v]
        out = (x[:, j] < lo) | (x[:, j] > hi)
        if out.any():
            eg = float(x[:, j][out][0])
            raise DataValidationError(
                f"{source}: column '{v}': {int(out.sum())} values outside [{lo:.6g}, {hi:.6g}], the range of the model's "
                f"training rows (e.g. {eg:.6g}); check the data; if such values are real now, widen "
                f"validate.profile_tolerance (or declare validate.bounds) in params.yaml and retrain")


def forecast_frame(engine: OnnxForecaster, frame: pd.DataFrame, version=None, model_name: str | None = None,
                   source: str = "frame") -> tuple[pd.DataFrame, str]:
    """Forecast the `horizon` steps after the last row of `frame` -> (forecast frame, provider used)."""
    x, last = model_input(engine, frame, source)
    y, used = engine.predict_with_provider(x)
    freq = engine.metadata.get("freq")
    if not freq:
        step = frame["timestamp"].sort_values().diff().iloc[-1]
        stamps = pd.DatetimeIndex([last + step * (i + 1) for i in range(engine.horizon)])
    else:
        stamps = future_timestamps(last, freq, engine.horizon)
    out = pd.DataFrame({"timestamp": stamps})
    for j, t in enumerate(engine.targets):
        out[t] = y[0, :, j].astype(np.float64)
    out["model_name"] = model_name or ""
    out["model_version"] = "" if version is None else str(version)
    return out, used


def forecast_latest(name: str, settings: Settings, alias: str = "champion", device: str = "auto",
                    log_to_mlflow: bool = True) -> ForecastResult:
    """The `alias` model of `name` on the latest validated rows -> forecasts/NAME/<UTC stamp>.parquet,
    logged as an artifact of a run in the dataset's experiment."""
    from ..catalog import read_validated, validated_paths
    from ..data import validation
    from ..registry import tracking

    onnx_path, info = tracking.download_model(settings.model_name, alias)
    engine = OnnxForecaster.from_path(onnx_path, device=device)
    df, meta = read_validated(name, settings)
    pq, _ = validated_paths(name, settings)
    model_freq = engine.metadata.get("freq")
    if model_freq and meta.get("freq") and model_freq != meta["freq"]:
        # a refresh re-infers the frequency from the file: a model fed another grid forecasts nonsense
        raise DataValidationError(f"{pq}: the data is on a {meta['freq']} grid, {settings.model_name} v{info.version} was "
                                  f"trained on {model_freq}: re-ingest with --freq {model_freq}, or retrain")
    # the input rows pass the same suite + policy as the training data, and the model's own ranges
    recent = df.sort_values("timestamp").iloc[-engine.lookback:].reset_index(drop=True)
    origin = f"the range model {settings.model_name} v{info.version} was trained on"
    report = validation.validate_frame(recent, meta, settings, name=name, bounds=engine.metadata.get("bounds") or {},
                                       bounds_origin=origin, require_windows=False,
                                       source=f"{pq} (last {engine.lookback} rows)")
    frame, used = forecast_frame(engine, report.frame, version=info.version, model_name=settings.model_name,
                                 source=str(pq))
    stamp = utc_stamp()
    path = write_parquet(frame, Path(settings.paths.forecasts) / name / f"{stamp}.parquet")
    if log_to_mlflow:
        with tracking.parent_run(name, run_name=f"forecast-{stamp}",
                                 tags={"cellcast.kind": "forecast", "model_version": info.version, "alias": alias}):
            tracking.log_params({"model_name": settings.model_name, "model_version": info.version, "alias": alias,
                                 "provider": used, "last_observation": str(recent["timestamp"].iloc[-1])})
            tracking.log_artifact(path, "forecasts")
    return ForecastResult(frame=frame, path=path, version=info.version, provider=used)
