"""Clusters on Compute Engine through the real CLI and server: the gcp provider against the fake
Compute REST API (tests/fake_gce.py) on loopback, with a real service-account key.

Node bootstrap and services go over SSH to a local test sshd (the provider's SSH address
override). In every case the operation ends with exactly the requested nodes, or rolled back with
no instance and no firewall rule left: listed in the fake to prove it.
"""

import getpass

import pytest

from tests.cloudkit import (isolate, kill_server, marks_of, wait_finished, wait_for,
                            write_catalog)
from tests.conftest import Shoal
from tests.fake_gce import FakeGCE, service_account_file
from tests.sshd import SSHHost

NOTHING = {"instances": [], "firewalls": []}


@pytest.fixture(scope="module")
def sshd():
    with SSHHost() as host:
        yield host


@pytest.fixture
def fake(sshd):
    with FakeGCE(polls_per_state=2) as fake:
        authorized = f"{sshd.dir}/authorized_keys"

        def boot(instance):  # the guest agent installs the metadata's ssh-keys at boot
            with open(authorized, "a") as f:
                for item in instance["metadata"]["items"]:
                    if item["key"] == "ssh-keys":
                        f.write(item["value"].split(":", 1)[1] + "\n")

        fake.on_running.append(boot)
        yield fake


@pytest.fixture
def servers():
    started = []
    yield started
    for shoal in started:
        shoal.run("server", "stop")


def start(tmp_path, fake, sshd, servers, retries=0, setup=False, **fields):
    shoal = Shoal(tmp_path / "home", retries=retries, retry_backoff=0.05, poll_base=0.05)
    isolate(shoal, tmp_path)
    shoal.run("server", "start")
    servers.append(shoal)
    key_file = service_account_file(str(tmp_path), fake)
    provider = {"zone_name": "us-central1-a", "ssh_cidr": "127.0.0.1/32",
                "ssh_address_override": f"{sshd.address}:{sshd.port}",
                "workdir": str(tmp_path / "work"), **fields}
    if setup:
        shoal.run("setup", "gcp", "--credentials", key_file, "--api-endpoint", fake.url)
    else:
        provider.update(credentials_file=key_file, api_endpoint=fake.url,
                        google_project=fake.project)
    shoal.marks = tmp_path / "marks"
    shoal.marks.mkdir()
    write_catalog(tmp_path / "catalog", "gce", "gcp", {k: v for k, v in provider.items() if v},
                  {"flavor": "e2-small", "cost": "0.01"},
                  {"image": "debian-12", "sshuser": getpass.getuser()}, shoal.marks)
    shoal.run("catalog", "import", tmp_path / "catalog")
    return shoal


def label(shoal, name):
    return shoal.json("cluster", "show", name)["id"]


def test_a_cluster_on_gce_uses_setup_credentials_and_leaves_nothing(tmp_path, fake, sshd,
                                                                   servers):
    shoal = start(tmp_path, fake, sshd, servers, setup=True)
    shoal.run("cluster", "create", "web1", "--template", "web", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "web1")
    assert cluster["status"] == "ACTIVE" and len(cluster["nodes"]) == 3
    found = fake.leftovers(cluster["id"])
    assert len(found["instances"]) == 3 and found["firewalls"] == [f"shoal-{cluster['id']}-ssh"]
    assert fake.firewalls[found["firewalls"][0]]["sourceRanges"] == ["127.0.0.1/32"]
    assert fake.inserts == 3
    marks = marks_of(shoal.marks)
    assert len(marks) == 3 and all(peers == sorted(marks) for peers in marks.values())
    shoal.run("cluster", "delete", "web1", "--wait")
    assert fake.leftovers(cluster["id"]) == NOTHING and fake.leftovers() == NOTHING
    assert not (shoal.home / "keys" / "gce" / cluster["id"]).exists()
    # Operations were polled by Shoal itself, on the fake: never by the library.
    assert fake.calls["globalOperations.get"] >= 2


@pytest.mark.parametrize("fault", ["http", "operation"])
def test_the_second_insert_fails(tmp_path, fake, sshd, servers, fault):
    shoal = start(tmp_path, fake, sshd, servers)
    fake.fail_insert = {2: fault}
    result = shoal.run("cluster", "create", "web2", "--template", "web", "--size", "3", "--wait",
                       check=False)
    cluster = shoal.json("cluster", "show", "web2")
    if fault == "http":  # refused at once (quota), final with no retries: rolled back
        assert result.returncode != 0 and cluster["status"] == "FAILED"
        assert "Quota 'CPUS' exceeded" in cluster["operation"]["error"]
        assert fake.leftovers() == NOTHING
    else:  # accepted, then failed in its operation: the node is made again
        assert result.returncode == 0 and cluster["status"] == "ACTIVE"
        assert len(fake.leftovers(cluster["id"])["instances"]) == 3 and fake.inserts == 4
        shoal.run("cluster", "delete", "web2", "--wait")
        assert fake.leftovers() == NOTHING


def test_an_instance_that_ends_terminated_is_replaced(tmp_path, fake, sshd, servers):
    shoal = start(tmp_path, fake, sshd, servers)
    fake.fail_instance = {1: "Instance terminated by Compute Engine (host error)."}
    shoal.run("cluster", "create", "web3", "--template", "web", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "web3")
    assert cluster["status"] == "ACTIVE" and fake.inserts == 4
    assert len(fake.leftovers(cluster["id"])["instances"]) == 3
    shoal.run("cluster", "delete", "web3", "--wait")
    assert fake.leftovers() == NOTHING


def test_failures_beyond_replacement_roll_back_to_nothing(tmp_path, fake, sshd, servers):
    shoal = start(tmp_path, fake, sshd, servers)
    # The first node's instance fails every time it is made: after 3 replacements, give up.
    fake.fail_instance = {n: "Instance failed to start." for n in (1, 4, 5, 6, 7)}
    result = shoal.run("cluster", "create", "web4", "--template", "web", "--size", "3", "--wait",
                       check=False)
    cluster = shoal.json("cluster", "show", "web4")
    assert result.returncode != 0 and cluster["status"] == "FAILED"
    assert "Instance failed to start." in cluster["operation"]["error"]
    assert fake.leftovers() == NOTHING


def test_a_slow_start_takes_many_polls_one_call_each(tmp_path, fake, sshd, servers):
    shoal = start(tmp_path, fake, sshd, servers)
    fake.polls_per_state = 3  # PROVISIONING 3 looks, STAGING 3, then RUNNING
    shoal.run("cluster", "create", "web5", "--template", "web", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "web5")
    assert cluster["status"] == "ACTIVE"
    # Each node needed 7 looks; one list a round answered for all of them.
    assert 7 <= fake.calls["instances.list"] < 3 * 7
    assert fake.calls["instances.get"] == 0
    shoal.run("cluster", "delete", "web5", "--wait")
    assert fake.leftovers() == NOTHING


def test_the_server_killed_mid_create_resumes_without_duplicates(tmp_path, fake, sshd, servers):
    shoal = start(tmp_path, fake, sshd, servers, retries=1)
    fake.insert_delay = 1.5  # made in the fake, the answer held back
    shoal.run("cluster", "create", "web6", "--template", "web", "--size", "3")
    cid = label(shoal, "web6")
    wait_for(lambda: fake.leftovers(cid)["instances"], "a first instance")
    kill_server(shoal)
    fake.insert_delay = 0
    shoal.run("server", "start")
    cluster = wait_finished(shoal, "web6")
    assert cluster["status"] == "ACTIVE", cluster["operation"]
    assert len(fake.leftovers(cid)["instances"]) == 3 and fake.inserts == 3
    assert len(marks_of(shoal.marks)) == 3
    shoal.run("cluster", "delete", "web6", "--wait")
    assert fake.leftovers() == NOTHING


def test_without_an_ssh_range_nothing_is_made(tmp_path, fake, sshd, servers):
    shoal = start(tmp_path, fake, sshd, servers, ssh_cidr="")
    result = shoal.run("cluster", "create", "web7", "--template", "web", "--size", "2", "--wait",
                       check=False)
    cluster = shoal.json("cluster", "show", "web7")
    assert result.returncode != 0 and cluster["status"] == "FAILED"
    assert "ssh_cidr" in cluster["operation"]["error"]
    assert fake.leftovers() == NOTHING and fake.inserts == 0
