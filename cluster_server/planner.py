"""Plan an operation on a cluster as a DAG of tasks.

Pure functions of their inputs (node layouts and the service catalog): no I/O, no store. The
executor writes the returned tasks to the store and runs each one once its ``depends_on`` are done.

Ordering rules (Coopr's, plus what resizing needs):

* A new node runs CREATE -> CONFIRM -> BOOTSTRAP, then each of its services runs
  INSTALL -> CONFIGURE -> INITIALIZE -> START. A removed service runs STOP -> REMOVE; a removed
  node runs DELETE after all of its REMOVEs.
* Every service task of an operation that adds nodes waits for every new node's CONFIRM: macros
  in any action may name any node's address, and addresses are only known once a node is
  confirmed.
* install.requires/uses of A on B: every INSTALL of A after every INSTALL of B; every REMOVE of B
  after every REMOVE of A.
* runtime.requires/uses of A on B: every INITIALIZE and START of A after every START of B; every
  STOP of B after every STOP of A.
* A service instance that stays where it is while the layout changes re-runs CONFIGURE (its
  config may name nodes that came or went), without a restart. That CONFIGURE takes the place of
  the instance's START and STOP in the runtime rules: it runs after the new instances of what it
  depends on have STARTed (a balancer learns of a backend only once the backend answers), before
  removed instances of what it depends on are STOPped (the balancer forgets a backend before the
  backend goes away), and before new instances that depend on it INITIALIZE (a namenode knows of
  a datanode before the datanode registers). Because every rule points from a dependency to its
  dependent, the plan has a cycle only if the services' dependencies do.
* An action a service does not define is not run, but the ordering it carried is kept: its
  predecessors are joined directly to its successors.
* A managed resource (a template's ``resources``: a cloud database) runs CREATE -> CONFIRM on a
  pseudo-node ``resource.NAME``, beside the nodes; its CONFIRM counts with the new nodes'
  CONFIRMs, so every service waits for it (any service may read ``%resource.NAME.endpoint%``)
  while machines are made and bootstrapped at the same time. A removed resource runs DELETE
  after every service REMOVE of the operation.

"every X after every Y" across n and m nodes would need n*m edges; instead a JOIN task (no node,
nothing to run) waits for the Ys and the Xs wait for it: n+m edges. A JOIN is only kept where it
saves edges. The executor completes a JOIN as soon as its predecessors are done.
"""

import dataclasses
import graphlib
import heapq
import re

from cluster_server.errors import PlanError

CREATE = "CREATE"
CONFIRM = "CONFIRM"
BOOTSTRAP = "BOOTSTRAP"
INSTALL = "INSTALL"
CONFIGURE = "CONFIGURE"
INITIALIZE = "INITIALIZE"
START = "START"
STOP = "STOP"
REMOVE = "REMOVE"
DELETE = "DELETE"
JOIN = "JOIN"

NODE_ACTIONS = (CREATE, CONFIRM, BOOTSTRAP, DELETE)
SERVICE_ACTIONS = (INSTALL, CONFIGURE, INITIALIZE, START, STOP, REMOVE)
SERVICE_OPERATIONS = ("start", "stop", "restart", "reconfigure")

# Only used to pick among ready tasks, so that a plan reads in phases; any topological order
# would be correct.
_RANK = {a: i for i, a in enumerate(
    (CREATE, CONFIRM, BOOTSTRAP, STOP, INSTALL, CONFIGURE, INITIALIZE, START, REMOVE, DELETE))}
_JOIN_RANK = {"confirmed": _RANK[CONFIRM], "installed": _RANK[INSTALL], "up": _RANK[START],
              "down": _RANK[STOP], "removed": _RANK[REMOVE]}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task of a plan.

    ids are "n3:create", "n3:start:web", and "*:up:web" for a JOIN (no node; nothing to run).
    ``service`` is None for node actions and for the join of the new nodes' CONFIRMs.
    """

    id: str
    node_id: str | None
    action: str
    service: str | None
    depends_on: tuple[str, ...]


def natural_key(text):
    """Sort key that puts n2 before n10."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text)))


RESOURCE_PREFIX = "resource."  # the pseudo-node of a managed resource: resource.db


def resource_node(name):
    return RESOURCE_PREFIX + name


def plan_change(old_nodes, new_nodes, services_catalog, old_resources=(), new_resources=()):
    """Plan the change of a cluster from ``old_nodes`` to ``new_nodes`` (nodes matched by id),
    and from ``old_resources`` to ``new_resources`` (managed resources, by name).

    Covers create (old empty), delete (new empty), resize and adding or removing services.
    A kept node keeps its machine: hardwaretype and imagetype are not compared.
    """
    old = _layout(old_nodes)
    new = _layout(new_nodes)
    catalog = _Catalog(services_catalog, _services_of(old) | _services_of(new))
    catalog.check_requires(_services_of(new))
    added = sorted(set(new_resources) - set(old_resources))
    removed = sorted(set(old_resources) - set(new_resources))
    if old == new and not added and not removed:
        return []
    graph = _Graph(catalog)
    for name in added:
        graph.new_resource(name)
    for node_id in sorted(new.keys() - old.keys(), key=natural_key):
        graph.new_node(node_id, new[node_id])
    for node_id in sorted(new.keys() & old.keys(), key=natural_key):
        for service in new[node_id]:
            if service in old[node_id]:
                graph.live_configure(node_id, service)
            else:
                graph.add_service(node_id, service)
        for service in old[node_id]:
            if service not in new[node_id]:
                graph.remove_service(node_id, service)
    for node_id in sorted(old.keys() - new.keys(), key=natural_key):
        graph.remove_node(node_id, old[node_id])
    removes = [v for v, info in graph.info.items() if info[1] == REMOVE]
    for name in removed:
        graph.task(resource_node(name), DELETE, after=removes)
    return graph.finish()


def plan_services(kind, nodes, services_catalog, targets=None, restart=False):
    """Plan start, stop, restart or reconfigure of the services on a running cluster.

    ``targets`` names services (None: all of the cluster's). Starting a service also starts what
    it runtime-requires, transitively; stopping one also stops what runtime-requires it,
    transitively (``uses`` is optional, so it pulls nothing along). Restart stops and starts the
    stop closure. Reconfigure runs CONFIGURE on every target instance, in runtime dependency
    order; with ``restart`` the stop closure is stopped before and started after it.
    """
    if kind not in SERVICE_OPERATIONS:
        raise PlanError(f"Unknown service operation '{kind}'",
                        {"kind": kind, "allowed": list(SERVICE_OPERATIONS)})
    layout = _layout(nodes)
    present = _services_of(layout)
    catalog = _Catalog(services_catalog, present)
    catalog.check_requires(present)
    if targets is None:
        chosen = set(present)
    else:
        chosen = set(targets)
        absent = sorted(chosen - present)
        if absent:
            raise PlanError(f"Service '{absent[0]}' is not on the cluster", {"services": absent})

    if kind == "start":
        chosen = catalog.closure(chosen, catalog.required_by)
    stopped = set()
    if kind in ("stop", "restart") or (kind == "reconfigure" and restart):
        stopped = catalog.closure(chosen, catalog.requirers_of)

    graph = _Graph(catalog)
    for node_id in sorted(layout, key=natural_key):
        for service in layout[node_id]:
            if kind == "start" and service in chosen:
                graph.start(node_id, service)
            elif kind == "stop" and service in stopped:
                graph.stop(node_id, service)
            elif kind == "restart" and service in stopped:
                graph.start(node_id, service, after=graph.stop(node_id, service))
            elif kind == "reconfigure" and restart and service in stopped:
                after = graph.stop(node_id, service)
                if service in chosen:
                    after = graph.task(node_id, CONFIGURE, service, after)
                graph.start(node_id, service, after)
            elif kind == "reconfigure" and not restart and service in chosen:
                graph.live_configure(node_id, service)
    return graph.finish()


def count_change(old_nodes, new_nodes, services_catalog, old_resources=(), new_resources=()):
    """The task counts by action of ``plan_change`` (JOINs, which run nothing, left out),
    from a plan of one node of each kind: a node's own tasks depend only on its services
    before and after, so each kind's sample counts for all its nodes. The sample meets the
    same checks (a cycle among every node's tasks projects onto one among the samples', and
    the samples' tasks are a part of the whole plan), so it fails where the whole plan would;
    at 10,000 nodes it costs milliseconds where the whole plan costs seconds."""
    old, new = _layout(old_nodes), _layout(new_nodes)
    kinds = {}  # (services before or None, after or None) -> node ids
    for node_id in old.keys() | new.keys():
        kinds.setdefault((old.get(node_id), new.get(node_id)), []).append(node_id)
    samples = {ids[0]: (before, after, len(ids)) for (before, after), ids in kinds.items()}
    return _count_samples(samples, services_catalog, old_resources, new_resources)


def count_new(kinds, services_catalog, new_resources=()):
    """``count_change`` of a create whose nodes come in ``kinds``, (services, count) pairs: a
    plan's summary straight from the layout's groups, without a pass over every node."""
    samples = {f"k{i}": (None, tuple(sorted(set(services))), count)
               for i, (services, count) in enumerate(kinds, start=1)}
    return _count_samples(samples, services_catalog, (), new_resources)


def _count_samples(samples, services_catalog, old_resources, new_resources):
    """Plan one node of each kind (node id -> (services before or None, after or None,
    count)) and weigh each of its tasks by its kind's count."""
    tasks = plan_change(
        [{"id": n, "services": before} for n, (before, _, _) in samples.items() if before is not None],
        [{"id": n, "services": after} for n, (_, after, _) in samples.items() if after is not None],
        services_catalog, old_resources, new_resources)
    weights = {n: count for n, (_, _, count) in samples.items()}
    weights.update({resource_node(name): 1 for name in {*old_resources, *new_resources}})
    return _weighted(tasks, weights)


def count_services(kind, nodes, services_catalog, targets=None, restart=False):
    """The task counts by action of ``plan_services``, from one node of each set of services
    (as ``count_change``)."""
    kinds = {}
    for node_id, services in _layout(nodes).items():
        kinds.setdefault(services, []).append(node_id)
    samples = {ids[0]: (services, len(ids)) for services, ids in kinds.items()}
    tasks = plan_services(kind, [{"id": n, "services": services}
                                 for n, (services, _) in samples.items()],
                          services_catalog, targets=targets, restart=restart)
    return _weighted(tasks, {n: count for n, (_, count) in samples.items()})


def _weighted(tasks, weights):
    counts = {}
    for task in tasks:
        if task.action != JOIN:
            counts[task.action] = counts.get(task.action, 0) + weights[task.node_id]
    return counts


def plan_restart(instances, services_catalog):
    """Restart single service instances where they are: STOP then START on each (node id,
    service) pair, nothing else. What supervision runs for an instance whose health check
    fails: the rest of the cluster keeps running, and what depends on the service is not
    stopped (it was already without it)."""
    services = {service for _, service in instances}
    unknown = sorted(s for s in services if s not in services_catalog)
    if unknown:
        raise PlanError(f"Unknown service '{unknown[0]}'", {"services": unknown})
    # Only these services: their dependencies elsewhere on the cluster are not touched.
    graph = _Graph(_Catalog({s: services_catalog[s] for s in services}, services))
    for node_id, service in sorted(instances, key=lambda pair: (natural_key(pair[0]), pair[1])):
        graph.start(node_id, service, after=graph.stop(node_id, service))
    return graph.finish()


def _layout(nodes):
    """Node id -> tuple of its services, rejecting a node id given twice."""
    layout = {}
    for node in nodes:
        if node["id"] in layout:
            raise PlanError(f"Node '{node['id']}' is given twice", {"node": node["id"]})
        layout[node["id"]] = tuple(sorted(set(node.get("services") or ())))
    return layout


def _services_of(layout):
    return {service for services in layout.values() for service in services}


class _Catalog:
    """The dependencies of the services an operation touches, resolved through ``provides``."""

    def __init__(self, services_catalog, present):
        unknown = sorted(s for s in present if s not in services_catalog)
        if unknown:
            raise PlanError(f"Unknown service '{unknown[0]}'", {"services": unknown})
        self.present = sorted(present)
        self.services = {name: services_catalog[name] for name in self.present}
        # A dependency name is met by the service of that name or by any service providing it.
        self.providers = {}
        for name in self.present:
            for provided in [name, *(self._deps(name).get("provides") or ())]:
                self.providers.setdefault(provided, []).append(name)

    def _deps(self, service):
        return self.services[service].get("dependencies") or {}

    def _names(self, service, phase, kinds=("requires", "uses")):
        section = self._deps(service).get(phase) or {}
        return [name for kind in kinds for name in section.get(kind) or ()]

    def resolve(self, service, phase, kinds=("requires", "uses")):
        """Services present that ``service`` depends on in ``phase`` (never itself)."""
        found = {provider for name in self._names(service, phase, kinds)
                 for provider in self.providers.get(name, ()) if provider != service}
        return sorted(found)

    def check_requires(self, present):
        """A service that requires a name nothing on the cluster provides cannot be planned."""
        for service in sorted(present):
            for name in self._names(service, "install", ("requires",)) + \
                    self._names(service, "runtime", ("requires",)):
                if not any(p in present for p in self.providers.get(name, ())):
                    raise PlanError(f"Service '{service}' requires '{name}', which no service "
                                    "on the cluster provides",
                                    {"service": service, "requires": name})

    def defines(self, service, action):
        actions = (self.services[service].get("provisioner") or {}).get("actions") or {}
        return action.lower() in actions

    def required_by(self, service):
        return self.resolve(service, "runtime", ("requires",))

    def requirers_of(self, service):
        return [other for other in self.present if service in self.required_by(other)]

    @staticmethod
    def closure(start, step):
        seen = set(start)
        todo = sorted(start)
        while todo:
            for other in step(todo.pop()):
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen


class _Graph:
    """The task graph under construction.

    Vertices are created for every action in a service's chain, including actions the service
    does not define ("skipped"); those are contracted away in ``finish`` so their ordering is
    kept. Dependencies across services go through one join vertex per (kind, service); kinds:
    ``installed`` (INSTALLs), ``up`` (STARTs and live CONFIGUREs), ``down`` (STOPs and live
    CONFIGUREs), ``removed`` (REMOVEs), plus ``confirmed`` (the new nodes' CONFIRMs).
    """

    def __init__(self, catalog):
        self.catalog = catalog
        self.deps = {}      # vertex -> {vertex it waits for: None}; dicts keep insertion order
        self.succs = {}     # vertex -> {vertex waiting for it: None}
        self.info = {}      # vertex -> (node_id, action, service)
        self.skipped = []
        self.members = {}   # (kind, service) -> vertices the join of that kind waits for
        self.waiters = {}   # (kind, service) -> vertices that wait for that kind of join

    def _vertex(self, vertex, info):
        self.deps[vertex] = {}
        self.succs[vertex] = {}
        self.info[vertex] = info

    def _edge(self, vertex, before):
        self.deps[vertex][before] = None
        self.succs[before][vertex] = None

    def _member(self, kind, service, vertex):
        self.members.setdefault((kind, service), []).append(vertex)

    def _waiter(self, kind, service, vertex):
        self.waiters.setdefault((kind, service), []).append(vertex)

    def task(self, node_id, action, service=None, after=()):
        """Add a task on a node (skipped if the service does not define the action)."""
        vertex = f"{node_id}:{action.lower()}" + (f":{service}" if service else "")
        self._vertex(vertex, (node_id, action, service))
        if service and not self.catalog.defines(service, action):
            self.skipped.append(vertex)
        for before in [after] if isinstance(after, str) else after:
            self._edge(vertex, before)
        return vertex

    def new_node(self, node_id, services):
        confirm = self.task(node_id, CONFIRM, after=self.task(node_id, CREATE))
        self._member("confirmed", None, confirm)
        bootstrap = self.task(node_id, BOOTSTRAP, after=confirm)
        for service in services:
            self.add_service(node_id, service, after=bootstrap)

    def new_resource(self, name):
        node_id = resource_node(name)
        self._member("confirmed", None, self.task(node_id, CONFIRM,
                                                 after=self.task(node_id, CREATE)))

    def add_service(self, node_id, service, after=()):
        install = self.task(node_id, INSTALL, service, after)
        self._waiter("confirmed", None, install)
        self._member("installed", service, install)
        self._waiter("installed", service, install)
        configure = self.task(node_id, CONFIGURE, service, install)
        initialize = self.task(node_id, INITIALIZE, service, configure)
        # INITIALIZE is what waits for the dependencies to be up; START follows it on the node.
        self._waiter("up", service, initialize)
        self._member("up", service, self.task(node_id, START, service, initialize))

    def start(self, node_id, service, after=()):
        start = self.task(node_id, START, service, after)
        self._member("up", service, start)
        self._waiter("up", service, start)
        return start

    def stop(self, node_id, service):
        stop = self.task(node_id, STOP, service)
        self._member("down", service, stop)
        self._waiter("down", service, stop)
        return stop

    def remove_service(self, node_id, service):
        remove = self.task(node_id, REMOVE, service, self.stop(node_id, service))
        self._member("removed", service, remove)
        self._waiter("removed", service, remove)
        return remove

    def remove_node(self, node_id, services):
        removes = [self.remove_service(node_id, service) for service in services]
        self.task(node_id, DELETE, after=removes)

    def live_configure(self, node_id, service):
        """CONFIGURE a running instance in place; it stands in for its START and STOP."""
        configure = self.task(node_id, CONFIGURE, service)
        self._waiter("confirmed", None, configure)
        self._waiter("up", service, configure)
        self._member("up", service, configure)
        self._member("down", service, configure)

    def _link(self, waiter_key, member_key):
        """Make every waiter of ``waiter_key`` wait for every member of ``member_key``."""
        waiters = self.waiters.get(waiter_key)
        members = self.members.get(member_key)
        if not waiters or not members:
            return
        kind, service = member_key
        join = f"*:{kind}:{service}" if service else f"*:{kind}"
        if join not in self.deps:
            self._vertex(join, (None, JOIN, service))
            for member in members:
                self._edge(join, member)
        for waiter in waiters:
            self._edge(waiter, join)

    def _contract(self, vertex):
        """Remove a vertex, making what waited for it wait for what it waited for."""
        preds = self.deps.pop(vertex)
        succs = self.succs.pop(vertex)
        del self.info[vertex]
        for pred in preds:
            del self.succs[pred][vertex]
        for succ in succs:
            del self.deps[succ][vertex]
            for pred in preds:
                self._edge(succ, pred)

    def finish(self):
        catalog = self.catalog
        self._link(("confirmed", None), ("confirmed", None))
        for a in catalog.present:
            for b in catalog.resolve(a, "install"):
                self._link(("installed", a), ("installed", b))
                self._link(("removed", b), ("removed", a))
            for b in catalog.resolve(a, "runtime"):
                self._link(("up", a), ("up", b))
                self._link(("down", b), ("down", a))
        self._check_cycles()
        for vertex in self.skipped:
            self._contract(vertex)
        # A join saves edges only when it has several predecessors and several successors.
        joins = [v for v, info in self.info.items() if info[1] == JOIN]
        for join in joins:
            preds, succs = len(self.deps[join]), len(self.succs[join])
            if preds * succs <= preds + succs:
                self._contract(join)
        return self._ordered()

    def _has_cycle(self):
        """Kahn's count: the vertices that never become ready are on or behind a cycle. A tenth
        of graphlib's cost at 10,000 nodes (graphlib builds an object per vertex and always
        searches for a cycle); graphlib is asked only to name the cycle once one is known."""
        waiting = {vertex: len(deps) for vertex, deps in self.deps.items()}
        ready = [vertex for vertex, count in waiting.items() if count == 0]
        seen = 0
        succs = self.succs
        while ready:
            vertex = ready.pop()
            seen += 1
            for succ in succs[vertex]:
                waiting[succ] -= 1
                if not waiting[succ]:
                    ready.append(succ)
        return seen < len(waiting)

    def _check_cycles(self):
        """Reject a cycle before anything runs, naming the services on it."""
        if not self._has_cycle():
            return
        try:
            graphlib.TopologicalSorter(self.deps).prepare()
        except graphlib.CycleError as error:
            cycle = error.args[1]
            services = []
            for vertex in cycle:
                service = self.info[vertex][2]
                if service and service not in services:
                    services.append(service)
            raise PlanError("Dependency cycle among services: " + ", ".join(services),
                            {"services": services, "tasks": cycle}) from None

    def _ordered(self):
        """Kahn's algorithm, always taking the smallest ready task: deterministic, readable."""
        info, succs, deps = self.info, self.succs, self.deps
        node_keys = {}  # a node's natural key, computed once for its 4 to 30 tasks

        def key(vertex):
            node_id, action, service = info[vertex]
            rank = _JOIN_RANK[vertex.split(":")[1]] if action == JOIN else _RANK[action]
            node_key = node_keys.get(node_id)
            if node_key is None:
                node_key = node_keys[node_id] = natural_key(node_id or "")
            return (rank, node_key, service or "", vertex)

        # Keys are unique (the vertex is in each): one sort gives every vertex its place, and
        # the heap then compares small integers instead of tuples.
        by_key = sorted(deps, key=key)
        place = {vertex: i for i, vertex in enumerate(by_key)}
        waiting = {vertex: len(vertex_deps) for vertex, vertex_deps in deps.items()}
        ready = [place[v] for v, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        position = {}
        pop, push = heapq.heappop, heapq.heappush
        while ready:
            vertex = by_key[pop(ready)]
            position[vertex] = len(position)
            for succ in succs[vertex]:
                waiting[succ] -= 1
                if not waiting[succ]:
                    push(ready, place[succ])
        tasks = []
        for vertex in position:
            node_id, action, service = info[vertex]
            vertex_deps = deps[vertex]
            depends_on = (tuple(sorted(vertex_deps, key=position.__getitem__))
                          if len(vertex_deps) > 1 else tuple(vertex_deps))
            tasks.append(TaskSpec(vertex, node_id, action, service, depends_on))
        return tasks
