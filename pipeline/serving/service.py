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

Here the app is assembled: create_app (and app_from_env, a worker process's) with what starts and stops with it.
The rest, one job a module: models (the served models, loading, the poller), context (what every route shares: the
token, the body, the request id, the refusal), routes_health / routes_models / routes_forecast (the routers),
predict (a version's forecast of a request), canary (canary and shadow), openapi (the per-model schema),
launch (`cellcast serve`: uvicorn, one process or several).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..catalog import live_dir
from ..config import Settings
from ..errors import ConfigError
from .canary import Shadow
from .context import Service, refused
from .livelog import LiveLog
from .metrics import ServiceMetrics
from .models import load_models, poll
from .openapi import openapi_hook
from .problems import BadRequest
from .routes_forecast import forecast_routes
from .routes_health import open_routes
from .routes_models import model_routes
from .swap import ModelSource

TOKEN_ENV = "CELLCAST_API_TOKEN"


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
    models = load_models(every, source, sources or {}, alias, metrics, engine)
    service = Service(
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
    app.add_exception_handler(BadRequest, refused)
    app.include_router(open_routes)
    app.include_router(model_routes)
    app.include_router(forecast_routes)
    app.openapi = openapi_hook(app, service)  # type: ignore[method-assign]  # FastAPI's documented hook for a custom schema
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


def _lifespan(service: Service, every: list[Settings], poll_s: float):
    """What starts with the app and stops with it: the alias poller, the live log, the shadow worker."""
    base = every[0]
    models, metrics = service.models, service.metrics
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        poller = threading.Thread(
            target=poll, args=(list(models.values()), stop, poll_s), name="cellcast-model-poller", daemon=True
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
            service.shadow = Shadow(metrics, service.live, base.serve.shadow_queue)
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
