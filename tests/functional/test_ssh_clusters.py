"""A cluster on existing machines: the ssh provider and the shell automator against real sshd
processes on loopback, through the real CLI and server."""

import json

import pytest

from tests.cloudkit import write_catalog
from tests.conftest import Shoal
from tests.sshd import SSHHost


@pytest.fixture
def hosts():
    started = [SSHHost(address=f"127.0.0.{n}") for n in (2, 3, 4)]
    for host in started:
        host.start()
    yield started
    for host in started:
        host.close()


@pytest.fixture
def shoal(tmp_path, hosts):
    client = Shoal(tmp_path / "home", retries=0)
    client.run("server", "start")
    marks = tmp_path / "marks"
    marks.mkdir()
    catalog = write_catalog(tmp_path / "catalog", "onprem", "ssh",
                            {"hosts": json.dumps([h.host_entry for h in hosts])},
                            {"flavor": "box"}, {"image": "os"}, marks)
    client.run("catalog", "import", catalog)
    client.marks = marks
    yield client
    client.run("server", "stop")


def test_cluster_on_ssh_hosts(shoal, hosts):
    shoal.run("cluster", "create", "farm", "--template", "web", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "farm")
    addresses = sorted(n["address"] for n in cluster["nodes"])
    assert addresses == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    for address in addresses:
        assert sorted((shoal.marks / address).read_text().split(",")) == addresses
    starts = [t for t in shoal.json("task", "list", "farm") if t["Action"] == "START"]
    assert len(starts) == 3 and all(t["Status"] == "SUCCEEDED" for t in starts)
    output = shoal.json("task", "show", starts[0]["ID"])["output"]
    assert sorted(output.strip().split(",")) == addresses

    # The pool is exhausted: a fourth node is refused with a clear error, the cluster unchanged.
    shoal.run("cluster", "create", "more", "--template", "web", "--size", "1", "--wait",
              check=False)
    assert shoal.json("cluster", "show", "more")["status"] == "FAILED"

    # Deleting gives the hosts back: a new cluster can take all three again.
    shoal.run("cluster", "delete", "farm", "--wait")
    shoal.run("cluster", "create", "again", "--template", "web", "--size", "3", "--wait")
    shoal.run("cluster", "delete", "again", "--wait")


def test_a_host_whose_key_changed_is_refused(shoal, hosts):
    shoal.run("cluster", "create", "farm", "--template", "web", "--size", "3", "--wait")
    hosts[0].change_host_key()
    result = shoal.run("cluster", "reconfigure", "farm", "--wait", check=False)
    assert result.returncode != 0
    assert "host key" in result.stderr and "changed" in result.stderr
    cluster = shoal.json("cluster", "show", "farm")
    assert cluster["status"] == "INCONSISTENT"
    failed = [t for t in shoal.json("task", "list", "farm") if t["Status"] == "FAILED"]
    assert len(failed) == 1
    assert "refusing" in shoal.json("task", "show", failed[0]["ID"])["output"]
