"""Helpers shared by the API blueprints: reading a JSON body, paging through nothing else."""

from flask import request

from cluster_server.contract import limits
from cluster_server.errors import ValidationError


def json_body(required=True):
    """The request's JSON object; a clear 400 when it is missing or not an object."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if not required:
            return {}
        raise ValidationError("request body must be a JSON object",
                              {"field": "body", "reason": "missing"})
    data = limits.load(raw)
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object",
                              {"field": "body", "reason": "not an object"})
    return data


def flag(name):
    return request.args.get(name, "").lower() in ("1", "true", "yes")
