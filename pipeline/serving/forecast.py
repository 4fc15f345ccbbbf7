"""Batch forecasts: the registry's champion on the latest validated observations -> Parquet + MLflow.

`forecast_frame` is the core (an engine and a frame in, a forecast frame out); `forecast_latest` adds
the registry, the validation of the input rows and the files. The input rows go through the same
validation suite and policy as the training data, and are checked against the model's own plausible
ranges (ONNX metadata `bounds`, profiled on its training rows), never against a profile of themselves.

A model that reads known-future inputs gets them for the horizon: calendar columns computed here from the
forecast's timestamps (its metadata names the parts and the country), user-supplied columns from the rows
after the last observation in the refreshed data (data/NAME/future.parquet, written by validate) or from a
file given (`cellcast forecast NAME --future FILE`). A missing value is refused, naming the column and the
first timestamp without one; it is never filled. A model with quantiles adds `<target>_q<level>` columns
(the median is the target's own column).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import forecasts_dir
from ..config import Settings
from ..data.calendar import USER
from ..data.frequency import future_timestamps
from ..data.schedule import as_schedule
from ..data.windowset import future_block
from ..engine.inference import OnnxForecaster
from ..errors import DataValidationError
from ..files import utc_stamp, write_parquet
from .requests import panel_scales, static_values, unscale


@dataclass
class ForecastResult:
    frame: pd.DataFrame | None  # one series' forecast; None for a panel (written to `path` a chunk at a time)
    path: Path | None
    version: int | str | None
    provider: str
    skipped: dict[str, str] | None = None  # a panel: series not forecast -> why
    panel: PanelForecast | None = None  # a panel: what was written


# --- panels: one forecast per series, a chunk of series per model call -----------------------------------

# Series forecast per model call when a whole validated panel is forecast: what the forecast holds at once is this
# many lookback tails (a frame, then the model's float32 input: ~60 KB per series at 216 hourly rows of two
# variables, ~60 MB here), whatever the panel's size; ONNX Runtime's CPU throughput no longer grows past batches of
# about a thousand windows (STACK.md: 1,024), so a larger chunk buys no speed.
PANEL_CHUNK = 1024


def forecast_panel_frame(
    engine: OnnxForecaster,
    frame: pd.DataFrame,
    version=None,
    model_name: str | None = None,
    source: str = "frame",
    id_frame: pd.DataFrame | None = None,
    future: pd.DataFrame | None = None,
    future_source: str = "future rows",
) -> tuple[pd.DataFrame, str, dict[str, str]]:
    """Forecast the `horizon` steps after each series' last row of a long `frame` (`series_id`, `timestamp`, the
    variables), every series in one batch -> (long forecast frame, provider, {series not forecast: why}).
    A series the model does not know (no scale) or whose last `lookback` rows hold a break is not forecast, and
    said so. Output columns: series_id, the id columns (from `id_frame`, one row per series), timestamp, the
    targets, their quantile columns, status (ok | cold_start), cold_start (bool), model_name, model_version.
    `future`: rows (`series_id`, `timestamp`, columns) of the user-supplied known-future values of each series, when
    the model reads any (panel_future)."""
    out, used, skipped = _forecast_series(engine, frame, version, model_name, source, id_frame, future, future_source)
    if out is None:
        raise _nothing_to_forecast(source, skipped)
    return out, used, skipped


def _nothing_to_forecast(source: str, skipped: dict[str, str]) -> DataValidationError:
    return DataValidationError(
        f"{source}: no series to forecast ({len(skipped)} not forecast: "
        + "; ".join(f"'{k}': {v}" for k, v in list(skipped.items())[:3])
        + ")"
    )


def _forecast_series(
    engine: OnnxForecaster,
    frame: pd.DataFrame,
    version,
    model_name: str | None,
    source: str,
    id_frame: pd.DataFrame | None,
    future: pd.DataFrame | None,
    future_source: str,
) -> tuple[pd.DataFrame | None, str, dict[str, str]]:
    """forecast_panel_frame's work, one model call; the frame is None when no series of `frame` can be forecast."""
    known = engine.metadata["panel"]["series"]
    missing = [v for v in engine.variables if v not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{source}: column(s) {', '.join(missing)} missing; the model needs {', '.join(engine.variables)}"
        )
    H = engine.horizon
    series, windows, lasts, skipped = _last_windows(engine, frame, known)
    freq = engine.metadata.get("freq")
    if not freq:
        raise DataValidationError(f"{source}: the model's metadata names no frequency ('freq') to place the horizon on")
    if not series:
        return None, "", skipped
    x = np.stack(windows)
    del windows
    check_bounds(engine, x.reshape(-1, x.shape[-1]), source)
    mean, scale = panel_scales(engine, series)
    xs = ((x - mean[:, None, :]) / scale[:, None, :]).astype(np.float32)
    del x
    hours = as_schedule(engine.metadata.get("schedule"))
    horizons = [pd.DatetimeIndex(future_timestamps(t, freq, H, hours)) for t in lasts]
    f = _future_inputs(engine, series, horizons, future, future_source) if engine.future_name else None
    y, q, used = engine.predict_all(xs, f)  # one call: the batch is the series
    y = unscale(engine, y.astype(np.float64), mean, scale)
    q = None if q is None else unscale(engine, q.astype(np.float64), mean, scale)
    out = _forecast_rows(engine, series, horizons, y, q, id_frame)
    status = np.repeat([known[s].get("status", "ok") for s in series], H)
    out["status"] = status
    out["cold_start"] = status == "cold_start"
    out["model_name"] = model_name or ""
    out["model_version"] = "" if version is None else str(version)
    return out, used, skipped


def _future_inputs(engine: OnnxForecaster, series: list[str], horizons: list, future, future_source: str) -> np.ndarray:
    """The known-future block of each series' horizon: calendar columns from its timestamps, user columns from
    `future` (rows per series), static values from the model's metadata."""
    from ..catalog import SERIES_ID

    groups = {} if future is None else dict(tuple(future.groupby(SERIES_ID, sort=False)))
    blocks = [
        future_input(
            engine,
            h,
            groups.get(s, None if future is None else future.iloc[:0]),
            f"{future_source}, series '{s}'",
            static_values(engine, s),
        )
        for s, h in zip(series, horizons)
    ]
    return np.stack([b[0] for b in blocks if b is not None])  # none is None: the model reads known-future inputs


def _last_windows(engine: OnnxForecaster, frame: pd.DataFrame, known: dict):
    """Each series' last `lookback` rows of a long frame -> (series, their windows, their last stamps, {series not
    forecast: why}): a series the model does not know, too short, or with a break in those rows is not forecast."""
    from ..catalog import SERIES_ID

    L = engine.lookback
    frame = frame.sort_values([SERIES_ID, "timestamp"], kind="stable")
    sid = frame[SERIES_ID].astype(str).to_numpy()
    values = frame[engine.variables].to_numpy(np.float64)
    stamps_all = frame["timestamp"].to_numpy()
    cuts = np.concatenate([[0], np.flatnonzero(sid[1:] != sid[:-1]) + 1, [len(sid)]])
    series: list[str] = []
    windows: list[np.ndarray] = []
    lasts: list[pd.Timestamp] = []
    skipped: dict[str, str] = {}
    for a, b in zip(cuts[:-1], cuts[1:]):
        s = str(sid[a])
        if s not in known:
            skipped[s] = "not in the model (trained without it): retrain to forecast it"
        elif b - a < L:
            skipped[s] = f"{b - a} rows, the model needs the last {L} (its lookback)"
        elif not np.isfinite(values[b - L : b]).all():
            skipped[s] = f"its last {L} rows hold a break or missing values"
        else:
            series.append(s)
            windows.append(values[b - L : b])
            lasts.append(pd.Timestamp(stamps_all[b - 1]))
    return series, windows, lasts, skipped


def _forecast_rows(engine: OnnxForecaster, series: list[str], horizons: list, y, q, id_frame) -> pd.DataFrame:
    """The long forecast frame: series_id, the id columns (from `id_frame`), timestamp, the targets and their
    quantile columns."""
    from ..catalog import SERIES_ID

    n, H = len(series), engine.horizon
    out = pd.DataFrame(
        {"series_id": np.repeat(series, H), "timestamp": np.concatenate([h.to_numpy() for h in horizons])}
    )
    if id_frame is not None and len(id_frame.columns) > 1:
        ids = id_frame.drop_duplicates(SERIES_ID).set_index(SERIES_ID)
        for c in ids.columns:
            out.insert(out.columns.get_loc("timestamp"), c, ids[c].reindex(out["series_id"]).to_numpy())
    for j, t in enumerate(engine.targets):
        out[t] = y[:, :, j].reshape(n * H)
        for k, level in enumerate(engine.quantiles if q is not None else []):
            if level != 0.5 and q is not None:
                out[quantile_column(t, level)] = q[:, :, j, k].reshape(n * H)
    return out


def model_input(engine: OnnxForecaster, frame: pd.DataFrame, source: str = "frame") -> tuple[np.ndarray, pd.Timestamp]:
    """The last `lookback` rows in the model's variable order, as one (1, lookback, n_vars) window."""
    missing = [v for v in engine.variables if v not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{source}: column(s) {', '.join(missing)} missing; the model needs "
            f"{', '.join(engine.variables)}: ingest the data with them (--target / --features)"
        )
    if "timestamp" not in frame.columns:
        raise DataValidationError(
            f"{source}: column 'timestamp' missing; pass a frame `cellcast ingest` wrote (its time "
            f"column is 'timestamp')"
        )
    if len(frame) < engine.lookback:
        raise DataValidationError(
            f"{source}: {len(frame)} rows, the model needs the last {engine.lookback} "
            f"(its lookback); ingest more history"
        )
    tail = frame.sort_values("timestamp").iloc[-engine.lookback :]
    x = tail[engine.variables].to_numpy(np.float64)
    bad = int((~np.isfinite(x)).sum())
    if bad:
        cols = [v for v, n in zip(engine.variables, (~np.isfinite(x)).sum(0)) if n]
        raise DataValidationError(
            f"{source}: {bad} missing or non-finite values in the last {engine.lookback} rows "
            f"(columns {', '.join(cols)}); a forecast needs a complete lookback: fill or "
            f"re-validate the data (cellcast validate)"
        )
    check_bounds(engine, x, source)
    return x.astype(np.float32)[None], tail["timestamp"].iloc[-1]


def check_grid(pq, meta: dict, engine: OnnxForecaster, model: str) -> None:
    """The data on the grid the model was trained on: its frequency and its opening hours. A refresh re-infers both
    from the file: a model fed another grid forecasts nonsense."""
    model_freq = engine.metadata.get("freq")
    if model_freq and meta.get("freq") and model_freq != meta["freq"]:
        raise DataValidationError(
            f"{pq}: the data is on a {meta['freq']} grid, {model} was "
            f"trained on {model_freq}: re-ingest with --freq {model_freq}, or retrain"
        )
    hours, model_hours = as_schedule(meta.get("schedule")), as_schedule(engine.metadata.get("schedule"))
    if "schedule" in engine.metadata and hours != model_hours:
        was = model_hours.describe() if model_hours else "none (24/7)"
        now = hours.describe() if hours else "none (24/7)"
        raise DataValidationError(
            f"{pq}: the data keeps the schedule {now}, {model} was trained on {was}: re-ingest with "
            f"--schedule, or retrain"
        )


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
                f"{source}: column '{v}': {int(out.sum())} values outside [{lo:.6g}, {hi:.6g}], "
                f"the range of the model's "
                f"training rows (e.g. {eg:.6g}); check the data; if such values are real now, widen "
                f"validate.profile_tolerance (or declare validate.bounds) in params.yaml and retrain"
            )


def user_future_columns(engine: OnnxForecaster) -> list[str]:
    """The known-future columns a caller must supply (the calendar ones are computed from timestamps)."""
    return [n for n, k in zip(engine.future_names, engine.future_kinds) if k == USER]


def future_input(
    engine: OnnxForecaster,
    stamps: pd.DatetimeIndex,
    supplied: pd.DataFrame | None,
    source: str = "future rows",
    static: dict[str, float] | None = None,
) -> np.ndarray | None:
    """The (1, horizon, F) known-future block of one forecast at `stamps`: calendar columns computed, user columns
    looked up by timestamp in `supplied` (a frame with `timestamp` and those columns), a panel series' `static`
    values repeated over the horizon. A column or a value missing is refused with the column and the first timestamp
    lacking it; values outside the model's bounds too."""
    if not engine.future_name:
        return None
    user: dict[str, np.ndarray] = {c: np.full(len(stamps), v) for c, v in (static or {}).items()}
    hint = (
        "add rows after the last observation holding them (ingest --future-features) or pass "
        "`cellcast forecast --future FILE`"
    )
    for c in user_future_columns(engine):
        if supplied is None or c not in supplied.columns:
            raise DataValidationError(
                f"{source}: known-future column '{c}' missing: the model needs its values for "
                f"the {len(stamps)} steps from {stamps[0]}; {hint}"
            )
        given = supplied.drop_duplicates("timestamp", keep="last").set_index("timestamp")[c].reindex(stamps)
        v = pd.to_numeric(given, errors="coerce").to_numpy(np.float64)
        text = np.flatnonzero(~np.isfinite(v) & given.notna().to_numpy())
        if len(text):
            raise DataValidationError(
                f"{source}: known-future column '{c}': {given.iloc[text[0]]!r} at "
                f"{stamps[text[0]]} is not a finite number ({len(text)} such values)"
            )
        gone = np.flatnonzero(~np.isfinite(v))
        if len(gone):
            raise DataValidationError(
                f"{source}: known-future column '{c}': no value for {stamps[gone[0]]} "
                f"({len(gone)} of the {len(stamps)} horizon steps have none); known-future "
                f"values are never filled: {hint}"
            )
        user[c] = v
    check_bounds_of(engine, user, source)
    try:
        block = future_block(
            engine.future_names, engine.future_kinds, engine.calendar, engine.metadata.get("freq") or "D", stamps, user
        )
    except ValueError as e:
        raise DataValidationError(f"{source}: {e}") from None
    return block[None]


def check_bounds_of(engine: OnnxForecaster, columns: dict[str, np.ndarray], source: str) -> None:
    """Known-future values outside the model's plausible range of that column (ONNX metadata `bounds`) are refused."""
    bounds = engine.metadata.get("bounds") or {}
    for c, v in columns.items():
        if c not in bounds:
            continue
        lo, hi = bounds[c]
        out = (v < lo) | (v > hi)
        if out.any():
            raise DataValidationError(
                f"{source}: known-future column '{c}': {int(out.sum())} values outside "
                f"[{lo:.6g}, {hi:.6g}], the range of the model's training rows (e.g. "
                f"{float(v[out][0]):.6g})"
            )


def quantile_column(target: str, level: float) -> str:
    """The batch forecast's column of `target`'s quantile `level` (what monitoring reads: `Demand_q0.05`)."""
    return f"{target}_q{level:g}"


def forecast_frame(
    engine: OnnxForecaster,
    frame: pd.DataFrame,
    version=None,
    model_name: str | None = None,
    source: str = "frame",
    future: pd.DataFrame | None = None,
    future_source: str = "future rows",
) -> tuple[pd.DataFrame, str]:
    """Forecast the `horizon` steps after the last row of `frame` -> (forecast frame, provider used). `future`:
    rows (`timestamp` + columns) holding the user-supplied known-future values, when the model reads any."""
    x, last = model_input(engine, frame, source)
    freq = engine.metadata.get("freq")
    if not freq:
        step = frame["timestamp"].sort_values().diff().iloc[-1]
        stamps = pd.DatetimeIndex([last + step * (i + 1) for i in range(engine.horizon)])
    else:
        stamps = future_timestamps(last, freq, engine.horizon, engine.metadata.get("schedule"))
    f = future_input(engine, pd.DatetimeIndex(stamps), future, future_source)
    y, q, used = engine.predict_all(x, f)
    out = pd.DataFrame({"timestamp": stamps})
    for j, t in enumerate(engine.targets):
        out[t] = y[0, :, j].astype(np.float64)
        for k, level in enumerate(engine.quantiles if q is not None else []):
            if level != 0.5 and q is not None:
                out[quantile_column(t, level)] = q[0, :, j, k].astype(np.float64)
    out["model_name"] = model_name or ""
    out["model_version"] = "" if version is None else str(version)
    return out, used


def read_future_file(path: str | Path, time_col: str | None = None) -> pd.DataFrame:
    """A file of known-future values (CSV or Parquet): a time column (`timestamp`, or the series' own) and the
    columns. Timestamps with a zone are converted to UTC, as ingest does. One line per problem."""
    from ..data.readers import read_csv, read_parquet

    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: --future file not found")
    df, _ = read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else read_csv(path, None)
    col = "timestamp" if "timestamp" in df.columns else time_col
    if col not in df.columns:
        raise DataValidationError(
            f"{path}: no time column ('timestamp'{f' or {time_col!r}' if time_col else ''}); "
            f"columns found: {', '.join(map(str, df.columns))}"
        )
    raw = df[col]
    try:
        ts = pd.to_datetime(raw, utc=True, format="ISO8601" if raw.dtype == object else None)
    except (ValueError, TypeError) as e:
        raise DataValidationError(f"{path}: column '{col}': not date-times ({str(e).splitlines()[0][:120]})") from None
    out = df.drop(columns=[col]).copy()
    out.insert(0, "timestamp", pd.DatetimeIndex(ts).tz_localize(None).astype("datetime64[ns]"))
    return out


def panel_future(supplied: pd.DataFrame, id_cols: list[str], source: str) -> pd.DataFrame:
    """A panel's known-future rows keyed by series: a `series_id` column, else the panel's id columns (joined as
    ingest joins them). One line when neither is there."""
    from ..catalog import SERIES_ID
    from ..data.panel import JOIN

    if SERIES_ID in supplied.columns:
        return supplied.assign(**{SERIES_ID: supplied[SERIES_ID].astype(str)})
    if id_cols and all(c in supplied.columns for c in id_cols):
        parts = [supplied[c].astype("string").str.strip().astype(str) for c in id_cols]
        key = parts[0].str.cat(parts[1:], sep=JOIN) if len(parts) > 1 else parts[0]
        return supplied.assign(**{SERIES_ID: key})
    raise DataValidationError(
        f"{source}: a panel's known-future rows need the series they belong to: a '{SERIES_ID}' column"
        + (f" or the id column(s) {', '.join(repr(c) for c in id_cols)}" if id_cols else "")
        + f"; columns found: {', '.join(map(str, supplied.columns))}"
    )


def supplied_future(
    settings: Settings, engine: OnnxForecaster, meta: dict, future_file: str | Path | None
) -> tuple[pd.DataFrame | None, str]:
    """The user-supplied known-future rows a model that reads any gets, and where they come from: `future_file`,
    else the rows after the last observation (data/NAME/future.parquet; a panel's: each series')."""
    from ..catalog import future_path

    name = settings.dataset
    if not (engine.future_name and user_future_columns(engine)):
        return None, "future rows"
    if future_file is not None:
        return read_future_file(future_file, meta.get("time_col")), str(future_file)
    fp = future_path(settings)
    if fp.is_file():
        return pd.read_parquet(fp), f"{fp} (the rows after the last observation)"
    return None, f"{name}: no rows after the last observation"


def forecast_latest(
    settings: Settings,
    alias: str = "champion",
    device: str = "auto",
    log_to_mlflow: bool = True,
    future_file: str | Path | None = None,
) -> ForecastResult:
    """The `alias` model of the dataset on the latest validated rows -> forecasts/NAME/<UTC stamp>.parquet,
    logged as an artifact of a run in the dataset's experiment. Known-future values: from `future_file`, else
    the rows after the last observation (data/NAME/future.parquet)."""
    from ..catalog import is_panel, read_validated, read_validated_meta, validated_paths
    from ..data import validation
    from ..registry import tracking

    onnx_path, info = tracking.download_model(settings.model_name, alias)
    engine = OnnxForecaster.from_path(onnx_path, device=device)
    if is_panel(read_validated_meta(settings)):
        return _forecast_panel(settings, engine, info, alias, log_to_mlflow, future_file)
    df, meta = read_validated(settings)
    pq, _ = validated_paths(settings)
    check_grid(pq, meta, engine, f"{settings.model_name} v{info.version}")
    # the input rows pass the same suite + policy as the training data, and the model's own ranges
    recent = df.sort_values("timestamp").iloc[-engine.lookback :].reset_index(drop=True)
    origin = f"the range model {settings.model_name} v{info.version} was trained on"
    report = validation.validate_frame(
        recent,
        meta,
        validation.with_recorded_policy(settings),
        bounds=engine.metadata.get("bounds") or {},
        bounds_origin=origin,
        require_windows=False,
        source=f"{pq} (last {engine.lookback} rows)",
    )
    supplied, where = supplied_future(settings, engine, meta, future_file)
    frame, used = forecast_frame(
        engine,
        report.frame,
        version=info.version,
        model_name=settings.model_name,
        source=str(pq),
        future=supplied,
        future_source=where,
    )
    path = write_parquet(frame, forecasts_dir(settings) / f"{utc_stamp()}.parquet")
    _record(path, settings, info, alias, used, log_to_mlflow, {"last_observation": str(recent["timestamp"].iloc[-1])})
    return ForecastResult(frame=frame, path=path, version=info.version, provider=used)


def _record(
    path: Path,
    settings: Settings,
    info,
    alias: str,
    used: str,
    log_to_mlflow: bool,
    params: dict,
    extra: dict | None = None,
) -> None:
    """When asked, log the forecast file `path` (forecasts/NAME/<UTC stamp>.parquet) as a `forecast-<stamp>` run: the
    model, the alias, the provider, `params`; `extra`: more JSON artifacts by file name."""
    from ..registry import tracking

    if log_to_mlflow:
        with tracking.parent_run(
            settings.dataset,
            run_name=f"forecast-{path.stem}",
            tags={"cellcast.kind": "forecast", "model_version": info.version, "alias": alias},
        ):
            tracking.log_params(
                {"model_name": settings.model_name, "model_version": info.version, "alias": alias, "provider": used}
                | params
            )
            tracking.log_artifact(path, "forecasts")
            for file, d in (extra or {}).items():
                tracking.log_dict(d, file)


@dataclass
class PanelForecast:
    """What a panel's batch forecast wrote: the file, the provider, the counts and the horizon's span, and the series
    not forecast (-> why)."""

    path: Path
    provider: str
    series: int
    rows: int
    cold_start: int
    first: pd.Timestamp
    last: pd.Timestamp
    skipped: dict[str, str]


def panel_tails(pq: str | Path, lookback: int, chunk: int) -> Iterator[pd.DataFrame]:
    """The last `lookback` rows of each series of a validated panel, `chunk` series at a time, in the order the file
    holds them: a partition of whole series is read at a time, and only its series' tails are kept."""
    from ..catalog import SERIES_ID, panel_partitions, read_partition

    held: pd.DataFrame | None = None
    for i in range(panel_partitions(pq)):
        tails = read_partition(pq, [i]).groupby(SERIES_ID, sort=False).tail(lookback)
        held = tails if held is None else pd.concat([held, tails], ignore_index=True)
        ids = held[SERIES_ID].unique()
        while len(ids) >= chunk:
            first = held[SERIES_ID].isin(ids[:chunk]).to_numpy()
            yield held[first]
            held, ids = held[~first], ids[chunk:]
    if held is not None and len(held):
        yield held


def forecast_validated_panel(
    settings: Settings,
    engine: OnnxForecaster,
    path: str | Path,
    version=None,
    model_name: str | None = None,
    future: pd.DataFrame | None = None,
    future_source: str = "future rows",
    chunk: int = PANEL_CHUNK,
) -> PanelForecast:
    """Every kept series of a validated panel forecast (forecast_panel_frame's rows) -> the Parquet file `path`,
    `chunk` series per model call and per row group, in validated.parquet's order of series. Memory holds one
    partition and the tails of one chunk of series, whatever the panel's size."""
    from ..catalog import SERIES_ID, read_validated_meta, validated_paths
    from ..files import parquet_groups

    if chunk < 1:
        raise ValueError(f"chunk: {chunk} series, at least 1")
    pq, _ = validated_paths(settings)
    meta = read_validated_meta(settings)
    check_grid(pq, meta, engine, f"{model_name or settings.model_name} v{version}")
    wanted = [c for c in (meta["panel"].get("id_cols") or []) if c != SERIES_ID]
    skipped: dict[str, str] = {}
    used, series, rows, cold = "", 0, 0, 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    with parquet_groups(path) as add:
        for tails in panel_tails(pq, engine.lookback, chunk):
            id_cols = [c for c in wanted if c in tails.columns]
            part = future if future is None else future[future[SERIES_ID].isin(tails[SERIES_ID].unique())]
            out, now, why = _forecast_series(
                engine, tails, version, model_name, str(pq), tails[[SERIES_ID, *id_cols]], part, future_source
            )
            skipped.update(why)
            if out is None:
                continue
            add(out)
            used = now
            n = out[SERIES_ID].nunique()
            series, rows, cold = series + n, rows + len(out), cold + int(out["cold_start"].sum()) // engine.horizon
            lo, hi = out["timestamp"].min(), out["timestamp"].max()
            first, last = lo if first is None else min(first, lo), hi if last is None else max(last, hi)
        if first is None or last is None:
            raise _nothing_to_forecast(str(pq), skipped)
    return PanelForecast(Path(path), used, series, rows, cold, first, last, skipped)


def _forecast_panel(
    settings: Settings,
    engine: OnnxForecaster,
    info,
    alias: str,
    log_to_mlflow: bool,
    future_file: str | Path | None = None,
) -> ForecastResult:
    """forecast_latest for a panel: every kept series of validated.parquet (already validated per series by the
    validate stage) forecast a chunk of series at a time -> one long-format Parquet, written chunk by chunk.
    Known-future values per series: from `future_file` (an id column beside the timestamp), else the rows after each
    series' last observation."""
    from ..catalog import read_validated_meta, validated_paths

    name = settings.dataset
    pq, _ = validated_paths(settings)
    if "panel" not in engine.metadata:
        raise DataValidationError(
            f"{pq}: dataset '{name}' is a panel, but {settings.model_name} v{info.version} was "
            f"trained on one series: retrain it (cellcast train {name})"
        )
    meta = read_validated_meta(settings)
    check_grid(pq, meta, engine, f"{settings.model_name} v{info.version}")
    supplied, where = supplied_future(settings, engine, meta, future_file)
    if supplied is not None:
        supplied = panel_future(supplied, list(meta["panel"].get("id_cols") or []), where)
    done = forecast_validated_panel(
        settings,
        engine,
        forecasts_dir(settings) / f"{utc_stamp()}.parquet",
        version=info.version,
        model_name=settings.model_name,
        future=supplied,
        future_source=where,
    )
    _record(
        done.path,
        settings,
        info,
        alias,
        done.provider,
        log_to_mlflow,
        {"series": done.series, "series_not_forecast": len(done.skipped)},
        {"series_not_forecast.json": done.skipped} if done.skipped else None,
    )
    return ForecastResult(
        frame=None, path=done.path, version=info.version, provider=done.provider, skipped=done.skipped, panel=done
    )
