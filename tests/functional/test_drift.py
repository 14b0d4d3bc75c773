"""Drift for real: a container removed through the engine is reported missing and ``--repair``
brings the cluster back to its size with its services answering; on EC2 (moto), an instance
terminated out of band is reported, and one tagged with the cluster that no node holds is an
orphan, found with one DescribeInstances and deleted on request."""

import time

import pytest

from tests.aws_fakes import ec2_client
from tests.conftest import Shoal
from tests.containers import docker_client, labelled  # noqa: F401
from tests.functional.test_aws_clusters import moto, proxy, servers, sshd, start  # noqa: F401
from tests.functional.test_docker import (_catalog, _cluster_id, _page, _remove_leftovers,
                                          credentials)  # noqa: F401


@pytest.fixture
def shoal(tmp_path, docker_client, credentials):  # noqa: F811
    # test_docker's server, with node facts read every 2 s.
    client = Shoal(tmp_path / "home", default_catalog=True, retries=0, poll_base=0.2,
                   health_refresh=1, facts_interval=2)
    client.run("server", "start")
    client.run("catalog", "import", _catalog(tmp_path, credentials))
    yield client
    client.run("server", "stop")
    _remove_leftovers(docker_client, client.home)


def check(shoal, *args):
    return shoal.run("cluster", "check", *args, check=False)


def test_docker_container_removed_is_missing_and_repaired(shoal, docker_client):  # noqa: F811
    shoal.run("cluster", "create", "web", "--template", "boxes", "--size", "3", "--wait")
    cluster_id = _cluster_id(shoal, "web")
    result = check(shoal, "web")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == 3

    before = shoal.json("cluster", "show", "web")["nodes"]
    victim = before[1]
    [container] = [c for c in labelled(docker_client, cluster=cluster_id)[0]
                   if c.attrs["Labels"]["shoal.node"] == victim["id"]]
    docker_client.api.remove_container(container.id, force=True, v=True)

    result = check(shoal, "web")
    assert result.returncode != 0
    assert f"{victim['id']} {container.id}: missing" in result.stdout
    shown = shoal.json("cluster", "show", "web")
    assert shown["drift"]["drifted"] and shown["status"] == "ACTIVE"
    assert [r["Health"].endswith("DRIFTED") for r in shoal.json("cluster", "list")] == [True]
    assert "drift: " + victim["id"] + " missing" in shoal.run("cluster", "events", "web").stdout

    # Without a terminal and without --yes, nothing runs.
    refused = shoal.fails("cluster", "check", "web", "--repair")
    assert "--yes" in refused.stderr and f"{victim['id']} CREATE" in refused.stderr
    shoal.run("cluster", "check", "web", "--repair", "--yes", "--wait")
    tasks = shoal.json("task", "list", "web")
    assert {(t["Node"], t["Action"]) for t in tasks if t["Node"] == victim["id"]} >= {
        (victim["id"], "CREATE"), (victim["id"], "CONFIRM"), (victim["id"], "INSTALL"),
        (victim["id"], "START")}
    assert all(t["Status"] == "SUCCEEDED" for t in tasks)
    after = shoal.json("cluster", "show", "web")
    assert after["status"] == "ACTIVE" and after["size"] == 3
    assert len(labelled(docker_client, cluster=cluster_id)[0]) == 3
    for node in after["nodes"]:
        assert _page(node["address"]) == node["hostname"]
    assert check(shoal, "web").returncode == 0
    # Node facts come through docker exec: the container's /proc and file system.
    deadline = time.monotonic() + 60
    while not all(n["metrics"] for n in shoal.json("cluster", "show", "web")["nodes"]):
        assert time.monotonic() < deadline, "no node facts"
        time.sleep(0.5)
    for node in shoal.json("cluster", "show", "web")["nodes"]:
        assert node["metrics"]["memory_total"] > 0 and node["metrics"]["disk_total"] > 0
    assert not shoal.json("cluster", "show", "web")["drift"]["drifted"]

    shoal.run("cluster", "delete", "web", "--wait")
    assert labelled(docker_client, cluster=cluster_id) == ([], [])


def test_ec2_terminated_instance_and_orphan(tmp_path, proxy, sshd, servers, moto):  # noqa: F811
    shoal = start(tmp_path, proxy, sshd)
    servers.append(shoal)
    shoal.run("cluster", "create", "web", "--template", "web", "--size", "3", "--wait")
    cluster = shoal.json("cluster", "show", "web")
    calls = proxy.calls["DescribeInstances"]
    assert check(shoal, "web").returncode == 0
    assert proxy.calls["DescribeInstances"] == calls + 1  # one call for the whole cluster

    ec2 = ec2_client(moto)
    instances = {i["InstanceId"]: i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:shoal:cluster", "Values": [cluster["id"]]}])["Reservations"]
        for i in r["Instances"]}
    victim = sorted(instances)[0]
    ec2.terminate_instances(InstanceIds=[victim])
    orphan = ec2.run_instances(ImageId="ami-12345678", InstanceType="t3.micro", MinCount=1,
                               MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                   {"Key": "shoal:cluster", "Value": cluster["id"]},
                                   {"Key": "shoal:node", "Value": "n7"}]}]
                               )["Instances"][0]["InstanceId"]

    calls = proxy.calls["DescribeInstances"]
    result = check(shoal, "web")
    assert proxy.calls["DescribeInstances"] == calls + 1
    assert result.returncode != 0
    assert f"{victim}: missing" in result.stdout
    assert f"orphan {orphan} (running, node n7)" in result.stdout
    assert "--delete-orphans" in result.stderr
    assert shoal.json("cluster", "show", "web")["drift"]["orphans"][0]["resource_id"] == orphan

    result = check(shoal, "web", "--delete-orphans")
    assert f"deleted orphan {orphan}" in result.stdout
    state = ec2.describe_instances(InstanceIds=[orphan])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] in ("shutting-down", "terminated")
    result = check(shoal, "web")
    assert "orphan" not in result.stdout and f"{victim}: missing" in result.stdout
    shoal.run("cluster", "delete", "web", "--wait")
