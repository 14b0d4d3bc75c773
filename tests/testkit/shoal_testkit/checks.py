"""Checks a test makes against the fake cloud and the fake automator's log."""

from shoal_testkit import cloud


def entries(home, cluster_name=None, since=0):
    """Log entries from index ``since`` on, optionally of one cluster (by name)."""
    found = cloud.automator_log(home)[since:]
    return [e for e in found if cluster_name is None or e["cluster_name"] == cluster_name]


def runtime_order_violations(log, deps, action="START"):
    """Each ``action`` of A that began before every ``action`` of a runtime dependency B (in the
    same slice of log) had ended well. ``deps``: {A: [B, ...]}."""
    expected = {}
    for e in log:
        if e["action"] == action:
            expected.setdefault(e["service"], set()).add(e["node"])
    done = {}
    problems = []
    for e in log:
        if e["action"] != action:
            continue
        if e["event"] == "end" and e["ok"]:
            done.setdefault(e["service"], set()).add(e["node"])
        elif e["event"] == "begin":
            for dep in deps.get(e["service"], ()):
                missing = expected.get(dep, set()) - done.get(dep, set())
                if missing:
                    problems.append(f"{action} {e['service']} on {e['node']} began before "
                                    f"{action} {dep} ended on {', '.join(sorted(missing))}")
    return problems


def node_overlaps(log):
    """Actions that ran at the same time on one node (there must be one at a time)."""
    running = {}
    problems = []
    for e in log:
        key = (e["cluster"], e["node"])
        what = f"{e['action']} {e['service']}"
        if e["event"] == "begin":
            if key in running:
                problems.append(f"{what} began on {e['node']} while {running[key]} ran")
            running[key] = what
        else:
            running.pop(key, None)
    return problems


def actions(log, service=None, action=None, event="begin"):
    """(node, service, action) of the entries that match, in order."""
    return [(e["node"], e["service"], e["action"]) for e in log
            if e["event"] == event and (service is None or e["service"] == service)
            and (action is None or e["action"] == action)]


def orphans(home, cluster_id, node_addresses):
    """Instances labelled with the cluster that belong to no node, and nodes whose instance is
    not in the cloud. Nodes are matched to instances by address (each instance has its own), as
    ``shoal cluster show`` gives them."""
    live = {i["address"]: i["id"] for i in cloud.instances(home, cluster_id)}
    held = set(node_addresses)
    return sorted(live[a] for a in live.keys() - held), sorted(held - live.keys())
