"""Tests of the layout solver: each constraint alone and combined, changes to a running cluster,
error messages, and every template of the reference Coopr catalog at several sizes.

``Rules`` is an independent checker of a layout against a template: it reads the template and
catalog directly and shares no code with the solver.
"""

import itertools
import json
import pathlib
import random
import time
from collections import Counter
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace

import pytest

from cluster_server.errors import LayoutError, ValidationError
from cluster_server.solver import Layout, solve_layout

COOPR = pathlib.Path(__file__).resolve().parents[1] / "data" / "coopr-catalog"
PROVIDER = "p"


# ----- an independent checker -----------------------------------------------------------------


def _deps(entry):
    return entry.get("dependencies") or {}


def requires_of(entry):
    deps = _deps(entry)
    return ((deps.get("install") or {}).get("requires") or []) + \
        ((deps.get("runtime") or {}).get("requires") or [])


def provides_of(entry):
    return _deps(entry).get("provides") or []


def cost_of(catalog, hardware, provider):
    flavor = catalog.hardwaretypes.get(hardware, {}).get("providermap", {}).get(provider) or {}
    raw = flavor.get("cost")
    return Fraction(Decimal(str(raw))) if raw not in (None, "") else Fraction(0)


class Rules:
    """What a valid layout must satisfy, read straight from the template and the catalog."""

    def __init__(self, template, catalog, size, *, services=None, provider=None,
                 hardwaretype=None, imagetype=None):
        self.catalog, self.size = catalog, size
        defaults = template.get("defaults") or {}
        self.compat = template.get("compatibility") or {}
        constraints = template.get("constraints") or {}
        self.size_range = constraints.get("size") or {}
        self.provider = provider or defaults.get("provider")
        self.requested = set(services if services is not None else defaults.get("services", []))
        self.hardware = hardwaretype or defaults.get("hardwaretype")
        self.image = imagetype or defaults.get("imagetype")
        self.per = constraints.get("services") or {}
        layout = constraints.get("layout") or {}
        self.must = layout.get("mustcoexist") or []
        self.cant = layout.get("cantcoexist") or []
        self.mentioned = {s for g in self.must + self.cant for s in g} | set(self.per)

    def closure(self):
        """The requested services plus requirements: by name, else the first provider."""
        known = self.catalog.services
        cluster = set(self.requested)
        changed = True
        while changed:
            changed = False
            for service in sorted(cluster):
                for need in requires_of(known[service]):
                    if need in cluster or any(need in provides_of(known[s]) for s in cluster):
                        continue
                    cluster.add(need if need in known else
                                min(s for s in known if need in provides_of(known[s])))
                    changed = True
        return cluster

    def cluster_ok(self, cluster):
        known = self.catalog.services
        if not self.requested <= cluster:
            return False
        if self.compat.get("services") and not cluster <= set(self.compat["services"]):
            return False
        for service in cluster:
            for need in requires_of(known[service]):
                if need not in cluster and not any(need in provides_of(known[s])
                                                   for s in cluster):
                    return False
            for other in cluster - {service}:
                names = {other, *provides_of(known[other])}
                if names & set(_deps(known[service]).get("conflicts") or []):
                    return False
        low = self.size_range.get("min", 1)
        high = self.size_range.get("max")
        return low <= self.size and (high is None or self.size <= high)

    def type_ok(self, entries, name, fixed, allowed):
        return (name in entries and self.provider in entries[name].get("providermap", {})
                and (not allowed or name in allowed) and (not fixed or name == fixed))

    def node_ok(self, cluster, services, hardware, image, new=True):
        if not services or not services <= cluster:
            return False
        if new and not self.type_ok(self.catalog.hardwaretypes, hardware, self.hardware,
                                    self.compat.get("hardwaretypes")):
            return False
        if new and not self.type_ok(self.catalog.imagetypes, image, self.image,
                                    self.compat.get("imagetypes")):
            return False
        for group in self.must:
            present = set(group) & cluster
            if services & present and not present <= services:
                return False
        for group in self.cant:
            present = set(group) & cluster
            if len(present) >= 2 and present <= services:
                return False
        if not (cluster - self.mentioned) <= services:
            return False
        for service in services:
            rule = self.per.get(service) or {}
            if rule.get("hardwaretypes") and hardware not in rule["hardwaretypes"]:
                return False
            if rule.get("imagetypes") and image not in rule["imagetypes"]:
                return False
        return True

    def counts_ok(self, cluster, counts):
        for service in cluster:
            amounts = (self.per.get(service) or {}).get("quantities") or {}
            if counts[service] < max(1, amounts.get("min") or 0):
                return False
            if amounts.get("max") is not None and counts[service] > amounts["max"]:
                return False
        return True

    def check(self, layout, current=None):
        """Assert that ``layout`` satisfies every rule (and, for a change, reports it right)."""
        cluster = set(layout.services)
        assert layout.services == sorted(cluster)
        assert self.cluster_ok(cluster), f"services {sorted(cluster)} break a cluster rule"
        assert len(layout.nodes) == self.size
        machines = {n["id"]: n for n in current or []}
        counts, cost = Counter(), Fraction(0)
        for node in layout.nodes:
            services = set(node["services"])
            assert node["services"] == sorted(services)
            new = node["id"] is None
            if not new:
                old = machines[node["id"]]
                assert (node["hardwaretype"], node["imagetype"]) == \
                    (old["hardwaretype"], old["imagetype"]), "a machine changed type"
            assert self.node_ok(cluster, services, node["hardwaretype"], node["imagetype"],
                                new), f"invalid node {node}"
            counts.update(services)
            cost += cost_of(self.catalog, node["hardwaretype"], self.provider)
        assert self.counts_ok(cluster, counts), f"quantities broken: {counts}"
        assert layout.cost == float(cost)
        assert layout.added == sum(1 for n in layout.nodes if n["id"] is None)
        kept = [n["id"] for n in layout.nodes if n["id"] is not None]
        assert len(set(kept)) == len(kept)
        assert layout.removed == [i for i in machines if i not in kept]
        assert layout.changed == [n["id"] for n in layout.nodes if n["id"] is not None and
                                  set(n["services"]) != set(machines[n["id"]]["services"])]
        assert kept == [i for i in machines if i in kept], "existing nodes first, in order"
        assert all(n["id"] is not None for n in layout.nodes[:len(kept)])


def solve_and_check(template, catalog, size, **options):
    current = options.get("current")
    layout = solve_layout(template, catalog, size, **options)
    rules = Rules(template, catalog, size, **{k: v for k, v in options.items()
                                               if k != "current"})
    rules.check(layout, current)
    return layout


# ----- small catalogs -------------------------------------------------------------------------


def make_catalog(services, hardware=None, images=None, provider=PROVIDER):
    """services: name -> dependencies dict (or None); hardware: name -> cost."""
    hardware = hardware if hardware is not None else {"small": "1", "large": "3"}
    images = images if images is not None else ["img"]
    return SimpleNamespace(
        services={name: {"name": name, "dependencies": deps or {}}
                  for name, deps in services.items()},
        hardwaretypes={name: {"name": name, "providermap": {provider: {"flavor": name,
                                                                        "cost": cost}}}
                       for name, cost in hardware.items()},
        imagetypes={name: {"name": name, "providermap": {provider: {"image": name}}}
                    for name in images})


def make_template(names, **constraints):
    """A template with ``names`` as default services; keywords become its constraints."""
    layout = {k: constraints.pop(k) for k in ("mustcoexist", "cantcoexist") if k in constraints}
    return {"name": "t", "defaults": {"services": names, "provider": PROVIDER},
            "constraints": {"layout": layout, **constraints}}


def plain(*names):
    return make_catalog({name: None for name in names})


def by_services(layout):
    return Counter(tuple(n["services"]) for n in layout.nodes)


# ----- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, "3", 2.0, True, None])
def test_size_must_be_a_positive_whole_number(size):
    with pytest.raises(ValidationError) as error:
        solve_layout(make_template(["a"]), plain("a"), size)
    assert error.value.details["field"] == "size"


@pytest.mark.parametrize("size", [100_001, 10**20, 2**63 - 1])
def test_size_has_an_upper_bound(size):
    # 10**20 was an internal error, 2**63 - 1 a MemoryError, 10**6 took gigabytes.
    with pytest.raises(ValidationError, match="at most 100,000 nodes") as error:
        solve_layout(make_template(["a"]), plain("a"), size)
    assert error.value.details["field"] == "size"


def test_current_nodes_need_unique_ids():
    node = {"id": "x", "services": ["a"], "hardwaretype": "small", "imagetype": "img"}
    with pytest.raises(ValidationError, match="appears twice"):
        solve_layout(make_template(["a"]), plain("a"), 2, current=[node, dict(node)])


def test_current_nodes_need_a_service_list():
    node = {"id": "x", "services": "a", "hardwaretype": "small", "imagetype": "img"}
    with pytest.raises(ValidationError, match="list of services"):
        solve_layout(make_template(["a"]), plain("a"), 1, current=[node])


def test_a_provider_is_needed():
    template = make_template(["a"])
    del template["defaults"]["provider"]
    with pytest.raises(ValidationError, match="provider"):
        solve_layout(template, plain("a"), 1)
    assert solve_layout(template, plain("a"), 1, provider=PROVIDER).provider == PROVIDER


def test_an_empty_service_list_is_refused():
    with pytest.raises(ValidationError, match="services"):
        solve_layout(make_template(["a"]), plain("a"), 1, services=[])


# ----- each constraint alone ------------------------------------------------------------------


def test_services_without_constraints_go_on_every_node():
    layout = solve_and_check(make_template(["a", "b"]), plain("a", "b"), 4)
    assert by_services(layout) == {("a", "b"): 4}


def test_size_range_is_enforced_and_stated():
    template = make_template(["a"], size={"min": 2, "max": 5})
    solve_and_check(template, plain("a"), 2)
    for size in (1, 6):
        with pytest.raises(LayoutError) as error:
            solve_layout(template, plain("a"), size)
        assert "between 2 and 5 nodes" in error.value.message
        assert error.value.details == {"size": size, "min": 2, "max": 5}


def test_size_minimum_only():
    with pytest.raises(LayoutError, match="at least 3 nodes; asked for 2"):
        solve_layout(make_template(["a"], size={"min": 3}), plain("a"), 2)


def test_mustcoexist_services_share_every_node_they_are_on():
    template = make_template(["a", "b", "c"], mustcoexist=[["a", "b"]], cantcoexist=[["b", "c"]])
    layout = solve_and_check(template, plain("a", "b", "c"), 4)
    for node in layout.nodes:
        assert ("a" in node["services"]) == ("b" in node["services"])


def test_mustcoexist_counts_only_services_on_the_cluster():
    # "c" is not on the cluster, so a node holding "a" need not hold it.
    template = make_template(["a", "b"], mustcoexist=[["a", "c"]])
    layout = solve_and_check(template, plain("a", "b", "c"), 2)
    assert by_services(layout) == {("a", "b"): 2}


def test_cantcoexist_services_never_share_a_node():
    template = make_template(["a", "b"], cantcoexist=[["a", "b"]])
    layout = solve_and_check(template, plain("a", "b"), 5)
    assert all(len(n["services"]) == 1 for n in layout.nodes)
    assert {s for n in layout.nodes for s in n["services"]} == {"a", "b"}


def test_cantcoexist_counts_only_services_on_the_cluster():
    # Of the group {a, b, c} only a and b are on the cluster: those two may not share a node.
    template = make_template(["a", "b"], cantcoexist=[["a", "b", "c"]])
    layout = solve_and_check(template, plain("a", "b", "c"), 2)
    assert by_services(layout) == {("a",): 1, ("b",): 1}
    # With only one of its services on the cluster, a group forbids nothing.
    template = make_template(["a"], cantcoexist=[["a", "c"]])
    assert by_services(solve_and_check(template, plain("a", "c"), 2)) == {("a",): 2}


def test_quantities_min_and_max():
    template = make_template(["a", "b", "c"], services={"a": {"quantities": {"min": 2, "max": 3}},
                                                        "b": {"quantities": {"max": 1}}})
    layout = solve_and_check(template, plain("a", "b", "c"), 6)
    counts = Counter(s for n in layout.nodes for s in n["services"])
    assert counts == {"a": 3, "b": 1, "c": 6}  # as many as allowed: more services, same cost


def test_quantities_minimum_above_the_size_names_the_smallest_size():
    template = make_template(["a"], services={"a": {"quantities": {"min": 3}}})
    with pytest.raises(LayoutError) as error:
        solve_layout(template, plain("a"), 2)
    assert error.value.message == ("a needs at least 3 nodes, so a cluster of 2 nodes cannot "
                                   "hold it; the smallest size is 3")
    assert error.value.details["smallest_size"] == 3


def test_quantities_max_zero_for_a_requested_service():
    template = make_template(["a"], services={"a": {"quantities": {"max": 0}}})
    with pytest.raises(LayoutError, match="a is limited to 0 nodes"):
        solve_layout(template, plain("a"), 1)


def test_per_service_hardware_types():
    template = make_template(["a", "b"], services={"b": {"hardwaretypes": ["large"]}})
    layout = solve_and_check(template, plain("a", "b"), 3)
    for node in layout.nodes:
        assert ("b" in node["services"]) == (node["hardwaretype"] == "large")
    assert layout.cost == 1 + 1 + 3


def test_per_service_image_types():
    catalog = make_catalog({"a": None, "b": None}, images=["x", "y"])
    template = make_template(["a", "b"], services={"b": {"imagetypes": ["y"]}})
    layout = solve_and_check(template, catalog, 2)
    assert all(n["imagetype"] == "y" for n in layout.nodes if "b" in n["services"])


def test_compatibility_whitelists_hardware_and_images():
    catalog = make_catalog({"a": None}, hardware={"small": 1, "large": 3}, images=["x", "y"])
    template = make_template(["a"])
    template["compatibility"] = {"hardwaretypes": ["large"], "imagetypes": ["y"]}
    layout = solve_and_check(template, catalog, 2)
    assert {(n["hardwaretype"], n["imagetype"]) for n in layout.nodes} == {("large", "y")}


def test_compatibility_services_refuse_others_by_name():
    template = make_template(["a", "b", "c"])
    template["compatibility"] = {"services": ["a"]}
    with pytest.raises(LayoutError) as error:
        solve_layout(template, plain("a", "b", "c"), 1)
    assert "does not allow b and c" in error.value.message
    assert error.value.details["incompatible_services"] == ["b", "c"]


def test_hardware_needs_an_entry_for_the_provider():
    catalog = make_catalog({"a": None})
    catalog.hardwaretypes["other"] = {"name": "other", "providermap": {"elsewhere": {}}}
    with pytest.raises(LayoutError, match="other .*no entry for provider p"):
        solve_layout(make_template(["a"]), catalog, 1, hardwaretype="other")
    # Chosen freely, it is simply never used.
    layout = solve_and_check(make_template(["a"]), catalog, 2)
    assert {n["hardwaretype"] for n in layout.nodes} == {"small"}


def test_requested_hardware_and_image_apply_to_every_node():
    catalog = make_catalog({"a": None, "b": None}, images=["x", "y"])
    template = make_template(["a", "b"], cantcoexist=[["a", "b"]])
    layout = solve_and_check(template, catalog, 3, hardwaretype="large", imagetype="y")
    assert {(n["hardwaretype"], n["imagetype"]) for n in layout.nodes} == {("large", "y")}
    assert layout.cost == 9


def test_template_default_hardware_applies_to_every_node():
    template = make_template(["a"])
    template["defaults"]["hardwaretype"] = "large"
    assert solve_and_check(template, plain("a"), 2).cost == 6


def test_a_fixed_hardware_type_that_a_service_refuses():
    template = make_template(["a", "b"], services={"b": {"hardwaretypes": ["large"]}})
    with pytest.raises(LayoutError) as error:
        solve_layout(template, plain("a", "b"), 2, hardwaretype="small")
    assert error.value.message == ("b runs only on hardware types large, but every node uses "
                                   "hardware type small (requested)")


def test_requirements_are_pulled_in_transitively():
    catalog = make_catalog({"a": {"install": {"requires": ["b"]}},
                            "b": {"runtime": {"requires": ["c"]}}, "c": None})
    layout = solve_and_check(make_template(["a"]), catalog, 1)
    assert layout.services == ["a", "b", "c"]


def test_a_requirement_met_by_provides():
    catalog = make_catalog({"app": {"runtime": {"requires": ["database"]}},
                            "mysql": {"provides": ["database"]},
                            "pg": {"provides": ["database"]}})
    # Already on the cluster: nothing is pulled in.
    layout = solve_and_check(make_template(["app", "pg"]), catalog, 1)
    assert layout.services == ["app", "pg"]
    # Not on the cluster: the first provider is pulled in.
    assert solve_and_check(make_template(["app"]), catalog, 1).services == ["app", "mysql"]


def test_an_unmet_requirement_is_named():
    catalog = make_catalog({"a": {"runtime": {"requires": ["ghost"]}}})
    with pytest.raises(LayoutError) as error:
        solve_layout(make_template(["a"]), catalog, 1)
    assert error.value.message == "a requires ghost, which no service in the catalog provides"


def test_a_pulled_in_service_must_be_compatible():
    catalog = make_catalog({"a": {"runtime": {"requires": ["b"]}}, "b": None})
    template = make_template(["a"])
    template["compatibility"] = {"services": ["a"]}
    with pytest.raises(LayoutError, match="a requires b, which template t does not allow"):
        solve_layout(template, catalog, 1)


def test_conflicting_services_cannot_both_be_on_the_cluster():
    catalog = make_catalog({"a": {"conflicts": ["b"]}, "b": None, "c": {"provides": ["b"]}})
    with pytest.raises(LayoutError, match="a conflicts with b"):
        solve_layout(make_template(["a", "b"]), catalog, 1)
    with pytest.raises(LayoutError, match="a conflicts with c"):
        solve_layout(make_template(["a", "c"]), catalog, 1)


def test_a_service_missing_from_the_catalog_is_named():
    with pytest.raises(LayoutError) as error:
        solve_layout(make_template(["a", "nope"]), plain("a"), 1)
    assert error.value.message == "service nope is not in the catalog"
    assert error.value.details == {"missing_services": ["nope"]}


def test_missing_default_hardware_is_named():
    template = make_template(["a"])
    template["defaults"]["hardwaretype"] = "huge"
    with pytest.raises(LayoutError, match="hardware type huge .* is not in the catalog"):
        solve_layout(template, plain("a"), 1)


# ----- cost and preference --------------------------------------------------------------------


def test_the_cheapest_hardware_is_chosen_per_node():
    catalog = make_catalog({"a": None, "b": None},
                           hardware={"big": "2.50", "mid": 1.25, "tiny": "0.5", "free": None})
    catalog.hardwaretypes["free"]["providermap"][PROVIDER].pop("cost")
    template = make_template(["a", "b"], services={"b": {"hardwaretypes": ["big", "mid"]}})
    layout = solve_and_check(template, catalog, 3)
    assert sorted(n["hardwaretype"] for n in layout.nodes) == ["free", "free", "mid"]
    assert layout.cost == 1.25


def test_decimal_costs_add_up_exactly():
    catalog = make_catalog({"a": None}, hardware={"h": "0.1"})
    assert solve_and_check(make_template(["a"]), catalog, 3).cost == 0.3


def test_at_equal_cost_more_services_per_node_win():
    template = make_template(["a", "b", "c"], cantcoexist=[["a", "b"]],
                             services={"c": {"quantities": {"max": 2}}})
    layout = solve_and_check(template, plain("a", "b", "c"), 3)
    assert sum(len(n["services"]) for n in layout.nodes) == 5


def test_cost_comes_before_more_services():
    # Putting b on a node forces large hardware: b goes on exactly one node.
    template = make_template(["a", "b"], services={"b": {"hardwaretypes": ["large"]}})
    layout = solve_and_check(template, plain("a", "b"), 4)
    assert sum("b" in n["services"] for n in layout.nodes) == 1


def test_a_capped_service_on_costly_hardware_goes_on_as_few_nodes_as_needed():
    template = make_template(["a", "b"], services={"b": {"hardwaretypes": ["large"],
                                                         "quantities": {"max": 2}}})
    layout = solve_and_check(template, plain("a", "b"), 4)
    assert by_services(layout) == {("a",): 3, ("a", "b"): 1} and layout.cost == 6


def test_a_cheap_node_is_kept_apart_when_sharing_would_need_costly_hardware():
    # No common service: every node holds a constrained one. Putting a with v would need large.
    template = make_template(["a", "v"], services={"a": {"quantities": {"min": 2, "max": 2}},
                                                   "v": {"hardwaretypes": ["large"]}})
    layout = solve_and_check(template, plain("a", "v"), 3)
    assert by_services(layout) == {("a",): 2, ("v",): 1} and layout.cost == 5


def test_the_same_input_gives_the_same_output_whatever_the_catalog_order():
    names = ["a", "b", "c", "d"]
    template = make_template(names, cantcoexist=[["a", "b"], ["c", "d"]],
                             services={"a": {"quantities": {"max": 2}}})
    expected = solve_layout(template, plain(*names), 5).to_dict()
    for seed in range(5):
        shuffled = names[:]
        random.Random(seed).shuffle(shuffled)
        catalog = make_catalog({n: None for n in shuffled}, hardware={"large": 3, "small": 1})
        assert solve_layout(template, catalog, 5).to_dict() == expected


# ----- constraints combined -------------------------------------------------------------------


def hadoop_like():
    catalog = make_catalog({name: None for name in
                            ["base", "nn", "rm", "dn", "nm", "zk", "db", "web"]},
                           hardware={"small": 1, "medium": 2, "large": 4})
    template = make_template(
        ["base", "nn", "rm", "dn", "nm", "zk", "db", "web"],
        mustcoexist=[["nn", "rm"], ["dn", "nm"]],
        cantcoexist=[["nn", "dn"], ["rm", "nm"], ["db", "dn"], ["web", "zk"]],
        services={"nn": {"quantities": {"min": 1, "max": 1}},
                  "dn": {"quantities": {"min": 2}, "hardwaretypes": ["medium", "large"]},
                  "zk": {"quantities": {"min": 3, "max": 3}},
                  "db": {"quantities": {"max": 1}, "hardwaretypes": ["large"]},
                  "web": {"quantities": {"max": 2}, "hardwaretypes": ["small", "medium"]}},
        size={"min": 3})
    return template, catalog


@pytest.mark.parametrize("size", [4, 5, 8, 20])
def test_combined_constraints(size):
    template, catalog = hadoop_like()
    layout = solve_and_check(template, catalog, size)
    counts = Counter(s for n in layout.nodes for s in n["services"])
    assert counts["nn"] == 1 and counts["zk"] == 3 and counts["db"] == 1
    assert counts["base"] == size


def test_combined_constraints_too_small():
    # zk needs 3 nodes and web one more, as they cannot share.
    template, catalog = hadoop_like()
    with pytest.raises(LayoutError) as error:
        solve_layout(template, catalog, 3)
    assert error.value.message == ("zk needs at least 3 nodes and cannot share a node with web, "
                                   "so a cluster of 3 nodes cannot hold them; the smallest size "
                                   "is 4")


def test_combined_constraints_cost_is_minimal_against_exhaustive_search():
    template, catalog = hadoop_like()
    rules = Rules(template, catalog, 4)
    cluster = rules.closure()
    options = []
    for r in range(1, len(cluster) + 1):
        for services in itertools.combinations(sorted(cluster), r):
            for hw in catalog.hardwaretypes:
                if rules.node_ok(cluster, set(services), hw, "img"):
                    options.append((services, hw))
    best = None
    for nodes in itertools.combinations_with_replacement(options, 4):
        counts = Counter(s for services, _ in nodes for s in services)
        if rules.counts_ok(cluster, counts):
            value = (sum(cost_of(catalog, hw, PROVIDER) for _, hw in nodes),
                     -sum(len(services) for services, _ in nodes))
            best = value if best is None or value < best else best
    layout = solve_and_check(template, catalog, 4)
    assert (layout.cost, -sum(len(n["services"]) for n in layout.nodes)) == \
        (float(best[0]), best[1])


def test_mustcoexist_against_cantcoexist_is_explained():
    template = make_template(["a", "b"], mustcoexist=[["a", "b"]], cantcoexist=[["a", "b"]])
    with pytest.raises(LayoutError, match="a and b must share a node .*cannot all share"):
        solve_layout(template, plain("a", "b"), 2)


def test_min_against_max_inside_a_mustcoexist_group():
    template = make_template(["a", "b"], mustcoexist=[["a", "b"]],
                             services={"a": {"quantities": {"min": 3}},
                                       "b": {"quantities": {"max": 2}}})
    with pytest.raises(LayoutError) as error:
        solve_layout(template, plain("a", "b"), 5)
    assert error.value.message == ("a needs at least 3 nodes but b allows at most 2 (they must "
                                   "share nodes: mustcoexist)")


# ----- explanations ---------------------------------------------------------------------------


def test_too_small_for_a_minimum_and_a_cantcoexist_rule():
    catalog = plain("base", "hadoop-hdfs-namenode", "hadoop-hdfs-datanode", "extra")
    template = make_template(
        ["base", "hadoop-hdfs-namenode", "hadoop-hdfs-datanode", "extra"],
        cantcoexist=[["hadoop-hdfs-namenode", "hadoop-hdfs-datanode"]],
        services={"hadoop-hdfs-namenode": {"quantities": {"min": 1, "max": 1}},
                  "hadoop-hdfs-datanode": {"quantities": {"min": 2}},
                  "extra": {"quantities": {"max": 1}}})
    with pytest.raises(LayoutError) as error:
        solve_layout(template, catalog, 2)
    assert error.value.message == (
        "hadoop-hdfs-datanode needs at least 2 nodes and cannot share a node with "
        "hadoop-hdfs-namenode, so a cluster of 2 nodes cannot hold them; the smallest size is 3")
    details = error.value.details
    assert details["size"] == 2 and details["smallest_size"] == 3
    assert {"kind": "cantcoexist", "services": ["hadoop-hdfs-datanode", "hadoop-hdfs-namenode"]} \
        in details["constraints"]
    solve_and_check(template, catalog, 3)


def test_too_many_nodes_when_every_node_needs_a_capped_service():
    template = make_template(["a", "b"], services={"a": {"quantities": {"max": 1}},
                                                   "b": {"quantities": {"max": 2}}})
    with pytest.raises(LayoutError) as error:
        solve_layout(template, plain("a", "b"), 4)
    assert error.value.message == (
        "every node needs at least one service, and a is limited to 1 node and b is limited to "
        "2 nodes, so a cluster of 4 nodes cannot be filled; the largest size is 3")
    assert error.value.details["largest_size"] == 3


def test_hardware_rules_that_leave_a_service_nowhere():
    catalog = make_catalog({"a": None, "b": None}, hardware={"small": 1, "large": 2})
    template = make_template(["a", "b"], services={"b": {"hardwaretypes": ["large"]}})
    template["compatibility"] = {"hardwaretypes": ["small"]}
    with pytest.raises(LayoutError) as error:
        solve_layout(template, catalog, 2)
    assert error.value.message == ("b runs only on hardware types large, but new nodes can use "
                                   "small")


# ----- changes to a running cluster -----------------------------------------------------------


def named(layout, prefix="n"):
    return [dict(node, id=node["id"] or f"{prefix}{i}") for i, node in enumerate(layout.nodes)]


def test_growing_keeps_every_node_and_its_services():
    template, catalog = hadoop_like()
    current = named(solve_layout(template, catalog, 4))
    layout = solve_and_check(template, catalog, 7, current=current)
    assert [n["id"] for n in layout.nodes[:4]] == [n["id"] for n in current]
    assert layout.added == 3 and layout.removed == [] and layout.changed == []
    assert layout.nodes[:4] == current


def test_solving_again_at_the_same_size_changes_nothing():
    template, catalog = hadoop_like()
    current = named(solve_layout(template, catalog, 6))
    layout = solve_and_check(template, catalog, 6, current=current)
    assert layout.nodes == current
    assert (layout.added, layout.removed, layout.changed) == (0, [], [])


def test_shrinking_removes_the_nodes_that_disturb_least():
    template, catalog = hadoop_like()
    current = named(solve_layout(template, catalog, 8))
    holder = {s: [n["id"] for n in current if s in n["services"]] for s in ("nn", "web", "zk")}
    assert len(holder["web"]) == 2 and len(holder["zk"]) == 3
    # One node too many: a second web node is the one spare.
    layout = solve_and_check(template, catalog, 7, current=current)
    assert layout.removed == [i for i in holder["web"] if i not in holder["nn"]]
    assert layout.changed == [] and layout.added == 0
    # Three too many: zk (exactly 3) must move onto kept nodes; the fewest moves win.
    layout = solve_and_check(template, catalog, 5, current=current)
    assert len(layout.removed) == 3 and layout.added == 0 and len(layout.changed) == 2
    assert holder["nn"][0] not in layout.removed + layout.changed


def test_shrinking_below_a_minimum_moves_services_onto_kept_nodes():
    template = make_template(["a", "b"], services={"b": {"quantities": {"min": 2, "max": 2}}})
    catalog = plain("a", "b")
    current = [{"id": "x", "services": ["a", "b"], "hardwaretype": "small", "imagetype": "img"},
               {"id": "y", "services": ["a", "b"], "hardwaretype": "small", "imagetype": "img"},
               {"id": "z", "services": ["a"], "hardwaretype": "small", "imagetype": "img"}]
    layout = solve_and_check(template, catalog, 2, current=current)
    assert layout.removed == ["z"] and layout.changed == []


def test_adding_a_service_puts_it_where_it_fits():
    template, catalog = hadoop_like()
    catalog.services["agent"] = {"name": "agent", "dependencies": {}}
    current = named(solve_layout(template, catalog, 5))
    every = template["defaults"]["services"] + ["agent"]
    layout = solve_and_check(template, catalog, 5, services=every, current=current)
    assert layout.changed == [n["id"] for n in current]  # agent is unconstrained: every node
    assert all("agent" in n["services"] for n in layout.nodes)
    assert all(set(old["services"]) <= set(new["services"])
               for old, new in zip(current, layout.nodes))


def test_removing_a_service_takes_it_off_its_nodes():
    template, catalog = hadoop_like()
    current = named(solve_layout(template, catalog, 5))
    every = [s for s in template["defaults"]["services"] if s != "web"]
    layout = solve_and_check(template, catalog, 5, services=every, current=current)
    assert layout.changed == [n["id"] for n in current if "web" in n["services"]]
    assert all("web" not in n["services"] for n in layout.nodes)


def test_a_machine_keeps_its_type_even_if_the_template_no_longer_lists_it():
    catalog = make_catalog({"a": None}, hardware={"small": 1, "old": 7})
    template = make_template(["a"])
    template["compatibility"] = {"hardwaretypes": ["small"]}
    current = [{"id": "m", "services": ["a"], "hardwaretype": "old", "imagetype": "img"}]
    layout = solve_and_check(template, catalog, 2, current=current)
    assert layout.nodes[0] == current[0] and layout.nodes[1]["hardwaretype"] == "small"
    assert layout.cost == 8


def test_kept_placements_give_way_when_they_block_every_layout():
    # Each node holds a and b; with no common service, four nodes need a and b apart.
    template = make_template(["a", "b"], services={"a": {"quantities": {"max": 2}},
                                                   "b": {"quantities": {"max": 2}}})
    current = named(solve_layout(template, plain("a", "b"), 2))
    assert all(n["services"] == ["a", "b"] for n in current)
    layout = solve_and_check(template, plain("a", "b"), 4, current=current)
    assert layout.added == 2 and len(layout.changed) == 2


def test_a_current_node_with_a_service_no_longer_on_the_cluster():
    current = [{"id": "m", "services": ["a", "gone"], "hardwaretype": "small", "imagetype": "img"}]
    layout = solve_and_check(make_template(["a"]), plain("a", "gone"), 1, current=current)
    assert layout.nodes == [dict(current[0], services=["a"])] and layout.changed == ["m"]


# ----- the Layout -----------------------------------------------------------------------------


def test_layout_to_dict_and_groups():
    template = make_template(["a", "b"], services={"b": {"hardwaretypes": ["large"],
                                                         "quantities": {"max": 1}}})
    layout = solve_layout(template, plain("a", "b"), 3)
    assert isinstance(layout, Layout)
    data = layout.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["cost"] == 5.0 and data["services"] == ["a", "b"] and data["added"] == 3
    assert layout.groups() == [
        {"count": 2, "services": ["a"], "hardwaretype": "small", "imagetype": "img",
         "cost": 2.0},
        {"count": 1, "services": ["a", "b"], "hardwaretype": "large", "imagetype": "img",
         "cost": 3.0}]


# ----- the reference Coopr catalog ------------------------------------------------------------


def load_coopr():
    def load(folder):
        items = (json.loads(path.read_text()) for path in sorted((COOPR / folder).glob("*.json")))
        return {item["name"]: item for item in items}

    return SimpleNamespace(services=load("services"), hardwaretypes=load("hardwaretypes"),
                           imagetypes=load("imagetypes"))


TEMPLATES = sorted(path.stem for path in (COOPR / "clustertemplates").glob("*.json"))


def coopr_template(name):
    return json.loads((COOPR / "clustertemplates" / f"{name}.json").read_text())


def test_the_reference_catalog_is_there():
    assert len(TEMPLATES) == 15


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("size", [1, 2, 3, 5, 10, 50])
def test_every_reference_template_solves_or_says_why(name, size):
    template, catalog = coopr_template(name), load_coopr()
    limits = (template.get("constraints") or {}).get("size") or {}
    try:
        layout = solve_and_check(template, catalog, size)
    except LayoutError as error:
        assert error.message and not error.message.startswith("Traceback")
        if name == "coopr-standalone-docker":
            assert error.message == "service coopr-standalone is not in the catalog"
        elif name == "docker-base":
            assert "image type centos6" in error.message and "not allowed" in error.message
        else:
            assert size < limits.get("min", 1) or size > limits.get("max", size)
            assert "asked for" in error.message
        return
    assert name not in ("coopr-standalone-docker", "docker-base")
    assert layout.provider == template["defaults"]["provider"]
    defaults = template["defaults"]
    assert {(n["hardwaretype"], n["imagetype"]) for n in layout.nodes} == \
        {(defaults["hardwaretype"], defaults["imagetype"])}


def test_docker_base_works_with_an_allowed_image():
    layout = solve_and_check(coopr_template("docker-base"), load_coopr(), 3, imagetype="centos7")
    assert by_services(layout) == {("base", "docker"): 3}


@pytest.mark.parametrize("size", [3, 4, 10, 100])
def test_cdap_distributed_layout(size):
    layout = solve_and_check(coopr_template("cdap-distributed"), load_coopr(), size)
    workers = ("base", "hadoop-hdfs-datanode", "hadoop-yarn-nodemanager", "hbase-regionserver")
    groups = by_services(layout)
    assert groups[workers] == min(size - 1, 99)
    assert sum(groups.values()) == size
    assert sum(1 for n in layout.nodes if "hadoop-hdfs-namenode" in n["services"]) == 1


def test_dcos_keeps_master_and_agents_apart():
    layout = solve_and_check(coopr_template("dcos-single-master"), load_coopr(), 4)
    assert by_services(layout) == {("dcos-master",): 1, ("dcos-private-agent",): 3}


def test_hadoop_distributed_grows_and_shrinks():
    template, catalog = coopr_template("hadoop-distributed"), load_coopr()
    current = named(solve_layout(template, catalog, 5))
    grown = solve_and_check(template, catalog, 9, current=current)
    assert grown.nodes[:5] == current and grown.added == 4
    shrunk = solve_and_check(template, catalog, 3, current=current)
    assert len(shrunk.removed) == 2 and shrunk.changed == []
    assert any("hadoop-hdfs-namenode" in n["services"] for n in shrunk.nodes)


def test_lamp_adds_haproxy_to_one_node():
    template, catalog = coopr_template("lamp"), load_coopr()
    current = named(solve_layout(template, catalog, 3))
    services = template["defaults"]["services"] + ["haproxy"]
    layout = solve_and_check(template, catalog, 3, services=services, current=current)
    assert sum("haproxy" in n["services"] for n in layout.nodes) == 1
    assert len(layout.changed) == 1


# ----- scale ----------------------------------------------------------------------------------


def test_ten_thousand_nodes_quickly():
    template, catalog = hadoop_like()
    started = time.perf_counter()
    layout = solve_and_check(template, catalog, 10000)
    assert time.perf_counter() - started < 5
    assert len(layout.groups()) < 10
