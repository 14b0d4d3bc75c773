"""The layout solver: which services, hardware type and image type each node of a cluster gets.

``solve_layout`` is a pure function (no I/O) of a resolved cluster template, the catalog, a size,
optional overrides and, for a change to a running cluster, its current nodes. It returns the
cheapest valid ``Layout`` or raises ``LayoutError`` naming the constraints that are in the way.

How it works, and why it does not blow up like Coopr's search:

* Services with no constraint go on every node. The other services are merged into *units*: the
  services of one mustcoexist group always share nodes, so they behave as one.
* A node *kind* is a set of units that may share a node (no cantcoexist group complete, some
  hardware and image allowed by all of them) with the cheapest such hardware type. Nodes of one
  kind are interchangeable, so a layout is just a count per kind: the search never looks at nodes
  one by one, and its work does not grow with the cluster size.
* A unit with ``max`` below the size is *capped*: its exact count matters. For any other unit only
  ``min(count, min)`` matters. So the capped count vector is a small state, and every node that
  changes it is a *structural* node; there are at most ``sum(caps)`` of them. All other nodes hold
  only uncapped units that already have enough nodes, so each of them may as well be the best such
  kind (the *filler*). The solver runs a dynamic programme over the states, layer by layer, adding
  one structural node at a time, then fills the rest of the cluster with the filler. Units that the
  filler holds and that the filler nodes alone give enough copies need no state at all.
* The objective is one integer per node, compared as a whole: keep existing nodes, then keep their
  services, then minimum hardware cost, then most service instances. Ties keep the first layout
  found, and every loop runs in a sorted order, so the same input gives the same output.

The work is exponential only in the number of units (placing services under cantcoexist rules
contains graph colouring), never in the number of nodes.
"""

from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from math import lcm

from cluster_server.errors import LayoutError, ValidationError

# When a size fails, how many larger sizes to try to name the smallest one that works.
SIZE_SEARCH_LIMIT = 200


@dataclass
class Layout:
    """A solved cluster layout and, for a change, what differs from the current nodes."""

    nodes: list
    cost: float
    provider: str
    services: list
    added: int = 0
    removed: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    hardware_costs: dict = field(default_factory=dict)

    def to_dict(self):
        return {
            "nodes": [dict(node, services=list(node["services"])) for node in self.nodes],
            "cost": self.cost,
            "provider": self.provider,
            "services": list(self.services),
            "added": self.added,
            "removed": list(self.removed),
            "changed": list(self.changed),
            "hardware_costs": dict(self.hardware_costs),
        }

    def groups(self):
        """Nodes grouped by (services, hardware, image), in node order, for printing."""
        counts = {}
        for node in self.nodes:
            key = (tuple(node["services"]), node["hardwaretype"], node["imagetype"])
            counts[key] = counts.get(key, 0) + 1
        groups = []
        for (services, hardware, image), count in counts.items():
            unit_cost = self.hardware_costs.get(hardware, 0.0)
            groups.append({"count": count, "services": list(services), "hardwaretype": hardware,
                           "imagetype": image, "cost": round(unit_cost * count, 9)})
        return groups


@dataclass
class _Unit:
    """Services that always share nodes (one mustcoexist component) and their joint limits."""

    services: tuple
    lo: int
    hi: int | None
    hardware: frozenset | None  # None: any hardware type
    images: frozenset | None
    lo_from: str  # the service whose quantities set lo, for messages
    hi_from: str


@dataclass
class _Problem:
    template: str
    provider: str
    services: list  # every service on the cluster, sorted
    common: tuple  # services on every node
    units: list
    conflicts: list  # (frozenset of unit indices, the cantcoexist group's cluster services)
    hardware: list  # [(cost, name)] usable by new nodes, cheapest first
    hardware_note: str  # where the new nodes' hardware choice comes from, for messages
    images: list  # image names usable by new nodes, sorted
    image_note: str
    costs: dict  # hardware name -> integer cost (scaled), for new and existing nodes
    scale: int  # costs[name] / scale is the real cost
    current: list  # checked current nodes
    size_range: tuple  # (min, max or None) from the template


@dataclass
class _Kind:
    units: tuple
    services: tuple
    hardwaretype: str
    imagetype: str
    cost: int
    key: int  # this node's share of the objective: smaller is better


@dataclass
class _Pool:
    """Where nodes come from: new machines (unlimited) or one class of identical current nodes."""

    hardwaretype: str | None
    imagetype: str | None
    old: frozenset
    nodes: list
    supply: int
    kinds: list = field(default_factory=list)
    free: _Kind | None = None


def solve_layout(template, catalog, size, *, services=None, provider=None, hardwaretype=None,
                 imagetype=None, current=None):
    """Return the cheapest valid Layout of ``size`` nodes, or raise LayoutError saying why not."""
    if not isinstance(template, dict):
        raise ValidationError("the template must be a JSON object", {"field": "template"})
    size = _check_size(size)
    current = _check_current(current)
    name = template.get("name") or "(unnamed)"
    defaults = _section(template, "defaults")
    provider = provider or defaults.get("provider")
    if not provider:
        raise ValidationError(f"template {name} has no default provider; name one",
                              {"field": "provider"})
    cluster = _cluster_services(template, catalog, services)
    size_range = _check_size_range(template, size)
    hardware, hardware_note = _hardware_options(template, catalog, provider, hardwaretype)
    images, image_note = _image_options(template, catalog, provider, imagetype)
    costs, scale = _scaled_costs(catalog, provider)
    common, units, conflicts = _units(template, cluster)
    problem = _Problem(name, provider, cluster, common, units, conflicts,
                       sorted((costs[h], h) for h in hardware), hardware_note, images,
                       image_note, costs, scale, current, size_range)
    _check_units_placeable(problem)
    solution = _search(problem, size)
    if solution is None:
        raise _explain(problem, size)
    return _layout(problem, solution)


# ----- arguments ------------------------------------------------------------------------------


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValidationError(f"size must be a whole number of nodes, at least 1 (got {size!r})",
                              {"field": "size", "value": repr(size)})
    return size


def _check_current(current):
    if current is None:
        return []
    if not isinstance(current, list):
        raise ValidationError("current must be a list of nodes", {"field": "current"})
    seen = set()
    checked = []
    for index, node in enumerate(current):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise ValidationError(f"current node {index} needs a string id",
                                  {"field": f"current[{index}].id"})
        if node["id"] in seen:
            raise ValidationError(f"current node id {node['id']} appears twice",
                                  {"field": f"current[{index}].id"})
        seen.add(node["id"])
        for key in ("hardwaretype", "imagetype"):
            if not isinstance(node.get(key), str):
                raise ValidationError(f"current node {node['id']} needs a {key}",
                                      {"field": f"current[{index}].{key}"})
        if not _is_name_list(node.get("services")):
            raise ValidationError(f"current node {node['id']} needs a list of services",
                                  {"field": f"current[{index}].services"})
        checked.append(node)
    return checked


def _is_name_list(value):
    return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)


def _section(mapping, key):
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, dict) else {}


def _names(value):
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _count(value, where):
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{where} must be a whole number (got {value!r})",
                              {"field": where}) from None


# ----- services -------------------------------------------------------------------------------


def _requires(entry):
    deps = _section(entry, "dependencies")
    return (_names(_section(deps, "install").get("requires"))
            + _names(_section(deps, "runtime").get("requires")))


def _provides(entry):
    return _names(_section(entry, "dependencies").get("provides"))


def _conflicts(entry):
    return _names(_section(entry, "dependencies").get("conflicts"))


def _cluster_services(template, catalog, requested):
    """The requested services plus everything they require, checked against the catalog."""
    name = template.get("name") or "(unnamed)"
    if requested is None:
        requested = _names(_section(template, "defaults").get("services"))
        if not requested:
            raise LayoutError(f"template {name} has no default services; name some",
                              {"template": name})
    elif not _is_name_list(requested) or not requested:
        raise ValidationError("services must be a non-empty list of service names",
                              {"field": "services"})
    known = catalog.services
    missing = sorted({s for s in requested if s not in known})
    if missing:
        raise LayoutError(f"{_plural(missing, 'service')} {_join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not in the catalog",
                          {"missing_services": missing})
    allowed = set(_names(_section(template, "compatibility").get("services")))
    refused = sorted({s for s in requested if allowed and s not in allowed})
    if refused:
        raise LayoutError(f"template {name} does not allow {_join(refused)} "
                          f"(it allows {_join(sorted(allowed))})",
                          {"incompatible_services": refused, "allowed": sorted(allowed)})
    cluster = _add_requirements(sorted(set(requested)), known, allowed, name)
    _check_conflicts(cluster, known)
    return sorted(cluster)


def _add_requirements(requested, known, allowed, template_name):
    """Pull required services in, transitively; a requirement is met by name or by `provides`."""
    cluster = set(requested)
    provided = {p for s in cluster for p in _provides(known[s])}
    queue = list(requested)
    while queue:
        service = queue.pop(0)
        for need in _requires(known[service]):
            if need in cluster or need in provided:
                continue
            chosen = _provider_of(need, known, allowed)
            if chosen is None:
                raise LayoutError(f"{service} requires {need}, which no service in the catalog "
                                  f"provides", {"service": service, "missing_requirement": need})
            if allowed and chosen not in allowed:
                raise LayoutError(f"{service} requires {chosen}, which template {template_name} "
                                  f"does not allow", {"service": service,
                                                      "incompatible_services": [chosen]})
            cluster.add(chosen)
            provided.update(_provides(known[chosen]))
            queue.append(chosen)
    return cluster


def _provider_of(need, known, allowed):
    # A service of that name wins; else the first provider the template allows, else any.
    if need in known:
        return need
    candidates = sorted(s for s, entry in known.items() if need in _provides(entry))
    preferred = [s for s in candidates if s in allowed]
    return (preferred or candidates or [None])[0]


def _check_conflicts(cluster, known):
    for service in sorted(cluster):
        for other in sorted(cluster - {service}):
            names = {other, *_provides(known[other])}
            clash = sorted(names & set(_conflicts(known[service])))
            if clash:
                raise LayoutError(f"{service} conflicts with {other}; a cluster cannot have both",
                                  {"conflict": [service, other]})


# ----- size, hardware, images -----------------------------------------------------------------


def _check_size_range(template, size):
    name = template.get("name") or "(unnamed)"
    limits = _section(_section(template, "constraints"), "size")
    low = _count(limits.get("min"), "constraints.size.min") or 1
    high = _count(limits.get("max"), "constraints.size.max")
    if size < low or (high is not None and size > high):
        allowed = (f"between {low} and {high} nodes" if high is not None
                   else f"at least {low} {_nodes_word(low)}")
        if high is not None and low == high:
            allowed = f"exactly {low} {_nodes_word(low)}"
        raise LayoutError(f"template {name} allows {allowed}; asked for {size}",
                          {"size": size, "min": low, "max": high})
    return low, high


def _hardware_options(template, catalog, provider, chosen):
    return _type_options(template, catalog.hardwaretypes, provider, chosen, "hardwaretype",
                         "hardware type", "hardwaretypes")


def _image_options(template, catalog, provider, chosen):
    return _type_options(template, catalog.imagetypes, provider, chosen, "imagetype",
                         "image type", "imagetypes")


def _type_options(template, entries, provider, chosen, key, word, plural_key):
    """Names usable by new nodes: the one given (request or template default) or all allowed."""
    name = template.get("name") or "(unnamed)"
    allowed = _names(_section(template, "compatibility").get(plural_key))
    source = "requested"
    if not chosen:
        chosen = _section(template, "defaults").get(key)
        source = f"template {name}'s default"
    if chosen:
        if chosen not in entries:
            raise LayoutError(f"{word} {chosen} ({source}) is not in the catalog",
                              {f"missing_{key}": chosen})
        if allowed and chosen not in allowed:
            raise LayoutError(f"{word} {chosen} ({source}) is not allowed by template {name}; "
                              f"it allows {_join(allowed)}", {key: chosen, "allowed": allowed})
        if provider not in _section(entries[chosen], "providermap"):
            raise LayoutError(f"{word} {chosen} ({source}) has no entry for provider {provider}",
                              {key: chosen, "provider": provider})
        return [chosen], f"every node uses {word} {chosen} ({source})"
    usable = sorted(n for n, entry in entries.items() if (not allowed or n in allowed)
                    and provider in _section(entry, "providermap"))
    if not usable:
        raise LayoutError(f"no {word} is both allowed by template {name} and available for "
                          f"provider {provider}", {"provider": provider, "allowed": allowed})
    return usable, f"new nodes can use {_join(usable)}"


def _scaled_costs(catalog, provider):
    """Hardware costs for the provider as integers over one scale, so sums are exact."""
    exact = {}
    for name, entry in catalog.hardwaretypes.items():
        flavor = _section(entry, "providermap").get(provider)
        if not isinstance(flavor, dict):
            continue
        raw = flavor.get("cost", 0)
        try:
            exact[name] = Fraction(Decimal(str(raw if raw not in (None, "") else 0)))
        except (InvalidOperation, ValueError):
            raise ValidationError(f"hardware type {name} has a cost that is not a number: "
                                  f"{raw!r}", {"hardwaretype": name, "cost": raw}) from None
    scale = lcm(1, *(cost.denominator for cost in exact.values()))
    return {name: int(cost * scale) for name, cost in exact.items()}, scale


# ----- units ----------------------------------------------------------------------------------


def _units(template, cluster):
    """Split the cluster's services into those on every node and mustcoexist units."""
    constraints = _section(template, "constraints")
    layout = _section(constraints, "layout")
    per_service = _section(constraints, "services")
    must = [_names(group) for group in layout.get("mustcoexist") or [] if isinstance(group, list)]
    cant = [_names(group) for group in layout.get("cantcoexist") or [] if isinstance(group, list)]
    mentioned = {s for group in must + cant for s in group} | set(per_service)
    on_cluster = set(cluster)
    common = tuple(s for s in cluster if s not in mentioned)
    parent = {s: s for s in cluster if s in mentioned}
    for group in must:
        members = [s for s in group if s in on_cluster]
        for other in members[1:]:
            parent[_root(parent, other)] = _root(parent, members[0])
    components = {}
    for service in sorted(parent):
        components.setdefault(_root(parent, service), []).append(service)
    units = [_unit(tuple(members), per_service) for members in
             sorted(components.values())]
    _check_unit_limits(units)
    index = {s: i for i, unit in enumerate(units) for s in unit.services}
    conflicts = []
    for group in cant:
        members = tuple(sorted({s for s in group if s in on_cluster}))
        if len(members) < 2:
            continue  # a group with one service on the cluster forbids nothing
        unit_set = frozenset(index[s] for s in members)
        if len(unit_set) == 1:
            raise LayoutError(f"{_join(members)} must share a node (mustcoexist) but cannot all "
                              f"share a node (cantcoexist)", {"mustcoexist": list(members),
                                                              "cantcoexist": list(members)})
        conflicts.append((unit_set, members))
    return common, units, conflicts


def _root(parent, item):
    while parent[item] != item:
        parent[item] = parent[parent[item]]
        item = parent[item]
    return item


def _unit(members, per_service):
    lo, hi, lo_from, hi_from = 1, None, members[0], members[0]
    hardware = images = None
    for service in members:
        rule = _section(per_service, service)
        amounts = _section(rule, "quantities")
        low = _count(amounts.get("min"), f"constraints.services.{service}.quantities.min")
        high = _count(amounts.get("max"), f"constraints.services.{service}.quantities.max")
        if low is not None and low > lo:
            lo, lo_from = low, service
        if high is not None and (hi is None or high < hi):
            hi, hi_from = high, service
        hardware = _meet(hardware, _names(rule.get("hardwaretypes")) or None)
        images = _meet(images, _names(rule.get("imagetypes")) or None)
    return _Unit(members, lo, hi, hardware, images, lo_from, hi_from)


def _meet(allowed, more):
    """Intersect two whitelists where None means 'anything'."""
    if more is None:
        return allowed
    return frozenset(more) if allowed is None else allowed & frozenset(more)


def _check_unit_limits(units):
    for unit in units:
        shared = " (they must share nodes: mustcoexist)" if unit.lo_from != unit.hi_from else ""
        if unit.hi is not None and unit.hi < 1:
            raise LayoutError(f"{unit.hi_from} is limited to {unit.hi} nodes, but the cluster "
                              f"asks for it", {"service": unit.hi_from, "max": unit.hi})
        if unit.hi is not None and unit.lo > unit.hi:
            raise LayoutError(f"{unit.lo_from} needs at least {unit.lo} nodes but {unit.hi_from} "
                              f"allows at most {unit.hi}{shared}",
                              {"min": {unit.lo_from: unit.lo}, "max": {unit.hi_from: unit.hi},
                               "mustcoexist": list(unit.services)})
        if unit.hardware is not None and not unit.hardware:
            raise LayoutError(f"{_join(unit.services)} must share nodes but allow no common "
                              f"hardware type", {"mustcoexist": list(unit.services)})
        if unit.images is not None and not unit.images:
            raise LayoutError(f"{_join(unit.services)} must share nodes but allow no common "
                              f"image type", {"mustcoexist": list(unit.services)})


def _check_units_placeable(problem):
    """Fail early, with a clear reason, when a unit fits on no node at all."""
    hardware = [name for _, name in problem.hardware]
    for unit in problem.units:
        if any(_fits(unit, node["hardwaretype"], node["imagetype"]) for node in problem.current):
            continue
        if unit.hardware is not None and not unit.hardware & set(hardware):
            raise LayoutError(f"{_join(unit.services)} runs only on hardware types "
                              f"{_join(sorted(unit.hardware))}, but {problem.hardware_note}",
                              {"services": list(unit.services),
                               "hardwaretypes": sorted(unit.hardware), "usable": hardware})
        if unit.images is not None and not unit.images & set(problem.images):
            raise LayoutError(f"{_join(unit.services)} runs only on image types "
                              f"{_join(sorted(unit.images))}, but {problem.image_note}",
                              {"services": list(unit.services),
                               "imagetypes": sorted(unit.images), "usable": problem.images})


def _fits(unit, hardware, image):
    return ((unit.hardware is None or hardware in unit.hardware)
            and (unit.images is None or image in unit.images))


# ----- kinds and pools ------------------------------------------------------------------------


def _unit_sets(problem):
    """Every set of units that may share a node, with the hardware and images they all allow."""
    units = problem.units
    conflicts_of = [[c for c, _ in problem.conflicts if i in c] for i in range(len(units))]
    found = []

    def grow(start, chosen, hardware, images):
        if chosen or problem.common:
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


def _weights(problem, size):
    """Multipliers that turn (removed, lost, cost, -services) into one comparable integer."""
    nodes = size + len(problem.current)
    per_node = len(problem.services) + 1
    cost_step = nodes * per_node + 1
    lost_step = (nodes * max(problem.costs.values(), default=0) + 1) * cost_step
    removal = (len(problem.current) * per_node + 2) * lost_step
    return cost_step, lost_step, removal


def _pools(problem, size, capped):
    """The new-node pool and one pool per class of identical current nodes, with their kinds."""
    cost_step, lost_step, _ = _weights(problem, size)
    sets = _unit_sets(problem)
    pools = [_Pool(None, None, frozenset(), [], size)]
    on_cluster = set(problem.services)
    classes = {}
    for node in problem.current:
        old = frozenset(node["services"]) & on_cluster
        key = (node["hardwaretype"], node["imagetype"], old)
        if key not in classes:
            classes[key] = _Pool(node["hardwaretype"], node["imagetype"], old, [], 0)
            pools.append(classes[key])
        classes[key].nodes.append(node)
        classes[key].supply += 1
    for pool in pools:
        kinds = {}
        for units, hardware, images in sets:
            kind = _kind(problem, pool, units, hardware, images, cost_step, lost_step)
            if kind is not None:
                kinds[units] = kind
        pool.free = _best_free(kinds, capped)
        pool.kinds = sorted(_undominated(kinds, capped),
                            key=lambda k: (k.key, k.services, k.hardwaretype, k.imagetype))
    return pools


def _kind(problem, pool, units, hardware, images, cost_step, lost_step):
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
    lost = len(pool.old - set(services))
    cost = problem.costs.get(hw, 0)
    key = lost * lost_step + cost * cost_step - len(services)
    return _Kind(units, services, hw, image, cost, key)


def _best_free(kinds, capped):
    """The best kind holding no capped unit: what every non-structural node becomes."""
    free = [k for k in kinds.values() if not any(capped[i] for i in k.units)]
    return min(free, key=lambda k: (k.key, k.services), default=None)


def _undominated(kinds, capped):
    # Adding an uncapped unit at the same hardware cost only helps: more services, more copies
    # toward a minimum, and no maximum to break. So such a kind never needs to be tried.
    keep = []
    for units, kind in kinds.items():
        bigger = (kinds.get(tuple(sorted(units + (i,)))) for i in range(len(capped))
                  if not capped[i] and i not in units)
        if not any(b is not None and b.cost == kind.cost for b in bigger):
            keep.append(kind)
    return keep


# ----- the search -----------------------------------------------------------------------------


@dataclass
class _Solution:
    pools: list
    structural: list  # [(pool index, kind)]
    keep: list  # per pool: how many non-structural nodes take the pool's free kind


def _search(problem, size):
    """The best layout of ``size`` nodes as a _Solution, or None if there is none."""
    units = problem.units
    if any(unit.lo > size for unit in units):
        return None
    capped = [unit.hi is not None and unit.hi < size for unit in units]
    pools = _pools(problem, size, capped)
    need = [unit.lo for unit in units]
    cap = [unit.hi if capped[i] else unit.lo for i, unit in enumerate(units)]
    _skip_units_the_filler_covers(pools, size, capped, need, cap)
    removal = _weights(problem, size)[2]
    best, back = _walk(pools, size, capped, need, cap, removal)
    if best is None:
        return None
    _, state, keep = best
    structural = []
    while back[state] is not None:
        state, pool_index, kind = back[state]
        structural.append((pool_index, kind))
    structural.reverse()
    return _Solution(pools, structural, keep)


def _skip_units_the_filler_covers(pools, size, capped, need, cap):
    # An uncapped unit held by every pool's free kind gets one copy per filler node. If the filler
    # nodes are sure to be enough, the unit needs no place in the state.
    free = [pool.free for pool in pools if pool.free is not None]
    if not free:
        return
    covered = [i for i in range(len(need)) if not capped[i] and need[i] > 0
               and all(i in kind.units for kind in free)]
    rest = sum(cap[i] for i in range(len(cap)) if i not in covered)
    if covered and size - rest >= max(need[i] for i in covered):
        for i in covered:
            need[i] = cap[i] = 0


def _walk(pools, size, capped, need, cap, removal):
    """Dynamic programme over (capped counts, nodes used per pool), one structural node a step."""
    m = len(need)
    start = (0,) * (m + len(pools))
    layers = [dict() for _ in range(sum(cap) + 1)]
    layers[0][start] = 0
    back = {start: None}
    best = None
    for level, layer in enumerate(layers):
        for state, value in layer.items():
            if all(state[i] >= need[i] for i in range(m)):
                fill = _fill(pools, state[m:], size, removal)
                if fill is not None and (best is None or value + fill[0] < best[0]):
                    best = (value + fill[0], state, fill[1])
            if sum(state[m:]) >= size:
                continue
            for p, pool in enumerate(pools):
                if state[m + p] >= pool.supply:
                    continue
                for kind in pool.kinds:
                    nxt = _advance(state, kind.units, capped, cap)
                    if nxt is None:
                        continue
                    counts, step = nxt
                    counts[m + p] += 1
                    target = tuple(counts)
                    total = value + kind.key
                    bucket = layers[level + step]
                    if target not in bucket or total < bucket[target]:
                        bucket[target] = total
                        back[target] = (state, p, kind)
    return best, back


def _advance(state, units, capped, cap):
    """Counts after one more node holding ``units``, and how much progress that is."""
    counts = list(state)
    step = 0
    for i in units:
        if counts[i] < cap[i]:
            counts[i] += 1
            step += 1
        elif capped[i]:
            return None
    return (counts, step) if step else None


def _fill(pools, used, size, removal):
    """Cost of the non-structural nodes: keep current nodes first (cheapest), then add new ones."""
    slots = size - sum(used)
    if slots < 0:
        return None
    value = 0
    keep = [0] * len(pools)
    candidates = []
    for p, pool in enumerate(pools[1:], start=1):
        spare = pool.supply - used[p]
        if pool.free is None:
            value += spare * removal
        else:
            candidates.append((pool.free.key, p, spare))
    for key, p, spare in sorted(candidates):
        kept = min(spare, slots)
        keep[p] = kept
        value += kept * key + (spare - kept) * removal
        slots -= kept
    if slots:
        if pools[0].free is None:
            return None
        keep[0] = slots
        value += slots * pools[0].free.key
    return value, keep


# ----- building the Layout --------------------------------------------------------------------


def _layout(problem, solution):
    per_pool = [[] for _ in solution.pools]
    for p, kind in solution.structural:
        per_pool[p].append(kind)
    for p, pool in enumerate(solution.pools):
        per_pool[p].extend([pool.free] * solution.keep[p])
    assigned = {}
    removed = []
    for p, pool in enumerate(solution.pools[1:], start=1):
        kinds = sorted(per_pool[p], key=lambda k: (k.key, k.services))
        for node, kind in zip(pool.nodes, kinds + [None] * (len(pool.nodes) - len(kinds))):
            if kind is None:
                removed.append(node["id"])
            else:
                assigned[node["id"]] = kind
    nodes, changed = [], []
    for node in problem.current:
        kind = assigned.get(node["id"])
        if kind is None:
            continue
        nodes.append(_node(node["id"], kind))
        if set(kind.services) != set(node["services"]):
            changed.append(node["id"])
    new = sorted(per_pool[0], key=lambda k: (k.services, k.hardwaretype, k.imagetype))
    nodes.extend(_node(None, kind) for kind in new)
    total = sum(Fraction(problem.costs.get(n["hardwaretype"], 0), problem.scale) for n in nodes)
    used_hardware = {n["hardwaretype"] for n in nodes}
    return Layout(nodes=nodes, cost=float(total), provider=problem.provider,
                  services=list(problem.services), added=len(new), removed=removed,
                  changed=changed,
                  hardware_costs={h: float(Fraction(problem.costs.get(h, 0), problem.scale))
                                  for h in sorted(used_hardware)})


def _node(node_id, kind):
    return {"id": node_id, "services": list(kind.services), "hardwaretype": kind.hardwaretype,
            "imagetype": kind.imagetype}


# ----- explaining a failure -------------------------------------------------------------------


def _explain(problem, size):
    """A LayoutError naming the constraints that rule out ``size`` nodes, and the sizes that work."""
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
    start = max([size + 1] + [unit.lo for unit in problem.units])
    high = problem.size_range[1]
    limit = start + SIZE_SEARCH_LIMIT if high is None else min(high, start + SIZE_SEARCH_LIMIT)
    return next((n for n in range(start, limit + 1) if _search(problem, n)), None)


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


# ----- words ----------------------------------------------------------------------------------


def _join(items):
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _others(group, me):
    others = [s for s in group if s != me]
    return others[0] if len(others) == 1 else "all of " + _join(others)


def _plural(items, word):
    return word if len(items) == 1 else word + "s"


def _nodes_word(count):
    return "node" if count == 1 else "nodes"


def _at_least(count):
    return "a node" if count == 1 else f"at least {count} nodes"


def _at_most(count):
    return f"{count} {_nodes_word(count)}"
