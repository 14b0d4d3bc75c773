"""Server facts and the OpenAPI document, built from the routes themselves."""

import os

from flask import Blueprint, current_app, jsonify

from cluster_server.api import responses
from cluster_server.contract import openapi
from cluster_server.contract.bodies import returns
from cluster_server.version import VERSION

bp = Blueprint("meta", __name__)


@bp.get("/server")
@returns(200, responses.SERVER)
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
@returns(200, {"type": "object", "description": "this document"})
def openapi_document():
    """The OpenAPI 3.1 document of this API."""
    return jsonify(openapi.document(current_app.url_map, current_app.view_functions, VERSION))
