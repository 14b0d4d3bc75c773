"""Property tests of the layout solver against an exhaustive search.

Random small catalogs and templates (up to 5 services, 3 hardware types, 2 image types, sizes up
to 4): every layout the solver returns satisfies every rule (checked by the independent ``Rules``),
the solver finds no layout only when exhaustive search finds none, and its cost and service count
equal the exhaustive optimum. Changes to a solved cluster keep its machines.
"""

import itertools
from collections import Counter

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from cluster_server.errors import LayoutError
from cluster_server.solver import solve_layout
from tests.unit.test_solver import PROVIDER, Rules, cost_of, make_catalog

SETTINGS = settings(max_examples=600, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    """(template, catalog, size, options) for a random small cluster."""
    names = [f"s{i}" for i in range(draw(st.integers(1, 5)))]
    hardware = [f"h{i}" for i in range(draw(st.integers(1, 3)))]
    images = [f"i{i}" for i in range(draw(st.integers(1, 2)))]
    some = st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)
    deps = {}
    for name in names:
        deps[name] = {}
        if draw(st.integers(0, 5)) == 0:
            deps[name]["runtime"] = {"requires": [draw(st.sampled_from(names))]}
        if draw(st.integers(0, 9)) == 0:
            deps[name]["conflicts"] = [draw(st.sampled_from(names))]
    prices = draw(st.sampled_from([[1, 2, 4], ["0.25", "1.5", 3], [0, 1, 1], [2, 2, 2]]))
    costs = dict(zip(hardware, draw(st.permutations(prices))))
    catalog = make_catalog(deps, hardware=costs, images=images)
    if len(hardware) > 1 and draw(st.integers(0, 6)) == 0:  # a type the provider lacks
        catalog.hardwaretypes[hardware[-1]]["providermap"] = {"elsewhere": {}}
    per_service = {}
    for name in names:
        if draw(st.integers(0, 2)) == 0:
            continue
        rule = {}
        low = draw(st.sampled_from([None, None, 0, 1, 2, 3]))
        high = draw(st.sampled_from([None, None, 1, 1, 2, 3, 4, 0]))
        rule["quantities"] = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
        if draw(st.booleans()):
            rule["hardwaretypes"] = draw(st.lists(st.sampled_from(hardware), min_size=1,
                                                  max_size=2, unique=True))
        if draw(st.integers(0, 3)) == 0:
            rule["imagetypes"] = draw(st.lists(st.sampled_from(images), min_size=1, unique=True))
        per_service[name] = rule
    constraints = {
        "layout": {"mustcoexist": draw(st.lists(some, max_size=2)),
                   "cantcoexist": draw(st.lists(some, max_size=2))},
        "services": per_service,
    }
    if draw(st.integers(0, 3)) == 0:
        constraints["size"] = {"min": draw(st.integers(1, 2)), "max": draw(st.integers(2, 4))}
    requested = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    if len(names) > 1 and draw(st.booleans()):
        # Most real templates have a service on every node (base): keep s0 unconstrained.
        per_service.pop("s0", None)
        for kind in ("mustcoexist", "cantcoexist"):
            constraints["layout"][kind] = [[s for s in group if s != "s0"]
                                           for group in constraints["layout"][kind]]
        requested = sorted(set(requested) | {"s0"})
    template = {"name": "random", "constraints": constraints,
                "defaults": {"provider": PROVIDER, "services": requested}}
    compatibility = {}
    if draw(st.integers(0, 4)) == 0:
        compatibility["hardwaretypes"] = draw(st.lists(st.sampled_from(hardware), min_size=1,
                                                       unique=True))
    if draw(st.integers(0, 6)) == 0:
        compatibility["services"] = draw(st.lists(st.sampled_from(names), min_size=1,
                                                  unique=True))
    template["compatibility"] = compatibility
    options = {}
    if draw(st.integers(0, 4)) == 0:
        options["hardwaretype"] = draw(st.sampled_from(hardware))
    if draw(st.integers(0, 5)) == 0:
        template["defaults"]["imagetype"] = draw(st.sampled_from(images))
    return template, catalog, draw(st.integers(1, 4)), options


def exhaustive(template, catalog, size, options):
    """The best (cost, -services) over every layout of ``size`` nodes, or None if none is valid.

    Every non-empty service set on every hardware and image type is tried as a node; among the
    nodes with the same services only the cheapest matters for the optimum. Then every multiset
    of ``size`` such nodes is tried."""
    rules = Rules(template, catalog, size, **options)
    cluster = rules.closure()
    if not rules.cluster_ok(cluster):
        return None
    nodes = {}
    for r in range(1, len(cluster) + 1):
        for services in itertools.combinations(sorted(cluster), r):
            for hardware, image in itertools.product(catalog.hardwaretypes, catalog.imagetypes):
                if rules.node_ok(cluster, set(services), hardware, image):
                    cost = cost_of(catalog, hardware, PROVIDER)
                    nodes[services] = min(nodes.get(services, cost), cost)
    best = None
    for layout in itertools.combinations_with_replacement(sorted(nodes), size):
        counts = Counter(s for services in layout for s in services)
        if rules.counts_ok(cluster, counts):
            value = (sum(nodes[services] for services in layout),
                     -sum(len(services) for services in layout))
            best = value if best is None or value < best else best
    return best


def solve(template, catalog, size, options, current=None):
    try:
        return solve_layout(template, catalog, size, current=current, **options)
    except LayoutError as error:
        assert error.message and isinstance(error.details, dict)
        return None


@SETTINGS
@given(problems())
def test_the_solver_finds_the_exhaustive_optimum(problem):
    template, catalog, size, options = problem
    layout = solve(template, catalog, size, options)
    best = exhaustive(template, catalog, size, options)
    event("no layout" if layout is None else "a layout")
    if layout is None:
        assert best is None, f"solver found no layout, exhaustive search found {best}"
        return
    Rules(template, catalog, size, **options).check(layout)
    assert best is not None
    assert (layout.cost, -sum(len(n["services"]) for n in layout.nodes)) == \
        (float(best[0]), best[1])
    again = solve_layout(template, catalog, size, **options)
    assert again.to_dict() == layout.to_dict()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(1, 4))
def test_changes_keep_the_machines(problem, new_size):
    template, catalog, size, options = problem
    first = solve(template, catalog, size, options)
    assume(first is not None)
    current = [dict(node, id=f"n{i}") for i, node in enumerate(first.nodes)]
    again = solve_layout(template, catalog, size, current=current, **options)
    assert again.nodes == current and not again.changed and not again.removed
    layout = solve(template, catalog, new_size, options, current)
    event("grow" if new_size > size else "shrink" if new_size < size else "same")
    if layout is None:
        assert exhaustive(template, catalog, new_size, options) is None or \
            new_size != size
        return
    Rules(template, catalog, new_size, **options).check(layout, current)
    assert len(layout.removed) == max(0, size - new_size)
    assert layout.added == max(0, new_size - size)
    if new_size >= size:
        assert [n["id"] for n in layout.nodes[:size]] == [n["id"] for n in current]
