"""The forecasting service: FastAPI + uvicorn, each model following its registry alias (champion by default).

    POST /v1/forecast   {"timestamps": [...optional...], "values": {"Demand": [...], ...},
                         "future": {"WorkDay": [...horizon values...]}}   (known-future columns the model reads)
                        or {"instances": [{...}, {...}]} for several series at once; the answer holds the
                        point forecast and, for a model with quantiles, each level's (one model served)
    POST /v1/models/{name}/forecast   the same for model `name` (its dataset's name or its registered name)
    GET  /v1/models     every model served: name, version, alias, provider, loaded_at, loaded, challenger
    GET  /v1/models/{name}, GET /model (one model served)   what serves: version, provider, shapes, last_error
    GET  /health        200 when the models are loaded (or, lazily, not yet asked for)
    GET  /metrics       Prometheus metrics: requests by status, latency, the model versions and providers, swaps,
                        memory per model, answers per version and role, canary requests the challenger could not read

Each model follows its alias through its own `swap.ModelHolder` (an atomic swap after a load and a smoke
forecast), one poller thread for all; requests are checked in `requests`. With serve.shadow or serve.canary, the
`challenger` alias is followed too: shadow answers each request again off its path (one worker thread, a bounded
queue), canary answers a stable-hash share of requests with it. Every answer goes to the live log (`livelog`).
Every answer of a forecast route, refusals included, carries an X-Request-Id; a refusal is logged with it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

import numpy as np
import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from ..catalog import live_dir
from ..config import Settings
from ..errors import ConfigError
from .livelog import Answer, LiveLog
from .metrics import ServiceMetrics, route_label
from .problems import BadRequest
from .requests import (
    F32_MAX,
    Batch,
    BatchResponse,
    ForecastResponse,
    Parsed,
    Problem,
    Series,
    forecast_json,
    model_bounds,
    parse_body,
    unscale,
)
from .swap import Loaded, ModelHolder, ModelSource, registry_source

log = logging.getLogger(__name__)

TOKEN_ENV = "CELLCAST_API_TOKEN"
CHALLENGER = "challenger"  # the registry's alias of a version waiting for promotion (registry/tracking)
# a request whose forecast should take at most this long (series x the model's one-series time, measured at load)
# runs on the event loop; a longer one in a worker thread, so the loop keeps answering others meanwhile
INLINE_S = 0.0004


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _responses(*codes: int) -> dict:
    why = {
        400: "not JSON (or, with several models served, a one-model route)",
        401: "missing or wrong bearer token",
        404: "no model of that name is served (GET /v1/models lists them)",
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
class _Model:
    """One served dataset: the version under the followed alias and, with shadow or canary on, the challenger."""

    dataset: str
    name: str  # the registered model
    alias: str  # the alias followed (the role of its answers)
    settings: Settings
    holder: ModelHolder
    challenger: ModelHolder | None  # None: neither shadow nor canary is on for this model
    wanted: bool  # loaded, or asked for since (lazy loading): the poller follows its aliases

    def load(self) -> Loaded:
        """The followed version, loaded now if it is not yet (a lazy model's first request); the challenger with
        it. Runs in a worker thread: a load takes a second."""
        self.wanted = True
        cur = self.holder.ensure_loaded()
        if self.challenger is not None and self.challenger.last_check is None:
            self.challenger.refresh()
        return cur

    def challenger_now(self, cur: Loaded) -> Loaded | None:
        """The challenger to compare with `cur`: None when there is none, or it is the same version."""
        ch = self.challenger.current if self.challenger is not None else None
        return None if ch is None or ch.version == cur.version else ch


@dataclass
class _Service:
    """What the routes share: the models that serve (by dataset), the metrics, the limits, the live log and the
    shadow worker (both started with the app)."""

    models: dict[str, _Model]
    metrics: ServiceMetrics
    token: str | None
    max_body: int
    live: LiveLog | None = None
    shadow: _Shadow | None = None

    @property
    def single(self) -> bool:
        return len(self.models) == 1

    @property
    def first(self) -> _Model:
        return next(iter(self.models.values()))

    @property
    def holder(self) -> ModelHolder:  # the one-model service's model
        return self.first.holder

    def model(self, name: str) -> _Model:
        """A served model by its dataset name or its registered name; else a one-line 404."""
        m = self.models.get(name)
        if m is not None:
            return m
        for m in self.models.values():
            if m.name == name:
                return m
        names = list(self.models)
        listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise BadRequest(404, f"model '{name[:80]}': not served here (serving {listed}; GET /v1/models)")


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
    if svc.single:
        cur = svc.holder.current
        if cur is None:
            return _error(503, "no model loaded")
        return {"status": "ok", "model": svc.first.name, "version": cur.version}
    # several: healthy while every model that was loaded (or asked for) has a version serving
    down = [m.dataset for m in svc.models.values() if m.wanted and m.holder.current is None]
    if down:
        return _error(503, f"no version loaded for {', '.join(down[:10])} ({len(down)} of {len(svc.models)} models)")
    versions = {m.dataset: m.holder.current.version if m.holder.current else None for m in svc.models.values()}
    return {"status": "ok", "models": versions}


@open_routes.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def prometheus_metrics(request: Request):
    body, ctype = _service(request).metrics.exposition()
    return Response(body, media_type=ctype)


def _several(svc: _Service, route: str) -> None:
    if not svc.single:
        raise BadRequest(
            400, f"{len(svc.models)} models are served here: use {route} (GET /v1/models lists their names)"
        )


async def _loaded(m: _Model) -> Loaded:
    cur = m.holder.current
    if cur is not None:
        return cur
    try:
        return await run_in_threadpool(m.load)
    except Exception as e:
        raise BadRequest(503, f"model '{m.dataset}': no version loaded: {str(e).splitlines()[0][:300]}") from None


def _describe(m: _Model, cur: Loaded) -> dict:
    """/model and /v1/models/{name}: what serves."""
    holder, e = m.holder, cur.engine
    ch = m.challenger.current if m.challenger is not None else None
    return {
        "name": getattr(cur.info, "name", None) or m.name,
        "dataset": e.metadata.get("dataset"),
        "version": cur.version,
        "alias": m.alias,
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
        "memory": {"onnx_file_bytes": cur.file_bytes, "rss_delta_bytes": cur.rss_delta_bytes},
        "shadow": m.settings.serve.shadow,
        "canary": m.settings.serve.canary,
        "challenger": None if ch is None else {"version": ch.version, "loaded_at": ch.loaded_at.isoformat()},
    }


@model_routes.get("/model", responses=_responses(400, 401, 503))
def model_info(request: Request):
    svc = _service(request)
    _several(svc, "GET /v1/models/{name}")
    holder = svc.holder
    cur = holder.current
    if cur is None:
        return _error(503, f"no model loaded; last error: {holder.last_error}")
    return _describe(svc.first, cur)


@model_routes.get("/v1/models", responses=_responses(401))
def list_models(request: Request):
    """Every model this service serves: its dataset name, registered name, the version under its alias (null until
    a lazy model's first request), provider, when it was loaded, and its challenger's version when one serves."""
    out = []
    for m in _service(request).models.values():
        cur = m.holder.current
        ch = m.challenger.current if m.challenger is not None else None
        out.append(
            {
                "name": m.dataset,
                "model": m.name,
                "alias": m.alias,
                "loaded": cur is not None,
                "version": cur and cur.version,
                "provider": cur and cur.engine.provider,
                "loaded_at": cur and cur.loaded_at.isoformat(),
                "last_error": m.holder.last_error,
                "challenger": None if ch is None else {"version": ch.version, "provider": ch.engine.provider},
                "shadow": m.settings.serve.shadow,
                "canary": m.settings.serve.canary,
            }
        )
    return {"models": out}


@model_routes.get("/v1/models/{name}", responses=_responses(401, 404, 503))
async def one_model(request: Request, name: str):
    m = _service(request).model(name)
    return _describe(m, await _loaded(m))


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
    _several(svc, "POST /v1/models/{name}/forecast")
    return await _forecast(request, svc, svc.first)


@model_routes.post(
    "/v1/models/{name}/forecast",
    openapi_extra={"requestBody": _BODY_SCHEMA},
    responses={200: _OK, **_responses(400, 401, 404, 413, 415, 422, 503)},
)
async def model_forecast(request: Request, name: str):
    svc = _service(request)
    return await _forecast(request, svc, svc.model(name))


def canary_share(key: bytes, model: str) -> float:
    """A request's place in [0, 1): a stable hash of its key (the X-Cellcast-Key header, else the body) and the
    model, so a client that sends the same key always meets the same version."""
    digest = hashlib.sha256(model.encode() + b"\0" + key).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


KEY_HEADER = "x-cellcast-key"


def _predict(cur: Loaded, parsed: Parsed, single: bool) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The forecast of a parsed request, in each series' own scale; a non-finite answer is a 422."""
    y, q, used = cur.engine.predict_all(parsed.batch, parsed.future)
    if parsed.scales is not None:  # a panel model answers in each series' scale
        y = unscale(cur.engine, y, *parsed.scales)
        q = None if q is None else unscale(cur.engine, q, *parsed.scales)
    if not np.isfinite(y).all():
        # finite inputs far outside what the model saw can overflow inside it; JSON has no NaN
        bad = sorted({i for i in range(len(y)) if not np.isfinite(y[i]).all()})
        raise BadRequest(
            422,
            f"{'body' if single else f'instances[{bad[0]}]'}: the model's forecast is not finite "
            f"for these values (far outside its training data?); {len(bad)} such series",
        )
    return y, q, used


def _answer(m: _Model, cur: Loaded, role: str, served: bool, request_id: str, parsed: Parsed, y, q) -> Answer:
    e = cur.engine
    return Answer(
        request_id=request_id,
        logged_at=datetime.now(UTC),
        model=m.name,
        dataset=m.dataset,
        version=cur.version,
        role=role,
        served=served,
        y=y,
        q=q,
        targets=tuple(e.targets),
        levels=tuple(e.quantiles or ()) if q is not None else (),
        stamps=parsed.stamps,
        origins=parsed.origins or [None] * len(y),
        ids=parsed.ids,
    )


REQUEST_ID = "X-Request-Id"
FORECAST_ROUTES = frozenset({"/v1/forecast", "/v1/models/{name}/forecast"})


def _request_id(request: Request) -> str | None:
    """A forecast route's request id (made when first asked for, one per request): the X-Request-Id of its answer,
    refusals included, the `request_id` of its live log rows and of its refusal's log line. None on other routes."""
    path = request.url.path
    if path not in FORECAST_ROUTES and route_label(path) not in FORECAST_ROUTES:
        return None
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = uuid.uuid4().hex
    return rid


async def _forecast(request: Request, svc: _Service, m: _Model) -> Response:
    body = await _read_body(request, svc.max_body)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise BadRequest(415, f"content type '{ctype or 'none'}': send JSON with 'Content-Type: application/json'")
    cur = m.holder.current  # read once: this request uses one version from parsing to answer
    if cur is None:
        if not svc.single:
            cur = await _loaded(m)
        else:
            raise BadRequest(503, "no model loaded")
    role, use = m.alias, cur
    ch = m.challenger_now(cur)
    canary = m.settings.serve.canary
    parsed, refused_by = None, None  # refused_by: a canary challenger that could not read the request
    if ch is not None and canary > 0:
        key = request.headers.get(KEY_HEADER)
        if canary_share(key.encode() if key is not None else body, m.name) < canary:
            try:
                parsed, role, use = parse_body(body, ch.engine), "challenger", ch
            except BadRequest:  # a challenger with another interface: this request stays with the champion
                refused_by = ch
    if parsed is None:
        parsed = parse_body(body, cur.engine)
        if refused_by is not None:  # counted once the champion reads it: a request neither reads is only a refusal
            svc.metrics.canary_fallbacks.labels(m.name, refused_by.version).inc()
    single = parsed.single
    t0 = time.perf_counter()
    if len(parsed.batch) * use.batch1_s <= INLINE_S:
        # a forecast well under a millisecond: the hop to the thread pool and back costs more than it does
        y, q, used = _predict(use, parsed, single)
    else:
        y, q, used = await run_in_threadpool(_predict, use, parsed, single)
    request_id = _request_id(request) or uuid.uuid4().hex
    out = {
        "model": {"name": m.name, "version": use.version, "alias": role},
        "provider": used,
        "horizon": use.engine.horizon,
        "latency_ms": round(1e3 * (time.perf_counter() - t0), 3),
    }
    items = [
        forecast_json(
            y[i],
            parsed.stamps[i],
            use.engine.targets,
            None if q is None else q[i],
            use.engine.quantiles,
            None if parsed.ids is None else parsed.ids[i],
        )
        for i in range(len(y))
    ]
    if single:
        out.update(items[0])
    else:
        out["forecasts"] = items
    svc.metrics.forecasts.labels(m.name, use.version, role, "true").inc()
    if svc.live is not None and m.settings.serve.live_log:
        svc.live.add(_answer(m, use, role, True, request_id, parsed, y, q))
    if svc.shadow is not None and m.settings.serve.shadow and ch is not None and use is cur:
        svc.shadow.submit(m, ch, body, request_id)
    # the same JSON FastAPI would write for the dict (finite floats, checked above), without its encoder's walk
    return Response(orjson.dumps(out), media_type="application/json", headers={REQUEST_ID: request_id})


class _Shadow:
    """The challenger's answers to requests already answered: one worker thread and a bounded queue, so a shadow
    forecast never delays a response; a full queue drops the job and counts it."""

    def __init__(self, svc: _Service, size: int):
        self.svc = svc
        self.jobs: queue.Queue = queue.Queue(maxsize=size)
        self.thread = threading.Thread(target=self._run, name="cellcast-shadow", daemon=True)
        self.thread.start()

    def submit(self, m: _Model, ch: Loaded, body: bytes, request_id: str) -> None:
        try:
            self.jobs.put_nowait((m, ch, body, request_id))
        except queue.Full:
            self.svc.metrics.shadow_dropped.labels(m.name).inc()

    def close(self) -> None:
        """Answer what is queued, then stop."""
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            m, ch, body, request_id = job
            try:
                parsed = parse_body(body, ch.engine)
                y, q, _ = _predict(ch, parsed, parsed.single)
            except Exception as e:  # the challenger refused what the champion answered: counted, not raised
                self.svc.metrics.shadow_failed.labels(m.name).inc()
                log.debug("shadow forecast of %s v%s failed: %s", m.name, ch.version, e)
                continue
            try:
                self.svc.metrics.forecasts.labels(m.name, ch.version, "challenger", "false").inc()
                if self.svc.live is not None and m.settings.serve.live_log:
                    self.svc.live.add(_answer(m, ch, "challenger", False, request_id, parsed, y, q))
            except Exception:  # the worker must outlive a surprise (close() waits for it to drain the queue)
                log.exception("shadow answer of %s v%s not recorded", m.name, ch.version)


def _refused(request: Request, e: Exception) -> Response:
    """Every BadRequest, raised by a route or by the token check, as the one-line JSON refusal. A forecast route's
    refusal carries its X-Request-Id and is logged with it (one line), so a caller's id finds why."""
    assert isinstance(e, BadRequest)
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
    rid = _request_id(request)
    if rid is not None:
        headers[REQUEST_ID] = rid
        # the path and parts of the message are the client's: escaped, so a line break cannot forge a log line
        path, why = (t.encode("unicode_escape").decode() for t in (request.url.path[:200], e.message))
        log.info("%s %s %d request_id=%s: %s", request.method, path, e.status, rid, why)
    return _error(e.status, e.message, headers or None)


def _poll(models: list[_Model], stop: threading.Event, every_s: float) -> None:
    """One thread follows every model's aliases: those loaded or asked for (a lazy model nobody asked for is not)."""
    while not stop.wait(every_s):
        for m in models:
            for holder in (m.holder, m.challenger):
                if holder is None or not m.wanted:
                    continue
                try:
                    holder.refresh()
                except Exception:  # the poller must outlive any surprise; the error is in last_error/log
                    log.exception("model poll failed")


def create_app(
    settings: Settings | Sequence[Settings],
    *,
    source: ModelSource | None = None,
    sources: Mapping[str, Mapping[str, ModelSource]] | None = None,
    alias: str = "champion",
    device: str = "auto",
    token: str | None = None,
    poll_seconds: float | None = None,
    max_body_bytes: int | None = None,
    threads: int | None = None,
    cpu_batch_threshold: int | None = None,
    require_gpu: bool = False,
) -> FastAPI:
    """The service app for one dataset's model (`settings`) or several (a list: one route per model). Eager
    models are loaded now (a failure raises, one line); lazy ones (serve.load: lazy, several models) on their
    first request. The poller, the live log and the shadow worker start with the app and stop with it.

    source: the one model's source (default: the registry's `alias`); sources: {dataset: {alias: source}} for
    several, or for the challenger (default: the registry). token: required as `Authorization: Bearer ...`
    (default $CELLCAST_API_TOKEN). The service-wide settings (poll, limits, load, shadow queue, live log flush)
    are the first dataset's; shadow, canary and live_log are each model's own."""
    every = _served_settings(settings, source)
    base = every[0]
    metrics = ServiceMetrics({"/v1/forecast", "/health", "/model", "/metrics", "/openapi.json", "/docs", "/v1/models"})
    engine = {
        "device": device,
        "threads": threads,
        "cpu_batch_threshold": cpu_batch_threshold,
        "require_gpu": require_gpu,
    }
    models = _load_models(every, source, sources or {}, alias, metrics, engine)
    service = _Service(
        models=models,
        metrics=metrics,
        token=token if token is not None else os.environ.get(TOKEN_ENV) or None,
        max_body=max_body_bytes or base.serve.max_body_bytes,
    )
    poll_s = poll_seconds if poll_seconds is not None else base.serve.poll_seconds
    app = FastAPI(title="cellcast forecasting service", lifespan=_lifespan(service, every, poll_s))
    app.state.service = service
    app.state.openapi_version = None
    app.add_middleware(lambda inner: metrics.middleware(inner))
    app.add_exception_handler(BadRequest, _refused)
    app.include_router(open_routes)
    app.include_router(model_routes)
    app.openapi = _openapi(app, service)  # type: ignore[method-assign]  # FastAPI's documented hook for a custom schema
    return app


def _served_settings(settings: Settings | Sequence[Settings], source: ModelSource | None) -> list[Settings]:
    """The settings of each served dataset: at least one, none twice, and `source` only with one."""
    every = [settings] if isinstance(settings, Settings) else list(settings)
    if not every:
        raise ConfigError("serve: no model to serve")
    if len({s.dataset for s in every}) != len(every):
        raise ConfigError(f"serve: a dataset named twice ({', '.join(s.dataset for s in every)})")
    if source is not None and len(every) > 1:
        raise ConfigError("serve: `source` is one model's; give each model's as sources={dataset: {alias: source}}")
    return every


def _load_models(
    every: list[Settings],
    source: ModelSource | None,
    sources: Mapping[str, Mapping[str, ModelSource]],
    alias: str,
    metrics: ServiceMetrics,
    engine: dict,
) -> dict[str, _Model]:
    """Each dataset's model following `alias` (and its challenger when it is shadowed or a canary), by dataset; loaded
    now unless the service loads lazily (serve.load: lazy, several models)."""
    lazy = len(every) > 1 and every[0].serve.load == "lazy"

    def hold(src: ModelSource, name: str, role: str, optional: bool = False) -> ModelHolder:
        h = ModelHolder(src, **engine, optional=optional)
        h.listeners.append(lambda h: metrics.model_changed(h, name, role))
        return h

    models: dict[str, _Model] = {}
    for s in every:
        own = sources.get(s.dataset, {})
        followed = source or own.get(alias) or registry_source(s, alias)
        holder = hold(followed, s.model_name, alias)
        challenger = None
        if (s.serve.shadow or s.serve.canary > 0) and alias != CHALLENGER:
            challenger = hold(own.get(CHALLENGER) or registry_source(s, CHALLENGER), s.model_name, CHALLENGER, True)
        m = _Model(s.dataset, s.model_name, alias, s, holder, challenger, wanted=not lazy)
        if not lazy:
            holder.refresh(raise_errors=True)
            if challenger is not None:
                challenger.refresh()
        models[s.dataset] = m
    return models


def _lifespan(service: _Service, every: list[Settings], poll_s: float):
    """What starts with the app and stops with it: the alias poller, the live log, the shadow worker."""
    base = every[0]
    models, metrics = service.models, service.metrics
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        poller = threading.Thread(
            target=_poll, args=(list(models.values()), stop, poll_s), name="cellcast-model-poller", daemon=True
        )
        poller.start()
        if any(s.serve.live_log for s in every):
            by_dataset = {s.dataset: s for s in every}
            service.live = LiveLog(
                lambda d: live_dir(by_dataset[d]),
                flush_s=base.serve.live_log_flush_s,
                keep_days=base.serve.live_log_keep_days,
                on_written=lambda d, n: metrics.live_rows.labels(d).inc(n),
                on_dropped=lambda n: metrics.live_dropped.inc(n),
            )
        if any(m.challenger is not None and m.settings.serve.shadow for m in models.values()):
            service.shadow = _Shadow(service, base.serve.shadow_queue)
        try:
            yield
        finally:
            stop.set()
            poller.join(timeout=10)
            if service.shadow is not None:
                service.shadow.close()
            if service.live is not None:
                service.live.close()

    return lifespan


def _openapi(app: FastAPI, service: _Service):
    """The app's OpenAPI schema, whose request bodies name the variables and lengths of the models serving now."""

    def openapi() -> dict:
        # rebuilt after a swap
        key = tuple(m.holder.current.version if m.holder.current else None for m in service.models.values())
        if app.openapi_schema is None or app.state.openapi_version != key:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            defs = TypeAdapter(Series | Batch | ForecastResponse | BatchResponse).json_schema(
                ref_template="#/components/schemas/{model}"
            )["$defs"]
            if service.single:
                cur = service.holder.current
                if cur is not None:
                    _describe_model(defs["Series"], cur.engine)
            else:
                _per_model_paths(schema, defs, service.models.values())
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            app.openapi_schema, app.state.openapi_version = schema, key
        return app.openapi_schema

    return openapi


def _per_model_paths(schema: dict, defs: dict, models) -> None:
    """Several models: the generic route keeps the generic body; each loaded model gets its own path
    (/v1/models/NAME/forecast) whose body is that model's (variables, lengths, bounds, ids)."""
    template = schema["paths"].get("/v1/models/{name}/forecast", {}).get("post")
    if template is None:
        return
    for m in models:
        cur = m.holder.current
        if cur is None:
            continue
        series, batch = f"Series.{m.dataset}", f"Batch.{m.dataset}"
        defs[series] = copy.deepcopy(defs["Series"])
        _describe_model(defs[series], cur.engine)
        defs[batch] = copy.deepcopy(defs["Batch"])
        defs[batch]["properties"]["instances"]["items"] = _ref(series)
        op = copy.deepcopy(template)
        op["operationId"] = f"forecast_{m.dataset}"
        op["summary"] = f"Forecast with {m.name}"
        op["parameters"] = []
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [_ref(series), _ref(batch)]}}},
        }
        schema["paths"][f"/v1/models/{m.dataset}/forecast"] = {"post": op}


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


SERVE_ENV = "CELLCAST_SERVE"  # a worker process's options, JSON: {"datasets": [NAME, ...], "alias": ..., ...}


def app_from_env() -> FastAPI:
    """The app of one worker process when several serve one port: `cellcast serve NAME --workers N`, or
    `uvicorn --factory ...service:app_from_env`, or gunicorn `'...service:app_from_env()'` (docs/operations.md).
    The datasets and create_app's options come from $CELLCAST_SERVE, params.yaml from $CELLCAST_PARAMS or the
    working directory, the tracking server from $MLFLOW_TRACKING_URI (else the project's embedded store)."""
    from ..config import find_params, load_params
    from ..registry import tracking

    opts = json.loads(os.environ.get(SERVE_ENV) or "{}")
    params = load_params()
    names = opts.pop("datasets", None) or [opts.pop("dataset", None)]
    opts.pop("dataset", None)
    every = [params.for_dataset(n) for n in names]
    tracking.configure(find_params().parent, registry=every[0].registry)
    return create_app(every, **opts)


class _UvicornOptions(TypedDict):
    """The uvicorn.run options both launch paths share."""

    host: str
    port: int
    log_level: str
    access_log: bool
    # serve.graceful_shutdown_s: uvicorn annotates it int, but hands it to asyncio.timeout, which takes a float
    timeout_graceful_shutdown: float


def serve(
    settings: Settings | Sequence[Settings],
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    **app_options,
) -> None:
    """Run the service in the foreground until SIGINT / SIGTERM (`cellcast serve NAME [NAME ...]`). On either, the
    port closes, requests in flight are answered (for up to serve.graceful_shutdown_s), then the process exits.
    workers > 1: that many processes behind the port, each loading and following the models on its own."""
    import uvicorn

    every = [settings] if isinstance(settings, Settings) else list(settings)
    settings = every[0]
    names = ", ".join(s.model_name for s in every)

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

        if app_options.pop("source", None) is not None or app_options.pop("sources", None):
            log.info("several workers: each follows the registry alias itself")
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            log.warning(
                "%d workers without PROMETHEUS_MULTIPROC_DIR: each /metrics scrape shows the counts of the "
                "one worker that answers it (docs/operations.md)",
                workers,
            )
        os.environ[SERVE_ENV] = json.dumps({"datasets": [s.dataset for s in every], **app_options})
        os.environ.setdefault("CELLCAST_PARAMS", str(find_params().resolve()))
        log.info("serving %s with %d worker processes on http://%s:%d", names, workers, host, port)
        uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **opts)  # type: ignore[arg-type]  # see _UvicornOptions
        return
    app = create_app(every, **app_options)
    versions = ", ".join(
        f"{m.name} v{m.holder.current.version}" if m.holder.current else f"{m.name} (lazy)"
        for m in app.state.service.models.values()
    )
    log.info("serving %s on http://%s:%d", versions, host, port)
    uvicorn.run(app, **opts)  # type: ignore[arg-type]  # see _UvicornOptions
