"""The search: the cheapest plan of node kinds per pool for a size, or None if there is none."""

from dataclasses import dataclass

from cluster_server.solver.pools import _choose_removals, _pin, _pools, _prepare


@dataclass
class _Plan:
    pools: list
    structural: list  # per pool: kinds of its structural nodes (None: a removed node)
    upgrades: list  # per pool: [(kind, count)] free nodes that took a placed-after unit


def _search(problem, size):
    """The best layout of ``size`` nodes as a _Plan, or None if there is none."""
    if any(unit.lo > size for unit in problem.units):
        return None
    kept, _, more = _choose_removals(problem, size)
    fresh = dict.fromkeys(n["id"] for n in kept)
    if more:
        # Removing nodes that hold limited services moves services anyway: lay out afresh and
        # let the search pick which nodes go.
        plan = _search_kept(problem, size, kept, fresh, more)
    else:
        pins = _pin(problem, kept)
        plan = _search_kept(problem, size, kept, pins, 0)
        if plan is None and any(pin is not None for pin in pins.values()):
            # Keeping every placement can block all layouts (say, new nodes would be left with
            # nothing to hold): lay the kept nodes out afresh, still counting each lost service.
            plan = _search_kept(problem, size, kept, fresh, 0)
    return plan


def _search_kept(problem, size, kept, pins, more):
    units = problem.units
    pinned = [0] * len(units)
    for node in kept:
        for i in pins[node["id"]] or ():
            pinned[i] += 1
    capped = [unit.hi is not None and unit.hi < size for unit in units]
    need = [max(0, unit.lo - pinned[i]) for i, unit in enumerate(units)]
    cap = [unit.hi - pinned[i] if capped[i] else need[i] for i, unit in enumerate(units)]
    pools = _pools(problem, size - len(kept) + more, kept, pins)
    _prepare(pools, capped, set())
    later = _placed_later(problem, pools, kept, pins, capped, cap)
    for excluded in ([later, set()] if later else [set()]):
        plan = _solve(pools, size, units, capped, list(need), list(cap), excluded, more)
        if plan is not None and excluded:
            plan = _place_later(plan, {i: cap[i] for i in excluded})
            if plan is None:
                continue  # not enough free nodes to take them: search with them included
        return plan
    return None


def _placed_later(problem, pools, kept, pins, capped, cap):
    # A capped unit that a free node takes at no extra cost is best at its maximum, wherever
    # its copies sit. So the search can leave it out and put it on free nodes afterwards, which
    # keeps it out of the state. Exact when taking its copies off any layout leaves no worse
    # one: true if common services keep every node non-empty, or, for a new cluster, if a node
    # left empty can become a free node on the cheapest hardware. Never for a unit that a node
    # laid out afresh holds now (moving it would count as a move).
    if not problem.common:
        new = pools[-1]
        if kept or new.free is None or new.free.cost != problem.hardware[0][0]:
            return set()
    fresh = set().union(*(set(n["services"]) for n in kept if pins[n["id"]] is None))
    return {i for i, unit in enumerate(problem.units)
            if capped[i] and cap[i] > 0 and not set(unit.services) & fresh
            and any(pool.supply and _upgrade(pool, {i}) for pool in pools)}


def _solve(pools, size, units, capped, need, cap, excluded, more):
    for i in excluded:
        need[i] = cap[i] = 0
    _prepare(pools, capped, excluded)
    _skip_units_the_filler_covers(pools, size, units, capped, need, cap)
    found = _walk(pools, capped, need, cap, more)
    if found is None:
        return None
    return _Plan(pools, found, [[] for _ in pools])


def _skip_units_the_filler_covers(pools, size, units, capped, need, cap):
    # An uncapped unit held by every pool's free kind is on every free node. If there are sure
    # to be enough free nodes for its minimum, it needs no place in the state.
    free = [pool.free for pool in pools if pool.supply and pool.free is not None]
    if len(free) < sum(1 for pool in pools if pool.supply):
        return
    covered = [i for i in range(len(need)) if not capped[i] and need[i] > 0
               and all(i in kind.units for kind in free)]
    rest = sum(cap[i] for i in range(len(cap)) if i not in covered)
    if covered and size - rest >= max(units[i].lo for i in covered):
        for i in covered:
            need[i] = cap[i] = 0


def _walk(pools, capped, need, cap, more):
    """Dynamic programme over capped counts (and nodes removed so far), one pool after another;
    per pool, structural nodes are added one at a time and its other nodes take its free kind."""
    m = len(need)
    layer = {(0,) * (m + 1): (0, None)}
    tables = []
    for pool in pools:
        layer, table = _pool_step(layer, pool, capped, cap, more, sum(cap) + more)
        tables.append((layer, table))
    best = None
    for state, (value, _) in layer.items():
        if state[m] == more and all(state[i] >= need[i] for i in range(m)) and \
                (best is None or value < best[0]):
            best = (value, state)
    if best is None:
        return None
    state, structural = best[1], []
    for out, table in reversed(tables):
        key, kinds = out[state][1], []
        while table[key][1] is not None:
            kinds.append(table[key][2])
            key = table[key][1]
        structural.append(kinds[::-1])
        state = key if isinstance(key[0], int) else key[0]
    return structural[::-1]


def _pool_step(layer, pool, capped, cap, more, most):
    """Extend every state by this pool's nodes. Values count each structural node relative to
    the free kind it replaces, so states reached with different numbers of structural nodes
    compare fairly. A removed node is a step with kind None. Returns {state: (value, key)} and
    the table {key: (value, previous key, kind)} to trace the steps back.

    At most ``most`` steps change anything. If the pool has that many nodes, its size cannot
    bind and a state is a key of its own, taken in order of its count sum; otherwise a key is
    (state, nodes used) and steps go one layer of used nodes at a time."""
    free_key = pool.free.key if pool.free is not None else 0
    removable = pool.hardwaretype is not None and more
    merged = pool.free is not None and pool.supply >= most
    if merged:
        def level(key):
            return sum(key)
    else:
        def level(key):
            return key[1]
    table = {}
    buckets = [dict() for _ in range(most + 1)]
    for state, (value, _) in layer.items():
        key = state if merged else (state, 0)
        table[key] = (value, None, None)
        buckets[level(key)][key] = None
    out = {}
    steps = [(kind, kind.adds, kind.key - free_key) for kind in pool.kinds]
    for bucket in buckets:
        for key in bucket:
            value = table[key][0]
            state, used = (key, None) if merged else key
            if merged or pool.free is not None or used == pool.supply:
                total = value + pool.supply * free_key
                if state not in out or total < out[state][0]:
                    out[state] = (total, key)
            if not merged and used == pool.supply:
                continue
            moves = [(kind, _advance(state, adds, capped, cap), delta)
                     for kind, adds, delta in steps]
            if removable and state[-1] < more:
                moves.append((None, state[:-1] + (state[-1] + 1,), pool.removal - free_key))
            for kind, target, delta in moves:
                if target is None:
                    continue
                nxt = target if merged else (target, used + 1)
                total = value + delta
                if nxt not in table or total < table[nxt][0]:
                    table[nxt] = (total, key, kind)
                    buckets[level(nxt)][nxt] = None
    return out, table


def _advance(state, units, capped, cap):
    """The state after one more node holding ``units``, or None if that breaks a maximum or
    changes nothing (such a node is a free one)."""
    counts = None
    for i in units:
        if state[i] < cap[i]:
            if counts is None:
                counts = list(state)
            counts[i] += 1
        elif capped[i]:
            return None
    return None if counts is None else tuple(counts)


def _place_later(plan, amounts):
    """Put the left-out capped units on free nodes, packing compatible ones together."""
    spare = [pool.supply - len(kinds) for pool, kinds in zip(plan.pools, plan.structural)]
    order = [len(plan.pools) - 1] + list(range(len(plan.pools) - 1))  # new nodes first
    groups = []  # [pool index, frozenset of added units, count]
    for unit in sorted(amounts):
        left = amounts[unit]
        for group in list(groups):
            p, added, count = group
            if left and count and unit not in added and _upgrade(plan.pools[p], added | {unit}):
                moved = min(count, left)
                group[2] -= moved
                groups.append([p, added | {unit}, moved])
                left -= moved
        for p in order:
            if left and spare[p] and _upgrade(plan.pools[p], {unit}):
                moved = min(spare[p], left)
                spare[p] -= moved
                groups.append([p, frozenset({unit}), moved])
                left -= moved
        if left:
            return None
    for p, added, count in groups:
        if count:
            plan.upgrades[p].append((_upgrade(plan.pools[p], added), count))
    return plan


def _upgrade(pool, added):
    """The pool's free kind plus ``added`` units, if that is valid at the same hardware cost and
    moves no service that runs elsewhere."""
    if pool.free is None:
        return None
    kind = pool.every.get(tuple(sorted(set(pool.free.units) | set(added))))
    if kind is None or (kind.cost, kind.moved) != (pool.free.cost, pool.free.moved):
        return None
    return kind
