"""Where the search's nodes come from: which current nodes stay and which placements they keep,
and the pools of identical nodes with the node kinds each may hold."""

from dataclasses import dataclass, field

from cluster_server.solver.problem import _fits, _meet


@dataclass
class _Kind:
    units: tuple  # every unit on the node
    adds: tuple  # the units beyond the node's pinned ones: these count toward the state
    services: tuple
    hardwaretype: str
    imagetype: str
    cost: int
    moved: int  # services taken off or moved onto a kept node
    key: int  # this node's share of the objective: smaller is better


@dataclass
class _Pool:
    """Where nodes come from: new machines, or one class of identical kept current nodes."""

    hardwaretype: str | None  # None: new nodes
    imagetype: str | None
    old: frozenset  # its current services that stay on the cluster
    pinned: tuple  # units it keeps where they are
    nodes: list
    supply: int
    removal: int = 0  # objective share of removing one of its nodes
    every: dict = field(default_factory=dict)  # unit tuple -> _Kind, every valid kind
    kinds: list = field(default_factory=list)  # the kinds the search tries
    free: _Kind | None = None


# ----- current nodes: which to remove, which placements to keep --------------------------------


def _choose_removals(problem, size):
    """When shrinking, first remove nodes that are plainly spare: no service with a maximum on
    them, and every minimum still met without them. Returns (kept, removed ids, how many more
    nodes to remove); the search chooses those last ones itself."""
    current = problem.current
    remove = max(0, len(current) - size)
    if not remove:
        return list(current), [], 0
    on_cluster = set(problem.services)
    groups = {}
    for position, node in enumerate(current):
        old = frozenset(node["services"]) & on_cluster
        groups.setdefault((node["hardwaretype"], node["imagetype"], old), []).append(position)
    units = problem.units
    held = {key: [i for i, unit in enumerate(units) if set(unit.services) <= key[2]]
            for key in groups}
    counts = [sum(len(groups[key]) for key in groups if i in held[key])
              for i in range(len(units))]

    def spare(key):  # how many of this group can go without touching a limit
        if any(units[i].hi is not None for i in held[key]):
            return 0
        return min([len(groups[key])] + [counts[i] - units[i].lo for i in held[key]])

    removed = set()
    while remove:
        candidates = [key for key in groups if spare(key) > 0]
        if not candidates:
            break
        # The most expensive machines go first, then those with the fewest services, newest first.
        key = min(candidates, key=lambda k: (-problem.costs.get(k[0], 0), len(k[2]),
                                             -groups[k][-1]))
        take = min(remove, spare(key))
        for _ in range(take):
            removed.add(groups[key].pop())
        for i in held[key]:
            counts[i] -= take
        remove -= take
    return ([node for p, node in enumerate(current) if p not in removed],
            [node["id"] for p, node in enumerate(current) if p in removed], remove)


def _pin(problem, kept):
    """Units each kept node holds and may keep: id -> tuple of unit indices, or None if the node
    breaks a rule as it stands and must be laid out afresh."""
    on_cluster = set(problem.services)
    by_class = {}
    pins = {}
    for node in kept:
        key = (node["hardwaretype"], node["imagetype"], frozenset(node["services"]) & on_cluster)
        if key not in by_class:
            by_class[key] = _keepable(problem, *key)
        pins[node["id"]] = by_class[key]
    counts = [0] * len(problem.units)
    for node in kept:  # over a maximum: the later nodes are laid out afresh
        held = pins[node["id"]] or ()
        if any(problem.units[i].hi is not None and counts[i] >= problem.units[i].hi
               for i in held):
            pins[node["id"]] = None
            continue
        for i in held:
            counts[i] += 1
    return pins


def _keepable(problem, hardware, image, old):
    held = tuple(i for i, unit in enumerate(problem.units) if set(unit.services) <= old)
    partial = any(set(u.services) & old and not set(u.services) <= old for u in problem.units)
    clash = any(group <= set(held) for group, _ in problem.conflicts)
    misfit = not all(_fits(problem.units[i], hardware, image) for i in held)
    empty = not held and not problem.common
    return None if partial or clash or misfit or empty else held


# ----- kinds and pools ------------------------------------------------------------------------


def _unit_sets(problem):
    """Every set of units that may share a node, with the hardware and images they all allow."""
    units = problem.units
    conflicts_of = [[c for c, _ in problem.conflicts if i in c] for i in range(len(units))]
    found = []

    def grow(start, chosen, hardware, images):
        found.append((tuple(chosen), hardware, images))
        for i in range(start, len(units)):
            more_hardware = _meet(hardware, units[i].hardware)
            more_images = _meet(images, units[i].images)
            if more_hardware is not None and not more_hardware:
                continue
            if more_images is not None and not more_images:
                continue
            members = set(chosen) | {i}
            if any(c <= members for c in conflicts_of[i]):
                continue
            grow(i + 1, chosen + [i], more_hardware, more_images)

    grow(0, [], None, None)
    return found


def _pools(problem, new, kept, pins):
    """One pool per class of identical kept nodes (same machine, services and pins), then one
    of ``new`` new nodes."""
    on_cluster = set(problem.services)
    pools, classes = [], {}
    for node in kept:
        old = frozenset(node["services"]) & on_cluster
        key = (node["hardwaretype"], node["imagetype"], old, pins[node["id"]])
        if key not in classes:
            classes[key] = _Pool(node["hardwaretype"], node["imagetype"], old,
                                 pins[node["id"]] or (), [], 0)
            pools.append(classes[key])
        classes[key].nodes.append(node)
        classes[key].supply += 1
    pools.append(_Pool(None, None, frozenset(), (), [], new))
    sets = _unit_sets(problem)
    steps = _weights(problem, len(kept) + new)
    for pool in pools:
        for units, hardware, images in sets:
            if set(pool.pinned) <= set(units):
                kind = _kind(problem, pool, units, hardware, images, steps)
                if kind is not None:
                    pool.every[units] = kind
        # A removed node counts as losing the constrained services it held.
        pool.removal = steps[1] * len(pool.old - set(problem.common))
    return pools


def _weights(problem, size):
    """Multipliers that turn (lost services, cost, -services) into one comparable integer."""
    nodes = max(size, len(problem.current))
    per_node = len(problem.services) + 1
    cost_step = nodes * per_node + 1
    lost_step = (nodes * max(problem.costs.values(), default=0) + 1) * cost_step
    return cost_step, lost_step


def _kind(problem, pool, units, hardware, images, steps):
    if pool.hardwaretype is None:
        hw = next((name for _, name in problem.hardware if hardware is None or name in hardware),
                  None)
        image = next((name for name in problem.images if images is None or name in images), None)
        if hw is None or image is None:
            return None
    else:
        hw, image = pool.hardwaretype, pool.imagetype
        if (hardware is not None and hw not in hardware) or (images is not None and
                                                             image not in images):
            return None
    services = tuple(sorted(problem.common + tuple(s for i in units
                                                   for s in problem.units[i].services)))
    if not services:
        return None  # a node holds at least one service
    cost = problem.costs.get(hw, 0)
    # What moves on a kept node: services taken off it, and services that already run elsewhere
    # put on it. A service new to the cluster may go anywhere.
    moved = len(pool.old - set(services))
    if pool.hardwaretype is not None:
        moved += len((set(services) & problem.before) - pool.old)
    adds = tuple(i for i in units if i not in pool.pinned)
    cost_step, lost_step = steps
    return _Kind(units, adds, services, hw, image, cost, moved,
                 moved * lost_step + cost * cost_step - len(services))


def _prepare(pools, capped, excluded):
    """Pick each pool's free kind and the kinds worth trying, leaving out excluded units."""
    for pool in pools:
        usable = {units: kind for units, kind in pool.every.items()
                  if not set(kind.adds) & excluded}
        free = [k for k in usable.values() if not any(capped[i] for i in k.adds)]
        pool.free = min(free, key=lambda k: (k.key, k.services), default=None)
        pool.kinds = sorted(_undominated(usable, capped, excluded),
                            key=lambda k: (k.key, k.services, k.hardwaretype, k.imagetype))


def _undominated(kinds, capped, excluded):
    # Adding an uncapped unit without making the node worse only helps: more copies toward a
    # minimum, and no maximum to break. So such a kind never needs to be tried.
    keep = []
    for units, kind in kinds.items():
        bigger = (kinds.get(tuple(sorted(units + (i,)))) for i in range(len(capped))
                  if not capped[i] and i not in units and i not in excluded)
        if not any(b is not None and b.key <= kind.key for b in bigger):
            keep.append(kind)
    return keep
