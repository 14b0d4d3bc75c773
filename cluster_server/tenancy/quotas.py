"""Quotas: the most clusters and nodes a tenant (and, optionally, one user) may hold.

``check`` runs inside the BEGIN IMMEDIATE transaction that writes the create or resize, so the
count it reads cannot change before the write commits: concurrent creates queue on the write
lock and each sees the ones before it.
"""

from cluster_server.errors import QuotaExceeded
from cluster_server.tenancy.directory import usage


def check(db, tenant, owner, clusters=0, nodes=0):
    """Refuse adding ``clusters`` and ``nodes`` when a quota of the tenant or of the owner would
    be exceeded; the error names the quota, its limit and what is in use."""
    if clusters <= 0 and nodes <= 0:
        return
    limits = [("tenant", tenant, None, db.execute(
        "SELECT max_clusters, max_nodes FROM tenants WHERE name = ?", [tenant]).fetchone())]
    limits.append(("user", owner, owner, db.execute(
        "SELECT max_clusters, max_nodes FROM users WHERE tenant = ? AND name = ?",
        [tenant, owner]).fetchone()))
    for scope, name, who, row in limits:
        if row is None or (row[0] is None and row[1] is None):
            continue
        in_use = usage(db, tenant, who)
        for (quota, limit), used, adding in zip((("max_clusters", row[0]),
                                                 ("max_nodes", row[1])), in_use,
                                                (clusters, nodes)):
            if limit is not None and adding > 0 and used + adding > limit:
                what = quota.split("_")[1]
                raise QuotaExceeded(
                    f"quota {quota} of {scope} '{name}' exceeded: limit {limit}, in use {used}, "
                    f"this request adds {adding} {what}",
                    {"quota": quota, "scope": scope, "name": name, "limit": limit,
                     "in_use": used, "requested": adding})
