"""Cluster endpoints: plan, create, change, control operations, show tasks and events."""

import json
import re
import time
from decimal import Decimal, InvalidOperation

from flask import Blueprint, current_app, g, jsonify, request

from cluster_server import macros, operations
from cluster_server.api import paging, responses
from cluster_server.api.common import json_body
from cluster_server.contract.bodies import returns, takes
from cluster_server.contract.params import BOOLEAN, INTEGER, accepts, pattern
from cluster_server.contract.schema import ListOf
from cluster_server.errors import Conflict, NotFound
from cluster_server.health import state as health_state
from cluster_server.managed import records as managed_records
from cluster_server.tenancy import policy

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


def _task(t):
    return {"id": t.id, "node": t.node_id, "action": t.action, "service": t.service,
            "depends_on": list(t.depends_on)}


def _tasks(tasks):
    return [_task(t) for t in tasks]


def _full():
    return request.args.get("full") in ("1", "true", "yes")


def _plan(result):
    """A plan's answer: the layout's groups and the task counts by action, or with ?full=1 also
    every node and every task (streamed: 110,000 tasks at 10,000 nodes of three services)."""
    if "counts" in result:
        actions = result["counts"]
    else:
        actions = {}
        for t in result["tasks"]:
            if t.action != "JOIN":
                actions[t.action] = actions.get(t.action, 0) + 1
    body = {"summary": {"tasks": sum(actions.values()), "actions": actions}}
    if "layout" in result:
        body["layout"] = result["layout"].to_dict(nodes="tasks" in result)
        body["groups"] = result.get("groups") or result["layout"].groups()
        body["summary"]["nodes"] = len(result["layout"].nodes)
    if "tasks" not in result:
        return jsonify(body)
    return paging.stream_object(body, "tasks", result["tasks"], _task)


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


PLAN_QUERY = {"full": BOOLEAN}


@bp.post("/clusters/plan")
@accepts(query=PLAN_QUERY)
@takes(operations.PLAN)
@returns(200, responses.PLAN)
def plan_new():
    """Solve a layout for a template and size: node groups and task counts by action (with
    ?full=1 every node and every task a create would run)."""
    data = json_body()
    policy.check_template(g.principal, current_app.store, data["template"])
    result = operations.create(current_app.store, g.tenant,
                               {**data, "name": data.get("name") or "plan", "dry_run": True,
                                "full": _full()})
    return _plan(result)


@bp.post("/clusters")
@takes(operations.CREATE)
@returns(202, responses.SUBMITTED, links=responses.CREATED_CLUSTER_LINKS)
def create_cluster():
    """Create a cluster; the operation runs in the background (202 with its id)."""
    _engine()
    data = json_body()
    policy.check_template(g.principal, current_app.store, data["template"])
    owner = policy.owner_for_create(g.principal, data.get("owner"))
    return _submitted(operations.create(current_app.store, g.tenant, data, owner=owner))


@bp.get("/clusters")
@accepts(query={"all": BOOLEAN})
@returns(200, ListOf(responses.CLUSTER_ROW))
def list_clusters():
    """Every cluster the caller may see (deleted ones only with ?all=1): a user's own, or all of
    the tenant's for an admin."""
    everything = request.args.get("all") in ("1", "true")
    mine, args = policy.cluster_owner_filter(g.principal)
    query = ("SELECT c.name, c.status, c.template, c.provider, c.created_at, c.id,"
             " (SELECT COUNT(*) FROM nodes n WHERE n.cluster_id = c.id AND n.status NOT IN"
             " ('DELETED', 'REMOVING')), c.owner, c.expires_at, c.spec FROM clusters c"
             " WHERE c.tenant = ?" + mine)
    if not everything:
        query += " AND c.status != 'DELETED'"
    store = current_app.store
    with store.snapshot():
        rows = store.db.execute(query + " ORDER BY c.created_at", [g.tenant, *args]).fetchall()
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
                     "drifted": r[5] in drifted, "owner": r[7], "expires_at": r[8],
                     "cost": cluster_cost(store.unseal(r[9]), hardware.get(r[5], {}))}
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


NODE_COLUMNS = "rowid, id, hostname, hardwaretype, imagetype, services, status, facts"
LIVE_NODES = "cluster_id = ? AND status NOT IN ('DELETED', 'REMOVING')"


def _node(row):
    return {"id": row[1], "hostname": row[2], "hardwaretype": row[3], "imagetype": row[4],
            "services": json.loads(row[5]), "status": row[6], "facts": json.loads(row[7])}


def cluster_view(store, cluster, limit=None, after=None):
    """The cluster, with its live nodes in rowid order (the order they were made), a page of
    them when ``limit`` is given, and the count of nodes by status."""
    rows, cursor = paging.keyset(store.db, f"SELECT {NODE_COLUMNS} FROM nodes WHERE {LIVE_NODES}",
                                 "rowid", [cluster["id"]], limit, after)
    page = [_node(r) for r in rows]
    view = []
    for node in page:
        resource = node["facts"].get("resource") or {}
        view.append({"id": node["id"], "hostname": node["hostname"], "status": node["status"],
                     "services": node["services"], "hardwaretype": node["hardwaretype"],
                     "imagetype": node["imagetype"],
                     "address": resource.get("addresses", {}).get("access_v4", ""),
                     "ports": resource.get("extra", {}).get("ports"),
                     "metrics": node["facts"].get("metrics") or {}})
    resources = managed_records.public(store, cluster["id"])
    counts = dict(store.db.execute(f"SELECT status, COUNT(*) FROM nodes WHERE {LIVE_NODES}"
                                   " GROUP BY status ORDER BY status", [cluster["id"]]))
    templates = cluster["spec"]["template"].get("links", [])
    links = []
    if templates:
        # A link's macros may name any node: they need every node, not the page.
        nodes = page if limit is None and after is None else operations.node_rows(
            store, cluster["id"])
        ctx = {"cluster": {"id": cluster["id"], "name": cluster["name"],
                           "owner": cluster["spec"].get("owner", "")},
                # A link may name a database's address; never its password (not in this
                # view).
                "resources": {r["name"]: r for r in resources if r["status"] == "ACTIVE"},
               "self": nodes[0]["id"] if nodes else "",
               "nodes": [{"id": n["id"], "hostname": n["hostname"], "services": n["services"],
                          "addresses": (n["facts"].get("resource") or {}).get("addresses", {})}
                         for n in nodes]}
        links = [{"label": link.get("label", ""), "url": macros.expand(link.get("url", ""), ctx)}
                 for link in templates]
    op = store.db.execute("SELECT id, kind, status, error FROM operations WHERE cluster_id = ?"
                          " ORDER BY created_at DESC LIMIT 1", [cluster["id"]]).fetchone()
    health, reason = health_state.summaries(store, [cluster["id"]])[cluster["id"]]
    # The cost of every live node, not of the page shown.
    hardware = dict(store.db.execute(f"SELECT hardwaretype, COUNT(*) FROM nodes WHERE {LIVE_NODES}"
                                     " GROUP BY hardwaretype", [cluster["id"]]))
    return {"id": cluster["id"], "name": cluster["name"], "status": cluster["status"],
            "health": health, "health_reason": reason,
            "drift": health_state.drift(store, cluster["id"]),
            "template": cluster["template"], "provider": cluster["provider"],
            "owner": cluster["owner"], "expires_at": cluster["expires_at"],
            "services": sorted(cluster["spec"]["services"]), "size": sum(counts.values()),
            "cost": cluster_cost(cluster["spec"], hardware),
            "node_counts": counts, "nodes": view, "next": cursor, "links": links,
            "resources": resources,
            "operation": ({"id": op[0], "kind": op[1], "status": op[2], "error": op[3]}
                          if op else None)}


@bp.get("/clusters/<name>")
@accepts(query=paging.PAGE_QUERY, path=CLUSTER)
@returns(200, responses.CLUSTER)
def show_cluster(name):
    """One cluster: status, node counts by status, nodes with addresses and services (a page of
    them with ?limit=N&after=NEXT), links, last operation."""
    store = current_app.store
    limit, after = paging.page_args()
    with store.snapshot():
        view = cluster_view(store, operations.get_cluster(store, g.tenant, name), limit, after)
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
@accepts(query=PLAN_QUERY, path=CLUSTER)
@takes(operations.PLAN_CHANGE)
@returns(200, responses.PLAN)
def plan_existing(name):
    """What an operation on an existing cluster would run ({"operation": kind, ...}): task
    counts by action (with ?full=1 every task)."""
    store = current_app.store
    data = json_body()
    kind = data.pop("operation")
    data["dry_run"] = True
    data["full"] = _full()
    if kind in CHANGES:
        result = operations.change(store, g.tenant, name, kind, data)
    elif kind in SERVICE_OPS:
        result = operations.services_op(store, g.tenant, name, kind, data)
    else:
        result = operations.delete(store, g.tenant, name, data)
    return _plan(result)


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
                **paging.PAGE_QUERY}, path=CLUSTER)
@returns(200, ListOf(responses.TASK))
def list_tasks(name):
    """Tasks of the cluster's latest operation (or ?operation=ID) in plan order, only those of
    one ?status= if given; a page of them with ?limit=N&after=NEXT, where NEXT is the previous
    page's X-Shoal-Next header (absent on the last page)."""
    store = current_app.store
    cluster = operations.get_cluster(store, g.tenant, name)
    op_id = request.args.get("operation")
    if not op_id:
        row = store.db.execute("SELECT id FROM operations WHERE cluster_id = ? ORDER BY"
                               " created_at DESC LIMIT 1", [cluster["id"]]).fetchone()
        op_id = row[0] if row else ""
    limit, after = paging.page_args()
    # Only an operation of this cluster: another's id names nothing here.
    query = (f"SELECT seq, {TASK_COLUMNS} FROM tasks WHERE operation_id = ? AND operation_id IN"
             " (SELECT id FROM operations WHERE cluster_id = ?)")
    values = [op_id, cluster["id"]]
    if request.args.get("status"):
        query += " AND status = ?"
        values.append(request.args["status"])
    rows, cursor = paging.keyset(store.db, query, "seq", values, limit, after)
    return paging.with_next(jsonify([_task_row(r[1:]) for r in rows]), cursor)


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
    # --wait asks this every 0.3 s: at 110,000 tasks, counting from the (operation, status)
    # index alone and taking the JOINs (ids "op/*:...") off by a range of ids costs a third of
    # reading each row's action.
    counts = dict(store.db.execute("SELECT status, COUNT(*) FROM tasks WHERE operation_id = ?"
                                   " GROUP BY status", [op_id]).fetchall())
    for status, joins in store.db.execute("SELECT status, COUNT(*) FROM tasks WHERE id >= ? AND"
                                          " id < ? GROUP BY status", [op_id + "/*", op_id + "/+"]):
        counts[status] -= joins
        if not counts[status]:
            del counts[status]
    # The running tasks (at most one per worker) come from the status index, then are ordered
    # here: ORDER BY seq in SQL would walk the (operation, seq) index over every task.
    running = [f"{r[1]} {r[2] or ''} on {r[3]}".replace("  ", " ") +
               (f" (queued on {r[4]})" if r[4] and not r[5] else "")
               for r in sorted(store.db.execute(
                   "SELECT seq, action, service, node_id, queue, worker FROM tasks"
                   " WHERE operation_id = ? AND status = 'RUNNING'", [op_id]))[:5]]
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
