"""The forecast routes, behind the token when one is set: POST /v1/forecast (one model served) and
POST /v1/models/{name}/forecast. A request is read under the size limit, parsed against the version that answers it
(the followed one, or the challenger for canary's share), forecast on the event loop or in a worker thread, logged
live and, with shadow, answered again by the challenger off its path."""

from __future__ import annotations

import time
import uuid

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .canary import KEY_HEADER, route
from .context import REQUEST_ID, Service, one_model_only, read_body, request_id_of, require_token, service_of
from .models import ServedModel, loaded
from .openapi import ref, responses
from .predict import live_answer, predict
from .problems import BadRequest
from .requests import forecast_json

forecast_routes = APIRouter(dependencies=[Depends(require_token)])

# a request whose forecast should take at most this long (series x the model's one-series time, measured at load)
# runs on the event loop; a longer one in a worker thread, so the loop keeps answering others meanwhile
INLINE_S = 0.0004

# the body is read by hand (size limit, content type, one-line errors); its schema is declared here so the
# OpenAPI document describes it (and schemathesis can generate requests from it)
_BODY_SCHEMA = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [ref("Series"), ref("Batch")]}}},
}
_OK = {
    "description": "the forecast (one series) or forecasts (instances)",
    "content": {"application/json": {"schema": {"oneOf": [ref("ForecastResponse"), ref("BatchResponse")]}}},
}


@forecast_routes.post(
    "/v1/forecast",
    openapi_extra={"requestBody": _BODY_SCHEMA},
    responses={200: _OK, **responses(400, 401, 413, 415, 422, 503)},
)
async def forecast(request: Request):
    svc = service_of(request)
    one_model_only(svc, "POST /v1/models/{name}/forecast")
    return await answer(request, svc, svc.first)


@forecast_routes.post(
    "/v1/models/{name}/forecast",
    openapi_extra={"requestBody": _BODY_SCHEMA},
    responses={200: _OK, **responses(400, 401, 404, 413, 415, 422, 503)},
)
async def model_forecast(request: Request, name: str):
    svc = service_of(request)
    return await answer(request, svc, svc.model(name))


async def answer(request: Request, svc: Service, m: ServedModel) -> Response:
    body = await read_body(request, svc.max_body)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise BadRequest(415, f"content type '{ctype or 'none'}': send JSON with 'Content-Type: application/json'")
    cur = m.holder.current  # read once: this request uses one version from parsing to answer
    if cur is None:
        if not svc.single:
            cur = await loaded(m)
        else:
            raise BadRequest(503, "no model loaded")
    ch = m.challenger_now(cur)
    parsed, role, use = route(m, cur, ch, body, request.headers.get(KEY_HEADER), svc.metrics)
    single = parsed.single
    t0 = time.perf_counter()
    if len(parsed.batch) * use.batch1_s <= INLINE_S:
        # a forecast well under a millisecond: the hop to the thread pool and back costs more than it does
        y, q, used = predict(use, parsed, single)
    else:
        y, q, used = await run_in_threadpool(predict, use, parsed, single)
    request_id = request_id_of(request) or uuid.uuid4().hex
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
        svc.live.add(live_answer(m, use, role, True, request_id, parsed, y, q))
    if svc.shadow is not None and m.settings.serve.shadow and ch is not None and use is cur:
        svc.shadow.submit(m, ch, body, request_id)
    # the same JSON FastAPI would write for the dict (finite floats, checked above), without its encoder's walk
    return Response(orjson.dumps(out), media_type="application/json", headers={REQUEST_ID: request_id})
