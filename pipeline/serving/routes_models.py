"""What serves, behind the token when one is set: GET /model (one model served), GET /v1/models (every model),
GET /v1/models/{name}."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from .context import error, one_model_only, require_token, service_of
from .models import ServedModel, loaded
from .openapi import responses
from .swap import Loaded

model_routes = APIRouter(dependencies=[Depends(require_token)])


def describe(m: ServedModel, cur: Loaded) -> dict:
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


@model_routes.get("/model", responses=responses(400, 401, 503))
def model_info(request: Request):
    svc = service_of(request)
    one_model_only(svc, "GET /v1/models/{name}")
    holder = svc.holder
    cur = holder.current
    if cur is None:
        return error(503, f"no model loaded; last error: {holder.last_error}")
    return describe(svc.first, cur)


@model_routes.get("/v1/models", responses=responses(401))
def list_models(request: Request):
    """Every model this service serves: its dataset name, registered name, the version under its alias (null until
    a lazy model's first request), provider, when it was loaded, and its challenger's version when one serves."""
    out = []
    for m in service_of(request).models.values():
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


@model_routes.get("/v1/models/{name}", responses=responses(401, 404, 503))
async def one_model(request: Request, name: str):
    m = service_of(request).model(name)
    return describe(m, await loaded(m))
