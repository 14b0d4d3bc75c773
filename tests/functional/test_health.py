"""Health and supervision for real: the shipped local-web cluster's backend killed by its pid is
seen failing, restarted by a visible operation and answers again; a service that keeps failing
is restarted up to its limit, then left, the cluster DEGRADED with the reason."""

import json
import os
import signal
import time
import urllib.request

import pytest

from tests.conftest import Shoal


@pytest.fixture
def shoal(tmp_path):
    # The health loop reads which clusters are ACTIVE every second here (default 5 s).
    client = Shoal(tmp_path / "home", default_catalog=True, health_refresh=1,
                   facts_interval=2)
    client.run("server", "start")
    yield client
    for cluster in client.json("cluster", "list"):
        client.run("cluster", "delete", cluster["Name"], "--wait", check=False)
    client.run("server", "stop")


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def wait_for(what, predicate, timeout=120):
    """Poll ``predicate`` until it returns something true (a loaded machine: generous)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.5)


def health(shoal, name):
    return {(r["node"], r["service"]): r for r in shoal.json("cluster", "health", name)}


def events(shoal, name):
    return shoal.run("cluster", "events", name).stdout


def test_killed_backend_is_restarted_and_served_again(shoal):
    shoal.run("cluster", "create", "web", "--template", "local-web", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "web")
    backends = sorted(n["id"] for n in cluster["nodes"] if n["services"] == ["web-backend"])
    rows = wait_for("every instance healthy", lambda: (lambda h: len(h) == 3 and all(
        r["state"] == "healthy" for r in h.values()) and h)(health(shoal, "web")))
    assert set(rows[(backends[0], "web-backend")]) == {"node", "service", "state", "since",
                                                      "output", "restarts"}
    assert shoal.json("cluster", "show", "web")["health"] == "HEALTHY"
    assert [r["Health"] for r in shoal.json("cluster", "list")] == ["HEALTHY"]

    victim = backends[0]
    pid_file = shoal.home / "nodes" / cluster["id"] / victim / "run" / "demo-backend.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)
    failing = wait_for("the backend failing", lambda: health(shoal, "web")[
        (victim, "web-backend")]["state"] == "failing")
    assert failing
    assert "health: web-backend on %s is failing" % victim in events(shoal, "web")
    # Supervision restarts it as an operation of its own: STOP and START on that node only.
    restarted = wait_for("the restart", lambda: (lambda r: r["state"] == "healthy" and
                                                 r["restarts"] >= 1 and r)(
        health(shoal, "web")[(victim, "web-backend")]))
    assert restarted["restarts"] == 1
    tasks = shoal.json("task", "list", "web")
    assert [(t["Node"], t["Action"], t["Service"], t["Status"]) for t in tasks] == [
        (victim, "STOP", "web-backend", "SUCCEEDED"),
        (victim, "START", "web-backend", "SUCCEEDED")]
    assert int(pid_file.read_text()) != pid
    text = events(shoal, "web")
    assert f"supervision: restarting web-backend on {victim}" in text
    assert f"health: web-backend on {victim} is healthy (was failing)" in text
    url = [link["url"] for link in shoal.json("cluster", "show", "web")["links"]
           if link["label"] == "balancer"][0]
    assert {get(url).split()[1] for _ in range(4)} == set(backends)
    # Node facts, read through the transport on the same schedule.
    nodes = wait_for("node facts", lambda: (lambda c: all(n["metrics"] for n in c["nodes"])
                                            and c["nodes"])(shoal.json("cluster", "show", "web")))
    for node in nodes:
        assert node["metrics"]["memory_total"] > 0 and 0 <= node["metrics"]["disk_pct"] <= 100
        assert node["metrics"]["load1"] >= 0


FLAKY = {
    "name": "flaky",
    "description": "starts, then never answers its check",
    "provisioner": {
        "actions": {"start": {"type": "shell", "fields": {"command": ["true"]}},
                    "stop": {"type": "shell", "fields": {"command": ["true"]}}},
        "health": {"type": "command", "command": ["sh", "-c", "echo down; exit 3"],
                   "interval": 1, "timeout": 5, "retries": 1},
    },
    "restart": "on-failure", "max_restarts": 2, "window": 3600,
}
FLAKY_TEMPLATE = {
    "name": "flaky-local",
    "defaults": {"services": ["flaky"], "provider": "local", "hardwaretype": "sandbox",
                 "imagetype": "host"},
}


def test_service_that_keeps_failing_stops_at_its_limit(shoal, tmp_path):
    for kind, body in (("service", FLAKY), ("template", FLAKY_TEMPLATE)):
        path = tmp_path / f"{body['name']}.json"
        path.write_text(json.dumps(body))
        shoal.run(kind, "create", path)
    shoal.run("cluster", "create", "flaky", "--template", "flaky-local", "--size", "1",
              "--wait")
    shown = wait_for("DEGRADED with supervision stopped", lambda: (
        lambda c: "supervision stopped" in c["health_reason"] and c)(
        shoal.json("cluster", "show", "flaky")))
    assert shown["health"] == "DEGRADED" and shown["status"] == "ACTIVE"
    assert "flaky on n1 failing (supervision stopped after 2 restart(s))" in shown["health_reason"]
    [row] = shoal.json("cluster", "health", "flaky")
    assert row["state"] == "failing" and row["restarts"] == 2 and "down" in row["output"]
    text = events(shoal, "flaky")
    assert text.count("supervision: restarting flaky on n1") == 2
    assert "not restarting it (cluster DEGRADED)" in text
    # No third restart comes later.
    time.sleep(3)
    assert shoal.json("cluster", "health", "flaky")[0]["restarts"] == 2
    table = shoal.run("cluster", "show", "flaky").stdout
    assert "DEGRADED" in table and "supervision stopped" in table


def test_metrics_match_the_task_table_and_the_loop_marks_drift(tmp_path):
    import sqlite3

    from prometheus_client.parser import text_string_to_metric_families

    shoal = Shoal(tmp_path / "home", default_catalog=True, health_refresh=1, drift_interval=1)
    shoal.run("server", "start")
    try:
        shoal.run("cluster", "create", "web", "--template", "local-web", "--size", "2",
                  "--wait")
        shoal.run("cluster", "restart", "web", "--wait")
        wait_for("both healthy", lambda: [r["state"] for r in shoal.json(
            "cluster", "health", "web")] == ["healthy", "healthy"])
        request = urllib.request.Request(shoal.url + "/api/v1/metrics",
                                         headers={"Authorization": "Bearer " + shoal.token})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain")
            text = reply.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
        db = sqlite3.connect(shoal.home / "shoal.db")
        for status, count in db.execute("SELECT status, COUNT(*) FROM tasks WHERE action !="
                                        " 'JOIN' GROUP BY status"):
            assert samples["shoal_tasks", (("status", status),)] == count
        for kind, count in db.execute("SELECT kind, COUNT(*) FROM operations GROUP BY kind"):
            assert samples["shoal_operations_total", (("kind", kind),)] == count
        assert samples["shoal_operations_total", (("kind", "restart"),)] == 1
        finished = db.execute("SELECT COUNT(*) FROM tasks WHERE action = 'START' AND status ="
                              " 'SUCCEEDED'").fetchone()[0]
        assert samples["shoal_task_duration_seconds_count", (("action", "START"),)] == finished
        assert samples["shoal_health_checks_total", (("result", "ok"),)] >= 2
        assert samples["shoal_health_instances", (("state", "healthy"),)] == 2
        assert samples["shoal_poll_calls_total", (("provider", "local"),)] >= 1
        up = {k[1]: v for k, v in samples.items() if k[0] == "shoal_health_up"}
        assert sorted(dict(labels)["service"] for labels in up) == ["web-backend",
                                                                    "web-balancer"]
        assert set(up.values()) == {1.0}
        unauthorized = urllib.request.Request(shoal.url + "/api/v1/metrics")
        try:
            urllib.request.urlopen(unauthorized, timeout=10)
            raise AssertionError("metrics answered without the token")
        except urllib.error.HTTPError as error:
            assert error.code == 401

        # The loop's drift round: a sandbox taken away is seen without anyone asking.
        cluster = shoal.json("cluster", "show", "web")
        root = shoal.home / "nodes" / cluster["id"] / cluster["nodes"][0]["id"]
        root.rename(root.with_name("moved-away"))
        wait_for("DRIFTED", lambda: shoal.json("cluster", "list")[0]["Health"].endswith(
            "DRIFTED"))
        assert "DRIFTED" in shoal.run("cluster", "show", "web").stdout
        root.with_name("moved-away").rename(root)
        wait_for("no drift", lambda: not shoal.json("cluster", "list")[0]["Health"].endswith(
            "DRIFTED"))
        shoal.run("cluster", "delete", "web", "--wait")
    finally:
        shoal.run("server", "stop")


def test_a_service_stopped_on_purpose_is_not_restarted(shoal):
    shoal.run("cluster", "create", "kv", "--template", "local-kv", "--size", "2", "--wait")
    wait_for("both healthy", lambda: [r["state"] for r in shoal.json(
        "cluster", "health", "kv")] == ["healthy", "healthy"])
    shoal.run("cluster", "stop", "kv", "--service", "kv-replica", "--wait")
    rows = wait_for("the replica's row says stopped", lambda: (lambda h: "stopped by an "
                    "operation" in h[1]["output"] and h)(shoal.json("cluster", "health", "kv")))
    assert rows[1]["state"] == "unknown" and rows[0]["state"] == "healthy"
    time.sleep(12)  # over two intervals of the shipped check (5 s): no failing, no restart
    assert [t["Action"] for t in shoal.json("task", "list", "kv")] == ["STOP"]
    assert "supervision" not in events(shoal, "kv")
    shoal.run("cluster", "start", "kv", "--wait")
    wait_for("healthy again", lambda: [r["state"] for r in shoal.json(
        "cluster", "health", "kv")] == ["healthy", "healthy"])
