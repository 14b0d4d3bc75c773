"""Health declarations in the catalog, the restart plan, drift comparison, node facts parsing,
and the checks themselves against real listeners on loopback."""

import http.server
import socket
import threading

import pytest

from cluster_server import catalog, planner
from cluster_server.errors import ValidationError
from cluster_server.health import checks, drift, facts
from cluster_server.plugins import ActionResult, NodeInfo, NodeState


def service(**extra):
    body = {"name": "web", "provisioner": {"actions": {}}}
    for key, value in extra.items():
        if key == "health":
            body["provisioner"]["health"] = value
        else:
            body[key] = value
    return body


@pytest.mark.parametrize("extra, field, reason", [
    ({"health": {"type": "udp", "port": 1}}, "provisioner.health.type", "must be one of"),
    ({"health": {"type": "http"}}, "provisioner.health.url", "is required"),
    ({"health": {"type": "tcp", "port": 70000}}, "provisioner.health.port",
     "must be between 1 and 65535"),
    ({"health": {"type": "command", "command": "curl x"}}, "provisioner.health.command",
     "must be a list"),
    ({"health": {"type": "command", "command": []}}, "provisioner.health.command",
     "at least 1"),
    ({"health": {"type": "tcp", "port": 80, "interval": 0}}, "provisioner.health.interval",
     "must be more than 0"),
    ({"health": {"type": "tcp", "port": 80, "retries": 0}}, "provisioner.health.retries",
     "must be between 1 and 100"),
    ({"health": {"type": "http", "url": "x", "expect": 200}}, "provisioner.health.expect",
     "is not a known key"),
    ({"health": {"type": "http", "url": "http://%ip.service.%/"}}, "provisioner.health",
     "macro"),
    ({"restart": "always"}, "restart", "must be one of: never, on-failure"),
    ({"max_restarts": -1}, "max_restarts", "must be between 0 and 1000"),
    ({"window": "5m"}, "window", "must be a number"),
])
def test_bad_health_and_restart_fields_name_the_field(extra, field, reason):
    with pytest.raises(ValidationError) as raised:
        catalog.validate("service", service(**extra))
    assert raised.value.details["field"] == field
    assert reason in raised.value.details["reason"]


def test_shipped_services_declare_health_and_supervision():
    entities = catalog.read_directory(catalog.DEFAULT_CATALOG)
    catalog.validate_all(entities)
    services = {body["name"]: body for kind, body in entities if kind == "service"}
    for name in ("web-backend", "web-balancer", "kv-primary", "kv-replica"):
        assert services[name]["provisioner"]["health"]["type"] in ("http", "tcp")
        assert services[name]["restart"] == "on-failure"


def test_restart_plan_is_stop_then_start_of_that_instance_only():
    services = {"db": {"provisioner": {"actions": {"start": {}, "stop": {}}}},
                "app": {"dependencies": {"runtime": {"requires": ["db"]}},
                        "provisioner": {"actions": {"start": {}, "stop": {}}}}}
    tasks = planner.plan_restart([("n2", "app")], services)
    assert [(t.id, t.depends_on) for t in tasks] == [("n2:stop:app", ()),
                                                      ("n2:start:app", ("n2:stop:app",))]


def node(node_id, resource_id, address="10.0.0.1", **extra):
    return {"id": node_id, "facts": {"resource": {"resource_id": resource_id, "addresses": {
        "access_v4": address}, "extra": extra}}}


def test_drift_finds_missing_stopped_changed_and_orphans():
    nodes = [node("n1", "i-1"), node("n2", "i-2"), node("n3", "i-3"),
             node("n4", "i-4", instance_type="t3.small"), {"id": "n5", "facts": {}}]
    held = [NodeInfo("i-2", NodeState.FAILED, error="instance stopped"),
            NodeInfo("i-3", NodeState.RUNNING, addresses={"access_v4": "10.0.0.9"}),
            NodeInfo("i-4", NodeState.RUNNING, addresses={"access_v4": "10.0.0.1"},
                     extra={"instance_type": "t3.large"}),
            NodeInfo("i-9", NodeState.RUNNING, extra={"node_id": "n1"})]
    report = drift.compare(nodes, held)
    assert report["drifted"]
    assert [(n["node"], n["state"]) for n in report["nodes"]] == [
        ("n1", "missing"), ("n2", "stopped"), ("n3", "changed"), ("n4", "changed")]
    assert "10.0.0.1 -> 10.0.0.9" in report["nodes"][2]["detail"]
    assert "t3.small -> t3.large" in report["nodes"][3]["detail"]
    assert report["orphans"] == [{"resource_id": "i-9", "state": "running", "node": "n1",
                                  "address": ""}]
    clean = drift.compare([node("n1", "i-1")], [NodeInfo("i-1", NodeState.RUNNING,
                                                         addresses={"access_v4": "10.0.0.1"})])
    assert not clean["drifted"] and clean["nodes"][0]["state"] == "ok"


def test_facts_parse_proc_and_df():
    proc = ("0.52 0.40 0.31 2/345 6789\nMemTotal:  2000 kB\nMemFree:  500 kB\n"
            "MemAvailable:  1000 kB\n")
    assert facts.parse_proc(proc) == {"load1": 0.52, "load5": 0.40, "load15": 0.31,
                                      "memory_total": 2048000, "memory_used": 1024000,
                                      "memory_pct": 50.0}
    df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 100 25 75 25% /\n"
    assert facts.parse_df(df) == {"disk_total": 102400, "disk_used": 25600, "disk_pct": 25.0}
    assert facts.parse_df("") == {}


CTX = {"cluster": {"id": "c", "name": "c"}, "self": "n1",
       "nodes": [{"id": "n1", "hostname": "h", "services": ["web"],
                  "addresses": {"bind_v4": "127.0.0.1", "access_v4": "127.0.0.1"}}]}


@pytest.fixture
def web():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_http_and_tcp_checks_against_real_listeners(web):
    ok, output = checks.run({"type": "http", "url": f"http://%ip.self%:{web}/ok"}, CTX, None)
    assert ok and "200" in output
    ok, output = checks.run({"type": "http", "url": f"http://%ip.self%:{web}/down"}, CTX, None)
    assert not ok and "503, not 200" in output
    assert checks.run({"type": "tcp", "port": web}, CTX, None)[0]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    ok, output = checks.run({"type": "tcp", "port": port, "timeout": 1}, CTX, None)
    assert not ok and "ConnectionRefused" in output


def test_command_check_goes_through_the_transport_with_a_timeout():
    seen = []

    class Transport:
        def run(self, argv, env=None, stdin=None, cwd=None):
            seen.append(argv)
            return ActionResult(124 if "slow" in argv else 0, "fine\n")

    assert checks.run({"type": "command", "command": ["probe", "%ip.self%"], "timeout": 3},
                      CTX, Transport) == (True, "fine")
    assert seen == [["timeout", "3", "probe", "127.0.0.1"]]
    ok, output = checks.run({"type": "command", "command": ["slow"]}, CTX, Transport)
    assert not ok and "timed out after 5 s" in output
