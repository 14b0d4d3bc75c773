"""The main job, for real: clusters of local sandboxes from the shipped catalog, through the real
CLI and server; pages served by real processes; nothing left behind on delete."""

import json
import os
import time
import urllib.request

import pytest

from tests.conftest import SHOAL, Shoal


@pytest.fixture
def shoal(tmp_path):
    client = Shoal(tmp_path / "home", default_catalog=True)
    client.run("server", "start")
    yield client
    # A test that failed half way must not leave its nodes' processes serving behind it.
    for cluster in client.json("cluster", "list"):
        client.run("cluster", "delete", cluster["Name"], "--wait", check=False)
    client.run("server", "stop")


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def node_processes(home):
    """Processes whose command line or cwd lies in this home's sandboxes."""
    found = []
    nodes = str(home / "nodes")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if nodes in cmdline or cwd.startswith(nodes):
            found.append(pid)
    return found


def balancer_url(shoal, name):
    cluster = shoal.json("cluster", "show", name)
    [link] = [link for link in cluster["links"] if link["label"] == "balancer"]
    return link["url"]


def test_web_cluster_create_serve_resize_delete(shoal):
    result = shoal.run("cluster", "create", "demo", "--template", "local-web", "--size", "3",
                       "--wait")
    assert "create demo: succeeded, 13/13 tasks done" in result.stderr
    cluster = shoal.json("cluster", "show", "demo")
    assert cluster["status"] == "ACTIVE" and cluster["size"] == 3
    backends = {n["id"] for n in cluster["nodes"] if n["services"] == ["web-backend"]}
    assert len(backends) == 2
    url = balancer_url(shoal, "demo")
    answers = [get(url).split()[1] for _ in range(4)]
    assert set(answers) == backends
    assert answers[0] != answers[1] and answers[:2] == answers[2:]  # round robin

    shoal.run("cluster", "resize", "demo", "--size", "5", "--wait")
    cluster = shoal.json("cluster", "show", "demo")
    backends = {n["id"] for n in cluster["nodes"] if n["services"] == ["web-backend"]}
    assert len(backends) == 4
    assert {get(url).split()[1] for _ in range(8)} == backends  # the balancer picked them up

    shoal.run("cluster", "resize", "demo", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "demo")
    backends = {n["id"] for n in cluster["nodes"] if n["services"] == ["web-backend"]}
    assert {get(url).split()[1] for _ in range(6)} == backends and len(backends) == 2

    shoal.run("cluster", "delete", "demo", "--wait")
    assert node_processes(shoal.home) == []
    # Only the provider's own lock file stays; no sandbox, no file of the cluster.
    left = [p.name for p in (shoal.home / "nodes").iterdir()]
    assert left == [".lock"]
    assert shoal.json("cluster", "list") == []
    with pytest.raises(OSError):
        get(url)


def test_kv_cluster_replicates(shoal):
    shoal.run("cluster", "create", "kv", "--template", "local-kv", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "kv")
    links = {link["label"]: link["url"] for link in cluster["links"]}
    request = urllib.request.Request(links["primary"] + "greeting", data=b"hello", method="PUT")
    urllib.request.urlopen(request, timeout=10).close()
    replicas = links["replicas"].split()
    assert len(replicas) == 2
    deadline = time.monotonic() + 10
    while True:
        try:
            if all(get(r + "greeting") == "hello" for r in replicas):
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "replicas never caught up"
        time.sleep(0.2)
    refused = urllib.request.Request(replicas[0] + "x", data=b"no", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(refused, timeout=10)
    assert raised.value.code == 403
    shoal.run("cluster", "stop", "kv", "--service", "kv-primary", "--wait")
    tasks = shoal.json("task", "list", "kv")
    # Stopping the primary stops the replicas that require it, and they stop first.
    stops = [(t["Service"], t["Node"]) for t in tasks if t["Action"] == "STOP"]
    assert {s for s, _ in stops} == {"kv-primary", "kv-replica"}
    shoal.run("cluster", "delete", "kv", "--wait")
    assert node_processes(shoal.home) == []


def test_plan_prints_groups_and_json_gives_the_whole_layout(shoal):
    table = shoal.run("cluster", "plan", "--template", "local-web", "--size", "4")
    assert "web-backend" in table.stdout and "3 |" in table.stdout.replace("  ", " ")
    assert "4 nodes on local" in table.stderr and "CREATE 4" in table.stderr
    summary = shoal.json("cluster", "plan", "--template", "local-web", "--size", "4")
    assert "tasks" not in summary and "nodes" not in summary["layout"]
    plan = json.loads(shoal.run("cluster", "plan", "--template", "local-web", "--size", "4",
                                "-f", "json", "--full").stdout)
    assert len(plan["layout"]["nodes"]) == 4 and plan["summary"] == summary["summary"]
    assert plan["tasks"] and all("depends_on" in t for t in plan["tasks"])
    assert shoal.json("cluster", "list") == []  # planning made nothing


def test_bad_requests_are_clear_and_write_nothing(shoal):
    cases = [
        (("--template", "nope", "--size", "3"), "template 'nope' not found"),
        (("--template", "local-web", "--size", "0"), "size"),
        (("--template", "local-web", "--size", "1"), "local-web"),
        (("--template", "local-web", "--size", "3", "--config", "{bad"), "--config"),
        (("--template", "local-web", "--size", "3", "--services", "ghost"), "ghost"),
        (("--template", "local-web", "--size", "3", "--provider", "nowhere"), "nowhere"),
    ]
    for args, message in cases:
        result = shoal.fails("cluster", "create", "x", *args)
        assert message in result.stderr, (args, result.stderr)
    result = shoal.fails("cluster", "create", "Bad_Name", "--template", "local-web", "--size", "3")
    assert "cluster name" in result.stderr
    assert shoal.json("cluster", "list", "--all") == []
    shoal.run("cluster", "create", "one", "--template", "local-web", "--size", "2", "--wait")
    result = shoal.fails("cluster", "create", "one", "--template", "local-web", "--size", "2")
    assert "already exists" in result.stderr
    shoal.run("cluster", "delete", "one", "--wait")


def test_wait_on_a_terminal_shows_a_line_from_the_start_to_the_end(shoal):
    """As a user sees --wait: a line while the server plans, then the operation's own line,
    rewritten until it ends (pexpect gives the command a terminal)."""
    import pexpect

    args = ["cluster", "create", "tty1", "--template", "local-web", "--size", "2", "--wait"]
    child = pexpect.spawn(SHOAL, args, env=shoal.env, encoding="utf-8", timeout=120)
    try:
        child.expect(r"create tty1: planning \[\d+ s\]")
        child.expect(r"create tty1: \w+, \d+/\d+ tasks done")
        child.expect(r"create tty1: succeeded, (\d+)/\1 tasks done")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    shoal.run("cluster", "delete", "tty1", "--wait")
