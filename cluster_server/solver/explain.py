"""Explaining a failure: the constraints that rule a size out, and the nearest size that works."""

from dataclasses import replace

from cluster_server.errors import LayoutError
from cluster_server.solver.search import _search
from cluster_server.solver.words import _at_least, _at_most, _join, _nodes_word, _others


# When a size fails, how many larger sizes to try to name the smallest one that works.
SIZE_SEARCH_LIMIT = 200


def _explain(problem, size):
    """A LayoutError naming the constraints that rule out ``size`` nodes and a size that works."""
    details = {"size": size, "template": problem.template}
    smallest = _smallest_size(problem, size)
    largest = None if smallest is not None else _largest_size(problem, size)
    if smallest is not None:
        culprits = _minimal(problem, size, _relax_minimum)
        details.update(smallest_size=smallest, constraints=_facts(problem, culprits))
        reasons = _too_small_reasons(problem, culprits)
        cannot, better = "hold", f"the smallest size is {smallest}"
    elif largest is not None:
        culprits = _minimal(problem, size, _relax_maximum)
        details.update(largest_size=largest, constraints=_facts(problem, culprits))
        reasons = _too_large_reasons(problem, culprits)
        cannot, better = "be filled", f"the largest size is {largest}"
    else:
        details["constraints"] = _facts(problem, list(range(len(problem.units))))
        reasons, better = [], "no size nearby works either"
    if not reasons:
        return LayoutError(f"no layout of {size} {_nodes_word(size)} satisfies the quantities and "
                           f"placement rules of template {problem.template}; {better}", details)
    if cannot == "hold":
        alone = len(culprits) == 1 and len(problem.units[culprits[0]].services) == 1
        cannot += " it" if alone else " them"
    return LayoutError(f"{'; '.join(reasons)}, so a cluster of {size} {_nodes_word(size)} "
                       f"cannot {cannot}; {better}", details)


def _smallest_size(problem, size):
    # Above the smallest size that works, bigger ones work too (more free nodes). So stride up
    # in growing steps to one that works, then bisect back.
    start = max([size + 1] + [unit.lo for unit in problem.units])
    high = problem.size_range[1]
    limit = start + SIZE_SEARCH_LIMIT if high is None else min(high, start + SIZE_SEARCH_LIMIT)
    bad, stride, good = start - 1, 1, None
    while bad + stride <= limit:
        if _search(problem, bad + stride):
            good = bad + stride
            break
        bad, stride = bad + stride, stride * 2
    if good is None:
        return None
    while good - bad > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if _search(problem, middle) else (good, middle)
    return good


def _largest_size(problem, size):
    # Too many nodes only happens when every node needs a capped service. Step down in growing
    # strides to a size that works, then bisect between it and the failing size.
    low, stride, good = problem.size_range[0], 1, None
    while size - stride >= low:
        if _search(problem, size - stride):
            good = size - stride
            break
        stride *= 2
    if good is None:
        return None
    bad = size
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if _search(problem, middle) else (good, middle)
    return good


def _relax_minimum(unit):
    return replace(unit, lo=0)


def _relax_maximum(unit):
    return replace(unit, hi=None)


def _minimal(problem, size, relax):
    """A smallest set of units whose limits alone rule the size out (a deletion filter)."""
    keep = list(range(len(problem.units)))
    for i in range(len(problem.units)):
        trial = [j for j in keep if j != i]
        units = [u if j in trial else relax(u) for j, u in enumerate(problem.units)]
        if _search(replace(problem, units=units), size) is None:
            keep = trial
    return keep


def _too_small_reasons(problem, culprits):
    """'x needs at least 2 nodes and cannot share a node with y', one clause per culprit."""
    units = sorted((problem.units[i] for i in culprits), key=lambda u: (-u.lo, u.services))
    groups = [members for unit_set, members in problem.conflicts if unit_set <= set(culprits)]
    has_groups = bool(groups)
    reasons, mentioned = [], set()
    for unit in units:
        own = next((g for g in groups if unit.lo_from in g), None)
        own = own or next((g for g in groups if set(g) & set(unit.services)), None)
        reason = f"{unit.lo_from} needs {_at_least(unit.lo)}"
        if own is not None:
            me = unit.lo_from if unit.lo_from in own else min(set(own) & set(unit.services))
            reason += f" and cannot share a node with {_others(own, me)}"
            groups.remove(own)
            mentioned.update(own)
        if own is not None or unit.lo > 1 or not mentioned & set(unit.services):
            reasons.append(reason)
        mentioned.update(unit.services)
    reasons += [f"{g[0]} cannot share a node with {_others(g, g[0])}" for g in groups]
    if not has_groups:
        reasons += [_hardware_clause(u) for u in units if u.hardware is not None]
    return reasons


def _too_large_reasons(problem, culprits):
    limits = [f"{u.hi_from} is limited to {_at_most(u.hi)}" for u in
              sorted((problem.units[i] for i in culprits), key=lambda u: u.services)
              if u.hi is not None]
    if not limits:
        return []
    return ["every node needs at least one service, and " + _join(limits)]


def _hardware_clause(unit):
    return f"{unit.services[0]} runs only on {_join(sorted(unit.hardware))}"


def _facts(problem, culprits):
    """Machine-readable constraints behind a failure, for LayoutError details."""
    facts = []
    for i in culprits:
        unit = problem.units[i]
        facts.append({"kind": "quantities", "services": list(unit.services), "min": unit.lo,
                      "max": unit.hi})
        if len(unit.services) > 1:
            facts.append({"kind": "mustcoexist", "services": list(unit.services)})
        if unit.hardware is not None:
            facts.append({"kind": "hardwaretypes", "services": list(unit.services),
                          "allowed": sorted(unit.hardware)})
    for unit_set, members in problem.conflicts:
        if unit_set <= set(culprits):
            facts.append({"kind": "cantcoexist", "services": list(members)})
    return facts
