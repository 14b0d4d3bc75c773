"""The OpenAPI 3.1 document, built from the routes and the declarations on their views (path and
query parameters, request and response bodies), so it lists every route and nothing else."""

import re

from cluster_server.contract import bodies, params
from cluster_server.contract.schema import Schema

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "details": {"type": "object",
                                   "description": "field: the path of the field at fault; "
                                                  "reason: why"}},
    }},
}


def _published(schema, value=None):
    """JSON Schema of a declaration: a Schema, a dict of them by expanded value, or JSON Schema."""
    if isinstance(schema, dict) and value is not None and value in schema:
        schema = schema[value]
    if isinstance(schema, Schema):
        return schema.published()
    return schema


def _operation(rule, view, method, prefix, value):
    declared_path = params.path_of(view)
    expand = _expanded(view)
    doc = (view.__doc__ or "").strip()
    op_id = rule.endpoint.replace(".", "_") + "_" + method.lower()
    if value is not None:
        op_id += "_" + re.sub(r"\W", "_", value)
    operation = {
        "operationId": op_id,
        "summary": doc.splitlines()[0] if doc else rule.endpoint,
        "description": doc,
        "parameters": [
            {"name": arg, "in": "path", "required": True,
             "schema": {"type": "string", **declared_path.get(arg, {})}}
            for arg in sorted(rule.arguments) if arg != expand
        ] + [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in sorted(params.query_of(view).items())
        ],
        "responses": {},
    }
    body = bodies.body_of(view)
    if body is not None and method in ("POST", "PUT"):
        if body.media == "application/json":
            schema = _published(body.published or (
                body.schema_for({body.by: value}) if body.by else body.schema))
            content = {"schema": schema or {"type": "object"}}
        else:
            content = {"schema": {"type": "string", "format": "binary"}}
        # A body that may be left out is still required when its schema requires a key.
        required = body.required or bool(getattr(body.schema_for({body.by: value}), "required",
                                                 ()))
        operation["requestBody"] = {"required": required, "content": {body.media: content}}
    for response in bodies.responses_of(view):
        answer = {"description": response.description}
        schema = _published(response.schema, value)
        if response.media != "application/json":
            # Bytes, unless the route declares more (an event stream: the shape of one event).
            answer["content"] = {response.media: {"schema": schema or {"type": "string",
                                                                       "format": "binary"}}}
        elif schema is not None:
            answer["content"] = {"application/json": {"schema": schema}}
        if response.links:
            answer["links"] = {
                name: {**link, "operationId": link["operationId"].replace("{value}", value or "")}
                for name, link in response.links.items()}
        operation["responses"][str(response.status)] = answer
    operation["responses"]["default"] = {
        "description": "an error: one shape for all",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return operation


def _expanded(view):
    """The path parameter listed value by value in the document (one path per value, each with
    its own bodies), or None."""
    body = bodies.body_of(view)
    return getattr(view, "contract_expand", None) or (body.by if body else None)


def document(url_map, view_functions, version, prefix="/api/v1"):
    paths = {}
    for rule in url_map.iter_rules():
        if not rule.rule.startswith(prefix):
            continue
        view = view_functions[rule.endpoint]
        # <path:task_id> is Flask's converter syntax; OpenAPI knows only {task_id}.
        template = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len(prefix):])
        expand = _expanded(view)
        values = params.path_of(view).get(expand, {}).get("enum", []) if expand else [None]
        for value in values:
            path = template.replace("{" + expand + "}", value) if value else template
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                paths.setdefault(path, {})[method.lower()] = _operation(
                    rule, view, method, prefix, value)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Shoal API", "version": version,
                 "description": "Local cluster provisioning. Every request needs the token "
                                "from SHOAL_HOME/token as a bearer token."},
        "servers": [{"url": prefix}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }
