"""The health table: each service instance's last state, read for ``cluster health``, ``list``
and ``show``; changes are written with a cluster event in the same transaction."""

import json
import time

HEALTHY, FAILING, UNKNOWN = "healthy", "failing", "unknown"
# A cluster's health, from its instances': every one healthy, any failing, else unknown.
CLUSTER_HEALTHY, CLUSTER_DEGRADED, CLUSTER_UNKNOWN = "HEALTHY", "DEGRADED", "UNKNOWN"

_LIVE = "n.status NOT IN ('DELETED', 'REMOVING')"


def rows(store, cluster_id):
    """One row per live node and checked service: node, service, state, since, output,
    restarts (within the supervision window or not: every restart made)."""
    found = store.db.execute(
        "SELECT h.node_id, h.service, h.state, h.since, h.output, h.restarts, h.gave_up,"
        " h.checked_at FROM health h JOIN nodes n ON n.cluster_id = h.cluster_id AND"
        f" n.id = h.node_id WHERE h.cluster_id = ? AND {_LIVE} ORDER BY h.node_id, h.service",
        [cluster_id]).fetchall()
    return [{"node": r[0], "service": r[1], "state": r[2], "since": r[3], "output": r[4],
             "restarts": len(json.loads(r[5])), "supervision": "stopped" if r[6] else "",
             "checked_at": r[7]} for r in found]


def summaries(store, cluster_ids=None):
    """{cluster id: (HEALTHY|DEGRADED|UNKNOWN, reason)} from the instances' rows."""
    query = ("SELECT h.cluster_id, h.node_id, h.service, h.state, h.gave_up, h.restarts FROM"
             " health h JOIN nodes n ON n.cluster_id = h.cluster_id AND n.id = h.node_id WHERE"
             f" {_LIVE}")
    params = []
    if cluster_ids is not None:
        query += f" AND h.cluster_id IN ({','.join('?' * len(cluster_ids))})"
        params = list(cluster_ids)
    states = {}
    for cluster_id, node, service, state, gave_up, restarts in store.db.execute(query, params):
        states.setdefault(cluster_id, []).append((node, service, state, gave_up,
                                                  len(json.loads(restarts))))
    result = {}
    for cluster_id in (cluster_ids if cluster_ids is not None else states):
        result[cluster_id] = summary(states.get(cluster_id, []))
    return result


def summary(instances):
    if not instances:
        return CLUSTER_UNKNOWN, "no health checks yet"
    failing = [i for i in instances if i[2] == FAILING]
    if failing:
        reasons = []
        for node, service, _, gave_up, restarts in failing:
            reason = f"{service} on {node} failing"
            if gave_up:
                reason += f" (supervision stopped after {restarts} restart(s))"
            reasons.append(reason)
        return CLUSTER_DEGRADED, "; ".join(reasons)
    unknown = [i for i in instances if i[2] == UNKNOWN]
    if unknown:
        return CLUSTER_UNKNOWN, f"{len(unknown)} instance(s) not checked yet"
    return CLUSTER_HEALTHY, ""


def drift(store, cluster_id):
    row = store.db.execute("SELECT checked_at, drifted, report FROM drift WHERE cluster_id = ?",
                           [cluster_id]).fetchone()
    if row is None:
        return None
    return {"checked_at": row[0], "drifted": bool(row[1]), **json.loads(row[2])}


def save_drift(store, cluster_id, report, event=None):
    with store.write() as db:
        db.execute("INSERT OR REPLACE INTO drift (cluster_id, checked_at, drifted, report)"
                   " VALUES (?, ?, ?, ?)", [cluster_id, time.time(), int(report["drifted"]),
                                            json.dumps(report)])
        if event:
            add_event(db, cluster_id, event)


def add_event(db, cluster_id, message, operation_id=None):
    db.execute("INSERT INTO events (cluster_id, operation_id, at, message) VALUES (?, ?, ?, ?)",
               [cluster_id, operation_id, time.time(), message])
