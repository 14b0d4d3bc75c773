"""Cluster operations end to end: the real ``shoal`` binary, a real server process, and the fake
provider and automator of ``tests/testkit`` (faults injected from the catalog)."""

import json
import time

import pytest
from shoal_testkit import catalog, checks, cloud

from tests.cloudkit import wait_for
from tests.conftest import Shoal

RUNTIME = {"app": ["db"], "cache": ["db"]}  # runtime dependencies in the testkit catalog


@pytest.fixture
def fake(tmp_path):
    """``fake(**catalog options)``: a started server with the testkit catalog imported."""
    started = []

    def make(**options):
        shoal = Shoal(tmp_path / "home", retries=1, retry_backoff=0.05, poll_base=0.05)
        shoal.run("server", "start")
        started.append(shoal)
        shoal.run("catalog", "import", catalog.write(tmp_path / "catalog", **options))
        return shoal

    yield make
    for shoal in started:
        shoal.run("server", "stop")


def create(shoal, name, size, *extra, check=True):
    return shoal.run("cluster", "create", name, "--template", "fake-stack", "--size", size,
                     "--wait", *extra, check=check)


def show(shoal, name):
    return shoal.json("cluster", "show", name)


def tasks(shoal, name, *extra):
    return shoal.json("task", "list", name, *extra)


def instances(shoal, cluster):
    return cloud.instances(shoal.home, cluster["id"])


def assert_matches_cloud(shoal, cluster, size):
    """Exactly ``size`` running instances, one per node, nothing else labelled with the cluster."""
    assert cluster["size"] == size and len(cluster["nodes"]) == size
    extra, missing = checks.orphans(shoal.home, cluster["id"],
                                    [n["address"] for n in cluster["nodes"]])
    assert (extra, missing) == ([], [])
    assert all(i["state"] == "running" for i in instances(shoal, cluster))
    assert cluster["id"] in cloud.groups(shoal.home)


def assert_nothing_left(shoal, cluster_id):
    assert cloud.instances(shoal.home, cluster_id) == []
    assert cluster_id not in cloud.groups(shoal.home)


def wait_status(shoal, name, statuses, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster = show(shoal, name)
        if cluster["status"] in statuses and cluster["operation"]["status"] in (
                "SUCCEEDED", "FAILED", "CANCELLED"):
            return cluster
        time.sleep(0.1)
    raise AssertionError(f"cluster {name} never reached {statuses}: {show(shoal, name)}")


def log_mark(shoal):
    return len(cloud.automator_log(shoal.home))


def test_create_runs_every_action_in_order(fake):
    shoal = fake(fields={"sleep": 0.02})
    result = create(shoal, "c1", 4)
    assert "create c1: succeeded" in result.stderr
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE"
    assert_matches_cloud(shoal, cluster, 4)
    services = sorted(tuple(n["services"]) for n in cluster["nodes"])
    assert services == [("app", "base")] * 3 + [("base", "db")]

    log = checks.entries(shoal.home, "c1")
    assert checks.runtime_order_violations(log, RUNTIME) == []
    assert checks.node_overlaps(log) == []
    for node in cluster["nodes"]:
        for service in node["services"]:
            done = [a for n, s, a in checks.actions(log, service) if n == node["id"]]
            assert done == ["INSTALL", "CONFIGURE", "INITIALIZE", "START"], (node, service)
    # Macros were expanded with the cluster's real nodes before the automator saw them.
    db_node = next(n for n in cluster["nodes"] if "db" in n["services"])
    assert {e["config"]["app"]["db"] for e in log if e["event"] == "begin"} == \
        {db_node["hostname"]}
    assert all(t["Status"] == "SUCCEEDED" and t["Attempts"] == 1 for t in tasks(shoal, "c1"))


def test_a_failed_attempt_is_retried(fake):
    shoal = fake(service_fields={"app": {"install": {"fail_times": 1}}})
    create(shoal, "c1", 3)
    assert show(shoal, "c1")["status"] == "ACTIVE"
    for task in tasks(shoal, "c1"):
        expected = 2 if (task["Action"], task["Service"]) == ("INSTALL", "app") else 1
        assert (task["Status"], task["Attempts"]) == ("SUCCEEDED", expected), task
    attempts = [e["attempt"] for e in checks.entries(shoal.home, "c1")
                if e["event"] == "end" and e["action"] == "INSTALL" and e["service"] == "app"]
    assert sorted(attempts) == [1, 1, 2, 2]


@pytest.mark.parametrize("fault", [
    {"service_fields": {"app": {"start": {"fail": True}}}},
    {"providers": {"fake": {"fail_create_nth": "3+"}}},
    # Every create call makes its instance and then times out: Shoal never learns their ids,
    # and only the rollback's search by label can find them.
    {"providers": {"fake": {"lose_create_nth": "1+"}}},
], ids=["automator-fails", "provider-create-fails", "provider-create-lost"])
def test_failed_create_rolls_back_everything(fake, fault):
    shoal = fake(**fault)
    result = create(shoal, "c1", 3, check=False)
    assert result.returncode != 0
    assert "create of cluster c1 failed" in result.stderr and "cluster is FAILED" in result.stderr
    cluster = show(shoal, "c1")
    assert cluster["status"] == "FAILED" and cluster["operation"]["status"] == "FAILED"
    assert_nothing_left(shoal, cluster["id"])
    events = shoal.run("cluster", "events", "c1").stdout
    assert "rolling back" in events and "rolled back: nothing is left" in events
    rollback = [t for t in tasks(shoal, "c1") if "rollback:" in t["ID"]]
    assert rollback and all(t["Status"] == "SUCCEEDED" for t in rollback)
    # The tasks that failed keep their status, so the task list shows what went wrong.
    failed = [t for t in tasks(shoal, "c1") if t["Status"] == "FAILED"]
    assert failed and not any("rollback:" in t["ID"] for t in failed)
    assert shoal.json("cluster", "list")[0]["Status"] == "FAILED"
    # Nothing is left to change (a resize used to fail on the rolled-back nodes' ids, a start
    # made it ACTIVE with no node); the name is free again for a fresh create.
    for args in (("resize", "c1", "--size", "2"), ("start", "c1"),
                 ("add-services", "c1", "app")):
        assert "was rolled back after its create failed" in shoal.fails("cluster", *args).stderr
    again = create(shoal, "c1", 3, check=False)
    assert "already exists" not in again.stderr
    assert show(shoal, "c1")["id"] != cluster["id"]


def test_keep_on_failure_keeps_the_nodes_and_retry_finishes(fake):
    shoal = fake(service_fields={"app": {"start": {"fail_if_exists": "app-broken"}}})
    (shoal.home / "app-broken").write_text("")
    result = create(shoal, "c1", 3, "--keep-on-failure", check=False)
    assert result.returncode != 0
    cluster = show(shoal, "c1")
    assert cluster["status"] == "FAILED"
    assert_matches_cloud(shoal, cluster, 3)  # nothing was rolled back
    assert "START app" in cluster["operation"]["error"]

    (shoal.home / "app-broken").unlink()
    shoal.run("cluster", "retry", "c1", "--wait")
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE"
    assert_matches_cloud(shoal, cluster, 3)


def test_a_create_call_that_timed_out_is_not_repeated(fake):
    # The first create call of each node times out after the cloud made the instance; the
    # retry (same token) finds that instance instead of making a second.
    shoal = fake(providers={"fake": {"lose_create_nth": "1,2,3"}})
    create(shoal, "c1", 3)
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE"
    assert_matches_cloud(shoal, cluster, 3)
    assert cloud.load(shoal.home)["counters"]["instances_made"][cluster["id"]] == 3
    assert {t["Attempts"] for t in tasks(shoal, "c1") if t["Action"] == "CREATE"} == {2}


def test_a_node_that_fails_to_come_up_is_replaced(fake):
    shoal = fake(providers={"fake": {"fail_state_nth": "2", "polls_to_running": 2}})
    create(shoal, "c1", 3)
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE"
    assert_matches_cloud(shoal, cluster, 3)
    state = cloud.load(shoal.home)
    assert state["counters"]["instances_made"][cluster["id"]] == 4
    failed = [i for i in state["terminated"].values() if i["doomed"]]
    assert len(failed) == 1 and failed[0]["labels"]["cluster"] == cluster["id"]
    confirms = [t for t in tasks(shoal, "c1") if t["Action"] == "CONFIRM"]
    assert all(t["Status"] == "SUCCEEDED" for t in confirms)


def test_a_node_that_keeps_failing_fails_the_change_and_retry_tries_afresh(fake):
    # Instances 3-6 of the cluster fail: the resize's new node is replaced 3 times, then its
    # CONFIRM gives up. The replacement limit is per attempt: a retry gets instance 7, which runs.
    shoal = fake(providers={"fake": {"fail_state_nth": "3,4,5,6"}})
    create(shoal, "c1", 2)
    result = shoal.run("cluster", "resize", "c1", "--size", "3", "--wait", check=False)
    assert result.returncode != 0
    cluster = show(shoal, "c1")
    assert cluster["status"] == "INCONSISTENT"
    assert "node failed 4 times" in cluster["operation"]["error"]
    shoal.run("cluster", "retry", "c1", "--wait")
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE"
    assert_matches_cloud(shoal, cluster, 3)
    assert cloud.load(shoal.home)["counters"]["instances_made"][cluster["id"]] == 7


def test_failed_change_leaves_cluster_inconsistent_until_retry(fake):
    shoal = fake(service_fields={"app": {"stop": {"fail_if_exists": "stop-broken"}}})
    create(shoal, "c1", 3)
    (shoal.home / "stop-broken").write_text("")
    result = shoal.run("cluster", "stop", "c1", "--wait", check=False)
    assert result.returncode != 0 and "cluster is INCONSISTENT" in result.stderr
    cluster = show(shoal, "c1")
    assert cluster["status"] == "INCONSISTENT"
    assert "STOP app" in cluster["operation"]["error"]
    failed = [t for t in tasks(shoal, "c1") if t["Status"] == "FAILED"]
    assert failed and all((t["Action"], t["Service"]) == ("STOP", "app") for t in failed)
    shown = shoal.json("task", "show", failed[0]["ID"])
    assert "stop-broken exists" in shown["output"]

    (shoal.home / "stop-broken").unlink()
    mark = log_mark(shoal)
    shoal.run("cluster", "retry", "c1", "--wait")
    assert show(shoal, "c1")["status"] == "ACTIVE"
    again = checks.entries(shoal.home, "c1", since=mark)
    # The retry ran what had not succeeded: the app STOPs that failed, then db's STOP.
    assert {(s, a) for _, s, a in checks.actions(again)} == {("app", "STOP"), ("db", "STOP")}
    assert checks.actions(again)[-1][1:] == ("db", "STOP")


def test_cancel_during_a_slow_create_rolls_back(fake):
    shoal = fake(providers={"fake": {"create_delay": 1.5, "polls_to_running": 3}},
                 fields={"sleep": 0.1})
    shoal.run("cluster", "create", "c1", "--template", "fake-stack", "--size", "4")
    cluster_id = show(shoal, "c1")["id"]
    wait_for(lambda: cloud.instances(shoal.home, cluster_id), "an instance to be made", 30)
    assert "cancel requested" in shoal.run("cluster", "cancel", "c1").stdout
    cluster = wait_status(shoal, "c1", ("FAILED",))
    assert cluster["operation"]["status"] == "CANCELLED"
    assert_nothing_left(shoal, cluster_id)
    assert "create failed: cancelled" in shoal.run("cluster", "events", "c1").stdout


def test_pause_holds_new_tasks_until_resume(fake):
    shoal = fake(fields={"sleep": 0.5})  # 8 actions a node: the create takes over 4 s
    shoal.run("cluster", "create", "c1", "--template", "fake-stack", "--size", "2")
    wait_for(lambda: checks.entries(shoal.home, "c1"), "the first action", 30)
    assert "is running; cannot resume it" in shoal.fails("cluster", "resume", "c1").stderr
    shoal.run("cluster", "pause", "c1")
    assert show(shoal, "c1")["operation"]["status"] == "PAUSED"
    time.sleep(0.8)  # what ran when the pause came has finished by now
    held = log_mark(shoal)
    time.sleep(0.5)
    assert log_mark(shoal) == held, "a task started while the operation was paused"
    assert show(shoal, "c1")["status"] == "CREATING"
    shoal.run("cluster", "resume", "c1")
    cluster = wait_status(shoal, "c1", ("ACTIVE",))
    assert cluster["operation"]["status"] == "SUCCEEDED"
    assert_matches_cloud(shoal, cluster, 2)


def test_resize_grows_and_shrinks(fake):
    shoal = fake()
    create(shoal, "c1", 3)
    mark = log_mark(shoal)
    shoal.run("cluster", "resize", "c1", "--size", "5", "--wait")
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE"
    assert_matches_cloud(shoal, cluster, 5)
    grown = checks.entries(shoal.home, "c1", since=mark)
    new_nodes = {n for n, _, a in checks.actions(grown) if a == "INSTALL"}
    assert new_nodes == {"n4", "n5"}
    # Nodes that stay are reconfigured in place (they learn of the new ones), not restarted.
    kept = [(n, a) for n, _, a in checks.actions(grown) if n not in new_nodes]
    assert kept and all(a == "CONFIGURE" for _, a in kept)
    assert checks.node_overlaps(grown) == []

    mark = log_mark(shoal)
    shoal.run("cluster", "resize", "c1", "--size", "2", "--wait")
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE"
    assert_matches_cloud(shoal, cluster, 2)
    assert sorted(s for n in cluster["nodes"] for s in n["services"]) == \
        ["app", "base", "base", "db"]
    shrunk = checks.entries(shoal.home, "c1", since=mark)
    removed = {n for n, _, a in checks.actions(shrunk) if a == "REMOVE"}
    assert len(removed) == 3 and not removed & {n["id"] for n in cluster["nodes"]}


def test_add_and_remove_services(fake):
    shoal = fake()
    create(shoal, "c1", 3)
    mark = log_mark(shoal)
    shoal.run("cluster", "add-services", "c1", "cache", "--wait")
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE" and "cache" in cluster["services"]
    assert all("cache" in n["services"] for n in cluster["nodes"])
    assert_matches_cloud(shoal, cluster, 3)
    added = checks.entries(shoal.home, "c1", since=mark)
    starts = checks.actions(added, "cache", "START")
    assert sorted(n for n, _, _ in starts) == ["n1", "n2", "n3"]

    mark = log_mark(shoal)
    shoal.run("cluster", "remove-services", "c1", "cache", "--wait")
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE" and "cache" not in cluster["services"]
    assert not any("cache" in n["services"] for n in cluster["nodes"])
    removed = checks.entries(shoal.home, "c1", since=mark)
    for node in ("n1", "n2", "n3"):
        done = [a for n, s, a in checks.actions(removed, "cache") if n == node]
        assert done == ["STOP", "REMOVE"], (node, done)
    # Removed for good: a later resize does not bring it back.
    shoal.run("cluster", "resize", "c1", "--size", "4", "--wait")
    cluster = show(shoal, "c1")
    assert "cache" not in cluster["services"]
    assert not any("cache" in n["services"] for n in cluster["nodes"])
    # Every service at once is what delete is for.
    failed = shoal.fails("cluster", "remove-services", "c1", *cluster["services"])
    assert "leaves nothing to run; delete the cluster instead" in failed.stderr


def test_start_stop_restart_take_their_closure(fake):
    shoal = fake()
    create(shoal, "c1", 3)

    mark = log_mark(shoal)
    shoal.run("cluster", "stop", "c1", "--service", "db", "--wait")
    log = checks.entries(shoal.home, "c1", since=mark)
    # Stopping db stops what requires it (app) first.
    assert sorted(checks.actions(log)) == [("n1", "app", "STOP"), ("n2", "app", "STOP"),
                                           ("n3", "db", "STOP")]
    assert checks.runtime_order_violations(log, {"db": ["app"]}, action="STOP") == []

    mark = log_mark(shoal)
    shoal.run("cluster", "start", "c1", "--service", "app", "--wait")
    log = checks.entries(shoal.home, "c1", since=mark)
    # Starting app starts what it requires (db) first.
    assert sorted(checks.actions(log)) == [("n1", "app", "START"), ("n2", "app", "START"),
                                           ("n3", "db", "START")]
    assert checks.runtime_order_violations(log, RUNTIME) == []

    mark = log_mark(shoal)
    shoal.run("cluster", "restart", "c1", "--service", "db", "--wait")
    log = checks.entries(shoal.home, "c1", since=mark)
    assert sorted(checks.actions(log)) == sorted(
        [("n1", "app", "STOP"), ("n2", "app", "STOP"), ("n3", "db", "STOP"),
         ("n1", "app", "START"), ("n2", "app", "START"), ("n3", "db", "START")])
    assert checks.runtime_order_violations(log, {"db": ["app"]}, action="STOP") == []
    assert checks.runtime_order_violations(log, RUNTIME) == []
    assert show(shoal, "c1")["status"] == "ACTIVE"


def test_reconfigure_pushes_new_config(fake):
    shoal = fake()
    create(shoal, "c1", 2)
    mark = log_mark(shoal)
    shoal.run("cluster", "reconfigure", "c1", "--config", json.dumps({"app": {"port": 9090}}),
              "--wait")
    log = checks.entries(shoal.home, "c1", since=mark)
    assert {a for _, _, a in checks.actions(log)} == {"CONFIGURE"}
    assert sorted((n, s) for n, s, _ in checks.actions(log)) == \
        [("n1", "app"), ("n1", "base"), ("n2", "base"), ("n2", "db")]
    assert {e["config"]["app"]["port"] for e in log if e["event"] == "begin"} == {9090}

    mark = log_mark(shoal)
    shoal.run("cluster", "reconfigure", "c1", "--service", "db", "--restart", "--wait")
    log = checks.entries(shoal.home, "c1", since=mark)
    assert [a for _, s, a in checks.actions(log) if s == "db"] == ["STOP", "CONFIGURE", "START"]
    assert [a for _, s, a in checks.actions(log) if s == "app"] == ["STOP", "START"]
    assert checks.runtime_order_violations(log, RUNTIME) == []
    assert show(shoal, "c1")["status"] == "ACTIVE"


def test_delete_leaves_nothing(fake):
    shoal = fake()
    create(shoal, "c1", 3)
    cluster_id = show(shoal, "c1")["id"]
    mark = log_mark(shoal)
    shoal.run("cluster", "delete", "c1", "--wait")
    assert_nothing_left(shoal, cluster_id)
    assert shoal.json("cluster", "list") == []
    assert [c["Status"] for c in shoal.json("cluster", "list", "--all")] == ["DELETED"]
    log = checks.entries(shoal.home, "c1", since=mark)
    assert checks.runtime_order_violations(log, {"db": ["app"]}, action="STOP") == []
    assert {a for _, _, a in checks.actions(log)} == {"STOP", "REMOVE"}
    # The name can be used again.
    create(shoal, "c1", 2)
    assert show(shoal, "c1")["status"] == "ACTIVE"


def test_events_and_task_show(fake):
    shoal = fake()
    create(shoal, "c1", 2)
    events = shoal.run("cluster", "events", "c1").stdout.splitlines()
    assert any(line.endswith("create started") for line in events)
    assert events[-1].endswith("create succeeded")
    task = next(t for t in tasks(shoal, "c1") if t["Action"] == "START" and t["Service"] == "db")
    shown = shoal.json("task", "show", task["ID"])
    assert shown["status"] == "SUCCEEDED" and shown["attempts"] == 1
    assert "START db on" in shown["output"] and ": ok" in shown["output"]
    missing = shoal.fails("task", "show", "op-nope/n1:create")
    assert "not found" in missing.stderr


def test_a_cancelled_change_can_be_retried(fake):
    shoal = fake(service_fields={"app": {"install": {"sleep": 1.0}}})
    create(shoal, "c1", 2)
    mark = log_mark(shoal)
    shoal.run("cluster", "resize", "c1", "--size", "4")
    wait_for(lambda: checks.actions(checks.entries(shoal.home, "c1", since=mark), "app",
                                    "INSTALL"), "the resize's first app INSTALL", 30)
    shoal.run("cluster", "cancel", "c1")
    cluster = wait_status(shoal, "c1", ("INCONSISTENT",))
    assert cluster["operation"]["status"] == "CANCELLED"
    shoal.run("cluster", "retry", "c1", "--wait")
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE" and cluster["operation"]["kind"] == "resize"
    assert_matches_cloud(shoal, cluster, 4)


def test_retry_resumes_the_latest_operation_only(fake):
    shoal = fake(service_fields={"app": {"stop": {"fail_if_exists": "stop-broken"},
                                         "start": {"sleep": 1.0}}})
    create(shoal, "c1", 2)
    (shoal.home / "stop-broken").write_text("")
    shoal.run("cluster", "stop", "c1", "--wait", check=False)
    assert show(shoal, "c1")["status"] == "INCONSISTENT"
    (shoal.home / "stop-broken").unlink()
    # The user mends it another way: the failed stop is history now.
    shoal.run("cluster", "start", "c1", "--wait")
    assert show(shoal, "c1")["status"] == "ACTIVE"
    assert "no failed operation to retry" in shoal.fails("cluster", "retry", "c1").stderr
    # A later operation is cancelled: retry resumes that one, never the old failed stop.
    mark = log_mark(shoal)
    shoal.run("cluster", "restart", "c1", "--service", "app")
    wait_for(lambda: checks.actions(checks.entries(shoal.home, "c1", since=mark), "app",
                                    "START"), "the restart's first app START", 30)
    shoal.run("cluster", "cancel", "c1")
    assert wait_status(shoal, "c1", ("INCONSISTENT",))["operation"]["status"] == "CANCELLED"
    mark = log_mark(shoal)
    shoal.run("cluster", "retry", "c1", "--wait")
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE" and cluster["operation"]["kind"] == "restart"
    assert not checks.actions(checks.entries(shoal.home, "c1", since=mark), action="STOP")


def test_a_paused_operation_stays_paused_across_a_restart_and_can_be_cancelled(fake):
    shoal = fake(fields={"sleep": 0.3})
    shoal.run("cluster", "create", "c1", "--template", "fake-stack", "--size", "2")
    wait_for(lambda: checks.entries(shoal.home, "c1"), "the first action", 30)
    shoal.run("cluster", "pause", "c1")
    shoal.run("server", "stop")
    shoal.run("server", "start")
    cluster = show(shoal, "c1")
    assert (cluster["status"], cluster["operation"]["status"]) == ("CREATING", "PAUSED")
    held = log_mark(shoal)
    time.sleep(0.5)
    assert log_mark(shoal) == held, "a paused operation ran a task after the restart"
    shoal.run("cluster", "cancel", "c1")
    cluster = wait_status(shoal, "c1", ("FAILED",))
    assert cluster["operation"]["status"] == "CANCELLED"
    assert_nothing_left(shoal, cluster["id"])


def test_a_failed_grow_can_be_shrunk_back(fake):
    # The 4th create call fails for good: the grow leaves n4 planned but never made.
    shoal = fake(providers={"fake": {"fail_create_nth": "4+"}})
    create(shoal, "c1", 3)
    shoal.run("cluster", "resize", "c1", "--size", "4", "--wait", check=False)
    assert show(shoal, "c1")["status"] == "INCONSISTENT"
    shoal.run("cluster", "resize", "c1", "--size", "3", "--wait")
    cluster = show(shoal, "c1")
    assert cluster["status"] == "ACTIVE"
    assert_matches_cloud(shoal, cluster, 3)
    undone = [t for t in tasks(shoal, "c1") if t["Node"] == "n4"]
    assert {t["Action"] for t in undone} == {"STOP", "REMOVE", "DELETE"}
    assert all(t["Status"] == "SUCCEEDED" for t in undone)
