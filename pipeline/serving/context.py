"""What every route shares: the service (its models, metrics, limits, live log and shadow worker) read from the
app, the bearer-token dependency, the body read under its limit, a forecast route's request id, and the one-line
JSON refusal every BadRequest becomes."""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .canary import Shadow
from .livelog import LiveLog
from .metrics import ServiceMetrics, route_label
from .models import ServedModel
from .problems import BadRequest
from .swap import ModelHolder

log = logging.getLogger(__name__)


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


@dataclass
class Service:
    """What the routes share: the models that serve (by dataset), the metrics, the limits, the live log and the
    shadow worker (both started with the app)."""

    models: dict[str, ServedModel]
    metrics: ServiceMetrics
    token: str | None
    max_body: int
    live: LiveLog | None = None
    shadow: Shadow | None = None

    @property
    def single(self) -> bool:
        return len(self.models) == 1

    @property
    def first(self) -> ServedModel:
        return next(iter(self.models.values()))

    @property
    def holder(self) -> ModelHolder:  # the one-model service's model
        return self.first.holder

    def model(self, name: str) -> ServedModel:
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


def service_of(request: Request) -> Service:
    return request.app.state.service


async def require_token(request: Request) -> None:
    """The routes that answer with the model or its data need `Authorization: Bearer <token>` when a token is set
    (async: a plain function would send every request through the thread pool)."""
    token = service_of(request).token
    if token is None:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise BadRequest(401, "missing or wrong bearer token (header 'Authorization: Bearer <token>')")


def one_model_only(svc: Service, route: str) -> None:
    if not svc.single:
        raise BadRequest(
            400, f"{len(svc.models)} models are served here: use {route} (GET /v1/models lists their names)"
        )


async def read_body(request: Request, limit: int) -> bytes:
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


REQUEST_ID = "X-Request-Id"
FORECAST_ROUTES = frozenset({"/v1/forecast", "/v1/models/{name}/forecast"})


def request_id_of(request: Request) -> str | None:
    """A forecast route's request id (made when first asked for, one per request): the X-Request-Id of its answer,
    refusals included, the `request_id` of its live log rows and of its refusal's log line. None on other routes."""
    path = request.url.path
    if path not in FORECAST_ROUTES and route_label(path) not in FORECAST_ROUTES:
        return None
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = uuid.uuid4().hex
    return rid


def refused(request: Request, e: Exception) -> Response:
    """Every BadRequest, raised by a route or by the token check, as the one-line JSON refusal. A forecast route's
    refusal carries its X-Request-Id and is logged with it (one line), so a caller's id finds why."""
    assert isinstance(e, BadRequest)
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
    rid = request_id_of(request)
    if rid is not None:
        headers[REQUEST_ID] = rid
        # the path and parts of the message are the client's: escaped, so a line break cannot forge a log line
        path, why = (t.encode("unicode_escape").decode() for t in (request.url.path[:200], e.message))
        log.info("%s %s %d request_id=%s: %s", request.method, path, e.status, rid, why)
    return error(e.status, e.message, headers or None)
