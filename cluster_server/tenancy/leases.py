"""Leases, with Coopr's semantics: a template's ``administration.leaseduration`` gives
``initial`` (a new cluster's lease), ``max`` (the longest a cluster may live, from its creation)
and ``step`` (the most one extension adds); each in ms or as "2d", "4h"; 0 = unlimited."""

import time

from cluster_server.errors import Conflict, Unprocessable
from cluster_server.tenancy.durations import describe, to_ms


def terms(template):
    """(initial, max, step) in ms of a template (0 where unset: unlimited)."""
    lease = (template.get("administration") or {}).get("leaseduration") or {}
    return tuple(to_ms(lease.get(key, 0) or 0, f"administration.leaseduration.{key}")
                 for key in ("initial", "max", "step"))


def initial_expiry(template, requested, now):
    """The expiry of a new cluster (None: it never expires). ``requested`` (--lease) may ask
    for less than the template gives, never more."""
    initial, most, _ = terms(template)
    if requested is None:
        return now + initial / 1000 if initial else None
    wanted = to_ms(requested, "lease")
    if wanted == 0:
        if initial or most:
            raise Unprocessable(f"lease: template '{template['name']}' gives at most "
                                f"{describe(initial or most)}, not an unlimited lease",
                                {"field": "lease", "reason": "over initial"})
        return None
    cap = initial or most
    if cap and wanted > cap:
        raise Unprocessable(f"lease: {describe(wanted)} is longer than the "
                            f"{describe(cap)} template '{template['name']}' gives",
                            {"field": "lease", "reason": "over initial", "limit_ms": cap})
    return now + wanted / 1000


def extended_expiry(cluster, by, beyond_max=False, now=None):
    """The new expiry of ``cluster`` (with spec, created_at and expires_at) after adding ``by``:
    at most ``step`` at once, and no later than ``max`` after its creation (an admin may pass
    ``max``: ``beyond_max``)."""
    now = time.time() if now is None else now
    name = cluster["name"]
    if cluster.get("expires_at") is None:
        raise Conflict(f"cluster '{name}' has no lease: it never expires",
                       {"field": "by", "reason": "no lease"})
    _, most, step = terms(cluster["spec"]["template"])
    adding = to_ms(by, "by")
    if adding <= 0:
        raise Unprocessable("by: an extension must add some time", {"field": "by",
                                                                    "reason": "zero"})
    if step and adding > step and not beyond_max:
        raise Unprocessable(f"cannot extend cluster '{name}' by {describe(adding)}: its "
                            f"template allows at most {describe(step)} per extension",
                            {"field": "by", "reason": "over step", "step_ms": step})
    expires = max(cluster["expires_at"], now) + adding / 1000
    if most and not beyond_max and (expires - cluster["created_at"]) * 1000 > most:
        latest = cluster["created_at"] + most / 1000
        raise Unprocessable(f"cannot extend cluster '{name}' by {describe(adding)}: its lease "
                            f"may not go past {describe(most)} from its creation (at "
                            f"{iso(latest)}); an admin can extend it further",
                            {"field": "by", "reason": "over max", "max_ms": most})
    return expires


def extend(store, cluster, by, beyond_max=False):
    expires = extended_expiry(cluster, by, beyond_max)
    with store.write() as db:
        db.execute("UPDATE clusters SET expires_at = ?, lease_warned_at = NULL WHERE id = ?",
                   [expires, cluster["id"]])
        db.execute("INSERT INTO events (cluster_id, operation_id, at, message) VALUES"
                   " (?, NULL, ?, ?)", [cluster["id"], time.time(),
                                        f"lease extended: expires at {iso(expires)}"])
    return expires


def iso(at):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if at else None
