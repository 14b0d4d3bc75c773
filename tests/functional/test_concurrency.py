"""Many operations at once on one server: 50 clusters created in parallel (50 CLI processes), then
all 50 resized at once, then all deleted at once. Every operation must end well, and "database
is locked" must appear nowhere: not in the CLI's errors, not in a task's output, not in the
server log.

Fifty ``shoal`` processes take a while to start on a small machine, so the resizes and deletes go
straight to the REST API from 50 threads. The resizes' actions wait while a hold file exists, so
all 50 are seen in flight together before the test lets them finish.
"""

import concurrent.futures
import json
import os
import sqlite3
import time
import urllib.request

import pytest
from shoal_testkit import catalog, checks, cloud

from tests.conftest import Shoal

CLUSTERS = 50
LOCKED = "database is locked"
HOLD = "hold-resizes"  # under SHOAL_HOME: the fake actions wait while it exists


@pytest.fixture
def shoal(tmp_path):
    # Fake actions only sleep: more workers than CPUs is what a real (I/O-bound) load wants too.
    client = Shoal(tmp_path / "home", retries=1, retry_backoff=0.05, poll_base=0.05,
                   parallelism=32)
    client.run("server", "start")
    client.run("catalog", "import", catalog.write(
        tmp_path / "catalog", providers={"fake": {"polls_to_running": 2}},
        fields={"sleep": 0.05, "hold_while_exists": HOLD}))
    yield client
    client.run("server", "stop")


def api(shoal, method, path, body=None):
    request = urllib.request.Request(
        f"{shoal.url}/api/v1{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {shoal.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def wait_all(shoal, names, status, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        clusters = {c["Name"]: c["Status"] for c in shoal.json("cluster", "list")}
        if status is None and not clusters.keys() & set(names):
            return clusters  # all deleted
        if all(clusters.get(name) in (status, "FAILED", "INCONSISTENT") for name in names):
            return clusters
        time.sleep(0.5)
    raise AssertionError(f"not all {status}: {clusters}")


def all_at_once(shoal, commands):
    """Run every command as its own ``shoal`` process, all at the same time."""
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        futures = [pool.submit(shoal.run, *command, check=False) for command in commands]
        return [f.result() for f in futures]


def assert_all_ok(results, what):
    failed = [(r.args[1:], r.stderr[-500:]) for r in results if r.returncode != 0]
    assert not failed, f"{len(failed)} of {len(results)} {what} failed: {failed[:3]}"
    assert not [r for r in results if LOCKED in r.stderr + r.stdout]


def test_fifty_clusters_at_once(shoal):
    names = [f"c{i:02d}" for i in range(CLUSTERS)]
    timings = {}

    started = time.monotonic()
    created = all_at_once(shoal, [("cluster", "create", name, "--template", "fake-stack",
                                   "--size", "2", "--wait") for name in names])
    timings["create"] = time.monotonic() - started
    assert_all_ok(created, "creates")
    clusters = {c["Name"]: c for c in shoal.json("cluster", "list")}
    assert sorted(clusters) == names
    assert {c["Status"] for c in clusters.values()} == {"ACTIVE"}
    assert {c["Nodes"] for c in clusters.values()} == {2}

    started = time.monotonic()
    (shoal.home / HOLD).touch()
    with concurrent.futures.ThreadPoolExecutor(CLUSTERS) as pool:
        ops = list(pool.map(lambda name: api(shoal, "POST", f"/clusters/{name}/resize",
                                             {"size": 3}), names))
    db = sqlite3.connect(f"file:{shoal.home / 'shoal.db'}?mode=ro", uri=True)
    in_flight = db.execute("SELECT COUNT(*) FROM operations WHERE status IN ('PENDING', 'RUNNING')"
                           f" AND id IN ({','.join('?' * len(ops))})",
                           [op["operation"] for op in ops]).fetchone()[0]
    db.close()
    assert in_flight == CLUSTERS, "the 50 resizes were not all in flight at the same time"
    os.unlink(shoal.home / HOLD)
    statuses = wait_all(shoal, names, "ACTIVE")
    timings["resize"] = time.monotonic() - started
    assert set(statuses.values()) == {"ACTIVE"}, statuses
    for name in names:
        cluster = api(shoal, "GET", f"/clusters/{name}")
        assert cluster["status"] == "ACTIVE" and cluster["size"] == 3, name
        assert checks.orphans(shoal.home, cluster["id"],
                              [n["address"] for n in cluster["nodes"]]) == ([], [])
    assert len(cloud.instances(shoal.home)) == 3 * CLUSTERS
    log = checks.entries(shoal.home)
    assert checks.node_overlaps(log) == []
    for name in names:
        ours = [e for e in log if e["cluster_name"] == name]
        assert checks.runtime_order_violations(ours, {"app": ["db"]}) == [], name

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLUSTERS) as pool:
        list(pool.map(lambda name: api(shoal, "DELETE", f"/clusters/{name}"), names))
    wait_all(shoal, names, None)
    timings["delete"] = time.monotonic() - started
    assert shoal.json("cluster", "list") == []
    assert cloud.instances(shoal.home) == [] and cloud.groups(shoal.home) == {}

    db = sqlite3.connect(f"file:{shoal.home / 'shoal.db'}?mode=ro", uri=True)
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM operations GROUP BY status"))
    assert statuses == {"SUCCEEDED": 3 * CLUSTERS}
    locked = db.execute("SELECT COUNT(*) FROM tasks WHERE output LIKE ? OR attempts > 1",
                        [f"%{LOCKED}%"]).fetchone()[0]
    assert locked == 0, "a task failed an attempt under load"
    db.close()
    server_log = (shoal.home / "server.log").read_text()
    assert LOCKED not in server_log and "Traceback" not in server_log
    print(", ".join(f"{CLUSTERS} {what}s in {seconds:.1f} s"
                    for what, seconds in timings.items()))
