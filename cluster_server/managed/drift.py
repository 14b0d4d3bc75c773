"""Drift of managed resources: what the cloud still holds of the databases Shoal made.

One batched ``Database.describe`` per (cluster provider entry, database type) for every cluster
checked at once, as the poller does while waiting. ``compare`` is pure. A database is
``missing`` when the cloud no longer knows it (deleted out of band), ``failed`` when the cloud
says it is broken or being deleted, ``unknown`` when the cloud could not be asked, ``ok``
otherwise. ``cluster check`` (cluster_server/health/drift.py) adds these to each cluster's
report as ``resources``; one not ``ok`` makes the cluster drifted.
"""

import json
import logging

from cluster_server.errors import ShoalError
from cluster_server.managed import records
from cluster_server.plugins import DatabaseInfo, NodeState

LOG = logging.getLogger("shoal.managed")


def compare(rows, described):
    """``rows``: the cluster's live resource rows (``records.rows``); ``described``: {resource id:
    DatabaseInfo} from the plugins. Returns a JSON-able list, one entry per resource made."""
    report = []
    for item in rows:
        recorded = item["facts"].get("resource") or {}
        resource_id = recorded.get("resource_id")
        if not resource_id:
            continue  # never made (its CREATE did not run): nothing to compare
        entry = {"resource": item["name"], "type": item["type"], "resource_id": resource_id,
                 "state": "ok", "detail": ""}
        info = described.get(resource_id)
        if isinstance(info, ShoalError):
            entry.update(state="unknown", detail=f"could not ask: {info.message}")
        elif info is None or info.state == NodeState.GONE:
            entry.update(state="missing", detail="the cloud no longer has it")
        elif info.state == NodeState.FAILED:
            entry.update(state="failed", detail=info.error or "not available")
        elif info.endpoint and recorded.get("endpoint") and \
                info.endpoint != recorded["endpoint"]:
            entry.update(state="changed",
                         detail=f"endpoint {recorded['endpoint']} -> {info.endpoint}")
        report.append(entry)
    return report


def check(store, runner, clusters):
    """{cluster id: [resource drift entries]} for ``clusters`` (dicts with id and spec, as
    ``TaskRunner.cluster`` returns them); ``runner`` is the engine's TaskRunner, whose plugin
    instances (and their clients) are reused."""
    rows = {c["id"]: records.rows(store, c["id"]) for c in clusters}
    groups = {}  # (provider entry, type) -> (a cluster of the group, [DatabaseInfo])
    for cluster in clusters:
        for item in rows[cluster["id"]]:
            resource = item["facts"].get("resource")
            if not resource:
                continue
            key = (json.dumps(cluster["spec"]["provider"], sort_keys=True), item["type"])
            groups.setdefault(key, (cluster, []))[1].append(DatabaseInfo.from_dict(resource))
    described = {}
    for (_, entry_type), (cluster, infos) in groups.items():
        try:
            described.update(runner.managed.plugin(cluster, entry_type).describe(infos))
        except ShoalError as error:
            # The cloud could not be asked: not knowing is not "deleted out of band".
            LOG.warning("drift: describing %s databases failed: %s", entry_type, error)
            described.update({info.resource_id: error for info in infos})
    return {c["id"]: compare(rows[c["id"]], described) for c in clusters}
