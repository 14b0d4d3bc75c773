"""Helpers shared by the API blueprints: reading a JSON body, paging through nothing else."""

from flask import current_app, request

from cluster_server.contract import bodies, limits, schema
from cluster_server.errors import ValidationError


def json_body(required=True):
    """The request's JSON object, checked with the body its route declares (``@takes``); a
    clear 400 naming the field when it is missing, not an object or does not fit."""
    declared = bodies.body_of(current_app.view_functions.get(request.endpoint))
    if declared is not None:
        required = declared.required
    raw = request.get_data(cache=True)
    if raw.strip():
        data = limits.load(raw)
    elif required:
        raise ValidationError("request body must be a JSON object",
                              {"field": "body", "reason": "missing"})
    else:
        data = {}  # still checked below: an optional body may not leave out a required key
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object",
                              {"field": "body", "reason": "not an object"})
    if declared is not None and not declared.checked_by_view:
        shape = declared.schema_for(request.view_args)
        if shape is not None:
            schema.check_body(shape, data)
    return data


def flag(name):
    return request.args.get(name, "").lower() in ("1", "true", "yes")
