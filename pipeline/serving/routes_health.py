"""The open routes: GET /health (a load balancer's check) and GET /metrics (Prometheus' scrape), without the token;
they name the versions, never data."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .context import error, service_of
from .openapi import responses

open_routes = APIRouter()


@open_routes.get("/health", responses=responses(503))
def health(request: Request):
    svc = service_of(request)
    if svc.single:
        cur = svc.holder.current
        if cur is None:
            return error(503, "no model loaded")
        return {"status": "ok", "model": svc.first.name, "version": cur.version}
    # several: healthy while every model that was loaded (or asked for) has a version serving
    down = [m.dataset for m in svc.models.values() if m.wanted and m.holder.current is None]
    if down:
        return error(503, f"no version loaded for {', '.join(down[:10])} ({len(down)} of {len(svc.models)} models)")
    versions = {m.dataset: m.holder.current.version if m.holder.current else None for m in svc.models.values()}
    return {"status": "ok", "models": versions}


@open_routes.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def prometheus_metrics(request: Request):
    body, ctype = service_of(request).metrics.exposition()
    return Response(body, media_type=ctype)
