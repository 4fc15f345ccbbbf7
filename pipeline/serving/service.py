"""The forecasting service: FastAPI + uvicorn, following the registry's champion alias.

    POST /v1/forecast   {"timestamps": [...optional...], "values": {"Demand": [...], ...}}
                        or {"instances": [{...}, {...}]} for several series at once
    GET  /health        200 when a model is loaded
    GET  /model         what serves: name, version, alias, provider, loaded_at, shapes, last_error

Where the model comes from is pluggable: a `ModelSource` is any callable returning
(onnx_path, version_info); the default asks the registry for `NAME-forecaster@champion`.
A background poller calls it every `poll_seconds`; a new version is loaded and smoke-tested
completely before one reference is swapped, so every request sees either the old model or the new
one, never a mix, and a version that fails to load is reported (/model `last_error`, a log line)
while the old one keeps serving. Only ONNX files are loaded (no pickles).
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..errors import CellcastError
from ..engine.inference import OnnxForecaster

log = logging.getLogger(__name__)

ModelSource = Callable[[], tuple[Path, Any]]
TOKEN_ENV = "CELLCAST_API_TOKEN"


def registry_source(settings: Settings, alias: str = "champion") -> ModelSource:
    """The default source: the registry's `alias` of this dataset's model, downloaded as ONNX."""

    def source() -> tuple[Path, Any]:
        from ..registry import tracking  # imported on first use: mlflow costs seconds to import

        return tracking.download_model(settings.model_name, alias)

    return source


def _version_of(info: Any) -> str:
    return str(getattr(info, "version", info))


@dataclass(frozen=True)
class Loaded:
    """One loaded model version; immutable, replaced as a whole on a swap."""

    engine: OnnxForecaster
    info: Any
    version: str
    path: Path
    loaded_at: datetime


@dataclass
class ModelHolder:
    """The model that serves, and the poller that replaces it when the source names a new version."""

    source: ModelSource
    device: str = "auto"
    threads: int | None = None
    cpu_batch_threshold: int | None = None
    require_gpu: bool = False
    current: Loaded | None = None
    last_error: str | None = None
    last_check: datetime | None = None
    swaps: int = 0
    _failed: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self, raise_errors: bool = False) -> bool:
        """Ask the source; load, smoke-test and swap in a new version. True when a swap happened."""
        with self._lock:  # one refresh at a time; requests never take this lock
            self.last_check = datetime.now(timezone.utc)
            version = None
            cur = self.current
            try:
                path, info = self.source()
                version = _version_of(info)
                if cur is not None and cur.version == version and cur.path == Path(path):
                    return False
                if version == self._failed and not raise_errors:
                    return False  # reported already; retried when the source names another version
                engine = OnnxForecaster.from_path(path, device=self.device, threads=self.threads,
                                                  cpu_batch_threshold=self.cpu_batch_threshold,
                                                  require_gpu=self.require_gpu)
                engine.smoke_test()
            except Exception as e:
                what = f"version {version}" if version is not None else "model source"
                self.last_error = f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}: {what}: {e}"
                if version is not None:
                    self._failed = version
                if raise_errors:
                    raise
                log.error("not swapped in, %s keeps serving: %s", f"version {cur.version}" if cur else "nothing",
                          self.last_error)
                return False
            old = self.current
            self.current = Loaded(engine, info, version, Path(path), engine.loaded_at)  # the atomic swap
            self.swaps += int(old is not None)
            self._failed = None
            log.info("serving version %s (%s) on %s%s", version, path, engine.provider,
                     f", replacing version {old.version}" if old else "")
            return True

    def poll(self, stop: threading.Event, every_s: float) -> None:
        while not stop.wait(every_s):
            try:
                self.refresh()
            except Exception:  # the poller must outlive any surprise; the error is in last_error/log
                log.exception("model poll failed")


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


def future_timestamps(raw: Any, where: str, length: int, horizon: int, freq: str | None) -> list[str]:
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
        future = pd.date_range(ts[-1], periods=horizon + 1, freq=off)[1:]
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
        future = future_timestamps(obj["timestamps"], f"{where}.timestamps", engine.lookback, engine.horizon,
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


def _forecast_json(y: np.ndarray, stamps: list[str] | None, targets: list[str]) -> dict:
    return {"timestamps": stamps, "forecast": {t: [float(v) for v in y[:, j]] for j, t in enumerate(targets)}}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def create_app(settings: Settings, *, source: ModelSource | None = None, alias: str = "champion",
               device: str = "auto", token: str | None = None, poll_seconds: float | None = None,
               max_body_bytes: int | None = None, threads: int | None = None,
               cpu_batch_threshold: int | None = None, require_gpu: bool = False) -> FastAPI:
    """The service app. The first model is loaded now (a failure raises, one line); the poller starts
    with the app and stops with it. token: required as `Authorization: Bearer ...` (default $CELLCAST_API_TOKEN)."""
    holder = ModelHolder(source or registry_source(settings, alias), device=device, threads=threads,
                         cpu_batch_threshold=cpu_batch_threshold, require_gpu=require_gpu)
    holder.refresh(raise_errors=True)
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    poll_s = poll_seconds if poll_seconds is not None else settings.serve.poll_seconds
    max_body = max_body_bytes or settings.serve.max_body_bytes
    name = settings.model_name
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        poller = threading.Thread(target=holder.poll, args=(stop, poll_s), name="cellcast-model-poller", daemon=True)
        poller.start()
        try:
            yield
        finally:
            stop.set()
            poller.join(timeout=10)

    app = FastAPI(title="cellcast forecasting service", lifespan=lifespan)
    app.state.holder = holder

    def unauthorized(request: Request) -> JSONResponse | None:
        if token is None:
            return None
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return _error(401, "missing or wrong bearer token (header 'Authorization: Bearer <token>')",
                          {"WWW-Authenticate": "Bearer"})
        return None

    @app.get("/health")
    def health():
        cur = holder.current
        if cur is None:
            return _error(503, "no model loaded")
        return {"status": "ok", "model": name, "version": cur.version}

    @app.get("/model")
    def model_info(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        cur = holder.current
        if cur is None:
            return _error(503, f"no model loaded; last error: {holder.last_error}")
        e = cur.engine
        return {"name": getattr(cur.info, "name", None) or name, "version": cur.version, "alias": alias,
                "run_id": getattr(cur.info, "run_id", None), "provider": e.provider,
                "cpu_batch_threshold": e.cpu_batch_threshold, "loaded_at": cur.loaded_at.isoformat(),
                "lookback": e.lookback, "horizon": e.horizon, "variables": e.variables, "targets": e.targets,
                "freq": e.metadata.get("freq"), "cell": e.metadata.get("cell"), "dataset": e.metadata.get("dataset"),
                "swaps": holder.swaps, "last_check": holder.last_check and holder.last_check.isoformat(),
                "last_error": holder.last_error}

    @app.post("/v1/forecast")
    async def forecast(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            body = await _read_body(request, max_body)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise BadRequest(415, f"content type '{ctype or 'none'}': send JSON with 'Content-Type: application/json'")
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                raise BadRequest(400, f"body: not valid JSON ({str(e).splitlines()[0][:120]})") from None
            cur = holder.current  # read once: this request uses one version from parsing to answer
            if cur is None:
                return _error(503, "no model loaded")
            batch, whens, single = parse_request(payload, cur.engine)
        except BadRequest as e:
            return _error(e.status, e.message)
        t0 = time.perf_counter()
        y, used = await run_in_threadpool(cur.engine.predict_with_provider, batch)
        out = {"model": {"name": name, "version": cur.version, "alias": alias}, "provider": used,
               "horizon": cur.engine.horizon, "latency_ms": round(1e3 * (time.perf_counter() - t0), 3)}
        items = [_forecast_json(y[i], whens[i], cur.engine.targets) for i in range(len(y))]
        if single:
            out.update(items[0])
        else:
            out["forecasts"] = items
        return out

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BadRequest(413, f"body: {declared} bytes is over the limit of {limit} bytes (serve.max_body_bytes)")
        except ValueError:
            raise BadRequest(400, "Content-Length: not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies that declare no length
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"body: over the limit of {limit} bytes (serve.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


class ServerThread:
    """A real uvicorn server on 127.0.0.1 in a background thread (tests, benchmarks); port 0 = a free one."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                                    lifespan="on", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="cellcast-uvicorn", daemon=True)
        self.host = host

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None, **app_options) -> None:
    """Run the service in the foreground until interrupted (`cellcast serve NAME`)."""
    import uvicorn

    app = create_app(settings, **app_options)
    host = host or settings.serve.host
    port = settings.serve.port if port is None else port
    cur = app.state.holder.current
    log.info("serving %s version %s on http://%s:%d", settings.model_name, cur.version, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
