"""Cloud credentials: ``shoal setup aws|gcp`` checks a choice and records it (never a secret)."""

from flask import Blueprint, current_app, jsonify

from cluster_server import clouds
from cluster_server.api.common import json_body
from cluster_server.api import responses
from cluster_server.contract.bodies import returns, takes
from cluster_server.contract.schema import OPTIONAL_STR, Obj

bp = Blueprint("setup", __name__)


AWS = Obj({"profile": OPTIONAL_STR, "region": OPTIONAL_STR, "endpoint_url": OPTIONAL_STR})
GCP = Obj({"credentials_file": OPTIONAL_STR, "project": OPTIONAL_STR,
           "api_endpoint": OPTIONAL_STR})


def _options(body, declared):
    return {key: body.get(key) or None for key in declared.fields}


@bp.get("/setup")
@returns(200, responses.SETUP)
def show_setup():
    """Which credentials each cloud's providers use (names and paths, no secrets)."""
    return jsonify(clouds.load(current_app.config["SHOAL_HOME"]))


@bp.post("/setup/aws")
@takes(AWS, required=False)
@returns(200, responses.SETUP)
def setup_aws():
    """Check AWS credentials (a profile, or the standard chain) and record the choice."""
    options = _options(json_body(), AWS)
    return jsonify(clouds.setup_aws(current_app.config["SHOAL_HOME"], **options))


@bp.post("/setup/gcp")
@takes(GCP, required=False)
@returns(200, responses.SETUP)
def setup_gcp():
    """Check Google credentials (a service-account key file, or application defaults) and
    record the choice."""
    options = _options(json_body(), GCP)
    return jsonify(clouds.setup_gcp(current_app.config["SHOAL_HOME"], **options))
