"""Helpers shared by the API blueprints: reading a JSON body, paging through nothing else."""

from flask import request

from cluster_server.errors import ValidationError


def json_body(required=True):
    """The request's JSON object; a clear 400 when it is missing or not an object."""
    data = request.get_json(silent=True)
    if data is None:
        if not required and not request.data:
            return {}
        raise ValidationError("request body must be a JSON object",
                              {"field": "body", "reason": "not JSON"})
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object",
                              {"field": "body", "reason": "not an object"})
    return data


def flag(name):
    return request.args.get(name, "").lower() in ("1", "true", "yes")
