"""A forecast request, checked: the JSON body -> model input windows and the forecast's timestamps.

The shape of a body is declared once, as pydantic models (`Series`, `Batch`): they parse it and they are
the OpenAPI schema of the service. What depends on the model that serves (its variables, lookback,
frequency and grid, the plausible bounds profiled on its training data) is checked after, against it.
Every refusal is a BadRequest with the HTTP status and one line naming the field and the rule broken.
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

import numpy as np
import pandas as pd
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..data.calendar import CALENDAR, USER
from ..data.windowset import future_block
from ..engine.inference import OnnxForecaster
from .problems import BadRequest
from .timestamps import check_timestamps

F32_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------- the body's shape (and the OpenAPI schema)

# a JSON number: not a bool, not a numeric string, finite (NaN / Infinity literals are refused)
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class Series(BaseModel):
    """One series: the last `lookback` observations of every variable the model reads, oldest first."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None,
        description="the series' id (GET /model: series) when the model was trained on a panel: its values are "
        "read in that series' scale; required by such a model, refused by one trained on one series",
    )
    values: dict[str, list[Number]] = Field(
        description="each variable of the model (GET /model: variables) -> its last `lookback` observations"
    )
    timestamps: list[str] | None = Field(
        None,
        description="ISO 8601 date-times of the observations (UTC when no zone is given), on the model's "
        "grid; the answer then carries the forecast's timestamps. Required when the model reads "
        "calendar features of the horizon (GET /model: future), which are computed from them",
    )
    future: dict[str, list[Number | None]] | None = Field(
        None,
        description="each known-future column the caller supplies (GET /model: future, kind 'user') -> its "
        "`horizon` values for the forecast's steps; a missing one is refused, never filled",
    )


class Batch(BaseModel):
    """Several series in one request, forecast as one batch."""

    model_config = ConfigDict(extra="forbid")

    instances: list[Series] = Field(min_length=1)


class ModelRef(BaseModel):
    name: str
    version: str
    alias: str


class Forecast(BaseModel):
    id: str | None = Field(None, description="the series' id, as the request gave it (a panel model)")
    timestamps: list[str] | None
    forecast: dict[str, list[float]] = Field(description="each target -> its `horizon` forecast steps")
    quantiles: dict[str, dict[str, list[float]]] | None = Field(
        None,
        description="each target -> each quantile level ('0.05', ..., '0.95') -> its `horizon` steps; the "
        "median is `forecast`; calibrated on held-out data, they never cross",
    )


class ForecastResponse(Forecast):
    model: ModelRef
    provider: str
    horizon: int
    latency_ms: float


class BatchResponse(BaseModel):
    model: ModelRef
    provider: str
    horizon: int
    latency_ms: float
    forecasts: list[Forecast]


class Problem(BaseModel):
    """A refusal: one line naming the field and the rule broken."""

    detail: str


# ---------------------------------------------------------------- parsing


class Parsed(NamedTuple):
    """A request, checked: the model's inputs and what the answer needs."""

    batch: np.ndarray  # (n, lookback, n_vars)
    stamps: list  # per series: the forecast's timestamps, or None
    single: bool  # one series (not `instances`)
    future: np.ndarray | None = None  # (n, horizon, F) known-future block, when the model reads one
    ids: list | None = None  # a panel model: each series' id
    scales: tuple | None = None  # a panel model: (mean, scale) (n, V): `batch` is scaled, unscale the answer
    origins: list | None = None  # per series: its last input timestamp as sent (None without timestamps)


def parse_body(body: bytes, engine: OnnxForecaster) -> Parsed:
    """Raw JSON bytes -> Parsed (batch (n, lookback, n_vars), [forecast timestamps or None], single?, future block).

    pydantic's JSON parser, not json.loads: it bounds the nesting depth (a deeply nested body is a 400,
    not a RecursionError) and keeps a 400-digit integer an integer, which the number type then refuses."""
    try:
        payload = pydantic_core.from_json(body, allow_inf_nan=True)
    except ValueError as e:
        raise BadRequest(400, f"body: not valid JSON ({str(e).splitlines()[0][:120]})") from None
    return parse_request(payload, engine)


def parse_request(payload: Any, engine: OnnxForecaster) -> Parsed:
    """Parsed JSON -> Parsed (batch (n, lookback, n_vars), [forecast timestamps or None], single?, future block)"""
    if isinstance(payload, dict) and "instances" in payload:
        if set(payload) != {"instances"}:
            raise BadRequest(422, "body: 'instances' cannot be combined with other fields")
        items = payload["instances"]
        if not isinstance(items, list) or not items:
            raise BadRequest(
                422, "body.instances: expected a non-empty list of {'values': ..., 'timestamps': ...} objects"
            )
        parsed = [parse_instance(o, engine, f"instances[{i}]") for i, o in enumerate(items)]
        objs = items
        single = False
    else:
        parsed = [parse_instance(payload, engine)]
        objs = [payload]
        single = True
    future = np.stack([p[2] for p in parsed]) if engine.future_name else None
    batch = np.stack([p[0] for p in parsed])
    # checked above: a series with forecast timestamps sent a list of `lookback` date-time strings
    origins = [o["timestamps"][-1] if p[1] is not None else None for o, p in zip(objs, parsed, strict=True)]
    if "panel" not in engine.metadata:
        return Parsed(batch, [p[1] for p in parsed], single, future, origins=origins)
    ids = [p[3] for p in parsed]
    mean, scale = panel_scales(engine, ids)
    batch = ((batch - mean[:, None, :]) / scale[:, None, :]).astype(np.float32)
    return Parsed(batch, [p[1] for p in parsed], single, future, ids, (mean, scale), origins)


def panel_scales(engine: OnnxForecaster, series: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n, V) mean and scale of each series (ONNX metadata `panel`): a panel model's graph reads
    (value - mean) / scale and answers in those units (data/panel_windows.py, PanelWindowSet)."""
    info = engine.metadata["panel"]["series"]
    return (
        np.asarray([info[s]["mean"] for s in series], np.float64),
        np.asarray([info[s]["scale"] for s in series], np.float64),
    )


def unscale(engine: OnnxForecaster, y: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """A panel model's targets (n, H, T[, Q]) out of the graph's per-series units into each series' own."""
    tidx = [engine.variables.index(t) for t in engine.targets]
    shape = (len(y), 1, len(tidx)) + (1,) * (y.ndim - 3)
    return y * scale[:, tidx].reshape(shape) + mean[:, tidx].reshape(shape)


def parse_instance(obj: Any, engine: OnnxForecaster, where: str = "body"):
    """One series from JSON -> (window (lookback, n_vars) float32, forecast timestamps or None, future block
    (horizon, F) or None, the series' id or None)."""
    try:
        series = Series.model_validate(obj)
    except ValidationError as e:
        raise BadRequest(422, _one_line(e, obj, engine, where)) from None
    panel = engine.metadata.get("panel")
    if panel is None and series.id is not None:
        raise BadRequest(422, f"{where}.id: this model was trained on one series; leave 'id' out")
    if panel is not None:
        known = panel.get("series") or {}
        if series.id is None:
            raise BadRequest(
                422,
                f"{where}.id: required: the model was trained on a panel of {len(known)} series, "
                f"each in its own scale (GET /model: series)",
            )
        if series.id not in known:
            raise BadRequest(
                422,
                f"{where}.id: unknown series {series.id[:80]!r}: the model knows {len(known)} series "
                f"(GET /model: series) and has no scale for another; retrain to add it",
            )
    values = series.values
    missing = [v for v in engine.variables if v not in values]
    extra = sorted(set(values) - set(engine.variables))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(extra)}"] if extra else []
        )
        raise BadRequest(422, f"{where}.values: {'; '.join(parts)} (the model needs {', '.join(engine.variables)})")
    bounds = model_bounds(engine)
    cols = [_column(values[v], f"{where}.values.{v}", engine.lookback, bounds.get(v)) for v in engine.variables]
    window = np.stack(cols, axis=1).astype(np.float32)
    stamps = None
    if series.timestamps is not None:
        stamps = check_timestamps(
            series.timestamps,
            f"{where}.timestamps",
            engine.lookback,
            engine.horizon,
            engine.metadata.get("freq"),
            engine.metadata.get("grid_origin"),
            engine.metadata.get("schedule"),
        )
    return window, stamps, request_future(series.future, stamps, engine, where, bounds, series.id), series.id


def static_values(engine: OnnxForecaster, series_id: str | None) -> dict[str, float]:
    """A panel series' columns constant per series (ingest --static), as its model holds them; {} without any."""
    series = ((engine.metadata.get("panel") or {}).get("series") or {}).get(series_id) or {}
    return {str(k): float(v) for k, v in (series.get("static") or {}).items()}


def request_future(
    given: dict | None,
    stamps: list[str] | None,
    engine: OnnxForecaster,
    where: str,
    bounds: dict,
    series_id: str | None = None,
) -> np.ndarray | None:
    """The known-future block (horizon, F) of one request: calendar columns computed from the forecast's timestamps
    (so the request's timestamps are required), user columns from `future`, each `horizon` values, none missing."""
    if not engine.future_name:
        if given is not None:
            raise BadRequest(422, f"{where}.future: this model reads no known-future inputs; leave 'future' out")
        return None
    names, kinds, H = engine.future_names, engine.future_kinds, engine.horizon
    calendar = [n for n, k in zip(names, kinds) if k == CALENDAR]
    if calendar and stamps is None:
        raise BadRequest(
            422,
            f"{where}.timestamps: required: the model reads calendar features of the horizon "
            f"({', '.join(calendar)}), computed from the observations' timestamps",
        )
    user = [n for n, k in zip(names, kinds) if k == USER]
    given = given or {}
    missing = [c for c in user if c not in given]
    extra = sorted(set(given) - set(user))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(extra)}"] if extra else []
        )
        first = f" from {stamps[0]}" if stamps else ""
        raise BadRequest(
            422,
            f"{where}.future: {'; '.join(parts)} (the model needs {H} values{first} of each of "
            f"{', '.join(user) or 'none'})",
        )
    values = {}
    for c in user:
        v = given[c]
        gone = [i for i in range(H) if i >= len(v) or v[i] is None]
        if gone:
            at = stamps[gone[0]] if stamps else f"horizon step {gone[0] + 1}"
            raise BadRequest(
                422,
                f"{where}.future.{c}: no value for {at} ({len(gone)} of the {H} horizon steps have "
                f"none); known-future values are never filled: send all {H}",
            )
        if len(v) > H:
            raise BadRequest(422, f"{where}.future.{c}: {len(v)} values for the {H} horizon steps")
        arr = np.asarray(v, dtype=np.float64)
        if np.abs(arr).max(initial=0) > F32_MAX:
            raise BadRequest(422, f"{where}.future.{c}: values beyond the float32 range")
        if c in bounds:
            lo, hi = bounds[c]
            out = np.flatnonzero((arr < lo) | (arr > hi))
            if len(out):
                raise BadRequest(
                    422,
                    f"{where}.future.{c}: {len(out)} values outside the plausible range "
                    f"[{lo:.6g}, {hi:.6g}] profiled on the model's training data (e.g. "
                    f"{arr[out[0]]:.6g} at [{int(out[0])}])",
                )
        values[c] = arr
    # a panel series' columns constant per series (ingest --static) come from the model, not the request
    values |= {c: np.full(H, v) for c, v in static_values(engine, series_id).items()}
    when = pd.DatetimeIndex(stamps) if stamps else range(H)
    return future_block(names, kinds, engine.calendar, engine.metadata.get("freq") or "D", when, values)


def model_bounds(engine: OnnxForecaster) -> dict[str, tuple[float, float]]:
    """The model's ONNX metadata `bounds` ({variable: [lo, hi]}, profiled on its training rows); an entry that is
    not two numbers is left out rather than trusted."""
    raw = engine.metadata.get("bounds")
    out = {}
    for v, b in raw.items() if isinstance(raw, dict) else ():
        try:
            lo, hi = (float(x) for x in b)
        except (TypeError, ValueError):
            continue
        if lo <= hi:
            out[str(v)] = (lo, hi)
    return out


def _column(values: list[float], where: str, length: int, bounds) -> np.ndarray:
    if len(values) != length:
        raise BadRequest(422, f"{where}: expected {length} observations (the model's lookback), got {len(values)}")
    arr = np.asarray(values, dtype=np.float64)
    if np.abs(arr).max(initial=0) > F32_MAX:
        raise BadRequest(422, f"{where}: values beyond the float32 range")
    if bounds is not None:
        lo, hi = bounds
        out = np.flatnonzero((arr < lo) | (arr > hi))
        if len(out):
            i = int(out[0])
            raise BadRequest(
                422,
                f"{where}: {len(out)} values outside the plausible range [{lo:.6g}, {hi:.6g}] "
                f"profiled on the model's training data (e.g. {arr[i]:.6g} at [{i}])",
            )
    return arr


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > F32_MAX:
        return "an integer beyond the float range"
    return type(v).__name__


def _at(obj: Any, loc: tuple) -> Any:
    for k in loc:
        try:
            obj = obj[k]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def _one_line(e: ValidationError, obj: Any, engine: OnnxForecaster, where: str) -> str:
    """pydantic's errors -> the service's one line: the first broken rule, where, and how many alike."""
    errors = e.errors(include_url=False)
    # the object itself and its fields first (as a reader checks them), then the values inside
    rank = {"model_type": 0, "extra_forbidden": 1, "missing": 2, "dict_type": 2}
    err = min(errors, key=lambda x: (rank.get(x["type"], 3), len(x["loc"])))
    loc, kind = tuple(err["loc"]), err["type"]
    if kind == "model_type":
        return f"{where}: expected a JSON object with 'values' (and optional 'timestamps'), got {type(obj).__name__}"
    if kind == "extra_forbidden":
        unknown = sorted(str(x["loc"][-1]) for x in errors if x["type"] == "extra_forbidden" and len(x["loc"]) == 1)
        return f"{where}: unknown field(s) {', '.join(unknown)}; expected 'values' and optional 'timestamps', 'future'"
    if loc[0] == "future" and len(loc) <= 2:
        return (
            f"{where}.{'.'.join(str(p) for p in loc)}: expected an object mapping each known-future column to "
            f"its {engine.horizon} values for the horizon"
        )
    if loc[0] == "future":
        same = sum(1 for x in errors if tuple(x["loc"])[:2] == loc[:2] and x["type"] == kind)
        what = (
            "NaN or infinite values are not allowed"
            if kind == "finite_number"
            else f"expected a number, got {_kind(_at(obj, loc))}"
        )
        return f"{where}.future.{loc[1]}[{loc[2]}]: {what} ({same} such values)"
    if loc[0] == "values" and len(loc) == 1:
        return (
            f"{where}.values: expected an object mapping each variable to its last {engine.lookback} "
            f"observations ({', '.join(engine.variables)})"
        )
    if loc[0] == "values" and len(loc) == 2:
        return (
            f"{where}.values.{loc[1]}: expected a list of {engine.lookback} numbers, got {type(_at(obj, loc)).__name__}"
        )
    if loc[0] == "values":
        same = sum(1 for x in errors if tuple(x["loc"])[:2] == loc[:2] and x["type"] == kind)
        if kind == "finite_number":
            return f"{where}.values.{loc[1]}[{loc[2]}]: NaN or infinite values are not allowed ({same} such values)"
        return f"{where}.values.{loc[1]}[{loc[2]}]: expected a number, got {_kind(_at(obj, loc))} ({same} such values)"
    if loc[0] == "timestamps" and len(loc) == 1:
        return (
            f"{where}.timestamps: expected a list of {engine.lookback} date-time strings (one per observation), "
            f"got {type(_at(obj, loc)).__name__}"
        )
    if loc[0] == "timestamps":
        return f"{where}.timestamps[{loc[1]}]: expected an ISO 8601 date-time string, got {_kind(_at(obj, loc))}"
    return f"{where}.{'.'.join(str(p) for p in loc)}: {err['msg']}"


# ---------------------------------------------------------------- timestamps


def forecast_json(
    y: np.ndarray,
    stamps: list[str] | None,
    targets: list[str],
    q: np.ndarray | None = None,
    levels: list[float] | None = None,
    series_id: str | None = None,
) -> dict:
    """One series' answer: y (horizon, T), q (horizon, T, Q) at `levels` when the model forecasts quantiles."""
    y = np.asarray(y, dtype=np.float64)  # float32 -> the float64 numbers JSON writes, as float() gave them
    out: dict[str, object] = {"id": series_id} if series_id is not None else {}
    out |= {"timestamps": stamps, "forecast": {t: y[:, j].tolist() for j, t in enumerate(targets)}}
    if q is not None and levels:
        q = np.asarray(q, dtype=np.float64)
        out["quantiles"] = {
            t: {f"{lv:g}": q[:, j, k].tolist() for k, lv in enumerate(levels)} for j, t in enumerate(targets)
        }
    return out
