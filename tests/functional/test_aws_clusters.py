"""Clusters on EC2 through the real CLI and server: the aws provider against moto's server mode
(in this process; the Shoal server reaches it through a fault-injecting proxy on loopback).

Node bootstrap and services go over SSH to a local test sshd (the provider's SSH address
override), never to the addresses moto hands out. In every case the operation ends with exactly
the requested nodes, or rolled back with no instance, security group or key pair left: listed in
the emulator to prove it.
"""

import getpass
import json

import pytest

from tests.aws_fakes import (CREDENTIALS, EC2Proxy, authorize_key_pairs, ec2_client, leftovers,
                             moto_server)
from tests.cloudkit import (isolate, kill_server, marks_of, wait_finished, wait_for,
                            write_catalog)
from tests.conftest import Shoal
from tests.sshd import SSHHost

NOTHING = {"instances": [], "security_groups": [], "key_pairs": []}


@pytest.fixture(scope="module")
def moto():
    with moto_server() as url:
        ec2_client(url).describe_images(Owners=["amazon"])  # moto loads its AMIs once (~5 s)
        yield url


@pytest.fixture(scope="module")
def sshd():
    with SSHHost() as host:
        yield host


@pytest.fixture
def proxy(moto, sshd):
    with EC2Proxy(moto) as proxy:
        # EC2 puts the key pair's public key on the instance at boot; here the "instance" is
        # the local sshd that the override sends SSH to.
        proxy.on("RunInstances", authorize_key_pairs(moto, f"{sshd.dir}/authorized_keys"))
        yield proxy


def start(tmp_path, proxy, sshd, retries=0, credentials=True, **fields):
    shoal = Shoal(tmp_path / "home", retries=retries, retry_backoff=0.05, poll_base=0.05)
    isolate(shoal, tmp_path)
    shoal.run("server", "start")
    provider = {"aws_region": "us-east-1", "endpoint_url": proxy.url, "ssh_cidr": "127.0.0.1/32",
                "ssh_address_override": f"{sshd.address}:{sshd.port}",
                "workdir": str(tmp_path / "work"), **fields}
    if credentials:
        provider.update(api_user=CREDENTIALS["aws_access_key_id"],
                        api_password=CREDENTIALS["aws_secret_access_key"])
    shoal.marks = tmp_path / "marks"
    shoal.marks.mkdir()
    write_catalog(tmp_path / "catalog", "ec2", "aws", {k: v for k, v in provider.items() if v},
                  {"flavor": "t3.micro", "cost": "0.01"},
                  {"image": "ami-12345678", "sshuser": getpass.getuser()}, shoal.marks)
    shoal.run("catalog", "import", tmp_path / "catalog")
    return shoal


@pytest.fixture
def servers():
    started = []
    yield started
    for shoal in started:
        shoal.run("server", "stop")


def cluster_id(shoal, name):
    return shoal.json("cluster", "show", name)["id"]


def test_a_cluster_on_ec2_uses_setup_credentials_and_leaves_nothing(tmp_path, proxy, sshd,
                                                                   servers, moto):
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "credentials").write_text(
        "[lab]\naws_access_key_id = {aws_access_key_id}\naws_secret_access_key = "
        "{aws_secret_access_key}\n".format(**CREDENTIALS))
    shoal = start(tmp_path, proxy, sshd, credentials=False, aws_region="", endpoint_url="")
    servers.append(shoal)
    # The provider entry names no credentials, region or endpoint: the recorded choice is used.
    shoal.run("setup", "aws", "--profile", "lab", "--region", "us-east-1", "--endpoint-url",
              proxy.url)
    shoal.run("cluster", "create", "web1", "--template", "web", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "web1")
    assert cluster["status"] == "ACTIVE" and len(cluster["nodes"]) == 3
    found = leftovers(moto, cluster["id"])
    assert len(found["instances"]) == 3 and len(found["security_groups"]) == 1
    assert found["key_pairs"] == [f"shoal-{cluster['id']}"]
    assert proxy.calls["RunInstances"] == 3
    # Every node ran its services (over SSH to the local sshd) and knows its peers.
    marks = marks_of(shoal.marks)
    assert len(marks) == 3 and all(peers == sorted(marks) for peers in marks.values())
    group = ec2_client(moto).describe_security_groups(GroupIds=found["security_groups"])[
        "SecurityGroups"][0]
    assert [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]] == [
        "127.0.0.1/32"]
    key_file = shoal.home / "keys" / "ec2" / cluster["id"]
    assert key_file.exists()
    assert "PRIVATE KEY" not in (shoal.home / "server.log").read_text()

    shoal.run("cluster", "delete", "web1", "--wait")
    assert leftovers(moto, cluster["id"]) == NOTHING
    assert not key_file.exists()


@pytest.mark.parametrize("retries", [0, 1])
def test_the_second_launch_fails(tmp_path, proxy, sshd, servers, moto, retries):
    shoal = start(tmp_path, proxy, sshd, retries=retries)
    servers.append(shoal)
    proxy.fail("RunInstances", 2)
    result = shoal.run("cluster", "create", "web2", "--template", "web", "--size", "3", "--wait",
                       check=False)
    cluster = shoal.json("cluster", "show", "web2")
    found = leftovers(moto, cluster["id"])
    if retries == 0:  # the failure is final: everything made so far is removed
        assert result.returncode != 0 and cluster["status"] == "FAILED"
        assert "InstanceLimitExceeded" in cluster["operation"]["error"]
        assert found == NOTHING
    else:  # the retry launches it: exactly the requested nodes
        assert result.returncode == 0 and cluster["status"] == "ACTIVE"
        assert len(found["instances"]) == 3 and proxy.calls["RunInstances"] == 4
        shoal.run("cluster", "delete", "web2", "--wait")
        assert leftovers(moto, cluster["id"]) == NOTHING


def test_an_instance_that_dies_while_pending_is_replaced(tmp_path, proxy, sshd, servers, moto):
    shoal = start(tmp_path, proxy, sshd)
    servers.append(shoal)
    proxy.pending_polls = 10 ** 6  # nothing comes up until the test says so
    shoal.run("cluster", "create", "web3", "--template", "web", "--size", "3")
    cid = cluster_id(shoal, "web3")
    first = wait_for(lambda: len(leftovers(moto, cid)["instances"]) == 3 and
                     leftovers(moto, cid)["instances"], "3 instances")
    ec2_client(moto).terminate_instances(InstanceIds=[first[0]])
    # Noticed at the next poll: the dead one is deleted and a new instance launched.
    wait_for(lambda: proxy.calls["RunInstances"] == 4, "a replacement")
    proxy.pending_polls = 0
    cluster = wait_finished(shoal, "web3")
    assert cluster["status"] == "ACTIVE", cluster["operation"]
    live = leftovers(moto, cid)["instances"]
    assert len(live) == 3 and first[0] not in live and proxy.calls["RunInstances"] == 4
    shoal.run("cluster", "delete", "web3", "--wait")
    assert leftovers(moto, cid) == NOTHING


def test_a_slow_start_takes_many_polls_one_call_each(tmp_path, proxy, sshd, servers, moto):
    shoal = start(tmp_path, proxy, sshd)
    servers.append(shoal)
    proxy.pending_polls = 6
    shoal.run("cluster", "create", "web4", "--template", "web", "--size", "3", "--wait")
    cid = cluster_id(shoal, "web4")
    assert len(leftovers(moto, cid)["instances"]) == 3
    # 3 lookups by token at create, then one call a round for all pending nodes: each node
    # needed 7 looks, but far fewer than 3 × 7 calls were made.
    assert 7 <= proxy.calls["DescribeInstances"] - 3 < 3 * 7
    shoal.run("cluster", "delete", "web4", "--wait")
    assert leftovers(moto, cid) == NOTHING


def test_the_server_killed_mid_create_resumes_without_duplicates(tmp_path, proxy, sshd, servers,
                                                                 moto):
    shoal = start(tmp_path, proxy, sshd, retries=1)
    servers.append(shoal)
    proxy.delays["RunInstances"] = 1.5  # launched in the emulator, the answer held back
    shoal.run("cluster", "create", "web5", "--template", "web", "--size", "3")
    cid = cluster_id(shoal, "web5")
    wait_for(lambda: leftovers(moto, cid)["instances"], "a first instance")
    kill_server(shoal)
    proxy.delays.clear()
    shoal.run("server", "start")
    cluster = wait_finished(shoal, "web5")
    assert cluster["status"] == "ACTIVE", cluster["operation"]
    live = leftovers(moto, cid)["instances"]
    assert len(live) == 3 and proxy.calls["RunInstances"] == 3  # each node launched once
    # The create cut short by the kill found its instance by token instead of launching again.
    assert "from an earlier attempt" in (shoal.home / "server.log").read_text()
    assert len(marks_of(shoal.marks)) == 3
    shoal.run("cluster", "delete", "web5", "--wait")
    assert leftovers(moto, cid) == NOTHING


def test_without_an_ssh_range_nothing_is_made(tmp_path, proxy, sshd, servers, moto):
    shoal = start(tmp_path, proxy, sshd, ssh_cidr="")
    servers.append(shoal)
    result = shoal.run("cluster", "create", "web6", "--template", "web", "--size", "2", "--wait",
                       check=False)
    assert result.returncode != 0
    cluster = shoal.json("cluster", "show", "web6")
    assert cluster["status"] == "FAILED" and "ssh_cidr" in cluster["operation"]["error"]
    assert leftovers(moto, cluster["id"]) == NOTHING and proxy.calls["RunInstances"] == 0
    # Secrets in the provider entry are stored but never shown.
    shown = json.dumps(shoal.json("provider", "show", "ec2"))
    assert CREDENTIALS["aws_secret_access_key"] not in shown and "********" in shown
