"""A forecast request, checked: the JSON body -> model input windows and the forecast's timestamps.

The shape of a body is declared once, as pydantic models (`Series`, `Batch`): they parse it and they are
the OpenAPI schema of the service. What depends on the model that serves (its variables, lookback,
frequency and grid, the plausible bounds profiled on its training data) is checked after, against it.
Every refusal is a BadRequest with the HTTP status and one line naming the field and the rule broken.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, NamedTuple

import numpy as np
import pandas as pd
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..data.calendar import CALENDAR, USER
from ..data.frequency import future_timestamps
from ..data.window import future_block
from ..engine.inference import OnnxForecaster

F32_MAX = float(np.finfo(np.float32).max)


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


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
        single = False
    else:
        parsed = [parse_instance(payload, engine)]
        single = True
    future = np.stack([p[2] for p in parsed]) if engine.future_name else None
    batch = np.stack([p[0] for p in parsed])
    if "panel" not in engine.metadata:
        return Parsed(batch, [p[1] for p in parsed], single, future)
    ids = [p[3] for p in parsed]
    mean, scale = panel_scales(engine, ids)
    batch = ((batch - mean[:, None, :]) / scale[:, None, :]).astype(np.float32)
    return Parsed(batch, [p[1] for p in parsed], single, future, ids, (mean, scale))


def panel_scales(engine: OnnxForecaster, series: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n, V) mean and scale of each series (ONNX metadata `panel`): a panel model's graph reads
    (value - mean) / scale and answers in those units (data/window.py, PanelWindowSet)."""
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
        )
    return window, stamps, request_future(series.future, stamps, engine, where, bounds), series.id


def request_future(
    given: dict | None, stamps: list[str] | None, engine: OnnxForecaster, where: str, bounds: dict
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


@lru_cache(maxsize=64)
def _offset(freq: str | None):
    if not freq:
        return None
    try:
        return pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        return None


# ---- the common case without pandas: ISO strings of the usual shape on a fixed step. pandas costs ~1 ms per
# request here (most of a small model's answer); this path answers the same in ~0.1 ms. It only ever says yes:
# anything it does not handle exactly like the pandas path (another ISO form, a calendar frequency, an error to
# word) goes to that path, which stays the reference.

_ISO_NAIVE = r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?)?"
_NAIVE_LINES = re.compile(rf"(?:{_ISO_NAIVE}\n)*{_ISO_NAIVE}")
_ZONE = re.compile(r"(?:Z|[+-](\d\d):(\d\d))$")
_EPOCH_NAIVE = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
_PANDAS_US = 9_223_372_036_854_775 - 1  # pandas' nanosecond timestamps end about here (years 1677 .. 2262)


@lru_cache(maxsize=64)
def _step_us(freq: str | None) -> int | None:
    """The fixed step of `freq` in microseconds; None for a calendar step (months, business days) or none."""
    off = _offset(freq)
    if off is None:
        return None
    try:
        ns = pd.Timedelta(off).value
    except (ValueError, TypeError):
        return None
    return ns // 1000 if ns > 0 and ns % 1000 == 0 else None


@lru_cache(maxsize=64)
def _origin_us(grid_origin: str | None) -> int | None | bool:
    """The model's grid origin in microseconds (None: none recorded; False: one this path cannot use)."""
    if not grid_origin:
        return None
    try:
        ns = pd.Timestamp(grid_origin).tz_localize(None).value
    except (ValueError, TypeError):
        return None
    return ns // 1000 if ns % 1000 == 0 else False


def _parse_us(raw: list[str]) -> np.ndarray | None:
    """ISO strings of one shape, all without a zone or all with the same one -> UTC microseconds (numpy's
    parser, in C); None for anything else."""
    zone = _ZONE.search(raw[0])
    suffix = zone.group(0) if zone else ""
    if suffix:
        if not all(s.endswith(suffix) for s in raw):
            return None
        raw = [s[: -len(suffix)] for s in raw]
    if not _NAIVE_LINES.fullmatch("\n".join(raw)):
        return None
    try:
        us = np.array(raw, dtype="datetime64[us]").astype(np.int64)
    except (ValueError, OverflowError):  # 2024-02-30, 24:00...: worded by the pandas path
        return None
    if zone and zone.group(1) is not None:
        sign = -1 if suffix[0] == "-" else 1
        us = us - sign * (int(zone.group(1)) * 60 + int(zone.group(2))) * 60_000_000
    return us


def _fast_timestamps(raw: list[str], horizon: int, freq: str | None, grid_origin: str | None) -> list[str] | None:
    if not raw or (ts := _parse_us(raw)) is None:
        return None
    if len(ts) < 2:
        return None
    if freq:
        step = _step_us(freq)
        origin = _origin_us(grid_origin)
        if step is None or origin is False:
            return None
        if (ts != ts[0] + step * np.arange(len(ts))).any():
            return None
        if origin is not None:
            if ((ts[0] - origin) % step) != 0:
                return None
        elif step >= _DAY_US and (ts % _DAY_US != 0).any():
            return None
    else:
        steps = np.diff(ts)
        step = int(steps[0])
        if step <= 0 or (steps != step).any():
            return None
    last = int(ts[-1]) + step * horizon
    if int(ts[0]) < -_PANDAS_US or last > _PANDAS_US:
        return None
    return [(_EPOCH_NAIVE + _US * (int(ts[-1]) + step * k)).isoformat() for k in range(1, horizon + 1)]


def _off_phase(ts: pd.DatetimeIndex, off, origin: pd.Timestamp | None) -> np.ndarray:
    """Positions of timestamps that are off the model's grid: a fixed step counted from `origin` (the
    first timestamp it trained on), or, for a day or longer with no origin known, midnight."""
    try:
        step = pd.Timedelta(off)
    except (ValueError, TypeError):
        step = None  # calendar steps: months, business days...
    if origin is not None and step is not None:
        return np.flatnonzero((ts - origin) % step != pd.Timedelta(0))
    if origin is not None:
        return np.flatnonzero(ts - ts.normalize() != origin - origin.normalize())
    if step is None or step >= pd.Timedelta(days=1):
        return np.flatnonzero(ts != ts.normalize())
    return np.array([], dtype=int)  # sub-daily with no origin: any phase


def check_timestamps(
    raw: list[str], where: str, length: int, horizon: int, freq: str | None, grid_origin: str | None = None
) -> list[str]:
    """Check the request's timestamps (one per observation, regular, on the model's grid) and continue them
    `horizon` steps.

    With the model's frequency known, the timestamps must lie on its grid (business days and months
    included) at its phase (a daily model is not asked at 06:30); without it, they must have one
    constant step."""
    if len(raw) != length:
        raise BadRequest(
            422, f"{where}: expected a list of {length} date-time strings (one per observation), got {len(raw)} items"
        )
    fast = _fast_timestamps(raw, horizon, freq, grid_origin)
    if fast is not None:
        return fast
    try:
        # the project's convention: tz-naive UTC (a zone in the request is converted)
        ts = pd.DatetimeIndex(pd.to_datetime(pd.Series(raw), utc=True, format="ISO8601")).tz_localize(None)
    except (ValueError, TypeError, OverflowError) as e:
        raise BadRequest(422, f"{where}: not ISO 8601 date-times ({str(e).splitlines()[0][:120]})") from None
    steps = ts[1:] - ts[:-1]
    off = _offset(freq)
    if len(steps) and (steps <= pd.Timedelta(0)).any():
        i = int(np.flatnonzero(steps <= pd.Timedelta(0))[0]) + 1
        raise BadRequest(422, f"{where}[{i}]: {ts[i]} does not come after {ts[i - 1]}; timestamps must increase")
    if off is not None and freq is not None:  # a known offset comes from a frequency
        try:
            grid = pd.date_range(ts[0], periods=length, freq=off)
            future = future_timestamps(ts[-1], freq, horizon)
        except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
            raise BadRequest(
                422,
                f"{where}: {ts[0]} .. {ts[-1]} continued {horizon} steps of {freq} leaves "
                "the calendar pandas can represent",
            ) from None
        off_grid = np.flatnonzero(grid != ts)
        if len(off_grid):
            if len(set(steps)) == 1:
                raise BadRequest(422, f"{where}: step {steps[0]} does not match the model's frequency {freq}")
            i = int(off_grid[0])
            raise BadRequest(
                422,
                f"{where}[{i}]: {ts[i]} breaks the regular {freq} steps from {ts[0]} (expected "
                f"{grid[i]}; {len(off_grid)} timestamps off the grid)",
            )
        try:
            origin = pd.Timestamp(grid_origin).tz_localize(None) if grid_origin else None
        except (ValueError, TypeError):
            origin = None
        phase = _off_phase(ts, off, origin)
        if len(phase):
            i = int(phase[0])
            anchor = f"counted from {origin}" if origin is not None else "at midnight"
            raise BadRequest(
                422,
                f"{where}[{i}]: {ts[i]} is off the model's {freq} grid ({anchor}; "
                f"{len(phase)} timestamps off it): send the observations' own timestamps",
            )
    else:
        if not len(steps):
            raise BadRequest(422, f"{where}: cannot tell the step from one timestamp and the model has no frequency")
        irregular = np.flatnonzero(steps != steps[0])
        if len(irregular):
            i = int(irregular[0]) + 1
            raise BadRequest(
                422,
                f"{where}[{i}]: step {steps[i - 1]} breaks the regular step {steps[0]} "
                f"({len(irregular)} irregular steps)",
            )
        try:
            future = pd.DatetimeIndex([ts[-1] + steps[0] * (k + 1) for k in range(horizon)])
        except (OverflowError, pd.errors.OutOfBoundsDatetime):
            raise BadRequest(
                422, f"{where}: continuing {ts[-1]} {horizon} steps leaves the calendar pandas can represent"
            ) from None
    return [t.isoformat() for t in future]


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
