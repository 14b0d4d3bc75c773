"""The environment shell's ssh config and inventory (no engine needed), and its endpoint's
input checks."""

import pytest

from cluster_server import envshell
from cluster_server.errors import Conflict, ValidationError
from tests.unit.test_api import api, assert_error_shape  # noqa: F401

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbCdEf shoal"


def node(node_id, hostname, ssh=None, extra=None, address="10.89.0.2"):
    resource = {"hostname": hostname, "addresses": {"access_v4": address},
                "ssh": ssh or {}, "extra": extra or {}}
    return {"id": node_id, "hostname": hostname, "status": "ACTIVE", "services": ["web"],
            "facts": {"resource": resource}}


def container(node_id, address):
    return node(node_id, f"{node_id}.demo", address=address,
                ssh={"host": "127.0.0.1", "port": 40000, "user": "root",
                     "key_file": "/home/u/.shoal/keys/dock/c-1_ed25519", "host_key": KEY},
                extra={"network": "shoal-net-c-1", "address": address})


def test_container_nodes_are_reached_on_their_network():
    nodes = [container("n1", "10.89.0.2"), container("n2", "10.89.0.3")]
    config, known, keys, network = envshell.ssh_files(nodes)
    assert network == "shoal-net-c-1"
    assert "Host n1 n1.demo\n    HostName 10.89.0.2\n    Port 22\n    User root\n" in config
    assert "HostKeyAlias n2" in config and "StrictHostKeyChecking yes" in config
    assert known == f"n1 {KEY.rsplit(' ', 1)[0]}\nn2 {KEY.rsplit(' ', 1)[0]}\n"
    # One key file, mounted once, read-only, under /run/shoal/keys.
    assert list(keys) == ["/home/u/.shoal/keys/dock/c-1_ed25519"]
    assert f"IdentityFile {keys['/home/u/.shoal/keys/dock/c-1_ed25519']}" in config


def test_ssh_nodes_on_loopback_use_host_networking():
    nodes = [node("n1", "a", ssh={"host": "127.0.0.5", "port": 2222, "user": "me",
                                  "key_file": "/k", "host_key": KEY}),
             node("n2", "b")]  # no host key known yet: no entry, a comment
    config, known, keys, network = envshell.ssh_files(nodes)
    assert network == "host"
    assert "HostName 127.0.0.5\n    Port 2222\n    User me" in config
    assert "# n2: no SSH endpoint known" in config and known.count("\n") == 1


def test_nodes_on_two_networks_cannot_share_one_shell():
    with pytest.raises(Conflict):
        envshell.ssh_files([container("n1", "10.89.0.2"),
                            node("n2", "b", ssh={"host": "127.0.0.5", "port": 22,
                                                 "host_key": KEY})])


@pytest.mark.parametrize("field, value", [("user", "root\n    ProxyCommand id"),
                                          ("host", "10.0.0.5 -oProxyCommand=id")])
def test_a_value_that_would_add_lines_to_the_ssh_config_is_refused(field, value):
    # Stored facts are checked again where they become a file the shell's ssh reads.
    bad = node("n1", "n1.demo", ssh={"host": "10.0.0.5", "port": 22, "user": "root",
                                    "host_key": KEY})
    bad["facts"]["resource"]["ssh"][field] = value
    with pytest.raises(ValidationError) as raised:
        envshell.ssh_files([bad])
    assert raised.value.details == {"node": "n1", "field": field}


def test_inventory_lists_nodes_without_secrets():
    cluster = {"id": "c-1", "name": "demo", "status": "ACTIVE", "provider": "dock"}
    data = envshell.inventory(cluster, [container("n1", "10.89.0.2")])
    assert data["cluster"]["name"] == "demo"
    assert data["nodes"][0] == {"id": "n1", "hostname": "n1.demo", "status": "ACTIVE",
                                "services": ["web"], "address": "10.89.0.2",
                                "ssh": {"host": "127.0.0.1", "port": 40000, "user": "root"}}


@pytest.mark.parametrize("body", [{"command": "ls -l; rm -rf /"}, {"command": []},
                                  {"command": ["ls", 3]}, {"shell": "bash"}])
def test_the_endpoint_takes_an_argv_only(api, body):  # noqa: F811
    assert_error_shape(api("POST", "/clusters/demo/shell", json=body), 400, "invalid")


def test_the_endpoint_names_a_missing_cluster(api):  # noqa: F811
    assert_error_shape(api("POST", "/clusters/nope/shell", json={}), 404, "not_found")


@pytest.mark.parametrize("cli", ["nope", "aws,../etc", ["aws", 3], ["aws", " "], {"aws": 1}])
def test_the_endpoint_names_a_bad_cli_before_anything_else(api, cli):  # noqa: F811
    # Checked before the cluster is looked up (there is none) or an image is built.
    body = assert_error_shape(api("POST", "/clusters/nope/shell", json={"cli": cli}), 400,
                              "invalid")
    assert body["details"]["field"] == "cli"


def test_several_clis_are_named_once_each_in_order():
    assert envshell._cli_names("aws, kubectl,aws") == ["aws", "kubectl"]
    assert envshell._cli_names(["gcloud"]) == ["gcloud"]
    assert envshell._cli_names(None) == [] and envshell._cli_names("") == []


def test_the_ansible_inventory_passes_ansible_inventory(tmp_path):
    """The shell's hosts.json, read by the real ``ansible-inventory --list`` of the venv."""
    import json
    import os
    import subprocess
    import sys

    nodes = [container("n1", "10.89.0.2"), container("n2", "10.89.0.3"),
             node("n3", "n3.demo")]  # no SSH endpoint: left out, as from the ssh config
    nodes[1]["services"] = ["web", "hadoop-hdfs-namenode"]
    cluster = {"id": "c-1", "name": "demo", "status": "ACTIVE", "provider": "dock"}
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(envshell.ansible_inventory(cluster, nodes)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-inventory"),
                             "-i", str(path), "--list"], capture_output=True, text=True,
                            env={**env, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
                                 "ANSIBLE_HOME": str(tmp_path / "ansible")})
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    listed = json.loads(result.stdout)
    assert sorted(listed["all"]["children"]) == ["hadoop_hdfs_namenode", "ungrouped", "web"]
    assert listed["web"]["hosts"] == ["n1", "n2"]
    assert listed["hadoop_hdfs_namenode"]["hosts"] == ["n2"]
    hostvars = listed["_meta"]["hostvars"]
    assert set(hostvars) == {"n1", "n2"}
    assert hostvars["n2"]["shoal_address"] == "10.89.0.3"
    assert hostvars["n2"]["shoal_cluster"] == {"id": "c-1", "name": "demo"}
    # No ansible_host: ansible's ssh goes to the node's id, which the shell's ssh config maps
    # to its endpoint with the pinned key.
    assert "ansible_host" not in hostvars["n1"]
