"""The gcp provider against the fake Compute REST API on loopback, with google-cloud-compute's
real REST clients and a real service-account key (its token grant goes to the fake)."""

import os
import uuid

import pytest

from cluster_server.errors import PluginError, ProviderError
from cluster_server.plugins import NodeInfo, NodeSpec, NodeState
from extensions.providers.gcp import GCPProvider
from tests.fake_gce import UNIVERSE, FakeGCE, service_account_file
from tests.netguard import loopback_only  # noqa: F401  (fixture)
from tests.sshd import ssh_host  # noqa: F401  (fixture)


@pytest.fixture
def fake(loopback_only, monkeypatch):  # noqa: F811
    monkeypatch.setenv("GOOGLE_CLOUD_UNIVERSE_DOMAIN", UNIVERSE)
    monkeypatch.setenv("SHOAL_POLL_BASE", "0.05")
    with FakeGCE() as fake:
        yield fake


@pytest.fixture
def cluster():
    return f"c-{uuid.uuid4().hex[:12]}"


def make(home, fake, **fields):
    base = {"google_project": fake.project, "zone_name": "us-central1-a",
            "credentials_file": service_account_file(str(home), fake), "api_endpoint": fake.url,
            "ssh_cidr": "198.51.100.7/32", "wait_for_ssh": False}
    return GCPProvider("gce", {**base, **fields}, str(home))


def spec(cluster, node, generation=0, user="admin"):
    return NodeSpec(cluster_id=cluster, node_id=node, hostname=f"{node}.{cluster}.example",
                    hardwaretype="small", imagetype="debian", flavor={"flavor": "e2-small"},
                    image={"image": "debian-12", "sshuser": user},
                    token=f"{cluster}-{node}-{generation}")


def test_create_makes_the_firewall_rule_and_a_labelled_instance_once_per_token(tmp_path, fake,
                                                                               cluster):
    provider = make(tmp_path, fake)
    info = provider.create(spec(cluster, "n1"))
    assert info.state == NodeState.PENDING and info.extra["operation"].startswith("operation-")
    # The same token is the same request id and the same name: no second instance, whether
    # the request id is remembered (dedup) or not (the name exists: it is this node's).
    assert provider.create(spec(cluster, "n1")).resource_id == info.resource_id
    assert make(tmp_path, fake).create(spec(cluster, "n1")).resource_id == info.resource_id
    fake.request_ids.clear()
    assert make(tmp_path, fake).create(spec(cluster, "n1")).resource_id == info.resource_id
    assert fake.inserts == 1 and len(fake.instances) == 1

    instance = fake.instances[("us-central1-a", info.resource_id)]
    assert instance["labels"]["shoal-cluster"] == cluster
    assert instance["labels"]["shoal-node"] == "n1"
    assert instance["tags"]["items"] == [f"shoal-{cluster}"]
    assert instance["machineType"].endswith("zones/us-central1-a/machineTypes/e2-small")
    keys = [i["value"] for i in instance["metadata"]["items"] if i["key"] == "ssh-keys"]
    with open(info.ssh["key_file"] + ".pub") as f:
        assert keys == [f"admin:{f.read().strip()}"]
    (firewall,) = fake.firewalls.values()
    assert firewall["name"] == f"shoal-{cluster}-ssh"
    assert firewall["sourceRanges"] == ["198.51.100.7/32"]  # never 0.0.0.0/0
    assert firewall["targetTags"] == [f"shoal-{cluster}"]
    assert firewall["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    # The firewall's insert operation was polled here, not by the library.
    assert fake.calls["globalOperations.get"] >= 1


def test_create_is_refused_without_an_ssh_range(tmp_path, fake, cluster):
    with pytest.raises(PluginError) as caught:
        make(tmp_path, fake, ssh_cidr="").create(spec(cluster, "n1"))
    assert "ssh_cidr" in caught.value.message
    assert fake.leftovers() == {"instances": [], "firewalls": []}


def test_a_data_disk_is_made_with_each_instance_in_the_same_insert(tmp_path, fake, cluster):
    provider = make(tmp_path, fake, google_data_disk_size_gb="100", boot_disk_size_gb="20")
    info = provider.create(spec(cluster, "n1"))
    assert fake.calls["instances.insert"] == 1
    name = info.resource_id
    boot, data = fake.instances[("us-central1-a", name)]["disks"]
    assert boot["boot"] is True and boot["index"] == 0 and boot["diskSizeGb"] == "20"
    assert boot["source"].endswith(f"/zones/us-central1-a/disks/{name}")
    assert data["boot"] is False and data["index"] == 1
    assert data["diskSizeGb"] == "100" and data["autoDelete"] is True
    assert data["kind"] == "compute#attachedDisk" and data["type"] == "PERSISTENT"
    assert data["source"].endswith(f"/zones/us-central1-a/disks/{name}-1")

    other = make(tmp_path, fake).create(spec(cluster, "n2"))  # without the field: one disk
    assert len(fake.instances[("us-central1-a", other.resource_id)]["disks"]) == 1


@pytest.mark.parametrize("field, value", [("google_data_disk_size_gb", "lots"),
                                          ("google_data_disk_size_gb", "0"),
                                          ("boot_disk_size_gb", "20GB")])
def test_a_disk_size_that_is_not_a_whole_number_is_refused(tmp_path, fake, cluster, field,
                                                            value):
    with pytest.raises(PluginError) as caught:
        make(tmp_path, fake, **{field: value}).create(spec(cluster, "n1"))
    assert f"'{field}'" in caught.value.message and caught.value.details["field"] == field
    assert fake.inserts == 0 and fake.calls["instances.insert"] == 0
    assert fake.leftovers() == {"instances": [], "firewalls": []}


@pytest.mark.parametrize("field", ["google_client_email", "api_key_resource",
                                   "ssh_key_resource"])
def test_coopr_credential_fields_with_a_value_are_refused(tmp_path, fake, cluster, field):
    with pytest.raises(PluginError) as caught:
        make(tmp_path, fake, **{field: "coopr-value"}).create(spec(cluster, "n1"))
    assert f"'{field}' is not supported" in caught.value.message
    assert caught.value.details["field"] == field
    assert fake.inserts == 0 and fake.leftovers() == {"instances": [], "firewalls": []}
    assert not (tmp_path / "keys").exists()  # no cluster key made either
    # Empty, as a Coopr catalog carries them, they are no obstacle.
    make(tmp_path, fake, **{field: ""}).create(spec(cluster, "n1"))
    assert fake.inserts == 1


def test_describe_follows_the_states_with_one_list_per_page(tmp_path, fake, cluster):
    provider = make(tmp_path, fake)
    infos = [provider.create(spec(cluster, f"n{i}")) for i in range(12)]
    seen = []
    for _ in range(8):
        states = provider.describe(infos)
        seen.append({s.extra["status"] for s in states.values()})
        if all(s.state == NodeState.RUNNING for s in states.values()):
            break
    assert seen[0] == {"PROVISIONING"} and {"STAGING"} in seen and seen[-1] == {"RUNNING"}
    assert provider.calls["instances.list"] == len(seen)  # one call a round for 12 nodes
    running = states[infos[0].resource_id]
    assert running.addresses["bind_v4"].startswith("10.128.")

    small = make(tmp_path, fake, list_page_size=5)
    small.describe(infos)
    assert small.calls["instances.list"] == 3  # 12 instances, 5 a page


def test_failures_come_back_with_the_clouds_reason(tmp_path, fake, cluster):
    provider = make(tmp_path, fake)
    fake.fail_insert = {1: "http", 2: "operation"}
    fake.fail_instance = {3: "Instance terminated by Compute Engine (host error)."}
    with pytest.raises(ProviderError) as caught:
        provider.create(spec(cluster, "n1"))
    assert "403" in caught.value.message and "Quota 'CPUS' exceeded" in caught.value.message
    no_room = provider.create(spec(cluster, "n2"))
    broken = provider.create(spec(cluster, "n3"))
    final = {}
    for _ in range(10):
        final.update(provider.describe([i for i in (no_room, broken)
                                        if i.resource_id not in final]))
        final = {k: v for k, v in final.items() if v.state != NodeState.PENDING}
        if len(final) == 2:
            break
    assert final[no_room.resource_id].state == NodeState.FAILED
    assert final[no_room.resource_id].error.startswith("ZONE_RESOURCE_POOL_EXHAUSTED")
    assert final[broken.resource_id].state == NodeState.FAILED
    assert final[broken.resource_id].error == ("instance TERMINATED: Instance terminated by "
                                               "Compute Engine (host error).")


def test_delete_then_cleanup_leaves_nothing(tmp_path, fake, cluster):
    provider = make(tmp_path, fake)
    infos = [provider.create(spec(cluster, f"n{i}")) for i in range(3)]
    provider.delete(infos[0])
    provider.delete(infos[0])  # the same request id: the same delete
    provider.delete(NodeInfo(resource_id="shoal-never-made"))
    assert len(provider.find(cluster)) == 3  # deleting takes a while: STOPPING first
    provider.cleanup_cluster(cluster)
    assert fake.leftovers() == {"instances": [], "firewalls": []}
    assert not os.path.exists(infos[0].ssh["key_file"])
    provider.cleanup_cluster(cluster)  # twice: nothing to do, no error


def test_every_call_is_authenticated_with_the_service_account(tmp_path, fake, cluster):
    import json
    import urllib.request

    make(tmp_path, fake).create(spec(cluster, "n1"))
    request = urllib.request.Request(f"{fake.url}/compute/v1/projects/{fake.project}")
    with pytest.raises(urllib.error.HTTPError) as caught:  # the fake wants a bearer token
        urllib.request.urlopen(request)
    assert json.loads(caught.value.read())["error"]["status"] == "UNAUTHENTICATED"


def test_confirm_pins_the_host_key_of_the_override(tmp_path, fake, cluster, ssh_host):  # noqa
    authorized = os.path.join(ssh_host.dir, "authorized_keys")

    def boot(instance):  # the guest agent installs the metadata's ssh-keys at boot
        for item in instance["metadata"]["items"]:
            if item["key"] == "ssh-keys":
                with open(authorized, "a") as f:
                    f.write(item["value"].split(":", 1)[1] + "\n")

    fake.on_running.append(boot)
    provider = make(tmp_path, fake, wait_for_ssh=True, workdir=str(tmp_path / "work"),
                    ssh_address_override=f"{ssh_host.address}:{ssh_host.port}")
    info = provider.create(spec(cluster, "n1", user=ssh_host.user))
    for _ in range(10):
        state = provider.describe([info])[info.resource_id]
        if state.state == NodeState.RUNNING:
            break
    assert state.ssh["host_key"] == ssh_host.host_key
    transport = provider.transport(state)
    try:
        assert transport.run(["echo", "hi"]).stdout == "hi\n"
    finally:
        transport.close()


def test_inventory_of_many_clusters_is_one_list_per_page(tmp_path, fake):
    provider = make(tmp_path, fake, list_page_size=5)
    clusters = [f"c-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    made = {c: [provider.create(spec(c, f"n{i}")).resource_id for i in range(4)]
            for c in clusters}
    before = provider.calls["instances.list"]
    held = provider.inventory(clusters[:2])
    assert provider.calls["instances.list"] - before == 3  # 12 instances of the provider, 5 a page
    assert {c: sorted(i.resource_id for i in infos) for c, infos in held.items()} == {
        c: sorted(made[c]) for c in clusters[:2]}
    assert {i.extra["node_id"] for i in held[clusters[0]]} == {"n0", "n1", "n2", "n3"}
