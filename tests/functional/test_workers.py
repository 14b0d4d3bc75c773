"""The Celery executor end to end: a real Redis, a real server started with ``--executor celery``
and real ``shoal worker start`` processes (Celery prefork workers) with their own environments.

The workers share one SHOAL_HOME of their own (``cloud``): the fake provider's "cloud" and the
fake automator's log live there, apart from the server's home, so a test sees that the server
made no plugin call itself and that every instance was made by a worker.
"""

import json
import os
import signal
import time

import pytest
from shoal_testkit import catalog, checks, cloud

from tests.brokers import Redis, Worker
from tests.conftest import Shoal

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


class Setup:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.redis = Redis(tmp_path / "redis")
        self.cloud = tmp_path / "cloud"
        self.cloud.mkdir()
        self.workers = []
        self.servers = []

    def server(self, tenant=None, **settings):
        shoal = Shoal(self.tmp / "home", retries=2, retry_backoff=0.05, poll_base=0.05,
                      executor="celery", broker=self.redis.url, **settings)
        if tenant:
            shoal.env["SHOAL_TENANT"] = tenant
        if not self.servers:
            shoal.run("server", "start")
        self.servers.append(shoal)
        return shoal

    def worker(self, name, queues="shoal.default", concurrency=2, **settings):
        env = {"SHOAL_HOME": str(self.cloud),
               **{f"SHOAL_{k.upper()}": str(v) for k, v in settings.items()}}
        worker = Worker(self.tmp, self.redis.url, f"{name}@test", queues, concurrency, env=env)
        self.workers.append(worker)
        return worker

    def close(self):
        if self.servers:
            self.servers[0].run("server", "stop", check=False)
        for worker in self.workers:
            worker.stop()
        self.redis.stop()


@pytest.fixture
def setup(tmp_path):
    made = Setup(tmp_path)
    try:
        yield made
    finally:
        made.close()


def import_catalog(setup, shoal, **options):
    shoal.run("catalog", "import", catalog.write(setup.tmp / "catalog", **options))


def operation(shoal, name):
    """The cluster's latest operation as the API gives it: status, counts, what runs."""
    op_id = shoal.json("cluster", "show", name)["operation"]["id"]
    return api(shoal, f"/operations/{op_id}")


def api(shoal, path):
    import urllib.request

    request = urllib.request.Request(f"{shoal.url}/api/v1{path}",
                                     headers={"Authorization": f"Bearer {shoal.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_finished(shoal, name, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster = shoal.json("cluster", "show", name)
        if cluster["operation"]["status"] in FINAL:
            return cluster
        time.sleep(0.2)
    raise AssertionError(f"operation on {name} did not finish: {cluster}")


def wait_for(what, condition, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def made(setup, cluster_id):
    """How many instances the fake cloud ever made for the cluster (a duplicate counts)."""
    return cloud.load(setup.cloud)["counters"].get("instances_made", {}).get(cluster_id, 0)


def assert_exact(setup, cluster, size):
    assert cluster["status"] == "ACTIVE", cluster
    assert len(cluster["nodes"]) == size
    extra, missing = checks.orphans(setup.cloud, cluster["id"],
                                    [n["address"] for n in cluster["nodes"]])
    assert (extra, missing) == ([], [])
    assert made(setup, cluster["id"]) == size  # no machine made twice


def test_a_create_spreads_over_three_workers(setup):
    shoal = setup.server()
    names = {setup.worker(f"w{i}").name for i in (1, 2, 3)}
    import_catalog(setup, shoal, fields={"sleep": 0.02})
    status = shoal.json("worker", "status")
    assert sorted(w["Name"] for w in status) == sorted(names)
    assert all(w["Queues"] == "shoal.default" for w in status)

    shoal.run("cluster", "create", "c1", "--template", "fake-stack", "--size", 30, "--wait")
    cluster = shoal.json("cluster", "show", "c1")
    assert_exact(setup, cluster, 30)
    tasks = shoal.json("task", "list", "c1")
    by_worker = {}
    for task in tasks:
        by_worker.setdefault(task["Worker"], []).append(task)
    # Every worker ran some; CONFIRMs were settled by the server's batched poller.
    assert set(by_worker) == names | {"server (poller)"}, by_worker.keys()
    assert all(len(by_worker[name]) >= 5 for name in names), \
        {name: len(by_worker[name]) for name in names}
    assert {t["Action"] for t in by_worker["server (poller)"]} == {"CONFIRM"}
    shown = shoal.json("task", "show", tasks[0]["ID"])
    assert shown["worker"] in names and shown["queue"] == "shoal.default"
    # The server made no plugin call: no fake cloud in its home; the workers made them all.
    assert not (shoal.home / cloud.CLOUD_FILE).exists()
    counters = cloud.load(setup.cloud)["counters"]
    assert counters["describe_batch_max"]["all"] > 1  # one describe for many nodes
    log = checks.entries(setup.cloud, "c1")
    assert {e["pid"] for e in log} - {os.getpid()}  # actions ran in the workers' processes
    assert checks.node_overlaps(log) == []
    assert checks.runtime_order_violations(log, {"app": ["db"]}) == []


def test_a_worker_killed_mid_task_has_its_task_delivered_again(setup):
    shoal = setup.server()
    workers = [setup.worker(f"w{i}") for i in (1, 2, 3)]
    import_catalog(setup, shoal, providers={"fake": {"create_delay": 1.5}},
                   service_fields={"base": {"install": {"sleep": 1.5}}})
    shoal.run("cluster", "create", "k1", "--template", "fake-stack", "--size", 6)
    cluster_id = shoal.json("cluster", "show", "k1")["id"]
    # Kill every pool process while the creates sleep after making their instances: the calls
    # never return, and each is delivered again; the token finds the instance already made.
    wait_for("instances made", lambda: made(setup, cluster_id) >= 3)
    killed = [pid for worker in workers for pid in worker.children()]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    # Then kill the process running one INSTALL of base, mid-action.
    begun = wait_for("an INSTALL running", lambda: [
        e for e in checks.entries(setup.cloud, "k1")
        if e["action"] == "INSTALL" and e["service"] == "base" and e["event"] == "begin"])
    victim = begun[0]
    os.kill(victim["pid"], signal.SIGKILL)

    cluster = wait_finished(shoal, "k1")
    assert cluster["operation"]["status"] == "SUCCEEDED", cluster
    assert_exact(setup, cluster, 6)
    log = checks.entries(setup.cloud, "k1")
    again = [e for e in log if (e["node"], e["service"], e["action"]) ==
             (victim["node"], "base", "INSTALL")]
    assert [e["event"] for e in again] == ["begin", "begin", "end"], again
    assert again[1]["pid"] != victim["pid"]
    assert checks.node_overlaps(log[log.index(again[1]):]) == []
    # A delivery again is no new attempt: the task ran once as far as the operation goes.
    assert all(t["Attempts"] == 1 for t in shoal.json("task", "list", "k1"))
    # Celery saw its processes lost and gave their tasks back (reject_on_worker_lost).
    lost = sum(w.log_path.read_text().count("Task handler raised error: WorkerLostError")
               for w in workers)
    assert lost >= len(killed[:1]) + 1


def test_the_broker_restarted_mid_operation(setup):
    shoal = setup.server()
    for i in (1, 2, 3):
        setup.worker(f"w{i}")
    import_catalog(setup, shoal, fields={"sleep": 0.1})
    shoal.run("cluster", "create", "b1", "--template", "fake-stack", "--size", 8)
    wait_for("a third of the tasks", lambda: operation(shoal, "b1")["counts"].get(
        "SUCCEEDED", 0) >= 25)
    setup.redis.stop()
    time.sleep(2)
    setup.redis.start()
    cluster = wait_finished(shoal, "b1")
    assert cluster["operation"]["status"] == "SUCCEEDED", cluster
    assert_exact(setup, cluster, 8)
    # The server did see the outage (sending, or listening for results), and waited it out.
    assert "Connection refused" in (shoal.home / "server.log").read_text()


def test_calls_the_broker_lost_in_a_restart_are_sent_again(setup):
    """Celery on Redis can lose a message in a broker restart (a worker took it off the queue
    and had not yet recorded it as unacknowledged, or died reconnecting with it reserved); the
    operation then waited forever. Here the messages are lost by hand: the creates wait on a
    queue no worker serves, their messages are dropped, the broker restarts. The server sends
    again the calls no worker claimed, and each machine is made once."""
    shoal = setup.server(provider_queues="fake")
    setup.worker("w1")
    import_catalog(setup, shoal)
    shoal.run("cluster", "create", "l1", "--template", "fake-stack", "--size", 2)
    wait_for("queued creates", lambda: len([
        t for t in shoal.json("task", "list", "l1") if t["Status"] == "QUEUED"]) == 2)
    broker = setup.redis.client()
    assert broker.delete("shoal.default.fake") == 1  # the queue and the messages in it
    setup.redis.stop()
    time.sleep(1)
    setup.redis.start()
    setup.worker("w2", queues="shoal.default.fake")
    cluster = wait_finished(shoal, "l1", timeout=90)
    assert cluster["operation"]["status"] == "SUCCEEDED", cluster
    assert_exact(setup, cluster, 2)
    assert "sending again 2 calls" in (shoal.home / "server.log").read_text()


def test_the_server_killed_mid_operation_resumes_without_losing_or_repeating(setup):
    shoal = setup.server()
    for i in (1, 2, 3):
        setup.worker(f"w{i}")
    import_catalog(setup, shoal, fields={"sleep": 0.3})
    shoal.run("cluster", "create", "s1", "--template", "fake-stack", "--size", 8)
    wait_for("a third of the tasks", lambda: operation(shoal, "s1")["counts"].get(
        "SUCCEEDED", 0) >= 25)
    pid = json.loads((shoal.home / "server.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for("the server gone", lambda: not os.path.exists(f"/proc/{pid}") or
             open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] == "Z")
    # Meanwhile the workers finish what they hold: outcomes with no server to read them.
    time.sleep(1.5)
    shoal.run("server", "start")
    cluster = wait_finished(shoal, "s1")
    assert cluster["operation"]["status"] == "SUCCEEDED", cluster
    assert_exact(setup, cluster, 8)
    # Each action began once: what finished while the server was down was taken as it came,
    # not sent again.
    log = [e for e in checks.entries(setup.cloud, "s1") if e["event"] == "begin"]
    keys = [(e["node"], e["service"], e["action"]) for e in log]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    assert "resuming operation" in (shoal.home / "server.log").read_text()


def test_a_task_no_worker_takes_shows_queued_and_cancel_works(setup):
    # Tasks of provider "fake" go to shoal.default.fake, which no worker serves yet.
    shoal = setup.server(provider_queues="fake")
    setup.worker("w1")
    import_catalog(setup, shoal)
    shoal.run("cluster", "create", "q1", "--template", "fake-stack", "--size", 2)
    tasks = wait_for("queued creates", lambda: [
        t for t in shoal.json("task", "list", "q1") if t["Status"] == "QUEUED"])
    assert {t["Action"] for t in tasks} == {"CREATE"}
    assert all(t["Worker"] == "(queued on shoal.default.fake)" for t in tasks)
    assert any("queued on shoal.default.fake" in r for r in operation(shoal, "q1")["running"])
    shoal.run("cluster", "cancel", "q1")
    # The creates are withdrawn; the rollback asks the cloud for leftovers, on that queue too.
    wait_for("the creates withdrawn", lambda: all(
        t["Status"] != "QUEUED" for t in shoal.json("task", "list", "q1")
        if t["Action"] == "CREATE"))
    setup.worker("w2", queues="shoal.default.fake")
    cluster = wait_finished(shoal, "q1")
    assert (cluster["status"], cluster["operation"]["status"]) == ("FAILED", "CANCELLED")
    # The withdrawn creates never ran, even once a worker served their queue.
    assert made(setup, cluster["id"]) == 0
    assert cloud.load(setup.cloud)["counters"].get("create_calls", {}).get(cluster["id"]) is None


def test_a_pause_takes_queued_calls_back_and_resume_sends_them_again(setup):
    """Pause: a task sent to a queue no worker has taken it from has not begun; it goes back to
    PENDING, a worker that comes meanwhile runs nothing, and resume sends it again."""
    shoal = setup.server(provider_queues="fake")
    setup.worker("w1")
    import_catalog(setup, shoal)
    shoal.run("cluster", "create", "p2", "--template", "fake-stack", "--size", 2)
    wait_for("queued creates", lambda: [
        t for t in shoal.json("task", "list", "p2") if t["Status"] == "QUEUED"])
    shoal.run("cluster", "pause", "p2")
    creates = wait_for("the creates taken back", lambda: (lambda tasks: tasks if all(
        t["Status"] == "PENDING" for t in tasks) else None)(
        [t for t in shoal.json("task", "list", "p2") if t["Action"] == "CREATE"]))
    assert len(creates) == 2
    setup.worker("w2", queues="shoal.default.fake")
    time.sleep(2)  # the withdrawn messages reach w2 now: it must drop them
    cluster = shoal.json("cluster", "show", "p2")
    assert cluster["operation"]["status"] == "PAUSED"
    assert made(setup, cluster["id"]) == 0
    shoal.run("cluster", "resume", "p2")
    cluster = wait_finished(shoal, "p2")
    assert_exact(setup, cluster, 2)  # each machine made once
    again = [t for t in shoal.json("task", "list", "p2") if t["Action"] == "CREATE"]
    assert all(t["Status"] == "SUCCEEDED" and t["Worker"] == "w2@test" for t in again)


def test_a_tenants_tasks_run_only_on_its_own_workers(setup):
    acme_worker = setup.worker("acme", queues="shoal.acme")
    default_worker = setup.worker("dflt", queues="shoal.default")
    default = setup.server()
    acme = setup.server(tenant="acme")
    default.run("tenant", "create", "acme")  # the owner makes it; then its catalog
    for shoal in (default, acme):
        import_catalog(setup, shoal, fields={"sleep": 0.02})
    acme.run("cluster", "create", "t1", "--template", "fake-stack", "--size", 4)
    default.run("cluster", "create", "t2", "--template", "fake-stack", "--size", 4)
    for shoal, name in ((acme, "t1"), (default, "t2")):
        cluster = wait_finished(shoal, name)
        assert_exact(setup, cluster, 4)
    ran = {name: {t["Worker"] for t in shoal.json("task", "list", name)}
           for shoal, name in ((acme, "t1"), (default, "t2"))}
    assert ran == {"t1": {acme_worker.name, "server (poller)"},
                   "t2": {default_worker.name, "server (poller)"}}
    # And in the processes themselves: every action of t1 ran in a process of acme's worker.
    pids = {"t1": set(acme_worker.children()), "t2": set(default_worker.children())}
    for name in ("t1", "t2"):
        assert {e["pid"] for e in checks.entries(setup.cloud, name)} <= pids[name], name
    assert acme.json("task", "show", acme.json("task", "list", "t1")[0]["ID"])["queue"] == \
        "shoal.acme"


def test_a_create_on_ssh_hosts_through_workers(setup):
    from tests.cloudkit import write_catalog
    from tests.sshd import SSHHost

    hosts = [SSHHost(address=f"127.0.0.{n}") for n in (2, 3, 4)]
    try:
        for host in hosts:
            host.start()
        shoal = setup.server()
        names = {setup.worker(f"w{i}").name for i in (1, 2)}
        marks = setup.tmp / "marks"
        marks.mkdir()
        shoal.run("catalog", "import", write_catalog(
            setup.tmp / "ssh-catalog", "onprem", "ssh",
            {"hosts": json.dumps([h.host_entry for h in hosts])}, {"flavor": "box"},
            {"image": "os"}, marks))
        shoal.run("cluster", "create", "farm", "--template", "web", "--size", 3, "--wait")
        cluster = shoal.json("cluster", "show", "farm")
        addresses = sorted(n["address"] for n in cluster["nodes"])
        assert addresses == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        for address in addresses:  # every node's CONFIGURE saw its peers, over SSH
            assert sorted((marks / address).read_text().split(",")) == addresses
        tasks = shoal.json("task", "list", "farm")
        assert {t["Worker"] for t in tasks if t["Action"] != "CONFIRM"} <= names
        assert all(t["Status"] == "SUCCEEDED" for t in tasks)
        assert not (shoal.home / "ssh-pool.json").exists()  # the pool is the workers'
        shoal.run("cluster", "delete", "farm", "--wait")
    finally:
        for host in hosts:
            host.close()


def test_bad_executor_settings_are_refused_in_one_line(tmp_path):
    shoal = Shoal(tmp_path / "home")
    result = shoal.fails("server", "start", "--executor", "celery")
    assert "the celery executor needs a broker" in result.stderr
    result = shoal.fails("server", "start", "--executor", "celery", "--broker", "amqp://x//")
    assert "must be a Redis URL" in result.stderr
    result = shoal.fails("worker", "start")
    assert "no broker" in result.stderr


def test_a_detached_worker_runs_in_the_background(setup):
    import re

    shoal = setup.server()
    worker_env = Shoal(setup.cloud)  # the worker's own SHOAL_HOME: its log and pid go there
    result = worker_env.run("worker", "start", "--detach", "--broker", setup.redis.url,
                            "--name", "d1@test", "--concurrency", 1)
    pid = int(re.search(r"pid (\d+)", result.stdout).group(1))
    try:
        assert (setup.cloud / "workers" / f"d1@test-{pid}.pid").read_text() == str(pid)
        names = wait_for("the worker known to the broker", lambda: [
            w["Name"] for w in shoal.json("worker", "status")])
        assert names == ["d1@test"]
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for("the worker gone", lambda: not os.path.exists(f"/proc/{pid}") or open(
        f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] == "Z", timeout=60)


def test_a_busy_worker_holds_no_task_another_could_run(setup):
    """Prefetch 1 with late acknowledgement: a worker running a long action has reserved no
    other task, so the rest of the operation goes on on the other worker meanwhile (with
    Celery's default prefetch of 4, the busy worker would sit on some of them). One call a
    message, so that each task is a message of its own as the trap needs."""
    shoal = setup.server(calls_per_message=1)
    for i in (1, 2):
        setup.worker(f"w{i}", concurrency=1)
    hold = setup.cloud / "hold"
    hold.write_text("")
    import_catalog(setup, shoal, service_fields={"db": {"install": {"hold_while_exists": "hold"}}})
    shoal.run("cluster", "create", "p1", "--template", "fake-stack", "--size", 3)
    held = wait_for("db's INSTALL holding", lambda: [
        e for e in checks.entries(setup.cloud, "p1")
        if (e["service"], e["action"], e["event"]) == ("db", "INSTALL", "begin")])[0]
    # Both app nodes get through INSTALL and CONFIGURE while one worker holds.
    configured = wait_for("the app nodes configured", lambda: len([
        e for e in checks.entries(setup.cloud, "p1")
        if (e["service"], e["action"], e["event"]) == ("app", "CONFIGURE", "end")]) == 2)
    assert configured
    log = checks.entries(setup.cloud, "p1")
    during = [e for e in log[log.index(held) + 1:] if e["node"] != held["node"]]
    assert during and all(e["pid"] != held["pid"] for e in during)
    hold.unlink()
    cluster = wait_finished(shoal, "p1")
    assert_exact(setup, cluster, 3)


def test_a_visibility_timeout_shorter_than_an_action_delivers_it_twice_harmlessly(setup):
    """The Redis trap, shown with a 3 s visibility timeout (the default is 12 h): an action of
    8 s is handed to a second worker while the first still runs it. Both runs are the same
    idempotent action; the server takes the first outcome and the operation ends right. The
    same short timeout is what moves the tasks of a whole worker machine lost (main process
    and pool SIGKILLed): they are delivered again once it passes."""
    shoal = setup.server(visibility_timeout=3)
    for i in (1, 2, 3):
        setup.worker(f"w{i}", concurrency=1, visibility_timeout=3)
    import_catalog(setup, shoal, service_fields={"db": {"install": {"sleep": 8}}})
    shoal.run("cluster", "create", "v1", "--template", "fake-stack", "--size", 2)
    cluster = wait_finished(shoal, "v1")
    assert cluster["operation"]["status"] == "SUCCEEDED", cluster
    assert_exact(setup, cluster, 2)
    runs = [e for e in checks.entries(setup.cloud, "v1")
            if (e["service"], e["action"], e["event"]) == ("db", "INSTALL", "begin")]
    assert len(runs) >= 2 and len({e["pid"] for e in runs}) >= 2, runs

    # A whole worker lost: its main process and pool SIGKILLed mid-action.
    import_catalog(setup, shoal, service_fields={"db": {"install": {"sleep": 1}},
                                                 "base": {"install": {"sleep": 1.5}}})
    shoal.run("cluster", "create", "v2", "--template", "fake-stack", "--size", 3)
    begun = wait_for("an INSTALL running", lambda: [
        e for e in checks.entries(setup.cloud, "v2")
        if (e["service"], e["action"], e["event"]) == ("base", "INSTALL", "begin")])[0]
    lost = next(w for w in setup.workers if begun["pid"] in w.children())
    for pid in [lost.pid, *lost.children()]:
        os.kill(pid, signal.SIGKILL)
    cluster = wait_finished(shoal, "v2")
    assert cluster["operation"]["status"] == "SUCCEEDED", cluster
    assert_exact(setup, cluster, 3)
    again = [e for e in checks.entries(setup.cloud, "v2")
             if (e["node"], e["service"], e["action"]) == (begun["node"], "base", "INSTALL")]
    assert [e["event"] for e in again][:2] == ["begin", "begin"] and again[-1]["event"] == "end"


def test_a_drift_check_asks_a_worker_for_the_providers_inventory(setup):
    """``shoal cluster check`` under Celery: the one batched inventory call goes to a worker
    (the server has no fake cloud of its own), and a node removed behind Shoal's back shows."""
    shoal = setup.server()
    setup.worker("w1")
    import_catalog(setup, shoal)
    shoal.run("cluster", "create", "d1", "--template", "fake-stack", "--size", 3, "--wait")
    cluster = shoal.json("cluster", "show", "d1")
    clean = shoal.run("cluster", "check", "d1")
    assert "matches its provider" in clean.stderr and clean.stdout.count(": ok") == 3
    gone = cloud.instances(setup.cloud, cluster["id"])[0]
    with cloud.locked(setup.cloud) as state:
        del state["instances"][gone["id"]]
    result = shoal.run("cluster", "check", "d1", check=False)
    assert result.returncode != 0 and result.stdout.count(": ok") == 2, result
    assert f"{gone['id']}: missing" in result.stdout, result
    assert not (shoal.home / cloud.CLOUD_FILE).exists()  # the server itself asked no cloud
