"""The Celery workers the server's broker knows (``shoal worker status``)."""

from flask import Blueprint, current_app, jsonify

from cluster_server.contract.bodies import returns
from cluster_server.api.responses import NAMES
from cluster_server.contract.schema import INT, STR, ListOf, Obj

bp = Blueprint("workers", __name__)

WORKERS = Obj({
    "executor": STR.described("threads or celery"),
    "broker": STR.described("the broker's host and port (blank on threads)"),
    "workers": ListOf(Obj({"name": STR, "queues": NAMES, "concurrency": INT,
                           "running": NAMES.described("ids of the tasks it runs now")})),
}).described("the executor and the workers its broker knows")


@bp.get("/workers")
@returns(200, WORKERS)
def list_workers():
    """The executor, and the Celery workers that answer on its broker: their queues,
    concurrency and the tasks they run now."""
    engine = current_app.engine
    settings = engine.settings if engine else None
    if settings is None or settings.executor != "celery":
        return jsonify({"executor": "threads", "broker": "", "workers": []})
    dispatch = engine.executor.dispatch
    return jsonify({"executor": "celery", "broker": dispatch.client.where(),
                    "workers": dispatch.known_workers()})
