"""The OpenAPI document: each refusal a route can answer, and request bodies that name the variables, lengths,
bounds and series ids of the models serving now (rebuilt after a swap; with several models, one path per model)."""

from __future__ import annotations

import copy

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from .context import Service
from .requests import F32_MAX, Batch, BatchResponse, ForecastResponse, Problem, Series, model_bounds


def responses(*codes: int) -> dict:
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


def describe_model(series: dict, engine) -> None:
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


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_hook(app: FastAPI, service: Service):
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
                    describe_model(defs["Series"], cur.engine)
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
        describe_model(defs[series], cur.engine)
        defs[batch] = copy.deepcopy(defs["Batch"])
        defs[batch]["properties"]["instances"]["items"] = ref(series)
        op = copy.deepcopy(template)
        op["operationId"] = f"forecast_{m.dataset}"
        op["summary"] = f"Forecast with {m.name}"
        op["parameters"] = []
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [ref(series), ref(batch)]}}},
        }
        schema["paths"][f"/v1/models/{m.dataset}/forecast"] = {"post": op}
