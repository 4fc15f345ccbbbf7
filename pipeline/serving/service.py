"""The forecasting service: FastAPI + uvicorn, following the registry's champion alias.

    POST /v1/forecast   {"timestamps": [...optional...], "values": {"Demand": [...], ...},
                         "future": {"WorkDay": [...horizon values...]}}   (known-future columns the model reads)
                        or {"instances": [{...}, {...}]} for several series at once; the answer holds the
                        point forecast and, for a model with quantiles, each level's
    GET  /health        200 when a model is loaded
    GET  /model         what serves: name, version, alias, provider, loaded_at, shapes, last_error
    GET  /metrics       Prometheus metrics: requests by status, latency, the model version and provider, swaps

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
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from .metrics import ServiceMetrics
from .problems import BadRequest
from .requests import (
    F32_MAX,
    Batch,
    BatchResponse,
    ForecastResponse,
    Problem,
    Series,
    forecast_json,
    model_bounds,
    parse_body,
    unscale,
)
from .swap import ModelHolder, ModelSource, registry_source

log = logging.getLogger(__name__)

TOKEN_ENV = "CELLCAST_API_TOKEN"
# a request whose forecast should take at most this long (series x the model's one-series time, measured at load)
# runs on the event loop; a longer one in a worker thread, so the loop keeps answering others meanwhile
INLINE_S = 0.0004


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _responses(*codes: int) -> dict:
    why = {
        400: "not JSON",
        401: "missing or wrong bearer token",
        413: "body over serve.max_body_bytes",
        415: "not application/json",
        422: "a field breaks a rule (the detail names it)",
        503: "no model loaded",
    }
    return {c: {"model": Problem, "description": why[c]} for c in codes}


def _describe_model(series: dict, engine) -> None:
    """Series' schema for this model: each variable an array of exactly `lookback` numbers (within its
    training bounds when the model carries them), timestamps as many. The grid of the timestamps has no
    JSON Schema; it is checked (422) when the request comes."""
    bounds = model_bounds(engine)
    n = engine.lookback
    props = {}
    for v in engine.variables:
        item = {"type": "number", "minimum": -F32_MAX, "maximum": F32_MAX}
        if v in bounds:
            item["minimum"], item["maximum"] = bounds[v]
        props[v] = {"type": "array", "items": item, "minItems": n, "maxItems": n}
    series["properties"]["values"] = {
        "type": "object",
        "properties": props,
        "required": list(engine.variables),
        "additionalProperties": False,
        "description": series["properties"]["values"].get("description", ""),
    }
    stamps = {"type": "array", "items": {"type": "string", "format": "date-time"}, "minItems": n, "maxItems": n}
    calendar = any(k == "calendar" for k in engine.future_kinds)
    series["properties"]["timestamps"] = {
        **({} if calendar else {"anyOf": [stamps, {"type": "null"}], "default": None}),
        **(stamps if calendar else {}),
        "description": series["properties"]["timestamps"].get("description", ""),
    }
    user = [c for c, k in zip(engine.future_names, engine.future_kinds) if k == "user"]
    h = engine.horizon
    future = {
        "type": "object",
        "additionalProperties": False,
        "required": user,
        "properties": {
            c: {
                "type": "array",
                "minItems": h,
                "maxItems": h,
                "items": {
                    "type": "number",
                    "minimum": bounds.get(c, (-F32_MAX, F32_MAX))[0],
                    "maximum": bounds.get(c, (-F32_MAX, F32_MAX))[1],
                },
            }
            for c in user
        },
        "description": series["properties"]["future"].get("description", ""),
    }
    series["properties"]["future"] = (
        future if user else {"type": "null", "default": None, "description": "this model reads no user-supplied future"}
    )
    panel = engine.metadata.get("panel")
    if panel is not None:  # each series in its own scale: the id names it
        series["properties"]["id"] = {
            "type": "string",
            "enum": list(panel["series"]),
            "description": series["properties"]["id"].get("description", ""),
        }
    else:
        series["properties"]["id"] = {
            "type": "null",
            "default": None,
            "description": "this model was trained on one series: no id",
        }
    series["required"] = [
        "values",
        *(["timestamps"] if calendar else []),
        *(["future"] if user else []),
        *(["id"] if panel is not None else []),
    ]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass
class _Service:
    """What the routes share: the model that serves, its registry name and alias, the metrics, the limits."""

    holder: ModelHolder
    metrics: ServiceMetrics
    name: str
    alias: str
    token: str | None
    max_body: int


def _service(request: Request) -> _Service:
    return request.app.state.service


async def require_token(request: Request) -> None:
    """The routes that answer with the model or its data need `Authorization: Bearer <token>` when a token is set
    (async: a plain function would send every request through the thread pool)."""
    token = _service(request).token
    if token is None:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise BadRequest(401, "missing or wrong bearer token (header 'Authorization: Bearer <token>')")


# open: a load balancer's health check and Prometheus' scrape, without the token; they name the version, never data
open_routes = APIRouter()
# the model and its forecasts: behind the token when one is set
model_routes = APIRouter(dependencies=[Depends(require_token)])


@open_routes.get("/health", responses=_responses(503))
def health(request: Request):
    svc = _service(request)
    cur = svc.holder.current
    if cur is None:
        return _error(503, "no model loaded")
    return {"status": "ok", "model": svc.name, "version": cur.version}


@open_routes.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def prometheus_metrics(request: Request):
    body, ctype = _service(request).metrics.exposition()
    return Response(body, media_type=ctype)


@model_routes.get("/model", responses=_responses(401, 503))
def model_info(request: Request):
    svc = _service(request)
    holder = svc.holder
    cur = holder.current
    if cur is None:
        return _error(503, f"no model loaded; last error: {holder.last_error}")
    e = cur.engine
    return {
        "name": getattr(cur.info, "name", None) or svc.name,
        "version": cur.version,
        "alias": svc.alias,
        "run_id": getattr(cur.info, "run_id", None),
        "provider": e.provider,
        "cpu_batch_threshold": e.cpu_batch_threshold,
        "loaded_at": cur.loaded_at.isoformat(),
        "lookback": e.lookback,
        "horizon": e.horizon,
        "variables": e.variables,
        "targets": e.targets,
        "freq": e.metadata.get("freq"),
        "cell": e.metadata.get("cell"),
        "dataset": e.metadata.get("dataset"),
        "quantiles": e.quantiles,
        "calendar": e.calendar if e.future_name else None,
        "future": [{"name": n, "kind": k} for n, k in zip(e.future_names, e.future_kinds, strict=True)],
        **(
            {"id_cols": e.metadata["panel"].get("id_cols"), "series": list(e.metadata["panel"]["series"])}
            if "panel" in e.metadata
            else {}
        ),
        "swaps": holder.swaps,
        "last_check": holder.last_check and holder.last_check.isoformat(),
        "last_error": holder.last_error,
    }


# the body is read by hand (size limit, content type, one-line errors); its schema is declared here so the
# OpenAPI document describes it (and schemathesis can generate requests from it)
_BODY_SCHEMA = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [_ref("Series"), _ref("Batch")]}}},
}
_OK = {
    "description": "the forecast (one series) or forecasts (instances)",
    "content": {"application/json": {"schema": {"oneOf": [_ref("ForecastResponse"), _ref("BatchResponse")]}}},
}


@model_routes.post(
    "/v1/forecast",
    openapi_extra={"requestBody": _BODY_SCHEMA},
    responses={200: _OK, **_responses(400, 401, 413, 415, 422, 503)},
)
async def forecast(request: Request):
    svc = _service(request)
    body = await _read_body(request, svc.max_body)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise BadRequest(415, f"content type '{ctype or 'none'}': send JSON with 'Content-Type: application/json'")
    cur = svc.holder.current  # read once: this request uses one version from parsing to answer
    if cur is None:
        return _error(503, "no model loaded")
    batch, whens, single, future, ids, scales = parse_body(body, cur.engine)
    t0 = time.perf_counter()
    if len(batch) * cur.batch1_s <= INLINE_S:
        # a forecast well under a millisecond: the hop to the thread pool and back costs more than it does
        y, q, used = cur.engine.predict_all(batch, future)
    else:
        y, q, used = await run_in_threadpool(cur.engine.predict_all, batch, future)
    if scales is not None:  # a panel model answers in each series' scale
        y = unscale(cur.engine, y, *scales)
        q = None if q is None else unscale(cur.engine, q, *scales)
    if not np.isfinite(y).all():
        # finite inputs far outside what the model saw can overflow inside it; JSON has no NaN
        bad = sorted({i for i in range(len(y)) if not np.isfinite(y[i]).all()})
        return _error(
            422,
            f"{'body' if single else f'instances[{bad[0]}]'}: the model's forecast is not finite "
            f"for these values (far outside its training data?); {len(bad)} such series",
        )
    out = {
        "model": {"name": svc.name, "version": cur.version, "alias": svc.alias},
        "provider": used,
        "horizon": cur.engine.horizon,
        "latency_ms": round(1e3 * (time.perf_counter() - t0), 3),
    }
    items = [
        forecast_json(
            y[i],
            whens[i],
            cur.engine.targets,
            None if q is None else q[i],
            cur.engine.quantiles,
            None if ids is None else ids[i],
        )
        for i in range(len(y))
    ]
    if single:
        out.update(items[0])
    else:
        out["forecasts"] = items
    # the same JSON FastAPI would write for the dict (finite floats, checked above), without its encoder's walk
    return Response(orjson.dumps(out), media_type="application/json")


def _refused(request: Request, e: Exception) -> Response:
    """Every BadRequest, raised by a route or by the token check, as the one-line JSON refusal."""
    assert isinstance(e, BadRequest)
    return _error(e.status, e.message, {"WWW-Authenticate": "Bearer"} if e.status == 401 else None)


def create_app(
    settings: Settings,
    *,
    source: ModelSource | None = None,
    alias: str = "champion",
    device: str = "auto",
    token: str | None = None,
    poll_seconds: float | None = None,
    max_body_bytes: int | None = None,
    threads: int | None = None,
    cpu_batch_threshold: int | None = None,
    require_gpu: bool = False,
) -> FastAPI:
    """The service app. The first model is loaded now (a failure raises, one line); the poller starts
    with the app and stops with it. token: required as `Authorization: Bearer ...` (default $CELLCAST_API_TOKEN)."""
    holder = ModelHolder(
        source or registry_source(settings, alias),
        device=device,
        threads=threads,
        cpu_batch_threshold=cpu_batch_threshold,
        require_gpu=require_gpu,
    )
    holder.refresh(raise_errors=True)
    poll_s = poll_seconds if poll_seconds is not None else settings.serve.poll_seconds
    name = settings.model_name
    stop = threading.Event()
    metrics = ServiceMetrics({"/v1/forecast", "/health", "/model", "/metrics", "/openapi.json", "/docs"})
    holder.listeners.append(lambda h: metrics.model_changed(h, name, alias))
    metrics.model_changed(holder, name, alias)

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
    app.state.service = _Service(
        holder=holder,
        metrics=metrics,
        name=name,
        alias=alias,
        token=token if token is not None else os.environ.get(TOKEN_ENV) or None,
        max_body=max_body_bytes or settings.serve.max_body_bytes,
    )
    app.state.openapi_version = None
    app.add_middleware(lambda inner: metrics.middleware(inner))
    app.add_exception_handler(BadRequest, _refused)
    app.include_router(open_routes)
    app.include_router(model_routes)

    def openapi() -> dict:
        # the body's schema names the variables and lengths of the model serving now: rebuilt after a swap
        cur = holder.current
        key = cur.version if cur is not None else None
        if app.openapi_schema is None or app.state.openapi_version != key:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            defs = TypeAdapter(Series | Batch | ForecastResponse | BatchResponse).json_schema(
                ref_template="#/components/schemas/{model}"
            )["$defs"]
            if cur is not None:
                _describe_model(defs["Series"], cur.engine)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            app.openapi_schema, app.state.openapi_version = schema, key
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented hook for a custom schema
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BadRequest(
                    413, f"body: {declared} bytes is over the limit of {limit} bytes (serve.max_body_bytes)"
                )
        except ValueError:
            raise BadRequest(400, "Content-Length: not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies that declare no length
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"body: over the limit of {limit} bytes (serve.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


SERVE_ENV = "CELLCAST_SERVE"  # a worker process's options, JSON: {"dataset": NAME, "alias": ..., "poll_seconds": ...}


def app_from_env() -> FastAPI:
    """The app of one worker process when several serve one port: `cellcast serve NAME --workers N`, or
    `uvicorn --factory ...service:app_from_env`, or gunicorn `'...service:app_from_env()'` (docs/operations.md).
    The dataset and create_app's options come from $CELLCAST_SERVE, params.yaml from $CELLCAST_PARAMS or the
    working directory, the tracking server from $MLFLOW_TRACKING_URI (else the project's embedded store)."""
    from ..config import find_params, load_params
    from ..registry import tracking

    opts = json.loads(os.environ.get(SERVE_ENV) or "{}")
    settings = load_params().for_dataset(opts.pop("dataset", None))
    tracking.configure(find_params().parent, registry=settings.registry)
    return create_app(settings, **opts)


class _UvicornOptions(TypedDict):
    """The uvicorn.run options both launch paths share."""

    host: str
    port: int
    log_level: str
    access_log: bool
    # serve.graceful_shutdown_s: uvicorn annotates it int, but hands it to asyncio.timeout, which takes a float
    timeout_graceful_shutdown: float


def serve(
    settings: Settings, *, host: str | None = None, port: int | None = None, workers: int | None = None, **app_options
) -> None:
    """Run the service in the foreground until SIGINT / SIGTERM (`cellcast serve NAME`). On either, the port
    closes, requests in flight are answered (for up to serve.graceful_shutdown_s), then the process exits.
    workers > 1: that many processes behind the port, each loading and following the model on its own."""
    import uvicorn

    host = host or settings.serve.host
    port = settings.serve.port if port is None else port
    workers = workers or settings.serve.workers
    opts = _UvicornOptions(
        host=host,
        port=port,
        log_level="info",
        access_log=settings.serve.access_log,
        timeout_graceful_shutdown=settings.serve.graceful_shutdown_s,
    )
    if workers > 1:
        from ..config import find_params

        if app_options.pop("source", None) is not None:
            log.info("several workers: each follows the registry alias itself")
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            log.warning(
                "%d workers without PROMETHEUS_MULTIPROC_DIR: each /metrics scrape shows the counts of the "
                "one worker that answers it (docs/operations.md)",
                workers,
            )
        os.environ[SERVE_ENV] = json.dumps({"dataset": settings.dataset, **app_options})
        os.environ.setdefault("CELLCAST_PARAMS", str(find_params().resolve()))
        log.info("serving %s with %d worker processes on http://%s:%d", settings.model_name, workers, host, port)
        uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **opts)  # type: ignore[arg-type]  # see _UvicornOptions
        return
    app = create_app(settings, **app_options)
    cur = app.state.service.holder.current
    log.info("serving %s version %s on http://%s:%d", settings.model_name, cur.version, host, port)
    uvicorn.run(app, **opts)  # type: ignore[arg-type]  # see _UvicornOptions
