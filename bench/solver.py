"""Benchmark of the layout solver on large generated templates; prints time and peak memory.

Usage: python bench/solver.py [SIZE ...]   (default sizes: 1000 10000)

The generated template has 50 services: 38 without constraints (they go on every node) and 12
constrained ones in mustcoexist and cantcoexist groups, with quantities and per-service hardware
types, over 5 hardware types with costs and 2 image types. Each size is solved for a new cluster,
then as changes to that cluster: grow by 5%, shrink by 10%, add a service, remove one. Two harder
variants follow: no service without constraints (so no node is empty only thanks to them), and
every capped service in conflict with the service the spare nodes hold (so no shortcut applies and
the search walks every combination of capped counts: the worst case we know).

Times are wall clock and CPU (the machine may be shared); memory is tracemalloc's peak.
"""

import copy
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster_server.solver import solve_layout  # noqa: E402

PROVIDER = "bench"
HARDWARE = {"small": "0.03", "medium": "0.07", "large": "0.14", "xlarge": "0.28",
            "2xlarge": "0.56"}
IMAGES = ["centos7", "ubuntu22"]
CONSTRAINED = {
    "namenode": {"quantities": {"min": 1, "max": 1}},
    "resourcemanager": {"quantities": {"max": 1}},
    "historyserver": {"quantities": {"max": 1}},
    "datanode": {"quantities": {"min": 3}, "hardwaretypes": ["large", "xlarge"]},
    "nodemanager": {},
    "zookeeper": {"quantities": {"min": 3, "max": 5}},
    "gateway": {"quantities": {"max": 2}, "hardwaretypes": ["small", "medium"]},
    "database": {"quantities": {"max": 1}, "hardwaretypes": ["xlarge", "2xlarge"]},
    "cache": {"quantities": {"min": 2}},
    "monitor": {"quantities": {"max": 1}},
    "balancer": {"quantities": {"max": 2}, "hardwaretypes": ["small", "medium"]},
    "search": {"quantities": {"min": 2, "max": 10}, "imagetypes": ["centos7"]},
}
PLAIN = [f"agent-{i:02d}" for i in range(38)]


def catalog():
    services = {name: {"name": name, "dependencies": {}} for name in [*CONSTRAINED, *PLAIN]}
    services["nodemanager"]["dependencies"] = {"runtime": {"requires": ["resourcemanager"]}}
    hardware = {name: {"name": name, "providermap": {PROVIDER: {"flavor": name, "cost": cost}}}
                for name, cost in HARDWARE.items()}
    images = {name: {"name": name, "providermap": {PROVIDER: {"image": name}}} for name in IMAGES}
    return SimpleNamespace(services=services, hardwaretypes=hardware, imagetypes=images)


def template():
    return {
        "name": "bench",
        "defaults": {"services": [*CONSTRAINED, *PLAIN[:-1]], "provider": PROVIDER},
        "compatibility": {"hardwaretypes": list(HARDWARE), "imagetypes": IMAGES},
        "constraints": {
            "size": {"min": 3},
            "layout": {
                "mustcoexist": [["namenode", "resourcemanager", "historyserver"],
                                ["datanode", "nodemanager"]],
                "cantcoexist": [["namenode", "datanode"], ["resourcemanager", "nodemanager"],
                                ["database", "datanode"], ["zookeeper", "balancer"],
                                ["monitor", "gateway"], ["search", "cache"],
                                ["gateway", "balancer", "database"]],
            },
            "services": CONSTRAINED,
        },
    }


def worst_case():
    # Every capped service conflicts with cache, which the spare nodes hold.
    hard = copy.deepcopy(template())
    hard["constraints"]["layout"]["cantcoexist"] += [
        ["cache", name] for name in ("balancer", "gateway", "namenode", "monitor", "zookeeper",
                                     "database")]
    return hard


def measure(label, call):
    started, cpu = time.perf_counter(), time.process_time()
    layout = call()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    groups = len(layout.groups())
    print(f"{label:<34} {seconds:8.3f} s {cpu:8.3f} s {peak / 2**20:9.1f} MiB"
          f"  {len(layout.nodes):6d} nodes"
          f"  {groups:3d} groups  cost {layout.cost:.2f}  +{layout.added} "
          f"-{len(layout.removed)} ~{len(layout.changed)}")
    return layout


def current_of(layout):
    return [dict(node, id=f"n{i}") for i, node in enumerate(layout.nodes)]


def main(sizes):
    cat, tpl = catalog(), template()
    print(f"{'case':<34} {'wall':>10} {'cpu':>10} {'peak mem':>13}")
    for size in sizes:
        made = measure(f"create {size}", lambda: solve_layout(tpl, cat, size))
        nodes = current_of(made)
        grow, shrink = size + size // 20, size - size // 10
        every = tpl["defaults"]["services"]
        measure(f"grow {size} -> {grow}", lambda: solve_layout(tpl, cat, grow, current=nodes))
        measure(f"shrink {size} -> {shrink}",
                lambda: solve_layout(tpl, cat, shrink, current=nodes))
        measure(f"add {PLAIN[-1]} at {size}",
                lambda: solve_layout(tpl, cat, size, services=every + [PLAIN[-1]],
                                     current=nodes))
        measure(f"remove cache at {size}",
                lambda: solve_layout(tpl, cat, size, services=[s for s in every if s != "cache"],
                                     current=nodes))
    lonely = copy.deepcopy(tpl)
    lonely["defaults"]["services"] = list(CONSTRAINED)
    hard = worst_case()
    for size in sizes:
        measure(f"no common services, create {size}", lambda: solve_layout(lonely, cat, size))
        measure(f"worst case, create {size}", lambda: solve_layout(hard, cat, size))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS: {rss:.1f} MiB")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1000, 10000])
