"""OpenAPI from the pipe declarations: per-operation parameters/responses (used when the routes are
registered, so FastAPI's /openapi.json and /docs show them) and the pipes-only document served at
``GET /v0/pipes/openapi.json``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving.formats import FORMATS, Column
from serving.params import Param
from serving.pipes import PIPES, Pipe

SECURITY_SCHEMES = {
    "BearerToken": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <token>"},
    "QueryToken": {"type": "apiKey", "in": "query", "name": "token", "description": "?token=<token>"},
}
SECURITY = [{"BearerToken": []}, {"QueryToken": []}]

_DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}:[0-9]{2})?$"
_DATETIME_OUT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "documentation"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong and how to fix it."},
        "documentation": {"type": "string"},
    },
}


def pipe_path(pipe: Pipe) -> str:
    return f"/v0/pipes/{pipe.name}.{{format}}"


def param_schema(p: Param) -> dict[str, Any]:
    if p.type == "DateTime":
        schema: dict[str, Any] = {"type": "string", "pattern": _DATE_PATTERN}
    elif p.type == "Int32":
        schema = {"type": "integer", "minimum": p.minimum, "maximum": p.maximum}
    elif p.type == "Boolean":
        schema = {"type": "boolean"}
    elif p.type == "Array(String)":
        schema = {"type": "array", "items": {"type": "string"}}
    else:
        schema = {"type": "string"}
    if p.choices and p.type == "String":
        schema["enum"] = list(p.choices)
    if p.default is not None:
        if p.type == "Int32":
            schema["default"] = int(p.default)
        elif p.type == "Boolean":
            schema["default"] = p.default == "true"
        elif p.type in ("String",):
            schema["default"] = p.default
    out: dict[str, Any] = {
        "name": p.name,
        "in": "query",
        "required": False,
        "description": p.description + (f" Default: {p.default}." if p.default else ""),
        "schema": schema,
    }
    if p.type == "Array(String)":
        out.update(style="form", explode=False)
    if p.example is not None:
        out["example"] = p.example.split(",") if p.type == "Array(String)" else p.example
    return out


def column_schema(c: Column) -> dict[str, Any]:
    base = c.type.removeprefix("Nullable(").removesuffix(")")
    schema: dict[str, Any] = {
        "DateTime": {"type": "string", "pattern": _DATETIME_OUT_PATTERN},
        "UInt64": {"type": "integer", "minimum": 0},
        "Float64": {"type": "number"},
        "String": {"type": "string"},
    }[base]
    if c.type.startswith("Nullable("):
        schema["type"] = [schema["type"], "null"]
    desc = f"{c.type}. {c.description}".strip()
    if c.when:
        desc += f" Present only when {c.when}."
    schema["description"] = desc
    return schema


def pipe_responses(pipe: Pipe) -> dict[str | int, Any]:
    row = {
        "type": "object",
        "required": [c.name for c in pipe.columns if not c.when],
        "properties": {c.name: column_schema(c) for c in pipe.columns},
    }
    body = {
        "type": "object",
        "required": ["meta", "data", "rows", "rows_before_limit_at_least", "statistics"],
        "properties": {
            "meta": {"type": "array", "items": {
                "type": "object", "properties": {"name": {"type": "string"}, "type": {"type": "string"}}}},
            "data": {"type": "array", "items": row},
            "rows": {"type": "integer"},
            "rows_before_limit_at_least": {"type": "integer"},
            "statistics": {"type": "object", "properties": {
                "elapsed": {"type": "number", "description": "seconds"},
                "rows_read": {"type": "integer"},
                "bytes_read": {"type": "integer"},
            }},
        },
    }
    error = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
    return {
        200: {
            "description": "The pipe's rows. Headers X-Request-ID, X-Engage-Snapshot, X-Engage-Watermark.",
            "content": {
                FORMATS["json"]: {"schema": body},
                FORMATS["csv"]: {"schema": {"type": "string"}},
                FORMATS["ndjson"]: {"schema": {"type": "string"}},
                FORMATS["parquet"]: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        400: {"description": "A bad parameter (the message names it and its accepted form).", **error},
        403: {"description": "Missing or invalid token, or a token without the scope.", **error},
        404: {"description": "Unknown pipe or format.", **error},
        503: {"description": "No snapshot published yet.", **error},
    }


def pipe_operation_extra(pipe: Pipe) -> dict[str, Any]:
    fmt = {
        "name": "format",
        "in": "path",
        "required": True,
        "description": "Output format.",
        "schema": {"type": "string", "enum": list(FORMATS)},
    }
    return {
        "parameters": [fmt, *(param_schema(p) for p in pipe.params)],
        "security": SECURITY,
    }


def app_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the token security schemes (cached on the app)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes,
        )
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        app.openapi_schema = schema
    return app.openapi_schema


def pipes_openapi(app: FastAPI) -> dict[str, Any]:
    """The document of the pipes only (GET /v0/pipes/openapi.json)."""
    full = app_openapi(app)
    paths = {pipe_path(p): full["paths"][pipe_path(p)] for p in PIPES.values() if pipe_path(p) in full["paths"]}
    return {
        "openapi": full["openapi"],
        "info": {**full["info"], "title": f"{app.title}: pipes"},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"securitySchemes": SECURITY_SCHEMES},
    }
