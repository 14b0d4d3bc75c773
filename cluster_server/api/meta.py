"""Server facts and the OpenAPI document, built from the routes themselves."""

import os
import re

from flask import Blueprint, current_app, jsonify

from cluster_server.contract import params
from cluster_server.version import VERSION

bp = Blueprint("meta", __name__)

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "details": {"type": "object"}},
    }},
}


@bp.get("/server")
def server_info():
    """Version, process id, schema version and where the server keeps its files."""
    return jsonify({
        "version": VERSION,
        "pid": os.getpid(),
        "schema": current_app.store.schema_version(),
        "home": str(current_app.config["SHOAL_HOME"]),
        "engine": current_app.engine is not None,
    })


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document of this API."""
    paths = {}
    for rule in current_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        # <path:task_id> is Flask's converter syntax; OpenAPI knows only {task_id}.
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len("/api/v1"):])
        view = current_app.view_functions[rule.endpoint]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            doc = (view.__doc__ or "").strip()
            paths.setdefault(path, {})[method.lower()] = {
                "operationId": rule.endpoint.replace(".", "_") + "_" + method.lower(),
                "summary": doc.splitlines()[0] if doc else rule.endpoint,
                "parameters": [
                    {"name": arg, "in": "path", "required": True,
                     "schema": {"type": "string", **params.path_of(view).get(arg, {})}}
                    for arg in sorted(rule.arguments)
                ] + [
                    {"name": name, "in": "query", "required": False, "schema": schema}
                    for name, schema in sorted(params.query_of(view).items())
                ],
                "responses": {
                    "200": {"description": "success"},
                    "default": {"description": "error",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Error"}}}},
                },
            }
    return jsonify({
        "openapi": "3.1.0",
        "info": {"title": "Shoal API", "version": VERSION},
        "servers": [{"url": "/api/v1"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    })
