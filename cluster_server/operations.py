"""Cluster operations: check the request, solve the layout, plan the tasks, store it all at once.

Every function validates first and writes once (one transaction holding the cluster, its nodes,
the operation and its whole task graph), so a bad request leaves nothing behind and the engine
finds a complete plan in the store when it starts.
"""

import json
import re
import time
import uuid

from cluster_server import catalog, config, planner, plugins
from cluster_server.contract.schema import (BOOL, NAME, Anything, Either, ListOf, MapOf,
                                            Matching, Obj, Range, Tagged)
from cluster_server.errors import Conflict, NotFound, Unprocessable, ValidationError
from cluster_server.managed import records as managed_records
from cluster_server.managed import tasks as managed_tasks
from cluster_server.solver import solve_layout
from cluster_server.solver.problem import MAX_SIZE as solver_max_size
from cluster_server.tenancy import durations, leases, quotas
from cluster_server.tenancy.principal import OWNER

NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")  # matched whole
NAME_RULE = "lower-case letters, digits and '-' (at most 40, not starting or ending with '-')"
BUSY = ("CREATING", "UPDATING", "DELETING")


class CatalogView:
    """The catalog as the solver wants it: dicts of services, hardware types, image types."""

    def __init__(self, everything):
        self.everything = everything
        self.services = everything.get("service", {})
        self.hardwaretypes = everything.get("hardwaretype", {})
        self.imagetypes = everything.get("imagetype", {})
        self.providers = everything.get("provider", {})


# -- the requests, declared once: the API checks each body with these and publishes them --------

MAX_SIZE = min(config.max_nodes(), solver_max_size)
_LAYOUT = {
    "template": NAME.described("template to build from"),
    "size": Range(1, MAX_SIZE).described("number of nodes"),
    "services": ListOf(NAME, min_items=1).described("services instead of the template's "
                                                    "defaults"),
    "provider": NAME.described("provider instead of the template's default"),
    "hardwaretype": NAME.described("hardware type for every node"),
    "imagetype": NAME.described("image type for every node"),
    "config": MapOf(Anything()).described("config merged over the template's defaults"),
}
# GET /clusters/plan would show a cluster named "plan", beside POST /clusters/plan.
RESERVED = ("plan",)
CLUSTER_NAME = Matching(NAME_RE, f"a cluster name of {NAME_RULE}", reserved=RESERVED)
PLAN = Obj({**_LAYOUT, "name": CLUSTER_NAME}, required=("template", "size")).described(
    "a layout request", example={"template": "local-web", "size": 3})
CREATE = Obj({
    **_LAYOUT, "name": CLUSTER_NAME,
    "keep_on_failure": BOOL.described("keep what was made when the create fails"),
    "owner": NAME.described("who the cluster is for (default: whoever creates it)"),
    "lease": Either(Range(0, durations.MAX_MS), Matching(durations.WHOLE, durations.RULE),
                    label=f"a lease: {durations.RULE}").described(
        "a shorter lease than the template's initial one"),
}, required=("name", "template", "size")).described(
    "a cluster to create", example={"name": "web", "template": "local-web", "size": 3})
_SERVICES = ListOf(NAME, min_items=1).described("services to act on (their dependencies come too)")
CHANGES = {
    "resize": Obj({"size": Range(1, MAX_SIZE)}, required=("size",)),
    "add-services": Obj({"services": _SERVICES}, required=("services",)),
    "remove-services": Obj({"services": _SERVICES}, required=("services",)),
}
SERVICE_OPS = {
    "start": Obj({"services": _SERVICES}),
    "stop": Obj({"services": _SERVICES}),
    "restart": Obj({"services": _SERVICES}),
    "reconfigure": Obj({"services": _SERVICES, "config": MapOf(Anything()),
                        "restart": BOOL.described("restart the services after configuring")}),
}
CONTROLS = {verb: Obj({}) for verb in ("retry", "cancel", "pause", "resume")}
PLAN_CHANGE = Tagged("operation", {**CHANGES, **SERVICE_OPS, "delete": Obj({})}).described(
    "an operation to plan on an existing cluster", example={"operation": "resize", "size": 5})


# -- layout --------------------------------------------------------------------------------------


def solve_request(store, tenant, data, current=None, template=None):
    """Solve the layout for a create/plan request (or a change, given ``current`` nodes)."""
    everything = store.catalog_all(tenant)
    if template is None:
        name = data["template"]
        if name not in everything.get("template", {}):
            raise NotFound(f"template '{name}' not found", {"entity": "template", "name": name})
        template = catalog.resolve_template(name, everything)
    view = CatalogView(everything)
    provider = data.get("provider") or template.get("defaults", {}).get("provider")
    if provider and provider not in view.providers:
        raise NotFound(f"provider '{provider}' is not in the catalog (template "
                       f"'{template['name']}' needs it)", {"entity": "provider", "name": provider})
    for key, kinds in (("hardwaretype", view.hardwaretypes), ("imagetype", view.imagetypes)):
        wanted = data.get(key) or template.get("defaults", {}).get(key)
        if wanted and wanted not in kinds:
            raise NotFound(f"{key} '{wanted}' is not in the catalog (template "
                           f"'{template['name']}' needs it)", {"entity": key, "name": wanted})
    layout = solve_layout(
        template, view, data["size"], services=data.get("services"), provider=provider,
        hardwaretype=data.get("hardwaretype"), imagetype=data.get("imagetype"),
        current=current)
    return template, view, layout


def check_plugins(view, provider_name, services, resources=None):
    """Every plugin the cluster needs is installed: one clear error naming all that is missing
    (the provider type, each automator type with the services that need it, each database
    type), so the user installs everything in one go instead of meeting the missing plugins one
    at a time."""
    wanted = [(plugins.PROVIDER_NAMESPACE, view.providers[provider_name]["providertype"], None)]
    for name, entry in sorted((resources or {}).items()):
        wanted.append((plugins.DATABASE_NAMESPACE, entry["type"], f"resource {name}"))
    for service in sorted(services):
        actions = view.services[service].get("provisioner", {}).get("actions", {})
        for action, spec in sorted(actions.items()):
            wanted.append((plugins.AUTOMATOR_NAMESPACE, spec.get("type", ""), service))
    missing = {}  # (namespace, name) -> (error, services needing it)
    for namespace, name, service in wanted:
        if (namespace, name) not in missing:
            try:
                plugins.plugin_class(namespace, name)
                continue
            except plugins.PluginError as error:
                missing[namespace, name] = (error, [])
        users = missing[namespace, name][1]
        if service and service not in users:
            users.append(service)
    if missing:
        parts = [error.message + (f", needed by {', '.join(users)}" if users else "")
                 for error, users in missing.values()]
        raise plugins.PluginError("; ".join(parts), {"missing": [
            {**error.details, "services": users} for error, users in missing.values()]})
    # The provider's and the actions' fields as their plugins declare them: refused now,
    # before anything is written or made, rather than at the task that uses them.
    entry = view.providers[provider_name]
    plugins.validate_fields("provider", entry["name"], plugins.plugin_class(
        plugins.PROVIDER_NAMESPACE, entry["providertype"]).fields, entry.get("provisioner", {}))
    for service in sorted(services):
        actions = view.services[service].get("provisioner", {}).get("actions", {})
        for action, spec in sorted(actions.items()):
            plugins.plugin_class(plugins.AUTOMATOR_NAMESPACE, spec["type"]).check_fields(
                service, action, spec.get("fields", {}))
    managed_tasks.check_entries(resources or {}, entry)


def snapshot(template, view, layout, config, owner):
    """The cluster's frozen spec: catalog entries as they are now, so later catalog edits do not
    change a running cluster under its feet."""
    hardware = {n["hardwaretype"] for n in layout.nodes}
    images = {n["imagetype"] for n in layout.nodes}
    return {
        "template": template,
        "provider": view.providers[layout.provider],
        "services": {name: view.services[name] for name in layout.services},
        "hardwaretypes": {name: view.hardwaretypes[name] for name in sorted(hardware)},
        "imagetypes": {name: view.imagetypes[name] for name in sorted(images)},
        "config": catalog.merge(template.get("defaults", {}).get("config", {}), config or {}),
        "owner": owner,
        "size": len(layout.nodes),
        "resources": template.get("resources", {}),
    }


# -- storing an operation ------------------------------------------------------------------------


def _new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _insert_operation(db, cluster_id, kind, params, tasks):
    op_id = _new_id("op")
    now = time.time()
    db.execute("INSERT INTO operations (id, cluster_id, kind, status, params, created_at)"
               " VALUES (?, ?, ?, 'RUNNING', ?, ?)",
               [op_id, cluster_id, kind, json.dumps(params), now])
    db.conn.executemany(
        "INSERT INTO tasks (id, operation_id, node_id, action, service, depends_on, status, seq)"
        " VALUES (?, ?, ?, ?, ?, ?, 'PENDING', ?)",
        [(f"{op_id}/{t.id}", op_id, t.node_id or "", t.action, t.service,
          json.dumps([f"{op_id}/{d}" for d in t.depends_on]), seq)
         for seq, t in enumerate(tasks)])
    return op_id


def node_rows(store, cluster_id, live_only=True):
    query = ("SELECT id, hostname, hardwaretype, imagetype, services, status, facts FROM nodes"
             " WHERE cluster_id = ?")
    if live_only:
        query += " AND status NOT IN ('DELETED', 'REMOVING')"
    rows = store.db.execute(query + " ORDER BY created_at, id", [cluster_id]).fetchall()
    return [{"id": r[0], "hostname": r[1], "hardwaretype": r[2], "imagetype": r[3],
             "services": json.loads(r[4]), "status": r[5], "facts": json.loads(r[6])}
            for r in rows]


def get_cluster(store, tenant, name):
    row = store.db.execute(
        "SELECT id, name, template, provider, status, spec, created_at, updated_at, owner,"
        " expires_at FROM clusters WHERE tenant = ? AND name = ? AND status != 'DELETED'",
        [tenant, name]).fetchone()
    if row is None:
        raise NotFound(f"cluster '{name}' not found", {"entity": "cluster", "name": name})
    return {"id": row[0], "name": row[1], "template": row[2], "provider": row[3],
            "status": row[4], "spec": store.unseal(row[5]), "created_at": row[6],
            "updated_at": row[7], "owner": row[8], "expires_at": row[9]}


def running_operation(store, cluster_id):
    row = store.db.execute(
        "SELECT id FROM operations WHERE cluster_id = ? AND status IN"
        " ('RUNNING', 'PAUSED', 'CANCELLING', 'ROLLING_BACK')", [cluster_id]).fetchone()
    return row[0] if row else None


def _ensure_idle(store, cluster):
    op_id = running_operation(store, cluster["id"])
    if op_id:
        raise Conflict(f"cluster '{cluster['name']}' is busy with operation {op_id}; wait, "
                       "or 'shoal cluster cancel'", {"operation": op_id})


def _ensure_created(store, cluster):
    """A cluster whose create failed takes no other operation than retry and delete: rolled
    back, it has nothing to change; kept (--keep-on-failure), it is half made."""
    if cluster["status"] != "FAILED":
        return
    name = cluster["name"]
    if not node_rows(store, cluster["id"]):
        raise Conflict(f"cluster '{name}' was rolled back after its create failed; nothing of "
                       "it is left: create it again", {"status": "FAILED"})
    raise Conflict(f"cluster '{name}' failed to create and kept its nodes: 'shoal cluster retry "
                   f"{name}', or delete it", {"status": "FAILED"})


# -- the operations ------------------------------------------------------------------------------

def create(store, tenant, data, owner=OWNER):
    """Create a cluster: returns (cluster, operation id, tasks); nothing runs until submitted.
    ``data`` fits CREATE (the API checked it), with ``dry_run`` for a plan. ``owner`` is the
    user it belongs to (quotas count it; users see only their own)."""
    name = data["name"]
    config = data.get("config", {})
    keep = data.get("keep_on_failure", False)
    template, view, layout = solve_request(store, tenant, data)
    resources = template.get("resources", {})
    if data.get("dry_run") and not data.get("full"):
        groups = layout.groups()
        kinds = [(group["services"], group["count"]) for group in groups]
        return {"layout": layout, "groups": groups,
                "counts": planner.count_new(kinds, view.services, sorted(resources))}
    nodes = [dict(node, id=f"n{i}") for i, node in enumerate(layout.nodes, start=1)]
    tasks = planner.plan_change([], nodes, view.services, new_resources=sorted(resources))
    if data.get("dry_run"):
        # A plan shows the layout even before the plugins are installed (e.g. a Coopr catalog
        # just imported); running it needs them.
        return {"layout": layout, "tasks": tasks}
    check_plugins(view, layout.provider, layout.services, resources)
    # %cluster.owner%: the user it is for; the local owner's clusters keep the tenant, as
    # before users existed.
    spec = snapshot(template, view, layout, config,
                    data.get("owner") or (tenant if owner == OWNER else owner))
    cluster_id = _new_id("c")
    now = time.time()
    expires_at = leases.initial_expiry(template, data.get("lease"), now)
    with store.write() as db:
        row = db.execute("SELECT id, status FROM clusters WHERE tenant = ? AND name = ? AND"
                         " status != 'DELETED'", [tenant, name]).fetchone()
        if row and row[1] == "FAILED" and not node_rows(store, row[0]) and \
                not running_operation(store, row[0]):
            # A create that was rolled back left nothing: its name is free again (its
            # operations and events stay in the store under its id).
            db.execute("UPDATE clusters SET status = 'DELETED', updated_at = ? WHERE id = ?",
                       [now, row[0]])
        elif row:
            raise Conflict(f"cluster '{name}' already exists", {"entity": "cluster", "name": name})
        # Counted inside the write lock: no other create can slip in between.
        quotas.check(db, tenant, owner, clusters=1, nodes=len(nodes))
        db.execute("INSERT INTO clusters (id, tenant, name, template, provider, status, spec,"
                   " created_at, updated_at, owner, expires_at) VALUES (?, ?, ?, ?, ?,"
                   " 'CREATING', ?, ?, ?, ?, ?)",
                   [cluster_id, tenant, name, template["name"], layout.provider, store.seal(spec),
                    now, now, owner, expires_at])
        _insert_nodes(db, cluster_id, name, nodes, now)
        managed_records.insert(db, store, cluster_id, resources, now)
        op_id = _insert_operation(db, cluster_id, "create", {"keep_on_failure": keep}, tasks)
    return {"cluster_id": cluster_id, "operation": op_id, "layout": layout, "tasks": tasks}


def _insert_nodes(db, cluster_id, cluster_name, nodes, now):
    db.conn.executemany(
        "INSERT INTO nodes (cluster_id, id, hostname, hardwaretype, imagetype, services, status,"
        " facts, created_at) VALUES (?, ?, ?, ?, ?, ?, 'PLANNED', '{}', ?)",
        [(cluster_id, n["id"], f"{cluster_name}-{n['id']}", n["hardwaretype"], n["imagetype"],
          json.dumps(n["services"]), now) for n in nodes])


def _next_node_ids(existing, count):
    used = {n["id"] for n in existing}
    number, result = 1, []
    while len(result) < count:
        if f"n{number}" not in used:
            result.append(f"n{number}")
        number += 1
    return result


def change(store, tenant, name, kind, data):
    """resize / add-services / remove-services: a new layout, then the plan between the two."""
    cluster = get_cluster(store, tenant, name)
    _ensure_created(store, cluster)
    if not data.get("dry_run"):
        _ensure_idle(store, cluster)
    current = node_rows(store, cluster["id"])
    if not current:
        # A plan asked while a delete is taking every node away (plans skip the idle check):
        # there is nothing to change from, and the size of zero is no error of the caller's.
        raise Conflict(f"cluster '{name}' has no live nodes ({cluster['status'].lower()}): "
                       "nothing to change", {"status": cluster["status"]})
    spec = cluster["spec"]
    on_cluster = sorted(spec["services"])
    request = {"size": len(current), "services": on_cluster, "provider": spec["provider"]["name"]}
    if kind == "resize":
        request["size"] = data["size"]
    else:
        wanted = data["services"]
        if kind == "add-services":
            request["services"] = sorted(set(on_cluster) | set(wanted))
        else:
            absent = sorted(set(wanted) - set(on_cluster))
            if absent:
                raise Unprocessable(f"not on cluster '{name}': {', '.join(absent)}",
                                      {"field": "services", "reason": "absent", "names": absent})
            request["services"] = sorted(set(on_cluster) - set(wanted))
            if not request["services"]:
                raise Unprocessable(f"removing every service of cluster '{name}' leaves "
                                      "nothing to run; delete the cluster instead",
                                      {"field": "services", "reason": "all"})
    old = [{k: n[k] for k in ("id", "services", "hardwaretype", "imagetype")} for n in current]
    try:
        template, view, layout = solve_request(store, tenant, request, current=old,
                                               template=spec["template"])
    except ValidationError as error:
        if isinstance(error, Unprocessable):
            raise
        # The body fitted the contract (checked before this); what the solver refuses here comes
        # from the cluster as it stands (schemathesis found a 400 for a resize to size 2).
        raise Unprocessable(f"cluster '{name}' cannot change so: {error.message}",
                            error.details) from error
    fresh = iter(_next_node_ids(current, layout.added))
    new_nodes = [dict(n, id=n["id"] or next(fresh)) for n in layout.nodes]
    services_catalog = {**spec["services"], **{s: view.services[s] for s in layout.services}}
    if data.get("dry_run") and not data.get("full"):
        return {"layout": layout, "counts": planner.count_change(old, new_nodes,
                                                                 services_catalog)}
    tasks = planner.plan_change(old, new_nodes, services_catalog)
    if data.get("dry_run"):
        return {"layout": layout, "tasks": tasks}
    check_plugins(view, layout.provider, layout.services)
    new_spec = snapshot(template, view, layout, {}, spec.get("owner", tenant))
    new_spec["config"] = spec["config"]
    new_spec["services"] = services_catalog
    now = time.time()
    with store.write() as db:
        _ensure_idle(store, cluster)
        quotas.check(db, tenant, cluster["owner"], nodes=len(new_nodes) - len(old))
        old_ids = {n["id"] for n in old}
        keep = {n["id"]: n for n in new_nodes if n["id"] in old_ids}
        for node_id in old_ids - set(keep):
            db.execute("UPDATE nodes SET status = 'REMOVING' WHERE cluster_id = ? AND id = ?",
                       [cluster["id"], node_id])
        for node_id, node in keep.items():
            db.execute("UPDATE nodes SET services = ? WHERE cluster_id = ? AND id = ?",
                       [json.dumps(node["services"]), cluster["id"], node_id])
        _insert_nodes(db, cluster["id"], cluster["name"],
                      [n for n in new_nodes if n["id"] not in old_ids], now)
        db.execute("UPDATE clusters SET status = 'UPDATING', spec = ?, updated_at = ? WHERE id = ?",
                   [store.seal({**spec, **new_spec}), now, cluster["id"]])
        op_id = _insert_operation(db, cluster["id"], kind, data, tasks)
    return {"cluster_id": cluster["id"], "operation": op_id, "layout": layout, "tasks": tasks}


def delete(store, tenant, name, data, reason=None):
    """Delete a cluster; ``reason`` (e.g. the janitor's) goes to its events with the operation."""
    cluster = get_cluster(store, tenant, name)
    if not data.get("dry_run"):
        _ensure_idle(store, cluster)
    current = node_rows(store, cluster["id"])
    old = [{k: n[k] for k in ("id", "services", "hardwaretype", "imagetype")} for n in current]
    resources = [r["name"] for r in managed_records.rows(store, cluster["id"])]
    if data.get("dry_run") and not data.get("full"):
        counts = planner.count_change(old, [], cluster["spec"]["services"],
                                      old_resources=resources)
        return {"counts": {**counts, "CLEANUP": 1}}
    tasks = planner.plan_change(old, [], cluster["spec"]["services"],
                                old_resources=resources)
    deletes = tuple(t.id for t in tasks if t.action == planner.DELETE)
    # Last, whatever the provider still holds for the cluster (found by label) and the
    # cluster's own resources (networks, security groups).
    tasks.append(planner.TaskSpec("cleanup", None, "CLEANUP", None, deletes))
    if data.get("dry_run"):
        return {"tasks": tasks}
    with store.write() as db:
        _ensure_idle(store, cluster)
        db.execute("UPDATE nodes SET status = 'REMOVING' WHERE cluster_id = ? AND status !="
                   " 'DELETED'", [cluster["id"]])
        db.execute("UPDATE clusters SET status = 'DELETING', updated_at = ? WHERE id = ?",
                   [time.time(), cluster["id"]])
        op_id = _insert_operation(db, cluster["id"], "delete", {}, tasks)
        if reason:
            db.execute("INSERT INTO events (cluster_id, operation_id, at, message)"
                       " VALUES (?, ?, ?, ?)", [cluster["id"], op_id, time.time(),
                                                f"{reason}: deleting the cluster"])
    return {"cluster_id": cluster["id"], "operation": op_id, "tasks": tasks}


def services_op(store, tenant, name, kind, data):
    """start / stop / restart / reconfigure, on all services or some (their closure comes too)."""
    cluster = get_cluster(store, tenant, name)
    _ensure_created(store, cluster)
    if not data.get("dry_run"):
        _ensure_idle(store, cluster)
    targets = data.get("services") or None
    restart = data.get("restart", False)
    config = data.get("config")
    current = node_rows(store, cluster["id"])
    nodes = [{k: n[k] for k in ("id", "services", "hardwaretype", "imagetype")} for n in current]
    if data.get("dry_run") and not data.get("full"):
        return {"counts": planner.count_services(kind, nodes, cluster["spec"]["services"],
                                                 targets=targets, restart=restart)}
    tasks = planner.plan_services(kind, nodes, cluster["spec"]["services"], targets=targets,
                                  restart=restart)
    if data.get("dry_run"):
        return {"tasks": tasks}
    spec = cluster["spec"]
    if kind == "reconfigure" and config is not None:
        spec = dict(spec, config=catalog.merge(spec["config"], config))
    with store.write() as db:
        _ensure_idle(store, cluster)
        db.execute("UPDATE clusters SET status = 'UPDATING', spec = ?, updated_at = ? WHERE id = ?",
                   [store.seal(spec), time.time(), cluster["id"]])
        op_id = _insert_operation(db, cluster["id"], kind, {"services": targets,
                                                            "restart": restart}, tasks)
    return {"cluster_id": cluster["id"], "operation": op_id, "tasks": tasks}


def retry(store, tenant, name):
    """Resume the cluster's latest operation, if it failed or was cancelled, from where it
    stopped. Only the latest: an older failure that a later operation went past is history."""
    cluster = get_cluster(store, tenant, name)
    _ensure_idle(store, cluster)
    row = store.db.execute("SELECT id, kind, status, params FROM operations WHERE cluster_id = ?"
                           " ORDER BY created_at DESC LIMIT 1", [cluster["id"]]).fetchone()
    if row is None or row[2] not in ("FAILED", "CANCELLED") or \
            cluster["status"] not in ("INCONSISTENT", "FAILED"):
        raise Conflict(f"cluster '{name}' has no failed operation to retry (status "
                       f"{cluster['status']})", {"status": cluster["status"]})
    op_id, kind, _, params = row
    if cluster["status"] == "FAILED" and not json.loads(params).get("keep_on_failure"):
        raise Conflict(f"cluster '{name}' was rolled back; create it again",
                       {"status": cluster["status"]})
    with store.write() as db:
        db.execute("UPDATE tasks SET status = 'PENDING', attempts = 0 WHERE operation_id = ? AND"
                   " status IN ('FAILED', 'RUNNING')", [op_id])
        db.execute("UPDATE operations SET status = 'RUNNING', error = NULL, finished_at = NULL"
                   " WHERE id = ?", [op_id])
        status = {"create": "CREATING", "delete": "DELETING"}.get(kind, "UPDATING")
        db.execute("UPDATE clusters SET status = ? WHERE id = ?", [status, cluster["id"]])
    return {"cluster_id": cluster["id"], "operation": op_id}
