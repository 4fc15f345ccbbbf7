"""`cellcast serve`: the service under uvicorn in the foreground, one process or several worker processes behind
one port (each building its app with service.app_from_env)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import TypedDict

from ..config import Settings
from .service import SERVE_ENV, app_from_env, create_app

log = logging.getLogger(__name__)


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
        uvicorn.run(f"{app_from_env.__module__}:app_from_env", factory=True, workers=workers, **opts)  # type: ignore[arg-type]  # see _UvicornOptions
        return
    app = create_app(every, **app_options)
    versions = ", ".join(
        f"{m.name} v{m.holder.current.version}" if m.holder.current else f"{m.name} (lazy)"
        for m in app.state.service.models.values()
    )
    log.info("serving %s on http://%s:%d", versions, host, port)
    uvicorn.run(app, **opts)  # type: ignore[arg-type]  # see _UvicornOptions
