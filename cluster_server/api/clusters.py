"""Cluster endpoints: plan, create, change, control operations, show tasks and events."""

import re
import time
from decimal import Decimal, InvalidOperation

from flask import Blueprint, current_app, g, jsonify, request

from cluster_server import macros, operations
from cluster_server.api import responses
from cluster_server.api.common import json_body
from cluster_server.contract.bodies import returns, takes
from cluster_server.contract.params import BOOLEAN, INTEGER, accepts, pattern
from cluster_server.contract.schema import ListOf
from cluster_server.errors import Conflict, NotFound
from cluster_server.health import state as health_state

bp = Blueprint("clusters", __name__)

CHANGES = tuple(operations.CHANGES)
SERVICE_OPS = tuple(operations.SERVICE_OPS)
CONTROLS = tuple(operations.CONTROLS)
# Seconds a long poll of the events may wait: the view caps it at 30.
WAIT = {"type": "string", "pattern": "^([0-9]|[12][0-9]|30)(\\.[0-9]{1,3})?$"}
CLUSTER = {"name": pattern(operations.NAME_RE, "cluster", operations.NAME_RULE,
                           reserved=operations.RESERVED)}
OPERATION_ID = pattern(re.compile(r"op-[0-9a-f]{12}"), "operation", "op- and 12 hex digits")
TASK = {"task_id": pattern(re.compile(r"op-[0-9a-f]{12}/[A-Za-z0-9._:*-]{1,300}"), "task",
                           "an operation id, '/', then node:action[:service]")}


def _tasks(tasks):
    return [{"id": t.id, "node": t.node_id, "action": t.action, "service": t.service,
             "depends_on": list(t.depends_on)} for t in tasks]


def _submitted(result, status=202):
    current_app.engine.submit(result["operation"])
    body = {"cluster_id": result["cluster_id"], "operation": result["operation"],
            "tasks": sum(1 for t in result["tasks"] if t.action != "JOIN")}
    if "layout" in result:
        body["layout"] = result["layout"].to_dict()
        body["groups"] = result["layout"].groups()
    return jsonify(body), status


def _engine():
    if current_app.engine is None:
        raise Conflict("this server runs no operations (started without an engine)")
    return current_app.engine


@bp.post("/clusters/plan")
@takes(operations.PLAN)
@returns(200, responses.PLAN)
def plan_new():
    """Solve a layout for a template and size, and list the tasks a create would run."""
    data = json_body()
    result = operations.create(current_app.store, g.tenant,
                               {**data, "name": data.get("name") or "plan", "dry_run": True})
    return jsonify({"layout": result["layout"].to_dict(), "groups": result["layout"].groups(),
                    "tasks": _tasks(result["tasks"])})


@bp.post("/clusters")
@takes(operations.CREATE)
@returns(202, responses.SUBMITTED, links=responses.CREATED_CLUSTER_LINKS)
def create_cluster():
    """Create a cluster; the operation runs in the background (202 with its id)."""
    _engine()
    data = json_body()
    return _submitted(operations.create(current_app.store, g.tenant, data))


@bp.get("/clusters")
@accepts(query={"all": BOOLEAN})
@returns(200, ListOf(responses.CLUSTER_ROW))
def list_clusters():
    """Every cluster (deleted ones only with ?all=1)."""
    everything = request.args.get("all") in ("1", "true")
    query = ("SELECT c.name, c.status, c.template, c.provider, c.created_at, c.id,"
             " (SELECT COUNT(*) FROM nodes n WHERE n.cluster_id = c.id AND n.status NOT IN"
             " ('DELETED', 'REMOVING')), c.spec FROM clusters c WHERE c.tenant = ?")
    if not everything:
        query += " AND c.status != 'DELETED'"
    store = current_app.store
    with store.snapshot():
        rows = store.db.execute(query + " ORDER BY c.created_at", [g.tenant]).fetchall()
        health = health_state.summaries(store, [r[5] for r in rows])
        drifted = {cluster_id for (cluster_id,) in store.db.execute(
            "SELECT cluster_id FROM drift WHERE drifted = 1")}
        hardware = {}
        for cluster_id, name, count in store.db.execute(
                "SELECT cluster_id, hardwaretype, COUNT(*) FROM nodes WHERE status NOT IN"
                " ('DELETED', 'REMOVING') GROUP BY cluster_id, hardwaretype"):
            hardware.setdefault(cluster_id, {})[name] = count
    return jsonify([{"name": r[0], "status": r[1], "template": r[2], "provider": r[3],
                     "created_at": r[4], "nodes": r[6], "health": health[r[5]][0],
                     "drifted": r[5] in drifted,
                     "cost": cluster_cost(store.unseal(r[7]), hardware.get(r[5], {}))}
                    for r in rows])


def cluster_cost(spec, hardware_counts):
    """What the cluster's nodes cost together, by the hardware costs it was made with (the sum a
    plan shows as the layout's cost)."""
    provider = spec.get("provider", {}).get("name", "")
    total = Decimal(0)
    for name, count in hardware_counts.items():
        flavor = spec.get("hardwaretypes", {}).get(name, {}).get("providermap", {}).get(provider)
        raw = flavor.get("cost", 0) if isinstance(flavor, dict) else 0
        try:
            total += Decimal(str(raw if raw not in (None, "") else 0)) * count
        except InvalidOperation:  # refused when planned; an old spec may still hold one
            pass
    return float(total)


def cluster_view(store, cluster):
    nodes = operations.node_rows(store, cluster["id"])
    view = []
    for node in nodes:
        resource = node["facts"].get("resource") or {}
        view.append({"id": node["id"], "hostname": node["hostname"], "status": node["status"],
                     "services": node["services"], "hardwaretype": node["hardwaretype"],
                     "imagetype": node["imagetype"],
                     "address": resource.get("addresses", {}).get("access_v4", ""),
                     "ports": resource.get("extra", {}).get("ports"),
                     "metrics": node["facts"].get("metrics") or {}})
    ctx = {"cluster": {"id": cluster["id"], "name": cluster["name"],
                       "owner": cluster["spec"].get("owner", "")},
           "self": nodes[0]["id"] if nodes else "",
           "nodes": [{"id": n["id"], "hostname": n["hostname"], "services": n["services"],
                      "addresses": (n["facts"].get("resource") or {}).get("addresses", {})}
                     for n in nodes]}
    links = [{"label": link.get("label", ""), "url": macros.expand(link.get("url", ""), ctx)}
             for link in cluster["spec"]["template"].get("links", [])]
    op = store.db.execute("SELECT id, kind, status, error FROM operations WHERE cluster_id = ?"
                          " ORDER BY created_at DESC LIMIT 1", [cluster["id"]]).fetchone()
    health, reason = health_state.summaries(store, [cluster["id"]])[cluster["id"]]
    hardware = {}
    for node in nodes:
        hardware[node["hardwaretype"]] = hardware.get(node["hardwaretype"], 0) + 1
    return {"id": cluster["id"], "name": cluster["name"], "status": cluster["status"],
            "health": health, "health_reason": reason,
            "drift": health_state.drift(store, cluster["id"]),
            "template": cluster["template"], "provider": cluster["provider"],
            "services": sorted(cluster["spec"]["services"]), "size": len(nodes),
            "cost": cluster_cost(cluster["spec"], hardware),
            "nodes": view, "links": links,
            "operation": ({"id": op[0], "kind": op[1], "status": op[2], "error": op[3]}
                          if op else None)}


@bp.get("/clusters/<name>")
@accepts(path=CLUSTER)
@returns(200, responses.CLUSTER)
def show_cluster(name):
    """One cluster: status, nodes with addresses and services, links, last operation."""
    store = current_app.store
    with store.snapshot():
        view = cluster_view(store, operations.get_cluster(store, g.tenant, name))
    return jsonify(view)


@bp.delete("/clusters/<name>")
@accepts(path=CLUSTER)
@returns(202, responses.SUBMITTED)
def delete_cluster(name):
    """Delete a cluster: stop and remove its services, delete its nodes."""
    _engine()
    return _submitted(operations.delete(current_app.store, g.tenant, name, {}))


@bp.post("/clusters/<name>/<verb>")
@takes(by="verb", schemas={**operations.CHANGES, **operations.SERVICE_OPS, **operations.CONTROLS},
       required=False)
@returns(202, responses.SUBMITTED, description="a change, a service operation or a retry")
@returns(200, responses.CONTROLLED, description="cancel, pause or resume requested")
@accepts(path={**CLUSTER, "verb": {"enum": [*CHANGES, *SERVICE_OPS, *CONTROLS]}})
def cluster_operation(name, verb):
    """An operation on a cluster: resize, add-services, remove-services, start, stop, restart,
    reconfigure, retry, cancel, pause, resume."""
    store = current_app.store
    data = json_body(required=False)
    if verb in CHANGES:
        _engine()
        return _submitted(operations.change(store, g.tenant, name, verb, data))
    if verb in SERVICE_OPS:
        _engine()
        return _submitted(operations.services_op(store, g.tenant, name, verb, data))
    if verb == "retry":
        engine = _engine()
        result = operations.retry(store, g.tenant, name)
        engine.submit(result["operation"])
        return jsonify(result), 202
    if verb in ("cancel", "pause", "resume"):
        engine = _engine()
        cluster = operations.get_cluster(store, g.tenant, name)
        op_id = operations.running_operation(store, cluster["id"])
        if op_id is None:
            raise Conflict(f"cluster '{name}' has no running operation to {verb}")
        if not getattr(engine, verb)(op_id):
            # The operation is not in a state the verb applies to (resume of a running one,
            # pause of a rollback) or ended meanwhile: saying "requested" would be untrue.
            status = engine.operation(op_id)["status"]
            raise Conflict(f"operation {op_id} of cluster '{name}' is {status.lower()}; "
                           f"cannot {verb} it", {"operation": op_id, "status": status})
        return jsonify({"operation": op_id, "requested": verb})
    raise NotFound(f"unknown cluster operation '{verb}'", {"field": "operation"})


@bp.post("/clusters/<name>/plan")
@accepts(path=CLUSTER)
@takes(operations.PLAN_CHANGE)
@returns(200, responses.PLAN)
def plan_existing(name):
    """What an operation on an existing cluster would run ({"operation": kind, ...})."""
    store = current_app.store
    data = json_body()
    kind = data.pop("operation")
    data["dry_run"] = True
    if kind in CHANGES:
        result = operations.change(store, g.tenant, name, kind, data)
    elif kind in SERVICE_OPS:
        result = operations.services_op(store, g.tenant, name, kind, data)
    else:
        result = operations.delete(store, g.tenant, name, data)
    body = {"tasks": _tasks(result["tasks"])}
    if "layout" in result:
        body["layout"] = result["layout"].to_dict()
        body["groups"] = result["layout"].groups()
    return jsonify(body)


def _task_row(r):
    status, queue, worker = r[5], r[10], r[11]
    if status == "RUNNING" and queue and not worker:
        status = "QUEUED"  # sent to a Celery queue that no worker has taken it from yet
    return {"id": r[0], "operation": r[1], "node": r[2], "action": r[3], "service": r[4],
            "status": status, "attempts": r[6], "output": r[7],
            "duration": round(r[9] - r[8], 3) if r[8] and r[9] and status != "QUEUED" else None,
            "queue": queue, "worker": worker}


TASK_COLUMNS = ("id, operation_id, node_id, action, service, status, attempts, output,"
                " started_at, finished_at, queue, worker")


TASK_STATUSES = ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED"]


@bp.get("/clusters/<name>/tasks")
@accepts(query={"operation": OPERATION_ID, "status": {"type": "string", "enum": TASK_STATUSES},
                "limit": INTEGER}, path=CLUSTER)
@returns(200, ListOf(responses.TASK))
def list_tasks(name):
    """Tasks of the cluster's latest operation (or ?operation=ID), in plan order; only those of
    one ?status=, only the first ?limit= (a page of a 1,000-node cluster shows a few)."""
    store = current_app.store
    cluster = operations.get_cluster(store, g.tenant, name)
    op_id = request.args.get("operation")
    if not op_id:
        row = store.db.execute("SELECT id FROM operations WHERE cluster_id = ? ORDER BY"
                               " created_at DESC LIMIT 1", [cluster["id"]]).fetchone()
        op_id = row[0] if row else ""
    query, values = f"SELECT {TASK_COLUMNS} FROM tasks WHERE operation_id = ?", [op_id]
    if request.args.get("status"):
        query += " AND status = ?"
        values.append(request.args["status"])
    query += " ORDER BY seq"
    if request.args.get("limit"):
        query += " LIMIT ?"
        values.append(int(request.args["limit"]))
    rows = store.db.execute(query, values).fetchall()
    return jsonify([_task_row(r) for r in rows])


@bp.get("/tasks/<path:task_id>")
@accepts(path=TASK)
@returns(200, responses.TASK)
def show_task(task_id):
    """One task with its whole output."""
    row = current_app.store.db.execute(
        f"SELECT {TASK_COLUMNS} FROM tasks t WHERE id = ? AND EXISTS (SELECT 1 FROM operations o"
        " JOIN clusters c ON c.id = o.cluster_id WHERE o.id = t.operation_id AND c.tenant = ?)",
        [task_id, g.tenant]).fetchone()
    if row is None:
        raise NotFound(f"task '{task_id}' not found", {"entity": "task", "name": task_id})
    return jsonify(_task_row(row))


@bp.get("/operations/<op_id>")
@accepts(path={"op_id": OPERATION_ID})
@returns(200, responses.OPERATION)
def show_operation(op_id):
    """An operation's status and task counts (what --wait shows)."""
    store = current_app.store
    row = store.db.execute("SELECT o.id FROM operations o JOIN clusters c ON c.id ="
                           " o.cluster_id WHERE o.id = ? AND c.tenant = ?",
                           [op_id, g.tenant]).fetchone()
    if row is None:
        raise NotFound(f"operation '{op_id}' not found", {"entity": "operation", "name": op_id})
    return jsonify(operation_summary(store, op_id))


def operation_summary(store, op_id):
    """Status, task counts by status and the tasks running now (--wait and the UI's stream)."""
    row = store.db.execute("SELECT o.id, o.kind, o.status, o.error, c.name, c.status FROM"
                           " operations o JOIN clusters c ON c.id = o.cluster_id WHERE o.id = ?",
                           [op_id]).fetchone()
    counts = dict(store.db.execute("SELECT status, COUNT(*) FROM tasks WHERE operation_id = ?"
                                   " AND action != 'JOIN' GROUP BY status", [op_id]).fetchall())
    running = [f"{r[0]} {r[1] or ''} on {r[2]}".replace("  ", " ") +
               (f" (queued on {r[3]})" if r[3] and not r[4] else "")
               for r in store.db.execute(
        "SELECT action, service, node_id, queue, worker FROM tasks WHERE operation_id = ? AND"
        " status = 'RUNNING' ORDER BY seq LIMIT 5", [op_id])]
    return {"id": row[0], "kind": row[1], "status": row[2], "error": row[3],
            "cluster": row[4], "cluster_status": row[5], "counts": counts,
            "total": sum(counts.values()), "running": running}


@bp.get("/clusters/<name>/events")
@accepts(query={"after": INTEGER, "wait": WAIT}, path=CLUSTER)
@returns(200, responses.EVENTS)
def cluster_events(name):
    """Events after ?after=ID; waits up to ?wait=SECONDS (max 30) for new ones."""
    store = current_app.store
    cluster = operations.get_cluster(store, g.tenant, name)
    # Both fit their declared patterns (checked before the view): whole and decimal numbers.
    after = int(request.args.get("after", 0))
    wait = min(30.0, float(request.args.get("wait", 0)))
    deadline = time.monotonic() + wait
    while True:
        rows = store.db.execute("SELECT id, at, message, operation_id FROM events WHERE"
                                " cluster_id = ? AND id > ? ORDER BY id", [cluster["id"], after]
                                ).fetchall()
        if rows or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    status = store.db.execute("SELECT status FROM clusters WHERE id = ?",
                              [cluster["id"]]).fetchone()[0]
    return jsonify({"status": status, "events": [
        {"id": r[0], "at": r[1], "message": r[2], "operation": r[3]} for r in rows]})
