"""The forecasting service: FastAPI + uvicorn, following the registry's champion alias.

    POST /v1/forecast   {"timestamps": [...optional...], "values": {"Demand": [...], ...}}
                        or {"instances": [{...}, {...}]} for several series at once
    GET  /health        200 when a model is loaded
    GET  /model         what serves: name, version, alias, provider, loaded_at, shapes, last_error

The model that serves follows a registry alias through `swap.ModelHolder` (an atomic swap after a
load and a smoke forecast); requests are checked in `requests`.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from .requests import BadRequest, forecast_json, parse_request
from .swap import ModelHolder, ModelSource, registry_source

log = logging.getLogger(__name__)

TOKEN_ENV = "CELLCAST_API_TOKEN"


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
        items = [forecast_json(y[i], whens[i], cur.engine.targets) for i in range(len(y))]
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


def serve(settings: Settings, *, host: str | None = None, port: int | None = None, **app_options) -> None:
    """Run the service in the foreground until interrupted (`cellcast serve NAME`)."""
    import uvicorn

    app = create_app(settings, **app_options)
    host = host or settings.serve.host
    port = settings.serve.port if port is None else port
    cur = app.state.holder.current
    log.info("serving %s version %s on http://%s:%d", settings.model_name, cur.version, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
