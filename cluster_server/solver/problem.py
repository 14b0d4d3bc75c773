"""The problem the solver works on: the checked arguments, the cluster's services with their
requirements and conflicts, the hardware and image types new nodes may use, and the units
(services that always share nodes) with their limits."""

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from math import lcm

from cluster_server.errors import LayoutError, ValidationError
from cluster_server.solver.words import _join, _nodes_word, _plural


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


# ----- arguments ------------------------------------------------------------------------------


MAX_SIZE = 100_000  # ten times the largest cluster bench/solver.py measures


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValidationError(f"size must be a whole number of nodes, at least 1 (got {size!r})",
                              {"field": "size", "value": repr(size)})
    if size > MAX_SIZE:
        # Far past this the solver's memory grows without a useful answer (a size of 10**20
        # was an internal error, 10**6 used gigabytes).
        raise ValidationError(f"size must be at most {MAX_SIZE:,} nodes (got {size:,})",
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
            if exact[name] < 0:
                raise ValueError("negative")
        except (InvalidOperation, ValueError, OverflowError):  # OverflowError: Infinity
            raise ValidationError(f"hardware type {name} has a cost that is not a finite number "
                                  f"of 0 or more: {raw!r}", {"hardwaretype": name, "cost": raw}
                                  ) from None
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
