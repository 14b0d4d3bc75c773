"""The environment shell endpoint: prepare a container for ``shoal cluster shell`` / ``exec``."""

from flask import Blueprint, current_app, g, jsonify

from cluster_server import envshell
from cluster_server.api.clusters import CLUSTER
from cluster_server.api.common import json_body
from cluster_server.contract.params import accepts
from cluster_server.errors import ValidationError

bp = Blueprint("envshell", __name__)


@bp.post("/clusters/<name>/shell")
@accepts(path=CLUSTER)
def prepare_shell(name):
    """Create (not start) a shell container for the cluster: body ``{command?: [argv], tty?,
    stdin?, cli?}``. The caller attaches to it on the engine named by ``docker_host`` and
    removes it."""
    data = json_body(required=False)
    unknown = sorted(set(data) - {"command", "tty", "stdin", "cli"})
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}", {"fields": unknown})
    result = envshell.prepare(current_app.store, current_app.config["SHOAL_HOME"], g.tenant,
                              name, command=data.get("command"), tty=data.get("tty", True),
                              stdin=data.get("stdin", False), cli=data.get("cli"))
    return jsonify(result), 201
