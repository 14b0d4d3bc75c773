"""What the API answers, declared in the contract's schema language and published in the OpenAPI
document (``@returns``). Response shapes are built by the views; these declarations are what a
client generator and a fuzzer check them against, so each lists every key a view writes.
"""

import json
import pathlib

from cluster_server import catalog
from cluster_server.contract.schema import (BOOL, INT, NUMBER, OPTIONAL_STR, STR, Anything,
                                            Either, ListOf, MapOf, Obj, Scalar)

NAMES = ListOf(STR)
OPTIONAL_NUMBER = Scalar(int, float, type(None), label="a number or null")

WARNING = Obj({"entity": STR, "name": STR, "fields": NAMES, "missing": STR, "ref": STR,
               "message": STR}, open_keys=True).described("a reference to a missing entity")
WARNINGS = ListOf(WARNING)

PLANNED_TASK = Obj({"id": STR, "node": OPTIONAL_STR, "action": STR, "service": OPTIONAL_STR,
                    "depends_on": NAMES}, required=("id", "action"))
GROUP = Obj({"count": INT, "services": NAMES, "hardwaretype": STR, "imagetype": STR,
             "cost": NUMBER})
LAYOUT = Obj({"nodes": ListOf(MapOf(Anything())), "cost": NUMBER, "provider": STR,
              "services": NAMES, "added": Anything(), "removed": ListOf(Anything()),
              "changed": ListOf(Anything()), "hardware_costs": MapOf(NUMBER)})
PLAN_SUMMARY = Obj({"nodes": INT, "tasks": INT, "actions": MapOf(INT)},
                   required=("tasks", "actions")).described(
    "how many nodes, and how many tasks of each action (JOINs, which run nothing, left out)")
PLAN = Obj({"layout": LAYOUT, "groups": ListOf(GROUP), "summary": PLAN_SUMMARY,
            "tasks": ListOf(PLANNED_TASK)}, required=("summary",)).described(
    "the solved layout's node groups and the task counts; with ?full=1 also the layout's "
    "nodes and every task")
SUBMITTED = Obj({"cluster_id": STR, "operation": STR, "tasks": INT, "layout": LAYOUT,
                 "groups": ListOf(GROUP)}, required=("operation",)).described(
    "the operation now running in the background")
CONTROLLED = Obj({"operation": STR, "requested": STR}, required=("operation", "requested"))

CLUSTER_ROW = Obj({"name": STR, "status": STR, "template": STR, "provider": STR,
                   "created_at": NUMBER, "nodes": INT, "cost": NUMBER, "health": STR,
                   "drifted": BOOL, "owner": STR, "expires_at": OPTIONAL_NUMBER})
NODE = Obj({"id": STR, "hostname": STR, "status": STR, "services": NAMES, "hardwaretype": STR,
            "imagetype": STR, "address": STR, "ports": Anything(),
            "metrics": MapOf(Anything()).described("load, memory and disk, read on the node")})
DRIFT_NODE = Obj({"node": STR, "resource_id": STR, "state": STR, "detail": STR})
ORPHAN = Obj({"resource_id": STR, "state": STR, "node": STR, "address": STR})
DRIFT_RESOURCE = Obj({"resource": STR, "type": STR, "resource_id": STR, "state": STR,
                      "detail": STR}).described("a managed database against the cloud")
DRIFT = Obj({"checked_at": NUMBER, "drifted": BOOL, "nodes": ListOf(DRIFT_NODE),
             "orphans": ListOf(ORPHAN), "resources": ListOf(DRIFT_RESOURCE)}).described(
    "the last comparison with the provider")
MANAGED = Obj({"name": STR, "type": STR, "status": STR, "resource_id": STR, "endpoint": STR,
               "port": Scalar(int, type(None), label="a port or null"), "user": STR,
               "database": STR}).described("a managed resource (database); never its password")
CLUSTER = Obj({
    "id": STR, "name": STR, "status": STR, "template": STR, "provider": STR,
    "owner": STR, "expires_at": OPTIONAL_NUMBER,
    "services": NAMES, "size": INT, "cost": NUMBER, "node_counts": MapOf(INT),
    "nodes": ListOf(NODE),
    "next": Scalar(int, type(None), label="the next page's cursor (?after=) or null"),
    "resources": ListOf(MANAGED),
    "links": ListOf(Obj({"label": STR, "url": STR})),
    "operation": Either(Obj({"id": STR, "kind": STR, "status": STR, "error": OPTIONAL_STR}),
                        Scalar(type(None), label="null"), label="the last operation or null"),
    "health": STR.described("HEALTHY, DEGRADED or UNKNOWN"), "health_reason": STR,
    "drift": Either(DRIFT, Scalar(type(None), label="null"), label="a drift report or null"),
}).described("a cluster with its nodes, links and last operation")
HEALTH_ROW = Obj({"node": STR, "service": STR, "state": STR, "since": NUMBER, "output": STR,
                  "restarts": INT, "supervision": STR, "checked_at": OPTIONAL_NUMBER})
CHECK = Obj({"drifted": BOOL, "nodes": ListOf(DRIFT_NODE), "orphans": ListOf(ORPHAN),
             "resources": ListOf(DRIFT_RESOURCE),
             "checked_at": NUMBER, "deleted_orphans": NAMES,
             "repair": Obj({"tasks": ListOf(PLANNED_TASK), "operation": OPTIONAL_STR,
                            "nodes": NAMES})}).described(
    "what the provider holds against the store; with repair, the plan (and its operation)")
TASK = Obj({"id": STR, "operation": STR, "node": STR, "action": STR, "service": OPTIONAL_STR,
            "status": STR, "attempts": INT, "output": STR, "duration": OPTIONAL_NUMBER,
            "queue": OPTIONAL_STR.described("the Celery queue it was sent to"),
            "worker": OPTIONAL_STR.described("the Celery worker that ran it")})
OPERATION = Obj({"id": STR, "kind": STR, "status": STR, "error": OPTIONAL_STR, "cluster": STR,
                 "cluster_status": STR, "counts": MapOf(INT), "total": INT,
                 "running": NAMES}).described("an operation's status and task counts")
EVENTS = Obj({"status": STR, "events": ListOf(Obj({"id": INT, "at": NUMBER, "message": STR,
                                                    "operation": OPTIONAL_STR}))})

SHIPPED = pathlib.Path(catalog.__file__).with_name("catalog_default")


def _example(plural):
    """The shipped catalog's first entity of a collection: an example known to be valid."""
    files = sorted((SHIPPED / plural).glob("*.json"))
    return json.loads(files[0].read_text()) if files else None


ENTITY = {catalog.DIRS[kind]: catalog.SCHEMAS[kind].described(
    f"a {kind} of the catalog", example=_example(catalog.DIRS[kind])) for kind in catalog.KINDS}
WRITTEN = {plural: Obj({"entity": schema, "warnings": WARNINGS})
           for plural, schema in ENTITY.items()}
LISTED = {plural: ListOf(schema) for plural, schema in ENTITY.items()}
DELETED = Obj({"deleted": STR, "warnings": WARNINGS})
IMPORTED = Obj({"imported": INT, "warnings": WARNINGS})
EXPORT = Obj({"entities": ListOf(Obj({"kind": STR, "body": MapOf(Anything())}))})
CHECKED = Obj({"warnings": WARNINGS})

VERSION = Obj({"version": INT, "status": STR, "size": INT, "sha256": STR, "created_at": NUMBER},
              open_keys=True)
RESOURCE = Obj({"kind": STR, "name": STR, "active": Scalar(int, type(None), label="a version"),
                "staged": Scalar(int, type(None), label="a version"),
                "versions": ListOf(VERSION), "uploaded": INT})
RESOURCE_ROW = Obj({"kind": STR, "name": STR, "active": Scalar(int, type(None), label="v"),
                    "staged": Scalar(int, type(None), label="v"), "latest": INT,
                    "versions": INT}, open_keys=True)
RESOURCE_DELETED = Obj({"kind": STR, "name": STR, "deleted": Anything()})

OPTIONAL_INT = Scalar(int, type(None), label="a whole number or null")
PRINCIPAL = Obj({"user": STR, "tenant": STR, "role": STR})
TENANT = Obj({"name": STR, "created_at": NUMBER, "max_clusters": OPTIONAL_INT,
              "max_nodes": OPTIONAL_INT, "clusters": INT, "nodes": INT, "users": INT})
USER = Obj({"name": STR, "tenant": STR, "role": STR, "created_at": NUMBER,
            "max_clusters": OPTIONAL_INT, "max_nodes": OPTIONAL_INT, "clusters": INT,
            "nodes": INT, "tokens": INT})
TOKEN = Obj({"id": STR, "user": STR, "tenant": STR, "created_at": NUMBER,
             "expires_at": OPTIONAL_NUMBER, "revoked_at": OPTIONAL_NUMBER, "state": STR})
ISSUED = Obj({"id": STR, "user": STR, "tenant": STR, "token": STR, "created_at": NUMBER,
              "expires_at": OPTIONAL_NUMBER}).described("a new token, shown this once")
GRANT = Obj({"template": STR, "user": OPTIONAL_STR})
GONE = Obj({"deleted": STR})
LEASE = Obj({"name": STR, "expires_at": NUMBER, "expires": STR})

SERVER = Obj({"version": STR, "pid": INT, "schema": INT, "home": STR, "engine": BOOL})
SETUP = MapOf(Anything()).described("the recorded choice per cloud (names and paths only)")
SHELL = MapOf(Anything()).described("the shell container to attach to")

# Links let a client (or a stateful fuzzer) chain create -> show -> operate -> delete.
CREATED_CLUSTER_LINKS = {
    name: {"operationId": op, "parameters": {"name": "$request.body#/name"}}
    for name, op in (("show", "clusters_show_cluster_get"),
                     ("tasks", "clusters_list_tasks_get"),
                     ("events", "clusters_cluster_events_get"),
                     ("resize", "clusters_cluster_operation_post_resize"),
                     ("stop", "clusters_cluster_operation_post_stop"),
                     ("delete", "clusters_delete_cluster_delete"))
}
