"""Supervision: restart a failing service instance as a normal operation (STOP and START tasks,
planned by the planner, run by the engine), at most ``max_restarts`` times within ``window``
seconds, as supervisord's autorestart does; past the limit, leave it and say so."""

import json
import time

from cluster_server import operations, planner
from cluster_server.health.state import add_event

DEFAULT_MAX_RESTARTS = 3
DEFAULT_WINDOW = 300.0


def policy(service_body):
    """(restart, max_restarts, window) of a service, with the defaults."""
    return (service_body.get("restart") or "never",
            int(service_body.get("max_restarts", DEFAULT_MAX_RESTARTS)),
            float(service_body.get("window") or DEFAULT_WINDOW))


def consider(store, engine, cluster_id, node_id, service, service_body, output):
    """The instance failed its checks ``retries`` times in a row: restart it, or give up.

    Returns the operation id of the restart, or None (no restart policy, the limit is reached,
    or the cluster is busy with another operation: the next failed check asks again)."""
    restart, limit, window = policy(service_body)
    if restart != "on-failure":
        return None
    now = time.time()
    with store.write() as db:
        row = db.execute("SELECT restarts, gave_up FROM health WHERE cluster_id = ? AND"
                         " node_id = ? AND service = ?", [cluster_id, node_id, service]).fetchone()
        cluster = db.execute("SELECT status, spec FROM clusters WHERE id = ?",
                             [cluster_id]).fetchone()
        if row is None or cluster is None or cluster[0] != "ACTIVE" or \
                operations.running_operation(store, cluster_id):
            return None
        restarts = json.loads(row[0])
        recent = [at for at in restarts if at > now - window]
        if len(recent) >= limit:
            if not row[1]:
                db.execute("UPDATE health SET gave_up = 1 WHERE cluster_id = ? AND node_id = ?"
                           " AND service = ?", [cluster_id, node_id, service])
                add_event(db, cluster_id, f"supervision: {service} on {node_id} failed again "
                          f"after {len(recent)} restart(s) within {window:g} s; not restarting "
                          "it (cluster DEGRADED)")
            return None
        spec = store.unseal(cluster[1])
        tasks = planner.plan_restart([(node_id, service)], spec["services"])
        # Counted before it runs: a restart that fails counts too, or a service whose START
        # fails would be restarted forever.
        restarts.append(now)
        db.execute("UPDATE health SET restarts = ?, failures = 0, gave_up = 0 WHERE"
                   " cluster_id = ? AND node_id = ? AND service = ?",
                   [json.dumps(restarts[-1000:]), cluster_id, node_id, service])
        db.execute("UPDATE clusters SET status = 'UPDATING', updated_at = ? WHERE id = ?",
                   [now, cluster_id])
        op_id = operations._insert_operation(
            db, cluster_id, "restart", {"services": [service], "nodes": [node_id],
                                        "reason": "supervision"}, tasks)
        add_event(db, cluster_id, f"supervision: restarting {service} on {node_id} (restart "
                  f"{len(recent) + 1} of {limit} within {window:g} s): {output[-200:]}", op_id)
    engine.submit(op_id)
    return op_id
