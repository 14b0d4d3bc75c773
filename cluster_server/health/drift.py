"""Drift: what a cluster's provider holds, compared with what the store says Shoal made.

One batched ``Provider.inventory`` call per provider (one request per page of resources) for
every cluster checked at once; ``compare`` is pure. A node is ``missing`` (gone at the
provider), ``stopped`` (there but not running) or ``changed`` (another address or flavor); a
resource labelled with the cluster that no node of the store holds is an ``orphan``."""

import json
import time

from cluster_server import operations, planner
from cluster_server.errors import Conflict
from cluster_server.plugins import NodeState

_FLAVOR_KEYS = ("instance_type", "machine_type", "flavor")


def compare(nodes, inventory):
    """``nodes``: the store's live nodes (``operations.node_rows``); ``inventory``: NodeInfos the
    provider holds for the cluster. Returns the report (JSON-able)."""
    held = {info.resource_id: info for info in inventory}
    report_nodes, known = [], set()
    for node in nodes:
        recorded = node["facts"].get("resource") or {}
        resource_id = recorded.get("resource_id")
        if not resource_id:
            continue  # never made (its CREATE did not run): nothing to compare
        known.add(resource_id)
        entry = {"node": node["id"], "resource_id": resource_id, "state": "ok", "detail": ""}
        info = held.get(resource_id)
        if info is None or info.state == NodeState.GONE:
            entry.update(state="missing", detail="the provider no longer has it")
        elif info.state == NodeState.FAILED:
            entry.update(state="stopped", detail=info.error or "not running")
        else:
            changes = []
            was = (recorded.get("addresses") or {}).get("access_v4") or ""
            now = info.addresses.get("access_v4") or ""
            if was and now and was != now:
                changes.append(f"address {was} -> {now}")
            for key in _FLAVOR_KEYS:
                before, after = (recorded.get("extra") or {}).get(key), info.extra.get(key)
                if before and after and before != after:
                    changes.append(f"{key} {before} -> {after}")
            if changes:
                entry.update(state="changed", detail="; ".join(changes))
        report_nodes.append(entry)
    orphans = [{"resource_id": info.resource_id, "state": info.state.value,
                "node": str(info.extra.get("node") or info.extra.get("node_id") or ""),
                "address": info.addresses.get("access_v4") or ""}
               for resource_id, info in sorted(held.items())
               if resource_id not in known and info.state != NodeState.GONE]
    drifted = bool(orphans) or any(n["state"] != "ok" for n in report_nodes)
    return {"drifted": drifted, "nodes": report_nodes, "orphans": orphans}


def provider_key(cluster):
    """Clusters whose provider entries are the same share one provider instance and one
    batched listing."""
    return json.dumps(cluster["spec"]["provider"], sort_keys=True)


def inventories(runner, clusters):
    """{cluster id: [NodeInfo]} for ``clusters`` (dicts with id and spec): one ``inventory``
    call per provider entry."""
    groups = {}
    for cluster in clusters:
        groups.setdefault(provider_key(cluster), []).append(cluster)
    result = {}
    for members in groups.values():
        provider = runner.provider(members[0])
        result.update(provider.inventory([c["id"] for c in members]))
    return result


def check(store, runner, clusters):
    """{cluster id: report} for ``clusters``."""
    held = inventories(runner, clusters)
    return {c["id"]: compare(operations.node_rows(store, c["id"]), held.get(c["id"], []))
            for c in clusters}


def plan_repair(store, tenant, name, report, dry_run=False):
    """An operation that replaces the missing and stopped nodes of ``report`` (a stopped one is
    deleted first) and runs their services' actions; the kept nodes re-CONFIGURE, as after a
    resize (a balancer learns the new addresses). Returns {"tasks", "operation"?}."""
    cluster = operations.get_cluster(store, tenant, name)
    operations._ensure_created(store, cluster)
    broken = {n["node"]: n["state"] for n in report["nodes"] if n["state"] in ("missing",
                                                                             "stopped")}
    if not broken:
        raise Conflict(f"cluster '{name}': nothing to repair (no node is missing or stopped)",
                       {"reason": "nothing to repair"})
    if not dry_run:
        operations._ensure_idle(store, cluster)
    current = operations.node_rows(store, cluster["id"])
    layout = [{k: n[k] for k in ("id", "services", "hardwaretype", "imagetype")} for n in current]
    tasks = planner.plan_change([n for n in layout if n["id"] not in broken], layout,
                                cluster["spec"]["services"])
    discards = {node: f"{node}:discard" for node, state in broken.items() if state == "stopped"}
    tasks = [planner.TaskSpec(task_id, node, planner.DELETE, None, ())
             for node, task_id in sorted(discards.items())] + [
        planner.TaskSpec(t.id, t.node_id, t.action, t.service,
                         t.depends_on + ((discards[t.node_id],) if t.action == planner.CREATE
                                         and t.node_id in discards else ()))
        for t in tasks]
    if dry_run:
        return {"tasks": tasks}
    with store.write() as db:
        operations._ensure_idle(store, cluster)
        for node in current:
            if node["id"] not in broken:
                continue
            facts = dict(node["facts"])
            # A new generation is a new idempotency token: the create makes a new machine
            # instead of finding the one that went away (EC2 would hand back the terminated one).
            facts["generation"] = facts.get("generation", 0) + 1
            if broken[node["id"]] == "missing":
                facts.pop("resource", None)
            db.execute("UPDATE nodes SET facts = ?, status = 'PLANNED' WHERE cluster_id = ? AND"
                       " id = ?", [json.dumps(facts), cluster["id"], node["id"]])
        db.execute("UPDATE clusters SET status = 'UPDATING', updated_at = ? WHERE id = ?",
                   [time.time(), cluster["id"]])
        op_id = operations._insert_operation(db, cluster["id"], "repair",
                                             {"nodes": sorted(broken)}, tasks)
    return {"tasks": tasks, "operation": op_id, "cluster_id": cluster["id"],
            "nodes": sorted(broken)}
