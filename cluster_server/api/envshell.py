"""The environment shell endpoint: prepare a container for ``shoal cluster shell`` / ``exec``."""

from flask import Blueprint, current_app, g, jsonify

from cluster_server import envshell
from cluster_server.api import responses
from cluster_server.api.clusters import CLUSTER
from cluster_server.api.common import json_body
from cluster_server.contract.params import accepts
from cluster_server.contract.bodies import returns, takes
from cluster_server.contract.schema import BOOL, NAME, STR, ListOf, Obj

bp = Blueprint("envshell", __name__)

SHELL_REQUEST = Obj({
    "command": ListOf(STR, min_items=1).described("argv to run instead of an interactive shell"),
    "tty": BOOL, "stdin": BOOL,
    "cli": NAME.described("the cloud CLI image to use (default: the provider's)"),
})


@bp.post("/clusters/<name>/shell")
@accepts(path=CLUSTER)
@takes(SHELL_REQUEST, required=False)
@returns(201, responses.SHELL)
def prepare_shell(name):
    """Create (not start) a shell container for the cluster: body ``{command?: [argv], tty?,
    stdin?, cli?}``. The caller attaches to it on the engine named by ``docker_host`` and
    removes it."""
    data = json_body()
    result = envshell.prepare(current_app.store, current_app.config["SHOAL_HOME"], g.tenant,
                              name, command=data.get("command"), tty=data.get("tty", True),
                              stdin=data.get("stdin", False), cli=data.get("cli"))
    return jsonify(result), 201
