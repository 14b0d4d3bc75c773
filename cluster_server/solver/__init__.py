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

Where each part lives: ``problem`` (checking the arguments, the services, types and units),
``pools`` (current machines: which to remove or pin; kinds and pools), ``search`` (the dynamic
programme), ``layout`` (the result), ``explain`` (why no layout fits), ``words`` (phrasing).
"""

from cluster_server.errors import Unprocessable, ValidationError
from cluster_server.solver.explain import _explain
from cluster_server.solver.layout import Layout, _layout
from cluster_server.solver.problem import (_check_current, _check_size, _check_size_range,
                                           _check_units_placeable, _cluster_services,
                                           _hardware_options, _image_options, _Problem,
                                           _scaled_costs, _section, _units)
from cluster_server.solver.search import _search

__all__ = ["Layout", "solve_layout"]


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
        raise Unprocessable(f"template {name} has no default provider; name one",
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
