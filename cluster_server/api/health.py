"""Health, drift and metrics endpoints: ``GET /clusters/NAME/health``, ``POST
/clusters/NAME/check`` (drift; ``repair`` plans and runs the repair, ``delete_orphans`` removes
what the provider holds that no node is) and ``GET /metrics`` (Prometheus text)."""

from flask import Blueprint, Response, current_app, g, jsonify

from cluster_server import operations
from cluster_server.api import responses
from cluster_server.api.clusters import CLUSTER, _engine, _tasks
from cluster_server.api.common import json_body
from cluster_server.contract.bodies import returns, takes
from cluster_server.contract.params import accepts
from cluster_server.contract.schema import BOOL, ListOf, Obj
from cluster_server.health import drift, metrics, state
from cluster_server.plugins import NodeInfo

bp = Blueprint("health", __name__)

CHECK_REQUEST = Obj({
    "repair": BOOL.described("plan an operation replacing missing and stopped nodes"),
    "dry_run": BOOL.described("with repair: only show the plan"),
    "delete_orphans": BOOL.described("delete resources labelled with the cluster that no node "
                                     "holds"),
}).described("what to do about drift", example={"repair": True, "dry_run": True})


@bp.get("/clusters/<name>/health")
@accepts(path=CLUSTER)
@returns(200, ListOf(responses.HEALTH_ROW))
def cluster_health(name):
    """One row per node and checked service: state, since when, last output, restarts."""
    store = current_app.store
    with store.snapshot():
        cluster = operations.get_cluster(store, g.tenant, name)
        return jsonify(state.rows(store, cluster["id"]))


@bp.post("/clusters/<name>/check")
@accepts(path=CLUSTER)
@takes(CHECK_REQUEST, required=False)
@returns(200, responses.CHECK)
def check_cluster(name):
    """Compare the cluster with what its provider holds (one batched call); repair, or delete
    the orphans, on request."""
    engine = _engine()
    monitor = current_app.health
    store = current_app.store
    data = json_body(required=False)
    cluster = operations.get_cluster(store, g.tenant, name)
    [report] = drift.check(store, engine.runner, [cluster]).values()
    monitor.save(cluster["id"], report)
    body = {**report, "checked_at": state.drift(store, cluster["id"])["checked_at"]}
    if data.get("delete_orphans") and report["orphans"]:
        provider = engine.runner.provider(cluster)
        for orphan in report["orphans"]:
            provider.delete(NodeInfo(resource_id=orphan["resource_id"]))
        body["deleted_orphans"] = [o["resource_id"] for o in report["orphans"]]
        with store.write() as db:
            state.add_event(db, cluster["id"], "drift: deleted orphan(s) " +
                            ", ".join(body["deleted_orphans"]))
    if data.get("repair"):
        result = drift.plan_repair(store, g.tenant, name, report, dry_run=data.get("dry_run"))
        body["repair"] = {"tasks": _tasks(result["tasks"]), "operation": result.get("operation"),
                          "nodes": result.get("nodes", [])}
        if result.get("operation"):
            for node in result["nodes"]:
                engine.runner.forget_transport(cluster["id"], node)
            engine.submit(result["operation"])
    return jsonify(body)


@bp.get("/metrics")
@returns(200, description="Prometheus text format", media="text/plain")
def server_metrics():
    """The server's figures and health states, for Prometheus to scrape."""
    return Response(metrics.render(current_app.metrics), content_type=metrics.CONTENT_TYPE)
