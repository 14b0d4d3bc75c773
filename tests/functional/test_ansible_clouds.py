"""The ansible automator on the cloud providers: EC2 (moto's server mode) and Compute Engine
(the fake REST API), nodes reached over SSH at a local test sshd with the key Shoal pinned."""

import io
import json
import tarfile

import pytest

from tests.functional.test_aws_clusters import (moto, proxy, servers, sshd,  # noqa: F401
                                                start as aws_start)
from tests.functional.test_gcp_clusters import fake, start as gcp_start  # noqa: F401

PLAY = b"""
- hosts: all
  gather_facts: false
  tasks:
    - name: record this node and its peers
      copy:
        dest: "{{ out }}/{{ shoal.node.id }}.json"
        content: "{{ {'cluster': shoal.cluster.name, 'peers': shoal.hosts['played'],
                     'greeting': greeting} | to_json }}"
"""


def _catalog(root, provider):
    service = {"name": "played", "provisioner": {"actions": {"configure": {
        "type": "ansible", "fields": {"playbook": "plays.tgz/record.yml", "extra_vars": {
            "out": str(root / "out"), "greeting": "from %cluster.name%",
            # The test sshd is this machine: its interpreter, not a version manager's shim.
            "ansible_python_interpreter": "/usr/bin/python3"}}}}}}
    template = {"name": "played", "defaults": {"services": ["played"], "provider": provider,
                                               "hardwaretype": "small", "imagetype": "debian"}}
    for path, body in (("services/played.json", service),
                       ("clustertemplates/played.json", template)):
        (root / "catalog2" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "catalog2" / path).write_text(json.dumps(body))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("record.yml")
        info.size = len(PLAY)
        tar.addfile(info, io.BytesIO(PLAY))
    (root / "plays.tgz").write_bytes(buffer.getvalue())
    (root / "out").mkdir()
    return root / "catalog2"


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_playbooks_run_on_cloud_nodes(tmp_path, request, sshd, servers, cloud):  # noqa: F811
    if cloud == "aws":
        shoal = aws_start(tmp_path, request.getfixturevalue("proxy"), sshd)
        servers.append(shoal)
        provider = "ec2"
    else:
        shoal = gcp_start(tmp_path, request.getfixturevalue("fake"), sshd, servers)
        provider = json.loads(next((tmp_path / "catalog" / "providers").iterdir())
                              .read_text())["name"]
    shoal.run("catalog", "import", _catalog(tmp_path, provider))
    shoal.run("resource", "upload", "archives", "plays.tgz", tmp_path / "plays.tgz")
    shoal.run("resource", "activate", "archives", "plays.tgz", "1")
    shoal.run("cluster", "create", "lab", "--template", "played", "--size", "2", "--wait")
    nodes = shoal.json("cluster", "show", "lab")["nodes"]
    hostnames = sorted(n["hostname"] for n in nodes)
    for node in nodes:
        written = json.loads((tmp_path / "out" / f"{node['id']}.json").read_text())
        assert written == {"cluster": "lab", "peers": hostnames, "greeting": "from lab"}
    shoal.run("cluster", "delete", "lab", "--wait")
