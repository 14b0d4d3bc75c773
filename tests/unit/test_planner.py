"""The planner: task graphs for cluster changes and service operations."""

import json
import pathlib
import random

import pytest

from cluster_server.errors import PlanError
from cluster_server.planner import (JOIN, TaskSpec, count_change, count_new, count_services,
                                    plan_change, plan_services)

ALL = ("install", "configure", "initialize", "start", "stop", "remove")
ROOT = pathlib.Path(__file__).resolve().parents[2]
COOPR = next((p for p in (ROOT / "tests" / "data" / "coopr-catalog",
                          ROOT.parent / "shared" / "reference" / "coopr-catalog") if p.is_dir()),
             None)


def svc(name, actions=ALL, install_requires=(), install_uses=(), runtime_requires=(),
        runtime_uses=(), provides=()):
    return {"name": name, "description": name,
            "dependencies": {"provides": list(provides), "conflicts": [],
                             "install": {"requires": list(install_requires),
                                         "uses": list(install_uses)},
                             "runtime": {"requires": list(runtime_requires),
                                         "uses": list(runtime_uses)}},
            "provisioner": {"actions": {a: {"type": "shell", "fields": {"script": a}}
                                        for a in actions}}}


def catalog(*services):
    return {s["name"]: s for s in services}


# A balancer in front of web backends; base has no start/stop, like Coopr's.
WEB = catalog(svc("base", ("install", "configure", "remove")),
              svc("web", install_requires=["base"]),
              svc("lb", install_requires=["base"], runtime_uses=["web"]))


def web_nodes(size):
    return [{"id": "n1", "services": ["base", "lb"], "hardwaretype": "small", "imagetype": "u"}] + [
        {"id": f"n{i}", "services": ["base", "web"], "hardwaretype": "small", "imagetype": "u"}
        for i in range(2, size + 1)]


def ids(tasks):
    return [t.id for t in tasks]


def ancestors(tasks):
    """Task id -> every task id it transitively waits for; also checks the list is ordered."""
    seen = {}
    for task in tasks:
        assert isinstance(task, TaskSpec)
        assert task.id not in seen, f"duplicate task {task.id}"
        found = set()
        for dep in task.depends_on:
            assert dep in seen, f"{task.id} listed before its dependency {dep}"
            found.add(dep)
            found |= seen[dep]
        seen[task.id] = found
    return seen


def real(tasks, action=None, service=None, node=None):
    return [t.id for t in tasks if t.action != JOIN and (action is None or t.action == action)
            and (service is None or t.service == service) and (node is None or t.node_id == node)]


def assert_all_before(tasks, firsts, thens):
    reach = ancestors(tasks)
    assert firsts and thens
    for then in thens:
        for first in firsts:
            assert first in reach[then], f"{then} does not wait for {first}"


# --- plan_change: create ------------------------------------------------------------------------

def test_create_runs_node_actions_then_each_service_chain():
    tasks = plan_change([], web_nodes(3), WEB)
    chain = ["n2:create", "n2:confirm", "n2:bootstrap", "n2:install:base", "n2:install:web",
             "n2:configure:web", "n2:initialize:web", "n2:start:web"]
    for first, then in zip(chain, chain[1:]):
        assert_all_before(tasks, [first], [then])
    assert {t.action for t in tasks} >= {"CREATE", "CONFIRM", "BOOTSTRAP", "INSTALL",
                                         "CONFIGURE", "INITIALIZE", "START"}
    assert not real(tasks, "STOP") and not real(tasks, "DELETE")
    node = next(t for t in tasks if t.id == "n2:create")
    assert (node.node_id, node.action, node.service) == ("n2", "CREATE", None)


def test_create_installs_after_every_install_of_install_dependency():
    tasks = plan_change([], web_nodes(4), WEB)
    assert_all_before(tasks, real(tasks, "INSTALL", "base"), real(tasks, "INSTALL", "web"))
    assert_all_before(tasks, real(tasks, "INSTALL", "base"), real(tasks, "INSTALL", "lb"))


def test_create_starts_after_every_start_of_runtime_dependency():
    tasks = plan_change([], web_nodes(4), WEB)
    assert_all_before(tasks, real(tasks, "START", "web"),
                      real(tasks, "INITIALIZE", "lb") + real(tasks, "START", "lb"))


def test_service_tasks_wait_for_every_new_node_confirm():
    # Macros may name any node's address, known once the node is confirmed.
    tasks = plan_change([], web_nodes(4), WEB)
    assert_all_before(tasks, real(tasks, "CONFIRM"), real(tasks, "INSTALL"))


def test_skipped_actions_are_not_planned():
    tasks = plan_change([], web_nodes(2), WEB)
    assert "n1:start:base" not in ids(tasks)
    assert "n1:initialize:base" not in ids(tasks)


# --- plan_change: delete ------------------------------------------------------------------------

def test_delete_stops_in_reverse_runtime_order_and_removes_in_reverse_install_order():
    tasks = plan_change(web_nodes(4), [], WEB)
    assert {t.action for t in tasks if t.action != JOIN} == {"STOP", "REMOVE", "DELETE"}
    assert_all_before(tasks, real(tasks, "STOP", "lb"), real(tasks, "STOP", "web"))
    assert_all_before(tasks, real(tasks, "REMOVE", "web") + real(tasks, "REMOVE", "lb"),
                      real(tasks, "REMOVE", "base"))
    for node in ("n1", "n2", "n3", "n4"):
        assert_all_before(tasks, real(tasks, "REMOVE", node=node) + real(tasks, "STOP", node=node),
                          [f"{node}:delete"])


# --- plan_change: resize and services -----------------------------------------------------------

def test_grow_provisions_new_nodes_and_reconfigures_kept_services_without_restart():
    tasks = plan_change(web_nodes(3), web_nodes(5), WEB)
    kept = [t for t in tasks if t.node_id in ("n1", "n2", "n3")]
    assert {t.action for t in kept} == {"CONFIGURE"}
    assert {t.id for t in kept} == {"n1:configure:base", "n1:configure:lb", "n2:configure:base",
                                    "n2:configure:web", "n3:configure:base", "n3:configure:web"}
    assert real(tasks, "CREATE") == ["n4:create", "n5:create"]
    # The balancer learns of the new backends once they answer.
    assert_all_before(tasks, real(tasks, "START", "web"), ["n1:configure:lb"])
    assert_all_before(tasks, real(tasks, "CONFIRM"), [t.id for t in kept])


def test_shrink_reconfigures_kept_services_before_removed_dependencies_stop():
    tasks = plan_change(web_nodes(5), web_nodes(3), WEB)
    assert set(real(tasks, "DELETE")) == {"n4:delete", "n5:delete"}
    assert not real(tasks, "CREATE") and not real(tasks, "START")
    # The balancer forgets a backend before the backend goes away.
    assert_all_before(tasks, ["n1:configure:lb"], ["n4:stop:web", "n5:stop:web"])
    assert_all_before(tasks, ["n4:stop:web"], ["n4:remove:web"])
    assert_all_before(tasks, ["n4:remove:web", "n4:remove:base"], ["n4:delete"])


def test_add_service_to_kept_nodes():
    cat = dict(WEB, cache=svc("cache", install_requires=["base"]))
    old = web_nodes(3)
    new = [dict(n, services=n["services"] + ["cache"]) if n["id"] != "n1" else n for n in old]
    tasks = plan_change(old, new, cat)
    assert set(real(tasks, service="cache")) == {
        f"{n}:{a}:cache" for a in ("install", "configure", "initialize", "start")
        for n in ("n2", "n3")}
    assert_all_before(tasks, ["n2:install:cache"], ["n2:configure:cache"])
    assert_all_before(tasks, ["n2:initialize:cache"], ["n2:start:cache"])
    assert not real(tasks, "CREATE") and not real(tasks, "INSTALL", "web")


def test_remove_service_from_kept_nodes():
    old = web_nodes(3)
    new = [n if n["id"] != "n1" else dict(n, services=["base"]) for n in old]
    tasks = plan_change(old, new, WEB)
    assert_all_before(tasks, ["n1:stop:lb"], ["n1:remove:lb"])
    assert not real(tasks, "DELETE")
    assert "n1:configure:base" in ids(tasks)


def test_removing_a_required_service_is_refused():
    cat = catalog(svc("db"), svc("app", runtime_requires=["db"]))
    old = [{"id": "n1", "services": ["db", "app"]}]
    with pytest.raises(PlanError, match="db"):
        plan_change(old, [{"id": "n1", "services": ["app"]}], cat)


def test_no_change_plans_nothing():
    assert plan_change(web_nodes(3), web_nodes(3), WEB) == []
    assert plan_change([], [], WEB) == []


# --- dependencies -------------------------------------------------------------------------------

def test_skipped_actions_keep_the_ordering_they_carried():
    # db defines no INITIALIZE/START: app still waits for db's last defined step on every node.
    # app defines no CONFIGURE: its INITIALIZE follows its INSTALL.
    cat = catalog(svc("db", ("install", "configure")),
                  svc("app", ("install", "initialize", "start"), runtime_requires=["db"]),
                  svc("shim", ()), svc("top", runtime_requires=["shim"]))
    cat["shim"]["dependencies"]["runtime"]["requires"] = ["app"]
    nodes = [{"id": f"n{i}", "services": ["db", "app", "shim", "top"]} for i in (1, 2, 3)]
    tasks = plan_change([], nodes, cat)
    assert not real(tasks, service="shim")
    assert_all_before(tasks, real(tasks, "CONFIGURE", "db"), real(tasks, "INITIALIZE", "app"))
    assert_all_before(tasks, ["n1:install:app"], ["n1:initialize:app"])
    # top -> shim (nothing to run) -> app: top still starts after every app START.
    assert_all_before(tasks, real(tasks, "START", "app"), real(tasks, "START", "top"))


def test_dependency_met_through_provides():
    cat = catalog(svc("nginx", provides=["web-server"]),
                  svc("app", install_uses=["web-server"], runtime_requires=["web-server"]))
    nodes = [{"id": "n1", "services": ["nginx"]}, {"id": "n2", "services": ["app"]}]
    tasks = plan_change([], nodes, cat)
    assert_all_before(tasks, ["n1:start:nginx"], ["n2:initialize:app", "n2:start:app"])
    assert_all_before(tasks, ["n1:install:nginx"], ["n2:install:app"])


def test_uses_of_a_service_not_on_the_cluster_is_ignored():
    cat = catalog(svc("app", install_uses=["ghost"], runtime_uses=["ghost"]))
    tasks = plan_change([], [{"id": "n1", "services": ["app"]}], cat)
    assert "n1:start:app" in ids(tasks)


def test_requires_nobody_satisfies_is_a_plan_error_naming_it():
    cat = catalog(svc("app", runtime_requires=["database"]))
    with pytest.raises(PlanError, match="database") as error:
        plan_change([], [{"id": "n1", "services": ["app"]}], cat)
    assert error.value.details == {"service": "app", "requires": "database"}


def test_unknown_service_is_a_plan_error():
    with pytest.raises(PlanError, match="nosuch"):
        plan_change([], [{"id": "n1", "services": ["nosuch"]}], WEB)


@pytest.mark.parametrize("phase", ["install", "runtime"])
def test_dependency_cycle_is_a_plan_error_naming_the_services(phase):
    cat = catalog(svc("a", **{f"{phase}_requires": ["b"]}),
                  svc("b", **{f"{phase}_uses": ["c"]}),
                  svc("c", **{f"{phase}_requires": ["a"]}), svc("d"))
    nodes = [{"id": "n1", "services": ["a", "d"]}, {"id": "n2", "services": ["b", "c"]}]
    with pytest.raises(PlanError, match="cycle") as error:
        plan_change([], nodes, cat)
    assert set(error.value.details["services"]) == {"a", "b", "c"}
    for name in "abc":
        assert name in error.value.message


def test_a_service_providing_what_it_uses_does_not_wait_for_itself():
    cat = catalog(svc("dn", provides=["client"], install_uses=["client"],
                      runtime_uses=["client"]))
    tasks = plan_change([], [{"id": f"n{i}", "services": ["dn"]} for i in (1, 2)], cat)
    assert "n1:start:dn" not in ancestors(tasks)["n2:start:dn"]


def test_plan_is_deterministic_whatever_the_input_order():
    nodes = web_nodes(12)
    first = plan_change([], nodes, WEB)
    shuffled = [dict(n, services=list(reversed(n["services"]))) for n in nodes]
    random.Random(7).shuffle(shuffled)
    assert plan_change([], shuffled, WEB) == first
    assert plan_change([], nodes, WEB) == first
    # Natural node order: n2 before n10.
    creates = real(first, "CREATE")
    assert creates.index("n2:create") < creates.index("n10:create")


def test_cross_node_fan_in_uses_joins_and_stays_linear():
    tasks = plan_change([], web_nodes(200), WEB)
    joins = [t for t in tasks if t.action == JOIN]
    assert joins and all(t.node_id is None and t.id.startswith("*:") for t in joins)
    edges = sum(len(t.depends_on) for t in tasks)
    assert edges < 4 * len(tasks)
    ancestors(tasks)


def test_duplicate_node_id_is_refused():
    with pytest.raises(PlanError, match="n1"):
        plan_change([], [{"id": "n1", "services": []}, {"id": "n1", "services": []}], WEB)


# --- plan_services ------------------------------------------------------------------------------

SVC = catalog(svc("db"), svc("app", runtime_requires=["db"]), svc("ui", runtime_uses=["app"]),
              svc("tool", ("install", "configure")))
SVC_NODES = [{"id": "n1", "services": ["db", "tool"]},
             {"id": "n2", "services": ["app", "ui", "tool"]},
             {"id": "n3", "services": ["app", "ui"]}]


def test_start_brings_what_the_targets_runtime_require():
    tasks = plan_services("start", SVC_NODES, SVC, targets=["app"])
    assert set(ids(tasks)) == {"n1:start:db", "n2:start:app", "n3:start:app"}
    assert_all_before(tasks, ["n1:start:db"], ["n2:start:app", "n3:start:app"])


def test_start_all_orders_by_runtime_dependencies():
    tasks = plan_services("start", SVC_NODES, SVC)
    assert {t.action for t in tasks if t.action != JOIN} == {"START"}
    assert_all_before(tasks, real(tasks, "START", "app"), real(tasks, "START", "ui"))
    assert "n1:start:tool" not in ids(tasks)


def test_stop_brings_what_runtime_requires_the_targets_first():
    tasks = plan_services("stop", SVC_NODES, SVC, targets=["db"])
    # ui only uses app, so it keeps running.
    assert set(ids(tasks)) == {"n1:stop:db", "n2:stop:app", "n3:stop:app"}
    assert_all_before(tasks, ["n2:stop:app", "n3:stop:app"], ["n1:stop:db"])


def test_restart_stops_in_reverse_then_starts_in_order():
    tasks = plan_services("restart", SVC_NODES, SVC, targets=["db"])
    assert set(real(tasks)) == {"n1:stop:db", "n2:stop:app", "n3:stop:app",
                                "n1:start:db", "n2:start:app", "n3:start:app"}
    assert_all_before(tasks, real(tasks, "STOP", "app"), ["n1:stop:db"])
    assert_all_before(tasks, ["n1:stop:db"], ["n1:start:db"])
    assert_all_before(tasks, ["n1:start:db"], real(tasks, "START", "app"))


def test_reconfigure_without_restart_only_configures_in_dependency_order():
    tasks = plan_services("reconfigure", SVC_NODES, SVC)
    assert {t.action for t in tasks if t.action != JOIN} == {"CONFIGURE"}
    assert len(real(tasks)) == 7
    assert_all_before(tasks, ["n1:configure:db"], real(tasks, "CONFIGURE", "app"))


def test_reconfigure_targets_only():
    tasks = plan_services("reconfigure", SVC_NODES, SVC, targets=["tool"])
    assert ids(tasks) == ["n1:configure:tool", "n2:configure:tool"]


def test_reconfigure_with_restart_wraps_configure_in_stop_and_start():
    tasks = plan_services("reconfigure", SVC_NODES, SVC, targets=["db"], restart=True)
    assert_all_before(tasks, real(tasks, "STOP", "app"), ["n1:stop:db"])
    assert_all_before(tasks, ["n1:stop:db"], ["n1:configure:db"])
    assert_all_before(tasks, ["n1:configure:db"], ["n1:start:db"])
    assert_all_before(tasks, ["n1:start:db"], real(tasks, "START", "app"))
    # The dependents are restarted, not reconfigured.
    assert real(tasks, "CONFIGURE") == ["n1:configure:db"]


def test_service_operation_errors():
    with pytest.raises(PlanError, match="reboot"):
        plan_services("reboot", SVC_NODES, SVC)
    with pytest.raises(PlanError, match="nosuch"):
        plan_services("start", SVC_NODES, SVC, targets=["nosuch"])


def test_service_operation_cycle_is_refused():
    cat = catalog(svc("a", runtime_requires=["b"]), svc("b", runtime_uses=["a"]))
    with pytest.raises(PlanError, match="cycle"):
        plan_services("restart", [{"id": "n1", "services": ["a", "b"]}], cat)


# --- the Coopr reference catalog ----------------------------------------------------------------

def coopr_services():
    if COOPR is None:
        pytest.skip("the Coopr reference catalog is not available")
    return {s["name"]: s for s in (json.loads(p.read_text())
                                   for p in sorted((COOPR / "services").glob("*.json")))}


MASTER = ["base", "hadoop-hdfs-namenode", "hadoop-yarn-resourcemanager",
          "hadoop-mapreduce-historyserver", "zookeeper-server", "hbase-master", "mysql-server",
          "hive-metastore-database", "hive-metastore", "hive-server2", "spark-historyserver"]
WORKER = ["base", "hadoop-hdfs-datanode", "hadoop-yarn-nodemanager", "hbase-regionserver"]


def hadoop_nodes(size):
    """A layout the hadoop-distributed template allows: the mustcoexist sets on their nodes."""
    return [{"id": "n1", "services": MASTER, "hardwaretype": "standard-large",
             "imagetype": "ubuntu12"}] + [
        {"id": f"n{i}", "services": WORKER, "hardwaretype": "standard-large",
         "imagetype": "ubuntu12"} for i in range(2, size + 1)]


def runtime_pairs(cat, present):
    """(A, B) for every A that runtime-depends on B, through provides, as Coopr reads them."""
    providers = {}
    for name in present:
        for provided in [name, *cat[name]["dependencies"].get("provides", [])]:
            providers.setdefault(provided, set()).add(name)
    for a in present:
        runtime = cat[a]["dependencies"].get("runtime", {})
        for name in runtime.get("requires", []) + runtime.get("uses", []):
            for b in providers.get(name, ()):
                if b != a:
                    yield a, b


def assert_runtime_order(tasks, cat, present):
    """No START or INITIALIZE runs before a START of what it runtime-depends on; STOP reversed."""
    reach = ancestors(tasks)
    by = {}
    for t in tasks:
        by.setdefault((t.action, t.service), []).append(t.id)
    checked = 0
    for a, b in runtime_pairs(cat, present):
        for then in by.get(("START", a), []) + by.get(("INITIALIZE", a), []):
            for first in by.get(("START", b), []):
                assert first in reach[then], f"{then} before {first}"
                checked += 1
        for then in by.get(("STOP", b), []):
            for first in by.get(("STOP", a), []):
                assert first in reach[then], f"{then} before {first}"
                checked += 1
    return checked


def test_coopr_hadoop_distributed_create_plans_in_dependency_order():
    cat = coopr_services()
    template = json.loads((COOPR / "clustertemplates" / "hadoop-distributed.json").read_text())
    for service in MASTER + WORKER:
        assert service in template["compatibility"]["services"]
    tasks = plan_change([], hadoop_nodes(5), cat)
    assert assert_runtime_order(tasks, cat, set(MASTER + WORKER)) > 0
    assert_all_before(tasks, ["n1:start:hadoop-hdfs-namenode"],
                      real(tasks, "START", "hadoop-hdfs-datanode"))
    assert_all_before(tasks, real(tasks, "START", "hadoop-hdfs-datanode") +
                      ["n1:start:zookeeper-server"], ["n1:initialize:hbase-master"])
    # hive-metastore-database only defines initialize; hive-metastore still waits for it.
    assert_all_before(tasks, ["n1:initialize:hive-metastore-database"],
                      ["n1:initialize:hive-metastore"])
    assert_all_before(tasks, real(tasks, "INSTALL", "base"), real(tasks, "INSTALL", "hbase-master"))


@pytest.mark.parametrize("old,new", [(5, 8), (8, 4), (5, 0)])
def test_coopr_hadoop_distributed_resize_and_delete(old, new):
    cat = coopr_services()
    tasks = plan_change(hadoop_nodes(old), hadoop_nodes(new) if new else [], cat)
    assert_runtime_order(tasks, cat, set(MASTER + WORKER))
    if new > old:
        assert_all_before(tasks, real(tasks, "START", "hadoop-hdfs-datanode"),
                          ["n1:configure:hadoop-yarn-resourcemanager"])
    elif new:
        assert_all_before(tasks, ["n1:configure:hadoop-yarn-resourcemanager"],
                          real(tasks, "STOP", "hadoop-hdfs-datanode"))


@pytest.mark.parametrize("kind,restart", [("start", False), ("stop", False), ("restart", False),
                                          ("reconfigure", False), ("reconfigure", True)])
def test_coopr_hadoop_distributed_service_operations(kind, restart):
    cat = coopr_services()
    tasks = plan_services(kind, hadoop_nodes(4), cat, restart=restart)
    assert tasks
    assert_runtime_order(tasks, cat, set(MASTER + WORKER))


def test_coopr_every_service_on_two_nodes_plans_without_cycle():
    cat = coopr_services()
    nodes = [{"id": f"n{i}", "services": sorted(cat)} for i in (1, 2)]
    tasks = plan_change([], nodes, cat)
    assert_runtime_order(tasks, cat, set(cat))
    assert plan_change(nodes, [], cat)


# --- size ---------------------------------------------------------------------------------------

def test_thousand_nodes_plan_quickly():
    # Its speed is bench/scale.py's to measure (a timed assertion fails on a loaded machine).
    nodes = web_nodes(1000)
    tasks = plan_change([], nodes, WEB)
    # node actions, base install+configure, web's four steps, lb's four steps
    assert len(real(tasks)) == 1000 * 3 + 1000 * 2 + 999 * 4 + 4
    assert sum(len(t.depends_on) for t in tasks) < 4 * len(tasks)


def _counted(tasks):
    counts = {}
    for task in tasks:
        if task.action != JOIN:
            counts[task.action] = counts.get(task.action, 0) + 1
    return counts


def _mixed(size, seed):
    """Nodes of several kinds, in a shuffled order, with gaps in their ids."""
    rng = random.Random(seed)
    kinds = [["base", "lb"], ["base", "web"], ["base"], ["base", "web", "lb"]]
    nodes = [{"id": f"n{i * 3}", "services": rng.choice(kinds)} for i in range(1, size + 1)]
    nodes.append({"id": "n1", "services": kinds[-1]})  # every service is on the cluster
    rng.shuffle(nodes)
    return nodes


@pytest.mark.parametrize("seed", range(6))
def test_counts_from_one_node_of_each_kind_equal_the_whole_plans(seed):
    rng = random.Random(seed)
    old, new = _mixed(rng.randint(0, 40), seed), _mixed(rng.randint(0, 40), seed + 100)
    for before, after in ((old, new), ([], new), (old, []), (old, old)):
        assert count_change(before, after, WEB) == _counted(plan_change(before, after, WEB))
    for kind, restart, targets in (("start", False, None), ("stop", False, ["web"]),
                                   ("restart", False, None), ("reconfigure", True, ["lb"]),
                                   ("reconfigure", False, None)):
        assert count_services(kind, old, WEB, targets=targets, restart=restart) == _counted(
            plan_services(kind, old, WEB, targets=targets, restart=restart))


@pytest.mark.parametrize("seed", range(4))
def test_a_creates_counts_from_its_kinds_equal_the_whole_plans(seed):
    nodes = _mixed(random.Random(seed).randint(1, 40), seed)
    kinds = {}
    for node in nodes:
        kinds[tuple(node["services"])] = kinds.get(tuple(node["services"]), 0) + 1
    assert count_new(list(kinds.items()), WEB) == _counted(plan_change([], nodes, WEB))


def test_counts_fail_where_the_whole_plan_fails():
    looped = catalog(svc("a", runtime_requires=["b"]), svc("b", runtime_requires=["a"]))
    nodes = [{"id": f"n{i}", "services": ["a"] if i % 2 else ["b"]} for i in range(1, 9)]
    for plan in (plan_change, count_change):
        with pytest.raises(PlanError, match="cycle"):
            plan([], nodes, looped)
    with pytest.raises(PlanError, match="given twice"):
        count_change([], [{"id": "n1", "services": []}] * 2, WEB)
