"""The layout solver: which services, hardware type and image type each node of a cluster gets.

``solve_layout`` is a pure function (no I/O) of a resolved cluster template, the catalog, a size,
optional overrides and, for a change to a running cluster, its current nodes. It returns the
cheapest valid ``Layout`` or raises ``LayoutError`` naming the constraints that are in the way.

How it works, and why it does not blow up like Coopr's search:

* Services with no constraint go on every node. The others are merged into *units*: the services
  of one mustcoexist group always share nodes, so they behave as one.
* A node *kind* is a set of units that may share a node (no cantcoexist group complete, some
  hardware and image that all of them allow) on the cheapest such hardware. Nodes of one kind are
  interchangeable, so a layout is a count per kind and the search never places nodes one by one.
* A unit whose ``max`` is below the size is *capped*: its exact count matters. For the others only
  ``min(count, min)`` matters. These counts are the state of a dynamic programme. A node that
  changes the state is *structural*; there are at most ``sum(caps)`` of them. Every other node
  holds only uncapped units that already have enough copies, so it may as well be the best such
  kind (its pool's *free* kind). The programme adds structural nodes one at a time, pool after
  pool (new machines, and each class of identical current machines), and gives the rest of each
  pool its free kind. Work grows with the caps and the number of kinds, not with the size.
* Two exact shortcuts keep the state small. An uncapped unit that every free node holds, when the
  free nodes alone are enough for its minimum, needs no state. A capped unit that a free node
  takes at no extra cost is best at its maximum wherever its copies sit, so it is left out of
  the search and packed onto free nodes afterwards (if they run short, the search runs again with
  it included).
* The objective is one integer per node, compared as a whole: fewest services moved on current
  machines, then lowest hardware cost, then most service instances. Ties keep the first layout
  found, and every loop runs in a sorted order, so the same input gives the same output.
* Changes: current machines are kept (their types are fixed). Each keeps the services it holds
  where the rules still allow ("pinned"); the search fills in the rest. When shrinking, plainly
  spare nodes go first; if more must go, the search picks them. If keeping placements blocks
  every layout, the kept machines are laid out afresh, still counting each moved service.

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
    before: frozenset  # services the current nodes run that stay on the cluster
    size_range: tuple  # (min, max or None) from the template


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
                       image_note, costs, scale, current,
                       frozenset(s for n in current for s in n["services"]) & set(cluster),
                       size_range)
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
    return isinstance(value, (list, tuple)) and set(map(type, value)) <= {str}


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


# ----- the search -----------------------------------------------------------------------------


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


# ----- building the Layout --------------------------------------------------------------------


def _layout(problem, plan):
    nodes, changed, assigned = [], [], {}
    new_kinds = []
    for pool, structural, upgrades in zip(plan.pools, plan.structural, plan.upgrades):
        kinds = sorted((k for k in structural if k), key=lambda k: (k.key, k.services))
        kinds += [kind for kind, count in upgrades for _ in range(count)]
        kinds += [pool.free] * (pool.supply - len(structural) - sum(c for _, c in upgrades))
        if pool.hardwaretype is None:
            new_kinds = kinds
        for node, kind in zip(pool.nodes, kinds):  # removed ones are the last of the pool
            assigned[node["id"]] = kind
    for node in problem.current:
        kind = assigned.get(node["id"])
        if kind is not None:
            nodes.append(_node(node["id"], kind))
            if set(kind.services) != set(node["services"]):
                changed.append(node["id"])
    new_kinds.sort(key=lambda k: (k.services, k.hardwaretype, k.imagetype))
    nodes.extend(_node(None, kind) for kind in new_kinds)
    total = Fraction(sum(problem.costs.get(n["hardwaretype"], 0) for n in nodes), problem.scale)
    return Layout(nodes=nodes, cost=float(total), provider=problem.provider,
                  services=list(problem.services), added=len(new_kinds),
                  removed=[n["id"] for n in problem.current if n["id"] not in assigned],
                  changed=changed,
                  hardware_costs={h: float(Fraction(problem.costs.get(h, 0), problem.scale))
                                  for h in sorted({n["hardwaretype"] for n in nodes})})


def _node(node_id, kind):
    return {"id": node_id, "services": list(kind.services), "hardwaretype": kind.hardwaretype,
            "imagetype": kind.imagetype}


# ----- explaining a failure -------------------------------------------------------------------


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
