"""Cloud credentials: ``shoal setup aws|gcp`` checks a choice and records it (never a secret)."""

from flask import Blueprint, current_app, jsonify

from cluster_server import clouds
from cluster_server.api.common import json_body
from cluster_server.errors import ValidationError

bp = Blueprint("setup", __name__)


def _options(body, allowed):
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValidationError(f"unknown option '{unknown[0]}'",
                              {"field": unknown[0], "reason": "unknown"})
    for key, value in body.items():
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"option '{key}' must be a string",
                                  {"field": key, "reason": "type"})
    return {key: body.get(key) or None for key in allowed}


@bp.get("/setup")
def show_setup():
    """Which credentials each cloud's providers use (names and paths, no secrets)."""
    return jsonify(clouds.load(current_app.config["SHOAL_HOME"]))


@bp.post("/setup/aws")
def setup_aws():
    """Check AWS credentials (a profile, or the standard chain) and record the choice."""
    options = _options(json_body(required=False), ("profile", "region", "endpoint_url"))
    return jsonify(clouds.setup_aws(current_app.config["SHOAL_HOME"], **options))


@bp.post("/setup/gcp")
def setup_gcp():
    """Check Google credentials (a service-account key file, or application defaults) and
    record the choice."""
    options = _options(json_body(required=False),
                       ("credentials_file", "project", "api_endpoint"))
    return jsonify(clouds.setup_gcp(current_app.config["SHOAL_HOME"], **options))
