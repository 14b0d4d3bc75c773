"""The crash test: SIGKILL a real server at a random moment of a create, start it again, and the
operation finishes as if nothing happened (or, if it was cancelled, rolls back to nothing).

Every iteration kills at a different moment (seeded, so a failure can be replayed with
SHOAL_CRASH_SEED). What must hold afterwards: the cluster is ACTIVE with exactly the requested
nodes and the fake cloud holds no instance of the cluster that no node knows of; or, when a
cancel was sent, the cluster is FAILED and the cloud holds nothing of it.
"""

import json
import os
import random
import signal
import time
import urllib.error
import urllib.request

import pytest
from shoal_testkit import catalog, checks, cloud

from tests.conftest import Shoal

SEED = int(os.environ.get("SHOAL_CRASH_SEED") or 20240611)
ITERATIONS = int(os.environ.get("SHOAL_CRASH_ITERATIONS") or 15)
SIZE = 6
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def server_pid(shoal):
    return json.loads((shoal.home / "server.json").read_text())["pid"]


def kill_server(shoal):
    pid = server_pid(shoal)
    os.kill(pid, signal.SIGKILL)
    # The CLI that started the server has exited, so whoever adopted the process reaps it; until
    # then it still answers kill(pid, 0) and 'shoal server start' would think it runs.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"server {pid} did not go away after SIGKILL")


def api(shoal, path, method="GET"):
    """Straight to the REST API, where timing matters: the CLI costs 0.3 s a call."""
    request = urllib.request.Request(f"{shoal.url}/api/v1{path}", method=method,
                                     data=b"{}" if method == "POST" else None,
                                     headers={"Authorization": f"Bearer {shoal.token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def wait_finished(shoal, name, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster = api(shoal, f"/clusters/{name}")
        if cluster["operation"]["status"] in FINAL:
            return shoal.json("cluster", "show", name)
        time.sleep(0.05)
    raise AssertionError(f"operation on {name} did not finish: {cluster}")


@pytest.fixture
def crash_home(tmp_path):
    shoal = Shoal(tmp_path / "home", retries=2, retry_backoff=0.05, poll_base=0.05)
    shoal.run("server", "start")
    # A create takes about 2 s: 0.6 s per create call, 4 polls (0.75 s), 8 actions of 0.05 s
    # per node; a rollback about 0.6 s.
    root = catalog.write(tmp_path / "catalog", fields={"sleep": 0.05}, providers={
        "fake": {"create_delay": 0.6, "polls_to_running": 4, "delete_delay": 0.6},
        # Its second instance of every cluster fails to come up and is replaced.
        "fake-flaky": {"create_delay": 0.6, "polls_to_running": 4, "delete_delay": 0.6,
                       "fail_state_nth": "2"},
    })
    shoal.run("catalog", "import", root)
    yield shoal
    shoal.run("server", "stop")


def test_server_killed_at_any_moment_of_a_create_resumes_it(crash_home):
    shoal = crash_home
    rng = random.Random(SEED)
    started = time.monotonic()
    summary = []
    for i in range(ITERATIONS):
        name = f"crash{i}"
        provider = "fake-flaky" if i % 3 == 1 else "fake"
        cancel = i % 3 == 2
        shoal.run("cluster", "create", name, "--template", "fake-stack", "--size", SIZE,
                  "--provider", provider)
        cluster_id = api(shoal, f"/clusters/{name}")["id"]
        time.sleep(rng.uniform(0.0, 2.2))
        cancelled = False
        if cancel:
            cancelled = "error" not in api(shoal, f"/clusters/{name}/cancel", "POST")
            time.sleep(rng.uniform(0.0, 1.0))  # kill it while it cancels or rolls back
        before = api(shoal, f"/clusters/{name}")["operation"]["status"]
        kill_server(shoal)
        shoal.run("server", "start")
        cluster = wait_finished(shoal, name)
        summary.append(f"{name} {provider} killed while {before}: "
                       f"{cluster['status']} {cluster['operation']['status']}")
        where = f"iteration {i} (seed {SEED}): {summary[-1]}"
        if cancelled:
            assert cluster["status"] == "FAILED", where
            assert cluster["operation"]["status"] == "CANCELLED", where
            assert cloud.instances(shoal.home, cluster_id) == [], where
            assert cluster_id not in cloud.groups(shoal.home), where
        else:
            assert cluster["status"] == "ACTIVE", where
            assert cluster["operation"]["status"] == "SUCCEEDED", where
            assert len(cluster["nodes"]) == SIZE, where
            extra, missing = checks.orphans(shoal.home, cluster_id,
                                            [n["address"] for n in cluster["nodes"]])
            assert (extra, missing) == ([], []), where
            log = checks.entries(shoal.home, name)
            assert checks.runtime_order_violations(log, {"app": ["db"]}) == [], where
    print(f"{ITERATIONS} kills in {time.monotonic() - started:.1f} s:\n" + "\n".join(summary))
    log = (shoal.home / "server.log").read_text()
    assert "crashed" not in log and "Traceback" not in log
    # Most kills must hit an operation in flight, or this test tests nothing.
    hits = sum(" killed while SUCCEEDED" not in line and " killed while FAILED" not in line
               and " killed while CANCELLED" not in line for line in summary)
    assert hits >= ITERATIONS * 2 // 3, summary
    assert log.count("resuming operation") >= hits - 2  # an op may end just before the kill


def test_server_killed_during_resize_and_delete_resumes_them(crash_home):
    shoal = crash_home
    rng = random.Random(SEED + 1)
    shoal.run("cluster", "create", "grow", "--template", "fake-stack", "--size", 3, "--wait")
    cluster_id = api(shoal, "/clusters/grow")["id"]
    # (operation, nodes after it, latest moment to kill: about the operation's length)
    for args, size, within in ((("resize", "grow", "--size", 6), 6, 2.0),
                               (("resize", "grow", "--size", 2), 2, 0.8),
                               (("delete", "grow"), 0, 0.8)):
        shoal.run("cluster", *args)
        time.sleep(rng.uniform(0.0, within))
        before = api(shoal, "/clusters/grow")["operation"]["status"]
        kill_server(shoal)
        shoal.run("server", "start")
        where = f"{args} killed while {before}"
        print(where)
        if size:
            cluster = wait_finished(shoal, "grow")
            assert (cluster["status"], cluster["operation"]["status"]) == \
                ("ACTIVE", "SUCCEEDED"), where
            assert len(cluster["nodes"]) == size, where
            assert checks.orphans(shoal.home, cluster_id,
                                  [n["address"] for n in cluster["nodes"]]) == ([], []), where
        else:
            deadline = time.monotonic() + 90
            while shoal.json("cluster", "list") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert shoal.json("cluster", "list") == [], where
            assert cloud.instances(shoal.home, cluster_id) == [], where
            assert cluster_id not in cloud.groups(shoal.home), where
