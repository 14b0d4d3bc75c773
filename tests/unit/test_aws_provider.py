"""The aws provider against moto's server mode on loopback, with real boto3 clients."""

import os
import stat
import uuid

import boto3
import pytest

from cluster_server.errors import PluginError, ProviderError
from cluster_server.plugins import NodeInfo, NodeSpec, NodeState
from extensions.providers import aws
from extensions.providers.aws import AWSProvider
from tests.aws_fakes import (CREDENTIALS, EC2Proxy, authorize_key_pairs, ec2_client, leftovers,
                             moto_server)
from tests.netguard import loopback_only  # noqa: F401  (fixture)
from tests.sshd import ssh_host  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def moto():
    with moto_server() as url:
        ec2_client(url).describe_images(Owners=["amazon"])  # moto loads its AMIs once (~5 s)
        yield url


@pytest.fixture
def proxy(moto, loopback_only, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SHOAL_POLL_BASE", "0.05")  # waits in cleanup_cluster
    with EC2Proxy(moto) as proxy:
        yield proxy


@pytest.fixture
def cluster():
    return f"c-{uuid.uuid4().hex[:12]}"


def make(home, proxy, **fields):
    base = {"aws_region": "us-east-1", "api_user": CREDENTIALS["aws_access_key_id"],
            "api_password": CREDENTIALS["aws_secret_access_key"], "endpoint_url": proxy.url,
            "ssh_cidr": "198.51.100.7/32", "wait_for_ssh": False}
    return AWSProvider("ec2", {**base, **fields}, str(home))


def spec(cluster, node, generation=0, image="ami-12345678", user="admin"):
    return NodeSpec(cluster_id=cluster, node_id=node, hostname=f"{node}.{cluster}.example",
                    hardwaretype="small", imagetype="debian", flavor={"flavor": "t3.micro"},
                    image={"image": image, "sshuser": user}, token=f"{cluster}-{node}-{generation}")


def test_create_makes_key_pair_group_and_tagged_instance_once_per_token(tmp_path, proxy, cluster,
                                                                        moto):
    provider = make(tmp_path, proxy)
    info = provider.create(spec(cluster, "n1"))
    assert info.state == NodeState.PENDING and info.resource_id.startswith("i-")
    assert info.extra["cluster_id"] == cluster and info.extra["token"] == f"{cluster}-n1-0"
    # A second create with the same token (a retry, or a server restarted after a crash)
    # finds the first instance instead of launching another.
    assert provider.create(spec(cluster, "n1")).resource_id == info.resource_id
    assert make(tmp_path, proxy).create(spec(cluster, "n1")).resource_id == info.resource_id
    assert proxy.calls["RunInstances"] == 1
    run = [params for action, params in proxy.log if action == "RunInstances"][0]
    assert run["ClientToken"] == f"{cluster}-n1-0"

    ec2 = ec2_client(moto)
    instance = ec2.describe_instances(InstanceIds=[info.resource_id])["Reservations"][0][
        "Instances"][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["shoal:cluster"] == cluster and tags["shoal:node"] == "n1"
    assert tags["Name"] == f"n1.{cluster}.example"
    assert instance["KeyName"] == f"shoal-{cluster}"
    group = ec2.describe_security_groups(GroupIds=[instance["SecurityGroups"][0]["GroupId"]])[
        "SecurityGroups"][0]
    assert group["GroupName"] == f"shoal-{cluster}"
    rules = [(p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
             for p in group["IpPermissions"]]
    assert rules == [(22, 22, ["198.51.100.7/32"])]  # SSH from the caller's range only

    # The private key stays here, private; the cloud holds only the public half.
    key_file = info.ssh["key_file"]
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(key_file)).st_mode) == 0o700
    pair = ec2.describe_key_pairs(KeyNames=[f"shoal-{cluster}"], IncludePublicKey=True)[
        "KeyPairs"][0]
    with open(key_file + ".pub") as f:
        assert pair["PublicKey"].split()[:2] == f.read().split()[:2]
    assert "PRIVATE" not in repr(info.to_dict())


def test_create_is_refused_without_an_ssh_range(tmp_path, proxy, cluster, moto):
    provider = make(tmp_path, proxy, ssh_cidr="")
    with pytest.raises(PluginError) as caught:
        provider.create(spec(cluster, "n1"))
    assert "ssh_cidr" in caught.value.message and "required" in caught.value.message
    with pytest.raises(PluginError):
        make(tmp_path, proxy, ssh_cidr="not-a-range").create(spec(cluster, "n1"))
    assert proxy.calls["RunInstances"] == 0
    assert leftovers(moto, cluster) == {"instances": [], "security_groups": [], "key_pairs": []}


def test_fields_from_the_catalog_reach_run_instances(tmp_path, proxy, cluster, moto):
    ec2 = ec2_client(moto)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    extra_group = ec2.create_security_group(GroupName=f"extra-{cluster}", Description="extra")[
        "GroupId"]
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto, **CREDENTIALS)
    iam.create_instance_profile(InstanceProfileName=f"nodes-{cluster}")
    provider = make(tmp_path, proxy, aws_root_ebs_size="40", subnet_id=subnet,
                    iam_instance_profile=f"nodes-{cluster}", security_group_ids=extra_group)
    info = provider.create(spec(cluster, "n1", image=image["ImageId"]))
    run = [params for action, params in proxy.log if action == "RunInstances"][0]
    assert run["BlockDeviceMapping.1.DeviceName"] == image["RootDeviceName"]
    assert run["BlockDeviceMapping.1.Ebs.VolumeSize"] == "40"
    assert run["IamInstanceProfile.Name"] == f"nodes-{cluster}"
    assert run["SubnetId"] == subnet
    assert {run["SecurityGroupId.1"], run["SecurityGroupId.2"]} == {
        extra_group, provider._cluster(cluster)["group_id"]}
    provider.delete(info)
    provider.cleanup_cluster(cluster)
    ec2.delete_security_group(GroupId=extra_group)


def test_coopr_fields_reach_run_instances(tmp_path, proxy, cluster, moto):
    # Coopr's names: a group by name, a data volume, a placement group, dedicated tenancy.
    ec2 = ec2_client(moto)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]
    named = ec2.create_security_group(GroupName=f"named-{cluster}", Description="named")["GroupId"]
    # (Not made first: moto's CreatePlacementGroup fails with a 500, and RunInstances does not
    # check the name. What is checked is what goes on the wire.)
    provider = make(tmp_path, proxy, security_groups=f"named-{cluster}", aws_ebs_size="100",
                    aws_ebs_delete_on_term="false", placement_group=f"pg-{cluster}",
                    dedicated_instance="true")
    info = provider.create(spec(cluster, "n1", image=image["ImageId"]))
    run = [params for action, params in proxy.log if action == "RunInstances"][0]
    assert (run["BlockDeviceMapping.1.DeviceName"], run["BlockDeviceMapping.1.Ebs.VolumeSize"],
            run["BlockDeviceMapping.1.Ebs.DeleteOnTermination"]) == ("/dev/sdf", "100", "false")
    assert "BlockDeviceMapping.2.DeviceName" not in run  # the root volume is left as it is
    assert (run["Placement.GroupName"], run["Placement.Tenancy"]) == (f"pg-{cluster}", "dedicated")
    assert named in {run["SecurityGroupId.1"], run["SecurityGroupId.2"]}
    # The names are looked up once for the provider, not once per node.
    looked_up = provider.calls["describe_security_groups"]
    other = provider.create(spec(cluster, "n2", image=image["ImageId"]))
    assert provider.calls["describe_security_groups"] == looked_up
    run = [params for action, params in proxy.log if action == "RunInstances"][-1]
    assert named in {run["SecurityGroupId.1"], run["SecurityGroupId.2"]}
    for each in (info, other):
        provider.delete(each)
    provider.cleanup_cluster(cluster)
    ec2.delete_security_group(GroupId=named)


@pytest.mark.parametrize("fields, field", [
    ({"security_groups": "no-such-group"}, "security_groups"),
    ({"aws_ebs_size": "lots"}, "aws_ebs_size"),
    ({"ssh_keypair": "my-key"}, "ssh_keypair"),
])
def test_bad_or_unsupported_fields_are_refused_before_an_instance_is_made(
        tmp_path, proxy, cluster, moto, fields, field):
    image = ec2_client(moto).describe_images(Owners=["amazon"])["Images"][0]
    provider = make(tmp_path, proxy, **fields)
    with pytest.raises(PluginError) as error:
        provider.create(spec(cluster, "n1", image=image["ImageId"]))
    assert error.value.details["field"] == field and field in str(error.value)
    made = {"RunInstances", "CreateSecurityGroup", "ImportKeyPair", "CreateKeyPair"}
    assert not [a for a, _ in proxy.log if a in made]


def test_describe_is_one_call_per_page_for_many_pending_nodes(tmp_path, proxy, moto,
                                                               monkeypatch):
    clusters = [f"c-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    provider = make(tmp_path, proxy)
    infos = [provider.create(spec(clusters[i % 2], f"n{i}")) for i in range(24)]
    proxy.pending_polls = 2
    before = proxy.calls["DescribeInstances"]
    for round_ in range(2):
        states = provider.describe(infos)
        assert {s.state for s in states.values()} == {NodeState.PENDING}
    states = provider.describe(infos)
    assert {s.state for s in states.values()} == {NodeState.RUNNING}
    assert proxy.calls["DescribeInstances"] - before == 3  # 3 rounds, 24 nodes, 2 clusters
    assert states[infos[0].resource_id].addresses["bind_v4"].startswith("10.")

    small_pages = make(tmp_path, proxy, describe_page_size=5)
    before = proxy.calls["DescribeInstances"]
    small_pages.describe(infos)
    assert proxy.calls["DescribeInstances"] - before == 5  # 24 instances / 5 per page
    filters = [params for action, params in proxy.log if action == "DescribeInstances"][-1]
    assert filters["Filter.1.Name"] == "instance-id"

    # Past the 200 values a filter takes, the clusters' tag selects them: still one call a page.
    monkeypatch.setattr(aws, "FILTER_VALUES", 10)
    before = proxy.calls["DescribeInstances"]
    assert len(provider.describe(infos)) == 24
    assert proxy.calls["DescribeInstances"] - before == 1
    filters = [params for action, params in proxy.log if action == "DescribeInstances"][-1]
    assert filters["Filter.1.Name"] == "tag:shoal:cluster"
    for cluster in clusters:
        for info in provider.find(cluster):
            provider.delete(info)
        provider.cleanup_cluster(cluster)
        assert leftovers(moto, cluster) == {"instances": [], "security_groups": [],
                                            "key_pairs": []}


def test_an_instance_terminated_while_pending_is_failed_with_its_reason(tmp_path, proxy, cluster,
                                                                        moto):
    provider = make(tmp_path, proxy)
    infos = [provider.create(spec(cluster, f"n{i}")) for i in range(2)]
    proxy.pending_polls = 100
    ec2_client(moto).terminate_instances(InstanceIds=[infos[0].resource_id])
    states = provider.describe(infos)
    failed = states[infos[0].resource_id]
    assert failed.state == NodeState.FAILED
    assert failed.error.startswith("instance terminated")
    assert states[infos[1].resource_id].state == NodeState.PENDING


def test_delete_then_cleanup_leaves_nothing(tmp_path, proxy, cluster, moto):
    provider = make(tmp_path, proxy)
    infos = [provider.create(spec(cluster, f"n{i}")) for i in range(3)]
    assert len(leftovers(moto, cluster)["instances"]) == 3
    provider.delete(infos[0])
    provider.delete(infos[0])  # already terminating: not an error
    provider.delete(NodeInfo(resource_id="i-0123456789abcdef0"))  # never existed
    assert sorted(i.resource_id for i in provider.find(cluster)) == sorted(
        i.resource_id for i in infos[1:])
    provider.cleanup_cluster(cluster)  # terminates what is left, waits, then group and key
    assert leftovers(moto, cluster) == {"instances": [], "security_groups": [], "key_pairs": []}
    assert not os.path.exists(infos[0].ssh["key_file"])
    provider.cleanup_cluster(cluster)  # twice: nothing to do, no error


def test_create_fails_with_the_clouds_error(tmp_path, proxy, cluster, moto):
    provider = make(tmp_path, proxy)
    proxy.fail("RunInstances", 1)
    with pytest.raises(ProviderError) as caught:
        provider.create(spec(cluster, "n1"))
    assert caught.value.message == ("aws run_instances: InstanceLimitExceeded: Your quota allows "
                                    "for 0 more running instance(s).")
    provider.cleanup_cluster(cluster)
    assert leftovers(moto, cluster) == {"instances": [], "security_groups": [], "key_pairs": []}


def test_confirm_pins_the_host_key_of_the_override_and_connects_there(tmp_path, proxy, cluster,
                                                                      moto, ssh_host):  # noqa
    proxy.on("RunInstances", authorize_key_pairs(moto, os.path.join(ssh_host.dir,
                                                                    "authorized_keys")))
    provider = make(tmp_path, proxy, wait_for_ssh=True, workdir=str(tmp_path / "work"),
                    ssh_address_override=f"{ssh_host.address}:{ssh_host.port}")
    info = provider.create(spec(cluster, "n1", user=ssh_host.user))
    running = provider.describe([info])[info.resource_id]
    assert running.state == NodeState.RUNNING
    assert running.ssh["host_key"] == ssh_host.host_key
    assert (running.ssh["host"], running.ssh["port"]) == (ssh_host.address, ssh_host.port)
    assert running.addresses["access_v4"] != ssh_host.address  # moto's, never connected to
    transport = provider.transport(running)
    try:
        assert transport.run(["echo", "hello"]).stdout == "hello\n"
    finally:
        transport.close()
    provider.delete(running)
    provider.cleanup_cluster(cluster)


def test_a_node_whose_ssh_does_not_answer_yet_stays_pending(tmp_path, proxy, cluster):
    from tests.sshd import free_port

    provider = make(tmp_path, proxy, wait_for_ssh=True, connect_timeout=1,
                    ssh_address_override=f"127.0.0.1:{free_port()}")
    info = provider.create(spec(cluster, "n1"))
    state = provider.describe([info])[info.resource_id]
    assert state.state == NodeState.PENDING and state.extra["waiting"].startswith("SSH:")
    provider.delete(info)
    provider.cleanup_cluster(cluster)


def test_secrets_are_declared_sensitive():
    sensitive = {name for name, field in AWSProvider.fields.items() if field.sensitive}
    assert sensitive == {"api_user", "api_password", "api_session_token"}


def test_inventory_of_many_clusters_is_one_call_per_page(tmp_path, proxy, moto):
    clusters = [f"c-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    provider = make(tmp_path, proxy, describe_page_size=5)
    made = {c: sorted(provider.create(spec(c, f"n{i}")).resource_id for i in range(4))
            for c in clusters}
    provider.delete(NodeInfo(resource_id=made[clusters[1]][0]))  # terminated: not held
    before = proxy.calls["DescribeInstances"]
    held = provider.inventory(clusters[:2])
    assert proxy.calls["DescribeInstances"] - before == 2  # 7 instances of 2 clusters, 5 a page
    assert {c: sorted(i.resource_id for i in infos) for c, infos in held.items()} == {
        clusters[0]: made[clusters[0]], clusters[1]: made[clusters[1]][1:]}
    assert sorted(i.extra["node_id"] for i in held[clusters[0]]) == ["n0", "n1", "n2", "n3"]
    for cluster in clusters:
        for info in provider.find(cluster):
            provider.delete(info)
        provider.cleanup_cluster(cluster)
