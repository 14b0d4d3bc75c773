"""The solved ``Layout``, and building it from the search's plan."""

from dataclasses import dataclass, field
from fractions import Fraction


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

    def to_dict(self, nodes=True):
        """As JSON; ``nodes=False`` leaves out the nodes (a plan's summary at 10,000 nodes)."""
        return {
            **({"nodes": [dict(node, services=list(node["services"])) for node in self.nodes]}
               if nodes else {}),
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
